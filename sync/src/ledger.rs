//! Proof of authorship that survives the target's compaction: the target revisions of the
//! sync's own txns, as a bounded set of ranges persisted on the target.
//!
//! A resync deletes a target-only key only when the sync can prove it wrote the key's current
//! value — when the key's mod_revision is one of the sync's own txns. The target's history
//! answers that only until the standby's API server compacts it (every 5 minutes); after that,
//! without the ledger, every key deleted on the primary during a long partition would stay on
//! the standby as surplus.
//!
//! A range `[lo, hi]` claims: every in-scope key whose *current* mod_revision lies in it was
//! written by the sync. Ranges come from two sources:
//! - **exact**: the revisions the sync's own data txns committed at (from the txn responses;
//!   consecutive revisions coalesce);
//! - **verified**: a scan of the target at revision H found no in-scope key with a mod_revision
//!   in the gap between two ranges (all of it ≤ H), so the gap merges: a key's mod_revision only
//!   changes by a later write, and no later write can take a revision ≤ H. Writes of
//!   out-of-scope keys (the standby's Leases, Events, its compaction key) therefore do not
//!   fragment the ledger; the standby's own writes of in-scope keys do.
//!
//! The ledger only ever *loses* claims — the oldest ranges dropped past the bound, a crash
//! before it was saved, other rules than the ones it was verified under, a new gate epoch (a
//! reinstalled sync: the standby may have served as the primary in between, so what an earlier
//! sync wrote is no longer known to be a copy) — and a lost claim turns a deletable key into
//! reported surplus, never the reverse.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

/// Ranges kept before the engine verifies (merges) gaps; past twice this, the oldest are dropped.
pub const LEDGER_RANGES_MAX: usize = 4096;

/// A gap between ranges, named by the `hi` of the range below it (0 below the first range).
pub type GapId = i64;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ledger {
    /// Digest of the rules the ranges were verified under: other rules change which keys are in
    /// scope, so a gap verified under them proves nothing.
    rules: String,
    /// The gate epoch of the sync that wrote these revisions.
    #[serde(default)]
    epoch: u64,
    /// Sorted, disjoint, non-adjacent, inclusive.
    ranges: Vec<(i64, i64)>,
    /// Ranges dropped past the bound since the ledger was started (claims lost).
    #[serde(default)]
    dropped: u64,
    /// Changed since it was last saved.
    #[serde(skip)]
    dirty: bool,
}

impl Ledger {
    pub fn new(rules_digest: &str, epoch: u64) -> Self {
        Ledger { rules: rules_digest.to_string(), epoch, ..Ledger::default() }
    }

    /// Whether this ledger was kept under these rules by a sync of this gate epoch.
    pub fn belongs_to(&self, rules_digest: &str, epoch: u64) -> bool {
        self.rules == rules_digest && self.epoch == epoch
    }

    /// The saved ledger when it belongs to these rules and epoch, a fresh one otherwise.
    pub fn restore(saved: Option<Ledger>, rules_digest: &str, epoch: u64) -> Self {
        match saved {
            Some(l) if l.belongs_to(rules_digest, epoch) && l.well_formed() => l,
            _ => Ledger::new(rules_digest, epoch),
        }
    }

    fn well_formed(&self) -> bool {
        self.ranges.iter().all(|&(lo, hi)| 0 < lo && lo <= hi)
            && self.ranges.windows(2).all(|w| w[0].1 + 1 < w[1].0)
            && self.ranges.len() <= 2 * LEDGER_RANGES_MAX
    }

