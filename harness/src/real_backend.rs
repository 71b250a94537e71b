//! The real backend (`drlab run --backend etcd`): one scenario at one seed on two real etcd
//! servers on loopback — the primary on etcd 3.4, the standby on etcd 3.5 — instead of the
//! simulated ones. Everything else is the simulator's: the world's control-plane models (garbage
//! collector, CAPI controllers, ServiceAccount tokens controller, compactor), the operator and
//! its traffic, and the real sync engine (in-process, so a mutant can be selected) all talk to
//! the servers through the real etcd-client; the sync's links run through TCP proxies the
//! harness holds, releases and resets ([`crate::proxy`]); the sync is crashed by aborting its
//! task and restarted by starting a fresh engine; the same checkers judge the same trace events
//! and final states. Time is real (a 90 s scenario takes 90 s) and not deterministic: a real
//! run checks that the verdicts match the simulator's, not the trace hash.
//!
//! What it cannot run — DNS clients and VIPs (workload agents, the ingress, a failover's DNS
//! verification), one-way partitions, latency, slow disks, snapshot restores, crashes of hosts
//! other than the sync — is refused by [`unsupported`] before anything starts.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use etcd_client::{GetOptions, WatchOptions};
use serde_json::json;
use sim::platform::{Action, ControlPlane, PRIMARY, Parts, SETTLE, STANDBY};
use sim::topology::NS;
use sim::trace::Trace;
use sync::conn::{ConnConfig, Connector, Etcd};
use sync::engine::{Engine, Handle, Settings};
use tokio::task::JoinHandle;

use crate::failover_sim::{Job, PlatformView, Reach, Runs};
use crate::observe::OwnerOrder;
use crate::proxy::Proxy;
use crate::real_etcd::{EtcdOptions, EtcdServer, EtcdVersion};
use crate::runner::{Observed, RunError, code_under_test, rotation_key};
use crate::scenario::{FailoverEnd, Host, Scenario, Variant};
use crate::simsync::conn_config_at;
use crate::state::SideState;
use crate::timeline::{Act, Convergence, Scheduled, resolve};

/// How often the driver looks at the timeline and the sync (the simulator steps every tick).
const DRIVE_TICK: Duration = Duration::from_millis(10);
/// Keys per seeding txn: etcd's default `--max-txn-ops`.
const SEED_TXN_OPS_MAX: usize = 128;
/// How long the run waits past its end for the operator's quiet time before it stops anyway.
const END_GRACE: Duration = Duration::from_secs(30);

/// Why `s` cannot run on the real backend, if it cannot (named by the first entry that needs
/// the simulator).
pub fn unsupported(s: &Scenario) -> Option<String> {
    let sync_link = |a: Host, b: Host| {
        matches!((a, b), (Host::Sync, Host::Primary | Host::Standby) | (Host::Primary | Host::Standby, Host::Sync))
    };
    if s.sync.zombie_s.is_some() {
        return Some("sync.zombie_s: a zombie sync runs on the simulator only".into());
    }
    for e in resolve(s) {
        let why = match &e.act {
            Act::Partition(a, b) | Act::Heal(a, b) | Act::Reset(a, b) if !sync_link(*a, *b) => {
                Some("only the sync's links to the etcds run through the harness's proxies")
            }
            Act::Crash(h) | Act::Restart(h) if *h != Host::Sync => Some("only the sync is crashed and restarted"),
            Act::PartitionOneway(..) | Act::HealOneway(..) => Some("one-way partitions need the simulator"),
            Act::Delay(..) | Act::SlowDisk(..) => Some("latency and slow disks need the simulator"),
            Act::SnapshotSave(_) | Act::SnapshotRestore(..) => Some("snapshot restores need the simulator"),
            Act::Failover(_) if s.expect.failover != FailoverEnd::Refused => {
                Some("a failover past its guard verifies DNS and the ingress, which need the simulator")
            }
            Act::Abort | Act::Failback | Act::UninstallSync | Act::ReinstallSync => {
                Some("this orchestrator job runs on the simulator only")
            }
            Act::RestartAgents => Some("workload agents need DNS clients and VIPs"),
            Act::SwitchDns(_) => Some("the platform domain and its resolvers need the simulator"),
            _ => None,
        };
        if let Some(why) = why {
            return Some(format!("{:?}: {why}", e.act));
        }
    }
    None
}

