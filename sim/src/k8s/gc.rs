//! kube-controller-manager's garbage collector, with its real mechanics (`garbagecollector/`):
//!
//! - one informer per resource, each with its own lag, feeding one dependency graph keyed by UID;
//! - an owner not yet seen becomes a *virtual* node queued for a live lookup; a lookup that
//!   finds nothing, or an object of that name with another UID, makes the owner absent: its UID
//!   goes into the absent-owner cache (an LRU of 500 in kube-controller-manager) and its
//!   dependents are queued;
//! - a queued dependent whose owners are all absent (cache hit, live lookup NotFound, or UID
//!   mismatch — looked up in the dependent's namespace) is deleted with background propagation;
//!   one with some live owners only loses the dangling references;
//! - a cached absent owner that appears later is *still* absent until evicted: the poisoned-cache
//!   hazard of a standby whose owners arrive late;
//! - foreground deletion: an owner with the `foregroundDeletion` finalizer waits until its
//!   dependents are gone, then the collector removes the finalizer;
//! - deleted objects' UIDs go into the absent-owner cache too, as the graph builder does.
//!
//! It runs on the standby as well, whatever the sync gate says: that is the hazard.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use indexmap::IndexSet;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use serde_json::{Value, json};
use tokio::sync::{mpsc, watch};

use super::leader::{leadership_changed, leads};

use super::api::{Api, ApiError, FOREGROUND_FINALIZER, Propagation, Stored};
use super::informer::{self, Delta};
use super::kind::{self, Kind};
use super::queue::WorkQueue;

/// kube-controller-manager's absent-owner cache size.
pub const ABSENT_OWNER_CACHE_MAX: usize = 500;
/// Graph nodes the model allows (a bound far above the largest topology).
const GRAPH_NODES_MAX: usize = 500_000;
/// Changes buffered between the informers and the graph builder.
const DELTAS_BUFFERED_MAX: usize = 4_096;
/// Delay before a failed item is tried again.
const RETRY_DELAY: Duration = Duration::from_millis(500);

#[derive(Debug, Clone)]
pub struct GcConfig {
    /// Lag of each kind's informer (in [`kind::ALL`] order; missing entries mean no lag).
    pub informer_lags: Vec<Duration>,
    pub absent_owner_cache_max: usize,
    /// Whether kube-controller-manager leads (None: no leader election, it always acts).
    pub leading: Option<watch::Receiver<bool>>,
}

impl Default for GcConfig {
    fn default() -> Self {
        GcConfig { informer_lags: Vec::new(), absent_owner_cache_max: ABSENT_OWNER_CACHE_MAX, leading: None }
    }
}

#[derive(Debug, Clone)]
struct Node {
    kind: &'static Kind,
    namespace: String,
    name: String,
    owners: Vec<OwnerReference>,
    dependents: BTreeSet<String>,
    /// Seen by an informer (false: a virtual node made from an owner reference).
    observed: bool,
    /// Carries the foregroundDeletion finalizer: waits for its dependents.
    deleting_dependents: bool,
}

/// The absent-owner cache: an LRU of UIDs.
struct AbsentOwners {
    uids: IndexSet<String>,
    max: usize,
}

impl AbsentOwners {
    fn add(&mut self, uid: &str) {
        self.uids.shift_remove(uid);
        self.uids.insert(uid.to_string());
        if self.uids.len() > self.max {
            self.uids.shift_remove_index(0);
        }
    }

    /// A hit refreshes the entry, as `lru.Cache.Get` does.
    fn hit(&mut self, uid: &str) -> bool {
        if self.uids.shift_remove(uid) {
            self.uids.insert(uid.to_string());
            return true;
        }
        false
    }
}

/// Why one owner reference counts as absent.
fn absent_reason(r: &OwnerReference, reason: &str) -> Value {
    json!({"kind": r.kind, "name": r.name, "uid": r.uid, "reason": reason})
}

enum Verdict {
    Solid,
    Dangling(Value),
    Waiting,
}

pub struct GarbageCollector {
    api: Api,
    nodes: BTreeMap<String, Node>,
    absent: AbsentOwners,
    queue: WorkQueue,
}

