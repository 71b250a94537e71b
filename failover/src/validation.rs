//! The post-failover validation of the standby's workload clusters (seed 000 step 7: "workload
//! clusters ready, every Machine still bound to its infrastructure"), read from the standby's etcd
//! where kube-apiserver stores the Cluster API kinds as JSON — one piece of code for both
//! adapters. [`judge`] decides over the objects read, without I/O.
//!
//! It runs while the standby's Clusters are still paused, so their status is the last one the
//! primary's controllers wrote: a Cluster the primary saw not Ready is named. The bindings are
//! read from the objects themselves: a Machine's infrastructure machine must exist, must not be
//! owned by another Machine (a UID that differs is an absent owner to the garbage collector,
//! which then deletes the infrastructure machine and its VM), and must name the same VM.

use std::collections::BTreeMap;

use serde_json::Value;

use sync::conn::Etcd;
use sync::scan::{Scan, ScanError, prefix_end};

use crate::ports::{Finding, PortError};
use crate::preflight::is_global_name;

const CAPI: &str = "cluster.x-k8s.io";
const INFRASTRUCTURE: &str = "infrastructure.cluster.x-k8s.io";
const CONTROL_PLANE: &str = "controlplane.cluster.x-k8s.io";
const CLUSTER_NAME_LABEL: &str = "cluster.x-k8s.io/cluster-name";
/// Objects read in all (a platform holds far fewer; past it the rest are named unread), and per
/// request — a page stays well below gRPC's message limit.
pub const OBJECTS_MAX: usize = 200_000;
const PAGE_KEYS: i64 = 1_000;
/// Findings kept (a standby with thousands of broken Machines stays readable).
pub const FINDINGS_MAX: usize = 200;

/// What is read: Clusters, Machines, control planes and every infrastructure kind.
fn prefixes() -> [String; 4] {
    [
        format!("/registry/{CAPI}/clusters/"),
        format!("/registry/{CAPI}/machines/"),
        format!("/registry/{CONTROL_PLANE}/"),
        format!("/registry/{INFRASTRUCTURE}/"),
    ]
}

/// Compactions survived while reading (each restarts the read at a newer revision).
const COMPACTED_RETRIES_MAX: usize = 3;

/// Reads the standby's CAPI objects at one revision (so a Machine and its infrastructure
/// machine are seen as of the same moment) and judges them.
pub async fn read(standby: &Etcd) -> Result<Vec<Finding>, PortError> {
    let port = |e: &dyn std::fmt::Display| PortError::new("standby", e);
    for _ in 0..COMPACTED_RETRIES_MAX {
        let revision = standby.head().await.map_err(|e| port(&e))?;
        match read_at(standby, revision).await {
            Ok((objects, mut out)) => {
                out.extend(judge(&objects));
                return Ok(out);
            }
            Err(ScanError::Compacted { .. }) => continue,
            Err(e) => return Err(port(&e)),
        }
    }
    Err(port(&format!("compacted under {COMPACTED_RETRIES_MAX} reads of the CAPI objects")))
}

/// The objects under [`prefixes`] at `revision` (bounded by [`OBJECTS_MAX`], with a finding for
/// the rest).
async fn read_at(standby: &Etcd, revision: i64) -> Result<(BTreeMap<String, Value>, Vec<Finding>), ScanError> {
    let mut objects = BTreeMap::new();
    let mut out = Vec::new();
    for prefix in prefixes() {
        let mut scan = Scan::new(standby, prefix.as_bytes(), &prefix_end(prefix.as_bytes()), revision, PAGE_KEYS);
        while let Some(kv) = scan.next().await? {
            if objects.len() >= OBJECTS_MAX {
                out.push(Finding {
                    what: format!("more than {OBJECTS_MAX} objects: the rest were not read"),
                    where_: prefix.trim_start_matches("/registry/").to_string(),
                    cluster: None,
                });
                break;
            }
            // Not JSON (a protobuf kind under the same group): not a CAPI object.
            if let Ok(v) = serde_json::from_slice::<Value>(kv.value()) {
                objects.insert(String::from_utf8_lossy(kv.key()).into_owned(), v);
            }
        }
    }
    Ok((objects, out))
}