fn backend(what: &str) -> impl Fn(String) -> RunError + '_ {
    move |e| RunError::Backend(format!("{what}: {e}"))
}

/// Runs the scenario at `seed` with `variant` on real etcd, writing the trace to `trace`.
pub fn run(s: &Scenario, seed: u64, variant: Variant, trace: PathBuf) -> Result<Observed, RunError> {
    if let Some(why) = unsupported(s) {
        return Err(RunError::Unsupported { scenario: s.name.clone(), why });
    }
    let rt =
        tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(sim::world::WorldError::Trace)?;
    tokio::task::LocalSet::new().block_on(&rt, run_async(s, seed, variant, trace))
}

async fn connect(endpoint: &str) -> Result<Etcd, RunError> {
    let cfg = ConnConfig::new([endpoint]);
    sync::conn::connect(&cfg, &Connector::Tcp, 0).await.map_err(|e| backend(endpoint)(e.to_string()))
}

/// Writes the world's starting objects, in txns etcd accepts.
async fn seed_objects(etcd: &Etcd, kvs: &[(Vec<u8>, Vec<u8>)]) -> Result<(), RunError> {
    for chunk in kvs.chunks(SEED_TXN_OPS_MAX) {
        let ops: Vec<_> = chunk.iter().map(|(k, v)| etcd_client::TxnOp::put(k.clone(), v.clone(), None)).collect();
        let mut kv = etcd.kv.clone();
        etcd.call(kv.txn(etcd_client::Txn::new().and_then(ops))).await.map_err(|e| backend("seed")(e.to_string()))?;
    }
    Ok(())
}

/// Every key and value of a server, and its revision.
async fn dump(etcd: &Etcd) -> Result<(Vec<(Vec<u8>, Vec<u8>)>, i64), RunError> {
    let mut kv = etcd.kv.clone();
    let r = etcd
        .call(kv.get(vec![0u8], Some(GetOptions::new().with_from_key())))
        .await
        .map_err(|e| backend("read the final state")(e.to_string()))?;
    let rev = r.header().map(|h| h.revision()).unwrap_or_default();
    Ok((r.kvs().iter().map(|kv| (kv.key().to_vec(), kv.value().to_vec())).collect(), rev))
}

/// Traces every commit of a server from `from` on, as the simulated etcd does (`etcd.commit`:
/// key, revision, operation — never the value), and keeps its head.
async fn trace_commits(etcd: Etcd, host: &'static str, from: i64, trace: Trace, head: Arc<AtomicI64>) {
    let mut w = etcd.watch.clone();
    let opts = WatchOptions::new().with_range(vec![0u8]).with_start_revision(from);
    let Ok(mut stream) = w.watch(vec![0u8], Some(opts)).await else { return };
    while let Ok(Some(r)) = stream.message().await {
        for e in r.events() {
            let Some(kv) = e.kv() else { continue };
            let op = if e.event_type() == etcd_client::EventType::Put { "put" } else { "delete" };
            let key = String::from_utf8_lossy(kv.key());
            trace.record(host, "etcd.commit", json!({"rev": kv.mod_revision(), "op": op, "key": key}));
        }
        if let Some(h) = r.header() {
            head.fetch_max(h.revision(), Ordering::SeqCst);
        }
    }
}

fn socket(endpoint: &str) -> SocketAddr {
    endpoint.trim_start_matches("http://").parse().expect("a launcher endpoint is http://ip:port")
}

/// The sync process: a fresh engine per start, resuming from the standby's bookkeeping.
struct SyncProcess {
    source: ConnConfig,
    target: ConnConfig,
    settings: Settings,
    handle: Handle,
    start_at: Duration,
    task: Option<JoinHandle<()>>,
}

impl SyncProcess {
    fn start(&mut self) {
        let engine = Engine {
            source: self.source.clone(),
            target: self.target.clone(),
            source_connector: Connector::Tcp,
            target_connector: Connector::Tcp,
            settings: self.settings.clone(),
            handle: self.handle.clone(),
        };
        let start_at = self.start_at;
        self.task = Some(tokio::task::spawn_local(async move {
            // A start time of the world: a restart after it starts at once.
            let now = sim::clock::elapsed().unwrap_or_default();
            tokio::time::sleep(start_at.saturating_sub(now)).await;
            let _ = engine.run().await;
        }));
    }

