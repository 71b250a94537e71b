//! The real failover orchestrator in the simulated world: a planned failover of a consistent
//! standby succeeds with RPO = 0 and no Machine or VM lost; on an inconsistent standby the guard
//! refuses before the gate is cleared, and without the guard (`uninstall-guard-off`) the same
//! world loses VMs. An abort gives a refused failover's primary back; after the gate is cleared
//! it is refused. A crashed failover or failback orchestrator resumes and finishes.

use std::time::Duration;

use failover::Options;
use failover::step::Step;
use harness::drill::{platform_config, sync_settings};
use harness::failover_sim::{Job, PlatformView, Runs, add_orchestrator};
use harness::simsync::SyncHost;
use sim::k8s::kind;
use sim::platform::{Action, PRIMARY, Platform, STANDBY};
use sim::topology::{NS, Topology};
use sim::world::Step as At;
use sync::target::{Gate, GateState};

const START_S: u64 = 30;

struct Run {
    p: Platform,
    runs: Runs,
    /// The operator's `--abort`, when the world had one.
    aborts: Runs,
}

/// A world with the sync and an orchestrator starting at `START_S`; `lose_owner` deletes the
/// workload Cluster `wc-00` on the standby behind the sync's back at 20 s (a missed key: the
/// standby's GC then marks its whole tree for deletion). No heartbeat traffic, so no copy of a
/// primary Machine wipes the GC's deletionTimestamps before the failover.
fn failover_world(seed: u64, options: Options, lose_owner: bool) -> Run {
    failover_world_with(seed, options, lose_owner, 0.0)
}

fn failover_world_with(seed: u64, options: Options, lose_owner: bool, writes_per_s: f64) -> Run {
    failover_world_then(seed, options, lose_owner, writes_per_s, None)
}

/// As above, and an operator's abort at a time (in seconds), with its options, when given.
fn failover_world_then(
    seed: u64,
    options: Options,
    lose_owner: bool,
    writes_per_s: f64,
    abort: Option<(u64, Options)>,
) -> Run {
    let mut cfg = platform_config(seed, 150, Topology::vm(2, 3));
    cfg.dns_ttl_s = 10;
    cfg.writes_per_s = writes_per_s;
    let settings = sync_settings(&cfg);
    let (p, mut sim) = Platform::build(cfg).expect("world builds");
    let handle = SyncHost::new(PRIMARY, STANDBY, settings.clone()).add(&mut sim, p.links.clone());
    let runs = add_orchestrator(
        &mut sim,
        Job::Failover,
        PlatformView::of(&p),
        settings.clone(),
        handle.clone(),
        options,
        Duration::from_secs(START_S),
    );
    let aborts = match abort {
        Some((t, o)) => {
            add_orchestrator(&mut sim, Job::Abort, PlatformView::of(&p), settings, handle, o, Duration::from_secs(t))
        }
        None => Runs::default(),
    };
    let lost = kind::CLUSTER.key(NS, "wc-00").into_bytes();
    let standby = p.standby.etcd.clone();
    let mut steps = Vec::new();
    if lose_owner {
        // wc-00 is paused on the primary beforehand, so the failover's own pause of the primary's
        // Clusters writes nothing for it and cannot repair the lost key by accident.
        steps.push(At::new(Duration::from_secs(10), |_| {
            p.act(Action::Pause { side: PRIMARY.into(), cluster: "wc-00".into(), paused: true })
        }));
        steps.push(At::new(Duration::from_secs(20), move |_| {
            standby.remove(std::slice::from_ref(&lost)).expect("the Cluster was copied by 20 s");
        }));
    }
    p.run(&mut sim, steps).expect("runs");
    drop(sim);
    Run { p, runs, aborts }
}

/// A world of `seed` (DNS TTL 10 s; `tweak` adjusts its config) with the sync and an
/// orchestrator running `options` from `start`: the platform, the simulation and the runs.
fn orchestrated<'a>(
    seed: u64,
    sim_secs: u64,
    topology: Topology,
    tweak: impl FnOnce(&mut sim::platform::PlatformConfig),
    options: Options,
    start: Duration,
) -> (Platform, turmoil::Sim<'a>, Runs) {
    let mut cfg = platform_config(seed, sim_secs, topology);
    cfg.dns_ttl_s = 10;
    tweak(&mut cfg);
    let settings = sync_settings(&cfg);
    let (p, mut sim) = Platform::build(cfg).expect("world builds");
    let handle = SyncHost::new(PRIMARY, STANDBY, settings.clone()).add(&mut sim, p.links.clone());
    let view = PlatformView::of(&p);
    let runs = add_orchestrator(&mut sim, Job::Failover, view, settings, handle, options, start);
    (p, sim, runs)
}

fn gate(p: &Platform) -> Gate {
    serde_json::from_slice(&p.standby.etcd.get(sync::target::gate_key().as_bytes()).expect("gate")).expect("gate json")
}

