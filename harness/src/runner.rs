//! Runs one scenario at one seed on the simulated platform: builds the world from the scenario,
//! wires in the real sync (and the real orchestrator when the timeline fails over) with the
//! chosen variant, drives the timeline (times and `when:` conditions), and collects what the
//! invariant checkers read: the trace file, the final states, the observers' records.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::json;
use sha2::{Digest, Sha256};
use sim::iaas::VmDeletion;
use sim::platform::{PRIMARY, Platform, PlatformConfig, STANDBY};
use sim::topology::{NS, Topology};
use sim::world::WorldError;
use sync::engine::{Settings, Status};
use sync::rules::Rules;

use crate::drill::{Diff, platform_config, reverse_sync_settings, sync_settings};
use crate::failover_sim::{Job, PlatformView, Start, add_orchestrator};
use crate::observe::{Orphaned, OwnerOrder};
use crate::scenario::{AgentAuth, Backend, Encryption, Scenario, Side, Variant};
use crate::simsync::{SyncHost, conn_config};
use crate::state::SideState;
use crate::timeline::{Act, Convergence, Scheduled, resolve};

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    World(#[from] WorldError),
    #[error("variant `{0}` is a mutant and this build carries none (build drlab with `--features mutants`)")]
    NoMutants(&'static str),
    /// The scenario needs something only the simulator has (said before anything starts).
    #[error("scenario {scenario} cannot run on real etcd: {why}")]
    Unsupported { scenario: String, why: String },
    /// The real backend could not start or reach its etcd servers (the endpoint is named).
    #[error("real etcd backend: {0}")]
    Backend(String),
}

/// An object's identity at a moment: its UID and whether it was being deleted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ident {
    pub uid: String,
    pub deleting: bool,
}

/// How an orchestrator job ended (its error as text).
pub type JobResult = Result<failover::Outcome, String>;

/// What a run leaves for the checkers.
#[derive(Debug)]
pub struct Observed {
    pub seed: u64,
    pub variant: Variant,
    pub backend: Backend,
    pub trace: PathBuf,
    pub trace_hash: String,
    pub trace_events: u64,
    pub sim_secs: u64,
    /// The standby's own global objects before the run, and at the end (None: gone).
    pub standby_globals: BTreeMap<String, (Ident, Option<Ident>)>,
    /// The primary's own global objects (`global`, `global-*`) likewise: a failback's reverse
    /// sync must leave them alone too.
    pub primary_globals: BTreeMap<String, (Ident, Option<Ident>)>,
    /// Every workload cluster Secret (`<cluster>-ca`, …) on the primary before the run.
    pub cluster_secrets_before: BTreeMap<String, Ident>,
    /// The same keys at the end, per side.
    pub cluster_secrets_after: BTreeMap<(String, String), Ident>,
    /// Standby Secrets its own API server cannot open at the end.
    pub unreadable_on_standby: Vec<String>,
    pub vm_deletions: Vec<VmDeletion>,
    pub sync: Status,
    pub source_head: i64,
    /// The offline comparison of the final states under the real rules.
    pub diff: Diff,
    pub keys_in_scope: usize,
    /// The sync's gate on the standby at the end.
    pub standby_gate: Option<sync::target::Gate>,
    pub orphaned: Vec<Orphaned>,
    /// Standby revisions the owner-order observer never saw (compacted while it was away).
    pub unobserved: Vec<(i64, i64)>,
    /// The orchestrator's first finished run (a crashed run records none).
    pub failover: Option<Result<failover::Outcome, String>>,
    /// The operator's abort, when the timeline has one and it finished.
    pub abort: Option<Result<failover::Outcome, String>>,
    /// The progress the orchestrator persisted on the standby, as it was at the end.
    pub failover_progress: Option<failover::step::Progress>,
    /// The failback's first finished run, and the progress of its failover back (kept on the old
    /// primary).
    pub failback: Option<Result<failover::Outcome, String>>,
    pub failback_progress: Option<failover::step::Progress>,
    /// The DR-aware upgrade's uninstall and reinstall, when the timeline has them and they ended.
    pub upgrade: Option<(Option<JobResult>, Option<JobResult>)>,
    /// When the last heal (or restart) of a fault fired, and when the sync next caught up.
    pub last_heal_ms: u64,
    pub caught_up_ms: Option<u64>,
}

