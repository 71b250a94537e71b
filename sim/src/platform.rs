//! The platform world: a primary and a standby global cluster (simulated etcd + control-plane
//! model on one host each), the shared IaaS, DNS for the platform domain, workload agents and an
//! operator host that runs scripted actions and background traffic.
//!
//! Hosts (one per failure domain; turmoil's cost is per host per tick):
//! `primary`, `standby` (etcd, API-server model, garbage collector, CAPI controllers, compactor,
//! ingress), `operator` (the run's clock: a client that ends the run), `agents` (workload-side
//! clients), and the slots `harness` fills: `sync` and `orchestrator`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::json;
use tokio::sync::{Notify, mpsc, watch};

use crate::dns::{self, Dns, Resolver};
use crate::etcd::{Config, SimEtcd};
use crate::fault::Faults;
use crate::iaas::Iaas;
use crate::k8s::api::{Api, ApiError, ApiServer};
use crate::k8s::atrest::AtRest;
use crate::k8s::auth::TokenSigning;
use crate::k8s::capi::{self, CapiConfig, ControllerGate, MachineSetOrder};
use crate::k8s::gc::{self, GcConfig};
use crate::k8s::kind;
use crate::k8s::leader;
use crate::net::{self, Links};
use crate::sysagent::SystemAgent;
use crate::topology::{self, Topology};
use crate::trace::Trace;
use crate::world::{ETCD_PORT, Step, WorldError};

pub const DOMAIN: &str = "platform.example.com";
pub const PRIMARY: &str = "primary";
pub const STANDBY: &str = "standby";
/// Actions the operator queue holds (scripted actions are few; a full queue is a scenario bug).
const ACTIONS_QUEUED_MAX: usize = 1_024;
/// Simulated time after the last scripted second in which no traffic is sent.
pub const SETTLE: Duration = Duration::from_secs(10);
/// Workload agents the world runs at most.
const AGENTS_MAX: usize = 64;
/// How often the bare-metal system agent patches a plan Secret.
const SYSTEM_AGENT_PERIOD: Duration = Duration::from_secs(5);

#[derive(Debug, Clone)]
pub struct PlatformConfig {
    pub seed: u64,
    pub sim_secs: u64,
    pub tick_ms: u64,
    pub trace_path: Option<PathBuf>,
    pub topology: Topology,
    /// The primary's global cluster also has a resource without the `global-` prefix.
    pub misnamed_global: bool,
    pub primary_at_rest: AtRest,
    pub standby_at_rest: AtRest,
    /// Each side's ServiceAccount token key, issuer and audiences (seed 000: the same on both).
    pub primary_signing: TokenSigning,
    pub standby_signing: TokenSigning,
    /// Each GC informer's lag is drawn from 0..=this.
    pub gc_lag_ms_max: u64,
    pub capi_lag_ms: u64,
    /// kube-apiserver's compaction interval (5 minutes by default); None: never.
    pub compaction_interval_s: Option<u64>,
    /// The standby's controllers act only while this gate is open (None: always).
    pub standby_gate: Option<ControllerGate>,
    /// The primary's, when it can become a standby (a failback's reverse sync gates it).
    pub primary_gate: Option<ControllerGate>,
    /// The standby starts with a copy of the primary's workload objects (a steady state).
    pub standby_preloaded: bool,
    pub dns_ttl_s: u64,
    pub agents: usize,
    /// Background writes (Machine status heartbeats) per second on the serving cluster.
    pub writes_per_s: f64,
    /// Each side's controller managers act only while they lead their Lease, and each API
    /// server keeps its `masterleases` key ([`crate::k8s::leader`]).
    pub leader_election: bool,
    /// Both sides' MachineSet controllers: adopt orphans before scaling (CAPI), or cluster-api
    /// #3770's order.
    pub machineset_order: MachineSetOrder,
    /// A workload cluster whose agent runs an informer of its Machines through the platform
    /// domain ([`crate::clusteragent`]); None: no such agent.
    pub cluster_agent: Option<String>,
    /// The names the platform certificate (`cpaas-system/dex.tls`, the same on both sides)
    /// covers: the platform domain and both VIPs when installed as seed 000 asks.
    pub platform_cert_names: Vec<String>,
}

