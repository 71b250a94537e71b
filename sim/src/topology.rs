//! The standard topology: N workload clusters × M Machines each, as the Cluster API objects,
//! bootstrap and plan Secrets a global cluster holds for them, plus each global cluster's own
//! `global` / `global-*` resources (distinct UIDs and their own VMs on each side).
//!
//! Per workload cluster `wc-NN`: Cluster, DCSCluster, KubeadmControlPlane (1 replica), its
//! `-ca` / `-etcd` / `-sa` / `-proxy` Secrets and a kubeconfig Secret, a MachineDeployment with
//! its MachineSet, KubeadmConfigTemplate and DCSMachineTemplate; per Machine: the Machine, its
//! DCSMachine (with a VM in the IaaS), KubeadmConfig, bootstrap-data Secret and plan Secret.
//! With the bare-metal provider a Machine's infrastructure is a BaremetalMachine naming a
//! registered host (a MachineInventory, with the host in the IaaS), and the plan Secret belongs
//! to the MachineInventory, as elemental-operator keeps it. (The infrastructure cluster and
//! template stay DCS kinds on bare metal: no Machine's fate depends on them.)

use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::json;

use crate::iaas::Vm;
use crate::k8s::capi::baremetal;
use crate::k8s::capi::{CLUSTER_NAME_LABEL, DCS_MACHINE_FINALIZER};
use crate::k8s::kind;
use crate::k8s::object::{Body, Object};

/// The namespace the platform keeps CAPI objects in.
pub const NS: &str = "cpaas-system";
/// Workload clusters and Machines per cluster the builder accepts (bounds, not targets).
pub const CLUSTERS_MAX: usize = 1_000;
pub const MACHINES_PER_CLUSTER_MAX: usize = 500;

#[derive(Debug, Clone)]
pub struct Topology {
    pub clusters: usize,
    /// Machines per workload cluster, control plane included (at least 1).
    pub machines: usize,
    /// The workload clusters' infrastructure provider (the global clusters' own are VMs).
    pub provider: Provider,
}

impl Topology {
    /// `clusters` × `machines` on VMs.
    pub fn vm(clusters: usize, machines: usize) -> Self {
        Topology { clusters, machines, provider: Provider::Vm }
    }
}

/// What a workload cluster's Machines run on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Provider {
    /// DCSMachines, each with a VM the provider creates and deletes.
    #[default]
    Vm,
    /// BaremetalMachines on registered hosts: the destructive act is a reset plan written to
    /// the host's plan Secret, which its system agent carries out.
    Baremetal,
}

/// Objects and VMs of one side.
#[derive(Debug, Clone, Default)]
pub struct Side {
    pub objects: Vec<Object>,
    pub vms: Vec<Vm>,
}

/// The naming rule of seed 002: the global cluster's own resources are `global` or `global-*`.
pub fn is_global_name(name: &str) -> bool {
    name == "global" || name.starts_with("global-")
}

pub fn cluster_name(i: usize) -> String {
    format!("wc-{i:02}")
}

/// Makes deterministic UIDs from one seed.
pub struct Uids(ChaCha8Rng);

impl Uids {
    pub fn new(seed: u64) -> Self {
        Uids(ChaCha8Rng::seed_from_u64(seed))
    }

    pub fn fresh(&mut self) -> String {
        let mut b = [0u8; 16];
        self.0.fill_bytes(&mut b);
        crate::k8s::object::uuid(b)
    }
}

fn labelled(mut o: Object, cluster: &str, uids: &mut Uids) -> Object {
    o.meta.uid = Some(uids.fresh());
    o.set_label(CLUSTER_NAME_LABEL, cluster);
    o
}

fn secret(name: &str, type_: &str, key: &str, value: &[u8]) -> Object {
    Object::new(
        &kind::SECRET,
        NS,
        name,
        Body::Secret { type_: Some(type_.into()), data: [(key.to_string(), value.to_vec())].into() },
    )
}

/// Where generated objects and VMs go, and how VMs are named.
struct Out<'a> {
    uids: &'a mut Uids,
    side: &'a mut Side,
    created_by: &'a str,
    vm_prefix: &'a str,
}

