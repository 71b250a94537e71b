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

    /// Runs until the watch ends. `scope` decides which keys are checked.
    pub async fn run(self, etcd: Etcd, scope: impl Fn(&[u8]) -> bool) -> Result<(), ConnError> {
        let mut kv = etcd.kv.clone();
        let init = etcd.call(kv.get(vec![0u8], Some(GetOptions::new().with_from_key()))).await?;
        let start = init.header().map(|h| h.revision()).unwrap_or_default();
        {
            let mut st = self.state.lock().expect("observer lock");
            for kv in init.kvs() {
                if let Decoded::Object(m) = object::decode(kv.value()) {
                    st.uid_of.insert(kv.key().to_vec(), m.uid.clone());
                    st.live.insert(m.uid);
                }
            }
            st.revision = start;
        }
        let mut w = etcd.watch.clone();
        let opts = WatchOptions::new().with_from_key().with_start_revision(start + 1);
        let mut stream = etcd.call(w.watch(vec![0u8], Some(opts))).await?;
        while let Some(resp) = stream
            .message()
            .await
            .map_err(|source| ConnError::Unreachable { endpoint: etcd.endpoint.clone(), source })?
        {
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
        Ok(())
    }
}
