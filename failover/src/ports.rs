//! What the orchestrator needs from the world. The simulator's adapters live in `harness`; the
//! real ones in [`crate::real`]. Both answer the sync's state (heads, checkpoint, gate, pinned
//! checks) with the sync's own control code, [`sync::control::Control`]: [`from_control`].

use serde::{Deserialize, Serialize};
use sync::check::Report;

use crate::step::Progress;

#[derive(Debug, thiserror::Error)]
#[error("{port}: {message}")]
pub struct PortError {
    /// Which port failed (e.g. "sync", "dns", "standby").
    pub port: &'static str,
    pub message: String,
}

impl PortError {
    pub fn new(port: &'static str, e: impl std::fmt::Display) -> Self {
        PortError { port, message: e.to_string() }
    }
}

/// One answer of `/kubernetes/global/version` on a VIP.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Probe {
    pub status: u16,
    /// Which cluster answered (the simulator's ingress says; a real one may not).
    pub served_by: Option<String>,
}

/// A post-failover finding: what is wrong and where.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Finding {
    pub what: String,
    pub where_: String,
    /// The workload Cluster (`namespace/name`) it is about, which stays paused; None: the
    /// platform as a whole, which keeps every Cluster paused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
}

#[allow(async_fn_in_trait)] // implemented by the harness and the real adapters, used generically
pub trait Ports {
    /// The primary's head revision, read linearizably.
    async fn source_head(&self) -> Result<i64, PortError>;
    /// The standby's head revision, read linearizably.
    async fn target_head(&self) -> Result<i64, PortError>;
    /// The last source revision the sync has applied.
    async fn sync_checkpoint(&self) -> Result<i64, PortError>;
    /// The primary's last revision the sync has seen (on its watch), asked of the sync, not the
    /// primary: an unplanned failover's "last primary revision known". None: no sync process
    /// answers (it was lost with the primary), so only its checkpoint is known.
    async fn sync_source_seen(&self) -> Result<Option<i64>, PortError>;
    /// Whether the sync is running and may write (its gate says syncing).
    async fn sync_running(&self) -> Result<bool, PortError>;
    /// Whether the sync's gate on the standby says uninstalled.
    async fn sync_uninstalled(&self) -> Result<bool, PortError>;
    async fn freeze_sync(&self, at: i64) -> Result<(), PortError>;
    /// The sync applies again after a freeze (an abort).
    async fn resume_sync(&self) -> Result<(), PortError>;
    async fn pinned_check(&self, source_rev: i64, target_rev: i64) -> Result<Report, PortError>;
    /// The check of the standby alone at `target_rev` (the primary is lost).
    async fn target_check(&self, target_rev: i64) -> Result<Report, PortError>;
    /// Uninstalls the sync deciding on `report` (the guard already passed or was forced).
    async fn uninstall_sync(&self, report: &Report, forced_by: Option<&str>) -> Result<(), PortError>;
    async fn clear_gate(&self, who: &str) -> Result<(), PortError>;
    /// Pauses every workload CAPI Cluster on the primary that is not paused; returns their names.
    async fn pause_primary(&self) -> Result<Vec<String>, PortError>;
    /// The primary's workload CAPI Clusters not paused, as read back (the quiesce's postcondition).
    async fn primary_unpaused(&self) -> Result<Vec<String>, PortError>;
    /// Refuses writes on the primary at the owning resource layer, or cuts its write path / VIP
    /// through the fence hook when the primary is lost; the fence outlasts the primary's restart.
    async fn fence_primary(&self) -> Result<(), PortError>;
    /// The primary takes writes again (an abort).
    async fn unfence_primary(&self) -> Result<(), PortError>;
    /// Unpauses the named workload CAPI Clusters on the primary (an abort); returns those touched.
    async fn unpause_primary(&self, clusters: &[String]) -> Result<Vec<String>, PortError>;
    async fn primary_fenced(&self) -> Result<bool, PortError>;
    /// Whether the standby refuses writes (a failback's: the old primary, fenced by the
    /// failover that made the primary serve).
    async fn standby_fenced(&self) -> Result<bool, PortError>;
    /// The standby takes writes again (a failback, once its sync is uninstalled).
    async fn unfence_standby(&self) -> Result<(), PortError>;
    /// The progress of the failover that made the primary serve, kept on the primary (None: the
    /// primary never was a failover's standby).
    async fn served_since(&self) -> Result<Option<Progress>, PortError>;
    /// Installs the sync primary → standby (a failback's reverse sync), with the standby's
    /// `baseline_revision` when its copy is proven (see `sync::engine::Settings`); idempotent.
    async fn install_sync(&self, baseline_revision: Option<i64>) -> Result<(), PortError>;
    async fn remove_replication_path(&self) -> Result<(), PortError>;
    /// Where the platform domain points now (the authoritative answer).
    async fn dns_target(&self) -> Result<String, PortError>;
    /// The platform domain whose record [`Ports::switch_dns`] points at a VIP.
    async fn platform_domain(&self) -> Result<String, PortError>;
    async fn switch_dns(&self, to: &str) -> Result<(), PortError>;
    async fn probe(&self, vip: &str) -> Result<Probe, PortError>;
    /// Pauses (or unpauses) workload CAPI Clusters on the standby; returns the names touched.
    async fn set_paused(&self, clusters: Option<&[String]>, paused: bool) -> Result<Vec<String>, PortError>;
    /// Post-failover validation on the standby.
    async fn validate(&self) -> Result<Vec<Finding>, PortError>;
    /// VMs of workload clusters that no infrastructure machine on the standby names (e.g. made
    /// by a lost primary after R): reported for the operator, never deleted by the failover.
    async fn orphan_vms(&self) -> Result<Vec<String>, PortError>;
    /// What preflight needs of one side (`side` is [`crate::Options`]'s primary or standby).
    async fn inventory(&self, side: &str) -> Result<crate::preflight::Inventory, PortError>;
    /// Takes the orchestrator lock on the standby for `holder`, held by a lease the port keeps
    /// alive until [`Ports::unlock`] (a crashed holder's lock lapses after the lease's TTL).
    /// `Ok(Some(other))`: someone else holds it.
    async fn try_lock(&self, holder: &str) -> Result<Option<String>, PortError>;
    async fn unlock(&self) -> Result<(), PortError>;
    /// Milliseconds on a clock that outlives the orchestrator's process (the simulator's time, or
    /// the wall clock): the RTO of a failover resumed after a crash counts from its first start.
    async fn now_ms(&self) -> Result<u64, PortError>;
    async fn load_progress(&self) -> Result<Option<Progress>, PortError>;
    async fn save_progress(&self, p: &Progress) -> Result<(), PortError>;
    /// Appends an audit record (step, outcome) on the standby.
    async fn audit(&self, record: &serde_json::Value) -> Result<(), PortError>;
}

