//! The client seam inside the simulator under network faults: a held (stuck) connection is
//! detected by HTTP/2 keep-alive and re-established after the partition heals; a reset ends a
//! stuck request at once; a crashed and restarted etcd host keeps its committed state while its
//! connections and watches break.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use etcd_client::{GetOptions, WatchOptions};
use sim::etcd::{Config, SimEtcd};
use sim::fault::Faults;
use sim::net::{Connector as SimConnector, Links};
use sim::trace::Trace;
use sim::world::{Step, add_etcd, builder, run_schedule};
use sync::conn::{ConnConfig, ConnError, Connector};

const SEED: u64 = 11;

struct World<'a> {
    sim: turmoil::Sim<'a>,
    links: Links,
    faults: Faults,
    etcd: SimEtcd,
}

fn world<'a>(secs: u64) -> World<'a> {
    let links = Links::default();
    let trace = Trace::new(None).expect("trace");
    let mut sim = builder(SEED, Duration::from_secs(secs), Duration::from_millis(1)).build();
    let etcd = SimEtcd::new(Config::default());
    add_etcd(&mut sim, "etcd", etcd.clone(), links.clone(), trace.clone());
    World { sim, faults: Faults::new(links.clone(), trace), links, etcd }
}

fn conn_config(keepalive_interval: Duration, keepalive_timeout: Duration) -> ConnConfig {
    let mut cfg = ConnConfig::new(["http://etcd:2379"]);
    cfg.keepalive_interval = keepalive_interval;
    cfg.keepalive_timeout = keepalive_timeout;
    // Far longer than anything awaited here: a request may only end by keep-alive or reset.
    cfg.request_timeout = Duration::from_secs(120);
    cfg.connect_timeout = Duration::from_secs(2);
    cfg
}

type Log = Arc<Mutex<Vec<(u64, String)>>>;

fn note(log: &Log, what: impl Into<String>) {
    let t = turmoil::sim_elapsed().expect("inside the simulation").as_millis() as u64;
    log.lock().expect("log").push((t, what.into()));
}

fn at(log: &Log, prefix: &str) -> Option<u64> {
    log.lock().expect("log").iter().find(|(_, w)| w.starts_with(prefix)).map(|(t, _)| *t)
}