impl Default for PlatformConfig {
    fn default() -> Self {
        PlatformConfig {
            seed: 1,
            sim_secs: 60,
            tick_ms: 10,
            trace_path: None,
            topology: Topology::vm(2, 3),
            misnamed_global: false,
            primary_at_rest: AtRest::aescbc("key1", [1; 32]),
            standby_at_rest: AtRest::aescbc("key1", [1; 32]),
            primary_signing: TokenSigning::new("sa", [7; 32]),
            standby_signing: TokenSigning::new("sa", [7; 32]),
            gc_lag_ms_max: 200,
            capi_lag_ms: 50,
            compaction_interval_s: Some(300),
            standby_gate: None,
            primary_gate: None,
            standby_preloaded: false,
            dns_ttl_s: 30,
            agents: 2,
            writes_per_s: 2.0,
            leader_election: false,
            machineset_order: MachineSetOrder::AdoptFirst,
            cluster_agent: None,
            platform_cert_names: [DOMAIN, PRIMARY, STANDBY].map(String::from).to_vec(),
        }
    }
}

/// One global cluster of the world.
#[derive(Clone)]
pub struct Side {
    pub name: String,
    pub etcd: SimEtcd,
    pub api: Arc<ApiServer>,
}

/// Operator actions, executed by the operator host against the cluster DNS points to (or the
/// one named).
#[derive(Debug, Clone)]
pub enum Action {
    /// Sets a workload cluster's MachineDeployment replicas (a scripted scale up / down).
    Scale { cluster: String, replicas: u64 },
    /// Pauses or unpauses a workload cluster's CAPI Cluster on `side`.
    Pause { side: String, cluster: String, paused: bool },
    /// Writes a raw key on `side` (e.g. the sync gate), or deletes it (None).
    PutRaw { side: String, key: String, value: Option<Vec<u8>> },
    /// Creates a workload cluster on the serving cluster: Cluster, DCSCluster, a one-replica
    /// KubeadmControlPlane and a MachineDeployment of `machines - 1` workers; the CAPI
    /// controllers make the MachineSet, Machines, DCSMachines and VMs.
    CreateWorkload { cluster: String, machines: u64 },
    /// Rolls out a new plan to every host of a workload cluster on `side` (None: the serving
    /// cluster): each of its plan Secrets gets the next generation (one being reset keeps its
    /// reset plan).
    RolloutPlans { cluster: String, side: Option<String> },
    /// Creates seed 002's misnamed global resource on `side`: a MachineDeployment
    /// [`topology::MISNAMED_GLOBAL`] of that side's `global` Cluster (its controllers make the
    /// MachineSet, Machine, DCSMachine and VM).
    CreateMisnamedGlobal { side: String },
    /// Re-creates a workload cluster's MachineSet on `side` the way `kubectl delete
    /// --cascade=orphan` then `kubectl create` does (e.g. to change an immutable field): its
    /// Machines lose their controller reference, the MachineSet is deleted and created again
    /// under the same name with a new UID. Its controllers adopt the Machines (when the
    /// cluster is not paused).
    RecreateMachineSet { side: String, cluster: String },
    /// Deletes an object on `side` through its API (background propagation).
    Delete { side: String, kind: &'static crate::k8s::Kind, name: String },
    /// Restarts every workload agent (they resolve the domain again).
    RestartAgents,
}

pub struct Platform {
    pub cfg: PlatformConfig,
    pub trace: Trace,
    pub links: Links,
    pub faults: Faults,
    pub iaas: Iaas,
    pub dns: Dns,
    pub primary: Side,
    pub standby: Side,
    actions: mpsc::Sender<Action>,
    agents_restart: Arc<Notify>,
    /// What the cluster agent's informer holds (empty without one).
    pub cluster_agent: Arc<std::sync::Mutex<crate::clusteragent::View>>,
    /// Which cluster each agent was last served by.
    pub agents_served: Vec<watch::Receiver<String>>,
}

#[derive(Debug, Clone)]
pub struct PlatformReport {
    pub seed: u64,
    pub sim_secs: u64,
    pub trace_hash: String,
    pub trace_events: u64,
    pub keys_primary: usize,
    pub keys_standby: usize,
    pub vm_deletions: usize,
}

/// What a world starts from, apart from where its etcds run: the trace, the IaaS, DNS, both
/// API servers, the objects each side's etcd starts with (encoded as stored), the system agent
/// and each side's GC informer lags. The simulated world seeds [`SimEtcd`]s with it; `harness`'s
/// real backend seeds real etcd servers with the same bytes.
pub struct Parts {
    pub trace: Trace,
    pub iaas: Iaas,
    pub dns: Dns,
    pub primary_api: Arc<ApiServer>,
    pub standby_api: Arc<ApiServer>,
    pub primary_kvs: Vec<(Vec<u8>, Vec<u8>)>,
    pub standby_kvs: Vec<(Vec<u8>, Vec<u8>)>,
    pub system_agent: SystemAgent,
    /// Per side (primary, standby), one lag per kind.
    pub gc_lags: [Vec<Duration>; 2],
}

impl Parts {
    /// Everything drawn from `cfg.seed`, in a fixed order (the trace hash depends on it).
    pub fn new(cfg: &PlatformConfig) -> Result<Parts, WorldError> {
        let trace = Trace::new(cfg.trace_path.as_deref())?;
        let iaas = Iaas::new(trace.clone());
        let dns = Dns::new(DOMAIN, PRIMARY, cfg.dns_ttl_s, trace.clone());
        let api = |name: &str, i: u64, at_rest: &AtRest, signing: &TokenSigning| {
            ApiServer::new(name, at_rest.clone(), signing.clone(), cfg.seed.wrapping_add(100 + i), trace.clone())
        };
        let primary_api = api(PRIMARY, 1, &cfg.primary_at_rest, &cfg.primary_signing);
        let standby_api = api(STANDBY, 2, &cfg.standby_at_rest, &cfg.standby_signing);

        // The physical truth and both clusters' stored objects.
        let workload = topology::workload(&cfg.topology, cfg.seed.wrapping_add(10), PRIMARY);
        let g_primary = topology::global(PRIMARY, cfg.seed.wrapping_add(11), cfg.misnamed_global);
        let g_standby = topology::global(STANDBY, cfg.seed.wrapping_add(12), false);
        for vm in workload.vms.iter().chain(&g_primary.vms).chain(&g_standby.vms) {
            iaas.create(vm.clone());
        }
        let encode = |api: &ApiServer, objs: &[crate::k8s::Object]| -> Vec<(Vec<u8>, Vec<u8>)> {
            objs.iter().map(|o| (o.key().into_bytes(), api.encode(o))).collect()
        };
        let bundle = topology::agent_bundle(&workload, cfg.seed.wrapping_add(13), &cfg.primary_signing);
        let system_agent = SystemAgent {
            name: "system-agent".into(),
            namespace: topology::NS.into(),
            plans: bundle.plans,
            token: bundle.token,
            period: SYSTEM_AGENT_PERIOD,
            active: Duration::from_secs(cfg.sim_secs),
        };
        let cert = topology::platform_certificate(&cfg.platform_cert_names, cfg.seed.wrapping_add(14));
        let mut on_primary = workload.objects.clone();
        on_primary.extend(bundle.objects);
        on_primary.extend(g_primary.objects);
        on_primary.push(cert.clone());
        let primary_kvs = encode(&primary_api, &on_primary);
        let mut on_standby = g_standby.objects;
        on_standby.push(cert);
        if cfg.standby_preloaded {
            on_standby.extend(workload.objects);
        }
        let standby_kvs = encode(&standby_api, &on_standby);

        let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed.wrapping_add(20));
        let mut lags = || -> Vec<Duration> {
            kind::ALL.iter().map(|_| Duration::from_millis(rng.random_range(0..=cfg.gc_lag_ms_max))).collect()
        };
        let gc_lags = [lags(), lags()];
        Ok(Parts { trace, iaas, dns, primary_api, standby_api, primary_kvs, standby_kvs, system_agent, gc_lags })
    }
}