#[test]
fn a_planned_failover_of_a_consistent_standby_loses_nothing() {
    let r = failover_world(21, Options::new(PRIMARY, STANDBY), false);
    let runs = r.runs.lock().unwrap();
    let outcome = runs[0].as_ref().expect("the failover succeeds (seed=21)");
    assert_eq!(outcome.progress.done, Some(Step::UnpauseClusters));
    let report = outcome.report.as_ref().expect("the guards decided on a pinned check");
    assert!(report.is_clean(), "RPO = 0: nothing missed at the fenced head: {report:?}");
    assert_eq!(outcome.progress.forced_by, None);
    assert_eq!(gate(&r.p).state, GateState::Cleared);
    assert_eq!(r.p.dns.answer().0, STANDBY);
    assert!(r.p.primary.api.fenced(), "the old primary takes no writes");
    assert_eq!(r.p.iaas.deletions(), vec![], "no VM deleted");
    // RTO: the whole runbook within the DNS TTL plus a bound per step.
    let (_, rto_ms) = *outcome.progress.step_ms.last().expect("timed steps");
    assert!(rto_ms <= (10 + 13 * 5) * 1000, "RTO {rto_ms} ms");
    // The standby serves and reconciles: its workload clusters were unpaused after validation.
    let c =
        r.p.standby
            .api
            .decode(
                &kind::CLUSTER.key(NS, "wc-00"),
                &r.p.standby.etcd.get(kind::CLUSTER.key(NS, "wc-00").as_bytes()).unwrap(),
            )
            .unwrap();
    assert_eq!(c.field(&["spec", "paused"]), Some(&serde_json::json!(false)));
}

#[test]
fn the_guard_refuses_an_inconsistent_standby_and_no_vm_is_lost() {
    let r = failover_world(22, Options::new(PRIMARY, STANDBY), true);
    let runs = r.runs.lock().unwrap();
    let err = runs[0].as_ref().expect_err("the failover is refused (seed=22)");
    assert!(err.contains("refused") && err.contains("clusters/cpaas-system/wc-00\n"), "names the missed key: {err}");
    assert!(err.contains("remedy"), "and the remedy: {err}");
    assert_eq!(gate(&r.p).state, GateState::Syncing, "the gate was not cleared");
    assert_eq!(r.p.iaas.deletions(), vec![], "no VM deleted");
}

#[cfg(feature = "mutants")]
#[test]
fn without_the_guard_the_same_world_loses_vms() {
    let mut o = Options::new(PRIMARY, STANDBY);
    o.guard_off = true;
    let r = failover_world(22, o, true);
    let lost: Vec<String> = r.p.iaas.deletions().iter().map(|d| d.vm.id.clone()).collect();
    assert!(
        lost.iter().any(|v| v.starts_with("vm-wc-00-")),
        "uninstall-guard-off must lose the missed Cluster's VMs (seed=22): {lost:?}"
    );
}

#[test]
fn an_orchestrator_crashed_at_any_point_resumes_and_finishes() {
    // Crash points from just after the start to past the end, every 300 ms of simulated time;
    // the restarted orchestrator starts again `START_S` later and resumes from its progress.
    // The same world without a crash says when the failover ends: a crash after that resumes
    // nothing, and its RTO is the uncrashed one.
    let (reference, _, _) = crashed_at(149_000);
    let end_ms = START_S * 1000 + reference[0].as_ref().map(|o| o.progress.step_ms.last().unwrap().1).unwrap();
    let mut mid_failover = 0;
    for i in 0..30u64 {
        let crash_ms = START_S * 1000 + 50 + i * 300;
        let (runs, gate_state, deletions) = crashed_at(crash_ms);
        // One recorded run: the crash killed the first one before it finished.
        mid_failover += usize::from(runs.len() == 1);
        let last = runs.last().unwrap_or_else(|| panic!("crash at {crash_ms} ms: no run finished (seed=23)"));
        let outcome = last.as_ref().unwrap_or_else(|e| panic!("crash at {crash_ms} ms: {e} (seed=23)"));
        assert_eq!(outcome.progress.done, Some(Step::UnpauseClusters), "crash at {crash_ms} ms");
        assert_eq!(gate_state, GateState::Cleared, "crash at {crash_ms} ms");
        assert_eq!(deletions, vec![], "crash at {crash_ms} ms: no VM deleted");
        // Every step ran to completion exactly once in the persisted record.
        let steps: Vec<Step> = outcome.progress.step_ms.iter().map(|(s, _)| *s).collect();
        assert_eq!(steps, Step::ALL, "crash at {crash_ms} ms: each step once, in order");
        // The RTO counts from the first start, through the crash and the restart (the resumed
        // run started at crash + 1 s + START_S), not from the resume.
        let (_, rto_ms) = *outcome.progress.step_ms.last().expect("timed steps");
        // (From the second crash point on, 350 ms in, the first step — a few reads — is saved.)
        if runs.len() == 1 && i >= 1 && crash_ms < end_ms {
            assert!(rto_ms > crash_ms + 1000 - START_S * 1000, "crash at {crash_ms} ms: RTO {rto_ms} ms (seed=23)");
        }
    }
    assert!(mid_failover >= 10, "only {mid_failover} crash points fell inside the failover");
}