/// One Machine with its infrastructure machine (a DCSMachine with a VM, or a BaremetalMachine
/// on a registered host), KubeadmConfig, bootstrap and plan Secrets.
fn machine(owner: &Object, name: &str, cluster: &str, control_plane: bool, out: &mut Out<'_>) {
    let Out { uids, side, created_by, vm_prefix } = out;
    let m = labelled(crate::k8s::capi::machine_object(owner, name, cluster, control_plane), cluster, uids);
    let infra_kind = crate::k8s::capi::infrastructure_kind(owner);
    let baremetal = infra_kind == &kind::BAREMETAL_MACHINE;
    let vm =
        if baremetal { baremetal::host_id(&format!("{vm_prefix}{name}")) } else { format!("vm-{vm_prefix}{name}") };
    let (spec, finalizer) = if baremetal {
        (json!({"providerID": vm, "inventoryRef": {"name": name}}), baremetal::BAREMETAL_MACHINE_FINALIZER)
    } else {
        (json!({"providerID": vm}), DCS_MACHINE_FINALIZER)
    };
    let mut infra = labelled(Object::custom(infra_kind, NS, name, spec), cluster, uids);
    infra.owned_by(&m);
    infra.add_finalizer(finalizer);
    let mut cfg = labelled(Object::custom(&kind::KUBEADM_CONFIG, NS, name, json!({})), cluster, uids);
    cfg.owned_by(&m);
    let mut boot = labelled(
        secret(&format!("{name}-bootstrap"), "cluster.x-k8s.io/secret", "value", b"#cloud-config"),
        cluster,
        uids,
    );
    boot.owned_by(&cfg);
    let mut plan =
        labelled(baremetal::plan_secret(NS, name, baremetal::Plan { generation: 1, reset: false }), cluster, uids);
    if baremetal {
        // The host's registration: it outlives the Machine (a reset host registers again).
        let inventory =
            labelled(Object::custom(&kind::MACHINE_INVENTORY, NS, name, json!({"hostID": vm})), cluster, uids);
        plan.owned_by(&inventory);
        side.objects.push(inventory);
    } else {
        plan.owned_by(&m);
    }
    side.vms.push(Vm { id: vm, cluster: cluster.into(), created_by: (*created_by).into() });
    side.objects.extend([m, infra, cfg, boot, plan]);
}

/// A MachineDeployment's, MachineSet's or control plane's spec naming its Machines'
/// infrastructure kind (a VM's is the default and left out).
pub fn with_template(mut spec: serde_json::Value, provider: Provider) -> serde_json::Value {
    if provider == Provider::Baremetal {
        spec["template"] = json!({"spec": {"infrastructureRef": {"kind": kind::BAREMETAL_MACHINE.kind}}});
    }
    spec
}

/// The workload clusters the primary holds (and the sync copies).
pub fn workload(t: &Topology, seed: u64, created_by: &str) -> Side {
    assert!(t.clusters <= CLUSTERS_MAX, "more workload clusters than CLUSTERS_MAX");
    assert!((1..=MACHINES_PER_CLUSTER_MAX).contains(&t.machines), "machines per cluster out of range");
    let mut uids = Uids::new(seed);
    let mut side = Side::default();
    for i in 0..t.clusters {
        let c = cluster_name(i);
        let cluster =
            labelled(Object::custom(&kind::CLUSTER, NS, &c, crate::k8s::capi::cluster_spec(&c)), &c, &mut uids);
        let mut infra = labelled(Object::custom(&kind::DCS_CLUSTER, NS, &c, json!({})), &c, &mut uids);
        infra.owned_by(&cluster);
        let mut kcp = labelled(
            Object::custom(
                &kind::KUBEADM_CONTROL_PLANE,
                NS,
                &format!("{c}-cp"),
                with_template(json!({"replicas": 1}), t.provider),
            ),
            &c,
            &mut uids,
        );
        kcp.owned_by(&cluster);
        let mut secrets = Vec::new();
        for suffix in crate::k8s::capi::CLUSTER_SECRET_SUFFIXES {
            let mut s =
                labelled(secret(&format!("{c}-{suffix}"), "cluster.x-k8s.io/secret", "tls.key", b"pem"), &c, &mut uids);
            s.owned_by(&kcp);
            secrets.push(s);
        }
        let mut kubeconfig = labelled(
            secret(&format!("{c}-kubeconfig"), "cluster.x-k8s.io/secret", "value", b"kubeconfig"),
            &c,
            &mut uids,
        );
        kubeconfig.owned_by(&cluster);
        let workers = t.machines - 1;
        let spec = |replicas: usize| with_template(json!({"replicas": replicas}), t.provider);
        let mut md =
            labelled(Object::custom(&kind::MACHINE_DEPLOYMENT, NS, &format!("{c}-md"), spec(workers)), &c, &mut uids);
        md.owned_by(&cluster);
        let mut ms =
            labelled(Object::custom(&kind::MACHINE_SET, NS, &format!("{c}-md-0"), spec(workers)), &c, &mut uids);
        ms.owned_by(&md);
        let mut kct =
            labelled(Object::custom(&kind::KUBEADM_CONFIG_TEMPLATE, NS, &format!("{c}-md"), json!({})), &c, &mut uids);
        kct.owned_by(&cluster);
        let mut dmt =
            labelled(Object::custom(&kind::DCS_MACHINE_TEMPLATE, NS, &format!("{c}-md"), json!({})), &c, &mut uids);
        dmt.owned_by(&cluster);
        machine(
            &kcp,
            &format!("{c}-cp-0"),
            &c,
            true,
            &mut Out { uids: &mut uids, side: &mut side, created_by, vm_prefix: "" },
        );
        for w in 0..workers {
            machine(
                &ms,
                &format!("{c}-md-0-{w}"),
                &c,
                false,
                &mut Out { uids: &mut uids, side: &mut side, created_by, vm_prefix: "" },
            );
        }
        side.objects.extend([cluster, infra, kcp]);
        side.objects.extend(secrets);
        side.objects.extend([kubeconfig, md, ms, kct, dmt]);
    }
    side
}

