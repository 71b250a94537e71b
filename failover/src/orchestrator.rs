//! Runs the planned failover: each step with a precondition, an action, a postcondition, a
//! timeout and an audit record; progress persisted after every step so a restarted orchestrator
//! resumes where the last one stopped, reusing the revisions it pinned.

use std::time::Duration;

use serde::Serialize;
use serde_json::json;
use sync::check::Report;

use crate::guard;
use crate::ports::{Finding, PortError, Ports};
use crate::preflight::Preflight;
use crate::step::{Progress, Step};

#[derive(Debug, Clone)]
pub struct Options {
    /// Host / VIP names of the two sides.
    pub primary: String,
    pub standby: String,
    /// Who forces past the guards (recorded in progress, audit and every report).
    pub force: Option<String>,
    /// Evaluate every precondition and print the plan; change nothing.
    pub dry_run: bool,
    /// The primary is lost: its quiesce is skipped, it is fenced through the fence hook, R is
    /// what the sync applied (nothing can be read from the primary) and the guards decide on a
    /// check of the standby alone (no dangling, held or undecryptable keys).
    pub unplanned: bool,
    pub step_timeout: Duration,
    /// How often waiting steps look again.
    pub poll: Duration,
    /// How long the primary's controllers get, once their Clusters are paused, to finish a
    /// reconcile already running (pausing stops the next one, not the current one).
    pub quiesce: Duration,
    /// How long to wait for the orchestrator lock: longer than its lease's TTL, so the lock of a
    /// crashed orchestrator lapses in time and a restarted one resumes.
    pub lock_wait: Duration,
    /// Test-only (`uninstall-guard-off`): the guards always pass.
    #[cfg(feature = "mutants")]
    pub guard_off: bool,
    /// Test-only (`fencing-off`): the primary is never fenced.
    #[cfg(feature = "mutants")]
    pub fencing_off: bool,
}

impl Options {
    pub fn new(primary: &str, standby: &str) -> Self {
        Options {
            primary: primary.into(),
            standby: standby.into(),
            force: None,
            dry_run: false,
            unplanned: false,
            step_timeout: Duration::from_secs(120),
            poll: Duration::from_millis(500),
            quiesce: Duration::from_secs(5),
            lock_wait: Duration::from_secs(20),
            #[cfg(feature = "mutants")]
            guard_off: false,
            #[cfg(feature = "mutants")]
            fencing_off: false,
        }
    }

    pub(crate) fn guard_off(&self) -> bool {
        #[cfg(feature = "mutants")]
        if self.guard_off {
            return true;
        }
        false
    }

