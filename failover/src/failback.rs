//! Failback (seed 001: roles are relative). After a failover made the standby serve, the sync is
//! installed in the reverse direction — onto the old primary, fenced since, which becomes the
//! standby — and once it has copied, a planned failover runs back, with every guard of the
//! first one. [`Options`] name the roles as they are now: `primary` is the serving cluster (the
//! failover's standby), `standby` the old primary.
//!
//! The old primary diverged while it was fenced: the serving cluster went on writing and
//! deleting. The reverse sync deletes an old-primary-only key only when it is a copy the serving
//! cluster has deleted since: last written at or below the failover's R, at which the failover's
//! pinned check proved both sides equal (its baseline revision). A key written on the old
//! primary after R (a dying primary's lost write) is surplus: reported, never deleted, and the
//! failover back refuses until an operator has decided. A forced failover proved nothing: no
//! baseline, every old-primary-only key is surplus.

use serde_json::json;

use crate::orchestrator::{FailoverError, Options, Outcome, locked, run_locked, wait_within};
use crate::ports::Ports;
use crate::step::{Progress, Step};

/// Installs the reverse sync (after its preconditions) and runs the planned failover back; a
/// restarted failback resumes the failover back from its progress on the old primary.
pub async fn failback<P: Ports>(ports: &P, o: &Options) -> Result<Outcome, FailoverError> {
    if o.dry_run {
        let baseline = preconditions(ports, o).await?;
        let plan = vec![
            format!("install the sync {} → {} (baseline revision {baseline:?})", o.primary, o.standby),
            format!("then a planned failover {} → {}", o.primary, o.standby),
        ];
        return Ok(Outcome { plan, ..Outcome::default() });
    }
    locked(ports, o, "failback", failback_locked(ports, o)).await
}

async fn failback_locked<P: Ports>(ports: &P, o: &Options) -> Result<Outcome, FailoverError> {
    let progress = ports.load_progress().await?;
    if let Some(p) = progress.as_ref().filter(|p| p.complete())
        && ports.dns_target().await? == o.standby
        && !ports.sync_running().await?
    {
        // Restarted after the failover back completed: the old primary serves, no sync runs onto
        // it. Done; nothing to repeat. (A completed record with the roles as they are now is an
        // earlier cycle's: the failover back archives it.)
        return Ok(Outcome { progress: p.clone(), ..Outcome::default() });
    }
    let started = progress.is_some_and(|p| p.done.is_some() && !p.complete());
    if !started {
        let baseline = preconditions(ports, o).await?;
        ports.install_sync(baseline).await?;
        ports.audit(&json!({"step": "install-reverse-sync", "outcome": "done", "baseline_revision": baseline})).await?;
        // The failover's preflight wants the sync running: its gate says so once it started.
        wait_within(o, Step::Preflight, || async { Ok(ports.sync_running().await?) }).await?;
    }
    run_locked(ports, o).await
}

/// What must hold before the reverse sync may write onto the old primary; returns its baseline
/// revision (None when the failover that made the primary serve proved nothing).
async fn preconditions<P: Ports>(ports: &P, o: &Options) -> Result<Option<i64>, FailoverError> {
    let pre = |what: String| FailoverError::Precondition { step: Step::Preflight, what };
    let served = ports.served_since().await?.unwrap_or_default();
    if served.done != Some(Step::UnpauseClusters) {
        return Err(pre(format!(
            "no completed failover made {} serve (its progress: done {:?}): nothing to fail back",
            o.primary, served.done
        )));
    }
    let dns = ports.dns_target().await?;
    if dns != o.primary {
        return Err(pre(format!("the platform domain points at {dns}, not {}", o.primary)));
    }
    // A client still resolving the old primary must not write there while the reverse sync
    // copies onto it: both would be primaries (split brain).
    if !ports.standby_fenced().await? {
        return Err(pre(format!(
            "{} takes writes: fence it before the reverse sync copies onto it (split brain)",
            o.standby
        )));
    }
    Ok(baseline(&served))
}

/// The old primary's revision at which the serving cluster held an exact copy of it: the R of a
/// failover whose guards passed unforced.
pub fn baseline(served: &Progress) -> Option<i64> {
    if served.forced_by.is_some() { None } else { served.source_revision }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_forced_failover_proves_no_baseline() {
        let p = Progress { source_revision: Some(42), ..Progress::default() };
        assert_eq!(baseline(&p), Some(42));
        let forced = Progress { forced_by: Some("ops".into()), ..p };
        assert_eq!(baseline(&forced), None);
    }
}