/// The answers every adapter gives from the sync's control operations on both etcds.
pub mod from_control {
    use sync::control::Control;
    use sync::target::GateState;

    use super::PortError;

    fn sync_port(e: impl std::fmt::Display) -> PortError {
        PortError::new("sync", e)
    }

    pub async fn source_head(c: &Control) -> Result<i64, PortError> {
        c.source_head().await.map_err(|e| PortError::new("primary", e))
    }

    pub async fn target_head(c: &Control) -> Result<i64, PortError> {
        c.target_head().await.map_err(|e| PortError::new("standby", e))
    }

    /// The last source revision the sync applied (0: none yet).
    pub async fn checkpoint(c: &Control) -> Result<i64, PortError> {
        Ok(c.checkpoint().await.map_err(sync_port)?.map(|c| c.revision).unwrap_or(0))
    }

    /// Whether the standby's sync gate is in `state` (false when there is no gate).
    pub async fn gate_is(c: &Control, state: GateState) -> Result<bool, PortError> {
        Ok(c.gate().await.map_err(sync_port)?.is_some_and(|g| g.state == state))
    }

    pub async fn clear_gate(c: &Control, who: &str) -> Result<(), PortError> {
        c.set_gate(GateState::Cleared, who).await.map(|_| ()).map_err(sync_port)
    }
}
