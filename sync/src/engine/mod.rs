//! The replication loop: connect, take the gate, resync or resume, then stream.
//!
//! - **Resync** (first start, compaction, another source cluster, a source restored to an older
//!   revision, or an interrupted resync): pin the source at revision R, index every source
//!   object's UID, then merge-join source (R) and target in key order under the rules — Secrets
//!   last, since they are leaves and are referenced by name — and write only the difference. A
//!   target-only key is deleted only when the sync can prove it wrote it (its [`Ledger`], else
//!   the target's history) or that it was a copy of the source (written at or below a failback's
//!   baseline revision); other surplus keys are reported, never deleted. The resync's scan of
//!   the target also verifies the ledger's gaps.
//! - **Resume**: rebuild the UID index at the checkpoint revision C, restore held keys, then
//!   watch from C + 1 (or C when C was only partly applied).
//! - **Stream**: watch every key with prev_kv; each source revision goes through the planner,
//!   consecutive revisions are coalesced into gate-guarded txns carrying the checkpoint.
//!
//! Transient failures (unreachable etcd, broken watch) restart the session after a bounded,
//! jittered exponential backoff; a lost gate is final.

mod error;
mod resync;
mod settings;
mod status;
mod stream;

pub use error::SyncError;
pub use settings::Settings;
pub use status::{Command, Handle, Phase, Status};

use etcd_client::{GetOptions, KeyValue};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::anchor::{Anchor, Anchors};
use crate::batch::Batcher;
use crate::conn::{ConnConfig, Connector, Etcd};
use crate::ledger::Ledger;
use crate::plan::{Change, HELD_PREFIX, Op, Planner};
use crate::scan::is_compacted;
use crate::target::{self, Checkpoint, Gate, TargetError};

/// A resync txn in flight: (ops, checkpoint, target revision).
type Flight = tokio::task::JoinSet<Result<(u64, Checkpoint, i64), TargetError>>;

pub struct Engine {
    pub source: ConnConfig,
    pub target: ConnConfig,
    pub source_connector: Connector,
    pub target_connector: Connector,
    pub settings: Settings,
    pub handle: Handle,
}

struct Session<'a> {
    settings: &'a Settings,
    handle: &'a Handle,
    source: Etcd,
    target: Etcd,
    gate: Gate,
    cluster_id: u64,
    planner: Planner,
    batcher: Batcher,
    /// The process's ledger: it outlives a failed session (a partition mid-resync must not lose
    /// the claims of the writes made before it, saved or not).
    ledger: &'a mut Ledger,
    ledger_saved_at: Option<tokio::time::Instant>,
    /// The source's recent puts, one of which each streamed checkpoint names.
    anchors: Anchors,
    /// The anchor of the checkpoint this session resumed from (carried until a newer one).
    resumed_anchor: Option<Anchor>,
}

