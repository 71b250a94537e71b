//! A scenario's timeline, validated and resolved into typed actions on the world. Validation
//! rejects what cannot happen: a time past the end, a heal of a link never cut, a restart of a
//! host never crashed, two failovers, a failback without a failover, a condition nothing can satisfy.

use std::collections::BTreeSet;
use std::time::Duration;

use serde_saphyr::Location;
use sim::k8s::{Kind, kind};
use sync::target::{Gate, GateState};

use crate::scenario::{
    BUMP_REVISION_MAX, Condition, DISK_LATENCY_MS_MAX, DURATION_S_MAX, Entry, FailoverSpec, Host, Invariant, SEEDS_MAX,
    Scenario, Side, TIMELINE_MAX, Variant, WRITES_PER_S_MAX,
};

/// A resolved action.
#[derive(Debug, Clone)]
pub enum Act {
    Partition(Host, Host),
    Heal(Host, Host),
    PartitionOneway(Host, Host),
    HealOneway(Host, Host),
    Reset(Host, Host),
    Delay(Host, Host, Duration),
    SlowDisk(Side, Duration),
    Crash(Host),
    Restart(Host),
    Compact(Side),
    SnapshotSave(Side),
    /// A restore of that side's last snapshot, bumped by this many revisions (0: none).
    SnapshotRestore(Side, i64),
    Scale {
        cluster: String,
        replicas: u64,
    },
    Pause {
        side: Side,
        cluster: String,
        paused: bool,
    },
    CreateWorkload {
        cluster: String,
        machines: u64,
    },
    RecreateMachineSet {
        side: Side,
        cluster: String,
    },
    RolloutPlans {
        cluster: String,
        side: Option<Side>,
    },
    CreateMisnamedGlobal(Side),
    Delete {
        side: Side,
        kind: &'static Kind,
        name: String,
    },
    LoseKey {
        side: Side,
        kind: &'static Kind,
        name: String,
    },
    RotateKey(Side),
    SwitchDns(Side),
    /// The gate written by hand on that side.
    Gate(Side, GateState),
    Failover(FailoverSpec),
    Abort,
    Failback,
    UninstallSync,
    ReinstallSync,
    RestartAgents,
}

impl Act {
    /// The hosts the entry names.
    pub fn hosts(&self) -> Vec<Host> {
        match self {
            Act::Partition(a, b)
            | Act::Heal(a, b)
            | Act::PartitionOneway(a, b)
            | Act::HealOneway(a, b)
            | Act::Reset(a, b)
            | Act::Delay(a, b, _) => vec![*a, *b],
            Act::Crash(h) | Act::Restart(h) => vec![*h],
            _ => Vec::new(),
        }
    }

    /// The operator action this entry queues, if it is one (both backends run the same operator).
    pub fn operator_action(&self) -> Option<sim::platform::Action> {
        use sim::platform::Action;
        Some(match self {
            Act::Scale { cluster, replicas } => Action::Scale { cluster: cluster.clone(), replicas: *replicas },
            Act::Pause { side, cluster, paused } => {
                Action::Pause { side: side.name().into(), cluster: cluster.clone(), paused: *paused }
            }
            Act::CreateWorkload { cluster, machines } => {
                Action::CreateWorkload { cluster: cluster.clone(), machines: *machines }
            }
            Act::RecreateMachineSet { side, cluster } => {
                Action::RecreateMachineSet { side: side.name().into(), cluster: cluster.clone() }
            }
            Act::RolloutPlans { cluster, side } => {
                Action::RolloutPlans { cluster: cluster.clone(), side: side.map(|s| s.name().to_string()) }
            }
            Act::Delete { side, kind, name } => Action::Delete { side: side.name().into(), kind, name: name.clone() },
            Act::CreateMisnamedGlobal(side) => Action::CreateMisnamedGlobal { side: side.name().into() },
            Act::RestartAgents => Action::RestartAgents,
            _ => return None,
        })
    }

    /// Whether convergence is timed from this action: a heal or restart ends a fault, a delay
    /// set or lifted changes the link, an abort resumes the sync, a reinstall starts one.
    pub fn heals(&self) -> bool {
        matches!(
            self,
            Act::Heal(..)
                | Act::HealOneway(..)
                | Act::Restart(_)
                | Act::SnapshotRestore(..)
                | Act::Reset(..)
                | Act::Delay(..)
                | Act::SlowDisk(..)
                | Act::Abort
                | Act::ReinstallSync
        )
    }
}