/// The failover world of seed 23 with the orchestrator crashed at `crash_ms` and restarted 1 s
/// later: its runs, the gate's state and the VM deletions at the end.
fn crashed_at(crash_ms: u64) -> (Vec<Result<failover::Outcome, String>>, GateState, Vec<sim::iaas::VmDeletion>) {
    let topology = Topology::vm(2, 3);
    let options = Options::new(PRIMARY, STANDBY);
    let (p, mut sim, runs) = orchestrated(23, 150, topology, |_| {}, options, Duration::from_secs(START_S));
    let steps = vec![
        At::new(Duration::from_millis(crash_ms), |sim| p.faults.crash(sim, "orchestrator")),
        At::new(Duration::from_millis(crash_ms + 1000), |sim| p.faults.restart(sim, "orchestrator")),
    ];
    p.run(&mut sim, steps).expect("runs");
    drop(sim);
    let runs = runs.lock().unwrap().clone();
    (runs, gate(&p).state, p.iaas.deletions())
}

/// Writes the old primary accepted after the failover pinned R: lost to the new primary. R comes
fn paused(p: &Platform, primary: bool, cluster: &str) -> bool {
    let side = if primary { &p.primary } else { &p.standby };
    let key = kind::CLUSTER.key(NS, cluster);
    let c = side.api.decode(&key, &side.etcd.get(key.as_bytes()).expect("the Cluster exists")).expect("decodes");
    c.field(&["spec", "paused"]) == Some(&serde_json::json!(true))
}

#[test]
fn an_abort_gives_a_refused_failovers_primary_back() {
    // The guard refuses (wc-00 missed on the standby) with the primary fenced and wc-01 paused
    // by the failover; the operator aborts a minute later.
    // Heartbeat writes on the primary all along: after the abort they must reach the standby.
    let o = Options::new(PRIMARY, STANDBY);
    let r = failover_world_then(22, o.clone(), true, 2.0, Some((START_S + 60, o)));
    assert!(r.runs.lock().unwrap()[0].as_ref().is_err_and(|e| e.contains("refused")), "refused (seed=22)");
    let aborts = r.aborts.lock().unwrap();
    let plan = &aborts[0].as_ref().unwrap_or_else(|e| panic!("the abort succeeds (seed=22): {e}")).plan;
    assert!(!r.p.primary.api.fenced(), "the primary takes writes again: {plan:?}");
    assert!(!paused(&r.p, true, "wc-01"), "the Cluster the failover paused reconciles again: {plan:?}");
    assert!(paused(&r.p, true, "wc-00"), "the Cluster the operator paused stays paused: {plan:?}");
    assert!(!paused(&r.p, false, "wc-01"), "unpaused on the standby too (seed=22): {plan:?}");
    // The sync applies again: its checkpoint follows the primary's head (frozen, it would stay
    // a minute of heartbeats behind).
    let cp = r.p.standby.etcd.get(sync::target::checkpoint_key().as_bytes()).expect("checkpoint");
    let cp: sync::target::Checkpoint = serde_json::from_slice(&cp).expect("checkpoint json");
    let behind = r.p.primary.etcd.revision() - cp.revision;
    assert!(behind <= 5, "the sync is {behind} revisions behind the primary after the abort (seed=22)");
    assert_eq!(gate(&r.p).state, GateState::Syncing);
    let progress = harness::failover_sim::saved_progress(&r.p, STANDBY).expect("progress");
    assert_eq!(progress.done, None, "the next failover starts afresh");
    assert_eq!(r.p.iaas.deletions(), vec![], "no VM deleted");
}

#[test]
fn an_abort_after_the_gate_is_cleared_is_refused() {
    let o = Options::new(PRIMARY, STANDBY);
    let r = failover_world_then(21, o.clone(), false, 0.0, Some((START_S + 100, o)));
    assert!(r.runs.lock().unwrap()[0].is_ok(), "the failover succeeds (seed=21)");
    let aborts = r.aborts.lock().unwrap();
    let err = aborts[0].as_ref().expect_err("too late to abort (seed=21)");
    assert!(err.contains("cannot abort") && err.contains("fail back"), "{err}");
    assert_eq!(gate(&r.p).state, GateState::Cleared);
    assert!(r.p.primary.api.fenced(), "the old primary stays fenced");
    assert_eq!(r.p.dns.answer().0, STANDBY);
}

