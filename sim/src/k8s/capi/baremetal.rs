//! The bare-metal provider (the part of elemental-operator the platform runs): a
//! BaremetalMachine names a registered host (its MachineInventory, the host in the IaaS) and
//! that host's plan Secret, which the host's system agent reads and carries out.
//!
//! The destructive act is not a delete call: a BaremetalMachine being deleted writes a reset
//! plan (the next generation, `reset: true`) to its host's plan Secret, and the host is wiped
//! when its agent applies it. The model records the reset in the IaaS the moment the plan is
//! written, by whichever cluster writes it: a reset plan on the standby is the standby acting on
//! hardware, whether or not the agent reads it there yet. A plan's generation only goes up on
//! the cluster that writes it; a host that sees it go down (a stale copy after a failover or
//! failback) applies an old plan again — what plans-never-regress checks.

use serde_json::{Value, json};

use super::{CLUSTER_NAME_LABEL, Manager, created};
use crate::iaas::Vm;
use crate::k8s::api::{ApiError, Stored};
use crate::k8s::kind;
use crate::k8s::object::{Body, Object};

pub const BAREMETAL_MACHINE_FINALIZER: &str = "baremetalmachine.infrastructure.cluster.x-k8s.io";
pub const PLAN_SECRET_TYPE: &str = "elemental.cattle.io/plan";
/// The plan Secret's data key holding the plan.
pub const PLAN_KEY: &str = "plan";

/// A host's id in the IaaS.
pub fn host_id(name: &str) -> String {
    format!("host-{name}")
}

/// The plan Secret of the host registered as `inventory`.
pub fn plan_name(inventory: &str) -> String {
    format!("{inventory}-plan")
}

/// What a plan Secret holds (the model keeps only what ordering needs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    pub generation: u64,
    pub reset: bool,
}

impl Plan {
    pub fn bytes(self) -> Vec<u8> {
        let v = if self.reset {
            json!({"generation": self.generation, "reset": true})
        } else {
            json!({"generation": self.generation})
        };
        v.to_string().into_bytes()
    }

    pub fn parse(bytes: &[u8]) -> Option<Plan> {
        let v: Value = serde_json::from_slice(bytes).ok()?;
        let generation = v.get("generation")?.as_u64()?;
        Some(Plan { generation, reset: v.get("reset").and_then(Value::as_bool).unwrap_or(false) })
    }

    /// Puts this plan into a Secret's data (anything else is left as it is).
    pub fn write_to(self, o: &mut Object) {
        if let Body::Secret { data, .. } = &mut o.body {
            data.insert(PLAN_KEY.into(), self.bytes());
        }
    }

    /// The plan a Secret holds (None: not a plan Secret, or unreadable).
    pub fn of(o: &Object) -> Option<Plan> {
        match &o.body {
            Body::Secret { data, .. } => Plan::parse(data.get(PLAN_KEY)?),
            _ => None,
        }
    }
}

/// The plan Secret of `inventory` holding `plan`.
pub fn plan_secret(namespace: &str, inventory: &str, plan: Plan) -> Object {
    Object::new(
        &kind::SECRET,
        namespace,
        &plan_name(inventory),
        Body::Secret { type_: Some(PLAN_SECRET_TYPE.into()), data: [(PLAN_KEY.to_string(), plan.bytes())].into() },
    )
}

/// Writes the next generation of the plan `secret` holds (a host being reset keeps its reset
/// plan: nothing is written).
pub async fn next_plan(api: &crate::k8s::Api, secret: &Stored) -> Result<(), ApiError> {
    let Some(now) = Plan::of(&secret.obj).filter(|p| !p.reset) else { return Ok(()) };
    let mut obj = secret.obj.clone();
    Plan { generation: now.generation + 1, reset: false }.write_to(&mut obj);
    api.update(secret, obj).await.map(|_| ())
}

