//! Cluster API controllers of one global cluster (the `capi-controller-manager`, the kubeadm
//! control-plane provider and the DCS infrastructure provider), acting through the model's API:
//!
//! - MachineDeployment → MachineSet (a missing MachineSet is created anew, with a new name and
//!   UID) → Machine replicas, scale up and down, adoption of labelled orphans (before scaling,
//!   or after with cluster-api #3770's order, [`MachineSetOrder`]);
//! - Machine: finalizer `machine.cluster.x-k8s.io`; a deleted Machine deletes its infrastructure
//!   machine and only then drops its finalizer; a DCSMachine being deleted deletes its VM in the
//!   shared IaaS; a BaremetalMachine being deleted resets its host through a plan
//!   ([`baremetal`]);
//! - KubeadmControlPlane: regenerates `<cluster>-ca` / `-etcd` / `-sa` / `-proxy` Secrets that
//!   are missing (or unreadable) — which breaks a running workload cluster;
//! - paused Clusters (spec.paused or the paused annotation) are not reconciled, deletions
//!   included;
//! - on a standby, nothing acts while the sync gate is set; everything is reconciled again the
//!   moment it is cleared. That is exactly when an inconsistent copy turns into deleted VMs.
//!
//! Like real controllers they act only once their caches have synced, and they write through
//! their cache (the role of controller-runtime's expectations) so a lagging informer does not
//! make them create a replica twice.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::api::{Api, ApiError, Propagation, Stored};
use super::informer::{self, Delta};
use super::kind::{self, Kind};
use super::object::{Body, Object};
use super::queue::WorkQueue;
use crate::iaas::{Iaas, Vm};

pub mod baremetal;

pub const MACHINE_FINALIZER: &str = "machine.cluster.x-k8s.io";
pub const DCS_MACHINE_FINALIZER: &str = "dcsmachine.infrastructure.cluster.x-k8s.io";
pub const CLUSTER_NAME_LABEL: &str = "cluster.x-k8s.io/cluster-name";
pub const SET_NAME_LABEL: &str = "cluster.x-k8s.io/set-name";
pub const CONTROL_PLANE_LABEL: &str = "cluster.x-k8s.io/control-plane";
pub const PAUSED_ANNOTATION: &str = "cluster.x-k8s.io/paused";
/// The Secrets KubeadmControlPlane owns per workload cluster; missing ones are regenerated.
pub const CLUSTER_SECRET_SUFFIXES: [&str; 4] = ["ca", "etcd", "sa", "proxy"];

/// The kinds the manager watches.
const WATCHED: [&Kind; 8] = [
    &kind::CLUSTER,
    &kind::MACHINE_DEPLOYMENT,
    &kind::MACHINE_SET,
    &kind::MACHINE,
    &kind::KUBEADM_CONTROL_PLANE,
    &kind::DCS_MACHINE,
    &kind::BAREMETAL_MACHINE,
    &kind::SECRET,
];
const DELTAS_BUFFERED_MAX: usize = 4_096;
const RETRY_DELAY: Duration = Duration::from_millis(500);
/// Replicas one MachineSet or control plane may ask for (a bound on one reconcile's writes).
const REPLICAS_MAX: u64 = 1_000;

/// When the controllers may act. `open` reads the gate key's value (None: absent).
#[derive(Debug, Clone)]
pub struct ControllerGate {
    pub key: String,
    pub open: fn(Option<&[u8]>) -> bool,
}

#[derive(Clone)]
pub struct CapiConfig {
    pub informer_lag: Duration,
    pub machineset_order: MachineSetOrder,
    pub gate: Option<ControllerGate>,
    pub iaas: Iaas,
    /// Whether the manager leads its election (None: no leader election, it always acts).
    pub leading: Option<tokio::sync::watch::Receiver<bool>>,
}

/// What a MachineSet does first with Machines that carry its `set-name` label but no controller
/// (orphans: their MachineSet was deleted with `--cascade=orphan` and created again).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum MachineSetOrder {
    /// Adopt them, then create or delete to reach the replicas (CAPI's reconcile).
    #[default]
    AdoptFirst,
    /// Create the replicas it finds missing, then adopt, then delete the surplus: the order
    /// cluster-api #3770 reports after a restore (the adopted Machines are scaled away).
    CreateFirst,
}