/// A global cluster's own resources: Cluster and DCSCluster `global`, KubeadmControlPlane
/// `global-cp` with three Machines `global-cp-N`, each with its VM (named after the side, since
/// both sides have Machines of those names), and its running [`COMPONENTS`]. `misnamed` adds a resource that breaks the naming
/// rule (seed 002): a MachineDeployment `workers` with a MachineSet and one Machine.
pub fn global(side_name: &str, seed: u64, misnamed: bool) -> Side {
    let mut uids = Uids::new(seed);
    let mut side = Side::default();
    let c = "global";
    let cluster = labelled(Object::custom(&kind::CLUSTER, NS, c, crate::k8s::capi::cluster_spec(c)), c, &mut uids);
    let mut infra = labelled(Object::custom(&kind::DCS_CLUSTER, NS, c, json!({})), c, &mut uids);
    infra.owned_by(&cluster);
    let mut kcp =
        labelled(Object::custom(&kind::KUBEADM_CONTROL_PLANE, NS, "global-cp", json!({"replicas": 3})), c, &mut uids);
    kcp.owned_by(&cluster);
    let prefix = format!("{side_name}-");
    for i in 0..3 {
        machine(
            &kcp,
            &format!("global-cp-{i}"),
            c,
            true,
            &mut Out { uids: &mut uids, side: &mut side, created_by: side_name, vm_prefix: &prefix },
        );
    }
    for suffix in crate::k8s::capi::CLUSTER_SECRET_SUFFIXES {
        let mut s =
            labelled(secret(&format!("global-{suffix}"), "cluster.x-k8s.io/secret", "tls.key", b"pem"), c, &mut uids);
        s.owned_by(&kcp);
        side.objects.push(s);
    }
    if misnamed {
        let mut md = labelled(
            Object::custom(&kind::MACHINE_DEPLOYMENT, NS, MISNAMED_GLOBAL, json!({"replicas": 1})),
            c,
            &mut uids,
        );
        md.owned_by(&cluster);
        let mut ms =
            labelled(Object::custom(&kind::MACHINE_SET, NS, "workers-0", json!({"replicas": 1})), c, &mut uids);
        ms.owned_by(&md);
        machine(
            &ms,
            "workers-0-0",
            c,
            false,
            &mut Out { uids: &mut uids, side: &mut side, created_by: side_name, vm_prefix: &prefix },
        );
        side.objects.extend([md, ms]);
    }
    side.objects.extend([cluster, infra, kcp]);
    // Its own components, running (the sync's rules leave Deployments out).
    for name in COMPONENTS {
        let mut d = Object::new(&kind::DEPLOYMENT, NS, name, Body::Deployment { replicas: 1, ready: 1 });
        d.meta.uid = Some(uids.fresh());
        side.objects.push(d);
    }
    side
}

