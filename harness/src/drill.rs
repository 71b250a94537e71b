//! A drill: the platform world with the real sync between its global clusters — what
//! `drlab world` runs. The sync is the shipped engine, configured as an operator would: the
//! `immutable` profile, both sides' EncryptionConfiguration files, the standby's controllers held
//! by its gate until a failover clears it.

use std::path::PathBuf;

use sim::platform::{PRIMARY, Platform, PlatformConfig, PlatformReport, STANDBY};
use sim::topology::{Provider, Topology};
use sim::world::{Step, WorldError};
use sync::crypto::{Boundary, Keyring};
use sync::engine::{Settings, Status};
use sync::rules::{Profile, Rules};
use sync::target::{Gate, GateState};

use crate::failover_sim::{Job, add_orchestrator};
use crate::simsync::SyncHost;

/// The standby's controllers act only once a failover has cleared the sync gate.
pub fn standby_gate_open(value: Option<&[u8]>) -> bool {
    value.and_then(|v| Gate::decode(v).ok()).is_some_and(|g| g.state == GateState::Cleared)
}

/// The primary's controllers act unless a sync holds their cluster as its target: no gate, or
/// one a failover cleared (a failback's reverse sync installs one onto the old primary).
pub fn primary_gate_open(value: Option<&[u8]>) -> bool {
    value.is_none() || standby_gate_open(value)
}

/// The gate of the primary's controllers in a world with a failback.
pub fn primary_gate() -> sim::k8s::capi::ControllerGate {
    sim::k8s::capi::ControllerGate { key: sync::target::gate_key(), open: primary_gate_open }
}

/// The platform world as the sync expects it: its gate holds the standby's controllers.
pub fn platform_config(seed: u64, sim_secs: u64, topology: Topology) -> PlatformConfig {
    PlatformConfig {
        seed,
        sim_secs,
        topology,
        standby_gate: Some(sim::k8s::capi::ControllerGate { key: sync::target::gate_key(), open: standby_gate_open }),
        ..PlatformConfig::default()
    }
}

/// The sync's settings for a world: the `immutable` profile and both sides' keyrings.
pub fn sync_settings(cfg: &PlatformConfig) -> Settings {
    let mut s = Settings::new(Rules::profile(Profile::Immutable));
    s.seed = cfg.seed.wrapping_add(40);
    let (primary, standby) = keyrings(cfg);
    s.boundary = Boundary::new(Some(primary), Some(standby));
    s
}

/// A failback's reverse sync: the standby is its source, the primary its target.
pub fn reverse_sync_settings(cfg: &PlatformConfig) -> Settings {
    let mut s = Settings::new(Rules::profile(Profile::Immutable));
    s.seed = cfg.seed.wrapping_add(41);
    let (primary, standby) = keyrings(cfg);
    s.boundary = Boundary::new(Some(standby), Some(primary));
    s
}

fn keyrings(cfg: &PlatformConfig) -> (Keyring, Keyring) {
    let ring = |name: &str, at_rest: &sim::k8s::atrest::AtRest| {
        Keyring::parse(name, &at_rest.encryption_configuration()).expect("the world's EncryptionConfiguration parses")
    };
    (ring(PRIMARY, &cfg.primary_at_rest), ring(STANDBY, &cfg.standby_at_rest))
}

#[derive(Debug, Clone)]
pub struct DrillOptions {
    pub seed: u64,
    pub sim_secs: u64,
    pub tick_ms: u64,
    pub clusters: usize,
    pub machines: usize,
    /// Background writes (Machine heartbeats) per simulated second.
    pub writes_per_s: f64,
    /// The workload clusters run on bare metal instead of VMs.
    pub bare_metal: bool,
    pub trace: Option<PathBuf>,
}

impl DrillOptions {
    pub fn platform_config(&self) -> PlatformConfig {
        let provider = if self.bare_metal { Provider::Baremetal } else { Provider::Vm };
        let topology = Topology { clusters: self.clusters, machines: self.machines, provider };
        let mut cfg = platform_config(self.seed, self.sim_secs, topology);
        cfg.tick_ms = self.tick_ms;
        cfg.trace_path = self.trace.clone();
        cfg.writes_per_s = self.writes_per_s;
        cfg
    }
}

#[derive(Debug, Clone)]
pub struct DrillReport {
    pub platform: PlatformReport,
    pub sync: Status,
    /// Source head revision at the end, to compare with the sync's checkpoint.
    pub source_head: i64,
}

impl DrillReport {
    /// Whether the sync had applied everything the primary committed by the end.
    pub fn caught_up(&self) -> bool {
        self.sync.checkpoint >= self.source_head
    }
}

