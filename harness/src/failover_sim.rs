//! The failover orchestrator's ports in the simulated world, and the `orchestrator` host that
//! runs the real `failover` code there. Sync control is `sync::control::Control` in-process
//! (through the world's network to both etcds); fencing refuses writes at the primary's API
//! layer; DNS, probes, pausing and validation act on the world's DNS, ingress, standby API and
//! IaaS; progress and audit records live in the standby's etcd under `/drlab/failover/`.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use failover::ports::{Finding, PortError, Ports, Probe, from_control};
use failover::preflight::Inventory;
use failover::step::Progress;
use failover::{FailoverError, Options, Outcome};
use serde_json::json;
use sim::k8s::api::{Api, Stored};
use sim::k8s::kind;
use sim::net::{Connector as SimConnector, Links};
use sim::platform::Platform;
use sync::check::Report;
use sync::conn::Connector;
use sync::control::Control;
use sync::engine::{Handle, Settings};
use sync::target::GateState;

use crate::simsync::{Install, InstallTx, conn_config};

pub use failover::store::{AUDIT_PREFIX, LOCK_KEY, PROGRESS_KEY, decode_progress};

pub struct SimPorts {
    control: Control,
    /// The primary's API as the orchestrator's client (it pauses Clusters and fences there).
    primary: Api,
    standby: Api,
    dns: sim::dns::Dns,
    reach: Reach,
    iaas: sim::iaas::Iaas,
    /// The standby's etcd, for the lock's lease and txn.
    standby_etcd: etcd_client::Client,
    /// The primary's etcd, for preflight's key listing.
    primary_etcd: etcd_client::Client,
    lock: failover::store::Lock,
    /// Starts the sync primary → standby (a failback's reverse sync), when the world has one.
    install: Option<InstallTx>,
}

fn port<E: std::fmt::Display>(p: &'static str) -> impl Fn(E) -> PortError {
    move |e| PortError::new(p, e)
}

impl SimPorts {
    /// Ports for an orchestrator inside `p`'s world (call on the orchestrator host).
    pub async fn new(p: &PlatformView, settings: &Settings, handle: Handle) -> Result<Self, PortError> {
        let (connector, source, target) = match &p.reach {
            Reach::Sim(links) => (
                Connector::custom(SimConnector::new(links.clone())),
                conn_config(&p.primary_name),
                conn_config(&p.standby_name),
            ),
            Reach::Real(endpoints) => (
                Connector::Tcp,
                real_conn_config(endpoints, &p.primary_name),
                real_conn_config(endpoints, &p.standby_name),
            ),
        };
        let client = async |cfg: &sync::conn::ConnConfig, side: &'static str| match &p.reach {
            Reach::Sim(links) => sim::net::client(&cfg.endpoints[0], links.clone()).await.map_err(port(side)),
            Reach::Real(_) => sync::conn::connect(cfg, &Connector::Tcp, 0).await.map(|e| e.client).map_err(port(side)),
        };
        let etcd = client(&target, "standby").await?;
        let primary_etcd = client(&source, "primary").await?;
        let control = Control {
            source,
            target,
            source_connector: connector.clone(),
            target_connector: connector,
            rules: settings.rules.clone(),
            boundary: settings.boundary.clone(),
            handle,
            page_keys: settings.page_keys,
        };
        Ok(SimPorts {
            control,
            primary: Api::new(p.primary_api.clone(), &primary_etcd, sim::k8s::api::FENCE_EXEMPT_ACTOR),
            standby: Api::new(p.standby_api.clone(), &etcd, sim::k8s::api::FENCE_EXEMPT_ACTOR),
            dns: p.dns.clone(),
            reach: p.reach.clone(),
            iaas: p.iaas.clone(),
            standby_etcd: etcd,
            primary_etcd,
            lock: failover::store::Lock::default(),
            install: p.install.clone(),
        })
    }
}

impl SimPorts {
    fn side_api(&self, side: &str) -> &Api {
        if side == self.primary.cluster() { &self.primary } else { &self.standby }
    }

    fn side_etcd(&self, side: &str) -> &etcd_client::Client {
        if side == self.primary.cluster() { &self.primary_etcd } else { &self.standby_etcd }
    }

    /// The standby's infrastructure machines of both providers (each names its VM or host).
    async fn infrastructure_machines(&self) -> Result<Vec<Stored>, PortError> {
        let (mut all, _) = self.standby.list(&kind::DCS_MACHINE).await.map_err(port("standby"))?;
        let (bare_metal, _) = self.standby.list(&kind::BAREMETAL_MACHINE).await.map_err(port("standby"))?;
        all.extend(bare_metal);
        Ok(all)
    }
}