/// Applies the variant to the code under test; a mutant needs the `mutants` build.
fn apply_variant(v: Variant, settings: &mut Settings, options: &mut failover::Options) -> Result<(), RunError> {
    if v == Variant::Real {
        return Ok(());
    }
    #[cfg(feature = "mutants")]
    {
        match v {
            Variant::Real => {}
            Variant::OwnerOrderOff => settings.owner_order_off = true,
            Variant::IgnoreRulesOff => settings.rules.ignore_rules_off = true,
            Variant::RawSecretCopy => settings.boundary.raw_secret_copy = true,
            Variant::CheckpointOutsideTxn => settings.checkpoint_outside_txn = true,
            Variant::LedgerOff => settings.ledger_off = true,
            Variant::BaselineOff => settings.baseline_off = true,
            Variant::RestoreBlind => settings.restore_blind = true,
            Variant::GateCompareOff => settings.gate_compare_off = true,
            Variant::UninstallGuardOff => options.guard_off = true,
            Variant::FencingOff => options.fencing_off = true,
        }
        Ok(())
    }
    #[cfg(not(feature = "mutants"))]
    {
        let _ = (settings, options);
        Err(RunError::NoMutants(v.name()))
    }
}

/// The world a scenario describes, for one seed.
pub fn platform_config_of(s: &Scenario, seed: u64) -> PlatformConfig {
    let t = &s.topology;
    let mut cfg = platform_config(
        seed,
        s.duration_s,
        Topology { clusters: t.clusters, machines: t.machines, provider: t.provider.into() },
    );
    cfg.tick_ms = s.tick_ms;
    cfg.dns_ttl_s = t.dns_ttl_s;
    cfg.misnamed_global = t.misnamed_global;
    cfg.leader_election = t.leader_election;
    cfg.machineset_order = t.machineset_order.into();
    cfg.writes_per_s = s.traffic.writes_per_s;
    cfg.gc_lag_ms_max = s.traffic.gc_lag_ms_max;
    cfg.compaction_interval_s = Some(s.traffic.compaction_interval_s).filter(|s| *s > 0);
    if t.encryption == Encryption::Different {
        crate::drill::keys_differ(&mut cfg);
    }
    let s = cfg.standby_signing.clone();
    match t.agent_auth {
        AgentAuth::Same => {}
        AgentAuth::DifferentKey => crate::drill::sa_key_differs(&mut cfg),
        AgentAuth::DifferentIssuer => cfg.standby_signing = s.with_issuer("https://standby.platform.example.com"),
        AgentAuth::DifferentAudience => {
            cfg.standby_signing = s.with_audiences(&["https://standby.platform.example.com"])
        }
    }
    cfg
}

/// Both sides' stored state now.
fn states(p: &Platform) -> (SideState<'_>, SideState<'_>) {
    fn state(s: &sim::platform::Side) -> SideState<'_> {
        SideState::new(&s.name, s.etcd.dump(), &s.api)
    }
    (state(&p.primary), state(&p.standby))
}

/// Key bytes for a rotation, derived from the seed (never traced or reported).
pub(crate) fn rotation_key(seed: u64, side: Side) -> [u8; 32] {
    Sha256::new().chain_update(seed.to_le_bytes()).chain_update(side.name()).finalize().into()
}

/// The world, the sync's settings and the failover's options a scenario asks for at `seed`,
/// with `variant` applied and the trace going to `trace` (both backends start from these).
pub(crate) fn code_under_test(
    s: &Scenario,
    seed: u64,
    variant: Variant,
    trace: &std::path::Path,
) -> Result<(PlatformConfig, Settings, failover::Options), RunError> {
    let mut cfg = platform_config_of(s, seed);
    cfg.trace_path = Some(trace.to_path_buf());
    let mut settings = sync_settings(&cfg);
    settings.rules = scenario_rules(s);
    let mut options = failover::Options::new(PRIMARY, STANDBY);
    apply_variant(variant, &mut settings, &mut options)?;
    if let Some(f) = s.failover() {
        options.force = f.force.clone();
        options.unplanned = f.unplanned;
    }
    Ok((cfg, settings, options))
}

/// The sync's rules in `s` (checked when the scenario was parsed).
pub(crate) fn scenario_rules(s: &Scenario) -> Rules {
    s.sync.rules().unwrap_or_else(|e| panic!("a parsed scenario's sync.rules are valid: {e}"))
}