impl Platform {
    /// Builds the world; add the sync / orchestrator hosts to the returned sim, then [`Platform::run`].
    pub fn build<'a>(cfg: PlatformConfig) -> Result<(Platform, turmoil::Sim<'a>), WorldError> {
        assert!(cfg.agents <= AGENTS_MAX, "more agents than AGENTS_MAX");
        assert!(
            cfg.cluster_agent.is_none() || cfg.topology.machines <= crate::clusteragent::ITEMS_MAX,
            "the cluster agent watches clusters of at most clusteragent::ITEMS_MAX Machines"
        );
        let duration = Duration::from_secs(cfg.sim_secs + 30) + SETTLE;
        let mut sim = crate::world::builder(cfg.seed, duration, Duration::from_millis(cfg.tick_ms)).build();
        let parts = Parts::new(&cfg)?;
        let planes = ControlPlane::sides(&cfg, &parts);
        let Parts { trace, iaas, dns, primary_api, standby_api, primary_kvs, standby_kvs, system_agent, .. } = parts;
        let links = Links::default();
        let side = |name: &str, i: u64, api: Arc<ApiServer>, kvs: &[(Vec<u8>, Vec<u8>)]| {
            let etcd = SimEtcd::new(Config { seed: cfg.seed.wrapping_add(i), ..Config::default() });
            etcd.seed(kvs);
            Side { name: name.into(), etcd, api }
        };
        let primary = side(PRIMARY, 1, primary_api, &primary_kvs);
        let standby = side(STANDBY, 2, standby_api, &standby_kvs);
        for (s, plane) in [&primary, &standby].into_iter().zip(planes) {
            add_cluster_host(&mut sim, s, links.clone(), plane);
        }

        let agents_restart = Arc::new(Notify::new());
        let mut agents_served = Vec::new();
        let mut served_tx = Vec::new();
        for _ in 0..cfg.agents {
            let (tx, rx) = watch::channel(String::new());
            served_tx.push(tx);
            agents_served.push(rx);
        }
        let cluster_agent = Arc::new(std::sync::Mutex::new(crate::clusteragent::View::default()));
        {
            let (dns, links, restart, trace) = (dns.clone(), links.clone(), agents_restart.clone(), trace.clone());
            let (watched, view) = (cfg.cluster_agent.clone(), cluster_agent.clone());
            sim.host("agents", move || {
                if let Some(cluster) = &watched {
                    // A (re)started host starts its agent with an empty cache.
                    *view.lock().expect("view lock") = crate::clusteragent::View::default();
                    let (r, l, t) = (Resolver::new(dns.clone()), links.clone(), trace.clone());
                    let period = Duration::from_secs(5);
                    let agent =
                        crate::clusteragent::run(cluster.clone(), r, l, period, restart.clone(), view.clone(), t);
                    tokio::spawn(agent);
                }
                if !system_agent.plans.is_empty() {
                    let (r, l, t) = (Resolver::new(dns.clone()), links.clone(), trace.clone());
                    tokio::spawn(crate::sysagent::run(system_agent.clone(), r, l, restart.clone(), t));
                }
                for (i, tx) in served_tx.iter().enumerate() {
                    let period = Duration::from_secs(5);
                    tokio::spawn(dns::agent(
                        format!("agent-{i}"),
                        Resolver::new(dns.clone()),
                        links.clone(),
                        period,
                        restart.clone(),
                        tx.clone(),
                        trace.clone(),
                    ));
                }
                async { std::future::pending::<turmoil::Result>().await }
            });
        }

        let (actions, rx) = action_queue();
        let faults = Faults::new(links.clone(), trace.clone());
        let p = Platform {
            cfg,
            trace,
            links,
            faults,
            iaas,
            dns,
            primary,
            standby,
            actions,
            agents_restart,
            agents_served,
            cluster_agent,
        };
        p.add_operator(&mut sim, rx);
        Ok((p, sim))
    }

    pub fn side(&self, name: &str) -> &Side {
        if name == STANDBY { &self.standby } else { &self.primary }
    }

    /// Queues an operator action (call from a scheduled step).
    pub fn act(&self, a: Action) {
        if matches!(a, Action::RestartAgents) {
            self.trace.record("operator", "operator.queue", json!({"action": format!("{a:?}")}));
            self.agents_restart.notify_waiters();
            return;
        }
        enqueue(&self.trace, &self.actions, a);
    }

    fn add_operator(&self, sim: &mut turmoil::Sim<'_>, rx: mpsc::Receiver<Action>) {
        let (links, dns, cfg) = (self.links.clone(), self.dns.clone(), self.cfg.clone());
        let sides = [self.primary.clone(), self.standby.clone()];
        let trace = self.trace.clone();
        sim.client("operator", async move {
            let mut apis = Vec::new();
            for s in &sides {
                let c = net::client(&format!("http://{}:{ETCD_PORT}", s.name), links.clone()).await?;
                apis.push(Api::new(s.api.clone(), &c, "operator"));
            }
            operator(apis, Resolver::new(dns), &cfg, trace, rx).await;
            Ok(())
        });
    }

    /// Runs the world with `steps` applied at their times; returns the report.
    pub fn run<'a>(&self, sim: &mut turmoil::Sim<'a>, steps: Vec<Step<'a>>) -> Result<PlatformReport, WorldError> {
        crate::world::run_schedule(sim, steps, self.cfg.seed, &self.trace)?;
        self.report()
    }

    /// The report of a finished run (flushes the trace).
    pub fn report(&self) -> Result<PlatformReport, WorldError> {
        Ok(PlatformReport {
            seed: self.cfg.seed,
            sim_secs: self.cfg.sim_secs,
            trace_hash: self.trace.finish()?,
            trace_events: self.trace.count(),
            keys_primary: self.primary.etcd.dump().len(),
            keys_standby: self.standby.etcd.dump().len(),
            vm_deletions: self.iaas.deletions().len(),
        })
    }
}