/// The name of seed 002's misnamed global resource (a MachineDeployment of the global cluster
/// without the `global-` prefix).
pub const MISNAMED_GLOBAL: &str = "workers";

/// The platform components every global cluster runs as Deployments in [`NS`]: a failover's
/// validation requires a ready replica of each on the standby (seed 000 step 6).
pub const COMPONENTS: [&str; 1] = ["capi-controller-manager"];

/// The bare-metal system agent's name (its ServiceAccount, Role and RoleBinding).
pub const AGENT: &str = "baremetal-system-agent";

/// The agent's shared auth bundle on the primary (seed 000) and what the hosts hold.
pub struct AgentBundle {
    /// Its ServiceAccount, token Secret, a Role granting get/patch on exactly the plan Secrets
    /// of the Machines, and the RoleBinding. The sync copies them exactly.
    pub objects: Vec<Object>,
    /// The token the hosts received at registration, signed with the primary's key.
    pub token: String,
    /// The plan Secrets the Role names.
    pub plans: Vec<String>,
}

/// The bundle for `side`'s Machines, its token signed with `signing`.
pub fn agent_bundle(side: &Side, seed: u64, signing: &crate::k8s::auth::TokenSigning) -> AgentBundle {
    use crate::k8s::auth::Claims;
    use crate::k8s::object::Rule;
    use crate::k8s::tokens::{SA_NAME_ANNOTATION, SA_UID_ANNOTATION, TOKEN_TYPE};
    const NAME: &str = AGENT;
    let mut uids = Uids::new(seed);
    let mut sa = Object::new(&kind::SERVICE_ACCOUNT, NS, NAME, Body::ServiceAccount);
    sa.meta.uid = Some(uids.fresh());
    let token_name = format!("{NAME}-token");
    let signed = signing.issue(&Claims::service_account(signing, NS, NAME, sa.uid(), &token_name));
    let mut token = secret(&token_name, TOKEN_TYPE, "token", signed.as_bytes());
    token.meta.uid = Some(uids.fresh());
    token.meta.annotations = Some(
        [(SA_NAME_ANNOTATION.to_string(), NAME.to_string()), (SA_UID_ANNOTATION.to_string(), sa.uid().to_string())]
            .into(),
    );
    let plans: Vec<String> = side
        .objects
        .iter()
        .filter(|o| o.kind == &kind::SECRET && o.name().ends_with("-plan"))
        .map(|o| o.name().to_string())
        .collect();
    let mut role = Object::new(
        &kind::ROLE,
        NS,
        NAME,
        Body::Role {
            rules: vec![Rule {
                verbs: vec!["get".into(), "patch".into()],
                resources: vec!["secrets".into()],
                resource_names: plans.clone(),
            }],
        },
    );
    role.meta.uid = Some(uids.fresh());
    let mut binding = Object::new(
        &kind::ROLE_BINDING,
        NS,
        NAME,
        Body::RoleBinding { role: NAME.into(), subjects: vec![NAME.into()] },
    );
    binding.meta.uid = Some(uids.fresh());
    AgentBundle { objects: vec![sa, token, role, binding], token: signed, plans }
}

/// Where the platform certificate lives (seed 000's example: dex's TLS Secret).
pub const PLATFORM_CERT_SECRET: &str = "dex.tls";

