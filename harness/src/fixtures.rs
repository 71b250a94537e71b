//! Kubernetes objects as kube-apiserver stores them, for tests and worlds: Cluster API kinds as
//! JSON, built-in kinds as `k8s\0` protobuf.

use k8s_pb::api::core::v1::{Secret, ServiceAccount};
use k8s_pb::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use prost::Message;
use serde_json::json;

pub const CAPI_GROUP: &str = "cluster.x-k8s.io";
pub const NS: &str = "cpaas-system";

/// An owner of an object: (kind, name, uid).
pub type OwnerOf<'a> = (&'a str, &'a str, &'a str);

/// A Cluster API object (`resource` is the plural, e.g. "machinesets") as stored JSON.
pub fn capi(resource: &str, kind: &str, name: &str, uid: &str, owners: &[OwnerOf<'_>]) -> (String, Vec<u8>) {
    let refs: Vec<_> = owners
        .iter()
        .map(|(k, n, u)| json!({"apiVersion": "cluster.x-k8s.io/v1beta1", "kind": k, "name": n, "uid": u, "controller": true, "blockOwnerDeletion": true}))
        .collect();
    let v = json!({
        "apiVersion": "cluster.x-k8s.io/v1beta1",
        "kind": kind,
        "metadata": {"name": name, "namespace": NS, "uid": uid, "ownerReferences": refs},
        "spec": {},
    });
    (format!("/registry/{CAPI_GROUP}/{resource}/{NS}/{name}"), serde_json::to_vec(&v).expect("json"))
}

fn meta(name: &str, uid: &str, owners: &[OwnerOf<'_>]) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.into()),
        namespace: Some(NS.into()),
        uid: Some(uid.into()),
        owner_references: owners
            .iter()
            .map(|(k, n, u)| OwnerReference {
                kind: Some((*k).into()),
                name: Some((*n).into()),
                uid: Some((*u).into()),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    }
}

/// A Secret as stored protobuf (unencrypted).
pub fn secret(name: &str, uid: &str, owners: &[OwnerOf<'_>], data: &[u8]) -> (String, Vec<u8>) {
    let s = Secret {
        metadata: Some(meta(name, uid, owners)),
        data: [("value".to_string(), data.to_vec())].into(),
        ..Default::default()
    };
    (format!("/registry/secrets/{NS}/{name}"), sync::object::encode_protobuf("v1", "Secret", s.encode_to_vec()))
}

/// A `kubernetes.io/tls` Secret as stored protobuf (unencrypted): a platform certificate.
pub fn tls_secret(name: &str, uid: &str, cert_pem: &[u8]) -> (String, Vec<u8>) {
    let s = Secret {
        metadata: Some(meta(name, uid, &[])),
        r#type: Some("kubernetes.io/tls".into()),
        data: [("tls.crt".to_string(), cert_pem.to_vec())].into(),
        ..Default::default()
    };
    (format!("/registry/secrets/{NS}/{name}"), sync::object::encode_protobuf("v1", "Secret", s.encode_to_vec()))
}

/// A Deployment as stored protobuf, `ready` of its `replicas` ready (a platform component).
pub fn deployment(namespace: &str, name: &str, replicas: i32, ready: i32) -> (String, Vec<u8>) {
    use k8s_pb::api::apps::v1::{Deployment, DeploymentSpec, DeploymentStatus};
    let d = Deployment {
        metadata: Some(ObjectMeta {
            name: Some(name.into()),
            namespace: Some(namespace.into()),
            uid: Some(format!("uid-{namespace}-{name}")),
            ..Default::default()
        }),
        spec: Some(DeploymentSpec { replicas: Some(replicas), ..Default::default() }),
        status: Some(DeploymentStatus { replicas: Some(replicas), ready_replicas: Some(ready), ..Default::default() }),
    };
    let value = sync::object::encode_protobuf("apps/v1", "Deployment", d.encode_to_vec());
    (format!("/registry/deployments/{namespace}/{name}"), value)
}

/// A Cluster API object labelled as one cluster's (`cluster.x-k8s.io/cluster-name`).
pub fn labelled(object: (String, Vec<u8>), cluster: &str) -> (String, Vec<u8>) {
    let mut v: serde_json::Value = serde_json::from_slice(&object.1).expect("a CAPI fixture is JSON");
    v["metadata"]["labels"] = json!({"cluster.x-k8s.io/cluster-name": cluster});
    (object.0, serde_json::to_vec(&v).expect("json"))
}

/// A ServiceAccount and its token Secret (which the token controller deletes without it).
pub fn service_account_with_token(name: &str, uid: &str, token_uid: &str) -> [(String, Vec<u8>); 2] {
    let sa = ServiceAccount { metadata: Some(meta(name, uid, &[])), ..Default::default() };
    let mut m = meta(&format!("{name}-token"), token_uid, &[]);
    m.annotations = [
        ("kubernetes.io/service-account.name".to_string(), name.to_string()),
        ("kubernetes.io/service-account.uid".to_string(), uid.to_string()),
    ]
    .into();
    let token =
        Secret { metadata: Some(m), r#type: Some("kubernetes.io/service-account-token".into()), ..Default::default() };
    [
        (
            format!("/registry/serviceaccounts/{NS}/{name}"),
            sync::object::encode_protobuf("v1", "ServiceAccount", sa.encode_to_vec()),
        ),
        (
            format!("/registry/secrets/{NS}/{name}-token"),
            sync::object::encode_protobuf("v1", "Secret", token.encode_to_vec()),
        ),
    ]
}

/// One workload cluster's CAPI tree: Cluster → MachineDeployment → MachineSet → Machines, each
/// Machine with a bootstrap Secret it owns. UIDs derive from the names (stable across runs).
pub fn workload_cluster(cluster: &str, machines: usize) -> Vec<(String, Vec<u8>)> {
    let uid = |s: &str| format!("uid-{s}");
    let md = format!("{cluster}-md");
    let ms = format!("{cluster}-md-0");
    let mut out = vec![
        capi("clusters", "Cluster", cluster, &uid(cluster), &[]),
        capi("machinedeployments", "MachineDeployment", &md, &uid(&md), &[("Cluster", cluster, &uid(cluster))]),
        capi("machinesets", "MachineSet", &ms, &uid(&ms), &[("MachineDeployment", &md, &uid(&md))]),
    ];
    for i in 0..machines {
        let m = format!("{ms}-m{i}");
        out.push(capi("machines", "Machine", &m, &uid(&m), &[("MachineSet", &ms, &uid(&ms))]));
        out.push(secret(
            &format!("{m}-bootstrap"),
            &uid(&format!("{m}-bootstrap")),
            &[("Machine", &m, &uid(&m))],
            b"cloud-init",
        ));
    }
    out
}

/// [`workload_cluster`] as a provisioned cluster's objects look: the Cluster Ready, unpaused and
/// referring to its DCSCluster; each Machine labelled with its cluster, bound to a DCSMachine it
/// owns and to that DCSMachine's VM (`vm-<machine>`).
pub fn provisioned_cluster(cluster: &str, machines: usize) -> Vec<(String, Vec<u8>)> {
    const INFRA: &str = "infrastructure.cluster.x-k8s.io";
    let json = |v: &serde_json::Value| serde_json::to_vec(v).expect("json");
    let mut out = Vec::new();
    for (key, value) in workload_cluster(cluster, machines) {
        let mut v: serde_json::Value = match serde_json::from_slice(&value) {
            Ok(v) => v,
            Err(_) => {
                out.push((key, value)); // a Secret (protobuf)
                continue;
            }
        };
        v["metadata"]["labels"] = json!({"cluster.x-k8s.io/cluster-name": cluster});
        let name = v["metadata"]["name"].as_str().expect("named").to_string();
        // Its infrastructure object, written after it (owners first, as controllers create them).
        let infra = match v["kind"].as_str() {
            Some("Cluster") => {
                let r = json!({"apiVersion": format!("{INFRA}/v1beta1"), "kind": "DCSCluster", "name": name});
                v["spec"] = json!({"paused": false, "infrastructureRef": r});
                v["status"] = json!({"conditions": [{"type": "Ready", "status": "True"}]});
                let dcs = json!({"apiVersion": format!("{INFRA}/v1beta1"), "kind": "DCSCluster",
                    "metadata": {"name": name, "namespace": NS, "uid": format!("uid-dcs-{name}")}});
                Some((format!("/registry/{INFRA}/dcsclusters/{NS}/{name}"), json(&dcs)))
            }
            Some("Machine") => {
                let vm = format!("vm-{name}");
                let uid = v["metadata"]["uid"].clone();
                v["spec"] = json!({"clusterName": cluster, "providerID": vm,
                    "infrastructureRef": {"apiVersion": format!("{INFRA}/v1beta1"), "kind": "DCSMachine", "name": name}});
                let dcs = json!({"apiVersion": format!("{INFRA}/v1beta1"), "kind": "DCSMachine",
                    "metadata": {"name": name, "namespace": NS, "uid": format!("uid-dcs-{name}"),
                        "labels": {"cluster.x-k8s.io/cluster-name": cluster},
                        "ownerReferences": [{"apiVersion": "cluster.x-k8s.io/v1beta1", "kind": "Machine", "name": name,
                            "uid": uid, "controller": true, "blockOwnerDeletion": true}]},
                    "spec": {"providerID": vm}});
                Some((format!("/registry/{INFRA}/dcsmachines/{NS}/{name}"), json(&dcs)))
            }
            _ => None,
        };
        out.push((key, json(&v)));
        out.extend(infra);
    }
    out
}

/// An EncryptionConfiguration for Secrets: aescbc with one key `name` whose 32-byte secret is
/// `byte` repeated (tests only), then identity.
pub fn encryption_config(name: &str, byte: u8) -> String {
    use base64::Engine as _;
    let secret = base64::engine::general_purpose::STANDARD.encode([byte; 32]);
    format!(
        "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n  - resources: [secrets]\n    providers:\n      - aescbc:\n          keys:\n            - name: {name}\n              secret: {secret}\n      - identity: {{}}\n"
    )
}

/// A keyring from [`encryption_config`].
pub fn keyring(name: &str, byte: u8) -> sync::crypto::Keyring {
    sync::crypto::Keyring::parse("test", &encryption_config(name, byte)).expect("test keyring parses")
}
