//! The scenario library (`scenarios/*.yaml`) against the real code and against its mutants: every
//! scenario passes with the real code on every seed it lists, and every hazard scenario fails
//! on the invariant its teeth name when run with that mutant — a scenario whose mutant passes is
//! a failing test.

use std::path::{Path, PathBuf};

use harness::invariants::Status;
use harness::scenario::{self, Invariant, Scenario, Variant};

fn library() -> Vec<(PathBuf, Scenario)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("scenarios/")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files.into_iter().map(|p| (p.clone(), scenario::load(&p).unwrap_or_else(|e| panic!("{e}")))).collect()
}

fn run(s: &Scenario, seed: u64, v: Variant) -> harness::report::RunReport {
    let dir = tempfile::tempdir().expect("tempdir");
    harness::runner::execute(s, seed, v, dir.path(), &format!("drlab run scenarios/{}.yaml", s.name))
        .unwrap_or_else(|e| panic!("{}: {e} (reproduce with seed={seed})", s.name))
}

#[test]
fn the_library_names_what_each_scenario_proves_and_covers_every_mutant() {
    let lib = library();
    assert!(lib.len() >= 16, "at least 16 scenarios, found {}", lib.len());
    for name in ["partition", "sync-lag", "missed-keys", "uninstall-before-consistent"] {
        assert!(lib.iter().any(|(_, s)| s.name == name), "scenarios/{name}.yaml");
    }
    for (path, s) in &lib {
        assert_eq!(path.file_stem().and_then(|f| f.to_str()), Some(s.name.as_str()), "file named after the scenario");
        assert!(s.proves.split_whitespace().count() >= 30, "{}: a paragraph on what it proves", s.name);
    }
    for m in Variant::MUTANTS {
        assert!(lib.iter().any(|(_, s)| s.teeth.contains_key(&m)), "no scenario has teeth for {}", m.name());
    }
    // Every checked invariant is shown to fail somewhere: by a mutant, or by a hazard the real
    // code cannot prevent (rto by tests/cli_run.rs).
    for i in Invariant::CHECKED.iter().filter(|i| **i != Invariant::Rto) {
        let shown = lib.iter().any(|(_, s)| s.expect.fail.contains(i) || s.teeth.values().any(|t| t.contains(i)));
        assert!(shown, "no scenario shows {} failing", i.name());
    }
}

#[test]
fn every_scenario_passes_with_the_real_code_on_every_seed() {
    for (_, s) in library() {
        for &seed in &s.seeds {
            let r = run(&s, seed, Variant::Real);
            assert!(r.pass, "{}", r.summary());
        }
    }
}

#[cfg(feature = "mutants")]
#[test]
fn every_hazard_scenario_fails_under_its_mutant_on_the_invariants_it_names() {
    for (_, s) in library() {
        for (&variant, invariants) in &s.teeth {
            for &seed in &s.seeds {
                let r = run(&s, seed, variant);
                for i in invariants {
                    assert_eq!(
                        r.status(*i),
                        &Status::Violated,
                        "{} under {} must violate {}:\n{}",
                        s.name,
                        variant.name(),
                        i.name(),
                        r.summary()
                    );
                }
                assert!(r.pass, "{}", r.summary());
            }
        }
    }
}

#[test]
fn a_run_is_deterministic_and_its_violations_carry_cause_chains() {
    let lib = library();
    let (_, s) = lib.iter().find(|(_, s)| s.name == "uninstall-before-consistent").expect("in the library");
    let (a, b) = (run(s, 1, Variant::Real), run(s, 1, Variant::Real));
    assert_eq!(a.trace_hash, b.trace_hash, "same seed, same trace");
    assert_ne!(run(s, 2, Variant::Real).trace_hash, a.trace_hash, "another seed, another trace");
    // The standby's GC marked wc-00's Machines: the chain names the lost key and the failed lookup.
    let j = a.verdicts.iter().find(|j| j.verdict.invariant == Invariant::NoMachineDeleted).expect("judged");
    let text = j.verdict.details.join("\n");
    assert!(text.contains("fault.lose-key /registry/cluster.x-k8s.io/clusters/cpaas-system/wc-00"), "{text}");
    assert!(text.contains("absent-owner"), "{text}");
    assert!(!text.contains("\"secret\""), "no secret material in a report");
}

