//! The consistency check: a streaming merge of source and target at fixed revisions, under the
//! rules, one page at a time.
//!
//! - `missed`: in scope on the source, not on the target ("LOCAL ETCD missed keys").
//! - `surplus`: in scope on the target only ("LOCAL ETCD surplus keys").
//! - `stale`: on both, values differ.
//! - `held`: keys the sync holds back, with the reason (from its bookkeeping on the target).
//! - `undecryptable`: source ciphertext the sync cannot carry (see the encryption boundary).
//! - `dangling`: in-scope objects on the target whose owner UID resolves to nothing on the
//!   target — exactly what the standby's garbage collector acts on, and the only check still
//!   possible when the primary is gone (`source = None`).
//!
//! Memory: one page per side, plus the target's UID set for `dangling` (16–40 bytes an object).

use std::collections::BTreeSet;

use serde::Serialize;

use crate::conn::{ConnError, Etcd};
use crate::crypto::Boundary;
use crate::object::Decoded;
use crate::plan::HELD_PREFIX;
use crate::rules::Rules;
use crate::scan::{Scan, ScanError, prefix_end};

/// Keys listed per category; every key is counted.
pub const LISTED_MAX: usize = 1000;
/// Check passes restarted by compaction (unpinned checks only).
const ATTEMPTS_MAX: u32 = 5;

#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct Listed {
    pub count: u64,
    pub keys: Vec<String>,
}

