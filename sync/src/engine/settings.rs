//! What the engine is told: rules, limits, keyrings, test knobs.

use std::time::Duration;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::batch::Limits;
use crate::plan::Planner;
use crate::rules::Rules;
use crate::target::{self};

#[derive(Debug, Clone)]
pub struct Settings {
    pub rules: Rules,
    pub limits: Limits,
    pub page_keys: i64,
    pub held_max: usize,
    /// Resync txns in flight at once (streaming stays strictly in order). 8: `drlab bench sync`
    /// copied 100k keys about 10 % faster than with 4 (the target idled between txns); 16 gained
    /// nothing more.
    pub txns_in_flight_max: usize,
    /// Install over a cleared or uninstalled gate (a new epoch).
    pub reinstall: bool,
    pub backoff_min: Duration,
    pub backoff_max: Duration,
    /// Consecutive failed sessions before the engine gives up.
    pub sessions_failed_max: u32,
    /// Seeds the backoff jitter and re-encryption IVs (the daemon draws it from the OS, the
    /// simulator passes its world seed).
    pub seed: u64,
    /// Both sides' encryption keys, when given.
    pub boundary: crate::crypto::Boundary,
    /// A target revision at which the target held an exact copy of the source in scope (a
    /// failback's: the old primary at the R its failover's check proved the other side equal
    /// to). A target-only key last written at or below it is a copy the source has deleted since,
    /// deleted like the sync's own; one written after it is surplus, reported, never deleted.
    pub baseline_revision: Option<i64>,
    /// Test-only: write the checkpoint in its own txn, before the data.
    #[cfg(feature = "mutants")]
    pub checkpoint_outside_txn: bool,
    /// Test-only: never hold dependents back.
    #[cfg(feature = "mutants")]
    pub owner_order_off: bool,
    /// Test-only: prove authorship from the target's history only (as before the ledger).
    #[cfg(feature = "mutants")]
    pub ledger_off: bool,
    /// Test-only: no baseline revision proves a target-only key a copy.
    #[cfg(feature = "mutants")]
    pub baseline_off: bool,
    /// Test-only: resume from the checkpoint whenever the source's cluster ID matches, even when
    /// the source's head is below it (a source restored from a snapshot).
    #[cfg(feature = "mutants")]
    pub restore_blind: bool,
    /// Test-only: write without comparing the gate (a sync that outlived its uninstall then
    /// writes onto the new primary).
    #[cfg(feature = "mutants")]
    pub gate_compare_off: bool,
}

impl Settings {
    pub fn new(rules: Rules) -> Self {
        Settings {
            rules,
            limits: Limits::default(),
            page_keys: 1000,
            held_max: 100_000,
            txns_in_flight_max: 8,
            reinstall: false,
            backoff_min: Duration::from_millis(100),
            backoff_max: Duration::from_secs(10),
            sessions_failed_max: 100_000,
            seed: 0,
            boundary: crate::crypto::Boundary::default(),
            baseline_revision: None,
            #[cfg(feature = "mutants")]
            checkpoint_outside_txn: false,
            #[cfg(feature = "mutants")]
            owner_order_off: false,
            #[cfg(feature = "mutants")]
            ledger_off: false,
            #[cfg(feature = "mutants")]
            baseline_off: false,
            #[cfg(feature = "mutants")]
            restore_blind: false,
            #[cfg(feature = "mutants")]
            gate_compare_off: false,
        }
    }

    /// A fresh planner with this run's rules, keys and (mutant) switches.
    pub fn planner(&self, generation: u64) -> Planner {
        let rng = ChaCha8Rng::seed_from_u64(self.seed.wrapping_add(generation.wrapping_mul(0x9E37_79B9_7F4A_7C15)));
        #[allow(unused_mut)]
        let mut p = Planner::new(self.rules.clone(), self.held_max, self.boundary.clone(), Box::new(rng));
        #[cfg(feature = "mutants")]
        {
            p.owner_order_off = self.owner_order_off;
        }
        p
    }

    pub(super) fn ledger_on(&self) -> bool {
        #[cfg(feature = "mutants")]
        if self.ledger_off {
            return false;
        }
        true
    }

    pub(super) fn write_mode(&self) -> target::WriteMode {
        #[allow(unused_mut)]
        let mut m = target::WriteMode::default();
        #[cfg(feature = "mutants")]
        {
            m.split_checkpoint = self.checkpoint_outside_txn;
            m.unguarded = self.gate_compare_off;
        }
        m
    }
}
