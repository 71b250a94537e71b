//! The operator's abort of a failover that stopped before the uninstall (refused, failed or
//! crashed): the sync applies again, the primary takes writes again, the failover's pauses are
//! undone and its progress cleared. It holds the orchestrator lock like the failover does.

use serde_json::json;

use crate::orchestrator::{FailoverError, Options, Outcome, locked};
use crate::ports::Ports;
use crate::step::{Progress, Step};

/// Undoes a failover that stopped (refused, failed or crashed) before the sync was uninstalled:
/// the sync applies again, the primary takes writes again and the workload Clusters the
/// failover paused reconcile again; its progress is cleared so the next failover starts afresh.
/// Refused from the uninstall on: the standby may have acted as the primary since.
pub async fn abort<P: Ports>(ports: &P, o: &Options) -> Result<Outcome, FailoverError> {
    if o.dry_run {
        return abort_locked(ports, o).await;
    }
    locked(ports, o, "abort", abort_locked(ports, o)).await
}

async fn abort_locked<P: Ports>(ports: &P, o: &Options) -> Result<Outcome, FailoverError> {
    let Some(p) = ports.load_progress().await? else {
        return Ok(Outcome { plan: vec!["nothing to abort: no failover in progress".into()], ..Outcome::default() });
    };
    if let Some(done) = p.done.filter(|d| *d >= Step::UninstallSync) {
        return Err(FailoverError::TooLateToAbort { done });
    }
    let mut plan = vec![format!("abort after: {:?}", p.done)];
    if o.dry_run {
        plan.push("resume the sync".into());
        plan.push(format!("unfence {}", o.primary));
        plan.push(format!("unpause on {}: {:?}", o.primary, p.paused_primary));
        plan.push(format!("unpause on {}: {:?}", o.standby, p.paused));
        return Ok(Outcome { progress: p, report: None, plan });
    }
    // The sync first, so it carries the primary's unpause writes over the standby's copies.
    ports.resume_sync().await?;
    plan.push("resumed the sync".into());
    ports.unfence_primary().await?;
    if ports.primary_fenced().await? {
        return Err(FailoverError::AbortIncomplete(format!("{} still refuses writes", o.primary)));
    }
    plan.push(format!("unfenced {}", o.primary));
    let unpaused = ports.unpause_primary(&p.paused_primary).await?;
    plan.push(format!("unpaused on {}: {unpaused:?}", o.primary));
    if !p.paused.is_empty() {
        let unpaused = ports.set_paused(Some(&p.paused), false).await?;
        plan.push(format!("unpaused on {}: {unpaused:?}", o.standby));
    }
    ports.save_progress(&Progress::default()).await?;
    ports.audit(&json!({"step": "abort", "outcome": "done", "after": p.done, "undone": plan})).await?;
    if !ports.sync_running().await? {
        return Err(FailoverError::AbortIncomplete("the sync's gate does not say syncing".into()));
    }
    Ok(Outcome { progress: Progress::default(), report: None, plan })
}
