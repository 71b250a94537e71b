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

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use etcd_client::{EventType, GetOptions, KeyValue, WatchOptions};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tokio::sync::watch;

use crate::anchor::{Anchor, Anchors};
use crate::batch::{Batcher, Limits};

/// Watch responses coalesced before a flush (each is bounded by the source's watch batching;
/// the batcher splits what exceeds a txn).
const RESPONSES_COALESCED_MAX: usize = 1_024;
use crate::conn::{ConnConfig, ConnError, Connector, Etcd};
use crate::ledger::{LEDGER_RANGES_MAX, Ledger};
use crate::plan::{Change, HELD_PREFIX, Op, PlanError, Planner};
use crate::rules::Rules;
use crate::scan::{Scan, ScanError, is_compacted, prefix_end};
use crate::target::{self, Checkpoint, Gate, TargetError};

const SECRETS_PREFIX: &[u8] = b"/registry/secrets/";
/// Resync passes restarted by compaction before the session gives up (and backs off).
const RESYNC_ATTEMPTS_MAX: u32 = 5;
/// A resync txn in flight: (ops, checkpoint, target revision).
type Flight = tokio::task::JoinSet<Result<(u64, Checkpoint, i64), TargetError>>;
/// The ledger is saved at most this often while streaming (a crash loses at most this much of
/// it, which the target's history still proves: kube-apiserver compacts every 5 minutes).
const LEDGER_SAVE_INTERVAL: Duration = Duration::from_secs(10);
/// Revisions a resync proved from the target's history, recorded in the ledger afterwards.
const PROVEN_LISTED_MAX: usize = 100_000;

/// Surplus keys listed in the status (all are counted).
const SURPLUS_LISTED_MAX: usize = 1000;

#[derive(Debug, Clone)]
pub struct Settings {
    pub rules: Rules,
    pub limits: Limits,
    pub page_keys: i64,
    pub held_max: usize,
    /// Resync txns in flight at once (streaming stays strictly in order).
    pub txns_in_flight_max: usize,
    /// Install over a cleared or uninstalled gate (a new epoch).
    pub reinstall: bool,
    pub backoff_min: Duration,
    pub backoff_max: Duration,
    /// Consecutive failed sessions before the engine gives up.
    pub sessions_failed_max: u32,
    /// Seeds the backoff jitter and re-encryption IVs (the daemon draws it from the OS, the
    /// simulator passes its world seed).
    pub seed: u64,
    /// Both sides' encryption keys, when given.
    pub boundary: crate::crypto::Boundary,
    /// A target revision at which the target held an exact copy of the source in scope (a
    /// failback's: the old primary at the R its failover's check proved the other side equal
    /// to). A target-only key last written at or below it is a copy the source has deleted since,
    /// deleted like the sync's own; one written after it is surplus, reported, never deleted.
    pub baseline_revision: Option<i64>,
    /// Test-only: write the checkpoint in its own txn, before the data.
    #[cfg(feature = "mutants")]
    pub checkpoint_outside_txn: bool,
    /// Test-only: never hold dependents back.
    #[cfg(feature = "mutants")]
    pub owner_order_off: bool,
    /// Test-only: prove authorship from the target's history only (as before the ledger).
    #[cfg(feature = "mutants")]
    pub ledger_off: bool,
    /// Test-only: no baseline revision proves a target-only key a copy.
    #[cfg(feature = "mutants")]
    pub baseline_off: bool,
    /// Test-only: resume from the checkpoint whenever the source's cluster ID matches, even when
    /// the source's head is below it (a source restored from a snapshot).
    #[cfg(feature = "mutants")]
    pub restore_blind: bool,
    /// Test-only: write without comparing the gate (a sync that outlived its uninstall then
    /// writes onto the new primary).
    #[cfg(feature = "mutants")]
    pub gate_compare_off: bool,
}