/// The client puts once, then (while the link is held from t=1 s) tries again, then retries
/// every 500 ms until a put succeeds.
fn client_with_retries(w: &mut World<'_>, cfg: ConnConfig, log: Log) {
    let links = w.links.clone();
    w.sim.client("client", async move {
        let connector = Connector::custom(SimConnector::new(links));
        let etcd = sync::conn::connect(&cfg, &connector, 0).await?;
        let mut kv = etcd.kv.clone();
        etcd.call(kv.put("k", "1", None)).await?;
        note(&log, "first put ok");
        tokio::time::sleep(Duration::from_secs(2)).await;
        note(&log, "stuck put sent");
        match etcd.call(kv.put("k", "2", None)).await {
            Ok(_) => note(&log, "stuck put ok"),
            Err(ConnError::Timeout { .. }) => note(&log, "stuck put timed out"),
            Err(e) => note(&log, format!("stuck put failed: {e}")),
        }
        for _ in 0..200 {
            if etcd.call(kv.put("k", "3", None)).await.is_ok() {
                note(&log, "put after heal ok");
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        note(&log, "never reconnected");
        Ok(())
    });
}

#[test]
fn held_connection_is_detected_by_keepalive_and_reestablished() {
    let mut w = world(120);
    let log: Log = Arc::default();
    client_with_retries(&mut w, conn_config(Duration::from_secs(1), Duration::from_secs(2)), log.clone());
    let (f1, f2) = (w.faults.clone(), w.faults.clone());
    let steps = vec![
        Step::new(Duration::from_secs(1), move |sim| f1.partition(sim, "client", "etcd")),
        Step::new(Duration::from_secs(30), move |sim| f2.heal(sim, "client", "etcd")),
    ];
    run_schedule(&mut w.sim, steps, SEED, &w.faults.trace().clone()).unwrap_or_else(|e| panic!("{e}"));
    let log_dump = format!("{:?} (reproduce with seed={SEED})", log.lock().expect("log"));
    let sent = at(&log, "stuck put sent").expect(&log_dump);
    let failed = at(&log, "stuck put failed").expect(&log_dump);
    // Keep-alive: a ping after <= 1 s idle, declared dead 2 s later, plus a tick or two.
    assert!(failed - sent <= 4_000, "a held connection took {} ms to detect: {log_dump}", failed - sent);
    let healed = at(&log, "put after heal ok").expect(&log_dump);
    assert!(
        (30_000..40_000).contains(&healed),
        "reconnected at {healed} ms, the partition healed at 30000: {log_dump}"
    );
    assert!(w.links.dials() >= 2, "the client must have dialled a new connection: {log_dump}");
}

#[test]
fn reset_ends_a_stuck_request_at_once() {
    let mut w = world(120);
    let log: Log = Arc::default();
    // Keep-alive far beyond the partition: only the reset can end the stuck request.
    client_with_retries(&mut w, conn_config(Duration::from_secs(100), Duration::from_secs(100)), log.clone());
    let (f1, f2, f3) = (w.faults.clone(), w.faults.clone(), w.faults.clone());
    let steps = vec![
        Step::new(Duration::from_secs(1), move |sim| f1.partition(sim, "client", "etcd")),
        Step::new(Duration::from_secs(10), move |sim| {
            assert!(f2.reset_link(sim, "client", "etcd") >= 1, "a live connection to reset");
        }),
        Step::new(Duration::from_secs(20), move |sim| f3.heal(sim, "client", "etcd")),
    ];
    run_schedule(&mut w.sim, steps, SEED, &w.faults.trace().clone()).unwrap_or_else(|e| panic!("{e}"));
    let log_dump = format!("{:?} (reproduce with seed={SEED})", log.lock().expect("log"));
    let failed = at(&log, "stuck put failed").expect(&log_dump);
    assert!((10_000..10_100).contains(&failed), "the reset at 10 s must end the request at once: {log_dump}");
    let healed = at(&log, "put after heal ok").expect(&log_dump);
    assert!(healed >= 20_000, "no reconnect while held: {log_dump}");
}

#[test]
fn crashed_etcd_keeps_committed_state_and_breaks_watches() {
    let mut w = world(120);
    let log: Log = Arc::default();
    let links = w.links.clone();
    let l = log.clone();
    w.sim.client("client", async move {
        let connector = Connector::custom(SimConnector::new(links));
        let etcd =
            sync::conn::connect(&conn_config(Duration::from_secs(1), Duration::from_secs(2)), &connector, 0).await?;
        let mut c = etcd.client.clone();
        for i in 0..5 {
            c.put(format!("/k/{i}"), "v", None).await?;
        }
        let mut watch = c.watch("/k/", Some(WatchOptions::new().with_prefix())).await?;
        watch.message().await?; // created
        // The crash comes at t=2 s: the open watch must end, not hang.
        match tokio::time::timeout(Duration::from_secs(20), watch.message()).await {
            Ok(Err(_)) | Ok(Ok(None)) => note(&l, "watch broken"),
            Ok(Ok(Some(_))) => note(&l, "watch got a message"),
            Err(_) => note(&l, "watch hung"),
        }
        loop {
            tokio::time::sleep(Duration::from_millis(500)).await;
            if let Ok(r) = c.get("/k/", Some(GetOptions::new().with_prefix())).await {
                note(
                    &l,
                    format!(
                        "after restart: {} keys at revision {}",
                        r.kvs().len(),
                        r.header().map(|h| h.revision()).unwrap_or(-1)
                    ),
                );
                let mut replay = c.watch("/k/", Some(WatchOptions::new().with_prefix().with_start_revision(2))).await?;
                let mut events = 0;
                while events < 5 {
                    let m = replay.message().await?.ok_or("watch closed")?;
                    events += m.events().len();
                }
                note(&l, format!("replayed {events} events"));
                return Ok(());
            }
        }
    });
    let (f1, f2) = (w.faults.clone(), w.faults.clone());
    let steps = vec![
        Step::new(Duration::from_secs(2), move |sim| f1.crash(sim, "etcd")),
        Step::new(Duration::from_secs(6), move |sim| f2.restart(sim, "etcd")),
    ];
    run_schedule(&mut w.sim, steps, SEED, &w.faults.trace().clone()).unwrap_or_else(|e| panic!("{e}"));
    let log_dump = format!("{:?} (reproduce with seed={SEED})", log.lock().expect("log"));
    let broken = at(&log, "watch broken").expect(&log_dump);
    assert!(broken < 6_000, "the watch must break with the crash, not after the restart: {log_dump}");
    assert!(at(&log, "after restart: 5 keys at revision 6").is_some(), "committed state survives: {log_dump}");
    assert!(at(&log, "replayed 5 events").is_some(), "history survives: {log_dump}");
    assert_eq!(w.etcd.revision(), 6);
}

#[test]
fn a_one_way_partition_holds_one_direction_only() {
    // watcher → etcd is held from 3 s to 12 s: the watcher's own put waits for the heal, while
    // etcd → watcher flows, so the watch keeps delivering the writer's puts.
    let mut w = world(40);
    let log: Log = Arc::default();
    let cfg = conn_config(Duration::from_secs(100), Duration::from_secs(100));
    let (links, wlog, wcfg) = (w.links.clone(), log.clone(), cfg.clone());
    w.sim.client("watcher", async move {
        let connector = Connector::custom(SimConnector::new(links));
        let etcd = sync::conn::connect(&wcfg, &connector, 0).await?;
        let mut stream = etcd.client.watch_client().watch("k", None).await?;
        let (mut kv, plog) = (etcd.kv.clone(), wlog.clone());
        let put = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(5)).await;
            note(&plog, "own put sent");
            if kv.put("own", "1", None).await.is_ok() {
                note(&plog, "own put ok");
            }
        });
        let mut events = 0;
        while events < 15 {
            let Some(r) = stream.message().await? else { break };
            events += r.events().len();
            note(&wlog, format!("event {events}"));
        }
        let _ = put.await;
        Ok(())
    });
    let (links, wlog) = (w.links.clone(), log.clone());
    w.sim.client("writer", async move {
        let connector = Connector::custom(SimConnector::new(links));
        let etcd = sync::conn::connect(&cfg, &connector, 0).await?;
        let mut kv = etcd.kv.clone();
        tokio::time::sleep(Duration::from_secs(1)).await;
        for i in 0..20 {
            etcd.call(kv.put("k", format!("{i}"), None)).await?;
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        note(&wlog, "writer done");
        Ok(())
    });
    let (f1, f2) = (w.faults.clone(), w.faults.clone());
    let steps = vec![
        Step::new(Duration::from_secs(3), move |sim| f1.partition_oneway(sim, "watcher", "etcd")),
        Step::new(Duration::from_secs(12), move |sim| f2.heal_oneway(sim, "watcher", "etcd")),
    ];
    run_schedule(&mut w.sim, steps, SEED, &w.faults.trace().clone()).unwrap_or_else(|e| panic!("{e}"));
    let log_dump = format!("{:?} (reproduce with seed={SEED})", log.lock().expect("log"));
    let during =
        log.lock().expect("log").iter().filter(|(t, w)| (4_000..12_000).contains(t) && w.starts_with("event")).count();
    assert!(during >= 5, "etcd → watcher flows while watcher → etcd is held: {log_dump}");
    let (sent, own) = (at(&log, "own put sent").expect(&log_dump), at(&log, "own put ok").expect(&log_dump));
    assert!(sent < 6_000 && own >= 12_000, "the watcher's own put waits for the heal: {log_dump}");
}

