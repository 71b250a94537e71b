//! Where a paged scan reads its next page (a core without I/O).
//!
//! Why: etcd answers a range with a limit by walking its whole index over the range to count it
//! (`count` in the response), so paging `[after last key, end of scan)` costs the rest of the
//! keyspace per page — O(N² / page) for a scan, 635 s for a check of 1M keys. The cursor reads
//! from a window instead: the rest of the key-prefix subtree the scan is in, narrowed to where the
//! last page branched (all of its keys share a prefix), moved to the next sibling subtree when
//! that one is done, and widened to the parent subtree when a window came back (nearly) empty.
//! The `count` of each answer steers it, so each request walks a few pages' worth of keys.
//!
//! Architecture invariant: the windows tile the scan's range in key order, so a scan returns
//! every key exactly once, in order, whatever the keyspace.

use crate::scan::prefix_end;

/// A window counting more than this many pages is narrowed by one more key byte.
const WINDOW_PAGES_MAX: i64 = 16;

/// The next read of a scan: `[start, end)`, where `end == [0]` means "no end".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Window {
    pub start: Vec<u8>,
    pub end: Vec<u8>,
}

/// One answer of etcd to a window: its first and last key, `more` and `count`.
#[derive(Debug, Clone, Copy)]
pub struct Answer<'a> {
    pub first: Option<&'a [u8]>,
    pub last: Option<&'a [u8]>,
    pub more: bool,
    pub count: i64,
}

#[derive(Debug, Clone)]
pub struct Cursor {
    start: Vec<u8>,
    /// `start` begins with `prefix`: the window is the rest of `prefix`'s subtree.
    prefix: Vec<u8>,
    /// The scan's end, `[0]` for none.
    scan_end: Vec<u8>,
    page: i64,
    done: bool,
}

/// `a < b` where `[0]` as an end means "after every key".
fn before_end(key: &[u8], end: &[u8]) -> bool {
    end == [0] || key < end
}

fn min_end(a: Vec<u8>, b: &[u8]) -> Vec<u8> {
    if a == [0] || (b != [0] && b < a.as_slice()) { b.to_vec() } else { a }
}