    fn fencing_off(&self) -> bool {
        #[cfg(feature = "mutants")]
        if self.fencing_off {
            return true;
        }
        false
    }
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Outcome {
    pub progress: Progress,
    /// The pinned check the guards decided on.
    pub report: Option<Report>,
    /// `--dry-run`: each step with its evaluated precondition.
    pub plan: Vec<String>,
}

impl Outcome {
    /// What an operator reads of a finished run of `what` (failover, failback): each step's
    /// time, the RPO and RTO, who forced it, the orphan VMs left alone.
    pub fn lines(&self, what: &str) -> Vec<String> {
        let mut out = Vec::new();
        let mut last = 0;
        for (step, ms) in &self.progress.step_ms {
            out.push(format!("  {:<24} +{:>6} ms", step.name(), ms.saturating_sub(last)));
            last = *ms;
        }
        let missed = self.report.as_ref().map(|r| r.missed.count).unwrap_or(0);
        out.push(match (self.progress.unplanned, self.progress.source_known, self.progress.source_revision) {
            (true, Some(known), Some(r)) => format!(
                "{what}: done (unplanned); RPO {} revisions known lost (R {r}, the sync had seen {known}; keys \
                 written after R are known once the old primary is back), RTO {last} ms",
                known - r
            ),
            (true, None, Some(r)) => format!(
                "{what}: done (unplanned); RPO unknown: no sync process answered (R {r} is what it applied; keys \
                 written after R are known once the old primary is back), RTO {last} ms"
            ),
            _ => format!("{what}: done; RPO {missed} keys, RTO {last} ms"),
        });
        if let Some(w) = &self.progress.forced_by {
            out.push(format!("forced by: {w}"));
        }
        if !self.progress.orphan_vms.is_empty() {
            out.push(format!(
                "orphan VMs (no Machine on the standby; left for the operator): {:?}",
                self.progress.orphan_vms
            ));
        }
        // Holds that do not block the guard: the standby kept its own copy of these keys.
        if let Some(r) = &self.report
            && r.held.count > r.held_pending
        {
            // The check lists a held key as `key (reason)`.
            let pending = format!("({})", sync::plan::HoldReason::OwnerPending.as_str());
            let shown: Vec<&str> = r.held.keys.iter().filter(|k| !k.ends_with(&pending)).map(String::as_str).collect();
            out.push(format!(
                "held by the sync, not copied ({}; their owners are absent on the primary or kept out by a rule, \
                 so the standby keeps its previous copy): {}",
                r.held.count - r.held_pending,
                shown.join(", ")
            ));
        }
        out
    }
}

#[derive(Debug, thiserror::Error)]
pub enum FailoverError {
    #[error(transparent)]
    Port(#[from] PortError),
    #[error("{step:?}: {text}")]
    Refused { step: Step, text: String },
    #[error("{step:?}: precondition failed: {what}")]
    Precondition { step: Step, what: String },
    #[error("{step:?}: timed out after {timeout:?}")]
    Timeout { step: Step, timeout: Duration },
    #[error("validation failed; {}: {}", paused_text(.paused), findings_text(.findings))]
    Validation {
        findings: Vec<Finding>,
        /// The Clusters kept paused (the others were validated and unpaused); None: all of them.
        paused: Option<Vec<String>>,
    },
    #[error(
        "cannot abort: the failover got past {done:?} — the sync is uninstalled and the standby may \
         have acted as the primary since; finish the failover, then fail back"
    )]
    TooLateToAbort { done: Step },
    #[error("the abort's postcondition failed: {0}")]
    AbortIncomplete(String),
    #[error("another orchestrator is running ({holder} holds the lock on the standby); stop it first")]
    Locked { holder: String },
}

fn paused_text(paused: &Option<Vec<String>>) -> String {
    match paused {
        None => "clusters stay paused".into(),
        Some(held) => format!("clusters stay paused: {} (the others were validated and unpaused)", held.join(", ")),
    }
}

fn findings_text(f: &[Finding]) -> String {
    f.iter().map(|f| format!("{} ({})", f.what, f.where_)).collect::<Vec<_>>().join("; ")
}

/// Runs `job` holding the orchestrator lock, so a failover, its resume and an abort never act at
/// once (each step assumes it alone moves the platform).
pub(crate) async fn locked<P: Ports, T>(
    ports: &P,
    o: &Options,
    holder: &str,
    job: impl std::future::Future<Output = Result<T, FailoverError>>,
) -> Result<T, FailoverError> {
    let deadline = tokio::time::Instant::now() + o.lock_wait;
    loop {
        match ports.try_lock(holder).await? {
            None => break,
            Some(other) if tokio::time::Instant::now() >= deadline => {
                return Err(FailoverError::Locked { holder: other });
            }
            Some(_) => tokio::time::sleep(o.poll).await,
        }
    }
    let result = job.await;
    // Best effort: an unlock that fails leaves a lock that lapses with its lease.
    let _ = ports.unlock().await;
    result
}

