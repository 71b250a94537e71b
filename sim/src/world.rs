//! Worlds: turmoil simulations built from simulated etcd members, clients and faults.
//!
//! [`run_small`] is the first world: a primary and a standby etcd, and a client host that writes
//! to the primary and copies what it watches to the standby. It exists to prove the seam (the
//! real etcd-client over turmoil) and determinism; the full topology builds on the same pieces.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, UNIX_EPOCH};

use etcd_client::{Client, EventType, GetOptions, PutOptions, WatchOptions};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::json;

use crate::etcd::{Config, SimEtcd};
use crate::net::{self, Links};
use crate::trace::Trace;

pub const ETCD_PORT: u16 = 2379;
/// The simulated epoch: a fixed instant, so nothing in the world depends on when it ran.
pub const EPOCH_UNIX_S: u64 = 1_767_225_600; // 2026-01-01T00:00:00Z
/// Extra simulated time after the scenario for the client to finish its last round trips.
const DRAIN_S: u64 = 30;

#[derive(Debug, Clone)]
pub struct WorldConfig {
    pub seed: u64,
    pub sim_secs: u64,
    pub tick_ms: u64,
    pub trace_path: Option<PathBuf>,
}

#[derive(Debug, Clone)]
pub struct WorldReport {
    pub seed: u64,
    pub sim_secs: u64,
    pub trace_hash: String,
    pub trace_events: u64,
    pub writes: u64,
    pub mirrored: u64,
    /// Whether the standby held exactly the primary's keys and values at the end.
    pub converged: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum WorldError {
    #[error("trace: {0}")]
    Trace(#[from] std::io::Error),
    #[error("simulation failed (reproduce with seed={seed}): {message}")]
    Sim { seed: u64, message: String },
}

/// A turmoil builder with the world's fixed settings: seeded, a fixed epoch, no segment loss.
pub fn builder(seed: u64, duration: Duration, tick: Duration) -> turmoil::Builder {
    let mut b = turmoil::Builder::new();
    b.rng_seed(seed)
        .epoch(UNIX_EPOCH + Duration::from_secs(EPOCH_UNIX_S))
        .simulation_duration(duration)
        .tick_duration(tick)
        .fail_rate(0.0)
        .repair_rate(0.0)
        .min_message_latency(Duration::from_millis(1))
        .max_message_latency(Duration::from_millis(3));
    b
}

/// Adds a simulated etcd member as host `name`, serving on [`ETCD_PORT`]; its commits are
/// traced. The member's state outlives crashes of the host.
pub fn add_etcd(sim: &mut turmoil::Sim<'_>, name: &str, etcd: SimEtcd, links: Links, trace: Trace) {
    add_etcd_with(sim, name, etcd, links, trace, || async {});
}

/// [`add_etcd`] plus more software on the same host (a control plane): `software` runs at every
/// start of the host, before the member serves (it spawns its tasks and returns), and loses its
/// memory at a crash.
pub fn add_etcd_with<F, Fut>(
    sim: &mut turmoil::Sim<'_>,
    name: &str,
    etcd: SimEtcd,
    links: Links,
    trace: Trace,
    software: F,
) where
    F: Fn() -> Fut + 'static,
    Fut: std::future::Future<Output = ()> + 'static,
{
    let host = name.to_string();
    let software = std::rc::Rc::new(software);
    sim.host(name, move || {
        let (etcd, links, trace, host, software) =
            (etcd.clone(), links.clone(), trace.clone(), host.clone(), software.clone());
        async move {
            etcd.on_restart(tokio::time::Instant::now());
            tokio::spawn(trace_commits(etcd.clone(), trace, host));
            software().await;
            crate::etcd::serve(etcd, ETCD_PORT, links).await
        }
    });
}

/// Traces every committed revision of `etcd`: key, revision and operation (never the value).
async fn trace_commits(etcd: SimEtcd, trace: Trace, host: String) {
    let mut commits = etcd.subscribe();
    let mut next = etcd.revision() + 1;
    while commits.changed().await.is_ok() {
        let store = etcd.lock();
        let rev = store.rev();
        for (r, events) in store.events_in(next, rev) {
            for e in events {
                let kv = e.kv.as_ref().expect("stored events carry their key-value");
                let op = if e.r#type == crate::etcd::store::EVENT_PUT { "put" } else { "delete" };
                trace.record(
                    &host,
                    "etcd.commit",
                    json!({"rev": r, "op": op, "key": String::from_utf8_lossy(&kv.key)}),
                );
            }
        }
        next = rev + 1;
    }
}

/// Runs the small world for `cfg.sim_secs` simulated seconds.
pub fn run_small(cfg: &WorldConfig) -> Result<WorldReport, WorldError> {
    let trace = Trace::new(cfg.trace_path.as_deref())?;
    let links = Links::default();
    let duration = Duration::from_secs(cfg.sim_secs + DRAIN_S);
    let mut sim = builder(cfg.seed, duration, Duration::from_millis(cfg.tick_ms)).build();
    for (i, name) in ["primary", "standby"].into_iter().enumerate() {
        let etcd = SimEtcd::new(Config { seed: cfg.seed.wrapping_add(i as u64 + 1), ..Config::default() });
        add_etcd(&mut sim, name, etcd, links.clone(), trace.clone());
    }
    let writes = Arc::new(AtomicU64::new(0));
    let mirrored = Arc::new(AtomicU64::new(0));
    let converged = Arc::new(AtomicU64::new(0));
    {
        let (trace, links, seed, secs) = (trace.clone(), links.clone(), cfg.seed, cfg.sim_secs);
        let (writes, mirrored, converged) = (writes.clone(), mirrored.clone(), converged.clone());
        sim.client("client", async move {
            let primary = net::client("http://primary:2379", links.clone()).await?;
            let standby = net::client("http://standby:2379", links).await?;
            let mirror = tokio::spawn(mirror(primary.clone(), standby.clone(), trace.clone(), mirrored));
            write_load(primary.clone(), seed, secs, trace.clone(), writes).await?;
            // Quiesce, then compare both sides.
            tokio::time::sleep(Duration::from_secs(2)).await;
            mirror.abort();
            let same = dump(primary).await? == dump(standby).await?;
            trace.record("client", "compare", json!({"converged": same}));
            converged.store(same as u64, Ordering::SeqCst);
            Ok(())
        });
    }
    sim.run().map_err(|e| WorldError::Sim { seed: cfg.seed, message: e.to_string() })?;
    Ok(WorldReport {
        seed: cfg.seed,
        sim_secs: cfg.sim_secs,
        trace_hash: trace.finish()?,
        trace_events: trace.count(),
        writes: writes.load(Ordering::SeqCst),
        mirrored: mirrored.load(Ordering::SeqCst),
        converged: converged.load(Ordering::SeqCst) == 1,
    })
}

/// Seeded writes: puts of varying size, some deletes, some with a lease.
async fn write_load(
    mut c: Client,
    seed: u64,
    secs: u64,
    trace: Trace,
    writes: Arc<AtomicU64>,
) -> Result<(), Box<dyn std::error::Error>> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let start = tokio::time::Instant::now();
    let lease = c.lease_grant(30, None).await?.id();
    while start.elapsed() < Duration::from_secs(secs) {
        tokio::time::sleep(Duration::from_millis(rng.random_range(20..200))).await;
        let key = format!("/registry/configmaps/default/cm-{:02}", rng.random_range(0..48));
        if rng.random_bool(0.15) {
            let r = c.delete(key.as_str(), None).await?;
            trace.record("client", "delete", json!({"key": key, "rev": r.header().map(|h| h.revision())}));
        } else {
            let value = vec![b'v'; rng.random_range(1..2048)];
            let opts = rng.random_bool(0.1).then(|| PutOptions::new().with_lease(lease));
            let r = c.put(key.as_str(), value, opts).await?;
            trace.record("client", "put", json!({"key": key, "rev": r.header().map(|h| h.revision())}));
        }
        writes.fetch_add(1, Ordering::SeqCst);
        if rng.random_bool(0.05) {
            c.lease_keep_alive(lease).await?;
        }
    }
    Ok(())
}

/// A toy one-way copy: watch the primary, replay each event on the standby.
async fn mirror(
    mut primary: Client,
    mut standby: Client,
    trace: Trace,
    mirrored: Arc<AtomicU64>,
) -> Result<(), etcd_client::Error> {
    let mut stream =
        primary.watch("/registry/", Some(WatchOptions::new().with_prefix().with_start_revision(1))).await?;
    while let Some(resp) = stream.message().await? {
        for e in resp.events() {
            let Some(kv) = e.kv() else { continue };
            match e.event_type() {
                EventType::Put => standby.put(kv.key(), kv.value(), None).await.map(|_| ())?,
                EventType::Delete => standby.delete(kv.key(), None).await.map(|_| ())?,
            }
            trace.record(
                "client",
                "mirror",
                json!({"key": String::from_utf8_lossy(kv.key()), "rev": kv.mod_revision()}),
            );
            mirrored.fetch_add(1, Ordering::SeqCst);
        }
    }
    Ok(())
}

async fn dump(mut c: Client) -> Result<Vec<(Vec<u8>, Vec<u8>)>, etcd_client::Error> {
    let r = c.get("/registry/", Some(GetOptions::new().with_prefix())).await?;
    Ok(r.kvs().iter().map(|kv| (kv.key().to_vec(), kv.value().to_vec())).collect())
}

/// One scheduled action on the world, run once simulated time reaches `at`.
pub struct Step<'a> {
    pub at: Duration,
    pub action: Box<dyn FnOnce(&mut turmoil::Sim<'a>) + 'a>,
}

impl<'a> Step<'a> {
    pub fn new(at: Duration, action: impl FnOnce(&mut turmoil::Sim<'a>) + 'a) -> Self {
        Step { at, action: Box::new(action) }
    }
}

/// Runs `sim` to completion, applying each step when its time comes (in `at` order).
pub fn run_schedule<'a>(sim: &mut turmoil::Sim<'a>, mut steps: Vec<Step<'a>>, seed: u64) -> Result<(), WorldError> {
    steps.sort_by_key(|s| s.at);
    let mut steps = steps.into_iter().peekable();
    loop {
        while steps.peek().is_some_and(|s| sim.elapsed() >= s.at) {
            let step = steps.next().expect("peeked");
            (step.action)(sim);
        }
        match sim.step() {
            Ok(true) => return Ok(()),
            Ok(false) => {}
            Err(e) => return Err(WorldError::Sim { seed, message: e.to_string() }),
        }
    }
}
