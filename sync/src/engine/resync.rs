//! Resync: pin the source at R, merge-join it with the target under the rules, write only the
//! difference; the ledger that proves which surplus keys the sync wrote.

use std::collections::BTreeSet;
use std::time::Duration;

use super::{Flight, Phase, Session, SyncError, put_of};
use crate::batch::Batcher;
use crate::ledger::LEDGER_RANGES_MAX;
use crate::plan::Op;
use crate::rules::Rules;
use crate::scan::{Scan, ScanError, prefix_end};
use crate::target::{self};

const SECRETS_PREFIX: &[u8] = b"/registry/secrets/";
/// Resync passes restarted by compaction before the session gives up (and backs off).
const RESYNC_ATTEMPTS_MAX: u32 = 5;
/// The ledger is saved at most this often while streaming (a crash loses at most this much of
/// it, which the target's history still proves: kube-apiserver compacts every 5 minutes).
const LEDGER_SAVE_INTERVAL: Duration = Duration::from_secs(10);
/// Revisions a resync proved from the target's history, recorded in the ledger afterwards.
const PROVEN_LISTED_MAX: usize = 100_000;
/// Surplus keys listed in the status (all are counted).
const SURPLUS_LISTED_MAX: usize = 1000;

impl Session<'_> {
    pub(super) async fn resync(&mut self) -> Result<i64, SyncError> {
        self.handle.update(|s| {
            s.phase = Phase::Resyncing;
            s.resyncs += 1;
        });
        for attempt in 0..RESYNC_ATTEMPTS_MAX {
            let revision = self.head().await?;
            tracing::info!(revision, attempt, "resync");
            match self.resync_at(revision).await {
                Ok(()) => return Ok(revision),
                Err(SyncError::Compacted(_)) => continue,
                Err(e) => return Err(e),
            }
        }
        Err(SyncError::ResyncGaveUp(RESYNC_ATTEMPTS_MAX))
    }

    pub(super) async fn resync_at(&mut self, r: i64) -> Result<(), SyncError> {
        self.planner = self.settings.planner(r as u64);
        self.batcher = Batcher::new(self.settings.limits);
        let mut index = Scan::new(&self.source, &[0], &[0], r, self.settings.page_keys);
        while let Some(kv) = index.next().await? {
            self.planner.observe_source(kv.key(), kv.value());
        }
        let mut surplus = Vec::new();
        let mut surplus_total = 0u64;
        // The target scans double as the ledger's verification: the gaps holding an in-scope key
        // no range claims, below the first pass's revision.
        let mut marked = BTreeSet::new();
        let mut proven = Vec::new();
        let mut verified_at = i64::MAX;
        // Everything but Secrets, then Secrets: leaves go last.
        let mut flight = Flight::new();
        for secrets in [false, true] {
            // Secrets are written after every other key has landed.
            self.drain(&mut flight).await?;
            let (start, end) =
                if secrets { (SECRETS_PREFIX.to_vec(), prefix_end(SECRETS_PREFIX)) } else { (vec![0], vec![0]) };
            let t_rev = self.target_head().await?;
            verified_at = verified_at.min(t_rev);
            let mut src = Scan::new(&self.source, &start, &end, r, self.settings.page_keys);
            let mut tgt = Scan::new(&self.target, &start, &end, t_rev, self.settings.page_keys);
            let in_pass = |k: &[u8], rules: &Rules| rules.includes(k) && (secrets || !k.starts_with(SECRETS_PREFIX));
            let (mut s, mut t) = (src.next().await?, tgt.next().await?);
            loop {
                while s.as_ref().is_some_and(|kv| !in_pass(kv.key(), self.planner.rules())) {
                    s = src.next().await?;
                }
                while t.as_ref().is_some_and(|kv| !in_pass(kv.key(), self.planner.rules())) {
                    t = tgt.next().await?;
                }
                let mut ops = Vec::new();
                match (&s, &t) {
                    (None, None) => break,
                    (Some(a), Some(b)) if a.key() == b.key() => {
                        if !self.claimed(b.mod_revision()) {
                            marked.extend(self.ledger.gap_of(b.mod_revision()));
                        }
                        if self.settings.boundary.same(a.value(), b.value()) {
                            self.planner.verified_on_target(a.value(), &mut ops)?;
                        } else {
                            self.planner.change(r, put_of(a), &mut ops)?;
                        }
                        s = src.next().await?;
                        t = tgt.next().await?;
                    }
                    (Some(a), b) if b.as_ref().is_none_or(|b| a.key() < b.key()) => {
                        self.planner.change(r, put_of(a), &mut ops)?;
                        s = src.next().await?;
                    }
                    (_, Some(b)) => {
                        let rev = b.mod_revision();
                        let copied = self.baseline().is_some_and(|base| rev <= base);
                        let own = copied || self.claimed(rev) || {
                            let from_history = target::written_by_sync(&self.target, rev).await;
                            if from_history && proven.len() < PROVEN_LISTED_MAX {
                                proven.push(rev);
                            }
                            from_history
                        };
                        if own {
                            ops.push((b.key().to_vec(), Op::Delete));
                        } else {
                            marked.extend(self.ledger.gap_of(rev));
                            surplus_total += 1;
                            if surplus.len() < SURPLUS_LISTED_MAX {
                                surplus.push(String::from_utf8_lossy(b.key()).into_owned());
                            }
                        }
                        t = tgt.next().await?;
                    }
                    (Some(_), None) => unreachable!("handled by the source-only arm"),
                }
                for txn in self.batcher.push(r, ops) {
                    let cp = self.checkpoint(r, false, true);
                    self.write_resync(&mut flight, txn.ops, cp).await?;
                    self.save_ledger(false).await?;
                }
            }
        }
        self.drain(&mut flight).await?;
        let ops = self.batcher.flush().map(|t| t.ops).unwrap_or_default();
        let cp = self.checkpoint(r, false, false);
        self.write(ops, cp).await?;
        // Gaps below the scans' revision never change while the resync writes above it; the
        // revisions the history proved are recorded after the merge (one would split a gap a
        // single mark stands for).
        let merged = self.ledger.verify(verified_at, &marked);
        for rev in proven {
            self.ledger.record(rev);
        }
        tracing::info!(merged, ranges = self.ledger.len(), "ledger verified by the resync");
        self.save_ledger(true).await?;
        self.publish_held();
        self.handle.update(|s| {
            s.surplus = surplus;
            s.surplus_total = surplus_total;
            s.checkpoint = r;
        });
        Ok(())
    }

    pub(super) async fn target_head(&self) -> Result<i64, SyncError> {
        Ok(self.target.head().await?)
    }

    /// The target revision at or below which a target-only key is a copy the source deleted
    /// since: the failback's, or the one a clean uninstall proved (carried by the gate).
    pub(super) fn baseline(&self) -> Option<i64> {
        #[cfg(feature = "mutants")]
        if self.settings.baseline_off {
            return None;
        }
        self.settings.baseline_revision.max(self.gate.proven_at)
    }

    /// Whether the ledger proves the sync wrote the value a target key got at `rev`.
    pub(super) fn claimed(&self, rev: i64) -> bool {
        self.settings.ledger_on() && self.ledger.claims(rev)
    }

    /// Saves the ledger when it changed — at most every [`LEDGER_SAVE_INTERVAL`] unless forced —
    /// verifying it first when it reached its bound.
    pub(super) async fn save_ledger(&mut self, force: bool) -> Result<(), SyncError> {
        let now = tokio::time::Instant::now();
        if !self.ledger.is_dirty()
            || (!force && self.ledger_saved_at.is_some_and(|t| now.duration_since(t) < LEDGER_SAVE_INTERVAL))
        {
            return Ok(());
        }
        if self.ledger.len() >= LEDGER_RANGES_MAX {
            self.verify_ledger().await?;
        }
        target::save_ledger(&self.target, &self.gate, self.ledger).await?;
        self.ledger.saved();
        self.ledger_saved_at = Some(now);
        let (ranges, dropped) = (self.ledger.len(), self.ledger.dropped());
        self.handle.update(|s| {
            s.ledger_ranges = ranges;
            s.ledger_dropped = dropped;
        });
        Ok(())
    }

    /// Merges the ledger's gaps that hold no in-scope key (a keys-only scan of the target at its
    /// head), then drops the oldest ranges past half the bound so this does not run every txn.
    pub(super) async fn verify_ledger(&mut self) -> Result<(), SyncError> {
        let at = self.target_head().await?;
        let mut marked = BTreeSet::new();
        let mut scan = Scan::new(&self.target, &[0], &[0], at, self.settings.page_keys).keys_only();
        loop {
            match scan.next().await {
                Ok(Some(kv)) if self.planner.rules().includes(kv.key()) => {
                    marked.extend(self.ledger.gap_of(kv.mod_revision()));
                }
                Ok(Some(_)) => {}
                Ok(None) => break,
                // The target compacted past its own head mid-scan: verify another time.
                Err(ScanError::Compacted { .. }) => return Ok(()),
                Err(ScanError::Conn(e)) => return Err(e.into()),
            }
        }
        let merged = self.ledger.verify(at, &marked);
        self.ledger.drop_oldest(LEDGER_RANGES_MAX / 2);
        tracing::info!(merged, ranges = self.ledger.len(), dropped = self.ledger.dropped(), "ledger verified");
        Ok(())
    }
}