/// Preflight on its own (`drlab preflight`, and the failover's first step): both sides, or the
/// standby alone when the primary is lost.
pub async fn preflight<P: Ports>(ports: &P, o: &Options) -> Result<Preflight, FailoverError> {
    let mut sides = Vec::new();
    if !o.unplanned {
        sides.push(ports.inventory(&o.primary).await?);
    }
    sides.push(ports.inventory(&o.standby).await?);
    let domain = ports.platform_domain().await?;
    let names = [domain, o.primary.clone(), o.standby.clone()];
    let mut pf = crate::preflight::decide_covering(&sides, &names);
    if o.unplanned {
        pf.not_checked.push(format!("{}: the primary is lost", o.primary));
    }
    Ok(pf)
}

/// Runs (or resumes) the planned failover.
pub async fn run<P: Ports>(ports: &P, o: &Options) -> Result<Outcome, FailoverError> {
    if o.dry_run {
        return dry_run(ports, o).await;
    }
    locked(ports, o, "failover", run_locked(ports, o)).await
}

pub(crate) async fn run_locked<P: Ports>(ports: &P, o: &Options) -> Result<Outcome, FailoverError> {
    let mut progress = ports.load_progress().await?.unwrap_or_default();
    // A completed failover's record stays where it is, so a restart after the last step reports
    // it done and repeats nothing. Once a sync runs onto this standby again (reinstalled after a
    // failback, or after an upgrade), that record is an earlier cycle's: it goes to the audit
    // trail and this failover starts from the first step.
    if progress.complete() && ports.sync_running().await? {
        ports.audit(&json!({"step": "archive-progress", "outcome": "done", "progress": progress})).await?;
        progress = Progress::default();
    }
    if progress.done.is_none() {
        progress.unplanned = o.unplanned;
    } else if progress.unplanned != o.unplanned {
        // A planned resume would read the lost primary; an unplanned one would skip the wait.
        let (was, flag) = if progress.unplanned { ("unplanned", "with") } else { ("planned", "without") };
        return Err(FailoverError::Precondition {
            step: progress.next().unwrap_or(Step::UnpauseClusters),
            what: format!("the failover in progress is {was}: resume it {flag} --unplanned"),
        });
    }
    // Saved with the first step, so a crash before it completes starts the clock again (nothing
    // was done yet), and one after it does not.
    let started_ms = match progress.started_ms {
        Some(t) => t,
        None => ports.now_ms().await?,
    };
    progress.started_ms = Some(started_ms);
    let mut report = None;
    while let Some(step) = progress.next() {
        let done = tokio::time::timeout(o.step_timeout, run_step(ports, o, step, &mut progress, &mut report)).await;
        let result = done.unwrap_or(Err(FailoverError::Timeout { step, timeout: o.step_timeout }));
        if let Err(e) = &result {
            ports.audit(&json!({"step": step, "outcome": "failed", "error": e.to_string()})).await?;
        }
        result?;
        progress.done = Some(step);
        let now_ms = ports.now_ms().await?;
        // A wall clock steps back (NTP, or a resume on another host): an operating condition,
        // not a broken invariant. The step counts from the start as 0 and the audit says why.
        if now_ms < started_ms {
            ports.audit(&json!({"step": step, "outcome": "note", "clock_went_back_ms": started_ms - now_ms})).await?;
        }
        progress.step_ms.push((step, now_ms.saturating_sub(started_ms)));
        ports.save_progress(&progress).await?;
        ports.audit(&json!({"step": step, "outcome": "done", "forced_by": progress.forced_by})).await?;
    }
    Ok(Outcome { progress, report, plan: Vec::new() })
}

/// The pinned check, computed again after a resume (same R and T, so the same answer).
async fn pinned<P: Ports>(ports: &P, p: &Progress, report: &mut Option<Report>) -> Result<Report, FailoverError> {
    if let Some(r) = report {
        return Ok(r.clone());
    }
    let (Some(r), Some(t)) = (p.source_revision, p.target_revision) else {
        panic!("a guarded step runs after the pinned check recorded its revisions");
    };
    let r = if p.unplanned { ports.target_check(t).await? } else { ports.pinned_check(r, t).await? };
    *report = Some(r.clone());
    Ok(r)
}

