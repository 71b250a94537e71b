//! What the engine reports (its phase, position and lag) and the commands it takes.

use std::sync::{Arc, Mutex};

use tokio::sync::watch;

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

    pub(super) fn track_lag(&mut self) {
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
    pub(super) status: Arc<Mutex<Status>>,
    pub(super) commands: watch::Sender<Command>,
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

    pub(super) fn update(&self, f: impl FnOnce(&mut Status)) {
        let mut s = self.status.lock().expect("status lock");
        f(&mut s);
        s.track_lag();
    }

    pub fn command(&self, c: Command) {
        self.commands.send_replace(c);
    }
}