/// The platform certificate, as a `kubernetes.io/tls` Secret in [`NS`] covering `names` (the
/// platform domain and both VIPs, when installed right). Ed25519 under a key drawn from `seed`,
/// with a fixed serial and validity, so the same seed gives the same bytes.
pub fn platform_certificate(names: &[String], seed: u64) -> Object {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let (mut secret_key, mut uid) = ([0u8; 32], [0u8; 16]);
    rng.fill_bytes(&mut secret_key);
    rng.fill_bytes(&mut uid);
    // PKCS#8 v1 of an Ed25519 private key (RFC 8410): a fixed prefix, then the 32 key bytes.
    let mut pkcs8 = hex::decode("302e020100300506032b657004220420").expect("hex");
    pkcs8.extend_from_slice(&secret_key);
    let key = rcgen::KeyPair::try_from(pkcs8.as_slice()).expect("an Ed25519 PKCS#8 key");
    let mut params = rcgen::CertificateParams::new(names.to_vec()).expect("valid certificate names");
    params.serial_number = Some(rcgen::SerialNumber::from(vec![1]));
    params.distinguished_name.push(rcgen::DnType::CommonName, names.first().map(String::as_str).unwrap_or("platform"));
    let cert = params.self_signed(&key).expect("a self-signed certificate");
    let mut secret = Object::new(
        &kind::SECRET,
        NS,
        PLATFORM_CERT_SECRET,
        Body::Secret {
            type_: Some("kubernetes.io/tls".into()),
            data: [
                ("tls.crt".to_string(), cert.pem().into_bytes()),
                ("tls.key".to_string(), key.serialize_pem().into_bytes()),
            ]
            .into(),
        },
    );
    secret.meta.uid = Some(crate::k8s::object::uuid(uid));
    secret
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_references_hold_together() {
        let s = workload(&Topology::vm(3, 4), 7, "primary");
        // 3 + 5 secrets + 4 templates/sets per cluster, 5 per Machine.
        assert_eq!(s.objects.len(), 3 * (3 + 5 + 4 + 4 * 5));
        assert_eq!(s.vms.len(), 12);
        let uids: std::collections::BTreeSet<&str> = s.objects.iter().map(Object::uid).collect();
        assert_eq!(uids.len(), s.objects.len(), "UIDs are unique");
        for o in &s.objects {
            for r in o.owners() {
                assert!(uids.contains(r.uid.as_str()), "{} owner {} is in the topology", o.key(), r.name);
            }
        }
        assert_eq!(workload(&Topology::vm(3, 4), 7, "primary").objects, s.objects);
        let g = global("standby", 9, false);
        // Its components are Deployments, which the rules leave out: only its CAPI objects need the name.
        let capi = g.objects.iter().filter(|o| o.kind != &kind::DEPLOYMENT);
        assert!(capi.clone().all(|o| is_global_name(o.name())));
        assert_eq!(g.objects.len() - capi.count(), COMPONENTS.len());
        assert!(!is_global_name("globalx") && !is_global_name("workers"));
        assert!(g.vms.iter().all(|v| v.id.starts_with("vm-standby-global-")));
        assert!(global("primary", 9, true).objects.iter().any(|o| o.name() == MISNAMED_GLOBAL));
    }

    #[test]
    fn bare_metal_machines_name_registered_hosts_whose_plans_outlive_them() {
        let s = workload(&Topology { clusters: 2, machines: 3, provider: Provider::Baremetal }, 7, "primary");
        // One MachineInventory more per Machine than on VMs.
        assert_eq!(s.objects.len(), 2 * (3 + 5 + 4 + 3 * 6));
        assert!(s.vms.iter().all(|v| v.id.starts_with("host-wc-")), "hosts, not VMs");
        let uid_of = |kind: &kind::Kind, name: &str| {
            s.objects.iter().find(|o| o.kind == kind && o.name() == name).map(Object::uid).expect("present")
        };
        for m in s.objects.iter().filter(|o| o.kind == &kind::MACHINE) {
            let infra = m.field(&["spec", "infrastructureRef", "kind"]).and_then(|v| v.as_str());
            assert_eq!(infra, Some("BaremetalMachine"), "{}", m.name());
            let plan = s.objects.iter().find(|o| o.name() == format!("{}-plan", m.name())).expect("a plan");
            // Owned by the host's registration, not the Machine: a deleted Machine's host keeps
            // its plan Secret (where the reset plan goes).
            assert_eq!(plan.owners()[0].uid, uid_of(&kind::MACHINE_INVENTORY, m.name()));
            let bm = s.objects.iter().find(|o| o.kind == &kind::BAREMETAL_MACHINE && o.name() == m.name());
            let host = bm.and_then(|b| b.field(&["spec", "providerID"])).and_then(|v| v.as_str());
            assert_eq!(host, Some(format!("host-{}", m.name()).as_str()));
        }
        // The templates carry the provider, so the controllers' new Machines are bare metal too.
        let md = s.objects.iter().find(|o| o.kind == &kind::MACHINE_DEPLOYMENT).expect("an MD");
        assert_eq!(crate::k8s::capi::infrastructure_kind(md), &kind::BAREMETAL_MACHINE);
    }
}