/// A required component on the standby (seed 000 step 6): a finding unless its Deployment exists
/// with a ready replica.
pub async fn component(standby: &Etcd, ns: &str, name: &str) -> Result<Option<Finding>, PortError> {
    let key = format!("/registry/deployments/{ns}/{name}");
    let mut kv = standby.kv.clone();
    let got = standby.call(kv.get(key, None)).await.map_err(|e| PortError::new("standby", e))?;
    let what = match got.kvs().first().map(|kv| decode_builtin::<k8s_pb::api::apps::v1::Deployment>(kv.value())) {
        None => "required component missing on the standby".to_string(),
        Some(None) => "required component unreadable (not a stored Deployment)".to_string(),
        Some(Some(d)) => {
            let ready = d.status.and_then(|s| s.ready_replicas).unwrap_or(0);
            if ready > 0 {
                return Ok(None);
            }
            let want = d.spec.and_then(|s| s.replicas).unwrap_or(1);
            format!("required component not running on the standby: 0 of {want} replicas ready")
        }
    };
    Ok(Some(Finding { what, where_: format!("Deployment {ns}/{name}"), cluster: None }))
}

/// The findings over the objects as stored (key → JSON), bounded by [`FINDINGS_MAX`].
pub fn judge(objects: &BTreeMap<String, Value>) -> Vec<Finding> {
    let mut out = Vec::new();
    for (key, c) in under(objects, &format!("/registry/{CAPI}/clusters/")) {
        let (ns, name) = namespaced(key);
        if !is_global_name(name) {
            cluster(objects, key, (ns, name), c, &mut out);
        }
    }
    for (key, m) in under(objects, &format!("/registry/{CAPI}/machines/")) {
        let (ns, name) = namespaced(key);
        let cluster = m["spec"]["clusterName"].as_str().or(m["metadata"]["labels"][CLUSTER_NAME_LABEL].as_str());
        if !is_global_name(name) && !cluster.is_some_and(is_global_name) {
            machine(objects, key, ns, cluster, m, &mut out);
        }
    }
    if out.len() > FINDINGS_MAX {
        let more = out.len() - FINDINGS_MAX;
        out.truncate(FINDINGS_MAX);
        out.push(Finding { what: format!("{more} more findings"), where_: "validation".into(), cluster: None });
    }
    out
}

fn cluster(objects: &BTreeMap<String, Value>, key: &str, (ns, name): (&str, &str), c: &Value, out: &mut Vec<Finding>) {
    let mut push = |what: String| {
        let where_ = key.trim_start_matches("/registry/").to_string();
        out.push(Finding { what, where_, cluster: Some(format!("{ns}/{name}")) });
    };
    if deleting(c) {
        push("the Cluster is being deleted".into());
    }
    if let Some(cond) = c["status"]["conditions"].as_array().into_iter().flatten().find(|x| x["type"] == "Ready")
        && cond["status"] != "True"
    {
        let why = [&cond["reason"], &cond["message"]].iter().filter_map(|v| v.as_str()).collect::<Vec<_>>().join(": ");
        let status = cond["status"].as_str().unwrap_or("?");
        push(format!("the Cluster is not Ready ({status}): {why}"));
    }
    for (field, group, role) in [
        ("infrastructureRef", INFRASTRUCTURE, "infrastructure cluster"),
        ("controlPlaneRef", CONTROL_PLANE, "control plane"),
    ] {
        let r = &c["spec"][field];
        if r.is_null() {
            continue;
        }
        match resolve(objects, r, ns, group) {
            Resolved::Missing(what) => push(format!("its {role} {what} is missing")),
            Resolved::Found(what, o) if deleting(o) => {
                push(format!("its {role} {what} is being deleted"));
            }
            Resolved::Found(..) => {}
        }
    }
}