impl Settings {
    pub fn new(rules: Rules) -> Self {
        Settings {
            rules,
            limits: Limits::default(),
            page_keys: 1000,
            held_max: 100_000,
            txns_in_flight_max: 4,
            reinstall: false,
            backoff_min: Duration::from_millis(100),
            backoff_max: Duration::from_secs(10),
            sessions_failed_max: 100_000,
            seed: 0,
            boundary: crate::crypto::Boundary::default(),
            baseline_revision: None,
            #[cfg(feature = "mutants")]
            checkpoint_outside_txn: false,
            #[cfg(feature = "mutants")]
            owner_order_off: false,
            #[cfg(feature = "mutants")]
            ledger_off: false,
            #[cfg(feature = "mutants")]
            baseline_off: false,
            #[cfg(feature = "mutants")]
            restore_blind: false,
            #[cfg(feature = "mutants")]
            gate_compare_off: false,
        }
    }

    /// A fresh planner with this run's rules, keys and (mutant) switches.
    pub fn planner(&self, generation: u64) -> Planner {
        let rng = ChaCha8Rng::seed_from_u64(self.seed.wrapping_add(generation.wrapping_mul(0x9E37_79B9_7F4A_7C15)));
        #[allow(unused_mut)]
        let mut p = Planner::new(self.rules.clone(), self.held_max, self.boundary.clone(), Box::new(rng));
        #[cfg(feature = "mutants")]
        {
            p.owner_order_off = self.owner_order_off;
        }
        p
    }

    fn ledger_on(&self) -> bool {
        #[cfg(feature = "mutants")]
        if self.ledger_off {
            return false;
        }
        true
    }

    fn write_mode(&self) -> target::WriteMode {
        #[allow(unused_mut)]
        let mut m = target::WriteMode::default();
        #[cfg(feature = "mutants")]
        {
            m.split_checkpoint = self.checkpoint_outside_txn;
            m.unguarded = self.gate_compare_off;
        }
        m
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    Connecting,
    Resyncing,
    Resuming,
    Streaming,
    Frozen,
    Backoff,
    Stopped,
    Failed,
}

/// What the monitor shows and the metrics export.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Status {
    pub phase: Phase,
    pub checkpoint: i64,
    pub source_head: i64,
    pub source_cluster_id: u64,
    pub gate_epoch: u64,
    pub frozen_at: Option<i64>,
    pub applied_ops: u64,
    pub applied_txns: u64,
    pub resyncs: u64,
    pub sessions_failed: u64,
    pub split_revisions: u64,
    pub skipped_leased: u64,
    pub undecryptable: Vec<String>,
    pub held_total: u64,
    pub released_total: u64,
    pub surplus_total: u64,
    pub surplus: Vec<String>,
    /// Ranges in the authorship ledger, and ranges dropped past its bound (claims lost).
    pub ledger_ranges: usize,
    pub ledger_dropped: u64,
    pub held: Vec<(String, String)>,
    pub last_error: Option<String>,
    /// Since when the checkpoint has been behind the source head (simulated or real clock).
    #[serde(skip)]
    pub behind_since: Option<tokio::time::Instant>,
}

impl Status {
    /// Seconds the target has been behind the source; 0 when caught up.
    pub fn lag_seconds(&self) -> f64 {
        self.behind_since.map(|t| t.elapsed().as_secs_f64()).unwrap_or(0.0)
    }

    fn track_lag(&mut self) {
        if self.checkpoint >= self.source_head {
            self.behind_since = None;
        } else if self.behind_since.is_none() {
            self.behind_since = Some(tokio::time::Instant::now());
        }
    }
}

impl Default for Status {
    fn default() -> Self {
        Status {
            phase: Phase::Connecting,
            checkpoint: 0,
            source_head: 0,
            source_cluster_id: 0,
            gate_epoch: 0,
            frozen_at: None,
            applied_ops: 0,
            applied_txns: 0,
            resyncs: 0,
            sessions_failed: 0,
            split_revisions: 0,
            skipped_leased: 0,
            undecryptable: Vec::new(),
            held_total: 0,
            released_total: 0,
            surplus_total: 0,
            surplus: Vec::new(),
            ledger_ranges: 0,
            ledger_dropped: 0,
            held: Vec::new(),
            last_error: None,
            behind_since: None,
        }
    }
}

