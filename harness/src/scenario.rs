//! The scenario format (`scenarios/*.yaml`): a topology, traffic, the sync, a timeline of
//! faults and operator actions, the variant of the code under test, seeds and expectations.
//! Parsed with serde-saphyr; unknown fields, bad types and impossible timelines are errors with
//! file:line:column. [`schema`] is the JSON Schema `drlab schema` prints.

use std::collections::BTreeMap;
use std::path::Path;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_saphyr::Spanned;

/// Limits that keep a scenario a test, not a soak (TIGER_STYLE: a bound on everything).
pub const DURATION_S_MAX: u64 = 6 * 3600;
pub const SEEDS_MAX: usize = 1_000;
pub const TIMELINE_MAX: usize = 1_000;
pub const WRITES_PER_S_MAX: f64 = 1_000.0;

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Short name; the run directory is named after it.
    pub name: String,
    /// What this proves: one paragraph.
    pub proves: String,
    #[serde(default)]
    pub topology: Topology,
    #[serde(default)]
    pub traffic: Traffic,
    #[serde(default)]
    pub sync: SyncSpec,
    /// Simulated seconds the scripted part lasts (a quiet settle follows).
    pub duration_s: u64,
    /// Simulated time per turmoil tick.
    #[serde(default = "default_tick_ms")]
    pub tick_ms: u64,
    /// Seeds `drlab run` uses when none is given (the first) and the test suite runs (all).
    #[serde(default = "default_seeds")]
    pub seeds: Vec<u64>,
    /// The code under test: the real code, or one of its mutants.
    #[serde(default)]
    pub variant: Variant,
    #[serde(default)]
    #[schemars(with = "Vec<Entry>")]
    pub timeline: Vec<Spanned<Entry>>,
    #[serde(default)]
    pub expect: Expect,
    /// Teeth: for each mutant, the invariants this scenario must see fail under it.
    #[serde(default)]
    pub teeth: BTreeMap<Variant, Vec<Invariant>>,
}

fn default_tick_ms() -> u64 {
    10
}