#[test]
fn an_abort_while_the_failover_runs_is_refused_and_the_failover_finishes() {
    // The abort comes 2 s in (the failover is quiescing) and waits 1 s for the lock.
    let mut abort = Options::new(PRIMARY, STANDBY);
    abort.lock_wait = Duration::from_secs(1);
    let r = failover_world_then(21, Options::new(PRIMARY, STANDBY), false, 0.0, Some((START_S + 2, abort)));
    let aborts = r.aborts.lock().unwrap();
    let err = aborts[0].as_ref().expect_err("the running failover holds the lock (seed=21)");
    assert!(err.contains("another orchestrator is running (failover holds the lock"), "{err}");
    let runs = r.runs.lock().unwrap();
    let outcome = runs[0].as_ref().expect("the failover finishes (seed=21)");
    assert_eq!(outcome.progress.done, Some(Step::UnpauseClusters));
    assert!(r.p.primary.api.fenced(), "nothing of the failover was undone");
    assert!(r.p.standby.etcd.get(harness::failover_sim::LOCK_KEY.as_bytes()).is_none(), "the lock is released");
}

/// from the progress persisted on the standby (a refused failover has pinned it too).
fn writes_after_r(r: &Run) -> i64 {
    let progress = harness::failover_sim::saved_progress(&r.p, STANDBY).expect("progress persisted");
    let rev = progress.source_revision.expect("R recorded");
    r.p.primary.etcd.revision() - rev
}

#[test]
fn a_fenced_primary_takes_no_write_after_r() {
    // Heartbeat traffic keeps coming to the primary until the agents' DNS answer expires.
    let r = failover_world_with(24, Options::new(PRIMARY, STANDBY), false, 2.0);
    assert!(r.runs.lock().unwrap()[0].is_ok(), "the failover succeeds (seed=24)");
    assert_eq!(writes_after_r(&r), 0, "no write lands on the old primary after R (seed=24)");
}

#[cfg(feature = "mutants")]
#[test]
fn without_fencing_the_old_primary_keeps_taking_writes_that_are_lost() {
    let mut o = Options::new(PRIMARY, STANDBY);
    o.fencing_off = true;
    let r = failover_world_with(24, o, false, 2.0);
    assert!(writes_after_r(&r) > 0, "fencing-off must let writes land on the old primary after R (seed=24)");
}

#[test]
fn a_failover_resumes_only_in_the_mode_it_started_in() {
    // An unplanned failover that stopped after fencing the lost primary, resumed as a planned one:
    // the planned wait would read the lost primary, so the resume refuses and says how to resume.
    let topology = Topology::vm(1, 2);
    let options = Options::new(PRIMARY, STANDBY);
    let (p, mut sim, runs) = orchestrated(24, 60, topology, |_| {}, options, Duration::from_secs(START_S));
    let stopped = failover::step::Progress { done: Some(Step::FencePrimary), unplanned: true, ..Default::default() };
    let saved = serde_json::to_vec(&stopped).expect("progress serialises");
    p.standby.etcd.seed(&[(harness::failover_sim::PROGRESS_KEY.as_bytes().to_vec(), saved)]);
    p.run(&mut sim, Vec::new()).expect("runs");
    let runs = runs.lock().unwrap();
    let err = runs[0].as_ref().expect_err("a planned resume of an unplanned failover is refused (seed=24)");
    assert!(err.contains("is unplanned: resume it with --unplanned"), "{err}");
    assert_eq!(gate(&p).state, GateState::Syncing, "nothing was done");
    assert!(!p.primary.api.fenced(), "the seeded progress fenced nothing: the resume did not act");
}

#[test]
fn an_unplanned_failover_reports_the_vms_the_lost_primary_made_after_r() {
    // The sync's link is slow; the primary scales wc-00 up (a new Machine and its VM) and is
    // lost 1 s later, before the sync applied it. The unplanned failover succeeds on the standby
    // alone and reports the new VM as an orphan (no Machine on the standby), deleting nothing.
    let mut options = Options::new(PRIMARY, STANDBY);
    options.unplanned = true;
    let topology = Topology::vm(2, 3);
    let (p, mut sim, runs) = orchestrated(25, 120, topology, |_| {}, options, Duration::from_secs(START_S + 5));
    let steps = vec![
        At::new(Duration::from_secs(10), |sim| p.faults.delay(sim, "sync", PRIMARY, Duration::from_secs(3))),
        At::new(Duration::from_secs(START_S - 1), |_| p.act(Action::Scale { cluster: "wc-00".into(), replicas: 3 })),
        At::new(Duration::from_secs(START_S), |sim| p.faults.crash(sim, PRIMARY)),
    ];
    p.run(&mut sim, steps).expect("runs");
    let runs = runs.lock().unwrap();
    let outcome = runs[0].as_ref().expect("the unplanned failover succeeds (seed=25)");
    assert_eq!(outcome.progress.done, Some(Step::UnpauseClusters));
    assert!(outcome.progress.unplanned);
    let orphans = &outcome.progress.orphan_vms;
    assert!(
        orphans.len() == 1 && orphans[0].starts_with("vm-wc-00-md-0-"),
        "the VM of the Machine the standby never saw: {orphans:?} (seed=25)"
    );
    let (known, r) = (outcome.progress.source_known.unwrap(), outcome.progress.source_revision.unwrap());
    assert!(known >= r, "R {r} is at most what the sync had seen, {known}");
    assert!(p.primary.etcd.revision() > r, "the primary wrote past R before it was lost: the RPO is real");
    assert!(p.iaas.exists(&orphans[0]), "reported, not deleted");
    assert_eq!(p.iaas.deletions(), vec![], "no VM deleted");
    assert_eq!(p.dns.answer().0, STANDBY);
    assert!(p.primary.api.fenced(), "the lost primary is fenced for when it returns");
}