/// Commands from the control API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Run,
    /// Apply everything up to this source revision, then stop applying.
    Freeze(i64),
    /// Stop the engine for good.
    Stop,
}

/// The engine's shared state: status out, commands in.
#[derive(Clone)]
pub struct Handle {
    status: Arc<Mutex<Status>>,
    commands: watch::Sender<Command>,
}

impl Default for Handle {
    fn default() -> Self {
        Handle { status: Arc::default(), commands: watch::channel(Command::Run).0 }
    }
}

impl Handle {
    pub fn status(&self) -> Status {
        self.status.lock().expect("status lock").clone()
    }

    /// The last applied source revision (without cloning the whole status).
    pub fn checkpoint(&self) -> i64 {
        self.status.lock().expect("status lock").checkpoint
    }

    fn update(&self, f: impl FnOnce(&mut Status)) {
        let mut s = self.status.lock().expect("status lock");
        f(&mut s);
        s.track_lag();
    }

    pub fn command(&self, c: Command) {
        self.commands.send_replace(c);
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error(transparent)]
    Conn(#[from] ConnError),
    #[error(transparent)]
    Target(#[from] TargetError),
    #[error(transparent)]
    Plan(#[from] PlanError),
    #[error("source revision {0} was compacted: resync")]
    Compacted(i64),
    #[error("the source watch ended: {0}")]
    WatchEnded(String),
    #[error("resync restarted by compaction {0} times in a row")]
    ResyncGaveUp(u32),
    #[error("gave up after {0} failed sessions in a row")]
    GaveUp(u32),
}

impl From<ScanError> for SyncError {
    fn from(e: ScanError) -> Self {
        match e {
            ScanError::Compacted { revision } => SyncError::Compacted(revision),
            ScanError::Conn(c) => SyncError::Conn(c),
        }
    }
}

impl SyncError {
    /// Errors no retry can fix: the gate is gone or not ours, bookkeeping is corrupt.
    pub fn is_final(&self) -> bool {
        matches!(
            self,
            SyncError::Target(
                TargetError::GateLost { .. } | TargetError::GateNotSyncing { .. } | TargetError::Corrupt { .. }
            )
        ) || matches!(self, SyncError::Plan(_))
    }
}

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

    async fn resync(&mut self) -> Result<i64, SyncError> {
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

    async fn resync_at(&mut self, r: i64) -> Result<(), SyncError> {
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

    async fn target_head(&self) -> Result<i64, SyncError> {
        Ok(self.target.head().await?)
    }

    /// The target revision at or below which a target-only key is a copy the source deleted
    /// since: the failback's, or the one a clean uninstall proved (carried by the gate).
    fn baseline(&self) -> Option<i64> {
        #[cfg(feature = "mutants")]
        if self.settings.baseline_off {
            return None;
        }
        self.settings.baseline_revision.max(self.gate.proven_at)
    }

    /// Whether the ledger proves the sync wrote the value a target key got at `rev`.
    fn claimed(&self, rev: i64) -> bool {
        self.settings.ledger_on() && self.ledger.claims(rev)
    }

    /// Saves the ledger when it changed — at most every [`LEDGER_SAVE_INTERVAL`] unless forced —
    /// verifying it first when it reached its bound.
    async fn save_ledger(&mut self, force: bool) -> Result<(), SyncError> {
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
    async fn verify_ledger(&mut self) -> Result<(), SyncError> {
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

    async fn resume(&mut self, cp: &Checkpoint) -> Result<i64, SyncError> {
        self.handle.update(|s| s.phase = Phase::Resuming);
        tracing::info!(checkpoint = cp.revision, partial = cp.partial, chunk = cp.chunk, "resume");
        let mut index = Scan::new(&self.source, &[0], &[0], cp.revision, self.settings.page_keys);
        while let Some(kv) = index.next().await? {
            self.planner.observe_source(kv.key(), kv.value());
        }
        let t_rev = self.target_head().await?;
        let held_start = HELD_PREFIX.as_bytes();
        let mut held = Scan::new(&self.target, held_start, &prefix_end(held_start), t_rev, self.settings.page_keys);
        while let Some(kv) = held.next().await? {
            let key = kv.key()[held_start.len()..].to_vec();
            let rec: serde_json::Value = serde_json::from_slice(kv.value()).unwrap_or_default();
            let rev = rec.get("revision").and_then(|v| v.as_i64()).unwrap_or(cp.revision);
            let mut src = self.source.kv.clone();
            let r = match self.source.call(src.get(key.clone(), Some(GetOptions::new().with_revision(rev)))).await {
                Err(e) if is_compacted(&e) => return Err(SyncError::Compacted(rev)),
                r => r?,
            };
            if let Some(v) = r.kvs().first() {
                self.planner.restore_hold(key, v.value().to_vec(), rev);
            }
        }
        let mut ops = Vec::new();
        let mut tgt = Scan::new(&self.target, &[0], &[0], t_rev, self.settings.page_keys);
        while let Some(kv) = tgt.next().await? {
            if self.planner.rules().includes(kv.key()) {
                self.planner.verified_on_target(kv.value(), &mut ops)?;
            }
        }
        self.planner.release_ready(&mut ops)?;
        if !ops.is_empty() {
            let cp = self.checkpoint(cp.revision, cp.partial, false);
            self.write(ops, cp).await?;
        }
        self.publish_held();
        self.handle.update(|s| s.checkpoint = cp.revision);
        Ok(if cp.partial { cp.revision } else { cp.revision + 1 })
    }

    async fn wait_while_frozen(&mut self, next_rev: i64) -> Result<bool, SyncError> {
        // Called before every revision: when nothing stops it, skip the subscription and the
        // status update (a resume from a freeze leaves through the loop below, which resets them).
        match *self.handle.commands.borrow() {
            Command::Run => return Ok(true),
            Command::Freeze(at) if next_rev <= at => return Ok(true),
            _ => {}
        }
        let mut commands = self.handle.commands.subscribe();
        loop {
            let c = *commands.borrow_and_update();
            match c {
                Command::Stop => return Ok(false),
                Command::Freeze(at) if next_rev > at => {
                    if let Some(t) = self.batcher.flush() {
                        let cp = self.txn_checkpoint(&t);
                        self.write(t.ops, cp).await?;
                    }
                    self.save_ledger(true).await?;
                    self.handle.update(|s| {
                        s.phase = Phase::Frozen;
                        s.frozen_at = Some(at);
                    });
                    if commands.changed().await.is_err() {
                        return Ok(false);
                    }
                }
                _ => {
                    self.handle.update(|s| {
                        s.phase = Phase::Streaming;
                        s.frozen_at = None;
                    });
                    return Ok(true);
                }
            }
        }
    }

    async fn stream(&mut self, from: i64) -> Result<(), SyncError> {
        self.handle.update(|s| s.phase = Phase::Streaming);
        let opts = WatchOptions::new().with_from_key().with_start_revision(from).with_prev_key();
        let mut w = self.source.watch.clone();
        let mut stream = self.source.call(w.watch(vec![0u8], Some(opts))).await?;
        let mut applied = from - 1;
        if !self.wait_while_frozen(applied + 1).await? {
            return Ok(());
        }
        loop {
            let msg = tokio::select! {
                m = stream.message() => m,
                _ = self.handle_changed() => {
                    if !self.wait_while_frozen(applied + 1).await? {
                        return Ok(());
                    }
                    continue;
                }
            };
            let mut resp = self.watch_response(msg)?;
            // Watch responses that are already here (they pile up while a write is in flight,
            // e.g. over a slow link) join the same target txns: one response per txn would cap
            // the apply rate at one revision per round trip.
            let mut absorbed = 0;
            loop {
                if !self.absorb(&resp, &mut applied).await? {
                    return Ok(());
                }
                absorbed += 1;
                if absorbed >= RESPONSES_COALESCED_MAX {
                    break;
                }
                let next = tokio::select! {
                    biased;
                    m = stream.message() => Some(m),
                    _ = std::future::ready(()) => None,
                };
                match next {
                    Some(m) => resp = self.watch_response(m)?,
                    None => break,
                }
            }
            if let Some(t) = self.batcher.flush() {
                let cp = self.txn_checkpoint(&t);
                self.write(t.ops, cp).await?;
            }
            // Published with the checkpoint it belongs to, before the ledger's own write.
            self.publish_held();
            self.save_ledger(false).await?;
        }
    }

    /// A watch message as a response to apply, or the error that ends the stream.
    fn watch_response(
        &self,
        msg: Result<Option<etcd_client::WatchResponse>, etcd_client::Error>,
    ) -> Result<etcd_client::WatchResponse, SyncError> {
        let resp = match msg {
            Ok(Some(r)) => r,
            Ok(None) => return Err(SyncError::WatchEnded("closed by the source".into())),
            Err(e) => {
                return Err(SyncError::Conn(ConnError::Unreachable {
                    endpoint: self.source.endpoint.clone(),
                    source: e,
                }));
            }
        };
        if resp.compact_revision() != 0 {
            return Err(SyncError::Compacted(resp.compact_revision()));
        }
        if resp.canceled() {
            return Err(SyncError::WatchEnded(format!("cancelled: {}", resp.cancel_reason())));
        }
        if let Some(h) = resp.header() {
            let head = h.revision();
            self.handle.update(|s| s.source_head = s.source_head.max(head));
        }
        Ok(resp)
    }

    /// Plans one watch response's revisions into the batcher, writing each txn it fills; false
    /// when a freeze or uninstall ends the stream.
    async fn absorb(&mut self, resp: &etcd_client::WatchResponse, applied: &mut i64) -> Result<bool, SyncError> {
        let mut events = resp.events().iter().peekable();
        // The response's last put becomes an anchor once it is planned: one digest per response,
        // not per revision (any source write at or below a checkpoint's revision serves).
        let mut last_put: Option<(i64, &KeyValue)> = None;
        while let Some(first) = events.peek() {
            let rev = first.kv().map(|kv| kv.mod_revision()).unwrap_or_default();
            if !self.wait_while_frozen(rev).await? {
                return Ok(false);
            }
            let mut ops = Vec::new();
            while let Some(e) = events.next_if(|e| e.kv().map(|kv| kv.mod_revision()) == Some(rev)) {
                let kv = e.kv().expect("watch events carry a key-value");
                let change = match e.event_type() {
                    EventType::Put => {
                        last_put = Some((rev, kv));
                        put_of(kv)
                    }
                    EventType::Delete => Change::Delete { key: kv.key().to_vec() },
                };
                self.planner.change(rev, change, &mut ops)?;
            }
            for t in self.batcher.push(rev, ops) {
                let cp = self.txn_checkpoint(&t);
                self.write(t.ops, cp).await?;
            }
            *applied = rev;
        }
        if let Some((rev, kv)) = last_put {
            self.anchors.observe(rev, kv.key(), kv.value());
        }
        Ok(true)
    }

    /// Resolves when a command arrives that the stream must act on.
    async fn handle_changed(&self) {
        let mut commands = self.handle.commands.subscribe();
        loop {
            if commands.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
            if *commands.borrow() != Command::Run {
                return;
            }
        }
    }
}

fn put_of(kv: &KeyValue) -> Change {
    Change::Put { key: kv.key().to_vec(), value: kv.value().to_vec(), lease: kv.lease() }
}
