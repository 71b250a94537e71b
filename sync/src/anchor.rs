//! Anchors, a core without I/O: a source write that a checkpoint names, so that a resume can
//! tell the source's history is still the one the checkpoint counts in. A source etcd restored
//! from a snapshot in place keeps its cluster ID, and once its head passes the checkpoint again it
//! looks like the old history by revisions alone — but the write at the anchor's revision is then
//! another one, or none. (A restore the sync sees while its head is still below the checkpoint is
//! caught without an anchor; see `engine`.)

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Recent anchors kept, newest last: one per watch response that put a key (its last put). Only
/// the newest at or below a txn's revision is written with it, and txns trail the watch by a few
/// responses.
pub const ANCHORS_MAX: usize = 64;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Anchor {
    /// The source revision of the write.
    pub revision: i64,
    /// The key written, hex (keys are bytes).
    pub key: String,
    /// A digest of the value written (16 hex digits of its SHA-256; of the stored bytes, which
    /// for a Secret are ciphertext): a diverged history can write the same key at the same
    /// revision, rarely the same bytes.
    pub value_digest: String,
}

fn digest(value: &[u8]) -> String {
    hex::encode(&Sha256::digest(value)[..8])
}

impl Anchor {
    pub fn of(revision: i64, key: &[u8], value: &[u8]) -> Self {
        Anchor { revision, key: hex::encode(key), value_digest: digest(value) }
    }

    /// The key's bytes (None for a malformed stored anchor, which proves nothing).
    pub fn key_bytes(&self) -> Option<Vec<u8>> {
        hex::decode(&self.key).ok()
    }

    /// Whether a read of the key at the anchor's revision — `found`: its mod revision and value,
    /// or None when the key did not exist then — shows this very write.
    pub fn holds(&self, found: Option<(i64, &[u8])>) -> bool {
        found.is_some_and(|(mod_revision, value)| mod_revision == self.revision && digest(value) == self.value_digest)
    }
}

/// The recent anchors of a stream (bounded by [`ANCHORS_MAX`]).
#[derive(Debug, Default)]
pub struct Anchors {
    recent: VecDeque<Anchor>,
}

impl Anchors {
    /// Records a put seen at `revision`; only the first recorded for a revision (or an older one)
    /// counts.
    pub fn observe(&mut self, revision: i64, key: &[u8], value: &[u8]) {
        if self.recent.back().is_some_and(|a| a.revision >= revision) {
            return;
        }
        self.recent.push_back(Anchor::of(revision, key, value));
        if self.recent.len() > ANCHORS_MAX {
            self.recent.pop_front();
        }
    }

    /// The newest anchor at or below `revision` (what a checkpoint at `revision` carries).
    pub fn at_or_below(&self, revision: i64) -> Option<Anchor> {
        self.recent.iter().rev().find(|a| a.revision <= revision).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_anchor_holds_only_for_the_same_write_at_the_same_revision() {
        let a = Anchor::of(7, b"/registry/k", b"v1");
        assert!(a.holds(Some((7, b"v1"))));
        assert!(!a.holds(Some((7, b"v2"))), "another value at the same revision: another history");
        assert!(!a.holds(Some((6, b"v1"))), "the key's write at the revision is an older one");
        assert!(!a.holds(None), "the key did not exist at the revision");
        assert_eq!(a.key_bytes().as_deref(), Some(&b"/registry/k"[..]));
        assert_eq!(Anchor { key: "zz".into(), ..a }.key_bytes(), None);
    }

    #[test]
    fn anchors_are_bounded_and_the_newest_at_or_below_is_chosen() {
        let mut r = Anchors::default();
        assert_eq!(r.at_or_below(5), None);
        for rev in 1..=(ANCHORS_MAX as i64 + 10) {
            r.observe(rev, format!("k{rev}").as_bytes(), b"v");
            r.observe(rev, b"second put of the revision", b"v");
        }
        assert_eq!(r.recent.len(), ANCHORS_MAX, "bounded");
        assert_eq!(r.at_or_below(30).map(|a| a.key), Some(hex::encode("k30")), "the revision's first put");
        assert_eq!(r.at_or_below(5), None, "older than the anchors kept");
        assert_eq!(r.at_or_below(i64::MAX).map(|a| a.revision), Some(ANCHORS_MAX as i64 + 10));
    }
}
