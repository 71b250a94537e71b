//! Conformance: the simulated etcd answers the real etcd-client exactly as real etcd does.
//!
//! One script ([`script::run`]) runs against four servers in the same test run — the simulated
//! etcd inside turmoil, the simulated etcd on real TCP, real etcd 3.4 and real etcd 3.5 — and the
//! simulated transcripts must equal the 3.5 transcript. The reference is always a real server
//! from this run, never a stored file and never the simulator itself. A missing etcd binary fails
//! the suite (`make tools` installs both).
//!
//! With `--features mutants`, every deliberate bug of the simulated etcd must turn it red.

#[path = "conformance/script.rs"]
mod script;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use harness::real_etcd::{EtcdOptions, EtcdServer, EtcdVersion};
use script::Transcript;
use sim::etcd::{Config, SimEtcd};
use sim::net::{Connector as SimConnector, Links};
use sync::conn::{ConnConfig, Connector};

/// Behaviours the script must cover at the least.
const BEHAVIOURS_MIN: usize = 40;
const PROGRESS_NOTIFY_MS: u64 = 500;
/// Turmoil seed of the in-simulator run (printed on failure).
const SEED: u64 = 7;

/// Behaviours where etcd 3.4 answers differently from 3.5 (the simulator follows 3.5). An
/// unexpected difference fails the suite, so this list stays true.
const KNOWN_34_DIFFERENCES: &[&str] = &[];

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("tokio runtime")
}

fn sim_config() -> Config {
    Config { progress_notify_interval: Duration::from_millis(PROGRESS_NOTIFY_MS), ..Config::default() }
}

fn real_options() -> EtcdOptions {
    EtcdOptions { progress_notify_interval_ms: Some(PROGRESS_NOTIFY_MS), ..EtcdOptions::default() }
}

async fn run_real(version: EtcdVersion) -> (String, Transcript) {
    let server = EtcdServer::start(version, real_options()).await.unwrap_or_else(|e| panic!("{e}"));
    let etcd = sync::conn::connect(&ConnConfig::new([server.endpoint()]), &Connector::Tcp, 0)
        .await
        .expect("connect to real etcd");
    let t = script::run(&etcd).await;
    (server.version.clone(), t)
}

async fn run_sim_tcp(cfg: Config) -> Transcript {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind loopback");
    let endpoint = format!("http://{}", listener.local_addr().expect("addr"));
    let server = tokio::spawn(sim::etcd::serve_tcp(SimEtcd::new(cfg), listener));
    let etcd =
        sync::conn::connect(&ConnConfig::new([endpoint]), &Connector::Tcp, 0).await.expect("connect to sim over TCP");
    let t = script::run(&etcd).await;
    server.abort();
    t
}

/// Runs the script inside a turmoil world: the client host reaches the simulated etcd host
/// through `sync::conn` with the turmoil connector. Must not be called inside a tokio runtime.
fn run_sim_turmoil(cfg: Config, seed: u64) -> Transcript {
    let links = Links::default();
    let mut sim = sim::world::builder(seed, Duration::from_secs(300), Duration::from_millis(1)).build();
    let trace = sim::trace::Trace::new(None).expect("trace");
    sim::world::add_etcd(&mut sim, "etcd", SimEtcd::new(cfg), links.clone(), trace);
    let out = Arc::new(Mutex::new(None));
    let slot = out.clone();
    sim.client("tester", async move {
        let connector = Connector::custom(SimConnector::new(links));
        let etcd = sync::conn::connect(&ConnConfig::new(["http://etcd:2379"]), &connector, 0).await?;
        *slot.lock().expect("slot") = Some(script::run(&etcd).await);
        Ok(())
    });
    sim.run().unwrap_or_else(|e| panic!("turmoil run failed (reproduce with seed={seed}): {e}"));
    out.lock().expect("slot").take().expect("the script finished")
}

/// Names of behaviours where `got` differs from `want`, with both observations.
fn differences(want: &Transcript, got: &Transcript) -> Vec<(String, String, String)> {
    assert_eq!(
        want.entries.iter().map(|e| &e.name).collect::<Vec<_>>(),
        got.entries.iter().map(|e| &e.name).collect::<Vec<_>>(),
        "both runs execute the same script"
    );
    want.entries
        .iter()
        .zip(&got.entries)
        .filter(|(w, g)| w.seen != g.seen)
        .map(|(w, g)| (w.name.clone(), w.seen.clone(), g.seen.clone()))
        .collect()
}

fn assert_same(label: &str, want: &Transcript, got: &Transcript) {
    let diffs = differences(want, got);
    if !diffs.is_empty() {
        let mut msg = format!("{label} differs from real etcd 3.5 in {} behaviours:\n", diffs.len());
        for (name, w, g) in &diffs {
            msg.push_str(&format!("  {name}\n    etcd: {w}\n    sim:  {g}\n"));
        }
        panic!("{msg}(the turmoil run used seed={SEED})");
    }
}

#[test]
fn simulated_etcd_answers_like_real_etcd() {
    let rt = runtime();
    let (v35, real35) = rt.block_on(run_real(EtcdVersion::V35));
    let (v34, real34) = rt.block_on(run_real(EtcdVersion::V34));
    let sim_tcp = rt.block_on(run_sim_tcp(sim_config()));
    drop(rt);
    let sim_turmoil = run_sim_turmoil(sim_config(), SEED);

    println!("reference: etcd {v35}; also ran etcd {v34}; {} behaviours", real35.behaviours());
    for e in &real35.entries {
        println!("  {}: {}", e.name, e.seen);
    }
    assert!(
        real35.behaviours() >= BEHAVIOURS_MIN,
        "the script covers {} behaviours, fewer than {BEHAVIOURS_MIN}",
        real35.behaviours()
    );

    let diffs34 = differences(&real35, &real34);
    for (name, w, g) in &diffs34 {
        println!(
            "etcd {v34} differs from {v35} in {name}:\n  {v35}: {w}\n  {v34}: {g}\n  (the simulator follows {v35})"
        );
    }
    let unexpected: Vec<&String> =
        diffs34.iter().map(|d| &d.0).filter(|n| !KNOWN_34_DIFFERENCES.contains(&n.as_str())).collect();
    assert!(unexpected.is_empty(), "etcd {v34} and {v35} differ where no difference is documented: {unexpected:?}");

    assert_same("simulated etcd over TCP", &real35, &sim_tcp);
    assert_same("simulated etcd inside turmoil", &real35, &sim_turmoil);
}

#[test]
fn simulated_etcd_in_turmoil_is_deterministic() {
    let a = run_sim_turmoil(sim_config(), SEED);
    let b = run_sim_turmoil(sim_config(), SEED);
    assert_eq!(a.entries, b.entries, "two runs of seed={SEED} gave different transcripts");
}

#[cfg(feature = "mutants")]
#[test]
fn every_mutant_turns_conformance_red() {
    use sim::etcd::Mutant;
    let rt = runtime();
    let (_, real35) = rt.block_on(run_real(EtcdVersion::V35));
    drop(rt);
    let mut survivors = Vec::new();
    for m in Mutant::ALL {
        let got = run_sim_turmoil(Config { mutant: Some(m), ..sim_config() }, SEED);
        let diffs = differences(&real35, &got);
        match diffs.first() {
            Some((name, _, _)) => println!("mutant {m:?}: caught by {name} (+{} more)", diffs.len() - 1),
            None => survivors.push(m),
        }
    }
    assert!(Mutant::ALL.len() >= 10, "at least 10 mutants");
    assert!(survivors.is_empty(), "mutants the conformance suite does not catch: {survivors:?}");
}