#[test]
fn a_slow_disk_delays_every_write_until_its_fsync() {
    // From 1 s on the member needs 300 ms per write: a put is answered, and visible to a reader,
    // only after it; reads stay fast; two concurrent puts share one wait (batched fsync).
    let mut w = world(20);
    let log: Log = Arc::default();
    let (links, clog, etcd_handle) = (w.links.clone(), log.clone(), w.etcd.clone());
    let cfg = conn_config(Duration::from_secs(100), Duration::from_secs(100));
    w.sim.client("client", async move {
        let connector = Connector::custom(SimConnector::new(links));
        let etcd = sync::conn::connect(&cfg, &connector, 0).await?;
        let mut kv = etcd.kv.clone();
        let took = |t0: tokio::time::Instant| t0.elapsed().as_millis() as u64;
        let t0 = tokio::time::Instant::now();
        kv.put("k", "fast", None).await?;
        note(&clog, format!("fast put {}", took(t0)));
        tokio::time::sleep(Duration::from_secs(2)).await;
        let (mut a, mut b) = (kv.clone(), kv.clone());
        let t0 = tokio::time::Instant::now();
        let (ra, rb) = tokio::join!(a.put("k", "slow", None), b.put("j", "slow", None));
        ra?;
        rb?;
        note(&clog, format!("slow puts {}", took(t0)));
        let t0 = tokio::time::Instant::now();
        kv.get("k", None).await?;
        note(&clog, format!("read {}", took(t0)));
        Ok(())
    });
    let faults = w.faults.clone();
    let steps = vec![Step::new(Duration::from_secs(1), move |_| {
        faults.slow_disk(&etcd_handle, "etcd", Duration::from_millis(300))
    })];
    run_schedule(&mut w.sim, steps, SEED, &w.faults.trace().clone()).unwrap_or_else(|e| panic!("{e}"));
    let log_dump = format!("{:?} (reproduce with seed={SEED})", log.lock().expect("log"));
    let ms = |prefix: &str| -> u64 {
        let l = log.lock().expect("log");
        let (_, w) = l.iter().find(|(_, w)| w.starts_with(prefix)).unwrap_or_else(|| panic!("{prefix}: {log_dump}"));
        w.rsplit(' ').next().unwrap().parse().unwrap()
    };
    assert!(ms("fast put") < 50, "{log_dump}");
    assert!((300..500).contains(&ms("slow puts")), "two puts, one fsync wait: {log_dump}");
    assert!(ms("read") < 50, "reads do not wait for the disk: {log_dump}");
    assert!(w.etcd.get(b"j").is_some(), "the slow writes landed");
}
