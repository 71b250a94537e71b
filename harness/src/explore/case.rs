//! One random case of the explorer: a workload and a fault schedule drawn from a vocabulary of
//! faults the real code must survive, and its translation into a scenario that `drlab run`
//! replays. Every number is a range proptest can shrink toward the small and the quiet.

use proptest::prelude::*;
use serde_saphyr::{Location, Spanned};

use crate::scenario::{
    AgentAuth, Condition, CreateWorkload, Delay, Encryption, Entry, Expect, FailbackSpec, FailoverEnd, FailoverSpec,
    Host, Invariant, MachineSetOrder, ObjectRef, Pause, Provider, Scale, Scenario, Side, SlowDisk, SnapshotRestore,
    SyncSpec, Topology, Traffic, Variant,
};

/// Limits of the vocabulary (small enough that 256 cases run in minutes on two cores).
pub const CLUSTERS_MAX: usize = 4;
pub const MACHINES_MAX: usize = 5;
pub const FAULTS_MAX: usize = 6;
pub const WRITES_PER_S_MAX: u32 = 40;
/// Faults start within the first minute; the schedule then settles.
pub const FAULT_WINDOW_DS: u32 = 600;
/// A crash loop kills the sync at most this often.
pub const KILLS_MAX: u32 = 20;
/// Quiet time after the last fault (or the failover) so the checks judge a settled world.
const SETTLE_S: u64 = 60;
/// A failover's own time: the DNS TTL (at most 60 s) plus its steps.
const FAILOVER_SETTLE_S: u64 = 150;
/// A failback's: the reverse sync's first copy, then a failover back.
const FAILBACK_SETTLE_S: u64 = 200;
/// A DR-aware upgrade's: the reinstalled sync's resync onto the diverged standby.
const UPGRADE_SETTLE_S: u64 = 120;

/// The link a network fault is on: the sync's link to one side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Peer {
    Primary,
    Standby,
}

impl Peer {
    fn host(self) -> Host {
        match self {
            Peer::Primary => Host::Primary,
            Peer::Standby => Host::Standby,
        }
    }