impl Engine {
    /// Runs until stopped (Ok) or a final error.
    pub async fn run(&self) -> Result<(), SyncError> {
        let mut rng = ChaCha8Rng::seed_from_u64(self.settings.seed);
        let mut failed = 0u32;
        let mut force_resync = false;
        let mut ledger = None;
        loop {
            if *self.handle.commands.borrow() == Command::Stop {
                self.handle.update(|s| s.phase = Phase::Stopped);
                return Ok(());
            }
            self.handle.update(|s| s.phase = Phase::Connecting);
            match self.session(force_resync, &mut ledger).await {
                Ok(()) => {
                    self.handle.update(|s| s.phase = Phase::Stopped);
                    return Ok(());
                }
                Err(e) if e.is_final() => {
                    tracing::error!(error = %e, "etcd-sync stops");
                    self.handle.update(|s| {
                        s.phase = Phase::Failed;
                        s.last_error = Some(e.to_string());
                    });
                    return Err(e);
                }
                Err(e) => {
                    force_resync = matches!(e, SyncError::Compacted(_));
                    failed += 1;
                    if failed >= self.settings.sessions_failed_max {
                        return Err(SyncError::GaveUp(failed));
                    }
                    let exp = self.settings.backoff_min.saturating_mul(1u32 << failed.min(16));
                    let cap = exp.min(self.settings.backoff_max);
                    // Full jitter from the injected RNG, never from the OS.
                    let wait = cap.mul_f64(0.5 + rng.random::<f64>() / 2.0);
                    tracing::warn!(error = %e, wait_ms = wait.as_millis() as u64, "etcd-sync session failed; retrying");
                    self.handle.update(|s| {
                        s.phase = Phase::Backoff;
                        s.sessions_failed += 1;
                        s.last_error = Some(e.to_string());
                    });
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }

    async fn session(&self, force_resync: bool, ledger: &mut Option<Ledger>) -> Result<(), SyncError> {
        let source = crate::conn::connect(&self.source, &self.source_connector, 0).await?;
        let target = crate::conn::connect(&self.target, &self.target_connector, 0).await?;
        let gate = target::ensure_gate(&target, self.settings.reinstall).await?;
        let mut m = source.maintenance.clone();
        let st = source.call(m.status()).await?;
        let header = st.header().expect("etcd answers with a header");
        let (cluster_id, head) = (header.cluster_id(), header.revision());
        let checkpoint = target::read_checkpoint(&target).await?;
        let digest = self.settings.rules.digest();
        if !ledger.as_ref().is_some_and(|l| l.belongs_to(&digest, gate.epoch)) {
            *ledger = Some(Ledger::restore(target::read_ledger(&target).await?, &digest, gate.epoch));
        }
        let ledger = ledger.as_mut().expect("set above");
        let planner = self.settings.planner(1);
        let mut s = Session {
            settings: &self.settings,
            handle: &self.handle,
            source,
            target,
            gate: gate.clone(),
            cluster_id,
            planner,
            batcher: Batcher::new(self.settings.limits),
            ledger,
            ledger_saved_at: None,
            anchors: Anchors::default(),
            resumed_anchor: None,
        };
        self.handle.update(|st| {
            st.gate_epoch = gate.epoch;
            st.source_cluster_id = cluster_id;
            st.source_head = head;
        });
        // A head below the checkpoint is a source restored from a snapshot (its revisions went
        // back; the same cluster ID when restored with the same flags): the revisions after the
        // snapshot are another history now, so the checkpoint says nothing and only a resync
        // is safe.
        #[cfg(feature = "mutants")]
        let head =
            if self.settings.restore_blind { head.max(checkpoint.as_ref().map_or(0, |c| c.revision)) } else { head };
        // A checkpoint of an earlier epoch is from before an uninstall: while no sync ran, the
        // target was free to change (a standby that served after a failover, one upgraded), and
        // streaming from the checkpoint would never look at what it changed. A reinstall resyncs.
        let resume = match &checkpoint {
            Some(cp)
                if !force_resync
                    && !cp.resyncing
                    && cp.source_cluster_id == cluster_id
                    && cp.revision <= head
                    && cp.epoch == gate.epoch =>
            {
                Some(cp.clone())
            }
            Some(cp) => {
                tracing::info!(
                    checkpoint = cp.revision,
                    head,
                    same_cluster = cp.source_cluster_id == cluster_id,
                    same_epoch = cp.epoch == gate.epoch,
                    "resync needed"
                );
                None
            }
            None => None,
        };
        let resume = match resume {
            Some(cp) if !s.anchor_holds(&cp).await? => {
                tracing::info!(
                    checkpoint = cp.revision,
                    "the source's write at the checkpoint's anchor is another one (restored from a snapshot?): resync"
                );
                None
            }
            other => other,
        };
        s.resumed_anchor = resume.as_ref().and_then(|cp| cp.anchor.clone());
        let from = match resume {
            Some(cp) => match s.resume(&cp).await {
                Ok(from) => from,
                Err(SyncError::Compacted(_)) => {
                    // A resync's checkpoints name no anchor until it streams again.
                    s.resumed_anchor = None;
                    s.resync().await? + 1
                }
                Err(e) => return Err(e),
            },
            None => s.resync().await? + 1,
        };
        s.stream(from).await
    }
}

impl Session<'_> {
    fn checkpoint(&self, revision: i64, partial: bool, resyncing: bool) -> Checkpoint {
        Checkpoint {
            source_cluster_id: self.cluster_id,
            revision,
            partial,
            chunk: 0,
            resyncing,
            epoch: self.gate.epoch,
            anchor: self.anchors.at_or_below(revision).or_else(|| self.resumed_anchor.clone()),
        }
    }

    /// Whether the source still holds the write `cp`'s anchor names (the history the checkpoint
    /// counts in). A checkpoint without an anchor, or one compacted past its anchor, is taken
    /// as it is: the resume's own read at `cp.revision` still needs that revision.
    async fn anchor_holds(&self, cp: &Checkpoint) -> Result<bool, SyncError> {
        #[cfg(feature = "mutants")]
        if self.settings.restore_blind {
            return Ok(true);
        }
        let Some((a, key)) = cp.anchor.as_ref().and_then(|a| Some((a, a.key_bytes()?))) else { return Ok(true) };
        let mut kv = self.source.kv.clone();
        match self.source.call(kv.get(key, Some(GetOptions::new().with_revision(a.revision)))).await {
            Ok(r) => Ok(a.holds(r.kvs().first().map(|kv| (kv.mod_revision(), kv.value())))),
            Err(e) if is_compacted(&e) => Ok(true),
            Err(e) => Err(e.into()),
        }
    }

    fn txn_checkpoint(&self, t: &crate::batch::Txn) -> Checkpoint {
        Checkpoint { chunk: t.chunk, ..self.checkpoint(t.revision, t.partial, false) }
    }

    async fn write(&mut self, ops: Vec<(Vec<u8>, Op)>, cp: Checkpoint) -> Result<(), SyncError> {
        let n = ops.len() as u64;
        let rev = target::write(&self.target, &self.gate, ops, &cp, self.settings.write_mode()).await?;
        self.account(n, &cp, rev);
        Ok(())
    }

    /// Whether a write must wait for every earlier one: it releases a held key, or puts an object
    /// with owners (which may be in a txn still in flight).
    fn ordered(&self, ops: &[(Vec<u8>, Op)]) -> bool {
        ops.iter().any(|(k, op)| {
            k.starts_with(HELD_PREFIX.as_bytes())
                || matches!(op, Op::Put(v) if matches!(
                    self.settings.boundary.decode_target(v),
                    crate::object::Decoded::Object(m) if !m.owners.is_empty()
                ))
        })
    }

    /// A resync write, with up to `txns_in_flight_max` in flight: within one pass every key is
    /// written once, so only owner order constrains the order of txns.
    async fn write_resync(
        &mut self,
        flight: &mut Flight,
        ops: Vec<(Vec<u8>, Op)>,
        cp: Checkpoint,
    ) -> Result<(), SyncError> {
        if self.ordered(&ops) {
            self.drain(flight).await?;
        }
        while flight.len() >= self.settings.txns_in_flight_max.max(1) {
            self.join_one(flight).await?;
        }
        let (target, gate, mode) = (self.target.clone(), self.gate.clone(), self.settings.write_mode());
        let n = ops.len() as u64;
        flight.spawn(async move { target::write(&target, &gate, ops, &cp, mode).await.map(|rev| (n, cp, rev)) });
        Ok(())
    }

    async fn join_one(&mut self, flight: &mut Flight) -> Result<(), SyncError> {
        if let Some(r) = flight.join_next().await {
            let (n, cp, rev) = r.expect("resync writes do not panic")?;
            self.account(n, &cp, rev);
        }
        Ok(())
    }

    async fn drain(&mut self, flight: &mut Flight) -> Result<(), SyncError> {
        while !flight.is_empty() {
            self.join_one(flight).await?;
        }
        Ok(())
    }

    /// Counts a committed write and records its target revision in the ledger.
    fn account(&mut self, n: u64, cp: &Checkpoint, rev: i64) {
        self.ledger.record(rev);
        let (split, stats) = (self.batcher.split_revisions, self.planner.stats.clone());
        let (ranges, dropped) = (self.ledger.len(), self.ledger.dropped());
        self.handle.update(|s| {
            s.ledger_ranges = ranges;
            s.ledger_dropped = dropped;
            s.held_total = s.held_total.max(stats.held_total);
            s.released_total = s.released_total.max(stats.released_total);
            s.applied_ops += n;
            s.applied_txns += 1;
            s.split_revisions = split;
            s.skipped_leased = stats.skipped_leased;
            if !cp.partial && !cp.resyncing {
                s.checkpoint = cp.revision;
            }
        });
    }

    fn publish_held(&self) {
        let undecryptable: Vec<String> = self
            .planner
            .undecryptable()
            .iter()
            .take(crate::check::LISTED_MAX)
            .map(|k| String::from_utf8_lossy(k).into_owned())
            .collect();
        self.handle.update(|s| s.undecryptable = undecryptable);
        let held: Vec<(String, String)> = self
            .planner
            .held_report()
            .into_iter()
            .map(|(k, r)| (String::from_utf8_lossy(&k).into_owned(), r.as_str().to_string()))
            .collect();
        self.handle.update(|s| s.held = held);
    }

    async fn head(&self) -> Result<i64, SyncError> {
        Ok(self.source.head().await?)
    }
}

fn put_of(kv: &KeyValue) -> Change {
    Change::Put { key: kv.key().to_vec(), value: kv.value().to_vec(), lease: kv.lease() }
}