/// What an operator's `set_gate` / `clear_gate` writes over the gate `current` holds: the same
/// gate in `state`, as `etcdctl put` by hand would (no gate, or one that does not decode:
/// epoch 0, which a sync starting later takes over as its own when it is `syncing`).
pub fn gate_by_hand(current: Option<&[u8]>, state: GateState) -> Gate {
    match current.and_then(|v| Gate::decode(v).ok()) {
        Some(g) => Gate { state, ..g },
        None => Gate { state, epoch: 0, proven_at: None },
    }
}

/// One resolved timeline entry.
#[derive(Debug, Clone)]
pub struct Scheduled {
    pub at: Duration,
    pub when: Option<Condition>,
    pub act: Act,
}

impl Scheduled {
    /// Whether the entry's `when:` holds (its time is the driver's to check).
    pub fn ready(&self, caught_up: bool, failover_ended: impl FnOnce() -> bool) -> bool {
        match self.when {
            None => true,
            Some(Condition::SyncCaughtUp) => caught_up,
            Some(Condition::FailoverEnded) => failover_ended(),
        }
    }
}

/// What both backends' drivers measure of convergence: when it is timed from (the last entry
/// that [`Act::heals`], never before the sync's start) and when the sync next caught up.
#[derive(Debug, Clone, Copy)]
pub struct Convergence {
    sync_start_ms: u64,
    pub last_heal_ms: u64,
    pub caught_up_ms: Option<u64>,
}

impl Convergence {
    /// The sync's start begins its job: convergence is timed from it when nothing heals later.
    pub fn new(s: &Scenario) -> Self {
        let sync_start_ms = (s.sync.start_s * 1000.0) as u64;
        Convergence { sync_start_ms, last_heal_ms: sync_start_ms, caught_up_ms: None }
    }

    /// `act` fired at `now_ms`.
    pub fn fired(&mut self, act: &Act, now_ms: u64) {
        if act.heals() {
            // Never before the sync's start: a heal before it (a restart of a sync still waiting
            // to start) leaves nothing to converge yet (case 252 of explorer seed 20261123 was
            // timed from a restart at 10 ms).
            *self = Convergence { last_heal_ms: now_ms.max(self.sync_start_ms), caught_up_ms: None, ..*self };
        }
    }

    /// Whether the sync is caught up at `now_ms` (the drivers ask at every step).
    pub fn observe(&mut self, caught_up: bool, now_ms: u64) {
        if self.caught_up_ms.is_none() && caught_up {
            self.caught_up_ms = Some(now_ms);
        }
    }
}

#[derive(Debug)]
pub struct Invalid {
    pub at: Option<Location>,
    /// The top-level field an error without a location is about.
    pub field: &'static str,
    pub message: String,
}

fn top(field: &'static str, message: impl Into<String>) -> Invalid {
    Invalid { at: None, field, message: message.into() }
}