/// Runs the collector against `api`'s cluster until the host stops.
pub async fn run(api: Api, etcd: etcd_client::Client, cfg: GcConfig) {
    let (tx, mut rx) = mpsc::channel(DELTAS_BUFFERED_MAX);
    for (i, kind) in kind::ALL.iter().copied().enumerate() {
        let lag = cfg.informer_lags.get(i).copied().unwrap_or_default();
        informer::spawn(api.clone(), etcd.clone(), kind, lag, tx.clone());
    }
    drop(tx);
    let mut gc = GarbageCollector {
        api,
        nodes: BTreeMap::new(),
        absent: AbsentOwners { uids: IndexSet::new(), max: cfg.absent_owner_cache_max },
        queue: WorkQueue::new(RETRY_DELAY),
    };
    // Workers start once every informer has listed, as the real collector waits for its caches,
    // and only while kube-controller-manager leads (the graph is kept up to date regardless).
    let mut unsynced = kind::ALL.len();
    let mut leading = cfg.leading;
    loop {
        while let Ok(d) = rx.try_recv() {
            unsynced -= usize::from(matches!(d, Delta::Synced(_)));
            gc.graph_change(d);
        }
        let working = unsynced == 0 && leads(&leading);
        if working && let Some(uid) = gc.queue.pop() {
            if let Err(e) = gc.attempt_to_delete(&uid).await {
                gc.api.trace_error(&uid, &e);
                gc.queue.retry_later(uid);
            }
            continue;
        }
        tokio::select! {
            d = rx.recv() => match d {
                Some(d) => {
                    unsynced -= usize::from(matches!(d, Delta::Synced(_)));
                    gc.graph_change(d);
                }
                None => return,
            },
            _ = leadership_changed(&mut leading) => {}
            _ = gc.queue.retry_due(), if working => {}
        }
    }
}

impl GarbageCollector {
    fn enqueue(&mut self, uid: &str) {
        self.queue.add(uid);
    }

    fn graph_change(&mut self, d: Delta) {
        match d {
            Delta::Synced(_) => {}
            Delta::Upsert(s) => self.upsert(&s),
            Delta::Deleted(obj) => self.remove(obj.uid()),
        }
    }

    fn upsert(&mut self, s: &Stored) {
        let obj = &s.obj;
        let uid = obj.uid().to_string();
        let owners = obj.owners().to_vec();
        let foreground = obj.deleting() && obj.finalizers().iter().any(|f| f == FOREGROUND_FINALIZER);
        let old_owners = match self.nodes.get_mut(&uid) {
            Some(n) => {
                n.observed = true;
                n.kind = obj.kind;
                n.name = obj.name().into();
                n.namespace = obj.namespace().into();
                n.deleting_dependents = foreground;
                std::mem::replace(&mut n.owners, owners.clone())
            }
            None => {
                assert!(self.nodes.len() < GRAPH_NODES_MAX, "the GC graph outgrew GRAPH_NODES_MAX");
                self.nodes.insert(
                    uid.clone(),
                    Node {
                        kind: obj.kind,
                        namespace: obj.namespace().into(),
                        name: obj.name().into(),
                        owners: owners.clone(),
                        dependents: BTreeSet::new(),
                        observed: true,
                        deleting_dependents: foreground,
                    },
                );
                Vec::new()
            }
        };
        for r in old_owners.iter().filter(|r| !owners.iter().any(|o| o.uid == r.uid)) {
            if let Some(o) = self.nodes.get_mut(&r.uid) {
                o.dependents.remove(&uid);
                if o.deleting_dependents {
                    self.enqueue(&r.uid);
                }
            }
        }
        for r in owners.iter().filter(|r| !old_owners.iter().any(|o| o.uid == r.uid)) {
            match self.nodes.get_mut(&r.uid) {
                Some(o) => {
                    o.dependents.insert(uid.clone());
                }
                None => {
                    let Some(kind) = Kind::by_name(&r.kind) else { continue };
                    self.nodes.insert(
                        r.uid.clone(),
                        Node {
                            kind,
                            namespace: obj.namespace().into(),
                            name: r.name.clone(),
                            owners: Vec::new(),
                            dependents: [uid.clone()].into(),
                            observed: false,
                            deleting_dependents: false,
                        },
                    );
                    self.enqueue(&r.uid);
                }
            }
        }
        if foreground {
            self.enqueue(&uid);
            let deps: Vec<String> = self.nodes[&uid].dependents.iter().cloned().collect();
            deps.iter().for_each(|d| self.enqueue(d));
        }
    }

    /// An object is gone (or a virtual owner proved absent): unlink it, remember it as absent,
    /// queue its dependents.
    fn remove(&mut self, uid: &str) {
        let Some(node) = self.nodes.remove(uid) else { return };
        self.absent.add(uid);
        for r in &node.owners {
            if let Some(o) = self.nodes.get_mut(&r.uid) {
                o.dependents.remove(uid);
                if o.deleting_dependents {
                    self.enqueue(&r.uid);
                }
            }
        }
        for d in &node.dependents {
            self.enqueue(d);
        }
    }