#[test]
fn preflight_refuses_a_misnamed_global_before_anything_is_fenced_and_force_is_recorded() {
    for force in [None, Some("ops-oncall")] {
        let mut options = Options::new(PRIMARY, STANDBY);
        options.force = force.map(str::to_string);
        let topology = Topology::vm(1, 2);
        let misnamed = |c: &mut sim::platform::PlatformConfig| c.misnamed_global = true;
        let (p, mut sim, runs) = orchestrated(26, 120, topology, misnamed, options, Duration::from_secs(START_S));
        p.run(&mut sim, Vec::new()).expect("runs");
        drop(sim);
        let runs = runs.lock().unwrap();
        match force {
            None => {
                let err = runs[0].as_ref().expect_err("preflight refuses (seed=26)");
                assert!(err.starts_with("Preflight: refused"), "{err}");
                assert!(err.contains("MachineDeployment workers: lacks the `global-` prefix"), "{err}");
                assert!(!p.primary.api.fenced() && gate(&p).state == GateState::Syncing, "nothing was done");
            }
            Some(who) => {
                // Past preflight; the pinned check's guards are forced too, and the record says who.
                let outcome = runs[0].as_ref().expect("forced (seed=26)");
                assert_eq!(outcome.progress.forced_by.as_deref(), Some(who));
                assert!(p.primary.api.fenced());
            }
        }
    }
}

/// Validation is the last word before the standby's controllers act: a failover forced past its
/// guard over a standby that lost a Machine's DCSMachine (a missed key) stops at validation, names
/// the Machine left without its infrastructure machine, and keeps its Cluster paused, so no
/// controller acts on the broken binding; the other Cluster, validated, is unpaused.
#[test]
fn validation_names_a_machine_left_without_its_infrastructure_and_keeps_its_cluster_paused() {
    let mut options = Options::new(PRIMARY, STANDBY);
    options.force = Some("ops-oncall".into());
    let topology = Topology::vm(2, 3);
    let (p, mut sim, runs) = orchestrated(27, 150, topology, |_| {}, options, Duration::from_secs(START_S));
    let lost = kind::DCS_MACHINE.key(NS, "wc-01-md-0-0").into_bytes();
    let standby = p.standby.etcd.clone();
    let lose = At::new(Duration::from_secs(20), move |_| {
        standby.remove(std::slice::from_ref(&lost)).expect("the DCSMachine was copied by 20 s");
    });
    p.run(&mut sim, vec![lose]).expect("runs");
    drop(sim);
    let runs = runs.lock().unwrap();
    let err = runs[0].as_ref().expect_err("validation fails (seed=27)");
    assert!(
        err.starts_with(
            "validation failed; clusters stay paused: cpaas-system/wc-01 (the others were validated and unpaused)"
        ),
        "{err}"
    );
    assert!(
        err.contains("its infrastructure machine DCSMachine wc-01-md-0-0 is missing (cluster.x-k8s.io/machines/cpaas-system/wc-01-md-0-0)"),
        "names the Machine and what it lost: {err}"
    );
    assert_eq!(err.matches("is missing").count(), 1, "and nothing else: {err}");
    assert!(paused(&p, false, "wc-01"), "the broken Cluster stays paused");
    assert!(!paused(&p, false, "wc-00"), "the validated one is handed to its controllers");
    assert_eq!(p.iaas.deletions(), vec![], "no VM deleted");
}

/// Seed 000 step 6: the standby's own components must run before its Clusters are handed to
/// their controllers. Its capi-controller-manager has no ready replica (it crash-loops there):
/// validation names it — a finding about the platform, not one Cluster — and every Cluster
/// stays paused. The same world with it running completes (the planned failover above).
#[test]
fn a_component_not_running_on_the_standby_keeps_every_cluster_paused() {
    let topology = Topology::vm(2, 3);
    let o = Options::new(PRIMARY, STANDBY);
    let (p, mut sim, runs) = orchestrated(28, 150, topology, |_| {}, o, Duration::from_secs(START_S));
    let standby = p.standby.clone();
    let down = At::new(Duration::from_secs(20), move |_| {
        let key = kind::DEPLOYMENT.key(NS, "capi-controller-manager");
        let mut d = standby.api.decode(&key, &standby.etcd.get(key.as_bytes()).expect("it runs")).expect("decodes");
        d.body = sim::k8s::object::Body::Deployment { replicas: 1, ready: 0 };
        standby.etcd.seed(&[(key.into_bytes(), d.encode())]);
    });
    p.run(&mut sim, vec![down]).expect("runs");
    drop(sim);
    let runs = runs.lock().unwrap();
    let err = runs[0].as_ref().expect_err("validation fails (seed=28)");
    assert_eq!(
        err,
        "validation failed; clusters stay paused: required component not running on the standby: 0 of 1 \
         replicas ready (Deployment cpaas-system/capi-controller-manager)"
    );
    assert!(paused(&p, false, "wc-00") && paused(&p, false, "wc-01"), "every Cluster stays paused");
}