/// Runs a steady-state drill: the world with the sync and background traffic, no faults.
pub fn drill(o: &DrillOptions) -> Result<DrillReport, WorldError> {
    let cfg = o.platform_config();
    let settings = sync_settings(&cfg);
    let (p, mut sim) = Platform::build(cfg)?;
    let handle = SyncHost::new(PRIMARY, STANDBY, settings).add(&mut sim, p.links.clone());
    let steps: Vec<Step<'_>> = Vec::new();
    let platform = p.run(&mut sim, steps)?;
    let sync = handle.status();
    Ok(DrillReport { platform, sync, source_head: p.primary.etcd.revision() })
}

/// How the standby's copy differs from the primary after a run, by the sync's own rules (an
/// offline comparison of final states, not the sync's `/check`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Diff {
    /// Included primary keys the standby lacks.
    pub missed: Vec<String>,
    /// Included keys whose content differs (plaintexts are compared for Secrets).
    pub stale: Vec<String>,
    /// Included standby keys the primary lacks.
    pub surplus: Vec<String>,
}

impl Diff {
    pub fn is_clean(&self) -> bool {
        self.missed.is_empty() && self.stale.is_empty() && self.surplus.is_empty()
    }
}

pub fn compare(p: &Platform, settings: &Settings) -> Diff {
    let dump = |s: &sim::platform::Side| -> std::collections::BTreeMap<_, _> { s.etcd.dump().into_iter().collect() };
    crate::state::diff(&dump(&p.primary), &dump(&p.standby), settings)
}

/// The standby's API server encrypts with other key bytes than the primary's — the usual
/// mistake: the same key name, other bytes.
pub fn keys_differ(cfg: &mut PlatformConfig) {
    cfg.standby_at_rest = sim::k8s::atrest::AtRest::aescbc("key1", [2; 32]);
}

/// The standby's API server signs and verifies ServiceAccount tokens with its own key (seed
/// 000 asks for the primary's `sa.key` / `sa.pub` on both sides).
pub fn sa_key_differs(cfg: &mut PlatformConfig) {
    cfg.standby_signing = sim::k8s::auth::TokenSigning::new("sa", [8; 32]);
}

/// What `drlab preflight` runs: the drill's world, with seed 002's misnamed global resource
/// and encryption or ServiceAccount keys that differ between the sides when asked, and the real
/// preflight at `PREFLIGHT_AT`.
#[derive(Debug, Clone)]
pub struct PreflightDrill {
    pub drill: DrillOptions,
    pub misnamed_global: bool,
    pub keys_differ: bool,
    pub sa_key_differs: bool,
    /// The platform certificate covers the domain and the primary's VIP only (issued before
    /// the standby existed).
    pub cert_without_standby_vip: bool,
}

/// When the drill's preflight runs (after the sync's first copy).
pub const PREFLIGHT_AT: std::time::Duration = std::time::Duration::from_secs(20);

pub fn preflight_drill(
    f: &PreflightDrill,
) -> Result<Option<Result<failover::preflight::Preflight, String>>, WorldError> {
    let mut cfg = f.drill.platform_config();
    cfg.misnamed_global = f.misnamed_global;
    if f.keys_differ {
        keys_differ(&mut cfg);
    }
    if f.sa_key_differs {
        sa_key_differs(&mut cfg);
    }
    if f.cert_without_standby_vip {
        cfg.platform_cert_names.retain(|n| n != STANDBY);
    }
    let settings = sync_settings(&cfg);
    let (p, mut sim) = Platform::build(cfg)?;
    let handle = SyncHost::new(PRIMARY, STANDBY, settings.clone()).add(&mut sim, p.links.clone());
    let view = crate::failover_sim::PlatformView::of(&p);
    let options = failover::Options::new(PRIMARY, STANDBY);
    let out = crate::failover_sim::add_preflight(&mut sim, view, settings, handle, options, PREFLIGHT_AT);
    p.run(&mut sim, Vec::new())?;
    drop(sim);
    Ok(out.lock().expect("preflight lock").clone())
}

/// What `drlab failover` runs: a drill whose orchestrator fails over at `at_s`.
#[derive(Debug, Clone)]
pub struct FailoverDrill {
    pub drill: DrillOptions,
    pub at_s: u64,
    pub dry_run: bool,
    pub force: Option<String>,
    /// When an operator aborts the failover (`drlab failover --abort-at`), if ever.
    pub abort_at_s: Option<u64>,
    /// The primary is lost (its host crashes) [`UNPLANNED_LOSS_S`] before `at_s`, and the
    /// failover is an unplanned one (`drlab failover --unplanned`).
    pub unplanned: bool,
    /// When the real failback starts (`drlab failover --failback-at`), if ever: the reverse sync
    /// onto the old primary, then the planned failover back.
    pub failback_at_s: Option<u64>,
    /// A DR-aware upgrade instead of a failover (`drlab failover --upgrade`): the guarded
    /// uninstall at `at_s`, the reinstall (a new sync epoch) at this second.
    pub reinstall_at_s: Option<u64>,
}