#[test]
fn how_a_failover_and_an_abort_end_is_judged() {
    let lib = library();
    let (_, s) = lib.iter().find(|(_, s)| s.name == "abort-too-late").expect("in the library");
    let mut wrong = s.clone();
    wrong.expect.abort = scenario::AbortEnd::Done;
    let r = run(&wrong, 1, Variant::Real);
    assert!(!r.pass, "{}", r.summary());
    assert!(r.summary().contains("abort: refused (expected done)"), "{}", r.summary());
    let mut wrong = s.clone();
    wrong.expect.failover = scenario::FailoverEnd::TimedOut;
    let r = run(&wrong, 1, Variant::Real);
    assert!(!r.pass && r.summary().contains("failover: done (expected timed-out)"), "{}", r.summary());
}

#[test]
fn a_mutant_run_says_whether_the_scenario_has_teeth_for_it() {
    let lib = library();
    let (_, s) = lib.iter().find(|(_, s)| s.name == "abort-too-late").expect("in the library");
    let caught = run(s, 1, Variant::FencingOff);
    assert!(caught.pass && caught.mutant_has_teeth, "{}", caught.summary());
    assert!(caught.summary().contains("the mutant was caught where the scenario says"), "{}", caught.summary());
    let (_, s) = lib.iter().find(|(_, s)| s.name == "partition-oneway").expect("in the library");
    let untoothed = run(s, 1, Variant::OwnerOrderOff);
    assert!(!untoothed.mutant_has_teeth, "{}", untoothed.summary());
    assert!(untoothed.summary().contains("no teeth for this mutant here"), "{}", untoothed.summary());
}

/// The failback ends like a failover (a wrong `expect.failback` fails the run), and without the
/// failover's fence on the old primary (`fencing-off`) it refuses before the reverse sync writes.
#[cfg(feature = "mutants")]
#[test]
fn a_failback_is_judged_and_refuses_an_unfenced_old_primary() {
    let lib = library();
    let (_, s) = lib.iter().find(|(_, s)| s.name == "failback").expect("in the library");
    let mut wrong = s.clone();
    wrong.expect.failback = scenario::FailoverEnd::Refused;
    let r = run(&wrong, 1, Variant::Real);
    assert!(!r.pass && r.summary().contains("failback: done (expected refused)"), "{}", r.summary());
    let unfenced = run(s, 1, Variant::FencingOff);
    let text = unfenced.summary();
    assert!(text.contains("fence it before the reverse sync copies onto it (split brain)"), "{text}");
}

/// Seed 000's shared token: without `force` the failover's preflight refuses a standby with
/// another ServiceAccount key before fencing anything (the agent keeps working on the primary);
/// an issuer or an audience the standby does not accept breaks the token the same way.
#[test]
fn the_agent_token_hazard_is_refused_by_preflight_and_shown_for_issuer_and_audience() {
    let lib = library();
    let (_, s) = lib.iter().find(|(_, s)| s.name == "agent-token-after-failover").expect("in the library");
    // The token (a JWT: its header encodes to `eyJ…`) reaches neither the trace nor the report.
    let dir = tempfile::tempdir().expect("tempdir");
    let r = harness::runner::execute(s, 1, Variant::Real, dir.path(), "test").expect("runs");
    assert!(r.pass && r.summary().contains("the agent token is refused (401)"), "{}", r.summary());
    for f in std::fs::read_dir(dir.path()).expect("run dir") {
        let text = std::fs::read_to_string(f.expect("entry").path()).expect("text");
        assert!(!text.contains("eyJ"), "no token material in the run directory");
    }
    let mut unforced = s.clone();
    for e in &mut unforced.timeline {
        if let Some(f) = e.value.failover.as_mut() {
            f.force = None;
        }
    }
    unforced.expect.failover = scenario::FailoverEnd::Refused;
    unforced.expect.fail.clear();
    let r = run(&unforced, 1, Variant::Real);
    assert!(r.pass, "{}", r.summary());
    assert!(r.summary().contains("ServiceAccount signing keys differ"), "{}", r.summary());
    assert!(matches!(r.status(Invariant::AgentTokenWorksAfterFailover), Status::NotApplicable(_)), "{}", r.summary());
    for (auth, why) in [
        (scenario::AgentAuth::DifferentIssuer, "is not this cluster's service-account-issuer"),
        (scenario::AgentAuth::DifferentAudience, "no audience of the token"),
    ] {
        let mut other = s.clone();
        other.topology.agent_auth = auth;
        let r = run(&other, 1, Variant::Real);
        assert!(r.pass, "{}", r.summary());
        let j = r.verdicts.iter().find(|j| j.verdict.invariant == Invariant::AgentTokenWorksAfterFailover).unwrap();
        assert!(j.verdict.details.join("\n").contains(why), "{auth:?}: {}", r.summary());
    }
}

