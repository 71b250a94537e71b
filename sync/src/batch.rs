//! Packs planned writes into target transactions.
//!
//! Consecutive source revisions are coalesced into one target txn, in order, while it stays
//! under the target's limits: ops ≤ max-txn-ops (the checkpoint put and the gate compare's
//! branch count too), bytes ≤ the request limit. Two revisions touching one key collapse to one
//! op (etcd rejects a duplicate key in a txn). A single revision too large for one txn is split
//! into chunks, each with a `partial` checkpoint: the one place a source revision is not applied
//! atomically (counted in metrics as `split_revisions`).

use std::collections::BTreeMap;

use crate::plan::Op;

/// Per-op framing in a TxnRequest (RequestOp + PutRequest tags and lengths), generously.
const OP_OVERHEAD_BYTES: usize = 32;

#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Data ops per txn: the target's max-txn-ops less one for the checkpoint put.
    pub ops_max: usize,
    /// Request bytes per txn, below the target's max-request-bytes with room for the rest.
    pub bytes_max: usize,
}

impl Limits {
    /// From the target's `--max-txn-ops` and `--max-request-bytes`.
    pub fn for_target(txn_ops_max: usize, request_bytes_max: usize) -> Self {
        assert!(txn_ops_max >= 2, "a txn must fit one op and the checkpoint");
        // Keep 16 KiB for the compare, the checkpoint and framing.
        Limits { ops_max: txn_ops_max - 1, bytes_max: request_bytes_max.saturating_sub(16 * 1024).max(1024) }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits::for_target(128, 1536 * 1024)
    }
}

/// A transaction ready to send: its ops and the checkpoint it carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Txn {
    pub ops: Vec<(Vec<u8>, Op)>,
    /// The last source revision this txn completes.
    pub revision: i64,
    /// True when `revision` is only partly applied (a split revision's earlier chunk).
    pub partial: bool,
    /// 1-based chunk number of a split revision; 0 when the revision was not split.
    pub chunk: u32,
}

fn op_bytes(key: &[u8], op: &Op) -> usize {
    key.len() + OP_OVERHEAD_BYTES + if let Op::Put(v) = op { v.len() } else { 0 }
}

#[derive(Debug)]
pub struct Batcher {
    limits: Limits,
    ops: BTreeMap<Vec<u8>, Op>,
    bytes: usize,
    revision: i64,
    pub split_revisions: u64,
}

impl Batcher {
    pub fn new(limits: Limits) -> Self {
        Batcher { limits, ops: BTreeMap::new(), bytes: 0, revision: 0, split_revisions: 0 }
    }

    pub fn is_empty(&self) -> bool {
        self.ops.is_empty() && self.revision == 0
    }

    /// The size the batch would have with `ops` merged in (a later op on a key replaces an
    /// earlier one, in the batch or in `ops`).
    fn merged_size(&self, ops: &[(Vec<u8>, Op)]) -> (usize, usize) {
        let last: BTreeMap<&[u8], &Op> = ops.iter().map(|(k, op)| (k.as_slice(), op)).collect();
        let (mut n, mut bytes) = (self.ops.len(), self.bytes);
        for (k, op) in last {
            if let Some(old) = self.ops.get(k) {
                bytes -= op_bytes(k, old);
                n -= 1;
            }
            n += 1;
            bytes += op_bytes(k, op);
        }
        (n, bytes)
    }

    /// Adds one source revision's writes; returns the txns that had to be closed first.
    pub fn push(&mut self, revision: i64, ops: Vec<(Vec<u8>, Op)>) -> Vec<Txn> {
        let mut out = Vec::new();
        let (n, bytes) = self.merged_size(&ops);
        if (n > self.limits.ops_max || bytes > self.limits.bytes_max) && !self.ops.is_empty() {
            out.extend(self.flush());
        }
        let (n, bytes) = self.merged_size(&ops);
        if n > self.limits.ops_max || bytes > self.limits.bytes_max {
            // This revision alone does not fit: split it.
            self.split_revisions += 1;
            let mut chunk: Vec<(Vec<u8>, Op)> = Vec::new();
            let mut chunk_bytes = 0;
            let mut number = 0u32;
            // Collapse repeated keys but keep the planner's order (owners before the dependents
            // it released after them): a split revision's chunks land one by one, and a chunk
            // in key order would put `machines/` before `machinesets/`.
            let mut position: BTreeMap<Vec<u8>, usize> = BTreeMap::new();
            let mut dedup: Vec<(Vec<u8>, Op)> = Vec::with_capacity(ops.len());
            for (k, op) in ops {
                match position.get(&k) {
                    Some(&i) => dedup[i].1 = op,
                    None => {
                        position.insert(k.clone(), dedup.len());
                        dedup.push((k, op));
                    }
                }
            }
            for (k, op) in dedup {
                let b = op_bytes(&k, &op);
                if !chunk.is_empty()
                    && (chunk.len() + 1 > self.limits.ops_max || chunk_bytes + b > self.limits.bytes_max)
                {
                    number += 1;
                    out.push(Txn { ops: std::mem::take(&mut chunk), revision, partial: true, chunk: number });
                    chunk_bytes = 0;
                }
                chunk_bytes += b;
                chunk.push((k, op));
            }
            out.push(Txn { ops: chunk, revision, partial: false, chunk: number + 1 });
            return out;
        }
        for (k, op) in ops {
            if let Some(old) = self.ops.insert(k.clone(), op) {
                self.bytes -= op_bytes(&k, &old);
            }
            let b = op_bytes(&k, self.ops.get(&k).expect("just inserted"));
            self.bytes += b;
        }
        self.revision = revision;
        out
    }