/// Runs the scenario at `seed` with `variant`, writing the trace to `trace`.
pub fn run(s: &Scenario, seed: u64, variant: Variant, trace: PathBuf) -> Result<Observed, RunError> {
    let (mut cfg, settings, options) = code_under_test(s, seed, variant, &trace)?;
    let real_rules = scenario_rules(s);
    // A failback's reverse sync and failover back run the same variant of the code.
    let mut back = (reverse_sync_settings(&cfg), failover::Options::new(STANDBY, PRIMARY));
    apply_variant(variant, &mut back.0, &mut back.1)?;
    if s.has_failback() {
        // The old primary's controllers stop while the reverse sync holds its gate.
        cfg.primary_gate = Some(crate::drill::primary_gate());
    }
    let timeline = resolve(s);
    let (p, mut sim) = Platform::build(cfg)?;

    // Before: the standby's own globals and the workload clusters' Secrets.
    let before = {
        let (primary, standby) = states(&p);
        crate::state::before(&primary, &standby)
    };

    let sync_host = SyncHost {
        start_delay: Duration::from_secs_f64(s.sync.start_s),
        ..SyncHost::new(PRIMARY, STANDBY, settings.clone())
    };
    let handle = sync_host.add(&mut sim, p.links.clone());
    // A zombie: the same code, its own handle, which no orchestrator freezes or stops.
    if let Some(z) = s.sync.zombie_s {
        let zombie = SyncHost {
            name: "sync-zombie".into(),
            start_delay: Duration::from_secs_f64(z),
            ..SyncHost::new(PRIMARY, STANDBY, settings.clone())
        };
        zombie.add(&mut sim, p.links.clone());
    }

    // The observer watches the standby from the start, before the sync's first copy.
    let observer = OwnerOrder::creations_only();
    {
        let (obs, links, rules) = (observer.clone(), p.links.clone(), real_rules.clone());
        sim.host("observer", move || {
            let (obs, links, rules) = (obs.clone(), links.clone(), rules.clone());
            async move {
                let connector = sync::conn::Connector::custom(sim::net::Connector::new(links));
                let standby = sync::conn::connect(&conn_config(STANDBY), &connector, 0).await?;
                let _ = obs.run(standby, move |k| rules.includes(k)).await;
                std::future::pending::<()>().await;
                Ok(())
            }
        });
    }

    // A DR-aware upgrade's reinstall runs a new sync (a new epoch over the uninstalled gate).
    let reinstalled = s.has_upgrade().then(|| crate::simsync::add_reinstallable(&mut sim, p.links.clone(), &settings));
    let (go, go_failover, go_abort, go_failback) = Go::new();
    let (go_uninstall, go_reinstall) = (go.uninstall.subscribe(), go.reinstall.subscribe());
    let upgrades = reinstalled.as_ref().map(|(install, _)| {
        let view = PlatformView::of(&p).with_install(install.clone());
        let mut add = |job, go| {
            let (view, settings, handle, options) = (view.clone(), settings.clone(), handle.clone(), options.clone());
            add_orchestrator(&mut sim, job, view, settings, handle, options, Start::When(go))
        };
        (add(Job::UpgradeUninstall, go_uninstall), add(Job::UpgradeReinstall, go_reinstall))
    });
    let mut orchestrator = |job, go| {
        let (view, settings, handle, options) =
            (PlatformView::of(&p), settings.clone(), handle.clone(), options.clone());
        add_orchestrator(&mut sim, job, view, settings, handle, options, Start::When(go))
    };
    let runs = s.failover().is_some().then(|| orchestrator(Job::Failover, go_failover));
    let aborts = s.has_abort().then(|| orchestrator(Job::Abort, go_abort));
    let failbacks = s.has_failback().then(|| {
        let (settings, options) = back.clone();
        crate::failover_sim::add_failback(&mut sim, &p, settings, options, Start::When(go_failback))
    });

    let mut convergence = Convergence::new(s);
    // The sync that runs now: the reinstalled one once the timeline reinstalled it.
    let mut current = handle.clone();
    drive(&p, &mut sim, timeline, seed, |sim, now_ms, e| {
        // Equal, not at least: a checkpoint above the head is from a history a snapshot restore
        // took back, which the sync has yet to find out.
        let caught_up = current.checkpoint() == p.primary.etcd.revision();
        match e {
            None => {
                convergence.observe(caught_up, now_ms);
                false
            }
            Some(e) => {
                let ready = e.ready(caught_up, || runs.as_ref().is_some_and(|r| !r.lock().expect("runs").is_empty()));
                if ready {
                    convergence.fired(&e.act, now_ms);
                    if let (Act::ReinstallSync, Some((_, h))) = (&e.act, &reinstalled) {
                        current = h.clone();
                    }
                    fire(&p, sim, &e.act, seed, &go);
                }
                ready
            }
        }
    })?;

    let report = p.report()?;
    let real = Settings { rules: real_rules.clone(), ..settings.clone() };
    let after = {
        let (primary, standby) = states(&p);
        crate::state::after(before, &primary, &standby, &real)
    };
    let Convergence { last_heal_ms, caught_up_ms, .. } = convergence;
    let failover = runs.and_then(|r| r.lock().expect("runs").first().cloned());
    let abort = aborts.and_then(|r| r.lock().expect("runs").first().cloned());
    let failback = failbacks.and_then(|r| r.lock().expect("runs").first().cloned());
    let first = |r: &crate::failover_sim::Runs| r.lock().expect("runs").first().cloned();
    let upgrade = upgrades.map(|(u, r)| (first(&u), first(&r)));
    Ok(Observed {
        seed,
        variant,
        backend: Backend::Sim,
        trace,
        trace_hash: report.trace_hash,
        trace_events: report.trace_events,
        sim_secs: s.duration_s,
        standby_globals: after.before.standby_globals,
        primary_globals: after.before.primary_globals,
        cluster_secrets_before: after.before.cluster_secrets_before,
        cluster_secrets_after: after.cluster_secrets_after,
        unreadable_on_standby: after.unreadable_on_standby,
        vm_deletions: p.iaas.deletions(),
        sync: current.status(),
        source_head: p.primary.etcd.revision(),
        diff: after.diff,
        keys_in_scope: after.keys_in_scope,
        standby_gate: after.standby_gate,
        orphaned: observer.violations(),
        unobserved: observer.gaps(),
        failover,
        abort,
        failover_progress: after.failover_progress,
        failback,
        failback_progress: after.failback_progress,
        upgrade,
        last_heal_ms,
        caught_up_ms,
    })
}