/// Sets `spec.paused` on the `chosen` CAPI Clusters of one side; returns their names.
async fn set_paused_on(
    api: &Api,
    side: &'static str,
    chosen: impl Fn(&Stored) -> bool,
    paused: bool,
) -> Result<Vec<String>, PortError> {
    let (all, _) = api.list(&kind::CLUSTER).await.map_err(port(side))?;
    let mut touched = Vec::new();
    for c in all.iter().filter(|c| chosen(c)) {
        api.set_spec(c, "paused", json!(paused)).await.map_err(port(side))?;
        touched.push(ns_name(c));
    }
    Ok(touched)
}

/// A Cluster as the orchestrator names it (and the real adapter does): `namespace/name`.
fn ns_name(c: &Stored) -> String {
    format!("{}/{}", c.obj.namespace(), c.obj.name())
}

/// The progress an orchestrator persisted through one side's API, if any.
async fn progress_on(api: &Api, side: &'static str) -> Result<Option<Progress>, PortError> {
    let raw = api.get_raw(PROGRESS_KEY).await.map_err(port(side))?;
    raw.map(|v| serde_json::from_slice(&v).map_err(port("progress"))).transpose()
}

/// The progress an orchestrator persisted on `side`, if any (a refused or crashed run has one
/// too): a failover's on the standby, a failback's on the old primary.
pub fn saved_progress(p: &Platform, side: &str) -> Option<Progress> {
    p.side(side).etcd.get(PROGRESS_KEY.as_bytes()).map(|v| decode_progress(&v))
}

/// How the orchestrator reaches the two etcds: the simulated network, or real servers (the real
/// backend), by side name — roles are relative, so a reversed view finds its endpoints by name.
#[derive(Clone)]
pub enum Reach {
    Sim(Links),
    Real(std::collections::BTreeMap<String, String>),
}

/// The orchestrator's connection to a real etcd: as the sync's, in real time.
pub fn real_conn_config(endpoints: &std::collections::BTreeMap<String, String>, side: &str) -> sync::conn::ConnConfig {
    let mut c = sync::conn::ConnConfig::new([endpoints.get(side).expect("an endpoint per side").clone()]);
    c.request_timeout = Duration::from_secs(10);
    c
}

/// What the orchestrator host needs of the platform (cheap to clone into a host).
#[derive(Clone)]
pub struct PlatformView {
    pub primary_name: String,
    pub standby_name: String,
    pub primary_api: Arc<sim::k8s::ApiServer>,
    pub standby_api: Arc<sim::k8s::ApiServer>,
    pub dns: sim::dns::Dns,
    pub reach: Reach,
    pub iaas: sim::iaas::Iaas,
    /// Installs the sync from this view's primary to its standby (a failback's).
    pub install: Option<InstallTx>,
}

impl PlatformView {
    pub fn of(p: &Platform) -> Self {
        PlatformView {
            primary_name: p.primary.name.clone(),
            standby_name: p.standby.name.clone(),
            primary_api: p.primary.api.clone(),
            standby_api: p.standby.api.clone(),
            dns: p.dns.clone(),
            reach: Reach::Sim(p.links.clone()),
            iaas: p.iaas.clone(),
            install: None,
        }
    }

    /// The same roles, with a sync that can be installed (again) between them.
    pub fn with_install(self, install: InstallTx) -> Self {
        PlatformView { install: Some(install), ..self }
    }

    /// The roles after a failover (roles are relative): the standby serves, the old primary is
    /// the standby a failback's reverse sync (started through `install`) copies onto.
    pub fn reversed(self, install: InstallTx) -> Self {
        PlatformView {
            primary_name: self.standby_name,
            standby_name: self.primary_name,
            primary_api: self.standby_api,
            standby_api: self.primary_api,
            install: Some(install),
            ..self
        }
    }
}

impl Ports for SimPorts {
    async fn source_head(&self) -> Result<i64, PortError> {
        from_control::source_head(&self.control).await
    }

    async fn target_head(&self) -> Result<i64, PortError> {
        from_control::target_head(&self.control).await
    }

    async fn sync_checkpoint(&self) -> Result<i64, PortError> {
        from_control::checkpoint(&self.control).await
    }

    async fn sync_source_seen(&self) -> Result<Option<i64>, PortError> {
        Ok(Some(self.control.handle.status().source_head))
    }

    async fn sync_running(&self) -> Result<bool, PortError> {
        from_control::gate_is(&self.control, GateState::Syncing).await
    }

    async fn sync_uninstalled(&self) -> Result<bool, PortError> {
        from_control::gate_is(&self.control, GateState::Uninstalled).await
    }