    async fn attempt_to_delete(&mut self, uid: &str) -> Result<(), ApiError> {
        let Some(node) = self.nodes.get(uid).cloned() else { return Ok(()) };
        let live = self.api.get(node.kind, &node.namespace, &node.name).await?;
        if !node.observed {
            let reason = match &live {
                None => "lookup-not-found",
                Some(s) if s.obj.uid() != uid => "lookup-uid-mismatch",
                Some(_) => return Ok(()), // its informer has not caught up yet
            };
            self.api.server.trace.record(
                self.api.cluster(),
                "gc.owner-absent",
                json!({"kind": node.kind.kind, "name": node.name, "uid": uid, "reason": reason, "dependents": node.dependents.len()}),
            );
            self.remove(uid);
            return Ok(());
        }
        let Some(item) = live.filter(|s| s.obj.uid() == uid) else { return Ok(()) };
        if node.deleting_dependents {
            if node.dependents.is_empty() {
                let mut obj = item.obj.clone();
                obj.remove_finalizer(FOREGROUND_FINALIZER);
                self.api.update(&item, obj).await?;
            } else {
                let deps: Vec<String> = node.dependents.iter().cloned().collect();
                deps.iter().for_each(|d| self.enqueue(d));
            }
            return Ok(());
        }
        // The live object's owners decide, not the graph's: an informer that has not caught up
        // may still show references the object has since lost (orphaned, or adopted
        // elsewhere). With none left it is nobody's dependent (kube's attemptToDeleteItem
        // returns on an empty `ownerReferences`); "all owners absent" must not hold vacuously.
        if item.obj.deleting() || item.obj.owners().is_empty() {
            return Ok(());
        }
        let mut solid = 0;
        let mut dangling = Vec::new();
        let mut waiting = Vec::new();
        for r in item.obj.owners() {
            match self.classify(r, &node.namespace).await? {
                Verdict::Solid => solid += 1,
                Verdict::Dangling(why) => dangling.push((r.uid.clone(), why)),
                Verdict::Waiting => waiting.push(r.uid.clone()),
            }
        }
        if solid > 0 {
            if dangling.is_empty() && waiting.is_empty() {
                return Ok(());
            }
            let mut obj = item.obj.clone();
            let gone: BTreeSet<&String> = dangling.iter().map(|(u, _)| u).chain(waiting.iter()).collect();
            if let Some(refs) = obj.meta.owner_references.as_mut() {
                refs.retain(|r| !gone.contains(&r.uid));
            }
            self.api.update(&item, obj).await?;
            return Ok(());
        }
        let why: Vec<Value> = dangling.into_iter().map(|(_, w)| w).collect();
        let policy = if !waiting.is_empty() && !node.dependents.is_empty() {
            Propagation::Foreground
        } else {
            Propagation::Background
        };
        let cause =
            json!({"controller": "garbage-collector", "rule": "all owners absent", "owners": why, "waiting": waiting});
        self.api.delete(&item, policy, cause).await?;
        Ok(())
    }

    async fn classify(&mut self, r: &OwnerReference, namespace: &str) -> Result<Verdict, ApiError> {
        if self.absent.hit(&r.uid) {
            return Ok(Verdict::Dangling(absent_reason(r, "absent-owner-cache")));
        }
        let Some(kind) = Kind::by_name(&r.kind) else {
            // A kind the model does not serve: the real collector cannot resolve it and retries.
            return Ok(Verdict::Solid);
        };
        match self.api.get(kind, namespace, &r.name).await? {
            None => {
                self.absent.add(&r.uid);
                Ok(Verdict::Dangling(absent_reason(r, "lookup-not-found")))
            }
            Some(o) if o.obj.uid() != r.uid => {
                self.absent.add(&r.uid);
                Ok(Verdict::Dangling(absent_reason(r, "lookup-uid-mismatch")))
            }
            Some(o) if o.obj.deleting() && o.obj.finalizers().iter().any(|f| f == FOREGROUND_FINALIZER) => {
                Ok(Verdict::Waiting)
            }
            Some(_) => Ok(Verdict::Solid),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_absent_owner_cache_is_an_lru() {
        let mut c = AbsentOwners { uids: IndexSet::new(), max: 2 };
        c.add("a");
        c.add("b");
        assert!(c.hit("a")); // a is now the most recent
        c.add("c"); // evicts b
        assert!(!c.hit("b"));
        assert!(c.hit("a"));
        assert!(c.hit("c"));
    }
}