    fn crash(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}

/// The running world on real etcd.
struct World {
    parts: Parts,
    primary: Etcd,
    standby: Etcd,
    to_primary: Proxy,
    to_standby: Proxy,
    sync: SyncProcess,
    actions: tokio::sync::mpsc::Sender<Action>,
    go_failover: tokio::sync::watch::Sender<bool>,
    seed: u64,
}

impl World {
    fn link(&self, a: Host, b: Host) -> &Proxy {
        if a == Host::Standby || b == Host::Standby { &self.to_standby } else { &self.to_primary }
    }

    fn side(&self, s: crate::scenario::Side) -> (&Etcd, &Arc<sim::k8s::ApiServer>) {
        match s {
            crate::scenario::Side::Primary => (&self.primary, &self.parts.primary_api),
            crate::scenario::Side::Standby => (&self.standby, &self.parts.standby_api),
        }
    }

    async fn fire(&mut self, act: &Act) {
        let trace = self.parts.trace.clone();
        let fault = |event: &str, fields: serde_json::Value| trace.record("world", event, fields);
        match act {
            Act::Partition(a, b) => {
                self.link(*a, *b).hold();
                fault("fault.partition", json!({"a": a.name(), "b": b.name()}));
            }
            Act::Heal(a, b) => {
                self.link(*a, *b).release();
                fault("fault.heal", json!({"a": a.name(), "b": b.name()}));
                let ends = self.link(*a, *b).reset();
                fault("fault.reset", json!({"a": a.name(), "b": b.name(), "ends": ends}));
            }
            Act::Reset(a, b) => {
                let ends = self.link(*a, *b).reset();
                fault("fault.reset", json!({"a": a.name(), "b": b.name(), "ends": ends}));
            }
            Act::Crash(_) => {
                self.sync.crash();
                fault("fault.crash", json!({"host": "sync"}));
            }
            Act::Restart(_) => {
                self.sync.crash();
                self.sync.start();
                fault("fault.restart", json!({"host": "sync"}));
            }
            Act::Compact(side) => {
                let (etcd, _) = self.side(*side);
                let rev = etcd.head().await.unwrap_or_default();
                let mut kv = etcd.kv.clone();
                let _ = etcd.call(kv.compact(rev, Some(etcd_client::CompactionOptions::new().with_physical()))).await;
                fault("fault.compact", json!({"host": side.name(), "rev": rev}));
            }
            Act::LoseKey { side, kind, name } => {
                let key = kind.key(NS, name);
                let (etcd, _) = self.side(*side);
                let mut kv = etcd.kv.clone();
                let r = etcd.call(kv.delete(key.clone(), None)).await;
                let rev = r.ok().and_then(|r| r.header().map(|h| h.revision()));
                fault("fault.lose-key", json!({"side": side.name(), "key": key, "rev": rev}));
            }
            Act::RotateKey(s) => self.side(*s).1.rotate_key("rotated", rotation_key(self.seed, *s)),
            Act::Gate(side, state) => {
                let (etcd, _) = self.side(*side);
                let key = sync::target::gate_key();
                let mut kv = etcd.kv.clone();
                let current = etcd.call(kv.get(key.clone(), None)).await.ok();
                let value = current.as_ref().and_then(|r| r.kvs().first()).map(|kv| kv.value());
                let gate = crate::timeline::gate_by_hand(value, *state);
                let r = etcd.call(kv.put(key, gate.encode(), None)).await;
                let rev = r.ok().and_then(|r| r.header().map(|h| h.revision()));
                trace.record("world", "operator.gate", json!({"side": side.name(), "gate": gate, "rev": rev}));
            }
            Act::Scale { .. }
            | Act::Pause { .. }
            | Act::RecreateMachineSet { .. }
            | Act::CreateWorkload { .. }
            | Act::RolloutPlans { .. }
            | Act::CreateMisnamedGlobal(_)
            | Act::Delete { .. } => {
                let a = act.operator_action().expect("an operator action");
                sim::platform::enqueue(&self.parts.trace, &self.actions, a);
            }
            Act::Failover(_) => {
                trace.record("world", "timeline.failover", json!({}));
                self.go_failover.send_replace(true);
            }
            other => panic!("{other:?} on the real backend: `unsupported` lets no such scenario start"),
        }
    }
}

async fn run_async(s: &Scenario, seed: u64, variant: Variant, trace_path: PathBuf) -> Result<Observed, RunError> {
    let (cfg, settings, options) = code_under_test(s, seed, variant, &trace_path)?;
    let real_rules = crate::runner::scenario_rules(s);

    let launch = |v| async move {
        EtcdServer::start(v, EtcdOptions::default()).await.map_err(|e| backend("etcd")(e.to_string()))
    };
    let (primary_server, standby_server) = (launch(EtcdVersion::V34).await?, launch(EtcdVersion::V35).await?);
    let parts = Parts::new(&cfg)?;
    let primary = connect(&primary_server.endpoint()).await?;
    let standby = connect(&standby_server.endpoint()).await?;
    seed_objects(&primary, &parts.primary_kvs).await?;
    seed_objects(&standby, &parts.standby_kvs).await?;
    let ((p_kvs, p_rev), (s_kvs, s_rev)) = (dump(&primary).await?, dump(&standby).await?);
    let before = crate::state::before(
        &SideState::new(PRIMARY, p_kvs, &parts.primary_api),
        &SideState::new(STANDBY, s_kvs, &parts.standby_api),
    );

    // The world starts now: its clock, its commit traces, its controllers.
    let _clock = sim::clock::RealClock::start();
    let head = Arc::new(AtomicI64::new(p_rev));
    let trace = parts.trace.clone();
    tokio::task::spawn_local(trace_commits(primary.clone(), PRIMARY, p_rev + 1, trace.clone(), head.clone()));
    tokio::task::spawn_local(trace_commits(standby.clone(), STANDBY, s_rev + 1, trace.clone(), Arc::default()));
    let [primary_plane, standby_plane] = ControlPlane::sides(&cfg, &parts);
    primary_plane.spawn(&parts.primary_api, &primary.client);
    standby_plane.spawn(&parts.standby_api, &standby.client);

    let to_primary = Proxy::start("sync-primary", socket(&primary_server.endpoint()))
        .await
        .map_err(sim::world::WorldError::Trace)?;
    let to_standby = Proxy::start("sync-standby", socket(&standby_server.endpoint()))
        .await
        .map_err(sim::world::WorldError::Trace)?;
    let handle = Handle::default();
    let mut sync = SyncProcess {
        source: conn_config_at(&to_primary.endpoint()),
        target: conn_config_at(&to_standby.endpoint()),
        settings: settings.clone(),
        handle: handle.clone(),
        start_at: Duration::from_secs_f64(s.sync.start_s),
        task: None,
    };
    sync.start();

    // The observer watches the standby from the start, before the sync's first copy.
    let observer = OwnerOrder::creations_only();
    {
        let (obs, rules) = (observer.clone(), real_rules.clone());
        let etcd = standby.clone();
        tokio::task::spawn_local(async move { obs.run(etcd, move |k| rules.includes(k)).await });
    }

    let (actions, rx) = sim::platform::action_queue();
    let operator = {
        let apis = vec![
            sim::k8s::Api::new(parts.primary_api.clone(), &primary.client, "operator"),
            sim::k8s::Api::new(parts.standby_api.clone(), &standby.client, "operator"),
        ];
        let (resolver, cfg, trace) = (sim::dns::Resolver::new(parts.dns.clone()), cfg.clone(), trace.clone());
        tokio::task::spawn_local(async move { sim::platform::operator(apis, resolver, &cfg, trace, rx).await })
    };

    let (go_failover, mut go) = tokio::sync::watch::channel(false);
    let runs: Runs = Arc::default();
    if s.failover().is_some() {
        let endpoints: BTreeMap<String, String> =
            [(PRIMARY.to_string(), primary_server.endpoint()), (STANDBY.to_string(), standby_server.endpoint())].into();
        let view = PlatformView {
            primary_name: PRIMARY.into(),
            standby_name: STANDBY.into(),
            primary_api: parts.primary_api.clone(),
            standby_api: parts.standby_api.clone(),
            dns: parts.dns.clone(),
            reach: Reach::Real(endpoints),
            iaas: parts.iaas.clone(),
            install: None,
        };
        let (runs, settings, handle, options) = (runs.clone(), settings.clone(), handle.clone(), options.clone());
        tokio::task::spawn_local(async move {
            let _ = go.wait_for(|go| *go).await;
            let r = crate::failover_sim::run_job(Job::Failover, &view, &settings, handle, &options).await;
            runs.lock().expect("runs").push(r);
        });
    }

    let mut world = World { parts, primary, standby, to_primary, to_standby, sync, actions, go_failover, seed };
    let Convergence { last_heal_ms, caught_up_ms, .. } =
        drive(&mut world, resolve(s), s, &handle, &head, &runs, operator).await;

    // The end, as the checkers read it.
    let World { parts, primary, standby, mut sync, .. } = world;
    sync.crash();
    let status = handle.status();
    let ((p_kvs, source_head), (s_kvs, _)) = (dump(&primary).await?, dump(&standby).await?);
    let real = Settings { rules: real_rules, ..settings };
    let after = crate::state::after(
        before,
        &SideState::new(PRIMARY, p_kvs, &parts.primary_api),
        &SideState::new(STANDBY, s_kvs, &parts.standby_api),
        &real,
    );
    drop((primary_server, standby_server));
    let failover = runs.lock().expect("runs").first().cloned();
    Ok(Observed {
        seed,
        variant,
        backend: crate::scenario::Backend::Etcd,
        trace: trace_path,
        trace_hash: parts.trace.finish().map_err(sim::world::WorldError::Trace)?,
        trace_events: parts.trace.count(),
        sim_secs: s.duration_s,
        standby_globals: after.before.standby_globals,
        primary_globals: after.before.primary_globals,
        cluster_secrets_before: after.before.cluster_secrets_before,
        cluster_secrets_after: after.cluster_secrets_after,
        unreadable_on_standby: after.unreadable_on_standby,
        vm_deletions: parts.iaas.deletions(),
        sync: status,
        source_head,
        diff: after.diff,
        keys_in_scope: after.keys_in_scope,
        standby_gate: after.standby_gate,
        orphaned: observer.violations(),
        unobserved: observer.gaps(),
        failover,
        abort: None,
        failover_progress: after.failover_progress,
        failback: None,
        failback_progress: after.failback_progress,
        upgrade: None,
        last_heal_ms,
        caught_up_ms,
    })
}

/// Fires the timeline in real time until the operator's traffic and quiet time end; returns the
/// convergence timing (as the simulator's runner measures it).
async fn drive(
    w: &mut World,
    timeline: Vec<Scheduled>,
    s: &Scenario,
    handle: &Handle,
    head: &AtomicI64,
    runs: &Runs,
    operator: JoinHandle<()>,
) -> Convergence {
    let mut convergence = Convergence::new(s);
    let mut pending = timeline.into_iter().peekable();
    let end = Duration::from_secs(s.duration_s) + SETTLE + END_GRACE;
    loop {
        let now = sim::clock::elapsed().expect("the real clock runs");
        let now_ms = now.as_millis() as u64;
        let caught_up = handle.checkpoint() == head.load(Ordering::SeqCst);
        while let Some(e) = pending.peek() {
            if now < e.at || !e.ready(caught_up, || !runs.lock().expect("runs").is_empty()) {
                break;
            }
            let e = pending.next().expect("peeked");
            convergence.fired(&e.act, now_ms);
            w.fire(&e.act).await;
        }
        convergence.observe(caught_up, now_ms);
        if operator.is_finished() || now >= end {
            break;
        }
        tokio::time::sleep(DRIVE_TICK).await;
    }
    if let Some(e) = pending.peek() {
        w.parts.trace.record("world", "timeline.unfired", json!({"entry": format!("{:?}", e.act)}));
    }
    convergence
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scenario(name: &str) -> Scenario {
        let path = format!("{}/../scenarios/{name}.yaml", env!("CARGO_MANIFEST_DIR"));
        crate::scenario::load(std::path::Path::new(&path)).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn the_simulator_only_scenarios_are_refused_by_their_first_entry() {
        for ok in
            ["partition", "missed-keys", "uninstall-before-consistent", "compaction-while-partitioned", "sync-killed"]
        {
            assert_eq!(unsupported(&scenario(ok)), None, "{ok}");
        }
        let why = unsupported(&scenario("planned-failover")).expect("a failover past its guard");
        assert!(why.contains("DNS"), "{why}");
        let why = unsupported(&scenario("partition-oneway")).expect("one-way");
        assert!(why.contains("one-way"), "{why}");
        let why = unsupported(&scenario("dns-ttl")).expect("DNS");
        assert!(!why.is_empty());
    }
}
