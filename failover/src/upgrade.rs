//! The DR-aware upgrade of the global clusters (seed 000): the sync is uninstalled — guarded like
//! a failover's uninstall — while the clusters are upgraded, and installed again afterwards. The
//! primary keeps serving throughout, so nothing is fenced: R is the primary's head read when the
//! uninstall starts, the sync applies up to it and freezes there, and the check pinned at (R, T)
//! decides. A clean uninstall leaves its proof in the sync's gate (the standby was a copy at T),
//! so the reinstall's resync deletes a standby copy the primary deleted meanwhile and only
//! reports what the standby wrote after T — never a blind overwrite of standby-only keys.

use serde_json::json;

use crate::guard;
use crate::orchestrator::{FailoverError, Options, Outcome, locked, wait_within};
use crate::ports::Ports;
use crate::step::{Progress, Step};

/// The guarded uninstall before the upgrade. Refused (the sync resumes) unless the pinned check
/// is clean or the run is forced. Restartable: a restart after the uninstall reports it done; one
/// after an earlier attempt froze the sync lets it go on first (under the lock nobody else froze
/// it, and a frozen sync would never reach the head the restart reads).
pub async fn uninstall<P: Ports>(ports: &P, o: &Options) -> Result<Outcome, FailoverError> {
    locked(ports, o, "upgrade", async {
        if let Some(p) = ports.load_progress().await?.filter(|p| p.done.is_some() && !p.complete()) {
            let what = format!("a failover is in progress (done: {:?}): resume or abort it first", p.done);
            return Err(FailoverError::Precondition { step: Step::Preflight, what });
        }
        if !ports.sync_running().await? {
            if ports.sync_uninstalled().await? {
                ports.audit(&json!({"step": "upgrade-uninstall", "outcome": "already-done"})).await?;
                return Ok(Outcome::default());
            }
            let what = "the sync is not running: nothing to uninstall (reinstall it after the upgrade)".to_string();
            return Err(FailoverError::Precondition { step: Step::Preflight, what });
        }
        ports.resume_sync().await?;
        // The primary keeps taking writes: the freeze is asked for before the sync reaches the
        // head read, or it could come after the sync applied a later revision and the check
        // pinned at that head would find the standby ahead of it. A sync that was past the head
        // when the freeze arrived stops where it is: R is where it stopped.
        let head = ports.source_head().await?;
        if ports.freeze_sync(head).await.is_err() {
            wait_within(o, Step::WaitCaughtUp, || async { Ok(ports.sync_checkpoint().await? >= head) }).await?;
            ports.freeze_sync(head).await?;
        }
        let r = ports.sync_checkpoint().await?.max(head);
        let t = ports.target_head().await?;
        let report = ports.pinned_check(r, t).await?;
        let mut progress = Progress { source_revision: Some(r), target_revision: Some(t), ..Progress::default() };
        if !o.guard_off() {
            if let Err(refusal) = guard::decide(&report, o.force.as_deref()) {
                // Nothing was uninstalled: the sync goes on, the upgrade waits.
                ports.resume_sync().await?;
                ports.audit(&json!({"step": "upgrade-uninstall", "outcome": "refused"})).await?;
                return Err(FailoverError::Refused { step: Step::UninstallSync, text: refusal.text });
            }
            if !report.is_clean() {
                progress.forced_by = o.force.clone();
            }
        }
        ports.uninstall_sync(&report, progress.forced_by.as_deref()).await?;
        ports
            .audit(&json!({"step": "upgrade-uninstall", "outcome": "done", "r": r, "t": t, "forced_by": progress.forced_by}))
            .await?;
        Ok(Outcome { progress, report: Some(report), plan: Vec::new() })
    })
    .await
}

/// The reinstall after the upgrade: the sync starts a new epoch over the uninstalled gate,
/// resyncs (the gate's proof decides which standby-only keys are copies) and catches up.
pub async fn reinstall<P: Ports>(ports: &P, o: &Options) -> Result<Outcome, FailoverError> {
    locked(ports, o, "upgrade", async {
        if ports.dns_target().await? != o.primary {
            let what = format!("the platform domain no longer points at {}: fail back instead", o.primary);
            return Err(FailoverError::Precondition { step: Step::Preflight, what });
        }
        ports.install_sync(None).await?;
        wait_within(o, Step::Preflight, || async { Ok(ports.sync_running().await?) }).await?;
        let head = ports.source_head().await?;
        wait_within(o, Step::WaitCaughtUp, || async { Ok(ports.sync_checkpoint().await? >= head) }).await?;
        ports.audit(&json!({"step": "upgrade-reinstall", "outcome": "done", "caught_up_to": head})).await?;
        let progress = Progress { source_revision: Some(head), ..Progress::default() };
        Ok(Outcome { progress, report: None, plan: Vec::new() })
    })
    .await
}