fn guard_step(o: &Options, step: Step, report: &Report, p: &mut Progress) -> Result<(), FailoverError> {
    if o.guard_off() {
        return Ok(());
    }
    guard::decide(report, o.force.as_deref()).map_err(|r| FailoverError::Refused { step, text: r.text })?;
    if !report.is_clean() {
        p.forced_by = o.force.clone();
    }
    Ok(())
}

pub(crate) async fn wait_until<F, Fut>(o: &Options, mut ok: F) -> Result<(), FailoverError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<bool, FailoverError>>,
{
    // The step's timeout bounds this loop.
    loop {
        if ok().await? {
            return Ok(());
        }
        tokio::time::sleep(o.poll).await;
    }
}

/// [`wait_until`] outside the step loop (a failback's or an upgrade's own waits), bounded by
/// the step timeout and reported as a timeout of `step`.
pub(crate) async fn wait_within<F, Fut>(o: &Options, step: Step, ok: F) -> Result<(), FailoverError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<bool, FailoverError>>,
{
    tokio::time::timeout(o.step_timeout, wait_until(o, ok))
        .await
        .map_err(|_| FailoverError::Timeout { step, timeout: o.step_timeout })?
}

async fn run_step<P: Ports>(
    ports: &P,
    o: &Options,
    step: Step,
    p: &mut Progress,
    report: &mut Option<Report>,
) -> Result<(), FailoverError> {
    let pre = |what: String| FailoverError::Precondition { step, what };
    match step {
        Step::Preflight => {
            if !ports.sync_running().await? {
                return Err(pre("the sync is not running (its gate does not say syncing)".into()));
            }
            let dns = ports.dns_target().await?;
            if dns != o.primary {
                return Err(pre(format!("the platform domain points at {dns}, not at the primary ({})", o.primary)));
            }
            ports.target_head().await?;
            let pf = preflight(ports, o).await?;
            let (blocking, warnings) = (pf.blocking.len(), pf.warnings.len());
            ports
                .audit(&json!({"step": step, "outcome": "preflight", "blocking": blocking, "warnings": warnings}))
                .await?;
            if blocking > 0 {
                match &o.force {
                    Some(who) => p.forced_by = Some(who.clone()),
                    None => {
                        let mut text = String::from("refused: preflight found what breaks the runbook\n");
                        for line in pf.lines().iter().filter(|l| l.starts_with("BLOCKING")) {
                            text.push_str(&format!("  {line}\n"));
                        }
                        text.push_str("remedy: fix the resources named, or `--force WHO` (recorded)\n");
                        return Err(FailoverError::Refused { step, text });
                    }
                }
            }
        }
        Step::QuiescePrimary if p.unplanned => {
            // Nothing reaches a lost primary's controllers; the fence hook stops its writes.
        }
        Step::QuiescePrimary => {
            // A resumed run keeps the list of the first (pausing again finds nothing to pause),
            // so it is saved before the grace: a crash in it must not lose what an abort undoes.
            // Postcondition: every workload Cluster on the primary reads back paused — one
            // created or unpaused meanwhile (a pause the hook did not make stick) is paused
            // again after a poll, within the step's timeout; the fence then finds no controller
            // mid-reconcile.
            let mut wait = o.quiesce;
            loop {
                let paused = ports.pause_primary().await?;
                p.paused_primary.extend(paused);
                ports.save_progress(p).await?;
                tokio::time::sleep(wait).await;
                if ports.primary_unpaused().await?.is_empty() {
                    break;
                }
                wait = o.poll;
            }
        }
        Step::FencePrimary => {
            if !o.fencing_off() {
                ports.fence_primary().await?;
                if !ports.primary_fenced().await? {
                    return Err(pre("the primary still accepts writes after fencing".into()));
                }
            }
        }
        Step::WaitCaughtUp if p.unplanned => {
            // R is what the sync applied of what it had seen; it gets a grace to apply what it
            // already received (a lost primary sends nothing more).
            let known = match p.source_known {
                Some(k) => Some(k),
                None => ports.sync_source_seen().await?,
            };
            p.source_known = known;
            let caught_up = match known {
                Some(known) => tokio::time::timeout(
                    o.quiesce,
                    wait_until(o, || async { Ok(ports.sync_checkpoint().await? >= known) }),
                )
                .await
                .is_ok(),
                // The sync's process is gone too: nothing more is applied, and what it had seen
                // is unknown.
                None => false,
            };
            let r = match p.source_revision {
                Some(r) => r,
                None => ports.sync_checkpoint().await?,
            };
            p.source_revision = Some(r);
            if !caught_up {
                let note = match known {
                    Some(_) => "the sync had not applied all it had seen of the lost primary",
                    None => "no sync process answers: what it had seen of the lost primary is unknown",
                };
                ports.audit(&json!({"step": step, "outcome": "note", "note": note, "known": known, "r": r})).await?;
            }
        }
        Step::WaitCaughtUp => {
            let r = match p.source_revision {
                Some(r) => r,
                None => ports.source_head().await?,
            };
            p.source_revision = Some(r);
            wait_until(o, || async { Ok(ports.sync_checkpoint().await? >= r) }).await?;
        }
        Step::FreezeSync => {
            ports.freeze_sync(p.source_revision.expect("set by wait-caught-up")).await?;
        }
        Step::PinnedCheck => {
            let t = match p.target_revision {
                Some(t) => t,
                None => ports.target_head().await?,
            };
            p.target_revision = Some(t);
            let r = match p.unplanned {
                true => ports.target_check(t).await?,
                false => ports.pinned_check(p.source_revision.expect("set by wait-caught-up"), t).await?,
            };
            *report = Some(r);
        }
        Step::PauseClusters => {
            p.paused = ports.set_paused(None, true).await?;
        }
        Step::UninstallSync => {
            let r = pinned(ports, p, report).await?;
            guard_step(o, step, &r, p)?;
            ports.uninstall_sync(&r, p.forced_by.as_deref()).await?;
        }
        Step::ClearGate => {
            let r = pinned(ports, p, report).await?;
            guard_step(o, step, &r, p)?;
            // A failback's standby (the old primary) was fenced by the failover before: it takes
            // writes again before its controllers may act, and only now that no sync writes.
            if ports.standby_fenced().await? {
                ports.unfence_standby().await?;
            }
            ports.clear_gate("failover").await?;
        }
        Step::RemoveReplicationPath => ports.remove_replication_path().await?,
        Step::SwitchDns => {
            ports.switch_dns(&o.standby).await?;
            // Postcondition (seed 000's `dig +short <platform-domain>`): the name answers with
            // the standby — a DNS API may take its time; the step's timeout bounds the wait.
            wait_until(o, || async { Ok(ports.dns_target().await? == o.standby) }).await?;
        }
        Step::VerifyIngress => {
            let standby = o.standby.clone();
            wait_until(o, || async {
                Ok(match ports.probe(&standby).await {
                    Ok(pr) => {
                        matches!(pr.status, 200 | 401 | 403) && pr.served_by.as_deref().is_none_or(|s| s == standby)
                    }
                    Err(_) => false,
                })
            })
            .await?;
        }
        Step::Validate => {
            // Recorded before the findings decide, so a failed validation reports them too.
            let orphans = ports.orphan_vms().await?;
            if !orphans.is_empty() {
                ports.audit(&json!({"step": step, "outcome": "note", "orphan_vms": orphans.len()})).await?;
            }
            p.orphan_vms = orphans.into_iter().take(crate::step::ORPHAN_VMS_MAX).collect();
            ports.save_progress(p).await?;
            let findings = ports.validate().await?;
            if findings.is_empty() {
                return Ok(());
            }
            // Each Cluster is unpaused after its own validation: when every finding names its
            // Cluster, the others go back to their controllers now; a finding about the platform
            // (agent tokens, components, VMs unread) keeps them all paused.
            if findings.iter().any(|f| f.cluster.is_none()) {
                return Err(FailoverError::Validation { findings, paused: None });
            }
            let held: std::collections::BTreeSet<&str> = findings.iter().filter_map(|f| f.cluster.as_deref()).collect();
            let clean: Vec<String> = p.paused.iter().filter(|c| !held.contains(c.as_str())).cloned().collect();
            if !clean.is_empty() {
                ports.set_paused(Some(&clean), false).await?;
                ports.audit(&json!({"step": step, "outcome": "note", "validated_and_unpaused": clean})).await?;
            }
            let paused = Some(held.into_iter().map(str::to_string).collect());
            return Err(FailoverError::Validation { findings, paused });
        }
        Step::UnpauseClusters => {
            let paused = p.paused.clone();
            ports.set_paused(Some(&paused), false).await?;
        }
    }
    Ok(())
}

