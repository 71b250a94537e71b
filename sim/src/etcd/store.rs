//! The MVCC core of the simulated etcd: revisions, per-key history, the event log watches replay
//! from, compaction and leases. No I/O and no clock: time comes in as an argument, so the same
//! store runs under turmoil's simulated clock and under the real one.
//!
//! Semantics follow etcd 3.5's `mvcc` package where the conformance suite can observe them: one
//! write transaction is one revision (and none if it changed nothing), a key's version restarts
//! at 1 after a delete, compaction at `c` keeps each key's latest revision `<= c` unless that is a
//! tombstone, and reading below the compacted revision is an error.

use std::collections::{BTreeMap, BTreeSet};

use etcd_client::proto::{PbEvent, PbKeyValue};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tokio::time::{Duration, Instant};

use super::EtcdError;
use super::config::{Config, Mutant};

pub const EVENT_PUT: i32 = 0;
pub const EVENT_DELETE: i32 = 1;

/// Largest TTL etcd accepts (`lease.MaxLeaseTTL`).
const LEASE_TTL_MAX_S: i64 = 9_000_000_000;

/// One entry of a key's history: the value written at `mod_rev`, or a tombstone.
#[derive(Debug, Clone)]
struct Rev {
    mod_rev: i64,
    kv: Option<PbKeyValue>,
}

#[derive(Debug, Clone)]
pub struct Lease {
    pub id: i64,
    pub ttl_granted_s: i64,
    pub ttl_s: i64,
    pub expiry: Instant,
    pub keys: BTreeSet<Vec<u8>>,
}

#[derive(Debug, Clone)]
pub struct Store {
    pub(crate) cfg: Config,
    rev: i64,
    compact_rev: i64,
    keys: BTreeMap<Vec<u8>, Vec<Rev>>,
    /// Events by revision, kept for every revision `>= compact_rev` so watches can replay them.
    events: BTreeMap<i64, Vec<PbEvent>>,
    pub(crate) leases: BTreeMap<i64, Lease>,
    rng: ChaCha8Rng,
    /// Bytes of live values, reported as the db size.
    live_bytes: i64,
}

/// The key range of a request: one key, `[start, end)`, or everything from `start` on (`end == "\0"`).
#[derive(Debug, Clone)]
pub struct KeyRange {
    pub start: Vec<u8>,
    pub end: Vec<u8>,
}

impl KeyRange {
    pub fn new(start: &[u8], end: &[u8]) -> Self {
        KeyRange { start: start.to_vec(), end: end.to_vec() }
    }

    pub fn contains(&self, key: &[u8]) -> bool {
        if self.end.is_empty() {
            key == self.start.as_slice()
        } else if self.end == [0] {
            key >= self.start.as_slice()
        } else {
            key >= self.start.as_slice() && key < self.end.as_slice()
        }
    }
}

/// Writes of one transaction, all at revision `rev`; the store's revision moves only when a
/// change was made (`Store::commit`).
pub struct Batch {
    pub rev: i64,
    pub events: Vec<PbEvent>,
}

impl Store {
    pub fn new(cfg: Config) -> Self {
        let rng = ChaCha8Rng::seed_from_u64(cfg.seed);
        Store {
            cfg,
            rev: 1,
            compact_rev: 0,
            keys: BTreeMap::new(),
            events: BTreeMap::new(),
            leases: BTreeMap::new(),
            rng,
            live_bytes: 0,
        }
    }

    pub fn rev(&self) -> i64 {
        self.rev
    }

    pub fn compact_rev(&self) -> i64 {
        self.compact_rev
    }

    pub fn db_size(&self) -> i64 {
        // etcd's bbolt file never shrinks below a few pages; the figure only needs to be plausible.
        16_384 + self.live_bytes
    }

    pub(crate) fn is(&self, m: Mutant) -> bool {
        self.cfg.is(m)
    }

    /// Checks a read revision the way `mvcc` does: 0 means "current".
    pub fn check_read_rev(&self, rev: i64, current: i64) -> Result<i64, EtcdError> {
        if rev > current && !self.is(Mutant::FutureRevAllowed) {
            return Err(EtcdError::FutureRev);
        }
        let rev = if rev <= 0 { current } else { rev };
        if rev < self.compact_rev {
            return Err(EtcdError::Compacted);
        }
        Ok(rev)
    }

