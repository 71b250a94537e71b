//! Library scenarios on real etcd (`drlab run --backend etcd`): the primary on etcd 3.4, the
//! standby on etcd 3.5, the world's models and the real sync between them in real time. Each
//! scenario's verdicts must match the simulator's for the same seed, invariant by invariant
//! (held, violated, not applicable); a mutant the simulator catches in missed-keys is caught on
//! real etcd too (a mutant's run is compared on its teeth: what else it breaks depends on
//! timing). The runs take real time (60–150 s each), so they run side by side.

use std::path::Path;

use harness::invariants::Status;
use harness::report::RunReport;
use harness::scenario::{self, Backend, Scenario, Variant};

fn load(name: &str) -> Scenario {
    let path = format!("{}/scenarios/{name}.yaml", env!("CARGO_MANIFEST_DIR"));
    scenario::load(Path::new(&path)).unwrap_or_else(|e| panic!("{e}"))
}

fn run(backend: Backend, name: &str, variant: Variant) -> RunReport {
    let s = load(name);
    let dir = tempfile::tempdir().expect("tempdir");
    let command = format!("drlab run scenarios/{name}.yaml --backend {backend:?}");
    let r = harness::runner::execute_on(backend, &s, s.seeds[0], variant, dir.path(), &command)
        .unwrap_or_else(|e| panic!("{name} on {backend:?}: {e}"));
    // Where no fault touches a link or a process, no connection may break: etcd closes one
    // that pings against its policy (`too_many_pings`), which every model and the sync then
    // saw as a broken pipe every few seconds of a quiet run.
    let faults = harness::timeline::resolve(&s).iter().any(|e| !e.act.hosts().is_empty());
    if backend == Backend::Etcd && !faults {
        let trace = std::fs::read_to_string(&r.trace).expect("the run's trace");
        let cut: Vec<&str> = trace.lines().filter(|l| l.contains("broken pipe")).take(3).collect();
        assert!(cut.is_empty(), "{name}: connections broke in a run without faults:\n{}", cut.join("\n"));
    }
    r
}

/// Each invariant's verdict as a word (the reasons differ: times, revisions, counts).
fn verdicts(r: &RunReport) -> Vec<(String, &'static str)> {
    r.verdicts
        .iter()
        .map(|j| {
            let word = match j.verdict.status {
                Status::Held => "held",
                Status::Violated => "violated",
                Status::NotApplicable(_) => "n/a",
            };
            (j.verdict.invariant.name().to_string(), word)
        })
        .collect()
}

#[test]
fn library_scenarios_reach_the_simulators_verdicts_on_real_etcd() {
    let cases: [(&str, Variant); 7] = [
        ("partition", Variant::Real),
        ("missed-keys", Variant::Real),
        ("uninstall-before-consistent", Variant::Real),
        ("compaction-while-partitioned", Variant::Real),
        ("sync-killed", Variant::Real),
        ("gate-cleared-by-hand", Variant::Real),
        #[cfg(feature = "mutants")]
        ("missed-keys", Variant::OwnerOrderOff),
        #[cfg(not(feature = "mutants"))]
        ("missed-keys", Variant::Real),
    ];
    // Real time dominates and the runs barely use a core: all at once.
    let real: Vec<RunReport> = std::thread::scope(|scope| {
        let runs: Vec<_> = cases.iter().map(|(name, v)| scope.spawn(move || run(Backend::Etcd, name, *v))).collect();
        runs.into_iter().map(|h| h.join().expect("a real run panicked")).collect()
    });
    for ((name, variant), r) in cases.iter().zip(&real) {
        let sim = run(Backend::Sim, name, *variant);
        let on_etcd = r.summary();
        assert!(sim.pass, "{name} ({}) on the simulator:\n{}", variant.name(), sim.summary());
        assert!(r.pass, "{name} ({}) on real etcd:\n{on_etcd}", variant.name());
        // A mutant's run is judged on its teeth only: what else it breaks depends on timing.
        let judged = |r: &RunReport| -> Vec<(String, &'static str)> {
            let teeth: Vec<String> =
                load(name).teeth.get(variant).map(|t| t.iter().map(|i| i.name()).collect()).unwrap_or_default();
            verdicts(r).into_iter().filter(|(i, _)| *variant == Variant::Real || teeth.contains(i)).collect()
        };
        assert_eq!(judged(r), judged(&sim), "{name}: real etcd\n{on_etcd}\nsimulator\n{}", sim.summary());
        let outcome = |r: &RunReport| r.failover.as_ref().map(|f| f.outcome.clone());
        assert_eq!(outcome(r), outcome(&sim), "{name}: the failover's end");
        assert!(on_etcd.contains("on real etcd 3.4 → 3.5"), "{on_etcd}");
    }
    #[cfg(feature = "mutants")]
    assert_eq!(
        verdicts(&real[6]).iter().find(|(i, _)| i == "no-dependent-before-owner").map(|(_, w)| *w),
        Some("violated"),
        "owner-order-off lands Machines before their MachineSets on real etcd too"
    );
}