struct Manager {
    api: Api,
    iaas: Iaas,
    machineset_order: MachineSetOrder,
    cache: BTreeMap<String, Stored>,
    /// Controller UID → keys of the cached objects it controls.
    children: BTreeMap<String, BTreeSet<String>>,
    /// Machines without a controller (candidates for adoption).
    orphans: BTreeSet<String>,
    queue: WorkQueue,
}

/// Runs the controllers against `api`'s cluster until the host stops.
pub async fn run(api: Api, etcd: etcd_client::Client, cfg: CapiConfig) {
    let (tx, mut rx) = mpsc::channel(DELTAS_BUFFERED_MAX);
    for kind in WATCHED {
        informer::spawn(api.clone(), etcd.clone(), kind, cfg.informer_lag, tx.clone());
    }
    drop(tx);
    let (gate_tx, mut gate_rx) = tokio::sync::watch::channel(cfg.gate.is_none());
    if let Some(gate) = cfg.gate.clone() {
        tokio::spawn(watch_gate(etcd.clone(), gate, gate_tx, api.clone()));
    }
    let mut m = Manager {
        api,
        iaas: cfg.iaas,
        machineset_order: cfg.machineset_order,
        cache: BTreeMap::new(),
        children: BTreeMap::new(),
        orphans: BTreeSet::new(),
        queue: WorkQueue::new(RETRY_DELAY),
    };
    let mut unsynced = WATCHED.len();
    let mut open = *gate_rx.borrow_and_update();
    let mut leading = cfg.leading;
    loop {
        while let Ok(d) = rx.try_recv() {
            unsynced -= usize::from(matches!(d, Delta::Synced(_)));
            m.delta(d);
        }
        let working = open && unsynced == 0 && super::leader::leads(&leading);
        if working && let Some(key) = m.queue.pop() {
            if let Err(e) = m.reconcile(&key).await {
                m.api.trace_error(&key, &e);
                m.queue.retry_later(key);
            }
            continue;
        }
        tokio::select! {
            d = rx.recv() => match d {
                Some(d) => {
                    unsynced -= usize::from(matches!(d, Delta::Synced(_)));
                    m.delta(d);
                }
                None => return,
            },
            changed = gate_rx.changed() => {
                if changed.is_err() {
                    return;
                }
                let now_open = *gate_rx.borrow_and_update();
                if now_open && !open {
                    m.api.server.trace.record(m.api.cluster(), "capi.gate-open", json!({}));
                    let keys: Vec<String> = m.cache.keys().cloned().collect();
                    keys.iter().for_each(|k| m.enqueue(k));
                }
                open = now_open;
            }
            // A manager that (again) leads looks at everything, as a restarted one would.
            _ = super::leader::leadership_changed(&mut leading) => {
                if super::leader::leads(&leading) {
                    let keys: Vec<String> = m.cache.keys().cloned().collect();
                    keys.iter().for_each(|k| m.enqueue(k));
                }
            }
            // Only while working: a due retry cannot be taken otherwise (no busy loop).
            _ = m.queue.retry_due(), if working => {}
        }
    }
}

