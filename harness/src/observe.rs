//! Observers that watch an etcd and record what a checker needs — from the event stream, not
//! from the final state, because a dependent that was visible without its owner for one
//! revision is enough for a garbage collector to act.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use etcd_client::{EventType, GetOptions, WatchOptions};
use sync::conn::{ConnError, Etcd};
use sync::object::{self, Decoded};

/// A moment where an object was on the etcd while one of its owners was not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Orphaned {
    pub key: String,
    pub revision: i64,
    pub missing_owner_uid: String,
}

#[derive(Debug, Default)]
struct State {
    uid_of: BTreeMap<Vec<u8>, String>,
    live: BTreeSet<String>,
    violations: Vec<Orphaned>,
    revision: i64,
    /// Times the watch was lost and taken up again where it stopped.
    reconnects: u64,
    /// Revisions never seen: (first, last) — the etcd compacted them while the observer was
    /// away, so it listed afresh. A checker must not pass what it did not see.
    gaps: Vec<(i64, i64)>,
}

/// How a watch ended.
enum Ended {
    /// The stream ended or failed: take it up again at the next revision.
    Lost,
    /// The etcd compacted past the next revision: list afresh.
    Compacted,
}

/// Watches every key of one etcd and records each revision at which a put object's owner UID
/// was not present ("no dependent before owner"). Keys outside `scope` are still indexed (an
/// owner may live anywhere) but not checked.
#[derive(Clone, Default)]
pub struct OwnerOrder {
    state: Arc<Mutex<State>>,
    /// Check only puts that create a key (a copy landing), not updates of an existing one: on
    /// a world with its own controllers, the GC marking a dependent of a lost owner is an
    /// update and not an ordering fault.
    creations_only: bool,
}

/// Recorded violations kept (all are counted in the length of the first ones kept).
const VIOLATIONS_KEPT_MAX: usize = 10_000;
/// Failed attempts in a row before the observer gives up (and says so in its gaps).
const RETRIES_MAX: u32 = 600;
const RETRY_DELAY: std::time::Duration = std::time::Duration::from_secs(1);
/// Gaps kept (a run with more has lost its observer anyway).
const GAPS_KEPT_MAX: usize = 100;

impl OwnerOrder {
    pub fn creations_only() -> Self {
        OwnerOrder { creations_only: true, ..OwnerOrder::default() }
    }

    pub fn violations(&self) -> Vec<Orphaned> {
        self.state.lock().expect("observer lock").violations.clone()
    }

    pub fn revision(&self) -> i64 {
        self.state.lock().expect("observer lock").revision
    }

    /// Revision ranges the observer never saw (see [`State::gaps`]).
    pub fn gaps(&self) -> Vec<(i64, i64)> {
        self.state.lock().expect("observer lock").gaps.clone()
    }

    pub fn reconnects(&self) -> u64 {
        self.state.lock().expect("observer lock").reconnects
    }

    /// Runs until the host stops: a lost watch is taken up again at the next revision (a
    /// crashed and restarted etcd, a reset connection); one the etcd compacted meanwhile is
    /// listed afresh and the revisions missed are recorded as a gap. Gives up after
    /// [`RETRIES_MAX`] failed attempts in a row (recorded as a gap to the end). `scope` decides
    /// which keys are checked.
    pub async fn run(self, etcd: Etcd, scope: impl Fn(&[u8]) -> bool) -> Result<(), ConnError> {
        let mut listed = false;
        let mut failures = 0u32;
        loop {
            let seen = self.revision();
            let attempt = async {
                if !listed {
                    self.list(&etcd).await?;
                    listed = true;
                }
                self.follow(&etcd, &scope).await
            };
            match attempt.await {
                Ok(Ended::Compacted) => {
                    listed = false;
                    failures = 0;
                }
                // A watch that ends before showing anything counts as a failed attempt.
                Ok(Ended::Lost) if self.revision() > seen => failures = 0,
                Ok(Ended::Lost) => {
                    failures += 1;
                    if failures > RETRIES_MAX {
                        self.gap(i64::MAX);
                        return Ok(());
                    }
                }
                Err(e) => {
                    failures += 1;
                    if failures > RETRIES_MAX {
                        self.gap(i64::MAX);
                        return Err(e);
                    }
                }
            }
            self.state.lock().expect("observer lock").reconnects += 1;
            tokio::time::sleep(RETRY_DELAY).await;
        }
    }