    /// The live key-values in `range` at revision `at`, ascending by key.
    pub fn range_at(&self, range: &KeyRange, at: i64) -> Vec<&PbKeyValue> {
        fn at_rev(hist: &[Rev], at: i64) -> Option<&PbKeyValue> {
            let idx = hist.partition_point(|r| r.mod_rev <= at);
            if idx == 0 {
                return None;
            }
            hist[idx - 1].kv.as_ref()
        }
        let mut out = Vec::new();
        if range.end.is_empty() {
            if let Some(kv) = self.keys.get(&range.start).and_then(|h| at_rev(h, at)) {
                out.push(kv);
            }
            return out;
        }
        let iter: Box<dyn Iterator<Item = (&Vec<u8>, &Vec<Rev>)>> = if range.end == [0] {
            Box::new(self.keys.range(range.start.clone()..))
        } else if range.start < range.end {
            Box::new(self.keys.range(range.start.clone()..range.end.clone()))
        } else {
            Box::new(std::iter::empty())
        };
        for (_, hist) in iter {
            if let Some(kv) = at_rev(hist, at) {
                out.push(kv);
            }
        }
        out
    }

    /// The latest live value of one key, including writes of the batch in progress.
    pub fn latest(&self, key: &[u8]) -> Option<&PbKeyValue> {
        self.keys.get(key).and_then(|h| h.last()).and_then(|r| r.kv.as_ref())
    }

