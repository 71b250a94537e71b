//! The steps of a planned failover (seed 000 "Failover Procedure", seed 001 "Disaster Recovery
//! Process"), in order, and the progress record persisted on the standby after each one.

use serde::{Deserialize, Serialize};

/// Orphan VMs kept in the progress record.
pub const ORPHAN_VMS_MAX: usize = 100;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Step {
    /// The sync runs and the standby answers; DNS still points at the primary.
    Preflight,
    /// The primary's workload CAPI Clusters are paused and its controllers given time to finish
    /// what they were doing (as `clusterctl move` does): a controller acting after the fence
    /// would leave half-recorded work (a Machine without its infrastructure machine) and go on
    /// calling the IaaS unrecorded.
    QuiescePrimary,
    /// Writes to the primary are refused from here on.
    FencePrimary,
    /// The sync has applied the source head read (linearizably) after fencing: R.
    WaitCaughtUp,
    /// The sync stops after R.
    FreezeSync,
    /// One check pinned at (source R, target T); both guards decide on it.
    PinnedCheck,
    /// The standby's workload CAPI Clusters are paused until validated.
    PauseClusters,
    /// Guarded: the sync is uninstalled (its gate says so; no sync can write again).
    UninstallSync,
    /// Guarded: the standby's controllers may act.
    ClearGate,
    /// The 2379 forwarding between the VIPs goes (seed 001).
    RemoveReplicationPath,
    /// The platform domain points at the standby VIP.
    SwitchDns,
    /// `/kubernetes/global/version` on the standby VIP answers (401 accepted).
    VerifyIngress,
    /// Workload clusters intact: no Machine deleted or being deleted, every VM there.
    Validate,
    /// Each validated cluster is reconciled again.
    UnpauseClusters,
}

impl Step {
    pub const ALL: [Step; 14] = [
        Step::Preflight,
        Step::QuiescePrimary,
        Step::FencePrimary,
        Step::WaitCaughtUp,
        Step::FreezeSync,
        Step::PinnedCheck,
        Step::PauseClusters,
        Step::UninstallSync,
        Step::ClearGate,
        Step::RemoveReplicationPath,
        Step::SwitchDns,
        Step::VerifyIngress,
        Step::Validate,
        Step::UnpauseClusters,
    ];

    pub fn name(self) -> String {
        serde_json::to_value(self).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default()
    }

    /// The step after this one (None after the last).
    pub fn next(self) -> Option<Step> {
        let i = Step::ALL.iter().position(|s| *s == self).expect("every step is listed");
        Step::ALL.get(i + 1).copied()
    }
}

/// What a failover has done so far; persisted on the standby after every step, so a restarted
/// orchestrator resumes after the last completed step and reuses its R and T.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    /// The last step completed (None: nothing yet).
    pub done: Option<Step>,
    /// The source revision the sync had to reach (after fencing).
    pub source_revision: Option<i64>,
    /// The target revision the pinned check ran at.
    pub target_revision: Option<i64>,
    /// Who forced past a guard, if anyone (also in every report).
    pub forced_by: Option<String>,
    /// Clusters paused by this failover (unpaused at the end).
    pub paused: Vec<String>,
    /// Clusters this failover paused on the primary (they reach the standby paused; a refused
    /// failover leaves them paused with the primary fenced, for the operator to decide).
    #[serde(default)]
    pub paused_primary: Vec<String>,
    /// When the failover first started ([`crate::ports::Ports::now_ms`]); a resumed run keeps it.
    #[serde(default)]
    pub started_ms: Option<u64>,
    /// An unplanned failover (the primary lost); a resume must say so too.
    #[serde(default)]
    pub unplanned: bool,
    /// Unplanned: the primary's last revision the sync had seen when R was taken; the RPO is
    /// the revisions between R and it (and, once the primary is back, the keys written there).
    /// None in an unplanned failover whose sync process was gone too: only R is known.
    #[serde(default)]
    pub source_known: Option<i64>,
    /// VMs no Machine on the standby owns, found by the validation (at most
    /// [`ORPHAN_VMS_MAX`]; the audit record counts them all).
    #[serde(default)]
    pub orphan_vms: Vec<String>,
    /// Simulated or real milliseconds since the failover first started, per completed step.
    pub step_ms: Vec<(Step, u64)>,
}

impl Progress {
    /// The step to run next.
    pub fn next(&self) -> Option<Step> {
        match self.done {
            None => Some(Step::Preflight),
            Some(s) => s.next(),
        }
    }

    /// Every step is done.
    pub fn complete(&self) -> bool {
        self.next().is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_run_in_order_and_resume_after_the_last_done() {
        assert_eq!(Progress::default().next(), Some(Step::Preflight));
        let p = Progress { done: Some(Step::PinnedCheck), ..Progress::default() };
        assert_eq!(p.next(), Some(Step::PauseClusters));
        let p = Progress { done: Some(Step::UnpauseClusters), ..Progress::default() };
        assert_eq!(p.next(), None);
        assert_eq!(Step::ClearGate.name(), "clear-gate");
        let mut sorted = Step::ALL;
        sorted.sort();
        assert_eq!(sorted, Step::ALL, "declaration order is run order");
    }
}