/// Steps the world to its end. Before each step, `on` sees each due entry (in order; an entry
/// whose condition does not hold yet stays due and blocks the ones after it, so the timeline
/// keeps its order) and then once with `None` (for per-step observations).
fn drive<'a>(
    p: &Platform,
    sim: &mut turmoil::Sim<'a>,
    timeline: Vec<Scheduled>,
    seed: u64,
    mut on: impl FnMut(&mut turmoil::Sim<'a>, u64, Option<&Scheduled>) -> bool,
) -> Result<(), WorldError> {
    let mut pending = timeline.into_iter().peekable();
    loop {
        let now = sim.elapsed();
        let now_ms = now.as_millis() as u64;
        p.trace.set_outside_ms(now_ms);
        while let Some(e) = pending.peek() {
            if now < e.at || !on(sim, now_ms, Some(e)) {
                break;
            }
            pending.next();
        }
        on(sim, now_ms, None);
        match sim.step() {
            Ok(true) => {
                if let Some(e) = pending.peek() {
                    p.trace.record("world", "timeline.unfired", json!({"entry": format!("{:?}", e.act)}));
                }
                return Ok(());
            }
            Ok(false) => {}
            Err(e) => return Err(WorldError::Sim { seed, message: e.to_string() }),
        }
    }
}

/// The timeline's starts of the orchestrator's jobs (each host waits on its receiver).
struct Go {
    failover: tokio::sync::watch::Sender<bool>,
    abort: tokio::sync::watch::Sender<bool>,
    failback: tokio::sync::watch::Sender<bool>,
    uninstall: tokio::sync::watch::Sender<bool>,
    reinstall: tokio::sync::watch::Sender<bool>,
}

type GoRx = tokio::sync::watch::Receiver<bool>;

impl Go {
    fn new() -> (Go, GoRx, GoRx, GoRx) {
        let (failover, failover_rx) = tokio::sync::watch::channel(false);
        let (abort, abort_rx) = tokio::sync::watch::channel(false);
        let (failback, failback_rx) = tokio::sync::watch::channel(false);
        let (uninstall, reinstall) = (tokio::sync::watch::Sender::new(false), tokio::sync::watch::Sender::new(false));
        (Go { failover, abort, failback, uninstall, reinstall }, failover_rx, abort_rx, failback_rx)
    }
}