impl Manager {
    pub(super) async fn baremetal_machine(&mut self, infra: Stored) -> Result<(), ApiError> {
        let host = infra.obj.field(&["spec", "providerID"]).and_then(Value::as_str).map(str::to_string);
        let inventory = infra
            .obj
            .field(&["spec", "inventoryRef", "name"])
            .and_then(Value::as_str)
            .unwrap_or(infra.obj.name())
            .to_string();
        let ns = infra.obj.namespace().to_string();
        let cluster = infra.obj.label(CLUSTER_NAME_LABEL).unwrap_or_default().to_string();
        if !infra.obj.deleting() {
            let mut obj = infra.obj.clone();
            let mut changed = false;
            if !obj.finalizers().iter().any(|f| f == BAREMETAL_MACHINE_FINALIZER) {
                obj.add_finalizer(BAREMETAL_MACHINE_FINALIZER);
                changed = true;
            }
            if host.is_none() {
                // A new host registers for this Machine: its inventory entry and plan Secret.
                let id = host_id(obj.name());
                self.iaas.create(Vm {
                    id: id.clone(),
                    cluster: cluster.clone(),
                    created_by: self.api.cluster().into(),
                });
                let mut inv = Object::custom(&kind::MACHINE_INVENTORY, &ns, &inventory, json!({"hostID": id}));
                inv.set_label(CLUSTER_NAME_LABEL, &cluster);
                let inv = match self.create(inv).await {
                    Ok(s) => s.obj,
                    Err(ApiError::AlreadyExists(_)) => {
                        self.api.require(&kind::MACHINE_INVENTORY, &ns, &inventory).await?.obj
                    }
                    Err(e) => return Err(e),
                };
                let mut plan = plan_secret(&ns, &inventory, Plan { generation: 1, reset: false });
                plan.set_label(CLUSTER_NAME_LABEL, &cluster);
                plan.owned_by(&inv);
                created(self.create(plan).await)?;
                obj.set_field(&["spec", "providerID"], json!(id));
                obj.set_field(&["spec", "inventoryRef"], json!({"name": inventory}));
                changed = true;
            }
            if changed {
                self.update(&infra, obj).await?;
            }
            return Ok(());
        }
        // Being deleted: the host is reset through its plan, then the finalizer goes.
        let plan_key = kind::SECRET.key(&ns, &plan_name(&inventory));
        match self.cache.get(&plan_key).cloned() {
            Some(p) => {
                let now = Plan::of(&p.obj);
                if !now.is_some_and(|n| n.reset) {
                    let reset = Plan { generation: now.map_or(1, |n| n.generation) + 1, reset: true };
                    let mut obj = p.obj.clone();
                    reset.write_to(&mut obj);
                    self.update(&p, obj).await?;
                    if let Some(id) = &host {
                        let owner =
                            infra.obj.owners().first().map(|r| json!({"kind": r.kind, "name": r.name, "uid": r.uid}));
                        let why = json!({"rule": "infrastructure machine deleting", "baremetalmachine": infra.obj.name(),
                            "uid": infra.obj.uid(), "owner": owner, "plan": p.obj.name(), "generation": reset.generation});
                        self.iaas.reset(id, self.api.cluster(), "baremetalmachine", why);
                    }
                }
            }
            None => self.api.server.trace.record(
                self.api.cluster(),
                "capi.reset-skipped",
                json!({"baremetalmachine": infra.obj.name(), "plan": plan_key, "why": "no readable plan Secret"}),
            ),
        }
        let mut obj = infra.obj.clone();
        obj.remove_finalizer(BAREMETAL_MACHINE_FINALIZER);
        self.update(&infra, obj).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plans_round_trip_and_the_first_is_the_topologys() {
        let p = Plan { generation: 7, reset: true };
        assert_eq!(Plan::parse(&p.bytes()), Some(p));
        assert_eq!(Plan { generation: 1, reset: false }.bytes(), b"{\"generation\":1}");
        assert_eq!(Plan::parse(b"not json"), None);
        let s = plan_secret("ns", "h", Plan { generation: 3, reset: false });
        assert_eq!(s.name(), "h-plan");
        assert_eq!(Plan::of(&s), Some(Plan { generation: 3, reset: false }));
    }
}
