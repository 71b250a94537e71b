//! A workload cluster's agent as the platform sees it: an informer of its cluster's Machines on
//! the global cluster, through the platform domain (list, then watch from the list's
//! resourceVersion), like a client-go reflector.
//!
//! Its resourceVersion is the serving cluster's etcd revision. Like a reflector it keeps that
//! resourceVersion when its connection breaks and resumes the watch from it on whatever cluster
//! the domain names next — after a failover, the other cluster, whose revisions count another
//! history. The three outcomes are the real ones:
//! - past that cluster's head: "Too large resource version" (504); the reflector relists;
//! - compacted away there: 410 Gone; it relists;
//! - otherwise the other cluster answers with its own changes after that number, and the
//!   changes it made below it (in its own numbering) never reach the cache: the cache stays
//!   stale until those Machines change again or the agent restarts (seed 001 restarts its
//!   monitoring agent after a failover).
//!
//! The cache is published (Machine name → heartbeat annotation) for checks; every list, refused
//! watch and cluster change is traced.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;
use tokio::sync::Notify;

use crate::dns::{self, Resolver};
use crate::k8s::api::Resume;
use crate::k8s::{Api, kind};
use crate::net::Links;
use crate::trace::Trace;

/// Path prefix of the informer's requests: `/machines/<cluster>?resourceVersion=<n>` (0: list).
pub const PATH: &str = "/machines/";
/// Response header: the resourceVersion to resume from.
pub const RV_HEADER: &str = "x-drlab-rv";
/// Response header: `name=heartbeat,…` of the Machines listed or changed.
pub const ITEMS_HEADER: &str = "x-drlab-items";
/// Machines one answer may carry (the answer is one bounded HTTP head).
pub const ITEMS_MAX: usize = 64;
const HEARTBEAT: &str = "drlab.io/heartbeat";

/// What the agent's informer holds, for checks.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct View {
    /// The cluster that answered last.
    pub served_by: String,
    pub resource_version: i64,
    /// Machine name → its heartbeat annotation ("" without one).
    pub cache: BTreeMap<String, String>,
}

/// The ingress side: one informer request on `api`'s cluster. Status and extra header lines.
pub async fn answer(api: &Api, path: &str) -> (u16, String) {
    let Some((cluster, query)) = path.strip_prefix(PATH).and_then(|p| p.split_once("?resourceVersion=")) else {
        return (404, String::new());
    };
    let Ok(after) = query.parse::<i64>() else { return (400, String::new()) };
    if api.server.fenced() {
        return (503, format!("{}: fenced\r\n", dns::REASON_HEADER));
    }
    let prefix = format!("{}{}/{cluster}-", kind::MACHINE.prefix(), crate::topology::NS);
    // resourceVersion 0 is a list: every Machine of the cluster (changed since revision 0).
    let (objects, head) = match api.changed_since(&prefix, after).await {
        Ok(Ok(changed)) => changed,
        Ok(Err(Resume::Gone)) => return (410, format!("{}: too old resource version\r\n", dns::REASON_HEADER)),
        Ok(Err(Resume::TooLarge)) => return (504, format!("{}: Too large resource version\r\n", dns::REASON_HEADER)),
        Err(e) => return (503, format!("{}: {e}\r\n", dns::REASON_HEADER)),
    };
    assert!(objects.len() <= ITEMS_MAX, "the cluster agent watches clusters of at most ITEMS_MAX Machines");
    let items: Vec<String> = objects
        .iter()
        .map(|s| format!("{}={}", s.obj.name(), s.obj.annotation(HEARTBEAT).unwrap_or_default()))
        .collect();
    (200, format!("{RV_HEADER}: {head}\r\n{ITEMS_HEADER}: {}\r\n", items.join(",")))
}

/// Runs the agent of workload cluster `cluster`: dial the domain, list, then watch every
/// `period` on that connection; on a broken connection or a 5xx, dial again and resume from
/// the same resourceVersion; on 410 or "too large", relist. `restart` starts it afresh (an
/// empty cache, a list).
pub async fn run(
    cluster: String,
    mut resolver: Resolver,
    links: Links,
    period: Duration,
    restart: Arc<Notify>,
    view: Arc<Mutex<View>>,
    trace: Trace,
) {
    loop {
        let (target, mut conn) = dns::dial(&mut resolver, &links, period).await;
        loop {
            let rv = view.lock().expect("view lock").resource_version;
            let req = format!("GET {PATH}{cluster}?resourceVersion={rv} HTTP/1.1\r\nhost: {target}\r\n\r\n");
            let restarted = || {
                trace.record("agents", "cluster-agent.restart", json!({"cluster": cluster}));
                *view.lock().expect("view lock") = View::default();
            };
            let got = tokio::select! {
                r = tokio::time::timeout(period, dns::exchange_head(&mut conn, &req)) => r.ok().and_then(Result::ok),
                _ = restart.notified() => {
                    restarted();
                    None
                }
            };
            let Some(head) = got else { break };
            if !apply(&cluster, rv, &head, &view, &trace) {
                break;
            }
            tokio::select! {
                _ = tokio::time::sleep(period) => {}
                _ = restart.notified() => {
                    restarted();
                    break;
                }
            }
        }
    }
}

/// Applies one answer to the view; false when the connection should be dialled again.
fn apply(cluster: &str, rv: i64, head: &dns::Head, view: &Mutex<View>, trace: &Trace) -> bool {
    let mut v = view.lock().expect("view lock");
    let served_by = head.header(dns::SERVED_BY_HEADER);
    if v.served_by != served_by {
        trace.record("agents", "cluster-agent.served-by", json!({"cluster": cluster, "by": served_by, "rv": rv}));
        v.served_by = served_by.clone();
    }
    match head.status {
        200 => {
            let items = head.header(ITEMS_HEADER);
            let changed = items.split(',').filter(|i| !i.is_empty()).filter_map(|i| i.split_once('='));
            if rv == 0 {
                v.cache.clear();
            }
            for (name, beat) in changed {
                v.cache.insert(name.to_string(), beat.to_string());
            }
            v.resource_version = head.header(RV_HEADER).parse().unwrap_or(v.resource_version);
            if rv == 0 {
                let fields =
                    json!({"cluster": cluster, "by": served_by, "rv": v.resource_version, "items": v.cache.len()});
                trace.record("agents", "cluster-agent.list", fields);
            }
            true
        }
        410 | 504 => {
            let fields = json!({"cluster": cluster, "by": served_by, "rv": rv, "status": head.status});
            trace.record("agents", "cluster-agent.relist", fields);
            v.resource_version = 0;
            true
        }
        _ => false,
    }
}