fn default_seeds() -> Vec<u64> {
    vec![1]
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Topology {
    /// Workload clusters (`wc-00`, `wc-01`, …).
    pub clusters: usize,
    /// Machines per workload cluster, its control-plane Machine included.
    pub machines: usize,
    pub provider: Provider,
    pub dns_ttl_s: u64,
    /// Both sides' EncryptionConfiguration: the same key, or a key of the same name with
    /// different bytes on the standby (the usual mistake).
    pub encryption: Encryption,
    /// The primary's global cluster also has a MachineDeployment `workers` without the
    /// `global-` prefix (seed 002).
    pub misnamed_global: bool,
    /// Both sides' ServiceAccount token signing key, issuer and audiences (seed 000's shared
    /// token requirements): the same, or one of them different on the standby.
    #[serde(default)]
    pub agent_auth: AgentAuth,
    /// Each side's controller managers lead through a Lease and each API server keeps its
    /// `masterleases` key (off: the managers always act, as in most scenarios).
    #[serde(default)]
    pub leader_election: bool,
    /// What both sides' MachineSet controllers do first with Machines awaiting adoption:
    /// `adopt-first` (CAPI's reconcile) or `create-first` (the order cluster-api #3770 reports:
    /// replacements first, then the adopted Machines are scaled away).
    #[serde(default)]
    pub machineset_order: MachineSetOrder,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum MachineSetOrder {
    #[default]
    AdoptFirst,
    CreateFirst,
}

impl From<MachineSetOrder> for sim::k8s::capi::MachineSetOrder {
    fn from(o: MachineSetOrder) -> Self {
        match o {
            MachineSetOrder::AdoptFirst => sim::k8s::capi::MachineSetOrder::AdoptFirst,
            MachineSetOrder::CreateFirst => sim::k8s::capi::MachineSetOrder::CreateFirst,
        }
    }
}

impl Default for Topology {
    fn default() -> Self {
        Topology {
            clusters: 2,
            machines: 3,
            provider: Provider::Vm,
            dns_ttl_s: 30,
            encryption: Encryption::Same,
            misnamed_global: false,
            agent_auth: AgentAuth::Same,
            leader_election: false,
            machineset_order: MachineSetOrder::AdoptFirst,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Provider {
    Vm,
    /// Bare metal: BaremetalMachines on registered hosts (MachineInventory); deleting one writes
    /// a reset plan to its host's plan Secret, and hosts read plans whose generation must never
    /// go back (plans-never-regress).
    Baremetal,
}

impl From<Provider> for sim::topology::Provider {
    fn from(p: Provider) -> Self {
        match p {
            Provider::Vm => sim::topology::Provider::Vm,
            Provider::Baremetal => sim::topology::Provider::Baremetal,
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum AgentAuth {
    #[default]
    Same,
    /// The standby's `sa.key` / `sa.pub` differ from the primary's.
    DifferentKey,
    /// The standby's `--service-account-issuer` differs.
    DifferentIssuer,
    /// The standby's `--api-audiences` share none with the primary's tokens.
    DifferentAudience,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Encryption {
    Same,
    Different,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Traffic {
    /// Machine heartbeats per simulated second on the serving cluster.
    pub writes_per_s: f64,
    /// Each garbage-collector informer lags by up to this much.
    pub gc_lag_ms_max: u64,
    /// kube-apiserver's compaction interval; 0: never.
    pub compaction_interval_s: u64,
}

impl Default for Traffic {
    fn default() -> Self {
        Traffic { writes_per_s: 1.0, gc_lag_ms_max: 200, compaction_interval_s: 300 }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SyncSpec {
    /// When the sync host starts (the observers watch from 0).
    pub start_s: f64,
    /// A second sync process the orchestrator does not know of (a replica a botched rollout left
    /// running, host `sync-zombie`), started at this time with the same code and settings: it
    /// resumes from the standby's checkpoint and is never frozen, stopped or uninstalled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zombie_s: Option<f64>,
    /// A rules file's text (`etcd-sync --rules`), whose rules go ahead of the `immutable`
    /// profile's; the hard deny list stands whatever it says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rules: Option<String>,
}

impl Default for SyncSpec {
    fn default() -> Self {
        SyncSpec { start_s: 1.0, zombie_s: None, rules: None }
    }
}

impl SyncSpec {
    /// The sync's rules: the `immutable` profile behind the scenario's rules file, if any.
    pub fn rules(&self) -> Result<sync::rules::Rules, sync::rules::RulesError> {
        let profile = sync::rules::Profile::Immutable;
        match &self.rules {
            Some(text) => sync::rules::Rules::with_text(profile, "sync.rules", text),
            None => Ok(sync::rules::Rules::profile(profile)),
        }
    }
}

/// Where a scenario's etcd servers run: the deterministic simulator, or two real etcd servers on
/// loopback (`harness::real_backend`; real time, verdicts only).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Backend {
    #[default]
    Sim,
    Etcd,
}

impl Backend {
    pub fn parse(s: &str) -> Option<Backend> {
        match s {
            "sim" => Some(Backend::Sim),
            "etcd" => Some(Backend::Etcd),
            _ => None,
        }
    }
}

/// The code under test. Mutants exist only in builds with the `mutants` feature.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Variant {
    #[default]
    Real,
    OwnerOrderOff,
    IgnoreRulesOff,
    UninstallGuardOff,
    FencingOff,
    RawSecretCopy,
    CheckpointOutsideTxn,
    LedgerOff,
    BaselineOff,
    RestoreBlind,
    GateCompareOff,
}

impl Variant {
    pub const MUTANTS: [Variant; 10] = [
        Variant::OwnerOrderOff,
        Variant::IgnoreRulesOff,
        Variant::UninstallGuardOff,
        Variant::FencingOff,
        Variant::RawSecretCopy,
        Variant::CheckpointOutsideTxn,
        Variant::LedgerOff,
        Variant::BaselineOff,
        Variant::RestoreBlind,
        Variant::GateCompareOff,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Variant::Real => "real",
            Variant::OwnerOrderOff => "owner-order-off",
            Variant::IgnoreRulesOff => "ignore-rules-off",
            Variant::UninstallGuardOff => "uninstall-guard-off",
            Variant::FencingOff => "fencing-off",
            Variant::RawSecretCopy => "raw-secret-copy",
            Variant::CheckpointOutsideTxn => "checkpoint-outside-txn",
            Variant::LedgerOff => "ledger-off",
            Variant::BaselineOff => "baseline-off",
            Variant::RestoreBlind => "restore-blind",
            Variant::GateCompareOff => "gate-compare-off",
        }
    }

    pub fn parse(s: &str) -> Option<Variant> {
        std::iter::once(Variant::Real).chain(Variant::MUTANTS).find(|v| v.name() == s)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Invariant {
    NoMachineDeleted,
    NoVmDestroyed,
    StandbyGlobalsUntouched,
    ConvergedAfterHeal,
    NoDependentBeforeOwner,
    SecretsReadableOnStandby,
    NoSplitBrainWrite,
    Rpo,
    Rto,
    ClusterSecretsIntact,
    AgentTokenWorksAfterFailover,
    NoSyncWriteAfterUninstall,
    StandbyLeasesOwn,
    PlansNeverRegress,
}

impl Invariant {
    pub const CHECKED: [Invariant; 14] = [
        Invariant::NoMachineDeleted,
        Invariant::NoVmDestroyed,
        Invariant::StandbyGlobalsUntouched,
        Invariant::ConvergedAfterHeal,
        Invariant::NoDependentBeforeOwner,
        Invariant::SecretsReadableOnStandby,
        Invariant::NoSplitBrainWrite,
        Invariant::Rpo,
        Invariant::Rto,
        Invariant::ClusterSecretsIntact,
        Invariant::AgentTokenWorksAfterFailover,
        Invariant::NoSyncWriteAfterUninstall,
        Invariant::StandbyLeasesOwn,
        Invariant::PlansNeverRegress,
    ];

    pub fn name(self) -> String {
        serde_json::to_value(self).ok().and_then(|v| v.as_str().map(str::to_string)).expect("a unit variant")
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Expect {
    /// Invariants that must fail with the real code (a hazard demonstration); every other
    /// checked invariant must hold.
    #[serde(default)]
    pub fail: Vec<Invariant>,
    /// How the failover must end (when the timeline has one).
    #[serde(default)]
    pub failover: FailoverEnd,
    /// How the operator's abort must end (when the timeline has one).
    #[serde(default)]
    pub abort: AbortEnd,
    /// How the failback must end (when the timeline has one).
    #[serde(default)]
    pub failback: FailoverEnd,
    #[serde(default)]
    pub rpo_keys_max: u64,
    /// Default: the DNS TTL plus 60 s for the steps.
    #[serde(default)]
    pub rto_s_max: Option<u64>,
    /// converged-after-heal: the sync must have caught up within this many simulated seconds
    /// per 1k keys in scope (at least one 1k) after the last heal.
    #[serde(default = "default_converge")]
    pub converge_s_per_1k_keys: f64,
}

fn default_converge() -> f64 {
    30.0
}

impl Default for Expect {
    fn default() -> Self {
        Expect {
            fail: Vec::new(),
            failover: FailoverEnd::Done,
            abort: AbortEnd::Done,
            failback: FailoverEnd::Done,
            rpo_keys_max: 0,
            rto_s_max: None,
            converge_s_per_1k_keys: default_converge(),
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum FailoverEnd {
    #[default]
    Done,
    /// The guard refuses (the standby is not consistent).
    Refused,
    /// A step gives up at its timeout (e.g. the sync cannot catch up).
    TimedOut,
    /// The post-failover validation found a problem: the platform domain points at the
    /// standby, its workload clusters stay paused.
    ValidationFailed,
    /// A precondition of the orchestrator's does not hold, so it acts on nothing (the sync not
    /// running, the platform domain not pointing at the primary).
    PreconditionFailed,
}

/// How an operator's abort must end (when the timeline has one).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum AbortEnd {
    /// The failover is undone: the sync applies, the primary takes writes, its Clusters reconcile.
    #[default]
    Done,
    /// Too late (the sync is uninstalled) or another orchestrator holds the lock.
    Refused,
}

/// One timeline entry: when (a time, a condition, or both: the condition is awaited from the
/// time on) and exactly one action.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    /// Simulated seconds from the start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at_s: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub when: Option<Condition>,
    /// Holds every segment between two hosts (delivered on heal).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partition: Option<[Host; 2]>,
    /// Delivers what was held and resets the link's connections (a keep-alive gave up).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heal: Option<[Host; 2]>,
    /// Holds every segment from the first host to the second, not back (an asymmetric route);
    /// new connections between them wait for the heal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partition_oneway: Option<[Host; 2]>,
    /// Lifts a `partition_oneway` of the same direction: what waited is written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heal_oneway: Option<[Host; 2]>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reset: Option<[Host; 2]>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay: Option<Delay>,
    /// That side's etcd waits `ms` per write for its fsync (0: a fast disk again).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slow_disk: Option<SlowDisk>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crash: Option<Host>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart: Option<Host>,
    /// Compacts that side's etcd at its head.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compact: Option<Side>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale: Option<Scale>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pause: Option<Pause>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub create_workload: Option<CreateWorkload>,
    /// Re-creates a workload cluster's MachineSet `<cluster>-md-0` on that side as `kubectl
    /// delete --cascade=orphan` and `kubectl create` do: its Machines lose their controller
    /// reference and await adoption by the new MachineSet (same name, new UID).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recreate_machineset: Option<ClusterOn>,
    /// Rolls out a new plan to every bare-metal host of a workload cluster, on the serving
    /// cluster (an OS or configuration change: each plan Secret's next generation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout_plans: Option<RolloutPlans>,
    /// Creates seed 002's misnamed global resource on that side at this time: a
    /// MachineDeployment `workers` of the side's `global` Cluster, which its controllers give a
    /// MachineSet, a Machine and a VM.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub create_misnamed_global: Option<Side>,
    /// Points the platform domain at that side's VIP by hand, outside any failover (resolvers
    /// follow once their cached answer expires; the invariants judge the cluster DNS names as
    /// the serving one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub switch_dns: Option<Side>,
    /// An operator sets that side's sync gate to `syncing` by hand (`etcdctl put`, the same
    /// epoch): its controllers hold still again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub set_gate: Option<Side>,
    /// An operator clears that side's sync gate by hand, outside the orchestrator (none of its
    /// guards run): its controllers act on whatever copy they have, and the sync's next write
    /// is refused by its gate compare.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clear_gate: Option<Side>,
    /// Deletes an object through that side's API (background propagation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delete: Option<ObjectRef>,
    /// Removes an object's key from that side's etcd behind the API's and the sync's back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lose_key: Option<ObjectRef>,
    /// That side's API server starts encrypting with a new key nobody else was given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotate_key: Option<Side>,
    /// `etcdctl snapshot save` of that side's etcd, kept for a later `snapshot_restore`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot_save: Option<Side>,
    /// That side's etcd restored in place from its last saved snapshot (the host goes down and
    /// comes back; same cluster flags, so the same cluster ID): the revision goes back to the
    /// snapshot's, or with `bump_revision` that far above it, marked compacted (etcdutl's
    /// `--bump-revision N --mark-compacted`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot_restore: Option<SnapshotRestore>,
    /// The real orchestrator runs a planned failover.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failover: Option<FailoverSpec>,
    /// An operator aborts the failover (`drlab failover --abort-at`): refused from the sync's
    /// uninstall on, and while the failover itself holds the orchestrator lock.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub abort: Option<AbortSpec>,
    /// Fails back after the failover (`drlab failback`): the sync installed in reverse onto the
    /// old primary, then a planned failover back with the same guards.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failback: Option<FailbackSpec>,
    /// The DR-aware upgrade's guarded uninstall (the primary keeps serving; the check pinned at
    /// the primary's head decides): `uninstall_sync: {}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uninstall_sync: Option<FailbackSpec>,
    /// The upgrade's reinstall: a new epoch resyncs onto the standby, which may have diverged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reinstall_sync: Option<FailbackSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart_agents: Option<bool>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum Condition {
    /// The sync has applied the primary's head.
    #[serde(rename = "sync.caught_up")]
    SyncCaughtUp,
    /// The orchestrator's run has ended (done or refused).
    #[serde(rename = "failover.ended")]
    FailoverEnded,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Host {
    Primary,
    Standby,
    Sync,
    /// The sync process of `sync.zombie_s`.
    SyncZombie,
    Orchestrator,
    Agents,
}

impl Host {
    pub fn name(self) -> &'static str {
        match self {
            Host::Primary => "primary",
            Host::Standby => "standby",
            Host::Sync => "sync",
            Host::SyncZombie => "sync-zombie",
            Host::Orchestrator => "orchestrator",
            Host::Agents => "agents",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Side {
    Primary,
    Standby,
}

impl Side {
    pub fn name(self) -> &'static str {
        match self {
            Side::Primary => sim::platform::PRIMARY,
            Side::Standby => sim::platform::STANDBY,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Delay {
    pub link: [Host; 2],
    pub ms: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SlowDisk {
    pub side: Side,
    pub ms: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SnapshotRestore {
    pub side: Side,
    #[serde(default)]
    pub bump_revision: u64,
}

/// The largest `bump_revision` a restore may ask for (etcd's docs suggest about a week of
/// writes; this bounds the arithmetic, not the realism).
pub const BUMP_REVISION_MAX: u64 = 1_000_000_000;

/// The slowest fsync a scenario may ask for (a disk slower than this is a dead one).
pub const DISK_LATENCY_MS_MAX: u64 = 10_000;

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Scale {
    pub cluster: String,
    /// The MachineDeployment's replicas (workers; the control-plane Machine is apart).
    pub replicas: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Pause {
    pub side: Side,
    pub cluster: String,
    pub paused: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ClusterOn {
    pub side: Side,
    pub cluster: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateWorkload {
    pub cluster: String,
    pub machines: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RolloutPlans {
    pub cluster: String,
    /// The side written to; by default the cluster the platform domain points to (an operator
    /// still holding the old primary's address names it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub side: Option<Side>,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ObjectRef {
    pub side: Side,
    /// A kind of the world (`Cluster`, `MachineSet`, `Machine`, `Secret`, …).
    pub kind: String,
    /// In namespace `cpaas-system`.
    pub name: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FailoverSpec {
    /// Go past the guards, recording this name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub force: Option<String>,
    /// The primary is lost (`drlab failover --unplanned`): fenced through the hook, R is what the
    /// sync applied, the guards decide on the standby alone.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub unplanned: bool,
}

/// A failback, an upgrade's uninstall or reinstall take no parameters: `failback: {}`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FailbackSpec {}

/// An abort takes no parameters: `abort: {}`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AbortSpec {}

#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    #[error("{path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("{path}:{line}:{column}: {message}")]
    Invalid { path: String, line: u64, column: u64, message: String },
}

impl Scenario {
    /// The timeline's failover, if it has one (validation allows at most one).
    pub fn failover(&self) -> Option<&FailoverSpec> {
        self.timeline.iter().find_map(|e| e.value.failover.as_ref())
    }

    /// Whether the timeline fails back (validation allows at most one failback).
    pub fn has_failback(&self) -> bool {
        self.timeline.iter().any(|e| e.value.failback.is_some())
    }

    /// Whether the timeline has a DR-aware upgrade (its uninstall; validation allows one).
    pub fn has_upgrade(&self) -> bool {
        self.timeline.iter().any(|e| e.value.uninstall_sync.is_some())
    }

    /// Whether the timeline has an operator's abort (validation allows at most one).
    pub fn has_abort(&self) -> bool {
        self.timeline.iter().any(|e| e.value.abort.is_some())
    }
}

/// Reads and validates a scenario file.
pub fn load(path: &Path) -> Result<Scenario, ScenarioError> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| ScenarioError::Read { path: shown.clone(), source })?;
    parse(&shown, &text)
}

/// Parses and validates a scenario's text; `path` names it in errors.
pub fn parse(path: &str, text: &str) -> Result<Scenario, ScenarioError> {
    let s: Scenario = serde_saphyr::from_str(text).map_err(|e| {
        let (line, column, message) = sync::rules::yaml_error(&e);
        ScenarioError::Invalid { path: path.into(), line, column, message }
    })?;
    if let Err(e) = s.sync.rules() {
        return Err(match e {
            sync::rules::RulesError::Parse { line, column, message, .. } => {
                let (line, column) = rules_position(text, line, column);
                ScenarioError::Invalid { path: path.into(), line, column, message: format!("sync.rules: {message}") }
            }
            other => {
                let (line, column) = key_line(text, "sync");
                ScenarioError::Invalid { path: path.into(), line, column, message: other.to_string() }
            }
        });
    }
    crate::timeline::validate(&s).map_err(|v| {
        let (line, column) = v.at.map(|l| (l.line(), l.column())).unwrap_or_else(|| key_line(text, v.field));
        ScenarioError::Invalid { path: path.into(), line, column, message: v.message }
    })?;
    Ok(s)
}

/// Where a position inside `sync.rules` (a block scalar) is in the scenario's text: the rules'
/// first line is the one after `rules:` in the `sync` section, indented by that line's indent.
fn rules_position(text: &str, line: u64, column: u64) -> (u64, u64) {
    let lines: Vec<&str> = text.lines().collect();
    let sync = lines.iter().position(|l| l.starts_with("sync:")).unwrap_or(0);
    let Some(at) = lines.iter().skip(sync + 1).position(|l| l.trim_start().starts_with("rules:")) else {
        return key_line(text, "sync");
    };
    let first = sync + 1 + at + 1;
    let indent = lines.get(first).map(|l| l.len() - l.trim_start().len()).unwrap_or(0);
    (first as u64 + line, column + indent as u64)
}

/// The line of a top-level key (for errors about a whole section); 1:1 when absent.
fn key_line(text: &str, key: &str) -> (u64, u64) {
    let prefix = format!("{key}:");
    text.lines().position(|l| l.starts_with(&prefix)).map(|i| (i as u64 + 1, 1)).unwrap_or((1, 1))
}

/// The scenario as YAML (the resolved copy a run writes next to its trace).
pub fn to_yaml(s: &Scenario) -> String {
    serde_saphyr::to_string(s).expect("a scenario serialises")
}

/// The JSON Schema of the scenario format, for editors.
pub fn schema() -> serde_json::Value {
    serde_json::to_value(schemars::schema_for!(Scenario)).expect("the schema is JSON")
}