    async fn freeze_sync(&self, at: i64) -> Result<(), PortError> {
        let f = self.control.freeze(Some(at), Duration::from_secs(30)).await.map_err(port("sync"))?;
        if !f.reached {
            return Err(PortError::new("sync", format!("frozen at {at} but only applied {}", f.checkpoint)));
        }
        Ok(())
    }

    async fn resume_sync(&self) -> Result<(), PortError> {
        self.control.resume();
        Ok(())
    }

    async fn pinned_check(&self, source_rev: i64, target_rev: i64) -> Result<Report, PortError> {
        self.control.check_pinned(source_rev, target_rev).await.map_err(port("sync"))
    }

    async fn target_check(&self, target_rev: i64) -> Result<Report, PortError> {
        self.control.check_target_pinned(target_rev).await.map_err(port("sync"))
    }

    async fn uninstall_sync(&self, report: &Report, forced_by: Option<&str>) -> Result<(), PortError> {
        // The guard already decided; a forced run passes its name on to the sync's audit.
        let force = forced_by.or(Some("failover"));
        self.control.uninstall_checked(report, force).await.map(|_| ()).map_err(port("sync"))
    }

    async fn clear_gate(&self, who: &str) -> Result<(), PortError> {
        from_control::clear_gate(&self.control, who).await
    }

    async fn pause_primary(&self) -> Result<Vec<String>, PortError> {
        let unpaused_workload = |c: &Stored| {
            !sim::topology::is_global_name(c.obj.name()) && c.obj.field(&["spec", "paused"]) != Some(&json!(true))
        };
        set_paused_on(&self.primary, "primary", unpaused_workload, true).await
    }

    async fn primary_unpaused(&self) -> Result<Vec<String>, PortError> {
        let (all, _) = self.primary.list(&kind::CLUSTER).await.map_err(port("primary"))?;
        let unpaused = all.iter().filter(|c| {
            !sim::topology::is_global_name(c.obj.name()) && c.obj.field(&["spec", "paused"]) != Some(&json!(true))
        });
        Ok(unpaused.map(ns_name).collect())
    }

    async fn fence_primary(&self) -> Result<(), PortError> {
        self.primary.server.set_fenced(true);
        Ok(())
    }

    async fn unfence_primary(&self) -> Result<(), PortError> {
        self.primary.server.set_fenced(false);
        Ok(())
    }

    async fn unpause_primary(&self, clusters: &[String]) -> Result<Vec<String>, PortError> {
        set_paused_on(&self.primary, "primary", |c: &Stored| clusters.contains(&ns_name(c)), false).await
    }

    async fn primary_fenced(&self) -> Result<bool, PortError> {
        Ok(self.primary.server.fenced())
    }

    async fn standby_fenced(&self) -> Result<bool, PortError> {
        Ok(self.standby.server.fenced())
    }

    async fn unfence_standby(&self) -> Result<(), PortError> {
        self.standby.server.set_fenced(false);
        Ok(())
    }

    async fn served_since(&self) -> Result<Option<Progress>, PortError> {
        progress_on(&self.primary, "primary").await
    }

    async fn install_sync(&self, baseline_revision: Option<i64>) -> Result<(), PortError> {
        let Some(install) = &self.install else {
            return Err(PortError::new("sync", "this world has no sync to install in that direction"));
        };
        // Idempotent: a resumed failback finds the sync installed with the same baseline.
        install.send_replace(Some(Install { baseline_revision }));
        Ok(())
    }

    async fn remove_replication_path(&self) -> Result<(), PortError> {
        // In the world the sync reaches the primary directly; with the sync uninstalled and its
        // gate taken there is nothing left to forward.
        Ok(())
    }

    async fn dns_target(&self) -> Result<String, PortError> {
        Ok(self.dns.answer().0)
    }

    async fn platform_domain(&self) -> Result<String, PortError> {
        Ok(self.dns.domain.clone())
    }

    async fn switch_dns(&self, to: &str) -> Result<(), PortError> {
        self.dns.switch(to, "failover");
        Ok(())
    }

    async fn probe(&self, vip: &str) -> Result<Probe, PortError> {
        let Reach::Sim(links) = &self.reach else {
            return Err(PortError::new(
                "ingress",
                "the real backend runs no ingress (DNS and VIP checks need the simulator)",
            ));
        };
        let p = sim::dns::probe(vip, links).await.map_err(port("ingress"))?;
        Ok(Probe { status: p.status, served_by: Some(p.served_by) })
    }

