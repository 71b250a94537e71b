//! The operations the failover orchestrator (and an operator) drives: check, freeze, resume,
//! uninstall (guarded), gate. The HTTP monitor is a thin layer over these.

use std::time::Duration;

use serde::Serialize;

use crate::BOOKKEEPING_PREFIX;
use crate::check::{self, CheckError, Report};
use crate::conn::{ConnConfig, ConnError, Connector, Etcd};
use crate::engine::{Command, Handle};
use crate::rules::Rules;
use crate::target::{self, Gate, GateState, TargetError};

/// How often a waiting freeze looks at the engine's checkpoint.
const FREEZE_POLL: Duration = Duration::from_millis(20);

#[derive(Clone)]
pub struct Control {
    pub source: ConnConfig,
    pub target: ConnConfig,
    pub source_connector: Connector,
    pub target_connector: Connector,
    pub rules: Rules,
    pub boundary: crate::crypto::Boundary,
    pub handle: Handle,
    pub page_keys: i64,
}

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error(transparent)]
    Conn(#[from] ConnError),
    #[error(transparent)]
    Check(#[from] CheckError),
    #[error(transparent)]
    Target(#[from] TargetError),
    #[error("refused: the standby is not consistent with the primary\n{report}")]
    Refused { report: String },
    #[error("no sync gate on the target")]
    NoGate,
}

#[derive(Debug, Clone, Serialize)]
pub struct Frozen {
    /// Source revision the sync stops after.
    pub revision: i64,
    /// Whether the sync had applied up to it when the call returned.
    pub reached: bool,
    pub checkpoint: i64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Uninstalled {
    pub forced_by: Option<String>,
    pub gate: Gate,
    pub missed: u64,
    pub surplus: u64,
    pub stale: u64,
    pub held_pending: u64,
    pub dangling: u64,
}

impl Control {
    async fn source(&self) -> Result<Etcd, ConnError> {
        crate::conn::connect(&self.source, &self.source_connector, 0).await
    }

    /// A connection to the target, as the sync's control makes it (its endpoints, TLS, connector).
    pub async fn target(&self) -> Result<Etcd, ConnError> {
        crate::conn::connect(&self.target, &self.target_connector, 0).await
    }

    /// A fresh check of both sides (or of the target alone).
    pub async fn check(&self, target_only: bool) -> Result<Report, ControlError> {
        let target = self.target().await?;
        let source = if target_only { None } else { Some(self.source().await?) };
        Ok(check::check(source.as_ref(), &target, &self.rules, &self.boundary, None, self.page_keys).await?)
    }

    /// The source's current revision, read linearizably (never from a watch progress
    /// notification, which etcd 3.4.23 and 3.5.1 can deliver out of order).
    pub async fn source_head(&self) -> Result<i64, ControlError> {
        Ok(self.source().await?.head().await?)
    }

    /// The target's current revision, read linearizably.
    pub async fn target_head(&self) -> Result<i64, ControlError> {
        Ok(self.target().await?.head().await?)
    }

    /// The gate on the target (None: no sync was ever installed there).
    pub async fn gate(&self) -> Result<Option<Gate>, ControlError> {
        Ok(target::read_gate(&self.target().await?).await?)
    }

    /// The checkpoint on the target: the last source revision the sync applied.
    pub async fn checkpoint(&self) -> Result<Option<target::Checkpoint>, ControlError> {
        Ok(target::read_checkpoint(&self.target().await?).await?)
    }

    /// Freezes after `at` (default: the source head now) and waits up to `wait` for the sync to
    /// get there.
    pub async fn freeze(&self, at: Option<i64>, wait: Duration) -> Result<Frozen, ControlError> {
        let revision = match at {
            Some(r) => r,
            None => self.source_head().await?,
        };
        self.handle.command(Command::Freeze(revision));
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let checkpoint = self.handle.status().checkpoint;
            if checkpoint >= revision || tokio::time::Instant::now() >= deadline {
                return Ok(Frozen { revision, reached: checkpoint >= revision, checkpoint });
            }
            tokio::time::sleep(FREEZE_POLL).await;
        }
    }

    pub fn resume(&self) {
        self.handle.command(Command::Run);
    }

    /// Uninstalls the sync: refuses unless a fresh check is clean, or `force` names who forces
    /// it (recorded in the audit trail). Stops the engine and moves the gate to `uninstalled`,
    /// so no sync process — this one or a zombie — can write again.
    pub async fn uninstall(&self, force: Option<&str>) -> Result<Uninstalled, ControlError> {
        let report = self.check(false).await?;
        self.uninstall_checked(&report, force).await
    }

    /// A check pinned at (source R, target T) — what a failover decides on: the standby's own
    /// writes after T (a failover pausing clusters) do not count against it.
    pub async fn check_pinned(&self, source_rev: i64, target_rev: i64) -> Result<Report, ControlError> {
        let target = self.target().await?;
        let source = self.source().await?;
        let pin = Some((source_rev, target_rev));
        Ok(check::check(Some(&source), &target, &self.rules, &self.boundary, pin, self.page_keys).await?)
    }

    /// The target alone, pinned at revision T — an unplanned failover's check, the primary being
    /// lost: dangling owners, held keys and undecryptable Secrets are what it can still see.
    pub async fn check_target_pinned(&self, target_rev: i64) -> Result<Report, ControlError> {
        let target = self.target().await?;
        // The pin's source half is never read without a source.
        let pin = Some((0, target_rev));
        let mut r = check::check(None, &target, &self.rules, &self.boundary, pin, self.page_keys).await?;
        r.source_revision = None;
        Ok(r)
    }

    /// [`Control::uninstall`] deciding on a check the caller made (a failover's pinned one).
    pub async fn uninstall_checked(&self, report: &Report, force: Option<&str>) -> Result<Uninstalled, ControlError> {
        if !report.is_clean() && force.is_none() {
            return Err(ControlError::Refused { report: report.text() });
        }
        let target = self.target().await?;
        let gate = target::read_gate(&target).await?.ok_or(ControlError::NoGate)?;
        // A clean check pinned against the source proves the standby a copy at its revision; a
        // forced or target-only one proves nothing new.
        let proof = (report.is_clean() && report.source_revision.is_some()).then_some(report.target_revision);
        let next = Gate { state: GateState::Uninstalled, proven_at: proof.max(gate.proven_at), ..gate.clone() };
        // The gate first, then the engine: the gate is the commit point. A caller that dies
        // between the two leaves an uninstalled gate — every later sync txn is refused by its
        // compare, so the engine stops by itself — never a stopped engine behind a gate that
        // still says syncing, which a restarted caller could neither resume nor uninstall.
        let gate = target::replace_gate(&target, &gate, next).await?;
        self.handle.command(Command::Stop);
        let out = Uninstalled {
            forced_by: if report.is_clean() { None } else { force.map(str::to_string) },
            gate,
            missed: report.missed.count,
            surplus: report.surplus.count,
            stale: report.stale.count,
            held_pending: report.held_pending,
            dangling: report.dangling.count,
        };
        audit(&target, out.gate.epoch, "uninstall", &out).await?;
        Ok(out)
    }

    /// Moves the gate to `state` (a failover clears it), recording who did it.
    pub async fn set_gate(&self, state: GateState, who: &str) -> Result<Gate, ControlError> {
        let target = self.target().await?;
        let gate = target::read_gate(&target).await?.ok_or(ControlError::NoGate)?;
        let next = target::set_gate(&target, &gate, state).await?;
        audit(&target, next.epoch, "gate", &serde_json::json!({"who": who, "from": gate, "to": next})).await?;
        Ok(next)
    }
}

/// Appends an audit record under the sync's bookkeeping prefix (ordered by etcd revision).
async fn audit(target: &Etcd, epoch: u64, action: &str, record: &impl Serialize) -> Result<(), ConnError> {
    let rev = target.head().await?;
    let mut kv = target.kv.clone();
    let key = format!("{BOOKKEEPING_PREFIX}audit/{epoch:06}/{rev:012}-{action}");
    let value = serde_json::to_vec(record).expect("audit records serialise");
    target.call(kv.put(key, value, None)).await?;
    Ok(())
}