    pub fn len(&self) -> usize {
        self.ranges.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    pub fn is_dirty(&self) -> bool {
        self.dirty
    }

    pub fn saved(&mut self) {
        self.dirty = false;
    }

    /// Index of the first range that ends at or after `rev`.
    fn at(&self, rev: i64) -> usize {
        self.ranges.partition_point(|&(_, hi)| hi < rev)
    }

    /// Whether the key whose current mod_revision is `rev` was written by the sync.
    pub fn claims(&self, rev: i64) -> bool {
        self.ranges.get(self.at(rev)).is_some_and(|&(lo, _)| lo <= rev)
    }

    /// The gap `rev` falls in, or None when a range claims it.
    pub fn gap_of(&self, rev: i64) -> Option<GapId> {
        let i = self.at(rev);
        if self.ranges.get(i).is_some_and(|&(lo, _)| lo <= rev) {
            return None;
        }
        Some(if i == 0 { 0 } else { self.ranges[i - 1].1 })
    }

    /// Records a revision one of the sync's data txns committed at.
    pub fn record(&mut self, rev: i64) {
        assert!(rev > 0, "etcd revisions start at 1 (got {rev})");
        let i = self.at(rev);
        if self.ranges.get(i).is_some_and(|&(lo, _)| lo <= rev) {
            return;
        }
        let joins_below = i > 0 && self.ranges[i - 1].1 + 1 == rev;
        let joins_above = self.ranges.get(i).is_some_and(|&(lo, _)| lo == rev + 1);
        match (joins_below, joins_above) {
            (true, true) => {
                self.ranges[i - 1].1 = self.ranges[i].1;
                self.ranges.remove(i);
            }
            (true, false) => self.ranges[i - 1].1 = rev,
            (false, true) => self.ranges[i].0 = rev,
            (false, false) => self.ranges.insert(i, (rev, rev)),
        }
        self.dirty = true;
        if self.ranges.len() > 2 * LEDGER_RANGES_MAX {
            self.drop_oldest(2 * LEDGER_RANGES_MAX);
        }
    }

    /// Merges every gap lying at or below `at` that holds no in-scope key, after a scan of the
    /// target at revision `at` marked the gaps where it found in-scope keys no range claims.
    /// Returns the number of gaps merged.
    pub fn verify(&mut self, at: i64, marked: &BTreeSet<GapId>) -> usize {
        let before = self.ranges.len();
        let mut out: Vec<(i64, i64)> = Vec::with_capacity(before);
        for &(lo, hi) in &self.ranges {
            match out.last_mut() {
                // The gap (last.1, lo) lies at or below `at`.
                Some(last) if lo - 1 <= at && !marked.contains(&last.1) => last.1 = hi,
                _ => out.push((lo, hi)),
            }
        }
        // The part of a gap at or below `at` is verified too, whatever lies above it (the next
        // range starts above `at + 1`, or the gap would have merged).
        for r in &mut out {
            if r.1 < at && !marked.contains(&r.1) {
                r.1 = at;
            }
        }
        let merged = before - out.len();
        if out != self.ranges {
            self.ranges = out;
            self.dirty = true;
        }
        merged
    }

    /// Drops the oldest ranges until at most `keep` remain (their claims are lost).
    pub fn drop_oldest(&mut self, keep: usize) {
        if self.ranges.len() > keep {
            let n = self.ranges.len() - keep;
            self.ranges.drain(..n);
            self.dropped += n as u64;
            self.dirty = true;
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("ledger serialises")
    }

    pub fn decode(value: &[u8]) -> Result<Ledger, serde_json::Error> {
        serde_json::from_slice(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ledger(ranges: &[(i64, i64)]) -> Ledger {
        let mut l = Ledger::new("r", 1);
        for &(lo, hi) in ranges {
            for rev in lo..=hi {
                l.record(rev);
            }
        }
        l
    }

    #[test]
    fn consecutive_revisions_coalesce_and_gaps_do_not() {
        let l = ledger(&[(3, 5), (7, 7), (9, 12)]);
        assert_eq!(l.ranges, vec![(3, 5), (7, 7), (9, 12)]);
        assert!(l.claims(3) && l.claims(5) && l.claims(7) && l.claims(12));
        assert!(!l.claims(2) && !l.claims(6) && !l.claims(8) && !l.claims(13));
        let mut l = l;
        l.record(6);
        l.record(8);
        assert_eq!(l.ranges, vec![(3, 12)]);
    }

    #[test]
    fn out_of_order_records_join_both_neighbours() {
        let mut l = Ledger::new("r", 1);
        for rev in [10, 8, 12, 9, 11] {
            l.record(rev);
        }
        assert_eq!(l.ranges, vec![(8, 12)]);
        assert!(l.is_dirty());
    }

    #[test]
    fn gaps_are_named_by_the_range_below() {
        let l = ledger(&[(3, 5), (9, 12)]);
        assert_eq!(l.gap_of(1), Some(0));
        assert_eq!(l.gap_of(7), Some(5));
        assert_eq!(l.gap_of(20), Some(12));
        assert_eq!(l.gap_of(4), None);
    }

    #[test]
    fn verify_merges_only_unmarked_gaps_at_or_below_the_scan() {
        let mut l = ledger(&[(3, 5), (9, 12), (15, 15), (30, 31)]);
        // An in-scope key at revision 13 (gap 12) no range claims; the scan was at 20.
        let marked = BTreeSet::from([12]);
        l.verify(20, &marked);
        // 6..=8 merged; 13..=14 not (marked); 16..=20 verified, 21..=29 lies above the scan.
        assert_eq!(l.ranges, vec![(3, 12), (15, 20), (30, 31)]);
        assert!(l.claims(7) && !l.claims(13) && l.claims(18) && !l.claims(25));
    }

    #[test]
    fn verify_never_bridges_into_the_next_range() {
        let mut l = ledger(&[(3, 5), (8, 9)]);
        l.verify(7, &BTreeSet::new());
        assert_eq!(l.ranges, vec![(3, 9)]);
        let mut l = ledger(&[(3, 5), (9, 9)]);
        l.verify(7, &BTreeSet::from([5]));
        assert_eq!(l.ranges, vec![(3, 5), (9, 9)]);
    }

    #[test]
    fn the_bound_drops_the_oldest_ranges() {
        let mut l = Ledger::new("r", 1);
        for i in 0..(2 * LEDGER_RANGES_MAX as i64 + 10) {
            l.record(1 + 2 * i);
        }
        assert_eq!(l.len(), 2 * LEDGER_RANGES_MAX);
        assert_eq!(l.dropped(), 10);
        assert!(!l.claims(1) && l.claims(21));
    }

    #[test]
    fn restore_keeps_only_a_ledger_of_the_same_rules_and_epoch() {
        let l = ledger(&[(3, 5)]);
        let back = Ledger::decode(&l.encode()).expect("decodes");
        assert_eq!(Ledger::restore(Some(back.clone()), "r", 1).ranges, vec![(3, 5)]);
        assert!(Ledger::restore(Some(back.clone()), "other", 1).is_empty());
        assert!(Ledger::restore(Some(back), "r", 2).is_empty(), "a reinstalled sync starts a new ledger");
        let bad = Ledger { ranges: vec![(5, 3)], ..Ledger::new("r", 1) };
        assert!(Ledger::restore(Some(bad), "r", 1).is_empty());
    }
}
