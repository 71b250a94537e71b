//! The engine's core, without I/O: source changes in, target writes out.
//!
//! For every source change the planner applies the rules, tracks which object UIDs exist on the
//! source and which have landed on the target, and holds back a dependent whose owner has not
//! landed yet — so the standby's garbage collector never sees an orphan. A held key is released,
//! in the same write as its owner, once every owner is on the target; a source delete clears it.
//! Hold state is persisted on the target as bookkeeping keys written in the same transaction.

use std::collections::{BTreeMap, BTreeSet};

use rand::RngCore;

use crate::crypto::{Boundary, Carry};
use crate::object::{self, Decoded};
use crate::rules::Rules;

pub const HELD_PREFIX: &str = "/drlab/etcd-sync/held";

/// A change of one source key at one revision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Put { key: Vec<u8>, value: Vec<u8>, lease: i64 },
    Delete { key: Vec<u8> },
}

impl Change {
    pub fn key(&self) -> &[u8] {
        match self {
            Change::Put { key, .. } | Change::Delete { key } => key,
        }
    }
}

/// A write to the target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    Put(Vec<u8>),
    Delete,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum HoldReason {
    /// The owner exists on the source and is in scope, but has not landed on the target yet.
    OwnerPending,
    /// The owner is kept out by a rule: it will never land (e.g. a Secret owned by `global-*`).
    OwnerExcluded,
    /// The owner does not exist on the source either: the source's GC will delete this orphan.
    OwnerAbsentOnSource,
}

impl HoldReason {
    pub fn as_str(self) -> &'static str {
        match self {
            HoldReason::OwnerPending => "owner-pending",
            HoldReason::OwnerExcluded => "owner-excluded",
            HoldReason::OwnerAbsentOnSource => "owner-absent-on-source",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Held {
    pub value: Vec<u8>,
    pub revision: i64,
    pub uid: String,
    pub owners: Vec<String>,
}

/// Counters the daemon exports.
#[derive(Debug, Clone, Default)]
pub struct PlanStats {
    pub held_total: u64,
    pub released_total: u64,
    pub skipped_leased: u64,
    pub undecryptable_total: u64,
}

pub struct Planner {
    rules: Rules,
    boundary: Boundary,
    /// IVs for re-encryption: seeded by the caller (from the OS in the daemon, from the world
    /// seed in the simulator).
    rng: Box<dyn RngCore + Send + Sync>,
    /// Source keys whose latest value could not be carried (ciphertext the target cannot read).
    undecryptable: BTreeSet<Vec<u8>>,
    /// Every source object's UID by key and key by UID (all keys, excluded ones too, so an
    /// excluded owner is recognised).
    uid_of: BTreeMap<Vec<u8>, String>,
    key_of: BTreeMap<String, Vec<u8>>,
    /// UIDs whose object is on the target (written or verified by the sync).
    on_target: BTreeSet<String>,
    held: BTreeMap<Vec<u8>, Held>,
    /// Owner UID → held keys waiting for it.
    waiting: BTreeMap<String, BTreeSet<Vec<u8>>>,
    held_max: usize,
    pub stats: PlanStats,
    /// Test-only (`owner-order-off` mutant): never hold, copy in source order like make-mirror.
    #[cfg(feature = "mutants")]
    pub owner_order_off: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error("more than {max} keys held back waiting for their owners (raise --held-max or fix the source)")]
    TooManyHeld { max: usize },
}

impl Planner {
    pub fn new(rules: Rules, held_max: usize, boundary: Boundary, rng: Box<dyn RngCore + Send + Sync>) -> Self {
        Planner {
            rules,
            boundary,
            rng,
            undecryptable: BTreeSet::new(),
            uid_of: BTreeMap::new(),
            key_of: BTreeMap::new(),
            on_target: BTreeSet::new(),
            held: BTreeMap::new(),
            waiting: BTreeMap::new(),
            held_max,
            stats: PlanStats::default(),
            #[cfg(feature = "mutants")]
            owner_order_off: false,
        }
    }

    pub fn rules(&self) -> &Rules {
        &self.rules
    }