    /// Closes the open txn, if any revision is in it (a revision with no writes still moves the
    /// checkpoint).
    pub fn flush(&mut self) -> Option<Txn> {
        if self.revision == 0 {
            return None;
        }
        let ops = std::mem::take(&mut self.ops).into_iter().collect();
        let t = Txn { ops, revision: self.revision, partial: false, chunk: 0 };
        self.bytes = 0;
        self.revision = 0;
        Some(t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(k: &str, n: usize) -> (Vec<u8>, Op) {
        (k.as_bytes().to_vec(), Op::Put(vec![b'v'; n]))
    }

    #[test]
    fn coalesces_revisions_and_collapses_repeated_keys() {
        let mut b = Batcher::new(Limits::for_target(128, 1536 * 1024));
        assert!(b.push(2, vec![put("/a", 1), put("/b", 1)]).is_empty());
        assert!(b.push(3, vec![("/a".into(), Op::Delete)]).is_empty());
        let t = b.flush().expect("a txn");
        assert_eq!(t.revision, 3);
        assert_eq!(t.ops, vec![("/a".into(), Op::Delete), put("/b", 1)]);
        assert!(b.flush().is_none());
    }

    #[test]
    fn a_full_source_txn_plus_checkpoint_is_split_across_target_txns() {
        let mut b = Batcher::new(Limits::for_target(128, 1536 * 1024));
        assert!(b.push(2, vec![put("/x", 1)]).is_empty());
        // 128 ops from one source txn + the checkpoint = 129 > 128: it cannot join the open txn,
        // and cannot stand alone either.
        let ops: Vec<_> = (0..128).map(|i| put(&format!("/k/{i:03}"), 1)).collect();
        let txns = b.push(3, ops);
        assert_eq!(txns.len(), 3, "the open txn, then two chunks");
        assert_eq!((txns[0].revision, txns[0].partial, txns[0].ops.len()), (2, false, 1));
        assert_eq!((txns[1].revision, txns[1].partial, txns[1].ops.len()), (3, true, 127));
        assert_eq!((txns[2].revision, txns[2].partial, txns[2].ops.len()), (3, false, 1));
        assert_eq!((txns[1].chunk, txns[2].chunk), (1, 2));
        assert_eq!(b.split_revisions, 1);
        assert!(txns.iter().all(|t| t.ops.len() < 128));
    }

    #[test]
    fn a_split_revision_keeps_owners_before_their_dependents() {
        // The planner puts an owner first and the dependents it releases after it; `machines/`
        // sorts before `machinesets/`, so chunks in key order would land dependents first.
        let mut b = Batcher::new(Limits::for_target(4, 1536 * 1024));
        let mut ops = vec![put("/r/machinesets/ms", 1)];
        ops.extend((0..5).map(|i| put(&format!("/r/machines/m{i}"), 1)));
        ops.push(put("/r/machinesets/ms", 2));
        let txns = b.push(7, ops);
        let order: Vec<Vec<u8>> = txns.iter().flat_map(|t| t.ops.iter().map(|(k, _)| k.clone())).collect();
        assert_eq!(order[0], b"/r/machinesets/ms".to_vec(), "the owner lands first: {txns:?}");
        assert_eq!(txns[0].ops[0].1, Op::Put(vec![b'v'; 2]), "a repeated key keeps its last op");
        assert_eq!(order.len(), 6, "the repeated owner counts once");
    }

    #[test]
    fn repeated_keys_in_one_revision_count_once() {
        let mut b = Batcher::new(Limits::for_target(3, 1536 * 1024));
        let ops = vec![put("/h", 1), ("/h".into(), Op::Delete), put("/a", 1)];
        assert!(b.push(2, ops).is_empty(), "two distinct keys fit a 2-op txn");
        assert_eq!(b.flush().map(|t| t.ops.len()), Some(2));
    }

    #[test]
    fn byte_limit_closes_a_txn() {
        let mut b = Batcher::new(Limits::for_target(128, 100 * 1024));
        assert!(b.push(2, vec![put("/a", 60 * 1024)]).is_empty());
        let txns = b.push(3, vec![put("/b", 60 * 1024)]);
        assert_eq!(txns.len(), 1);
        assert_eq!(txns[0].revision, 2);
        assert_eq!(b.flush().map(|t| t.revision), Some(3));
    }
}