/// A restarted orchestrator repeats nothing of a completed failover (the crash test above), but
/// once a sync runs onto the standby again — reinstalled, a new epoch — the completed record is
/// an earlier cycle's: the next failover archives it in the audit trail and runs from its first
/// step instead of reporting the first one done. The reinstalled sync resyncs (its checkpoint is
/// the last epoch's): resuming from it would never look at what the standby changed while it
/// served (its Clusters unpaused), and the second failover's guard would refuse.
#[test]
fn a_second_failover_cycle_archives_the_first_and_starts_afresh() {
    let mut cfg = platform_config(29, 240, Topology::vm(2, 3));
    cfg.dns_ttl_s = 10;
    cfg.writes_per_s = 0.0;
    let settings = sync_settings(&cfg);
    let (p, mut sim) = Platform::build(cfg).expect("world builds");
    let first_sync = SyncHost::new(PRIMARY, STANDBY, settings.clone()).add(&mut sim, p.links.clone());
    let options = Options::new(PRIMARY, STANDBY);
    let view = PlatformView::of(&p);
    let first = add_orchestrator(
        &mut sim,
        Job::Failover,
        view.clone(),
        settings.clone(),
        first_sync,
        options.clone(),
        Duration::from_secs(START_S),
    );
    // The next cycle: the sync reinstalled onto the standby at 100 s, the operator's failover
    // command again at 130 s (its own host, driving the new sync).
    let (install, installed) = harness::simsync::install_channel();
    let again = SyncHost {
        name: "sync-again".into(),
        install: Some(installed),
        ..SyncHost::new(PRIMARY, STANDBY, sync::engine::Settings { reinstall: true, ..settings.clone() })
    };
    let second_sync = again.add(&mut sim, p.links.clone());
    let second: Runs = Runs::default();
    {
        let (view, settings, options, out) = (view.clone(), settings.clone(), options.clone(), second.clone());
        sim.host("orchestrator-again", move || {
            let (view, settings, handle, options, out) =
                (view.clone(), settings.clone(), second_sync.clone(), options.clone(), out.clone());
            async move {
                tokio::time::sleep(Duration::from_secs(130)).await;
                let r = harness::failover_sim::run_job(Job::Failover, &view, &settings, handle, &options).await;
                out.lock().unwrap().push(r);
                std::future::pending::<()>().await;
                Ok(())
            }
        });
    }
    // Between the cycles, a failback by hand: the standby fenced (its clients go back to the
    // primary), the primary unfenced, the platform domain pointed back at it.
    let steps = vec![
        At::new(Duration::from_secs(95), |_| {
            p.standby.api.set_fenced(true);
            p.primary.api.set_fenced(false);
            p.dns.switch(PRIMARY, "operator");
        }),
        At::new(Duration::from_secs(100), move |_| {
            install.send_replace(Some(harness::simsync::Install { baseline_revision: None }));
        }),
    ];
    p.run(&mut sim, steps).expect("runs");
    drop(sim);
    let first = first.lock().unwrap()[0].clone().unwrap_or_else(|e| panic!("first failover: {e} (seed=29)"));
    assert!(first.progress.complete());
    let second = second.lock().unwrap().first().cloned().expect("the second failover ended (seed=29)");
    let second = second.unwrap_or_else(|e| panic!("second failover: {e} (seed=29)"));
    let steps: Vec<Step> = second.progress.step_ms.iter().map(|(s, _)| *s).collect();
    assert_eq!(steps, Step::ALL, "the second cycle ran every step itself");
    assert!(
        second.progress.started_ms > first.progress.started_ms,
        "the second cycle is timed from its own start, not the first's: {:?} vs {:?}",
        second.progress.started_ms,
        first.progress.started_ms
    );
    let audit: Vec<serde_json::Value> = p
        .standby
        .etcd
        .dump()
        .into_iter()
        .filter(|(k, _)| k.starts_with(harness::failover_sim::AUDIT_PREFIX.as_bytes()))
        .map(|(_, v)| serde_json::from_slice(&v).expect("audit JSON"))
        .collect();
    let archived: Vec<&serde_json::Value> = audit.iter().filter(|r| r["step"] == "archive-progress").collect();
    assert_eq!(archived.len(), 1, "one archived record: {audit:?}");
    assert_eq!(archived[0]["progress"]["started_ms"], serde_json::json!(first.progress.started_ms));
}