    pub fn held(&self) -> &BTreeMap<Vec<u8>, Held> {
        &self.held
    }

    fn owner_order(&self) -> bool {
        #[cfg(feature = "mutants")]
        if self.owner_order_off {
            return false;
        }
        true
    }

    /// Records a source object's UID without writing anything (index building).
    pub fn observe_source(&mut self, key: &[u8], value: &[u8]) {
        self.forget_source(key);
        if let Decoded::Object(m) = self.decode(value)
            && !m.uid.is_empty()
        {
            self.uid_of.insert(key.to_vec(), m.uid.clone());
            self.key_of.insert(m.uid, key.to_vec());
        }
    }

    /// Metadata of a source value, through the source key when it is ciphertext we can open.
    fn decode(&self, value: &[u8]) -> Decoded {
        match self.boundary.source_plain(value) {
            Some(plain) => object::decode(&plain),
            None => object::decode(value),
        }
    }

    /// Keys skipped as undecryptable (their latest source value).
    pub fn undecryptable(&self) -> &BTreeSet<Vec<u8>> {
        &self.undecryptable
    }

    /// The bytes to write for a source value, or None (and the key recorded) when the target
    /// could not read them.
    fn carry(&mut self, key: &[u8], value: Vec<u8>) -> Option<Vec<u8>> {
        match self.boundary.carry(&value, self.rng.as_mut()) {
            Carry::Write(v) => {
                self.undecryptable.remove(key);
                Some(v)
            }
            Carry::Undecryptable => {
                if self.undecryptable.insert(key.to_vec()) {
                    self.stats.undecryptable_total += 1;
                }
                None
            }
        }
    }

    fn forget_source(&mut self, key: &[u8]) -> Option<String> {
        let uid = self.uid_of.remove(key)?;
        if self.key_of.get(&uid).is_some_and(|k| k == key) {
            self.key_of.remove(&uid);
        }
        Some(uid)
    }

    /// Records that the target already holds this object (verified equal by a resync).
    pub fn verified_on_target(&mut self, value: &[u8], out: &mut Vec<(Vec<u8>, Op)>) -> Result<(), PlanError> {
        if let Decoded::Object(m) = self.decode(value)
            && !m.uid.is_empty()
        {
            self.landed(m.uid, out)?;
        }
        Ok(())
    }

    /// Why a key would be held now, or None when every owner is on the target.
    pub fn reason(&self, owners: &[String]) -> Option<HoldReason> {
        owners
            .iter()
            .filter(|u| !self.on_target.contains(*u))
            .map(|u| match self.key_of.get(u) {
                Some(k) if self.rules.includes(k) => HoldReason::OwnerPending,
                Some(_) => HoldReason::OwnerExcluded,
                None => HoldReason::OwnerAbsentOnSource,
            })
            .max()
    }

    fn held_key(key: &[u8]) -> Vec<u8> {
        let mut k = HELD_PREFIX.as_bytes().to_vec();
        k.extend_from_slice(key);
        k
    }