/// One global cluster's controllers — garbage collector, ServiceAccount tokens controller, CAPI
/// controllers, kube-apiserver's compactor — as tasks on the current runtime against `etcd`
/// (simulated inside turmoil, or a real server for `harness`'s real backend).
#[derive(Clone)]
pub struct ControlPlane {
    pub gc_lags: Vec<Duration>,
    pub capi_lag: Duration,
    pub compaction_interval_s: Option<u64>,
    pub gate: Option<ControllerGate>,
    pub iaas: Iaas,
    pub leader_election: bool,
    pub machineset_order: MachineSetOrder,
}

impl ControlPlane {
    /// The primary's and the standby's, as `cfg` and the world's [`Parts`] describe them.
    pub fn sides(cfg: &PlatformConfig, parts: &Parts) -> [ControlPlane; 2] {
        let [primary_lags, standby_lags] = parts.gc_lags.clone();
        let plane = |gc_lags, gate| ControlPlane {
            gc_lags,
            capi_lag: Duration::from_millis(cfg.capi_lag_ms),
            compaction_interval_s: cfg.compaction_interval_s,
            gate,
            iaas: parts.iaas.clone(),
            leader_election: cfg.leader_election,
            machineset_order: cfg.machineset_order,
        };
        [plane(primary_lags, cfg.primary_gate.clone()), plane(standby_lags, cfg.standby_gate.clone())]
    }

