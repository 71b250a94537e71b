//! Limits and knobs of one simulated etcd member, with etcd's defaults.

use tokio::time::Duration;

/// Deliberate bugs the conformance suite must catch. The list always exists (so call sites stay
/// free of `cfg`s), but only a build with the `mutants` feature can select one: without it
/// `Config::is` is constantly false and every mutant branch is dead code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Mutant {
    /// A transaction that changed nothing still bumps the revision.
    RevisionBumpOnEmptyTxn,
    /// A new watch never delivers its first event.
    WatchSkipsFirstEvent,
    /// A watch from a compacted revision is served from what is left instead of being cancelled.
    CompactionNoCancel,
    /// Range ignores `limit`.
    LimitIgnored,
    /// Range never sets `more`.
    MoreNeverSet,
    /// Overwriting a key keeps its version.
    VersionNotIncremented,
    /// Put never returns `prev_kv`.
    PutPrevKvMissing,
    /// Range counts only the keys it returns.
    CountIgnoresLimit,
    /// Reads at a future revision are served instead of refused.
    FutureRevAllowed,
    /// Revoking a lease forgets it but keeps its keys.
    LeaseRevokeKeepsKeys,
    /// A value compare against a missing key succeeds.
    CompareMissingValueTrue,
    /// The max-txn-ops limit is not enforced.
    TooManyOpsUnchecked,
    /// Delete events never carry `prev_kv`.
    WatchDeletePrevKvMissing,
    /// Descending sort returns ascending order.
    DescendSortIgnored,
}

impl Mutant {
    pub const ALL: [Mutant; 14] = [
        Mutant::RevisionBumpOnEmptyTxn,
        Mutant::WatchSkipsFirstEvent,
        Mutant::CompactionNoCancel,
        Mutant::LimitIgnored,
        Mutant::MoreNeverSet,
        Mutant::VersionNotIncremented,
        Mutant::PutPrevKvMissing,
        Mutant::CountIgnoresLimit,
        Mutant::FutureRevAllowed,
        Mutant::LeaseRevokeKeepsKeys,
        Mutant::CompareMissingValueTrue,
        Mutant::TooManyOpsUnchecked,
        Mutant::WatchDeletePrevKvMissing,
        Mutant::DescendSortIgnored,
    ];
}

#[derive(Debug, Clone)]
pub struct Config {
    /// Seeds lease ids and anything else the member would take from the OS.
    pub seed: u64,
    /// `--max-txn-ops` (etcd default 128).
    pub txn_ops_max: usize,
    /// `--max-request-bytes` (etcd default 1.5 MiB).
    pub request_bytes_max: usize,
    /// Smallest lease TTL: etcd derives it from the election timeout (1 s with the fast flags the
    /// launcher uses, 2 s with etcd's defaults).
    pub lease_ttl_min_s: i64,
    /// `--experimental-watch-progress-notify-interval` (etcd default 10 min).
    pub progress_notify_interval: Duration,
    /// How often expired leases are revoked (etcd checks every 500 ms).
    pub lease_check_interval: Duration,
    /// Watch events per response when a watcher catches up (bounds message size).
    pub watch_catchup_events_max: usize,
    /// Reported by Status.
    pub version: String,
    #[cfg(feature = "mutants")]
    pub mutant: Option<Mutant>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            seed: 0,
            txn_ops_max: 128,
            request_bytes_max: 1536 * 1024,
            lease_ttl_min_s: 1,
            progress_notify_interval: Duration::from_secs(600),
            lease_check_interval: Duration::from_millis(500),
            watch_catchup_events_max: 1000,
            version: "3.5.1".to_string(),
            #[cfg(feature = "mutants")]
            mutant: None,
        }
    }
}

impl Config {
    #[inline]
    pub fn is(&self, m: Mutant) -> bool {
        #[cfg(feature = "mutants")]
        {
            self.mutant == Some(m)
        }
        #[cfg(not(feature = "mutants"))]
        {
            let _ = m;
            false
        }
    }
}