    /// Plans one source change at `revision`, appending target writes to `out`.
    pub fn change(&mut self, revision: i64, change: Change, out: &mut Vec<(Vec<u8>, Op)>) -> Result<(), PlanError> {
        let included = self.rules.includes(change.key());
        match change {
            Change::Delete { key } => {
                let uid = self.forget_source(&key);
                if !included {
                    return Ok(());
                }
                self.undecryptable.remove(&key);
                if self.unhold(&key) {
                    out.push((Self::held_key(&key), Op::Delete));
                }
                if let Some(uid) = uid {
                    self.on_target.remove(&uid);
                }
                out.push((key, Op::Delete));
            }
            Change::Put { key, value, lease } => {
                self.observe_source(&key, &value);
                if !included {
                    return Ok(());
                }
                if lease != 0 {
                    // A leased key would outlive its lease on the target; such keys (Events,
                    // masterleases) are on the deny list, anything else leased is skipped.
                    self.stats.skipped_leased += 1;
                    return Ok(());
                }
                let was_held = self.unhold(&key);
                let (uid, owners) = match self.decode(&value) {
                    Decoded::Object(m) => {
                        (m.uid, m.owners.into_iter().map(|o| o.uid).filter(|u| !u.is_empty()).collect())
                    }
                    _ => (String::new(), Vec::new()),
                };
                match self.reason(&owners).filter(|_| self.owner_order()) {
                    None => {
                        if was_held {
                            out.push((Self::held_key(&key), Op::Delete));
                        }
                        let Some(value) = self.carry(&key, value) else { return Ok(()) };
                        out.push((key, Op::Put(value)));
                        if !uid.is_empty() {
                            self.landed(uid, out)?;
                        }
                    }
                    Some(reason) => {
                        if self.held.len() >= self.held_max {
                            return Err(PlanError::TooManyHeld { max: self.held_max });
                        }
                        let record =
                            serde_json::json!({"revision": revision, "reason": reason.as_str(), "owners": owners});
                        out.push((Self::held_key(&key), Op::Put(record.to_string().into_bytes())));
                        for o in &owners {
                            self.waiting.entry(o.clone()).or_default().insert(key.clone());
                        }
                        self.held.insert(key, Held { value, revision, uid, owners });
                        self.stats.held_total += 1;
                    }
                }
            }
        }
        Ok(())
    }

    fn unhold(&mut self, key: &[u8]) -> bool {
        let Some(h) = self.held.remove(key) else { return false };
        for o in &h.owners {
            if let Some(w) = self.waiting.get_mut(o) {
                w.remove(key);
                if w.is_empty() {
                    self.waiting.remove(o);
                }
            }
        }
        true
    }

    /// `uid` is now on the target: release every held key whose owners all are, transitively.
    fn landed(&mut self, uid: String, out: &mut Vec<(Vec<u8>, Op)>) -> Result<(), PlanError> {
        let mut work = vec![uid];
        // Each held key is released at most once, so the loop is bounded by held_max.
        while let Some(uid) = work.pop() {
            self.on_target.insert(uid.clone());
            let Some(waiters) = self.waiting.remove(&uid) else { continue };
            for key in waiters {
                // A key still waiting for another owner stays registered under that owner.
                let ready = self.held.get(&key).is_some_and(|h| self.reason(&h.owners).is_none());
                if !ready {
                    continue;
                }
                let h = self.held.get(&key).cloned().expect("checked above");
                self.unhold(&key);
                out.push((Self::held_key(&key), Op::Delete));
                let Some(value) = self.carry(&key, h.value) else { continue };
                out.push((key, Op::Put(value)));
                self.stats.released_total += 1;
                if !h.uid.is_empty() {
                    work.push(h.uid);
                }
            }
        }
        Ok(())
    }

    /// Restores a hold persisted by an earlier run (value re-read from the source).
    pub fn restore_hold(&mut self, key: Vec<u8>, value: Vec<u8>, revision: i64) {
        let (uid, owners) = match self.decode(&value) {
            Decoded::Object(m) => (m.uid, m.owners.into_iter().map(|o| o.uid).filter(|u| !u.is_empty()).collect()),
            _ => (String::new(), Vec::new()),
        };
        for o in &owners {
            self.waiting.entry(o.clone()).or_default().insert(key.clone());
        }
        self.held.insert(key, Held { value, revision, uid, owners });
    }

    /// Releases every held key whose owners are all on the target (after a resume rebuilt state).
    pub fn release_ready(&mut self, out: &mut Vec<(Vec<u8>, Op)>) -> Result<(), PlanError> {
        let ready: Vec<String> = self
            .held
            .values()
            .flat_map(|h| h.owners.iter())
            .filter(|u| self.on_target.contains(*u))
            .cloned()
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        for uid in ready {
            self.landed(uid, out)?;
        }
        Ok(())
    }

    /// Held keys with their current reason, for `/check` and the guard.
    pub fn held_report(&self) -> Vec<(Vec<u8>, HoldReason)> {
        self.held.iter().map(|(k, h)| (k.clone(), self.reason(&h.owners).unwrap_or(HoldReason::OwnerPending))).collect()
    }
}