    pub fn spawn(self, api: &Arc<ApiServer>, etcd: &etcd_client::Client) {
        let ControlPlane { gc_lags, capi_lag, compaction_interval_s, gate, iaas, leader_election, machineset_order } =
            self;
        let elect = |e: leader::Election, actor: &str| {
            leader_election.then(|| {
                let (tx, rx) = watch::channel(false);
                tokio::spawn(leader::run(Api::new(api.clone(), etcd, actor), e, tx));
                rx
            })
        };
        if leader_election {
            tokio::spawn(leader::masterlease(etcd.clone(), api.cluster.clone()));
        }
        let gc_api = Api::new(api.clone(), etcd, "garbage-collector");
        let leading = elect(leader::KUBE_CONTROLLER_MANAGER, "kube-controller-manager");
        tokio::spawn(gc::run(
            gc_api,
            etcd.clone(),
            GcConfig { informer_lags: gc_lags, leading, ..GcConfig::default() },
        ));
        let tokens_api = Api::new(api.clone(), etcd, "serviceaccount-tokens");
        tokio::spawn(crate::k8s::tokens::run(tokens_api, etcd.clone(), capi_lag));
        let capi_api = Api::new(api.clone(), etcd, "capi-controller-manager");
        let leading = elect(leader::CAPI_CONTROLLER_MANAGER, "capi-controller-manager");
        let capi = CapiConfig { informer_lag: capi_lag, machineset_order, gate, iaas, leading };
        tokio::spawn(capi::run(capi_api, etcd.clone(), capi));
        if let Some(s) = compaction_interval_s {
            tokio::spawn(compactor(etcd.clone(), Duration::from_secs(s)));
        }
    }
}

