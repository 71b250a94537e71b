//! The turmoil plumbing every world shares: the seeded builder with a fixed epoch, etcd hosts
//! (optionally with a control plane on the same host), and scheduled steps. The platform world
//! ([`crate::platform`]) is built from these.

use std::time::{Duration, UNIX_EPOCH};

use serde_json::json;

use crate::etcd::SimEtcd;
use crate::net::Links;
use crate::trace::Trace;

pub const ETCD_PORT: u16 = 2379;
/// The simulated epoch: a fixed instant, so nothing in the world depends on when it ran.
pub const EPOCH_UNIX_S: u64 = 1_767_225_600; // 2026-01-01T00:00:00Z

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
pub fn run_schedule<'a>(
    sim: &mut turmoil::Sim<'a>,
    mut steps: Vec<Step<'a>>,
    seed: u64,
    trace: &Trace,
) -> Result<(), WorldError> {
    steps.sort_by_key(|s| s.at);
    let mut steps = steps.into_iter().peekable();
    loop {
        trace.set_outside_ms(sim.elapsed().as_millis() as u64);
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