impl Listed {
    fn add(&mut self, key: String) {
        self.count += 1;
        if self.keys.len() < LISTED_MAX {
            self.keys.push(key);
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct Report {
    /// None for a target-only check.
    pub source_revision: Option<i64>,
    pub target_revision: i64,
    pub missed: Listed,
    pub surplus: Listed,
    pub stale: Listed,
    /// "key (reason)".
    pub held: Listed,
    pub undecryptable: Listed,
    /// "key -> owner uid".
    pub dangling: Listed,
    /// Held keys whose reason is owner-pending (the only kind that blocks an uninstall).
    pub held_pending: u64,
}

impl Report {
    /// Clean for an uninstall: nothing missed, surplus, stale, pending, undecryptable or dangling.
    pub fn is_clean(&self) -> bool {
        self.missed.count == 0
            && self.surplus.count == 0
            && self.stale.count == 0
            && self.held_pending == 0
            && self.undecryptable.count == 0
            && self.dangling.count == 0
    }

    /// The human report, in the words operators know from the runbook.
    pub fn text(&self) -> String {
        let mut out = String::new();
        match self.source_revision {
            Some(r) => out.push_str(&format!("source revision {r}, target revision {}\n", self.target_revision)),
            None => out.push_str(&format!(
                "target-only check at target revision {} (source not checked)\n",
                self.target_revision
            )),
        }
        let sections: [(&str, &Listed, &str); 6] = [
            (
                "LOCAL ETCD missed keys",
                &self.missed,
                "in the primary, missing from the standby: restart the sync to copy them",
            ),
            (
                "LOCAL ETCD surplus keys",
                &self.surplus,
                "only in the standby: confirm with the operators before deleting them",
            ),
            ("stale keys", &self.stale, "value differs between primary and standby"),
            ("held keys", &self.held, "held back by the sync until their owners land"),
            (
                "undecryptable keys",
                &self.undecryptable,
                "ciphertext the standby cannot read: align the encryption keys",
            ),
            ("dangling keys", &self.dangling, "owner missing on the standby: its garbage collector would delete them"),
        ];
        for (title, l, hint) in sections {
            out.push_str(&format!("{title}: {}\n", l.count));
            if l.count > 0 {
                out.push_str(&format!("  ({hint})\n"));
                for k in &l.keys {
                    out.push_str(&format!("  {k}\n"));
                }
                if l.count as usize > l.keys.len() {
                    out.push_str(&format!("  … and {} more\n", l.count as usize - l.keys.len()));
                }
            }
        }
        out.push_str(if self.is_clean() { "result: consistent\n" } else { "result: INCONSISTENT\n" });
        out
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    #[error(transparent)]
    Conn(#[from] ConnError),
    #[error("pinned revision {0} was compacted: the pinned check can no longer be repeated")]
    PinnedCompacted(i64),
    #[error("the check was restarted by compaction {0} times in a row")]
    GaveUp(u32),
}

/// Runs the check. `pin` fixes (source revision, target revision); otherwise the current heads
/// are used, and a compaction during the pass restarts it.
pub async fn check(
    source: Option<&Etcd>,
    target: &Etcd,
    rules: &Rules,
    boundary: &Boundary,
    pin: Option<(i64, i64)>,
    page: i64,
) -> Result<Report, CheckError> {
    for _ in 0..ATTEMPTS_MAX {
        let (s_rev, t_rev) = match pin {
            Some((s, t)) => (Some(s), t),
            None => (
                match source {
                    Some(s) => Some(s.head().await?),
                    None => None,
                },
                target.head().await?,
            ),
        };
        match check_at(source, target, rules, boundary, s_rev, t_rev, page).await {
            Ok(r) => return Ok(r),
            Err(ScanError::Compacted { revision }) if pin.is_some() => {
                return Err(CheckError::PinnedCompacted(revision));
            }
            Err(ScanError::Compacted { .. }) => continue,
            Err(ScanError::Conn(e)) => return Err(e.into()),
        }
    }
    Err(CheckError::GaveUp(ATTEMPTS_MAX))
}

async fn check_at(
    source: Option<&Etcd>,
    target: &Etcd,
    rules: &Rules,
    boundary: &Boundary,
    s_rev: Option<i64>,
    t_rev: i64,
    page: i64,
) -> Result<Report, ScanError> {
    let mut r = Report { source_revision: s_rev, target_revision: t_rev, ..Report::default() };
    // Target UIDs, for dangling owners (all keys: an owner may be out of scope). The target is
    // read twice — UIDs, then the merge, which also finds the dangling owners — and the source
    // once: a check's time is the bytes it reads.
    let mut uids = Uids::default();
    let mut scan = Scan::new(target, &[0], &[0], t_rev, page);
    while let Some(kv) = scan.next().await? {
        if let Decoded::Object(m) = boundary.decode_target(kv.value()) {
            uids.insert(m.uid);
        }
    }
    uids.seal();
    // Held keys, from the sync's bookkeeping.
    let held = HELD_PREFIX.as_bytes();
    let mut held_keys = BTreeSet::new();
    let mut scan = Scan::new(target, held, &prefix_end(held), t_rev, page);
    while let Some(kv) = scan.next().await? {
        held_keys.insert(kv.key()[held.len()..].to_vec());
        let key = String::from_utf8_lossy(&kv.key()[held.len()..]).into_owned();
        let rec: serde_json::Value = serde_json::from_slice(kv.value()).unwrap_or_default();
        let reason = rec.get("reason").and_then(|v| v.as_str()).unwrap_or("owner-pending").to_string();
        if reason == "owner-pending" {
            r.held_pending += 1;
        }
        r.held.add(format!("{key} ({reason})"));
    }
    let mut tgt = TargetScan {
        scan: Scan::new(target, &[0], &[0], t_rev, page),
        uids,
        rules,
        boundary,
        dangling: Listed::default(),
    };
    let Some((source, s_rev)) = source.zip(s_rev) else {
        while tgt.next().await?.is_some() {}
        r.dangling = tgt.dangling;
        return Ok(r);
    };
    let mut src = Scan::new(source, &[0], &[0], s_rev, page);
    let (mut s, mut t) = (src.next().await?, tgt.next().await?);
    loop {
        // Held keys are reported as held, not also as missed or stale; leased keys are skipped
        // by the sync (see the planner).
        let skip =
            |kv: &etcd_client::KeyValue| !rules.includes(kv.key()) || kv.lease() != 0 || held_keys.contains(kv.key());
        while s.as_ref().is_some_and(skip) {
            s = src.next().await?;
        }
        while t.as_ref().is_some_and(|kv| !rules.includes(kv.key()) || held_keys.contains(kv.key())) {
            t = tgt.next().await?;
        }
        match merge_step(&mut r, boundary, s.as_ref().map(pair), t.as_ref().map(pair)) {
            None => break,
            Some(Advance::Source) => s = src.next().await?,
            Some(Advance::Target) => t = tgt.next().await?,
            Some(Advance::Both) => (s, t) = (src.next().await?, tgt.next().await?),
        }
    }
    r.dangling = tgt.dangling;
    Ok(r)
}

fn pair(kv: &etcd_client::KeyValue) -> (&[u8], &[u8]) {
    (kv.key(), kv.value())
}

/// Which side's scan the merge moves on after a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Advance {
    Source,
    Target,
    Both,
}

/// One step of the check's merge: the source's and the target's next in-scope (key, value), in
/// key order, `None` past the end. Records what the two show in `r` and says which side moves
/// on; `None` when both are done. Without I/O, so the benches run it on keyspaces in memory.
pub fn merge_step(
    r: &mut Report,
    boundary: &Boundary,
    s: Option<(&[u8], &[u8])>,
    t: Option<(&[u8], &[u8])>,
) -> Option<Advance> {
    let lossy = |k: &[u8]| String::from_utf8_lossy(k).into_owned();
    match (s, t) {
        (None, None) => None,
        (Some((a, value)), t) if !boundary.readable_by_target(value) => {
            // Ciphertext the sync will not carry: undecryptable, not missed or stale.
            r.undecryptable.add(lossy(a));
            Some(if t.is_some_and(|(b, _)| b == a) { Advance::Both } else { Advance::Source })
        }
        (Some((a, va)), Some((b, vb))) if a == b => {
            if !boundary.same(va, vb) {
                r.stale.add(lossy(a));
            }
            Some(Advance::Both)
        }
        (Some((a, _)), t) if t.is_none_or(|(b, _)| a < b) => {
            r.missed.add(lossy(a));
            Some(Advance::Source)
        }
        (_, Some((b, _))) => {
            r.surplus.add(lossy(b));
            Some(Advance::Target)
        }
        (Some(_), None) => unreachable!("handled by the missed arm"),
    }
}

/// The target side of the merge: every in-scope object it passes is checked for owners whose
/// UID is nowhere on the target.
struct TargetScan<'a> {
    scan: Scan,
    uids: Uids,
    rules: &'a Rules,
    boundary: &'a Boundary,
    dangling: Listed,
}

impl TargetScan<'_> {
    async fn next(&mut self) -> Result<Option<etcd_client::KeyValue>, ScanError> {
        let kv = self.scan.next().await?;
        if let Some(kv) = kv.as_ref().filter(|kv| self.rules.includes(kv.key()))
            && let Decoded::Object(m) = self.boundary.decode_target(kv.value())
        {
            for o in m.owners.iter().filter(|o| !self.uids.contains(&o.uid)) {
                self.dangling.add(format!("{} -> {}", String::from_utf8_lossy(kv.key()), o.uid));
            }
        }
        Ok(kv)
    }
}

/// Every UID on the target, for the dangling check — the one structure of the check that grows
/// with the keyspace, so it is kept small: canonical UUIDs (what kube-apiserver assigns) as 16
/// bytes each in a sorted vector, anything else as a string.
#[derive(Default)]
struct Uids {
    uuids: Vec<u128>,
    other: BTreeSet<String>,
}

impl Uids {
    fn insert(&mut self, uid: String) {
        match parse_uuid(&uid) {
            Some(n) => self.uuids.push(n),
            None => {
                self.other.insert(uid);
            }
        }
    }

    /// Sorts for lookups; no insert after this.
    fn seal(&mut self) {
        self.uuids.sort_unstable();
        self.uuids.dedup();
    }

    fn contains(&self, uid: &str) -> bool {
        match parse_uuid(uid) {
            Some(n) => self.uuids.binary_search(&n).is_ok(),
            None => self.other.contains(uid),
        }
    }
}

/// A lowercase canonical UUID (8-4-4-4-12 hex digits) as a number; None for any other string,
/// so that a number stands for exactly one string.
fn parse_uuid(s: &str) -> Option<u128> {
    const DASHES: [usize; 4] = [8, 13, 18, 23];
    let b = s.as_bytes();
    if b.len() != 36 {
        return None;
    }
    let mut n = 0u128;
    for (i, &c) in b.iter().enumerate() {
        let digit = match c {
            b'-' if DASHES.contains(&i) => continue,
            _ if DASHES.contains(&i) => return None,
            b'0'..=b'9' => c - b'0',
            b'a'..=b'f' => c - b'a' + 10,
            _ => return None,
        };
        n = n << 4 | u128::from(digit);
    }
    Some(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Merges two in-memory keyspaces (in key order) with [`merge_step`], as `check_at` does.
    fn merge(boundary: &Boundary, source: &[(&str, &str)], target: &[(&str, &str)]) -> Report {
        fn at<'a>(side: &[(&'a str, &'a str)], n: usize) -> Option<(&'a [u8], &'a [u8])> {
            side.get(n).map(|(k, v)| (k.as_bytes(), v.as_bytes()))
        }
        let (mut r, mut i, mut j) = (Report::default(), 0, 0);
        while let Some(step) = merge_step(&mut r, boundary, at(source, i), at(target, j)) {
            match step {
                Advance::Source => i += 1,
                Advance::Target => j += 1,
                Advance::Both => (i, j) = (i + 1, j + 1),
            }
        }
        r
    }

    #[test]
    fn the_merge_tells_missed_stale_and_surplus_keys_apart() {
        let b = Boundary::new(None, None);
        let source = [("/a", "1"), ("/b", "2"), ("/c", "3"), ("/e", "5")];
        let target = [("/b", "2"), ("/c", "x"), ("/d", "4"), ("/e", "5"), ("/f", "6")];
        let r = merge(&b, &source, &target);
        assert_eq!(r.missed.keys, ["/a"]);
        assert_eq!(r.stale.keys, ["/c"]);
        assert_eq!(r.surplus.keys, ["/d", "/f"]);
        assert!(merge(&b, &source, &source).is_clean());
        // An unreadable ciphertext is undecryptable, never missed or stale, on either side of
        // the target's key.
        let keys = |byte: u8| {
            let text = crate::crypto::tests::config(&[("key1", &[byte; 32])]);
            Some(crate::crypto::Keyring::parse("test", &text).expect("parses"))
        };
        let b = Boundary::new(keys(1), keys(2));
        let sealed = "k8s:enc:aescbc:v1:key1:0123456789abcdef0123456789abcdef";
        let r = merge(&b, &[("/s", sealed), ("/t", sealed)], &[("/s", "plain")]);
        assert_eq!((r.undecryptable.count, r.missed.count, r.stale.count, r.surplus.count), (2, 0, 0, 0));
    }

    #[test]
    fn uuids_are_packed_and_other_uids_kept_as_strings() {
        let mut u = Uids::default();
        for uid in ["0000002a-0000-4000-8000-00000000002a", "uid-m-1", "0000002A-0000-4000-8000-00000000002A"] {
            u.insert(uid.to_string());
        }
        u.seal();
        assert_eq!(u.uuids.len(), 1);
        assert!(u.contains("0000002a-0000-4000-8000-00000000002a") && u.contains("uid-m-1"));
        assert!(u.contains("0000002A-0000-4000-8000-00000000002A"), "an uppercase UID is kept as its own string");
        assert!(!u.contains("0000002b-0000-4000-8000-00000000002a") && !u.contains("uid-m-2"));
        assert_eq!(parse_uuid("0000002a-0000-4000-8000000000002a-"), None);
    }
}