fn add_cluster_host(sim: &mut turmoil::Sim<'_>, side: &Side, links: Links, plane: ControlPlane) {
    let side = side.clone();
    let trace = side.api.trace.clone();
    crate::world::add_etcd_with(sim, &side.name.clone(), side.etcd.clone(), links.clone(), trace, move || {
        let (side, links, plane) = (side.clone(), links.clone(), plane.clone());
        async move {
            let url = format!("http://{}:{ETCD_PORT}", side.name);
            let etcd = net::client(&url, links.clone()).await.expect("a lazy client never fails to build");
            plane.spawn(&side.api, &etcd);
            let ingress_api = Api::new(side.api.clone(), &etcd, "kube-apiserver");
            tokio::spawn(dns::serve_ingress(side.name.clone(), links, ingress_api));
        }
    });
}

/// Queues an action for an [`operator`] (the queue is bounded: a full one is a scenario bug).
pub fn enqueue(trace: &Trace, queue: &mpsc::Sender<Action>, a: Action) {
    trace.record("operator", "operator.queue", json!({"action": format!("{a:?}")}));
    queue.try_send(a).expect("the operator queue is full (ACTIONS_QUEUED_MAX)");
}

/// An operator's action queue.
pub fn action_queue() -> (mpsc::Sender<Action>, mpsc::Receiver<Action>) {
    mpsc::channel(ACTIONS_QUEUED_MAX)
}

/// The operator: runs each queued action against the cluster the platform domain points to (or
/// the side it names) and sends the background heartbeats at `cfg.writes_per_s`, for
/// `cfg.sim_secs`; then traffic stops for [`SETTLE`] so the world settles before the run ends.
/// `apis` holds one API client per side.
pub async fn operator(
    apis: Vec<Api>,
    mut resolver: Resolver,
    cfg: &PlatformConfig,
    trace: Trace,
    mut rx: mpsc::Receiver<Action>,
) {
    let (secs, rate) = (cfg.sim_secs, cfg.writes_per_s);
    let api_of = |name: &str| apis.iter().find(|a| a.cluster() == name).expect("a known side").clone();
    let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed.wrapping_add(30));
    let start = tokio::time::Instant::now();
    let end = start + Duration::from_secs(secs);
    let gap = if rate > 0.0 { Duration::from_secs_f64(1.0 / rate) } else { Duration::from_secs(secs + 1) };
    let mut next_write = start + gap;
    loop {
        let now = tokio::time::Instant::now();
        if now >= end {
            break;
        }
        tokio::select! {
            a = rx.recv() => {
                let Some(a) = a else { break };
                let serving = resolver.resolve();
                if let Err(e) = operate(&a, &api_of, &serving, cfg.topology.provider).await {
                    trace.record("operator", "operator.error", json!({"action": format!("{a:?}"), "error": e.to_string()}));
                }
            }
            _ = tokio::time::sleep_until(next_write.min(end)) => {
                if now >= next_write {
                    next_write += gap;
                    let serving = resolver.resolve();
                    // A heartbeat may fail (fenced, partitioned): traffic just goes on.
                    let _ = heartbeat(&api_of(&serving), &cfg.topology, &mut rng).await;
                }
            }
        }
    }
    // Quiet time at the end: traffic stops, the world settles before the run ends.
    tokio::time::sleep(SETTLE).await;
}