/// How long before an unplanned failover's start the drill loses the primary.
pub const UNPLANNED_LOSS_S: u64 = 5;

#[derive(Debug)]
pub struct FailoverDrillReport {
    pub drill: DrillReport,
    /// One entry per start of the orchestrator host.
    pub runs: Vec<Result<failover::Outcome, String>>,
    /// The operator's abort, when there was one.
    pub aborts: Vec<Result<failover::Outcome, String>>,
    /// The failback, when there was one.
    pub failbacks: Vec<Result<failover::Outcome, String>>,
    /// A DR-aware upgrade's uninstall and reinstall, when the drill is one.
    pub uninstalls: Vec<Result<failover::Outcome, String>>,
    pub reinstalls: Vec<Result<failover::Outcome, String>>,
    pub dns_target: String,
    pub vm_deletions: Vec<sim::iaas::VmDeletion>,
}

/// Runs the drill with the real orchestrator in the world.
pub fn failover_drill(f: &FailoverDrill) -> Result<FailoverDrillReport, WorldError> {
    let o = &f.drill;
    let mut cfg = o.platform_config();
    let settings = sync_settings(&cfg);
    let back = reverse_sync_settings(&cfg);
    if f.failback_at_s.is_some() {
        cfg.primary_gate = Some(primary_gate());
    }
    let (p, mut sim) = Platform::build(cfg)?;
    let handle = SyncHost::new(PRIMARY, STANDBY, settings.clone()).add(&mut sim, p.links.clone());
    let mut options = failover::Options::new(PRIMARY, STANDBY);
    options.dry_run = f.dry_run;
    options.force = f.force.clone();
    options.unplanned = f.unplanned;
    let view = crate::failover_sim::PlatformView::of(&p);
    let start = std::time::Duration::from_secs(f.at_s);
    // A DR-aware upgrade: the guarded uninstall at `at_s`, then a new sync epoch (the reinstall
    // starts it through `install`) over the uninstalled gate.
    let mut upgrade = None;
    if let Some(t) = f.reinstall_at_s {
        let (install, reinstalled) = crate::simsync::add_reinstallable(&mut sim, p.links.clone(), &settings);
        let view = view.clone().with_install(install);
        let (s, h, o) = (&settings, &handle, &options);
        let uninstalls =
            add_orchestrator(&mut sim, Job::UpgradeUninstall, view.clone(), s.clone(), h.clone(), o.clone(), start);
        let at = std::time::Duration::from_secs(t);
        let reinstalls = add_orchestrator(&mut sim, Job::UpgradeReinstall, view, s.clone(), h.clone(), o.clone(), at);
        upgrade = Some((reinstalled, uninstalls, reinstalls));
    }
    let runs = match &upgrade {
        Some(_) => crate::failover_sim::Runs::default(),
        None => add_orchestrator(
            &mut sim,
            Job::Failover,
            view.clone(),
            settings.clone(),
            handle.clone(),
            options.clone(),
            start,
        ),
    };
    let aborts = match f.abort_at_s {
        Some(t) => add_orchestrator(
            &mut sim,
            Job::Abort,
            view,
            settings,
            handle.clone(),
            options,
            std::time::Duration::from_secs(t),
        ),
        None => crate::failover_sim::Runs::default(),
    };
    let failbacks = match f.failback_at_s {
        Some(t) => {
            let options = failover::Options::new(STANDBY, PRIMARY);
            crate::failover_sim::add_failback(&mut sim, &p, back, options, std::time::Duration::from_secs(t))
        }
        None => crate::failover_sim::Runs::default(),
    };
    let mut steps = Vec::new();
    if f.unplanned {
        assert!(f.at_s >= UNPLANNED_LOSS_S, "an unplanned drill loses the primary before it starts");
        let lost = std::time::Duration::from_secs(f.at_s - UNPLANNED_LOSS_S);
        steps.push(sim::world::Step::new(lost, |sim| p.faults.crash(sim, PRIMARY)));
    }
    let platform = p.run(&mut sim, steps)?;
    let runs = runs.lock().expect("runs lock").clone();
    let aborts = aborts.lock().expect("runs lock").clone();
    let failbacks = failbacks.lock().expect("runs lock").clone();
    let taken = |r: &crate::failover_sim::Runs| r.lock().expect("runs lock").clone();
    let (sync, uninstalls, reinstalls) = match &upgrade {
        // The sync that runs at the end is the reinstalled one.
        Some((h, u, r)) => (h.status(), taken(u), taken(r)),
        None => (handle.status(), Vec::new(), Vec::new()),
    };
    Ok(FailoverDrillReport {
        drill: DrillReport { platform, sync, source_head: p.primary.etcd.revision() },
        runs,
        aborts,
        failbacks,
        uninstalls,
        reinstalls,
        dns_target: p.dns.answer().0,
        vm_deletions: p.iaas.deletions(),
    })
}