fn common_prefix_len(a: &[u8], b: &[u8]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

impl Cursor {
    pub fn new(start: &[u8], end: &[u8], page: i64) -> Self {
        assert!(page > 0, "a scan page holds at least one key");
        Cursor { start: start.to_vec(), prefix: Vec::new(), scan_end: end.to_vec(), page, done: false }
    }

    /// Keys per page (the limit of every read).
    pub fn page(&self) -> i64 {
        self.page
    }

    /// The next window to read, or `None` when the scan is complete.
    pub fn window(&self) -> Option<Window> {
        if self.done || !before_end(&self.start, &self.scan_end) {
            return None;
        }
        Some(Window { start: self.start.clone(), end: min_end(prefix_end(&self.prefix), &self.scan_end) })
    }

    /// Moves past what etcd answered to [`Cursor::window`].
    pub fn advance(&mut self, answer: Answer<'_>) {
        let window = self.window().expect("advance follows a window");
        if answer.more {
            let (first, last) = answer.first.zip(answer.last).expect("more implies keys");
            assert!(last >= first && last >= window.start.as_slice(), "etcd answers in key order");
            let mut depth = common_prefix_len(first, last);
            if answer.count > WINDOW_PAGES_MAX * self.page {
                depth += 1;
            }
            // All of the page shares `prefix`, so this only ever narrows.
            let depth = depth.clamp(self.prefix.len(), last.len());
            self.prefix = last[..depth].to_vec();
            self.start = last.to_vec();
            self.start.push(0);
            return;
        }
        // The window is done.
        if window.end == [0] || window.end == self.scan_end {
            self.done = true;
            return;
        }
        self.start = window.end;
        // The sibling subtree when this one held at least half a page, else the rest of the
        // parent. One key byte up at a time: widening further risks a window of the whole
        // keyspace again, while an empty window costs etcd an index lookup and us a round trip
        // (a fixed path segment like "/obj-" is a few of them).
        let keep = if 2 * answer.count >= self.page { self.start.len() } else { self.start.len() - 1 };
        self.prefix = self.start[..keep].to_vec();
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    /// etcd's range over an in-memory keyspace; returns the keys and what etcd walked (the count).
    fn range(keys: &BTreeSet<Vec<u8>>, w: &Window, limit: i64) -> (Vec<Vec<u8>>, bool, i64) {
        let inside: Vec<&Vec<u8>> = keys.range(w.start.clone()..).take_while(|k| before_end(k, &w.end)).collect();
        let count = inside.len() as i64;
        let page: Vec<Vec<u8>> = inside.into_iter().take(limit as usize).cloned().collect();
        (page, count > limit, count)
    }

    /// Scans `[start, end)` and returns (keys in order, keys etcd walked, requests).
    fn scan(keys: &BTreeSet<Vec<u8>>, start: &[u8], end: &[u8], page: i64) -> (Vec<Vec<u8>>, i64, i64) {
        let mut c = Cursor::new(start, end, page);
        let (mut out, mut walked, mut requests) = (Vec::new(), 0, 0);
        while let Some(w) = c.window() {
            let (got, more, count) = range(keys, &w, page);
            walked += count;
            requests += 1;
            assert!(requests < 1_000_000, "the scan does not end");
            c.advance(Answer { first: got.first().map(|k| &k[..]), last: got.last().map(|k| &k[..]), more, count });
            out.extend(got);
        }
        (out, walked, requests)
    }

    fn expected(keys: &BTreeSet<Vec<u8>>, start: &[u8], end: &[u8]) -> Vec<Vec<u8>> {
        keys.range(start.to_vec()..).take_while(|k| before_end(k, end)).cloned().collect()
    }

    fn digits(n: u64) -> BTreeSet<Vec<u8>> {
        (0..n).map(|i| format!("/registry/secrets/ns/s-{i:06}").into_bytes()).collect()
    }

    fn registry(n: u64) -> BTreeSet<Vec<u8>> {
        let kinds = ["cluster.x-k8s.io/machines", "configmaps", "secrets", "leases"];
        (0..n)
            .map(|i| {
                let ns = i % 37;
                let h = i.wrapping_mul(0x9e37_79b9_7f4a_7c15);
                format!("/registry/{}/ns-{ns}/obj-{h:016x}", kinds[(i % 4) as usize]).into_bytes()
            })
            .collect()
    }

    fn hex(n: u64) -> BTreeSet<Vec<u8>> {
        (0..n)
            .map(|i| format!("{:032x}", u128::from(i).wrapping_mul(0x2545_f491_4f6c_dd1d_0123)).into_bytes())
            .collect()
    }

    fn awkward() -> BTreeSet<Vec<u8>> {
        let mut k = BTreeSet::new();
        for i in 0u8..=255 {
            k.insert(vec![i]);
            k.insert(vec![0xff, i]);
            k.insert(vec![i, 0xff, 0xff]);
            k.insert(vec![0xff; (i as usize % 7) + 1]);
        }
        k
    }

    /// Every key once, in order, and etcd walks at most `bound` keys per key returned.
    fn assert_linear(keys: &BTreeSet<Vec<u8>>, page: i64, bound: i64) {
        for (start, end) in [(&[0u8][..], &[0u8][..]), (b"/registry/secrets/", b"/registry/secrets0"), (b"0", b"8")] {
            let (got, walked, requests) = scan(keys, start, end, page);
            assert_eq!(got, expected(keys, start, end), "page {page}, [{start:?}, {end:?})");
            let n = got.len() as i64;
            assert!(walked <= bound * n.max(page), "walked {walked} keys for {n} (page {page})");
            assert!(requests <= 8 * (n / page + 1) + 64, "{requests} requests for {n} keys (page {page})");
        }
    }

    #[test]
    fn scans_walk_a_bounded_multiple_of_the_keys() {
        assert_linear(&digits(200_000), 1000, 24);
        assert_linear(&digits(5_000), 7, 24);
        assert_linear(&registry(100_000), 500, 24);
        assert_linear(&hex(100_000), 1000, 24);
    }

    /// The broken variant the cursor replaces: paging to the end of the scan is quadratic.
    #[test]
    fn paging_to_the_scan_end_walks_quadratically_many_keys() {
        let keys = digits(200_000);
        let (mut walked, mut start) = (0i64, vec![0u8]);
        loop {
            let (got, more, count) = range(&keys, &Window { start: start.clone(), end: vec![0] }, 1000);
            walked += count;
            if !more {
                break;
            }
            start = got.last().unwrap().clone();
            start.push(0);
        }
        assert!(walked > 24 * 200_000, "walked {walked}: the check above would not catch this");
    }

    #[test]
    fn awkward_keys_scan_exactly_once_in_order() {
        let keys = awkward();
        for page in [1, 2, 3, 5, 64, 10_000] {
            for (start, end) in [(vec![0], vec![0]), (vec![0xff], vec![0]), (vec![1, 0xff], vec![0xff, 0xff, 0])] {
                assert_eq!(scan(&keys, &start, &end, page).0, expected(&keys, &start, &end), "page {page}");
            }
        }
        assert_eq!(scan(&BTreeSet::new(), &[0], &[0], 10), (Vec::new(), 0, 1));
    }

    #[test]
    fn random_keyspaces_scan_exactly_once_in_order() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(20261123);
        for case in 0..300 {
            let alphabet = rng.random_range(1..=4u8);
            let keys: BTreeSet<Vec<u8>> = (0..rng.random_range(0..400))
                .map(|_| (0..rng.random_range(1..9)).map(|_| 0xfd + rng.random_range(0..alphabet) % 3).collect())
                .collect();
            let page = rng.random_range(1..20);
            let start: Vec<u8> = (0..rng.random_range(1..3)).map(|_| rng.random_range(0xfc..=0xff)).collect();
            let end = if rng.random_bool(0.5) { vec![0] } else { vec![0xff, rng.random()] };
            assert_eq!(scan(&keys, &start, &end, page).0, expected(&keys, &start, &end), "case {case}");
        }
    }
}