/// kube-apiserver's periodic compaction: every interval, compact at the revision seen one
/// interval earlier (recorded in `compact_rev_key`, as the API server does).
async fn compactor(mut etcd: etcd_client::Client, every: Duration) {
    let mut last = 0i64;
    loop {
        tokio::time::sleep(every).await;
        let Ok(r) = etcd.put("compact_rev_key", last.to_string(), None).await else { continue };
        let now = r.header().map(|h| h.revision()).unwrap_or(0);
        if last > 0 {
            let _ = etcd.compact(last, None).await;
        }
        last = now;
    }
}

/// A Machine status heartbeat: touches the annotation of one random Machine of the topology on
/// `api`'s cluster (one that a scale-down removed is skipped). On bare metal every other one
/// rolls out a new plan to that Machine's host instead (its plan Secret's next generation; a
/// host being reset keeps its reset plan).
async fn heartbeat(api: &Api, t: &Topology, rng: &mut ChaCha8Rng) -> Result<(), ApiError> {
    let c = topology::cluster_name(rng.random_range(0..t.clusters));
    let name = match rng.random_range(0..t.machines) {
        0 => format!("{c}-cp-0"),
        w => format!("{c}-md-0-{}", w - 1),
    };
    if t.provider == topology::Provider::Baremetal && rng.random_bool(0.5) {
        let plan = api.get(&kind::SECRET, topology::NS, &capi::baremetal::plan_name(&name)).await?;
        return match plan {
            Some(s) => capi::baremetal::next_plan(api, &s).await,
            None => Ok(()),
        };
    }
    let Some(m) = api.get(&kind::MACHINE, topology::NS, &name).await? else { return Ok(()) };
    let mut obj = m.obj.clone();
    let beat = api.server.now().0.as_second().to_string();
    obj.meta.annotations.get_or_insert_with(Default::default).insert("drlab.io/heartbeat".into(), beat);
    api.update(&m, obj).await.map(|_| ())
}