/// Follows the gate key; sends whether controllers may act. Reconnects with a short backoff.
async fn watch_gate(
    mut etcd: etcd_client::Client,
    gate: ControllerGate,
    tx: tokio::sync::watch::Sender<bool>,
    api: Api,
) {
    loop {
        let step = async {
            let r = etcd.get(gate.key.as_str(), None).await?;
            let rev = r.header().map(|h| h.revision()).unwrap_or(0);
            tx.send_replace((gate.open)(r.kvs().first().map(|kv| kv.value())));
            let opts = etcd_client::WatchOptions::new().with_start_revision(rev + 1);
            let mut s = etcd.watch(gate.key.as_str(), Some(opts)).await?;
            while let Some(resp) = s.message().await? {
                for e in resp.events() {
                    let value = match e.event_type() {
                        etcd_client::EventType::Put => e.kv().map(|kv| kv.value()),
                        etcd_client::EventType::Delete => None,
                    };
                    tx.send_replace((gate.open)(value));
                }
            }
            Ok::<(), etcd_client::Error>(())
        };
        if let Err(e) = step.await {
            api.trace_error(&gate.key, &ApiError::Etcd(e));
        }
        if tx.is_closed() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// A Cluster's spec as the model creates them: unpaused, referring to its DCSCluster and to its
/// KubeadmControlPlane `<name>-cp` (what the failover's validation resolves).
pub fn cluster_spec(name: &str) -> Value {
    json!({
        "paused": false,
        "infrastructureRef": {"apiVersion": kind::DCS_CLUSTER.api_version(), "kind": "DCSCluster", "name": name},
        "controlPlaneRef": {
            "apiVersion": kind::KUBEADM_CONTROL_PLANE.api_version(),
            "kind": "KubeadmControlPlane",
            "name": format!("{name}-cp"),
        },
    })
}

/// The infrastructure kind of the Machines `owner` (a MachineDeployment, MachineSet or control
/// plane) makes: what its template names, a DCSMachine by default.
pub fn infrastructure_kind(owner: &Object) -> &'static Kind {
    let named = owner.field(&["spec", "template", "spec", "infrastructureRef", "kind"]).and_then(Value::as_str);
    if named == Some(kind::BAREMETAL_MACHINE.kind) { &kind::BAREMETAL_MACHINE } else { &kind::DCS_MACHINE }
}

/// A Machine as its owner (a MachineSet, or a KubeadmControlPlane when `control_plane`) makes
/// it: labelled with its cluster and set, infrastructure and bootstrap references, finalizer.
pub fn machine_object(owner: &Object, name: &str, cluster: &str, control_plane: bool) -> Object {
    let spec = json!({
        "clusterName": cluster,
        "infrastructureRef": {"kind": infrastructure_kind(owner).kind, "name": name},
        "bootstrap": {"dataSecretName": format!("{name}-bootstrap")},
    });
    let mut m = Object::custom(&kind::MACHINE, owner.namespace(), name, spec);
    m.set_label(CLUSTER_NAME_LABEL, cluster);
    if control_plane {
        m.set_label(CONTROL_PLANE_LABEL, "");
    } else {
        m.set_label(SET_NAME_LABEL, owner.name());
    }
    m.owned_by(owner);
    m.add_finalizer(MACHINE_FINALIZER);
    m
}

/// A create whose object may already be there (a retried reconcile, or another writer): both
/// are done.
fn created<T>(r: Result<T, ApiError>) -> Result<(), ApiError> {
    match r {
        Ok(_) | Err(ApiError::AlreadyExists(_)) => Ok(()),
        Err(e) => Err(e),
    }
}

fn controller_uid(o: &Object) -> Option<&str> {
    o.owners().iter().find(|r| r.controller == Some(true)).map(|r| r.uid.as_str())
}

impl Manager {
    fn enqueue(&mut self, key: &str) {
        self.queue.add(key);
    }

    /// Applies an informer change to the cache and queues what it affects.
    fn delta(&mut self, d: Delta) {
        let obj = match d {
            Delta::Synced(_) => return,
            Delta::Upsert(s) => {
                if self.cache.get(&s.obj.key()).is_some_and(|c| c.rev > s.rev) {
                    return; // older than what this manager wrote through
                }
                let o = s.obj.clone();
                self.cache_put(s.obj.key(), s);
                o
            }
            Delta::Deleted(o) => {
                if self.cache.get(&o.key()).is_some_and(|c| c.obj.uid() == o.uid()) {
                    self.cache_drop(&o.key());
                }
                o
            }
        };
        self.enqueue(&obj.key());
        self.enqueue_related(&obj);
    }

    fn enqueue_related(&mut self, o: &Object) {
        let ns = o.namespace().to_string();
        for r in o.owners() {
            if let Some(k) = Kind::by_name(&r.kind) {
                self.enqueue(&k.key(&ns, &r.name));
            }
        }
        // A cluster's Secret changed or went: its control plane may have to regenerate it.
        if o.kind == &kind::SECRET
            && let Some(c) = o.label(CLUSTER_NAME_LABEL)
        {
            let kcps: Vec<String> = self
                .of_kind(&kind::KUBEADM_CONTROL_PLANE)
                .filter(|kcp| kcp.obj.label(CLUSTER_NAME_LABEL) == Some(c))
                .map(|kcp| kcp.obj.key())
                .collect();
            kcps.iter().for_each(|k| self.enqueue(k));
        }
        if o.kind == &kind::CLUSTER && !self.paused(o) {
            // Unpausing (or creating) a Cluster: reconcile everything of that cluster.
            let name = o.name().to_string();
            let keys: Vec<String> = self
                .cache
                .values()
                .filter(|s| s.obj.label(CLUSTER_NAME_LABEL) == Some(name.as_str()))
                .map(|s| s.obj.key())
                .collect();
            keys.iter().for_each(|k| self.enqueue(k));
        }
    }

    /// The cached objects of one kind (a key range of the cache: no scan of other kinds).
    fn of_kind(&self, kind: &'static Kind) -> impl Iterator<Item = &Stored> {
        let p = kind.prefix();
        self.cache.range(p.clone()..).take_while(move |(k, _)| k.starts_with(&p)).map(|(_, s)| s)
    }

    fn paused(&self, cluster: &Object) -> bool {
        cluster.field(&["spec", "paused"]) == Some(&Value::Bool(true))
            || cluster.annotation(PAUSED_ANNOTATION).is_some()
    }

    /// Whether `o`'s workload cluster is paused (objects of no or unknown cluster are not).
    fn cluster_paused(&self, o: &Object) -> bool {
        let Some(c) = o.label(CLUSTER_NAME_LABEL) else { return false };
        let key = kind::CLUSTER.key(o.namespace(), c);
        self.cache.get(&key).is_some_and(|s| self.paused(&s.obj))
    }

    async fn reconcile(&mut self, key: &str) -> Result<(), ApiError> {
        let Some(s) = self.cache.get(key).cloned() else { return Ok(()) };
        if s.obj.kind == &kind::CLUSTER || s.obj.kind == &kind::SECRET || self.cluster_paused(&s.obj) {
            return Ok(());
        }
        let k = s.obj.kind;
        if k == &kind::MACHINE_DEPLOYMENT {
            self.machine_deployment(s).await
        } else if k == &kind::MACHINE_SET {
            self.machine_set(s).await
        } else if k == &kind::MACHINE {
            self.machine(s).await
        } else if k == &kind::DCS_MACHINE {
            self.dcs_machine(s).await
        } else if k == &kind::BAREMETAL_MACHINE {
            self.baremetal_machine(s).await
        } else if k == &kind::KUBEADM_CONTROL_PLANE {
            self.control_plane(s).await
        } else {
            Ok(())
        }
    }

    fn write_through(&mut self, s: Option<Stored>, key: String) {
        match s {
            Some(s) => self.cache_put(key, s),
            None => self.cache_drop(&key),
        }
    }

    async fn create(&mut self, obj: Object) -> Result<Stored, ApiError> {
        let s = self.api.create(obj).await?;
        self.write_through(Some(s.clone()), s.obj.key());
        Ok(s)
    }

    async fn update(&mut self, old: &Stored, obj: Object) -> Result<(), ApiError> {
        let key = obj.key();
        let s = self.api.update(old, obj).await?;
        self.write_through(s, key);
        Ok(())
    }

    fn replicas(o: &Object) -> u64 {
        let n = o.field(&["spec", "replicas"]).and_then(Value::as_u64).unwrap_or(1);
        assert!(n <= REPLICAS_MAX, "{} asks for {n} replicas, above REPLICAS_MAX", o.key());
        n
    }

    fn owned_by(&self, kind: &'static Kind, owner_uid: &str) -> Vec<Stored> {
        let Some(keys) = self.children.get(owner_uid) else { return Vec::new() };
        let p = kind.prefix();
        keys.iter().filter(|k| k.starts_with(&p)).filter_map(|k| self.cache.get(k)).cloned().collect()
    }

    /// Keys of the objects of `kind` that `owner_uid` controls and that are not being deleted.
    fn live_owned(&self, kind: &'static Kind, owner_uid: &str) -> Vec<String> {
        let Some(keys) = self.children.get(owner_uid) else { return Vec::new() };
        let p = kind.prefix();
        let live = |k: &&String| self.cache.get(*k).is_some_and(|s| !s.obj.deleting());
        keys.iter().filter(|k| k.starts_with(&p)).filter(live).cloned().collect()
    }

    /// Caches an object and indexes it under its controller (so a MachineSet finds its Machines
    /// without a scan of every Machine).
    fn cache_put(&mut self, key: String, s: Stored) {
        let owner = controller_uid(&s.obj).map(str::to_string);
        let machine = s.obj.kind == &kind::MACHINE;
        if let Some(old) = self.cache.insert(key.clone(), s) {
            self.unindex(&key, &old);
        }
        match owner {
            Some(o) => {
                self.children.entry(o).or_default().insert(key);
            }
            None if machine => {
                self.orphans.insert(key);
            }
            None => {}
        }
    }

    fn cache_drop(&mut self, key: &str) {
        if let Some(old) = self.cache.remove(key) {
            self.unindex(key, &old);
        }
    }

    fn unindex(&mut self, key: &str, old: &Stored) {
        self.orphans.remove(key);
        if let Some(o) = controller_uid(&old.obj)
            && let Some(set) = self.children.get_mut(o)
        {
            set.remove(key);
            if set.is_empty() {
                self.children.remove(o);
            }
        }
    }

    async fn machine_deployment(&mut self, md: Stored) -> Result<(), ApiError> {
        if md.obj.deleting() {
            return Ok(());
        }
        let replicas = Self::replicas(&md.obj);
        let sets = self.owned_by(&kind::MACHINE_SET, md.obj.uid());
        let live: Vec<&Stored> = sets.iter().filter(|s| !s.obj.deleting()).collect();
        match live.first() {
            None => {
                let name = format!("{}-{}", md.obj.name(), &self.api.server.uid()[..5]);
                let mut spec = json!({"replicas": replicas});
                if let Some(t) = md.obj.field(&["spec", "template"]) {
                    spec["template"] = t.clone();
                }
                let mut ms = Object::custom(&kind::MACHINE_SET, md.obj.namespace(), &name, spec);
                ms.meta.labels = md.obj.meta.labels.clone();
                ms.owned_by(&md.obj);
                self.create(ms).await?;
            }
            Some(ms) if Self::replicas(&ms.obj) != replicas => {
                let mut obj = ms.obj.clone();
                obj.set_field(&["spec", "replicas"], json!(replicas));
                let old = (*ms).clone();
                self.update(&old, obj).await?;
            }
            Some(_) => {}
        }
        Ok(())
    }

    async fn machine_set(&mut self, ms: Stored) -> Result<(), ApiError> {
        if ms.obj.deleting() {
            return Ok(());
        }
        let create_first = self.machineset_order == MachineSetOrder::CreateFirst;
        if !create_first {
            self.adopt(&ms).await?;
        }
        let mut machines = self.live_owned(&kind::MACHINE, ms.obj.uid());
        let want = Self::replicas(&ms.obj) as usize;
        while machines.len() < want {
            let m = self.new_machine(&ms.obj, false).await?;
            machines.push(m.obj.key());
        }
        if create_first {
            self.adopt(&ms).await?;
            machines = self.live_owned(&kind::MACHINE, ms.obj.uid());
        }
        while machines.len() > want {
            let key = machines.pop().expect("more than wanted");
            let m = self.cache.get(&key).cloned().expect("an indexed key is cached");
            let why = json!({"controller": "machineset", "rule": "scale-down", "machineset": ms.obj.name(), "replicas": want});
            self.api.delete(&m, Propagation::Background, why).await?;
        }
        Ok(())
    }

    /// Adopts the Machines labelled with `ms`'s name that lost their controller reference (as
    /// CAPI does).
    async fn adopt(&mut self, ms: &Stored) -> Result<(), ApiError> {
        let orphans: Vec<Stored> = self
            .orphans
            .iter()
            .filter_map(|k| self.cache.get(k))
            .filter(|m| m.obj.label(SET_NAME_LABEL) == Some(ms.obj.name()) && !m.obj.deleting())
            .cloned()
            .collect();
        for m in orphans {
            let mut obj = m.obj.clone();
            obj.owned_by(&ms.obj);
            self.update(&m, obj).await?;
        }
        Ok(())
    }

    /// Creates a Machine owned by `owner` and its infrastructure machine (which gets a new VM or
    /// host).
    async fn new_machine(&mut self, owner: &Object, control_plane: bool) -> Result<Stored, ApiError> {
        let name = format!("{}-{}", owner.name(), &self.api.server.uid()[..5]);
        let cluster = owner.label(CLUSTER_NAME_LABEL).unwrap_or_default().to_string();
        let ns = owner.namespace().to_string();
        let machine = self.create(machine_object(owner, &name, &cluster, control_plane)).await?;
        let mut infra = Object::custom(infrastructure_kind(owner), &ns, &name, json!({}));
        infra.set_label(CLUSTER_NAME_LABEL, &cluster);
        infra.owned_by(&machine.obj);
        self.create(infra).await?;
        Ok(machine)
    }

    async fn machine(&mut self, m: Stored) -> Result<(), ApiError> {
        if !m.obj.deleting() {
            if !m.obj.finalizers().iter().any(|f| f == MACHINE_FINALIZER) {
                let mut obj = m.obj.clone();
                obj.add_finalizer(MACHINE_FINALIZER);
                self.update(&m, obj).await?;
            }
            return Ok(());
        }
        let infra_name =
            m.obj.field(&["spec", "infrastructureRef", "name"]).and_then(Value::as_str).unwrap_or(m.obj.name());
        let infra_kind = m
            .obj
            .field(&["spec", "infrastructureRef", "kind"])
            .and_then(Value::as_str)
            .and_then(Kind::by_name)
            .unwrap_or(&kind::DCS_MACHINE);
        let infra_key = infra_kind.key(m.obj.namespace(), infra_name);
        if let Some(infra) = self.cache.get(&infra_key).cloned() {
            if !infra.obj.deleting() {
                let why = json!({"controller": "machine", "rule": "machine deleting", "machine": m.obj.name(), "uid": m.obj.uid()});
                self.api.delete(&infra, Propagation::Background, why).await?;
            }
            return Ok(()); // wait until the infrastructure machine is gone
        }
        let mut obj = m.obj.clone();
        obj.remove_finalizer(MACHINE_FINALIZER);
        self.update(&m, obj).await
    }

    async fn dcs_machine(&mut self, infra: Stored) -> Result<(), ApiError> {
        let vm_id = infra.obj.field(&["spec", "providerID"]).and_then(Value::as_str).map(str::to_string);
        if !infra.obj.deleting() {
            let mut obj = infra.obj.clone();
            let mut changed = false;
            if !obj.finalizers().iter().any(|f| f == DCS_MACHINE_FINALIZER) {
                obj.add_finalizer(DCS_MACHINE_FINALIZER);
                changed = true;
            }
            if vm_id.is_none() {
                let id = format!("vm-{}", obj.name());
                let cluster = obj.label(CLUSTER_NAME_LABEL).unwrap_or_default().to_string();
                self.iaas.create(Vm { id: id.clone(), cluster, created_by: self.api.cluster().into() });
                obj.set_field(&["spec", "providerID"], json!(id));
                changed = true;
            }
            if changed {
                self.update(&infra, obj).await?;
            }
            return Ok(());
        }
        if let Some(id) = vm_id {
            let owner = infra.obj.owners().first().map(|r| json!({"kind": r.kind, "name": r.name, "uid": r.uid}));
            let why = json!({"rule": "infrastructure machine deleting", "dcsmachine": infra.obj.name(), "uid": infra.obj.uid(), "owner": owner});
            self.iaas.delete(&id, self.api.cluster(), "dcsmachine", why);
        }
        let mut obj = infra.obj.clone();
        obj.remove_finalizer(DCS_MACHINE_FINALIZER);
        self.update(&infra, obj).await
    }

    async fn control_plane(&mut self, kcp: Stored) -> Result<(), ApiError> {
        if kcp.obj.deleting() {
            return Ok(());
        }
        let cluster = kcp.obj.label(CLUSTER_NAME_LABEL).unwrap_or_default().to_string();
        let ns = kcp.obj.namespace().to_string();
        for suffix in CLUSTER_SECRET_SUFFIXES {
            let name = format!("{cluster}-{suffix}");
            if self.cache.contains_key(&kind::SECRET.key(&ns, &name)) {
                continue;
            }
            self.api.server.trace.record(
                self.api.cluster(),
                "capi.kcp.regenerate-secret",
                json!({"cluster": cluster, "secret": name}),
            );
            let mut data = BTreeMap::new();
            data.insert("tls.key".to_string(), self.api.server.uid().into_bytes());
            let mut s = Object::new(
                &kind::SECRET,
                &ns,
                &name,
                Body::Secret { type_: Some("cluster.x-k8s.io/secret".into()), data },
            );
            s.set_label(CLUSTER_NAME_LABEL, &cluster);
            s.owned_by(&kcp.obj);
            created(self.create(s).await)?;
        }
        let mut machines = self.live_owned(&kind::MACHINE, kcp.obj.uid()).len();
        let want = Self::replicas(&kcp.obj) as usize;
        while machines < want {
            self.new_machine(&kcp.obj, true).await?;
            machines += 1;
        }
        Ok(())
    }
}