    fn side(self) -> Side {
        match self {
            Peer::Primary => Side::Primary,
            Peer::Standby => Side::Standby,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Fault {
    /// The link is held for a while, then healed (held segments delivered, connections reset).
    Partition { peer: Peer, at_ds: u32, for_ds: u32 },
    /// The link is slow for a while.
    Delay { peer: Peer, at_ds: u32, for_ds: u32, ms: u64 },
    /// One direction of the link is held for a while (`to_sync`: the side's answers to the sync;
    /// else the sync's requests), then released.
    OneWay { peer: Peer, to_sync: bool, at_ds: u32, for_ds: u32 },
    /// One side's etcd needs `ms` per write for its fsync for a while.
    SlowDisk { peer: Peer, at_ds: u32, for_ds: u32, ms: u64 },
    /// Every connection on the link is reset.
    Reset { peer: Peer, at_ds: u32 },
    /// The sync process is killed `kills` times, `every_ms` apart, each time restarted `down_ms`
    /// later (a crash loop).
    CrashLoop { at_ds: u32, kills: u32, every_ms: u32, down_ms: u32 },
    /// One side's etcd is compacted at its head.
    Compact { peer: Peer, at_ds: u32 },
    /// A new workload cluster is created on the primary.
    CreateWorkload { at_ds: u32, machines: u64 },
    /// A workload cluster's MachineDeployment is scaled (a scripted scale-down may delete).
    Scale { cluster: usize, at_ds: u32, replicas: u64 },
}

/// What a lasting fault holds while it lasts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Held {
    Partition(Peer),
    Delay(Peer),
    Disk(Peer),
    SyncProcess,
}

impl Fault {
    /// The simulated milliseconds it occupies, and what it holds (two faults on the same thing
    /// may not overlap: a link is partitioned once at a time, a host crashed once).
    fn span(&self) -> (u64, u64, Option<Held>) {
        let ms = |ds: u32| u64::from(ds) * 100;
        match *self {
            Fault::Partition { peer, at_ds, for_ds } => (ms(at_ds), ms(at_ds + for_ds), Some(Held::Partition(peer))),
            Fault::Delay { peer, at_ds, for_ds, .. } => (ms(at_ds), ms(at_ds + for_ds), Some(Held::Delay(peer))),
            // A link held one way is a link cut: it may not overlap a partition of it.
            Fault::OneWay { peer, at_ds, for_ds, .. } => (ms(at_ds), ms(at_ds + for_ds), Some(Held::Partition(peer))),
            Fault::SlowDisk { peer, at_ds, for_ds, .. } => (ms(at_ds), ms(at_ds + for_ds), Some(Held::Disk(peer))),
            Fault::CrashLoop { at_ds, kills, every_ms, .. } => {
                (ms(at_ds), ms(at_ds) + u64::from(kills * every_ms), Some(Held::SyncProcess))
            }
            Fault::Reset { at_ds, .. }
            | Fault::Compact { at_ds, .. }
            | Fault::CreateWorkload { at_ds, .. }
            | Fault::Scale { at_ds, .. } => (ms(at_ds), ms(at_ds), None),
        }
    }
}

/// A planned failover after the faults, once the sync reports caught up.
#[derive(Debug, Clone, PartialEq)]
pub struct FailoverPlan {
    /// Seconds after the last fault ends.
    pub after_s: u32,
    /// The orchestrator crashes this long into the failover and is restarted `down_ms` later.
    pub orchestrator_crash: Option<(u32, u32)>,
    /// The standby loses this workload cluster's CA Secret behind the sync's back just before
    /// the failover: the guard must refuse.
    pub lose_ca: Option<usize>,
    /// The standby's API server authenticates ServiceAccount tokens unlike the primary's (seed
    /// 000's shared-token rules broken): preflight blocks, so the operator forces; validation
    /// must then fail, keeping the Clusters paused, and the agents' token must fail.
    pub agent_auth: AgentAuth,
    /// A second sync process nobody stops streams from the sync's start on: after the failover
    /// every txn it tries must be refused by its gate compare.
    pub zombie: bool,
    /// A failback this many seconds after the failover ended (when it ended done).
    pub failback: Option<Failback>,
}

/// A failback after a failover that ended done.
#[derive(Debug, Clone, PartialEq)]
pub struct Failback {
    /// Seconds after the failover's settling time.
    pub after_s: u32,
    /// While it serves, the standby scales this workload cluster's MachineDeployment to this
    /// many replicas (a scale-down deletes a worker the old primary still holds: the reverse
    /// sync's baseline makes it a copy the old primary may delete).
    pub scale: Option<(usize, u64)>,
}

/// A DR-aware upgrade after the faults (when no failover is drawn): the guarded uninstall once
/// the sync is caught up, the global clusters diverging while it is gone, then a reinstall onto
/// the diverged standby (seed 000's upgrade runbook).
#[derive(Debug, Clone, PartialEq)]
pub struct Upgrade {
    /// Seconds after the last fault ends.
    pub after_s: u32,
    /// How long the sync stays uninstalled.
    pub for_s: u32,
    /// Meanwhile the primary scales this workload cluster's MachineDeployment to this many
    /// replicas (a scale-down deletes a Machine the standby still holds a copy of).
    pub scale: Option<(usize, u64)>,
    /// Meanwhile both sides compact at their heads (so only the gate's proof can show whose
    /// the standby's copies are).
    pub compact: bool,
}

/// The primary's etcd restored in place from a snapshot after the faults (when neither a
/// failover nor an upgrade is drawn, and on VMs: a bare-metal plan generation taken back is a
/// hazard of the restore itself, not of the sync): its revision goes back; the sync must
/// resync and converge to the restored primary.
#[derive(Debug, Clone, PartialEq)]
pub struct Restore {
    /// Seconds after the last fault ends that the snapshot is saved (the world settles first:
    /// a Machine created between the save and the restore is lost with the restore).
    pub after_s: u32,
    /// The sync is down across the restore, for this long, so that when it comes back the
    /// restored primary's head may be past its checkpoint again (only its anchor tells).
    pub sync_down_s: Option<u32>,
    /// etcdutl's `--bump-revision N --mark-compacted`.
    pub bump: bool,
    /// Between the save and the restore the primary pauses this workload cluster: a write only
    /// the history the restore takes back holds, and that nothing writes again (the heartbeats
    /// rewrite every Machine), so a sync that resumes over the restore keeps it for good.
    pub pause: Option<usize>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Case {
    /// The world's seed (not shrunk: another seed is another world).
    pub world_seed: u64,
    pub clusters: usize,
    pub machines: usize,
    pub encryption: Encryption,
    pub dns_ttl_s: u64,
    pub writes_per_s: u32,
    pub gc_lag_ms_max: u64,
    pub compaction_interval_s: u64,
    /// The controller managers run leader election (leases renewed through their etcd).
    pub leader_election: bool,
    pub sync_start_ds: u32,
    pub faults: Vec<Fault>,
    pub failover: Option<FailoverPlan>,
    /// The workload clusters run on bare metal (reset plans; plans-never-regress judged).
    pub bare_metal: bool,
    /// Taken only when no failover is drawn (the two are not modelled in one scenario).
    pub upgrade: Option<Upgrade>,
    /// Taken only without a failover or an upgrade, on VMs.
    pub restore: Option<Restore>,
}

fn peer() -> impl Strategy<Value = Peer> {
    prop_oneof![Just(Peer::Primary), Just(Peer::Standby)]
}

fn fault() -> impl Strategy<Value = Fault> {
    let at = 0..FAULT_WINDOW_DS;
    prop_oneof![
        3 => (peer(), at.clone(), 1u32..400).prop_map(|(peer, at_ds, for_ds)| Fault::Partition { peer, at_ds, for_ds }),
        2 => (peer(), at.clone(), 1u32..400, 1u64..300)
            .prop_map(|(peer, at_ds, for_ds, ms)| Fault::Delay { peer, at_ds, for_ds, ms }),
        1 => (peer(), at.clone()).prop_map(|(peer, at_ds)| Fault::Reset { peer, at_ds }),
        1 => (peer(), any::<bool>(), at.clone(), 1u32..400)
            .prop_map(|(peer, to_sync, at_ds, for_ds)| Fault::OneWay { peer, to_sync, at_ds, for_ds }),
        1 => (peer(), at.clone(), 1u32..400, 1u64..300)
            .prop_map(|(peer, at_ds, for_ds, ms)| Fault::SlowDisk { peer, at_ds, for_ds, ms }),
        3 => (at.clone(), 1..=KILLS_MAX, 200u32..2000, 10u32..1000).prop_map(|(at_ds, kills, every_ms, down)| {
            // Restarted before the next kill.
            Fault::CrashLoop { at_ds, kills, every_ms, down_ms: down.min(every_ms - 100) }
        }),
        // Either side: once the standby's history is compacted past the sync's writes, only the
        // sync's ledger proves which keys it wrote (scenarios/surplus-after-standby-compaction.yaml).
        2 => (peer(), at.clone()).prop_map(|(peer, at_ds)| Fault::Compact { peer, at_ds }),
        2 => (at.clone(), 1u64..=150).prop_map(|(at_ds, machines)| Fault::CreateWorkload { at_ds, machines }),
        1 => (0..CLUSTERS_MAX, at, 0u64..=6).prop_map(|(cluster, at_ds, replicas)| Fault::Scale {
            cluster,
            at_ds,
            replicas
        }),
    ]
}

fn agent_auth() -> impl Strategy<Value = AgentAuth> {
    prop_oneof![
        6 => Just(AgentAuth::Same),
        1 => Just(AgentAuth::DifferentKey),
        1 => Just(AgentAuth::DifferentIssuer),
        1 => Just(AgentAuth::DifferentAudience),
    ]
}

fn failback() -> impl Strategy<Value = Failback> {
    (0u32..60, prop::option::of((0..CLUSTERS_MAX, 0u64..=6))).prop_map(|(after_s, scale)| Failback { after_s, scale })
}

fn failover_plan() -> impl Strategy<Value = FailoverPlan> {
    (
        0u32..30,
        prop::option::of((100u32..3000, 100u32..3000)),
        prop::option::weighted(0.25, 0..CLUSTERS_MAX),
        agent_auth(),
        prop::bool::weighted(0.25),
        prop::option::weighted(0.3, failback()),
    )
        .prop_map(|(after_s, orchestrator_crash, lose_ca, agent_auth, zombie, failback)| FailoverPlan {
            after_s,
            orchestrator_crash,
            lose_ca,
            agent_auth,
            zombie,
            failback,
        })
}

fn upgrade() -> impl Strategy<Value = Upgrade> {
    (0u32..30, 10u32..60, prop::option::of((0..CLUSTERS_MAX, 0u64..=6)), any::<bool>())
        .prop_map(|(after_s, for_s, scale, compact)| Upgrade { after_s, for_s, scale, compact })
}

fn restore() -> impl Strategy<Value = Restore> {
    (20u32..60, prop::option::of(5u32..60), prop::bool::weighted(0.25), prop::option::of(0..CLUSTERS_MAX))
        .prop_map(|(after_s, sync_down_s, bump, pause)| Restore { after_s, sync_down_s, bump, pause })
}

/// The explorer's strategy. The bare-metal, upgrade and restore draws come last, so the cases
/// drawn before them (and the findings that name their indices) stay what they were.
pub fn strategy() -> impl Strategy<Value = Case> {
    let world = (
        any::<u64>().no_shrink(),
        1..=CLUSTERS_MAX,
        2..=MACHINES_MAX,
        prop_oneof![Just(Encryption::Same), Just(Encryption::Different)],
        5u64..=60,
        0..=WRITES_PER_S_MAX,
        0u64..=500,
        prop_oneof![Just(0u64), Just(20), Just(60), Just(300)],
        any::<bool>(),
    );
    let schedule =
        (5u32..300, prop::collection::vec(fault(), 0..=FAULTS_MAX), prop::option::weighted(0.5, failover_plan()));
    let later = (prop::bool::weighted(0.25), prop::option::weighted(0.3, upgrade()));
    let last = prop::option::weighted(0.3, restore());
    (world, schedule, later, last).prop_map(|(w, (sync_start_ds, faults, failover), (bare_metal, upgrade), restore)| {
        Case {
            world_seed: w.0,
            clusters: w.1,
            machines: w.2,
            encryption: w.3,
            dns_ttl_s: w.4,
            writes_per_s: w.5,
            gc_lag_ms_max: w.6,
            compaction_interval_s: w.7,
            leader_election: w.8,
            sync_start_ds,
            faults,
            failover,
            bare_metal,
            upgrade,
            restore,
        }
    })
}

fn entry(at_ms: u64, f: impl FnOnce(&mut Entry)) -> Spanned<Entry> {
    let mut e = Entry { at_s: Some(at_ms as f64 / 1000.0), ..Entry::default() };
    f(&mut e);
    Spanned::new(e, Location::UNKNOWN, Location::UNKNOWN)
}

impl Case {
    /// The faults that fire: a fault overlapping an earlier one on the same link or host is
    /// dropped (a link is cut once at a time), as is a scale of a cluster the topology lacks.
    pub fn effective_faults(&self) -> Vec<&Fault> {
        let mut kept: Vec<&Fault> = Vec::new();
        for f in &self.faults {
            let (from, to, on) = f.span();
            let clash = on.is_some()
                && kept.iter().any(|k| {
                    let (kf, kt, kon) = k.span();
                    kon == on && from <= kt && kf <= to
                });
            let unknown = matches!(f, Fault::Scale { cluster, .. } if *cluster >= self.clusters);
            if !clash && !unknown {
                kept.push(f);
            }
        }
        kept
    }

    /// The scenario this case is, named `name`, run with `variant`.
    pub fn scenario(&self, name: &str, variant: Variant, proves: &str) -> Scenario {
        let mut timeline = Vec::new();
        let mut end_ms = u64::from(self.sync_start_ds) * 100;
        let mut created = 0;
        for f in self.effective_faults() {
            let (from, to, _) = f.span();
            end_ms = end_ms.max(to);
            match *f {
                Fault::Partition { peer, .. } => {
                    timeline.push(entry(from, |e| e.partition = Some([Host::Sync, peer.host()])));
                    timeline.push(entry(to, |e| e.heal = Some([Host::Sync, peer.host()])));
                }
                Fault::Delay { peer, ms, .. } => {
                    let link = [Host::Sync, peer.host()];
                    timeline.push(entry(from, |e| e.delay = Some(Delay { link, ms })));
                    timeline.push(entry(to, |e| e.delay = Some(Delay { link, ms: 0 })));
                }
                Fault::OneWay { peer, to_sync, .. } => {
                    let held = if to_sync { [peer.host(), Host::Sync] } else { [Host::Sync, peer.host()] };
                    timeline.push(entry(from, |e| e.partition_oneway = Some(held)));
                    timeline.push(entry(to, |e| e.heal_oneway = Some(held)));
                }
                Fault::SlowDisk { peer, ms, .. } => {
                    let side = peer.side();
                    timeline.push(entry(from, |e| e.slow_disk = Some(SlowDisk { side, ms })));
                    timeline.push(entry(to, |e| e.slow_disk = Some(SlowDisk { side, ms: 0 })));
                }
                Fault::Reset { peer, .. } => timeline.push(entry(from, |e| e.reset = Some([Host::Sync, peer.host()]))),
                Fault::CrashLoop { kills, every_ms, down_ms, .. } => {
                    for k in 0..u64::from(kills) {
                        let t = from + k * u64::from(every_ms);
                        timeline.push(entry(t, |e| e.crash = Some(Host::Sync)));
                        timeline.push(entry(t + u64::from(down_ms), |e| e.restart = Some(Host::Sync)));
                    }
                }
                Fault::Compact { peer, .. } => timeline.push(entry(from, |e| e.compact = Some(peer.side()))),
                Fault::CreateWorkload { machines, .. } => {
                    let cluster = format!("wc-new-{created}");
                    created += 1;
                    timeline.push(entry(from, |e| e.create_workload = Some(CreateWorkload { cluster, machines })));
                }
                Fault::Scale { cluster, replicas, .. } => {
                    let cluster = sim::topology::cluster_name(cluster);
                    timeline.push(entry(from, |e| e.scale = Some(Scale { cluster, replicas })));
                }
            }
        }
        let mut duration_s = end_ms.div_ceil(1000) + SETTLE_S;
        let mut expect = Expect::default();
        let mut zombie_s = None;
        let mut agent_auth = AgentAuth::Same;
        if let Some(plan) = &self.failover {
            let at_ms = end_ms + u64::from(plan.after_s) * 1000 + 1000;
            let mut spec = FailoverSpec::default();
            let lose_ca = plan.lose_ca.filter(|c| *c < self.clusters);
            if let Some(c) = lose_ca {
                let name = format!("{}-ca", sim::topology::cluster_name(c));
                // Once the sync has copied it: a key lost before its copy is simply copied later,
                // and the failover rightly goes on (case 10 of seed 20261123, once the explorer
                // drew one-way partitions and slow disks).
                timeline.push(entry(at_ms - 500, |e| {
                    e.when = Some(Condition::SyncCaughtUp);
                    e.lose_key = Some(ObjectRef { side: Side::Standby, kind: "Secret".into(), name })
                }));
                expect.failover = FailoverEnd::Refused;
            }
            agent_auth = plan.agent_auth;
            if agent_auth != AgentAuth::Same && lose_ca.is_none() {
                // Preflight blocks on the differing token signing; the operator forces it, and
                // validation (the agent token's `auth can-i` on the standby) is the last word.
                spec.force = Some("explorer".into());
                expect.failover = FailoverEnd::ValidationFailed;
                expect.fail = vec![Invariant::AgentTokenWorksAfterFailover];
            }
            if plan.zombie {
                zombie_s = Some(f64::from(self.sync_start_ds) / 10.0 + 0.5);
            }
            // As an operator does: not before the sync reports caught up (a failover asked for
            // while the sync has not finished its first copy is declined at preflight).
            timeline.push(entry(at_ms, |e| {
                e.when = Some(Condition::SyncCaughtUp);
                e.failover = Some(spec)
            }));
            if let Some((after_ms, down_ms)) = plan.orchestrator_crash {
                let t = at_ms + u64::from(after_ms);
                timeline.push(entry(t, |e| e.crash = Some(Host::Orchestrator)));
                timeline.push(entry(t + u64::from(down_ms), |e| e.restart = Some(Host::Orchestrator)));
            }
            duration_s = at_ms.div_ceil(1000) + FAILOVER_SETTLE_S;
            if let Some(back) = plan.failback.as_ref().filter(|_| expect.failover == FailoverEnd::Done) {
                if let Some((c, replicas)) = back.scale.filter(|(c, _)| *c < self.clusters) {
                    let cluster = sim::topology::cluster_name(c);
                    timeline.push(entry(duration_s * 1000, |e| {
                        e.when = Some(Condition::FailoverEnded);
                        e.scale = Some(Scale { cluster, replicas })
                    }));
                }
                // Roles are relative: the serving standby syncs back onto the old primary, then
                // a planned failover hands the platform back.
                let at_ms = duration_s * 1000 + 30_000 + u64::from(back.after_s) * 1000;
                timeline.push(entry(at_ms, |e| {
                    e.when = Some(Condition::FailoverEnded);
                    e.failback = Some(FailbackSpec {})
                }));
                duration_s = at_ms.div_ceil(1000) + FAILBACK_SETTLE_S;
            }
        }
        if let Some(u) = self.upgrade.as_ref().filter(|_| self.failover.is_none()) {
            let at_ms = end_ms + u64::from(u.after_s) * 1000 + 1000;
            let back_ms = at_ms + u64::from(u.for_s) * 1000;
            // As the runbook does: uninstall once the sync reports caught up (the entries after
            // it wait for it, keeping the timeline's order).
            timeline.push(entry(at_ms, |e| {
                e.when = Some(Condition::SyncCaughtUp);
                e.uninstall_sync = Some(FailbackSpec {})
            }));
            if let Some((c, replicas)) = u.scale.filter(|(c, _)| *c < self.clusters) {
                let cluster = sim::topology::cluster_name(c);
                timeline.push(entry(at_ms + 1000, |e| e.scale = Some(Scale { cluster, replicas })));
            }
            if u.compact {
                timeline.push(entry(back_ms - 1000, |e| e.compact = Some(Side::Primary)));
                timeline.push(entry(back_ms - 1000, |e| e.compact = Some(Side::Standby)));
            }
            timeline.push(entry(back_ms, |e| e.reinstall_sync = Some(FailbackSpec {})));
            duration_s = back_ms.div_ceil(1000) + UPGRADE_SETTLE_S;
        }
        let alone = self.failover.is_none() && self.upgrade.is_none() && !self.bare_metal;
        if let Some(r) = self.restore.as_ref().filter(|_| alone) {
            let save_ms = end_ms + u64::from(r.after_s) * 1000;
            // Ten seconds of writes (the traffic's) that only the history after the save holds.
            let restore_ms = save_ms + 10_000;
            timeline.push(entry(save_ms, |e| e.snapshot_save = Some(Side::Primary)));
            if let Some(c) = r.pause.filter(|c| *c < self.clusters) {
                let cluster = sim::topology::cluster_name(c);
                timeline.push(entry(save_ms + 2000, |e| {
                    e.pause = Some(Pause { side: Side::Primary, cluster, paused: true })
                }));
            }
            let mut last_ms = restore_ms;
            if let Some(down_s) = r.sync_down_s {
                timeline.push(entry(restore_ms - 5000, |e| e.crash = Some(Host::Sync)));
                last_ms = restore_ms + u64::from(down_s) * 1000;
                timeline.push(entry(last_ms, |e| e.restart = Some(Host::Sync)));
            }
            let bump_revision = if r.bump { 1000 } else { 0 };
            let restore = SnapshotRestore { side: Side::Primary, bump_revision };
            timeline.push(entry(restore_ms, |e| e.snapshot_restore = Some(restore)));
            duration_s = duration_s.max(last_ms.div_ceil(1000) + SETTLE_S);
        }
        Scenario {
            name: name.into(),
            proves: proves.into(),
            topology: Topology {
                clusters: self.clusters,
                machines: self.machines,
                provider: if self.bare_metal { Provider::Baremetal } else { Provider::Vm },
                dns_ttl_s: self.dns_ttl_s,
                encryption: self.encryption,
                misnamed_global: false,
                agent_auth,
                leader_election: self.leader_election,
                machineset_order: MachineSetOrder::AdoptFirst,
            },
            traffic: Traffic {
                writes_per_s: f64::from(self.writes_per_s),
                gc_lag_ms_max: self.gc_lag_ms_max,
                compaction_interval_s: self.compaction_interval_s,
            },
            sync: SyncSpec { start_s: f64::from(self.sync_start_ds) / 10.0, zombie_s, rules: None },
            duration_s,
            tick_ms: 10,
            seeds: vec![self.world_seed],
            variant,
            timeline,
            expect,
            teeth: Default::default(),
        }
    }
}
