//! `drlab bench sync|check|sim`: end-to-end figures on real etcd servers started for the run,
//! and the simulator's speed. These machines are shared and noisy: only ratios measured in one
//! run mean anything. Wall-clock time is read here, outside any simulation.

pub mod check;
pub mod sim;
pub mod stream;
pub mod throughput;

use std::time::{Duration, Instant};

use etcd_client::{Txn, TxnOp};
use harness::real_etcd::{EtcdOptions, EtcdServer, EtcdVersion};
use sync::conn::{ConnConfig, Connector, Etcd};

const VALUE_BYTES: usize = 1024;
const TXN_OPS: usize = 128;
/// Concurrent txns for the ceiling and the loader.
const IN_FLIGHT: usize = 4;

pub struct Options {
    pub quick: bool,
    /// Keys to load instead of the mode's default (bench check).
    pub keys: Option<usize>,
}

async fn connect(endpoint: &str) -> Etcd {
    let mut c = ConnConfig::new([endpoint.to_string()]);
    c.request_timeout = Duration::from_secs(60);
    sync::conn::connect(&c, &Connector::Tcp, 0).await.unwrap_or_else(|e| panic!("{e}"))
}

/// Writes `n` keys `prefix{i}` (1 KiB values) in txns of 128, `IN_FLIGHT` at a time; returns keys/s.
async fn load(etcd: &Etcd, prefix: &str, n: usize) -> f64 {
    load_values(etcd, prefix, n, |_| vec![b'v'; VALUE_BYTES]).await
}

/// [`load`] with the value of key `i` from `value(i)`.
async fn load_values(etcd: &Etcd, prefix: &str, n: usize, value: fn(usize) -> Vec<u8>) -> f64 {
    txns(etcd, prefix, n, IN_FLIGHT, value).await
}

/// The bench's `i`-th key under `prefix`: fixed width, so key order is `i`'s order.
fn key(prefix: &str, i: usize) -> String {
    format!("{prefix}{i:08}")
}

/// Writes `n` keys `prefix{i}` in txns of 128, `in_flight` at a time; returns keys/s.
async fn txns(etcd: &Etcd, prefix: &str, n: usize, in_flight: usize, value: fn(usize) -> Vec<u8>) -> f64 {
    let start = Instant::now();
    let chunks: Vec<Vec<usize>> = (0..n).collect::<Vec<_>>().chunks(TXN_OPS).map(<[usize]>::to_vec).collect();
    for group in chunks.chunks(in_flight) {
        let mut tasks = Vec::new();
        for chunk in group {
            let ops: Vec<TxnOp> = chunk.iter().map(|&i| TxnOp::put(key(prefix, i), value(i), None)).collect();
            let mut kv = etcd.kv.clone();
            let etcd = etcd.clone();
            tasks.push(tokio::spawn(
                async move { etcd.call(kv.txn(Txn::new().and_then(ops))).await.expect("bench txn") },
            ));
        }
        for t in tasks {
            t.await.expect("bench task");
        }
    }
    n as f64 / start.elapsed().as_secs_f64()
}

/// Keys each put mode writes at most (single puts are slow: a sample is enough for a rate).
const PUT_SAMPLE_KEYS_MAX: usize = 5_000;
/// Keys one delete request removes (see [`delete_prefix`]).
const DELETE_KEYS_MAX: usize = 10_000;
/// Puts in flight in the concurrent-puts mode.
const PUTS_IN_FLIGHT: usize = 64;

/// The target's raw write rate, each mode on its own keys (deleted after): single puts one at a
/// time, 64 puts in flight, txns of 128 one at a time, and txns of 128 `IN_FLIGHT` at a time.
/// Returns (mode, keys/s) in that order; the last is the ceiling the goals use.
async fn ceiling(etcd: &Etcd, keys: usize) -> Result<Vec<(String, f64)>, String> {
    let sample = keys.min(PUT_SAMPLE_KEYS_MAX);
    // (mode, single puts or txns, in flight, keys written)
    let modes: [(String, bool, usize, usize); 4] = [
        ("single puts, 1 at a time".into(), true, 1, sample),
        (format!("single puts, {PUTS_IN_FLIGHT} in flight"), true, PUTS_IN_FLIGHT, sample),
        (format!("txns of {TXN_OPS}, 1 at a time"), false, 1, keys),
        (format!("txns of {TXN_OPS}, {IN_FLIGHT} in flight"), false, IN_FLIGHT, keys),
    ];
    let mut out = Vec::new();
    for (i, (mode, single, in_flight, n)) in modes.into_iter().enumerate() {
        let prefix = format!("/bench-ceiling/{i}/");
        let rate = if single {
            puts(etcd, &prefix, n, in_flight).await
        } else {
            txns(etcd, &prefix, n, in_flight, |_| vec![b'v'; VALUE_BYTES]).await
        };
        free(etcd, &prefix).await?;
        out.push((mode, rate));
    }
    Ok(out)
}