    async fn set_paused(&self, clusters: Option<&[String]>, paused: bool) -> Result<Vec<String>, PortError> {
        let chosen = |c: &Stored| match clusters {
            Some(list) => list.contains(&ns_name(c)),
            None => !sim::topology::is_global_name(c.obj.name()),
        };
        set_paused_on(&self.standby, "standby", chosen, paused).await
    }

    async fn validate(&self) -> Result<Vec<Finding>, PortError> {
        // The workload Clusters and the Machines' bindings, as the real adapter reads them.
        let standby = self.control.target().await.map_err(port("standby"))?;
        let mut out = failover::validation::read(&standby).await?;
        for i in &self.infrastructure_machines().await? {
            let vm = i.obj.field(&["spec", "providerID"]).and_then(|v| v.as_str()).unwrap_or_default();
            if !vm.is_empty() && !self.iaas.exists(vm) {
                let cluster =
                    i.obj.label(sim::k8s::capi::CLUSTER_NAME_LABEL).map(|c| format!("{}/{c}", i.obj.namespace()));
                out.push(Finding { what: format!("VM {vm} is gone"), where_: i.obj.key(), cluster });
            }
        }
        for name in sim::topology::COMPONENTS {
            out.extend(failover::validation::component(&standby, sim::topology::NS, name).await?);
        }
        out.extend(crate::validate_sim::agent_token(&self.standby).await?);
        Ok(out)
    }

    async fn orphan_vms(&self) -> Result<Vec<String>, PortError> {
        let infra = self.infrastructure_machines().await?;
        let named: std::collections::BTreeSet<&str> =
            infra.iter().filter_map(|i| i.obj.field(&["spec", "providerID"]).and_then(|v| v.as_str())).collect();
        // Each global cluster's own VMs belong to its own (unsynced) machines.
        let vms = self.iaas.vms();
        let orphans =
            vms.iter().filter(|vm| !sim::topology::is_global_name(&vm.cluster) && !named.contains(vm.id.as_str()));
        Ok(orphans.map(|vm| vm.id.clone()).collect())
    }

    async fn inventory(&self, side: &str) -> Result<Inventory, PortError> {
        crate::preflight_sim::inventory(self.side_api(side), self.side_etcd(side), &self.control.rules).await
    }

    async fn try_lock(&self, holder: &str) -> Result<Option<String>, PortError> {
        self.lock.try_lock(&self.standby_etcd, "standby", holder).await
    }

    async fn unlock(&self) -> Result<(), PortError> {
        self.lock.unlock(&self.standby_etcd, "standby").await
    }

    async fn now_ms(&self) -> Result<u64, PortError> {
        // The orchestrator host's clock is the simulation's: it survives the host's crash.
        Ok(sim::clock::elapsed().map_or(0, |d| d.as_millis() as u64))
    }

    async fn load_progress(&self) -> Result<Option<Progress>, PortError> {
        progress_on(&self.standby, "standby").await
    }

    async fn save_progress(&self, p: &Progress) -> Result<(), PortError> {
        let v = serde_json::to_vec(p).expect("progress serialises");
        self.standby.put_raw(PROGRESS_KEY, Some(v)).await.map_err(port("standby"))
    }

    async fn audit(&self, record: &serde_json::Value) -> Result<(), PortError> {
        let rev = self.target_head().await?;
        let key = format!("{AUDIT_PREFIX}{rev:012}");
        self.standby.server.trace.record("orchestrator", "failover.audit", record.clone());
        self.standby.put_raw(&key, Some(record.to_string().into_bytes())).await.map_err(port("standby"))
    }
}

/// The result of the orchestrator host's last run (one per start of the host).
pub type Runs = Arc<Mutex<Vec<Result<Outcome, String>>>>;

/// When the orchestrator host starts the failover: a time after each (re)start of the host, or
/// once a trigger is set (a scenario's `when:` condition held), immediately on a restart after it.
#[derive(Clone)]
pub enum Start {
    After(Duration),
    When(tokio::sync::watch::Receiver<bool>),
}

impl From<Duration> for Start {
    fn from(d: Duration) -> Self {
        Start::After(d)
    }
}

/// What an orchestrator host runs: the failover (host `orchestrator`), or an operator's abort
/// of it (host `orchestrator-abort`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Job {
    Failover,
    Abort,
    /// The reverse sync and the failover back (the view is reversed).
    Failback,
    /// The DR-aware upgrade's guarded uninstall, and its reinstall.
    UpgradeUninstall,
    UpgradeReinstall,
}