/// Resolves one entry; the error has no location yet.
fn act(e: &Entry) -> Result<Act, String> {
    let kind_of = |k: &str| {
        Kind::by_name(k).ok_or_else(|| {
            let known: Vec<&str> = kind::ALL.iter().map(|k| k.kind).collect();
            format!("unknown kind `{k}` (known: {})", known.join(", "))
        })
    };
    let mut acts = Vec::new();
    if let Some([a, b]) = e.partition {
        acts.push(Act::Partition(a, b));
    }
    if let Some([a, b]) = e.heal {
        acts.push(Act::Heal(a, b));
    }
    if let Some([a, b]) = e.partition_oneway {
        acts.push(Act::PartitionOneway(a, b));
    }
    if let Some([a, b]) = e.heal_oneway {
        acts.push(Act::HealOneway(a, b));
    }
    if let Some([a, b]) = e.reset {
        acts.push(Act::Reset(a, b));
    }
    if let Some(d) = &e.delay {
        acts.push(Act::Delay(d.link[0], d.link[1], Duration::from_millis(d.ms)));
    }
    if let Some(d) = &e.slow_disk {
        if d.ms > DISK_LATENCY_MS_MAX {
            return Err(format!("slow_disk ms must be at most {DISK_LATENCY_MS_MAX}"));
        }
        acts.push(Act::SlowDisk(d.side, Duration::from_millis(d.ms)));
    }
    if let Some(h) = e.crash {
        acts.push(Act::Crash(h));
    }
    if let Some(h) = e.restart {
        acts.push(Act::Restart(h));
    }
    if let Some(s) = e.compact {
        acts.push(Act::Compact(s));
    }
    if let Some(s) = e.snapshot_save {
        acts.push(Act::SnapshotSave(s));
    }
    if let Some(r) = &e.snapshot_restore {
        if r.bump_revision > BUMP_REVISION_MAX {
            return Err(format!("bump_revision must be at most {BUMP_REVISION_MAX}"));
        }
        acts.push(Act::SnapshotRestore(r.side, r.bump_revision as i64));
    }
    if let Some(s) = &e.scale {
        acts.push(Act::Scale { cluster: s.cluster.clone(), replicas: s.replicas });
    }
    if let Some(p) = &e.pause {
        acts.push(Act::Pause { side: p.side, cluster: p.cluster.clone(), paused: p.paused });
    }
    if let Some(c) = &e.recreate_machineset {
        acts.push(Act::RecreateMachineSet { side: c.side, cluster: c.cluster.clone() });
    }
    if let Some(c) = &e.create_workload {
        acts.push(Act::CreateWorkload { cluster: c.cluster.clone(), machines: c.machines });
    }
    if let Some(s) = e.create_misnamed_global {
        acts.push(Act::CreateMisnamedGlobal(s));
    }
    if let Some(r) = &e.rollout_plans {
        acts.push(Act::RolloutPlans { cluster: r.cluster.clone(), side: r.side });
    }
    if let Some(o) = &e.delete {
        acts.push(Act::Delete { side: o.side, kind: kind_of(&o.kind)?, name: o.name.clone() });
    }
    if let Some(o) = &e.lose_key {
        acts.push(Act::LoseKey { side: o.side, kind: kind_of(&o.kind)?, name: o.name.clone() });
    }
    if let Some(s) = e.rotate_key {
        acts.push(Act::RotateKey(s));
    }
    if let Some(s) = e.switch_dns {
        acts.push(Act::SwitchDns(s));
    }
    if let Some(s) = e.set_gate {
        acts.push(Act::Gate(s, GateState::Syncing));
    }
    if let Some(s) = e.clear_gate {
        acts.push(Act::Gate(s, GateState::Cleared));
    }
    if let Some(f) = &e.failover {
        acts.push(Act::Failover(f.clone()));
    }
    if e.abort.is_some() {
        acts.push(Act::Abort);
    }
    if e.failback.is_some() {
        acts.push(Act::Failback);
    }
    if e.uninstall_sync.is_some() {
        acts.push(Act::UninstallSync);
    }
    if e.reinstall_sync.is_some() {
        acts.push(Act::ReinstallSync);
    }
    if e.restart_agents == Some(true) {
        acts.push(Act::RestartAgents);
    }
    match acts.len() {
        1 => Ok(acts.pop().expect("one")),
        0 => Err("a timeline entry needs an action (partition, heal, crash, scale, failover, …)".into()),
        n => Err(format!("a timeline entry takes exactly one action, this one has {n}")),
    }
}

/// The timeline in firing order (time, then document order).
pub fn resolve(s: &Scenario) -> Vec<Scheduled> {
    let mut out: Vec<Scheduled> = s
        .timeline
        .iter()
        .map(|e| Scheduled {
            at: Duration::from_secs_f64(e.value.at_s.unwrap_or(0.0)),
            when: e.value.when,
            act: act(&e.value).expect("validated"),
        })
        .collect();
    out.sort_by_key(|e| e.at);
    out
}

pub fn validate(s: &Scenario) -> Result<(), Invalid> {
    let t = &s.topology;
    if !(1..=sim::topology::CLUSTERS_MAX).contains(&t.clusters) {
        return Err(top("topology", format!("clusters must be 1..={}", sim::topology::CLUSTERS_MAX)));
    }
    if !(2..=sim::topology::MACHINES_PER_CLUSTER_MAX).contains(&t.machines) {
        return Err(top("topology", format!("machines must be 2..={}", sim::topology::MACHINES_PER_CLUSTER_MAX)));
    }
    if !(1..=DURATION_S_MAX).contains(&s.duration_s) {
        return Err(top("duration_s", format!("duration_s must be 1..={DURATION_S_MAX}")));
    }
    if !(1..=100).contains(&s.tick_ms) {
        return Err(top("tick_ms", "tick_ms must be 1..=100"));
    }
    if s.seeds.is_empty() || s.seeds.len() > SEEDS_MAX {
        return Err(top("seeds", format!("seeds must list 1..={SEEDS_MAX} seeds")));
    }
    if !(0.0..=WRITES_PER_S_MAX).contains(&s.traffic.writes_per_s) {
        return Err(top("traffic", format!("writes_per_s must be 0..={WRITES_PER_S_MAX}")));
    }
    if !(0.0..s.duration_s as f64).contains(&s.sync.start_s) {
        return Err(top("sync", "sync.start_s must be within the duration"));
    }
    if s.sync.zombie_s.is_some_and(|z| !(0.0..s.duration_s as f64).contains(&z)) {
        return Err(top("sync", "sync.zombie_s must be within the duration"));
    }
    // Only bare-metal hosts carry out plans: elsewhere the invariant has nothing to fail on.
    let bare_metal_only = [Invariant::PlansNeverRegress];
    let named = s.expect.fail.iter().chain(s.teeth.values().flatten());
    if let Some(i) = named.clone().find(|i| bare_metal_only.contains(i))
        && t.provider != crate::scenario::Provider::Baremetal
    {
        return Err(top(
            if s.expect.fail.contains(i) { "expect" } else { "teeth" },
            format!("invariant `{}` needs `provider: baremetal`", i.name()),
        ));
    }
    if s.teeth.contains_key(&Variant::Real) {
        return Err(top("teeth", "teeth name mutants; `real` is the code the expectations are for"));
    }
    if s.teeth.values().any(Vec::is_empty) {
        return Err(top("teeth", "each mutant must name at least one invariant it makes fail"));
    }
    if s.expect.converge_s_per_1k_keys <= 0.0 {
        return Err(top("expect", "converge_s_per_1k_keys must be positive"));
    }
    if s.timeline.len() > TIMELINE_MAX {
        return Err(top("timeline", format!("at most {TIMELINE_MAX} timeline entries")));
    }
    validate_timeline(s)
}