/// Reads of a live sync made consistent: the checkpoint (the source revision applied) and a
/// target revision T at which it held, read when no target write came between — else a check
/// pinned at them sees a write the sync made after the checkpoint it read as surplus.
const CONSISTENT_READS_MAX: usize = 20;

async fn checkpoint_and_target<P: Ports>(ports: &P) -> Result<(i64, i64), FailoverError> {
    let mut t = ports.target_head().await?;
    for _ in 0..CONSISTENT_READS_MAX {
        let cp = ports.sync_checkpoint().await?;
        let after = ports.target_head().await?;
        if after == t {
            return Ok((cp, t));
        }
        t = after;
    }
    Err(FailoverError::Port(PortError::new(
        "sync",
        format!("the standby changed under {CONSISTENT_READS_MAX} reads of the checkpoint: try the dry run again"),
    )))
}

/// Every precondition evaluated, nothing changed: the check runs at the current heads.
async fn dry_run<P: Ports>(ports: &P, o: &Options) -> Result<Outcome, FailoverError> {
    let mut plan = Vec::new();
    let progress = ports.load_progress().await?.unwrap_or_default();
    plan.push(format!("resume after: {:?}", progress.done));
    plan.push(format!("preflight: sync running = {}", ports.sync_running().await?));
    plan.push(format!("preflight: platform domain → {} (expected {})", ports.dns_target().await?, o.primary));
    plan.extend(preflight(ports, o).await?.lines().into_iter().map(|l| format!("preflight: {l}")));
    let (cp, t) = checkpoint_and_target(ports).await?;
    let r = if o.unplanned {
        let known = match ports.sync_source_seen().await? {
            Some(k) => k.to_string(),
            None => "unknown (no sync process answers)".into(),
        };
        plan.push("quiesce-primary: skipped (the primary is lost)".into());
        plan.push("fence-primary: through the fence hook".into());
        plan.push(format!("wait-caught-up: R = the sync's checkpoint {cp}; last primary revision known {known}"));
        ports.target_check(t).await?
    } else {
        let head = ports.source_head().await?;
        plan.push(format!("wait-caught-up: source head {head}, sync checkpoint {cp} ({} behind)", head - cp));
        ports.pinned_check(cp.min(head), t).await?
    };
    let verdict = match guard::decide(&r, o.force.as_deref()) {
        Ok(()) if r.is_clean() => "passes".to_string(),
        Ok(()) => format!("forced by {}", o.force.as_deref().unwrap_or_default()),
        Err(refusal) => refusal.text,
    };
    let at = if o.unplanned { format!("the standby alone at {t}") } else { format!("source {cp}, target {t}") };
    plan.push(format!("guards (check at {at}): {verdict}"));
    for s in Step::ALL.iter().skip_while(|s| Some(**s) <= progress.done) {
        plan.push(format!("step {}", s.name()));
    }
    Ok(Outcome { progress, report: Some(r), plan })
}