fn machine(
    objects: &BTreeMap<String, Value>,
    key: &str,
    ns: &str,
    cluster: Option<&str>,
    m: &Value,
    out: &mut Vec<Finding>,
) {
    let at = || key.trim_start_matches("/registry/").to_string();
    let of = cluster.map(|c| format!("{ns}/{c}"));
    let mut push = |what: String| out.push(Finding { what, where_: at(), cluster: of.clone() });
    if deleting(m) {
        push("the Machine is being deleted".into());
        return;
    }
    if let Some(c) = cluster
        && !objects.contains_key(&format!("/registry/{CAPI}/clusters/{ns}/{c}"))
    {
        push(format!("its Cluster {c} is missing"));
    }
    let r = &m["spec"]["infrastructureRef"];
    if r.is_null() {
        push("the Machine names no infrastructure machine".into());
        return;
    }
    let (what, infra) = match resolve(objects, r, ns, INFRASTRUCTURE) {
        Resolved::Missing(what) => return push(format!("its infrastructure machine {what} is missing")),
        Resolved::Found(what, infra) => (what, infra),
    };
    if deleting(infra) {
        push(format!("its infrastructure machine {what} is being deleted"));
    }
    let uid = m["metadata"]["uid"].as_str().unwrap_or_default();
    let owners = infra["metadata"]["ownerReferences"].as_array().into_iter().flatten();
    if let Some(other) = owners.filter(|o| o["kind"] == "Machine").find(|o| o["uid"].as_str() != Some(uid)) {
        let other = other["uid"].as_str().unwrap_or("?");
        push(format!(
            "its infrastructure machine {what} is owned by another Machine (uid {other}): the garbage collector \
             deletes it and its VM"
        ));
    }
    if let (Some(a), Some(b)) = (m["spec"]["providerID"].as_str(), infra["spec"]["providerID"].as_str())
        && a != b
    {
        push(format!("the Machine names VM {a} but its infrastructure machine {what} names {b}"));
    }
}

enum Resolved<'a> {
    /// `Kind name` and the object.
    Found(String, &'a Value),
    Missing(String),
}

/// An object reference (`apiVersion`, `kind`, `name`, optional `namespace`) to the stored object;
/// the group defaults to `group` when the reference names no apiVersion.
fn resolve<'a>(objects: &'a BTreeMap<String, Value>, r: &Value, ns: &str, group: &str) -> Resolved<'a> {
    let kind = r["kind"].as_str().unwrap_or("?");
    let name = r["name"].as_str().unwrap_or("?");
    let ns = r["namespace"].as_str().unwrap_or(ns);
    let group = r["apiVersion"].as_str().and_then(|v| v.split_once('/')).map_or(group, |(g, _)| g);
    let what = format!("{kind} {name}");
    match objects.get(&format!("/registry/{group}/{}/{ns}/{name}", plural(kind))) {
        Some(o) => Resolved::Found(what, o),
        None => Resolved::Missing(what),
    }
}

/// A kind's resource name as CRDs spell it by default (lowercase, English plural).
fn plural(kind: &str) -> String {
    let k = kind.to_lowercase();
    let consonant_y = k.ends_with('y') && !k.ends_with("ay") && !k.ends_with("ey") && !k.ends_with("oy");
    if consonant_y {
        format!("{}ies", &k[..k.len() - 1])
    } else if ["s", "x", "ch", "sh"].iter().any(|e| k.ends_with(e)) {
        format!("{k}es")
    } else {
        format!("{k}s")
    }
}

fn under<'a>(objects: &'a BTreeMap<String, Value>, prefix: &str) -> impl Iterator<Item = (&'a str, &'a Value)> {
    objects.range(prefix.to_string()..).take_while(move |(k, _)| k.starts_with(prefix)).map(|(k, v)| (k.as_str(), v))
}

/// `(namespace, name)` of a namespaced key `/registry/<group>/<resource>/<ns>/<name>`.
fn namespaced(key: &str) -> (&str, &str) {
    let mut parts = key.rsplitn(3, '/');
    let name = parts.next().unwrap_or_default();
    let ns = parts.next().unwrap_or_default();
    (ns, name)
}

/// A built-in kind as kube-apiserver stores it (`k8s\0` + runtime.Unknown, protobuf); None when
/// it is not one.
pub(crate) fn decode_builtin<M: prost::Message + Default>(value: &[u8]) -> Option<M> {
    let (_, raw) = sync::object::unwrap_protobuf(value)?;
    M::decode(raw.as_slice()).ok()
}

fn deleting(o: &Value) -> bool {
    !o["metadata"]["deletionTimestamp"].is_null()
}

#[cfg(test)]
mod tests;