    /// Writes `key` in `batch`. Returns the previous value.
    pub fn put(&mut self, batch: &mut Batch, key: &[u8], value: Vec<u8>, lease: i64) -> Option<PbKeyValue> {
        let prev = self.latest(key).cloned();
        let (create_revision, version) = match &prev {
            Some(p) if !self.is(Mutant::VersionNotIncremented) => (p.create_revision, p.version + 1),
            Some(p) => (p.create_revision, p.version),
            None => (batch.rev, 1),
        };
        let kv = PbKeyValue { key: key.to_vec(), create_revision, mod_revision: batch.rev, version, value, lease };
        if let Some(p) = &prev {
            self.live_bytes -= p.value.len() as i64;
            self.detach(p.lease, key);
        }
        if let Some(l) = self.leases.get_mut(&lease) {
            l.keys.insert(key.to_vec());
        }
        self.live_bytes += kv.value.len() as i64;
        self.keys.entry(key.to_vec()).or_default().push(Rev { mod_rev: batch.rev, kv: Some(kv.clone()) });
        batch.events.push(PbEvent { r#type: EVENT_PUT, kv: Some(kv), prev_kv: prev.clone() });
        prev
    }

    /// Deletes every live key in `range` in `batch`, ascending. Returns the deleted values.
    pub fn delete(&mut self, batch: &mut Batch, range: &KeyRange) -> Vec<PbKeyValue> {
        let at = batch.rev;
        let doomed: Vec<PbKeyValue> = self.range_at(range, at).into_iter().cloned().collect();
        for prev in &doomed {
            self.live_bytes -= prev.value.len() as i64;
            self.detach(prev.lease, &prev.key);
            self.keys
                .get_mut(&prev.key)
                .expect("a key just read must have a history")
                .push(Rev { mod_rev: batch.rev, kv: None });
            let tomb = PbKeyValue { key: prev.key.clone(), mod_revision: batch.rev, ..Default::default() };
            batch.events.push(PbEvent { r#type: EVENT_DELETE, kv: Some(tomb), prev_kv: Some(prev.clone()) });
        }
        doomed
    }

    fn detach(&mut self, lease: i64, key: &[u8]) {
        if let Some(l) = self.leases.get_mut(&lease) {
            l.keys.remove(key);
        }
    }

    pub fn begin(&self) -> Batch {
        Batch { rev: self.rev + 1, events: Vec::new() }
    }

    /// Makes a batch's writes the new revision; a batch without changes leaves the revision alone.
    pub fn commit(&mut self, batch: Batch) -> bool {
        if batch.events.is_empty() {
            if self.is(Mutant::RevisionBumpOnEmptyTxn) {
                self.rev += 1;
            }
            return false;
        }
        assert_eq!(batch.rev, self.rev + 1, "a batch commits on top of the revision it began at");
        self.rev = batch.rev;
        self.events.insert(batch.rev, batch.events);
        true
    }

    /// Events with revision in `[from, to]`, for watchers.
    pub fn events_in(&self, from: i64, to: i64) -> impl Iterator<Item = (i64, &Vec<PbEvent>)> {
        self.events.range(from.max(0)..=to.max(0)).map(|(r, e)| (*r, e))
    }

    pub fn compact(&mut self, rev: i64) -> Result<(), EtcdError> {
        if rev <= self.compact_rev {
            return Err(EtcdError::Compacted);
        }
        if rev > self.rev {
            return Err(EtcdError::FutureRev);
        }
        self.compact_rev = rev;
        self.keys.retain(|_, hist| {
            let idx = hist.partition_point(|r| r.mod_rev <= rev);
            if idx > 0 {
                // Keep the latest entry at or below `rev` unless it is a tombstone.
                let keep_from = if hist[idx - 1].kv.is_some() { idx - 1 } else { idx };
                hist.drain(..keep_from);
            }
            !hist.is_empty()
        });
        // Revisions below `rev` are gone; at `rev` itself only puts survive (a tombstone is not kept).
        self.events = self.events.split_off(&rev);
        if let Some(at) = self.events.get_mut(&rev) {
            at.retain(|e| e.r#type == EVENT_PUT);
        }
        Ok(())
    }

    /// `etcdutl snapshot restore --bump-revision by --mark-compacted`: the next revisions start
    /// `by` above the snapshot's, and the history below them is compacted away, so a watcher
    /// resuming from a revision the restore lost is told it was compacted instead of being
    /// answered from another history.
    pub fn bump_and_mark_compacted(&mut self, by: i64) {
        assert!(by > 0, "a bump moves the revision forward");
        self.rev += by;
        self.compact(self.rev).expect("compacting at the bumped head is always valid");
    }

    pub fn lease_grant(&mut self, id: i64, ttl_s: i64, now: Instant) -> Result<Lease, EtcdError> {
        if ttl_s > LEASE_TTL_MAX_S {
            return Err(EtcdError::LeaseTtlTooLarge);
        }
        let id = if id != 0 {
            if self.leases.contains_key(&id) {
                return Err(EtcdError::LeaseExists);
            }
            id
        } else {
            loop {
                // etcd's generator yields positive 63-bit ids; any unused one is as good.
                let id = self.rng.random_range(1..i64::MAX);
                if !self.leases.contains_key(&id) {
                    break id;
                }
            }
        };
        let ttl_eff = ttl_s.max(self.cfg.lease_ttl_min_s);
        let lease = Lease {
            id,
            ttl_granted_s: ttl_eff,
            ttl_s: ttl_eff,
            expiry: now + Duration::from_secs(ttl_eff as u64),
            keys: BTreeSet::new(),
        };
        self.leases.insert(id, lease.clone());
        Ok(lease)
    }

    /// Revokes a lease, deleting its keys in one revision.
    pub fn lease_revoke(&mut self, id: i64) -> Result<Option<Batch>, EtcdError> {
        let lease = self.leases.remove(&id).ok_or(EtcdError::LeaseNotFound)?;
        if self.is(Mutant::LeaseRevokeKeepsKeys) {
            return Ok(None);
        }
        let mut batch = self.begin();
        for key in &lease.keys {
            self.delete(&mut batch, &KeyRange::new(key, &[]));
        }
        Ok(Some(batch))
    }

    pub fn lease_renew(&mut self, id: i64, now: Instant) -> Option<i64> {
        let l = self.leases.get_mut(&id)?;
        l.expiry = now + Duration::from_secs(l.ttl_s as u64);
        Some(l.ttl_s)
    }

    /// Leases whose time is up, oldest expiry first then by id.
    pub fn expired_leases(&self, now: Instant) -> Vec<i64> {
        let mut ids: Vec<(Instant, i64)> =
            self.leases.values().filter(|l| l.expiry <= now).map(|l| (l.expiry, l.id)).collect();
        ids.sort();
        ids.into_iter().map(|(_, id)| id).collect()
    }

    pub fn next_lease_expiry(&self) -> Option<Instant> {
        self.leases.values().map(|l| l.expiry).min()
    }

    /// A random number from the store's seeded generator (for ids that must not come from the OS).
    pub fn random_u64(&mut self) -> u64 {
        self.rng.random()
    }
}