fn validate_timeline(s: &Scenario) -> Result<(), Invalid> {
    let mut order: Vec<usize> = (0..s.timeline.len()).collect();
    order.sort_by(|&a, &b| {
        let t = |i: usize| s.timeline[i].value.at_s.unwrap_or(0.0);
        t(a).total_cmp(&t(b)).then(a.cmp(&b))
    });
    let has_failover = s.failover().is_some();
    let mut cut: BTreeSet<(Host, Host)> = BTreeSet::new();
    let mut cut_oneway: BTreeSet<(Host, Host)> = BTreeSet::new();
    let mut down: BTreeSet<Host> = BTreeSet::new();
    let mut clusters: BTreeSet<String> = (0..s.topology.clusters).map(sim::topology::cluster_name).collect();
    let mut misnamed: BTreeSet<Side> = BTreeSet::new();
    let mut failovers = 0;
    let mut aborts = 0;
    let mut failbacks = 0;
    let (mut uninstalls, mut reinstalls) = (0, 0);
    let mut saved: BTreeSet<Side> = BTreeSet::new();
    for i in order {
        let e = &s.timeline[i];
        let fail = |message: String| Invalid { at: Some(e.referenced), field: "timeline", message };
        let at_s = e.value.at_s.unwrap_or(0.0);
        if e.value.at_s.is_none() && e.value.when.is_none() {
            return Err(fail("a timeline entry needs `at_s`, `when`, or both".into()));
        }
        if !(0.0..s.duration_s as f64).contains(&at_s) {
            return Err(fail(format!("at_s {at_s} is outside the scenario's 0..{} s", s.duration_s)));
        }
        if e.value.when == Some(Condition::FailoverEnded) && !has_failover {
            return Err(fail("`when: failover.ended` but the timeline has no failover".into()));
        }
        let link = |a: Host, b: Host| if a <= b { (a, b) } else { (b, a) };
        let a = act(&e.value).map_err(fail)?;
        if s.sync.zombie_s.is_none() && a.hosts().contains(&Host::SyncZombie) {
            return Err(fail(
                "`sync-zombie` is the process of `sync.zombie_s`, which this scenario does not start".into(),
            ));
        }
        match a {
            Act::Partition(a, b) | Act::Reset(a, b) | Act::Delay(a, b, _) | Act::PartitionOneway(a, b) if a == b => {
                return Err(fail(format!("a link joins two hosts, not {} to itself", a.name())));
            }
            Act::Partition(a, b) => {
                cut.insert(link(a, b));
            }
            Act::PartitionOneway(a, b) if !cut_oneway.insert((a, b)) => {
                return Err(fail(format!("{} → {} is already held", a.name(), b.name())));
            }
            Act::HealOneway(a, b) if !cut_oneway.remove(&(a, b)) => {
                return Err(fail(format!(
                    "heal_oneway of {} → {}, which no earlier entry holds in that direction",
                    a.name(),
                    b.name()
                )));
            }
            Act::Heal(a, b) if !cut.remove(&link(a, b)) => {
                return Err(fail(format!("heal of {}–{}, which no earlier entry partitions", a.name(), b.name())));
            }
            Act::Crash(h) => {
                if h == Host::Orchestrator && !has_failover {
                    return Err(fail("crash of the orchestrator, but the timeline has no failover".into()));
                }
                if !down.insert(h) {
                    return Err(fail(format!("{} is already crashed", h.name())));
                }
            }
            Act::SnapshotSave(side) => {
                saved.insert(side);
            }
            Act::SnapshotRestore(side, _) => {
                if !saved.contains(&side) {
                    return Err(fail(format!("snapshot_restore of the {}, which no earlier entry saves", side.name())));
                }
                let host = if side == Side::Primary { Host::Primary } else { Host::Standby };
                if down.contains(&host) {
                    return Err(fail(format!("snapshot_restore of the {}, which is crashed", side.name())));
                }
            }
            Act::Restart(h) if !down.remove(&h) => {
                return Err(fail(format!("restart of {}, which no earlier entry crashes", h.name())));
            }
            Act::Scale { cluster, replicas } => {
                if !clusters.contains(&cluster) {
                    return Err(fail(format!("scale of `{cluster}`, a cluster the topology does not have")));
                }
                if replicas as usize >= sim::topology::MACHINES_PER_CLUSTER_MAX {
                    return Err(fail("replicas out of range".into()));
                }
            }
            Act::Pause { cluster, .. } if !clusters.contains(&cluster) => {
                return Err(fail(format!("pause of `{cluster}`, a cluster the topology does not have")));
            }
            // Only the topology's clusters have a MachineSet `<cluster>-md-0` (a created one's is
            // named by its MachineDeployment).
            Act::RecreateMachineSet { cluster, .. }
                if !(0..s.topology.clusters).any(|i| sim::topology::cluster_name(i) == cluster) =>
            {
                return Err(fail(format!("recreate_machineset of `{cluster}`, not one of the topology's clusters")));
            }
            Act::CreateMisnamedGlobal(side) => {
                let already = side == Side::Primary && s.topology.misnamed_global;
                if already || !misnamed.insert(side) {
                    return Err(fail(format!(
                        "create_misnamed_global on the {}, which already has `{}`",
                        side.name(),
                        sim::topology::MISNAMED_GLOBAL
                    )));
                }
            }
            Act::Gate(Side::Primary, _) if !s.has_failback() => {
                return Err(fail(
                    "a gate on the primary holds nothing: only a failback's reverse sync gates its controllers".into(),
                ));
            }
            Act::RolloutPlans { cluster, .. } => {
                if s.topology.provider != crate::scenario::Provider::Baremetal {
                    return Err(fail("rollout_plans needs `provider: baremetal` (plans are bare-metal hosts')".into()));
                }
                if !clusters.contains(&cluster) {
                    return Err(fail(format!("rollout_plans of `{cluster}`, a cluster the topology does not have")));
                }
            }
            Act::CreateWorkload { cluster, machines } => {
                if !(1..=sim::topology::MACHINES_PER_CLUSTER_MAX as u64).contains(&machines) {
                    return Err(fail("machines out of range".into()));
                }
                if !clusters.insert(cluster.clone()) {
                    return Err(fail(format!("cluster `{cluster}` already exists")));
                }
            }
            Act::Failover(_) => {
                failovers += 1;
                if failovers > 1 {
                    return Err(fail("one failover per scenario (`failback: {}` fails back)".into()));
                }
            }
            Act::Abort => {
                // Entries run in time order, so an abort sorted before the failover has nothing
                // to abort yet.
                if failovers == 0 {
                    return Err(fail("an abort needs a failover at or before it in the timeline".into()));
                }
                aborts += 1;
                if aborts > 1 {
                    return Err(fail("one abort per scenario".into()));
                }
            }
            Act::Failback => {
                if failovers == 0 {
                    return Err(fail("a failback needs a failover before it in the timeline".into()));
                }
                if aborts > 0 {
                    return Err(fail("a failback after an abort has no failover to undo".into()));
                }
                failbacks += 1;
                if failbacks > 1 {
                    return Err(fail("one failback per scenario".into()));
                }
            }
            Act::UninstallSync => {
                if has_failover {
                    return Err(fail("an upgrade's uninstall and a failover in one scenario are not modelled".into()));
                }
                uninstalls += 1;
                if uninstalls > 1 {
                    return Err(fail("one uninstall_sync per scenario".into()));
                }
            }
            Act::ReinstallSync => {
                if uninstalls == 0 {
                    return Err(fail("reinstall_sync needs an uninstall_sync before it".into()));
                }
                reinstalls += 1;
                if reinstalls > 1 {
                    return Err(fail("one reinstall_sync per scenario".into()));
                }
            }
            _ => {}
        }
    }
    Ok(())
}