async fn operate(
    a: &Action,
    api_of: &impl Fn(&str) -> Api,
    serving: &str,
    provider: topology::Provider,
) -> Result<(), ApiError> {
    match a {
        Action::Scale { cluster, replicas } => {
            let api = api_of(serving);
            let md = api.require(&kind::MACHINE_DEPLOYMENT, topology::NS, &format!("{cluster}-md")).await?;
            // `from` lets a checker allow exactly as many worker Machine deletions as this lowers.
            let from = md.obj.field(&["spec", "replicas"]).and_then(serde_json::Value::as_u64);
            api.server.trace.record(
                serving,
                "operator.scale",
                json!({"cluster": cluster, "from": from, "replicas": replicas}),
            );
            api.set_spec(&md, "replicas", json!(replicas)).await
        }
        Action::Pause { side, cluster, paused } => {
            let api = api_of(side);
            let c = api.require(&kind::CLUSTER, topology::NS, cluster).await?;
            api.server.trace.record(side, "operator.pause", json!({"cluster": cluster, "paused": paused}));
            api.set_spec(&c, "paused", json!(paused)).await
        }
        Action::PutRaw { side, key, value } => {
            let api = api_of(side);
            api.server.trace.record(side, "operator.put-raw", json!({"key": key, "delete": value.is_none()}));
            api.put_raw(key, value.clone()).await
        }
        Action::CreateWorkload { cluster, machines } => {
            let api = api_of(serving);
            api.server.trace.record(
                serving,
                "operator.create-workload",
                json!({"cluster": cluster, "machines": machines}),
            );
            let label = |mut o: crate::k8s::Object| {
                o.set_label(crate::k8s::capi::CLUSTER_NAME_LABEL, cluster);
                o
            };
            let ns = topology::NS;
            let c = api
                .create(label(crate::k8s::Object::custom(
                    &kind::CLUSTER,
                    ns,
                    cluster,
                    crate::k8s::capi::cluster_spec(cluster),
                )))
                .await?;
            let owned = |mut o: crate::k8s::Object| {
                o.owned_by(&c.obj);
                label(o)
            };
            api.create(owned(crate::k8s::Object::custom(&kind::DCS_CLUSTER, ns, cluster, json!({})))).await?;
            let kcp = crate::k8s::Object::custom(
                &kind::KUBEADM_CONTROL_PLANE,
                ns,
                &format!("{cluster}-cp"),
                topology::with_template(json!({"replicas": 1}), provider),
            );
            api.create(owned(kcp)).await?;
            let workers = machines.saturating_sub(1);
            let md = crate::k8s::Object::custom(
                &kind::MACHINE_DEPLOYMENT,
                ns,
                &format!("{cluster}-md"),
                topology::with_template(json!({"replicas": workers}), provider),
            );
            api.create(owned(md)).await.map(|_| ())
        }
        Action::RecreateMachineSet { side, cluster } => {
            let api = api_of(side);
            let ms = api.require(&kind::MACHINE_SET, topology::NS, &format!("{cluster}-md-0")).await?;
            let owned: Vec<_> = api
                .list(&kind::MACHINE)
                .await?
                .0
                .into_iter()
                .filter(|m| m.obj.meta.owner_references.iter().flatten().any(|r| r.uid == ms.obj.uid()))
                .collect();
            api.server.trace.record(
                side,
                "operator.recreate-machineset",
                json!({"cluster": cluster, "machineset": ms.obj.name(), "orphaned": owned.len()}),
            );
            // The garbage collector's orphan propagation, done first so the delete has no
            // dependents left.
            for m in owned {
                let mut obj = m.obj.clone();
                let mut refs = obj.meta.owner_references.take().unwrap_or_default();
                refs.retain(|r| r.uid != ms.obj.uid());
                obj.meta.owner_references = Some(refs).filter(|r| !r.is_empty());
                api.update(&m, obj).await?;
            }
            let why = json!({"controller": "operator", "rule": "delete --cascade=orphan"});
            api.delete(&ms, crate::k8s::api::Propagation::Background, why).await?;
            let mut again = ms.obj.clone();
            again.meta.uid = None;
            again.meta.resource_version = None;
            again.meta.creation_timestamp = None;
            api.create(again).await.map(|_| ())
        }
        Action::Delete { side, kind, name } => {
            let api = api_of(side);
            let o = api.require(kind, topology::NS, name).await?;
            let why = json!({"controller": "operator", "rule": "scripted delete"});
            api.delete(&o, crate::k8s::api::Propagation::Background, why).await.map(|_| ())
        }
        Action::RolloutPlans { cluster, side } => {
            let on = side.as_deref().unwrap_or(serving);
            let api = api_of(on);
            let (secrets, _) = api.list(&kind::SECRET).await?;
            let plans: Vec<_> = secrets
                .iter()
                .filter(|s| s.obj.label(capi::CLUSTER_NAME_LABEL) == Some(cluster.as_str()))
                .filter(|s| capi::baremetal::Plan::of(&s.obj).is_some())
                .collect();
            api.server.trace.record(on, "operator.rollout-plans", json!({"cluster": cluster, "plans": plans.len()}));
            for s in plans {
                capi::baremetal::next_plan(&api, s).await?;
            }
            Ok(())
        }
        Action::CreateMisnamedGlobal { side } => {
            let api = api_of(side);
            let global = api.require(&kind::CLUSTER, topology::NS, "global").await?;
            api.server.trace.record(
                side,
                "operator.create-misnamed-global",
                json!({"kind": "MachineDeployment", "name": topology::MISNAMED_GLOBAL}),
            );
            let mut md = crate::k8s::Object::custom(
                &kind::MACHINE_DEPLOYMENT,
                topology::NS,
                topology::MISNAMED_GLOBAL,
                json!({"replicas": 1}),
            );
            md.set_label(capi::CLUSTER_NAME_LABEL, "global");
            md.owned_by(&global.obj);
            api.create(md).await.map(|_| ())
        }
        Action::RestartAgents => Ok(()),
    }
}