    fn gap(&self, until: i64) {
        let mut st = self.state.lock().expect("observer lock");
        let from = st.revision + 1;
        if until >= from && st.gaps.len() < GAPS_KEPT_MAX {
            st.gaps.push((from, until));
        }
    }

    /// Lists the whole keyspace: which UIDs are live at its revision. After the first, the
    /// revisions between the last one seen and this list were not observed.
    async fn list(&self, etcd: &Etcd) -> Result<(), ConnError> {
        let mut kv = etcd.kv.clone();
        let init = etcd.call(kv.get(vec![0u8], Some(GetOptions::new().with_from_key()))).await?;
        let start = init.header().map(|h| h.revision()).unwrap_or_default();
        let first = self.state.lock().expect("observer lock").revision == 0;
        if !first {
            self.gap(start);
        }
        let mut st = self.state.lock().expect("observer lock");
        st.uid_of.clear();
        st.live.clear();
        for kv in init.kvs() {
            if let Decoded::Object(m) = object::decode(kv.value()) {
                st.uid_of.insert(kv.key().to_vec(), m.uid.clone());
                st.live.insert(m.uid);
            }
        }
        st.revision = st.revision.max(start);
        Ok(())
    }

    /// Watches from the revision after the last one seen until the watch ends.
    async fn follow(&self, etcd: &Etcd, scope: &impl Fn(&[u8]) -> bool) -> Result<Ended, ConnError> {
        let next = self.revision() + 1;
        let mut w = etcd.watch.clone();
        let opts = WatchOptions::new().with_from_key().with_start_revision(next);
        let mut stream = etcd.call(w.watch(vec![0u8], Some(opts))).await?;
        loop {
            let resp = match stream.message().await {
                Ok(Some(resp)) => resp,
                Ok(None) | Err(_) => return Ok(Ended::Lost),
            };
            if resp.compact_revision() > 0 {
                return Ok(Ended::Compacted);
            }
            if resp.canceled() {
                return Ok(Ended::Lost);
            }
            let mut st = self.state.lock().expect("observer lock");
            // Apply all events of one revision, then check it: within one txn order is free.
            let mut events = resp.events().iter().peekable();
            while let Some(first) = events.peek() {
                let rev = first.kv().map(|kv| kv.mod_revision()).unwrap_or_default();
                let mut puts = Vec::new();
                while let Some(e) = events.next_if(|e| e.kv().map(|kv| kv.mod_revision()) == Some(rev)) {
                    let Some(kv) = e.kv() else { continue };
                    if let Some(old) = st.uid_of.remove(kv.key()) {
                        st.live.remove(&old);
                    }
                    if e.event_type() == EventType::Put
                        && let Decoded::Object(m) = object::decode(kv.value())
                    {
                        st.uid_of.insert(kv.key().to_vec(), m.uid.clone());
                        st.live.insert(m.uid);
                        if scope(kv.key()) && (!self.creations_only || kv.version() == 1) {
                            puts.push((kv.key().to_vec(), m.owners));
                        }
                    }
                }
                st.revision = st.revision.max(rev);
                for (key, owners) in puts {
                    for o in owners {
                        if !st.live.contains(&o.uid) && st.violations.len() < VIOLATIONS_KEPT_MAX {
                            let key = String::from_utf8_lossy(&key).into_owned();
                            st.violations.push(Orphaned { key, revision: rev, missing_owner_uid: o.uid });
                        }
                    }
                }
            }
        }
    }
}