/// The library's restore happens while the sync is down and is caught by the checkpoint's
/// anchor; one the sync sees happen (its head below the checkpoint) is caught by that alone —
/// `restore-blind` misses both. A restore done as etcd's docs ask (`etcdutl snapshot restore
/// --bump-revision N --mark-compacted`) leaves the head above the checkpoint but compacted: even
/// `restore-blind` meets the compaction and resyncs.
#[cfg(feature = "mutants")]
#[test]
fn a_restore_seen_by_the_sync_or_bumped_and_compacted_is_resynced() {
    let lib = library();
    let (_, s) = lib.iter().find(|(_, s)| s.name == "source-restored-from-snapshot").expect("in the library");
    let mut seen = s.clone();
    seen.timeline.retain(|e| e.value.crash.is_none() && e.value.restart.is_none());
    let mut bumped = s.clone();
    for e in &mut bumped.timeline {
        if let Some(r) = e.value.snapshot_restore.as_mut() {
            r.bump_revision = 1_000;
        }
    }
    for (world, v, held) in [
        (&seen, Variant::Real, true),
        (&seen, Variant::RestoreBlind, false),
        (&bumped, Variant::Real, true),
        (&bumped, Variant::RestoreBlind, true),
    ] {
        let r = run(world, 1, v);
        let want = if held { Status::Held } else { Status::Violated };
        assert_eq!(r.status(Invariant::ConvergedAfterHeal), &want, "{}", r.summary());
    }
}

/// The collector's absent-owner cache outlives the owner's absence: under `owner-order-off` the
/// Machines deleted after their owner landed are reported as deleted through a poisoned cache,
/// with the time the owner arrived.
#[cfg(feature = "mutants")]
#[test]
fn a_poisoned_absent_owner_cache_is_named_in_the_deletions_it_causes() {
    let lib = library();
    let (_, s) = lib.iter().find(|(_, s)| s.name == "gc-cache-poisoned").expect("in the library");
    let r = run(s, 1, Variant::OwnerOrderOff);
    let j = r.verdicts.iter().find(|j| j.verdict.invariant == Invariant::NoMachineDeleted).expect("judged");
    let text = j.verdict.details.join("\n");
    assert!(text.contains("the absent-owner cache was poisoned: MachineSet wc-new-md-"), "{text}");
    assert!(text.contains("has been on standby since t="), "{text}");
}

/// An operator's gate by hand: a clear stops the sync (its next write is refused by the gate
/// compare; a restarted sync finds the gate cleared and stops for good), and a `set_gate` back
/// to syncing, same epoch, lets a restarted sync resume, so the standby converges again. Without
/// the `set_gate` the same run ends with the standby behind (converged-after-heal fails).
#[test]
fn a_gate_cleared_by_hand_and_set_back_lets_a_restarted_sync_converge() {
    let lib = library();
    let (_, base) = lib.iter().find(|(_, s)| s.name == "gate-cleared-by-hand").expect("in the library");
    let yaml = |set_back: bool| {
        format!(
            "name: gate-set-back\nproves: p\nduration_s: 90\nseeds: [1]\n\
             traffic:\n  writes_per_s: 2.0\n  gc_lag_ms_max: 200\n  compaction_interval_s: 300\n\
             timeline:\n  - at_s: 20\n    clear_gate: standby\n{}  - at_s: 30\n    crash: sync\n  - at_s: 31\n    restart: sync\n",
            if set_back { "  - at_s: 25\n    set_gate: standby\n" } else { "" }
        )
    };
    let converged = |set_back: bool| {
        let mut s = scenario::parse("gate-set-back.yaml", &yaml(set_back)).unwrap_or_else(|e| panic!("{e}"));
        s.topology = base.topology.clone();
        let r = run(&s, 1, Variant::Real);
        let j = r.verdicts.iter().find(|j| j.verdict.invariant == Invariant::ConvergedAfterHeal).expect("judged");
        (matches!(j.verdict.status, Status::Held), r.summary())
    };
    let (held, text) = converged(true);
    assert!(held, "set back, the restarted sync converges:\n{text}");
    let (held, text) = converged(false);
    assert!(!held, "left cleared, the restarted sync stops and the standby stays behind:\n{text}");
}