/// Deletes `prefix`'s keys, compacts and defragments, so the ceiling's writes leave the target
/// neither their history nor their pages (three copies of 1M × 1 KiB would pass etcd's 2 GiB
/// quota, which counts the file, free pages included).
async fn free(etcd: &Etcd, prefix: &str) -> Result<(), String> {
    let head = delete_prefix(etcd, prefix).await?;
    let mut kv = etcd.kv.clone();
    etcd.call(kv.compact(head, Some(etcd_client::CompactionOptions::new().with_physical())))
        .await
        .map_err(|e| e.to_string())?;
    let mut m = etcd.maintenance.clone();
    etcd.call(m.defragment()).await.map_err(|e| e.to_string())?;
    Ok(())
}

/// Deletes every key under `prefix`, `DELETE_KEYS_MAX` at a time (one delete of 1M keys outlasts
/// etcd's own request timeout, "etcdserver: request timed out"); bounded by the keys it found
/// first, and checked gone. Returns the head revision after the deletes.
async fn delete_prefix(etcd: &Etcd, prefix: &str) -> Result<i64, String> {
    let mut kv = etcd.kv.clone();
    let count_only = etcd_client::GetOptions::new().with_prefix().with_count_only();
    let found = etcd.call(kv.get(prefix, Some(count_only.clone()))).await.map_err(|e| e.to_string())?.count();
    for _ in 0..(found as usize).div_ceil(DELETE_KEYS_MAX) {
        let page = etcd_client::GetOptions::new().with_prefix().with_keys_only().with_limit(DELETE_KEYS_MAX as i64);
        let r = etcd.call(kv.get(prefix, Some(page))).await.map_err(|e| e.to_string())?;
        let (Some(first), Some(last)) = (r.kvs().first(), r.kvs().last()) else { break };
        // [first, last + "\0"): exactly this page's keys.
        let end = [last.key(), &[0u8][..]].concat();
        let opts = etcd_client::DeleteOptions::new().with_range(end);
        etcd.call(kv.delete(first.key(), Some(opts))).await.map_err(|e| e.to_string())?;
    }
    let left = etcd.call(kv.get(prefix, Some(count_only))).await.map_err(|e| e.to_string())?;
    if left.count() != 0 {
        return Err(format!("{} keys under {prefix} were not deleted", left.count()));
    }
    Ok(left.header().map(|h| h.revision()).unwrap_or_default())
}

/// Writes `n` single puts `prefix{i}`, `in_flight` at a time; returns keys/s.
async fn puts(etcd: &Etcd, prefix: &str, n: usize, in_flight: usize) -> f64 {
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..n {
        while tasks.len() >= in_flight {
            tasks.join_next().await.expect("a task is running").expect("bench put");
        }
        let (etcd, k) = (etcd.clone(), key(prefix, i));
        tasks.spawn(async move {
            let mut kv = etcd.kv.clone();
            etcd.call(kv.put(k, vec![b'v'; VALUE_BYTES], None)).await.expect("bench put");
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.expect("bench put");
    }
    n as f64 / start.elapsed().as_secs_f64()
}

/// The shipped `etcd-sync` binary, built next to this one.
fn etcd_sync_binary() -> Result<std::path::PathBuf, String> {
    let bin = std::env::current_exe().map_err(|e| e.to_string())?.with_file_name("etcd-sync");
    if !bin.is_file() {
        return Err(format!(
            "{} is missing: build it next to drlab (cargo build --release -p drlab-sync --bin etcd-sync)",
            bin.display()
        ));
    }
    Ok(bin)
}

/// The benches' runtime: two worker threads, like the machines they describe.
fn runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().map_err(|e| e.to_string())
}

/// A source and a target etcd 3.5 on loopback.
async fn two_servers() -> Result<(EtcdServer, EtcdServer), String> {
    let src = EtcdServer::start(EtcdVersion::V35, EtcdOptions::default()).await.map_err(|e| e.to_string())?;
    let tgt = EtcdServer::start(EtcdVersion::V35, EtcdOptions::default()).await.map_err(|e| e.to_string())?;
    Ok((src, tgt))
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// The machine the figures were measured on.
fn cores() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0)
}

fn round(x: f64, places: i32) -> f64 {
    let f = 10f64.powi(places);
    (x * f).round() / f
}

/// A goal's verdict: met, or missed by how much (the benchmark says by how much, not a test).
fn goal(name: &str, measured: f64, bound: f64, at_least: bool) -> serde_json::Value {
    let met = if at_least { measured >= bound } else { measured <= bound };
    let by = if at_least { bound / measured.max(1e-9) } else { measured / bound.max(1e-9) };
    serde_json::json!({
        "goal": name,
        "measured": round(measured, 3),
        "bound": bound,
        "met": met,
        "missed_by_factor": if met { serde_json::Value::Null } else { serde_json::json!(round(by, 2)) },
    })
}