/// When the failback starts in [`failback_crashed_at`]'s world.
const FAILBACK_S: u64 = 80;

/// A failback's orchestrator crashed at any point — installing the reverse sync, waiting for
/// it, anywhere in the failover back — and restarted 1 s later resumes and finishes: every step
/// of the failover back once, in order; the old primary serves again; no VM is lost.
#[test]
fn a_failback_orchestrator_crashed_at_any_point_resumes_and_finishes() {
    let (reference, _, _) = failback_crashed_at(None);
    let took_ms = reference[0].as_ref().map(|o| o.progress.step_ms.last().unwrap().1).unwrap_or_else(|e| {
        panic!("the uncrashed failback: {e} (seed=31)");
    });
    let mut mid_failback = 0;
    for i in 0..12u64 {
        let crash_ms = FAILBACK_S * 1000 + 50 + i * 700;
        let (runs, dns, deletions) = failback_crashed_at(Some(crash_ms));
        mid_failback += usize::from(runs.len() == 1);
        let last = runs.last().unwrap_or_else(|| panic!("crash at {crash_ms} ms: no failback finished (seed=31)"));
        let outcome = last.as_ref().unwrap_or_else(|e| panic!("crash at {crash_ms} ms: {e} (seed=31)"));
        let steps: Vec<Step> = outcome.progress.step_ms.iter().map(|(s, _)| *s).collect();
        assert_eq!(steps, Step::ALL, "crash at {crash_ms} ms: each step of the failover back once (seed=31)");
        assert_eq!(dns, PRIMARY, "crash at {crash_ms} ms: the old primary serves again");
        assert_eq!(deletions, vec![], "crash at {crash_ms} ms: no VM deleted (seed=31)");
    }
    assert!(mid_failback >= 4, "only {mid_failback} crash points fell inside the failback ({took_ms} ms long)");
}

/// Seed 31: a planned failover at `START_S`, the failback at [`FAILBACK_S`], its orchestrator
/// crashed at `crash_ms` (if any) and restarted 1 s later. The failback's runs, where the platform
/// domain points at the end, the VM deletions.
fn failback_crashed_at(
    crash_ms: Option<u64>,
) -> (Vec<Result<failover::Outcome, String>>, String, Vec<sim::iaas::VmDeletion>) {
    let options = Options::new(PRIMARY, STANDBY);
    let tweak = |cfg: &mut sim::platform::PlatformConfig| {
        cfg.primary_gate = Some(harness::drill::primary_gate());
        cfg.writes_per_s = 1.0;
    };
    let topology = Topology::vm(2, 3);
    let (p, mut sim, _) = orchestrated(31, 200, topology.clone(), tweak, options, Duration::from_secs(START_S));
    let mut cfg = platform_config(31, 200, topology);
    tweak(&mut cfg);
    let back = harness::drill::reverse_sync_settings(&cfg);
    let failbacks = harness::failover_sim::add_failback(
        &mut sim,
        &p,
        back,
        Options::new(STANDBY, PRIMARY),
        Duration::from_secs(FAILBACK_S),
    );
    let runs = run_crashing(&p, sim, &failbacks, "orchestrator-failback", crash_ms);
    (runs, p.dns.answer().0, p.iaas.deletions())
}

/// The DR-aware upgrade's guarded uninstall crashed at any point and restarted 1 s later ends
/// with the sync uninstalled behind a clean pinned check, while the primary keeps taking writes:
/// a restart after the freeze must not wait for a frozen sync to reach a newer head.
#[test]
fn an_upgrade_uninstall_crashed_at_any_point_resumes_and_finishes() {
    let (reference, _, _) = uninstall_crashed_at(None);
    reference[0].as_ref().unwrap_or_else(|e| panic!("the uncrashed uninstall: {e} (seed=37)"));
    for i in 0..16u64 {
        let crash_ms = START_S * 1000 + 20 + i * 60;
        let (runs, gate, deletions) = uninstall_crashed_at(Some(crash_ms));
        let last = runs.last().unwrap_or_else(|| panic!("crash at {crash_ms} ms: no uninstall finished (seed=37)"));
        last.as_ref().unwrap_or_else(|e| panic!("crash at {crash_ms} ms: {e} (seed=37)"));
        assert_eq!(gate.state, GateState::Uninstalled, "crash at {crash_ms} ms (seed=37)");
        // Behind a clean pinned check: the gate keeps its proof (a forced one would have none).
        assert!(gate.proven_at.is_some(), "crash at {crash_ms} ms: {gate:?} (seed=37)");
        assert_eq!(deletions, vec![], "crash at {crash_ms} ms: no VM deleted (seed=37)");
    }
}