fn fire(p: &Platform, sim: &mut turmoil::Sim<'_>, act: &Act, seed: u64, go: &Go) {
    let f = &p.faults;
    match act {
        Act::Partition(a, b) => f.partition(sim, a.name(), b.name()),
        Act::Heal(a, b) => {
            f.heal(sim, a.name(), b.name());
            f.reset_link(sim, a.name(), b.name());
        }
        Act::PartitionOneway(a, b) => f.partition_oneway(sim, a.name(), b.name()),
        Act::SlowDisk(s, d) => f.slow_disk(&p.side(s.name()).etcd, s.name(), *d),
        Act::HealOneway(a, b) => f.heal_oneway(sim, a.name(), b.name()),
        Act::Reset(a, b) => {
            f.reset_link(sim, a.name(), b.name());
        }
        Act::Delay(a, b, d) => f.delay(sim, a.name(), b.name(), *d),
        Act::Crash(h) => f.crash(sim, h.name()),
        Act::Restart(h) => f.restart(sim, h.name()),
        Act::Compact(s) => {
            f.compact(&p.side(s.name()).etcd, s.name());
        }
        Act::SnapshotSave(s) => {
            f.save_snapshot(&p.side(s.name()).etcd, s.name());
        }
        Act::SnapshotRestore(s, bump) => {
            // The timeline's validation saw a save of this side before.
            f.restore_snapshot(sim, &p.side(s.name()).etcd, s.name(), *bump).expect("a saved snapshot");
        }
        Act::Scale { .. }
        | Act::Pause { .. }
        | Act::RecreateMachineSet { .. }
        | Act::CreateWorkload { .. }
        | Act::RolloutPlans { .. }
        | Act::CreateMisnamedGlobal(_)
        | Act::Delete { .. }
        | Act::RestartAgents => p.act(act.operator_action().expect("an operator action")),
        Act::LoseKey { side, kind, name } => {
            let key = kind.key(NS, name);
            let rev = p.side(side.name()).etcd.remove(&[key.clone().into_bytes()]);
            p.trace.record("world", "fault.lose-key", json!({"side": side.name(), "key": key, "rev": rev}));
        }
        Act::RotateKey(s) => p.side(s.name()).api.rotate_key("rotated", rotation_key(seed, *s)),
        Act::SwitchDns(s) => {
            p.dns.switch(s.name(), "operator");
        }
        Act::Gate(side, state) => {
            let etcd = &p.side(side.name()).etcd;
            let key = sync::target::gate_key();
            let gate = crate::timeline::gate_by_hand(etcd.get(key.as_bytes()).as_deref(), *state);
            let rev = etcd.seed(&[(key.into_bytes(), gate.encode())]);
            p.trace.record("world", "operator.gate", json!({"side": side.name(), "gate": gate, "rev": rev}));
        }
        Act::Failover(_) => {
            p.trace.record("world", "timeline.failover", json!({}));
            go.failover.send_replace(true);
        }
        Act::Abort => {
            p.trace.record("world", "timeline.abort", json!({}));
            go.abort.send_replace(true);
        }
        Act::Failback => {
            p.trace.record("world", "timeline.failback", json!({}));
            go.failback.send_replace(true);
        }
        Act::UninstallSync => {
            p.trace.record("world", "timeline.uninstall-sync", json!({}));
            go.uninstall.send_replace(true);
        }
        Act::ReinstallSync => {
            p.trace.record("world", "timeline.reinstall-sync", json!({}));
            go.reinstall.send_replace(true);
        }
    }
}

/// One `drlab run`: runs the scenario at `seed` with `variant` into `dir` (created; the trace,
/// the resolved scenario, the verdicts and the summary go there) and judges the verdicts.
pub fn execute(
    s: &Scenario,
    seed: u64,
    variant: Variant,
    dir: &std::path::Path,
    command: &str,
) -> Result<crate::report::RunReport, RunError> {
    execute_on(Backend::Sim, s, seed, variant, dir, command)
}

/// [`execute`] on either backend. A run that cannot start leaves no run directory behind.
pub fn execute_on(
    backend: Backend,
    s: &Scenario,
    seed: u64,
    variant: Variant,
    dir: &std::path::Path,
    command: &str,
) -> Result<crate::report::RunReport, RunError> {
    // A run refused before it starts (a scenario the real backend cannot run, an etcd that will
    // not start) removes the directory it was given, when it made it.
    let fresh = !dir.exists();
    std::fs::create_dir_all(dir).map_err(WorldError::Trace)?;
    let resolved = Scenario { seeds: vec![seed], variant, ..s.clone() };
    let trace = dir.join("trace.jsonl");
    let o = match backend {
        Backend::Sim => run(&resolved, seed, variant, trace),
        Backend::Etcd => crate::real_backend::run(&resolved, seed, variant, trace),
    };
    let o = match o {
        Ok(o) => o,
        Err(e) => {
            if fresh {
                let _ = std::fs::remove_dir_all(dir);
            }
            return Err(e);
        }
    };
    let verdicts = crate::invariants::check(&resolved, &o).map_err(WorldError::Trace)?;
    let report = crate::report::judge(&resolved, &o, verdicts, command);
    crate::report::write_dir(dir, &resolved, &report).map_err(WorldError::Trace)?;
    Ok(report)
}