impl Job {
    fn host(self) -> &'static str {
        match self {
            Job::Failover => "orchestrator",
            Job::Abort => "orchestrator-abort",
            Job::Failback => "orchestrator-failback",
            Job::UpgradeUninstall => "orchestrator-uninstall",
            Job::UpgradeReinstall => "orchestrator-reinstall",
        }
    }

    /// The trace event of the job's result.
    fn result_event(self) -> &'static str {
        match self {
            Job::Failover => "failover.result",
            Job::Abort => "failover.abort.result",
            Job::Failback => "failback.result",
            Job::UpgradeUninstall => "upgrade.uninstall.result",
            Job::UpgradeReinstall => "upgrade.reinstall.result",
        }
    }
}

/// Adds the reverse sync (host `sync-back`, waiting to be installed) and the failback's
/// orchestrator host, which starts at `start`; the sync runs `settings` from the standby to the
/// primary and the failback `options` (whose roles are the reversed ones).
pub fn add_failback(
    sim: &mut turmoil::Sim<'_>,
    p: &Platform,
    settings: Settings,
    options: Options,
    start: impl Into<Start>,
) -> Runs {
    let (install, installed) = crate::simsync::install_channel();
    let (primary, standby) = (p.primary.name.as_str(), p.standby.name.as_str());
    let reverse = crate::simsync::SyncHost {
        name: "sync-back".into(),
        install: Some(installed),
        ..crate::simsync::SyncHost::new(standby, primary, settings.clone())
    };
    let handle = reverse.add(sim, p.links.clone());
    let view = PlatformView::of(p).reversed(install);
    add_orchestrator(sim, Job::Failback, view, settings, handle, options, start)
}

/// Adds host `preflight`: at `at` it runs the real preflight against the world once.
pub fn add_preflight(
    sim: &mut turmoil::Sim<'_>,
    view: PlatformView,
    settings: Settings,
    handle: Handle,
    options: Options,
    at: Duration,
) -> Arc<Mutex<Option<Result<failover::preflight::Preflight, String>>>> {
    let out: Arc<Mutex<Option<Result<failover::preflight::Preflight, String>>>> = Arc::default();
    let result = out.clone();
    sim.host("preflight", move || {
        let (view, settings, handle, options, result) =
            (view.clone(), settings.clone(), handle.clone(), options.clone(), result.clone());
        async move {
            tokio::time::sleep(at).await;
            let pf = match SimPorts::new(&view, &settings, handle).await {
                Ok(ports) => failover::preflight(&ports, &options).await.map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            };
            *result.lock().expect("preflight lock") = Some(pf);
            std::future::pending::<()>().await;
            Ok(())
        }
    });
    out
}

/// Adds the job's host: at `start` it runs the real failover (or abort) against the world and
/// records the outcome. A crashed and restarted host runs it again, which resumes from the
/// progress stored on the standby.
pub fn add_orchestrator(
    sim: &mut turmoil::Sim<'_>,
    job: Job,
    view: PlatformView,
    settings: Settings,
    handle: Handle,
    options: Options,
    start: impl Into<Start>,
) -> Runs {
    let (start, host) = (start.into(), job.host());
    let runs: Runs = Arc::default();
    let out = runs.clone();
    sim.host(host, move || {
        let (view, settings, handle, options, runs, start) =
            (view.clone(), settings.clone(), handle.clone(), options.clone(), runs.clone(), start.clone());
        async move {
            match start {
                Start::After(d) => tokio::time::sleep(d).await,
                Start::When(mut rx) => {
                    // The sender outlives the run; a closed channel means the run is ending.
                    let _ = rx.wait_for(|go| *go).await;
                }
            }
            let result = run_job(job, &view, &settings, handle, &options).await;
            runs.lock().expect("runs lock").push(result);
            std::future::pending::<()>().await;
            Ok(())
        }
    });
    out
}

/// Runs the real orchestrator's `job` once through ports on `view` and traces its result.
pub async fn run_job(
    job: Job,
    view: &PlatformView,
    settings: &Settings,
    handle: Handle,
    options: &Options,
) -> Result<Outcome, String> {
    let result = match SimPorts::new(view, settings, handle).await {
        Ok(ports) => match job {
            Job::Failover => failover::run(&ports, options).await,
            Job::Abort => failover::abort(&ports, options).await,
            Job::Failback => failover::failback(&ports, options).await,
            Job::UpgradeUninstall => failover::upgrade::uninstall(&ports, options).await,
            Job::UpgradeReinstall => failover::upgrade::reinstall(&ports, options).await,
        }
        .map_err(|e: FailoverError| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    let fields = json!({"ok": result.is_ok(), "error": result.as_ref().err()});
    view.primary_api.trace.record(job.host(), job.result_event(), fields);
    result
}