/// Seed 37 with heartbeat traffic: the upgrade's uninstall at `START_S`, its host crashed at
/// `crash_ms` (if any) and restarted 1 s later. Its runs, the gate's state, the VM deletions.
fn uninstall_crashed_at(
    crash_ms: Option<u64>,
) -> (Vec<Result<failover::Outcome, String>>, Gate, Vec<sim::iaas::VmDeletion>) {
    let mut cfg = platform_config(37, 90, Topology::vm(2, 3));
    cfg.writes_per_s = 4.0;
    let settings = sync_settings(&cfg);
    let (p, mut sim) = Platform::build(cfg).expect("world builds");
    let handle = SyncHost::new(PRIMARY, STANDBY, settings.clone()).add(&mut sim, p.links.clone());
    let options = Options::new(PRIMARY, STANDBY);
    let start = Duration::from_secs(START_S);
    let runs =
        add_orchestrator(&mut sim, Job::UpgradeUninstall, PlatformView::of(&p), settings, handle, options, start);
    let runs = run_crashing(&p, sim, &runs, "orchestrator-uninstall", crash_ms);
    (runs, gate(&p), p.iaas.deletions())
}

/// Runs `p`'s world with `host` crashed at `crash_ms` (if any) and restarted 1 s later; the runs
/// its orchestrator job recorded.
fn run_crashing<'a>(
    p: &'a Platform,
    mut sim: turmoil::Sim<'a>,
    runs: &Runs,
    host: &'static str,
    crash_ms: Option<u64>,
) -> Vec<Result<failover::Outcome, String>> {
    let mut steps = Vec::new();
    if let Some(t) = crash_ms {
        steps.push(At::new(Duration::from_millis(t), move |sim| p.faults.crash(sim, host)));
        steps.push(At::new(Duration::from_millis(t + 1000), move |sim| p.faults.restart(sim, host)));
    }
    p.run(&mut sim, steps).expect("runs");
    drop(sim);
    runs.lock().unwrap().clone()
}

/// The DR-aware upgrade's reinstall crashed at any point: the restarted reinstall asks for the
/// install again (idempotent), waits for the new epoch to catch up and finishes; the standby is
/// synced in a new epoch and no VM is deleted.
#[test]
fn an_upgrade_reinstall_crashed_at_any_point_resumes_and_finishes() {
    let (reference, _, _) = reinstall_crashed_at(None);
    reference[0].as_ref().unwrap_or_else(|e| panic!("the uncrashed reinstall: {e} (seed=38)"));
    for i in 0..8u64 {
        let crash_ms = REINSTALL_S * 1000 + 20 + i * 150;
        let (runs, gate, deletions) = reinstall_crashed_at(Some(crash_ms));
        let last = runs.last().unwrap_or_else(|| panic!("crash at {crash_ms} ms: no reinstall finished (seed=38)"));
        last.as_ref().unwrap_or_else(|e| panic!("crash at {crash_ms} ms: {e} (seed=38)"));
        assert_eq!((gate.state, gate.epoch), (GateState::Syncing, 2), "crash at {crash_ms} ms: {gate:?} (seed=38)");
        assert_eq!(deletions, vec![], "crash at {crash_ms} ms: no VM deleted (seed=38)");
    }
}

const REINSTALL_S: u64 = 50;

/// Seed 38 with heartbeat traffic: the upgrade's uninstall at `START_S`, its reinstall at
/// `REINSTALL_S` (a new sync epoch started through the install), the reinstall's host crashed at
/// `crash_ms` (if any) and restarted 1 s later (its job starts `REINSTALL_S` after that).
fn reinstall_crashed_at(
    crash_ms: Option<u64>,
) -> (Vec<Result<failover::Outcome, String>>, Gate, Vec<sim::iaas::VmDeletion>) {
    let mut cfg = platform_config(38, 200, Topology::vm(2, 3));
    cfg.writes_per_s = 4.0;
    let settings = sync_settings(&cfg);
    let (p, mut sim) = Platform::build(cfg).expect("world builds");
    let handle = SyncHost::new(PRIMARY, STANDBY, settings.clone()).add(&mut sim, p.links.clone());
    let (install, _) = harness::simsync::add_reinstallable(&mut sim, p.links.clone(), &settings);
    let view = PlatformView::of(&p).with_install(install);
    let options = Options::new(PRIMARY, STANDBY);
    let (s, h, o) = (&settings, &handle, &options);
    let start = Duration::from_secs(START_S);
    let uninstalls =
        add_orchestrator(&mut sim, Job::UpgradeUninstall, view.clone(), s.clone(), h.clone(), o.clone(), start);
    let at = Duration::from_secs(REINSTALL_S);
    let runs = add_orchestrator(&mut sim, Job::UpgradeReinstall, view, s.clone(), h.clone(), o.clone(), at);
    let runs = run_crashing(&p, sim, &runs, "orchestrator-reinstall", crash_ms);
    let uninstalled = uninstalls.lock().unwrap();
    uninstalled[0].as_ref().unwrap_or_else(|e| panic!("the uninstall: {e} (seed=38)"));
    (runs, gate(&p), p.iaas.deletions())
}
