//! Why a session ends: transient (retried after a backoff) or final.

use crate::conn::ConnError;
use crate::plan::PlanError;
use crate::scan::ScanError;
use crate::target::TargetError;

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
