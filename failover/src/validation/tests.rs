use serde_json::json;

use super::*;

const NS: &str = "cpaas-system";

fn key(group: &str, resource: &str, name: &str) -> String {
    format!("/registry/{group}/{resource}/{NS}/{name}")
}

/// A provisioned workload cluster `c` with one Machine bound to its DCSMachine and VM.
fn cluster_of(c: &str) -> BTreeMap<String, Value> {
    let m = format!("{c}-m0");
    let meta = |name: &str, uid: &str| json!({"name": name, "namespace": NS, "uid": uid});
    let mut infra_meta = meta(&m, "uid-infra");
    infra_meta["ownerReferences"] = json!([{"kind": "Machine", "name": m, "uid": format!("uid-{m}")}]);
    BTreeMap::from([
        (
            key(CAPI, "clusters", c),
            json!({"metadata": meta(c, "uid-c"), "spec": {
                "infrastructureRef": {"apiVersion": "infrastructure.cluster.x-k8s.io/v1beta1", "kind": "DCSCluster", "name": c},
                "controlPlaneRef": {"kind": "KubeadmControlPlane", "name": format!("{c}-cp")}},
                "status": {"conditions": [{"type": "Ready", "status": "True"}]}}),
        ),
        (key(INFRASTRUCTURE, "dcsclusters", c), json!({"metadata": meta(c, "uid-dc")})),
        (key(CONTROL_PLANE, "kubeadmcontrolplanes", &format!("{c}-cp")), json!({"metadata": meta(c, "uid-cp")})),
        (
            key(CAPI, "machines", &m),
            json!({"metadata": meta(&m, &format!("uid-{m}")), "spec": {"clusterName": c, "providerID": "vm-1",
                "infrastructureRef": {"kind": "DCSMachine", "name": m}}}),
        ),
        (key(INFRASTRUCTURE, "dcsmachines", &m), json!({"metadata": infra_meta, "spec": {"providerID": "vm-1"}})),
    ])
}

fn whats(f: &[Finding]) -> Vec<String> {
    f.iter().map(|f| format!("{}: {}", f.where_, f.what)).collect()
}

#[test]
fn a_provisioned_cluster_passes() {
    assert_eq!(judge(&cluster_of("wc-a")), vec![]);
}

#[test]
fn a_machine_whose_infrastructure_machine_is_gone_or_rebound_is_named() {
    let mut o = cluster_of("wc-a");
    o.remove(&key(INFRASTRUCTURE, "dcsmachines", "wc-a-m0"));
    assert_eq!(
        whats(&judge(&o)),
        ["cluster.x-k8s.io/machines/cpaas-system/wc-a-m0: its infrastructure machine DCSMachine wc-a-m0 is missing"]
    );

    let mut o = cluster_of("wc-a");
    let infra = o.get_mut(&key(INFRASTRUCTURE, "dcsmachines", "wc-a-m0")).unwrap();
    infra["metadata"]["ownerReferences"][0]["uid"] = json!("uid-old");
    infra["spec"]["providerID"] = json!("vm-2");
    let f = whats(&judge(&o));
    assert_eq!(f.len(), 2, "{f:?}");
    assert!(f[0].contains("owned by another Machine (uid uid-old)"), "{f:?}");
    assert!(f[1].contains("names VM vm-1 but its infrastructure machine DCSMachine wc-a-m0 names vm-2"), "{f:?}");
}

#[test]
fn a_cluster_not_ready_or_missing_its_parts_is_named() {
    let mut o = cluster_of("wc-a");
    let c = o.get_mut(&key(CAPI, "clusters", "wc-a")).unwrap();
    c["status"]["conditions"][0] =
        json!({"type": "Ready", "status": "False", "reason": "ScalingUp", "message": "1 of 3"});
    o.remove(&key(CONTROL_PLANE, "kubeadmcontrolplanes", "wc-a-cp"));
    let f = whats(&judge(&o));
    assert_eq!(
        f,
        [
            "cluster.x-k8s.io/clusters/cpaas-system/wc-a: the Cluster is not Ready (False): ScalingUp: 1 of 3",
            "cluster.x-k8s.io/clusters/cpaas-system/wc-a: its control plane KubeadmControlPlane wc-a-cp is missing",
        ]
    );
    o.remove(&key(CAPI, "clusters", "wc-a"));
    assert!(whats(&judge(&o))[0].ends_with("its Cluster wc-a is missing"));
}

#[test]
fn deleting_objects_are_named_and_global_ones_left_alone() {
    let mut o = cluster_of("wc-a");
    o.get_mut(&key(CAPI, "machines", "wc-a-m0")).unwrap()["metadata"]["deletionTimestamp"] =
        json!("2026-01-01T00:00:00Z");
    assert_eq!(whats(&judge(&o)), ["cluster.x-k8s.io/machines/cpaas-system/wc-a-m0: the Machine is being deleted"]);
    // The standby's own global cluster is its own business.
    let mut g = cluster_of("global");
    g.remove(&key(INFRASTRUCTURE, "dcsmachines", "global-m0"));
    assert_eq!(judge(&g), vec![]);
}

#[test]
fn findings_are_bounded() {
    let mut o = BTreeMap::new();
    for i in 0..FINDINGS_MAX + 5 {
        let m = format!("m{i:04}");
        o.insert(key(CAPI, "machines", &m), json!({"metadata": {"name": m, "deletionTimestamp": "t"}}));
    }
    let f = judge(&o);
    assert_eq!(f.len(), FINDINGS_MAX + 1);
    assert_eq!(f[FINDINGS_MAX].what, "5 more findings");
}

#[test]
fn kinds_pluralise_as_crds_do() {
    assert_eq!(plural("DCSMachine"), "dcsmachines");
    assert_eq!(plural("KubeadmControlPlane"), "kubeadmcontrolplanes");
    assert_eq!(plural("MachineInventory"), "machineinventories");
    assert_eq!(plural("Gateway"), "gateways");
}
