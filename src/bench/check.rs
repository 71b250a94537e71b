//! `drlab bench check`: the consistency check's time and peak memory on real etcd. The shipped
//! `etcd-sync check` runs as a child process over N identical keys on both sides; its peak RSS
//! is its own high-water mark (`VmHWM` in /proc/<pid>/status), read until it exits.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;

use super::{Options, VALUE_BYTES, connect, cores, goal, load_values, round};

/// Keys under a namespace the `traditional` profile syncs (the check compares only those).
const PREFIX: &str = "/registry/configmaps/bench/k-";
/// Largest keyspace the bench loads (each side holds keys × 1 KiB; etcd's quota is 2 GiB).
const KEYS_MAX: usize = 1_500_000;
/// The goal: a check of 1M keys within 30 s and 128 MiB.
const GOAL_SECONDS_PER_1M_KEYS: f64 = 30.0;
const GOAL_RSS_MIB: f64 = 128.0;

pub fn check(opts: Options) -> Result<serde_json::Value, String> {
    let keys = opts.keys.unwrap_or(if opts.quick { 10_000 } else { 100_000 });
    if !(1..=KEYS_MAX).contains(&keys) {
        return Err(format!("--keys must be 1..={KEYS_MAX}"));
    }
    let bin = super::etcd_sync_binary()?;
    let rt = super::runtime()?;
    rt.block_on(async {
        let (src, tgt) = super::two_servers().await?;
        load_values(&connect(&src.endpoint()).await, PREFIX, keys, object).await;
        load_values(&connect(&tgt.endpoint()).await, PREFIX, keys, object).await;
        let start = Instant::now();
        let mut child = Command::new(&bin)
            .args(["check", "--source-endpoints", &src.endpoint(), "--target-endpoints", &tgt.endpoint()])
            .args(["--profile", "traditional", "-o", "json"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot run {}: {e}", bin.display()))?;
        // Drained on threads so a full pipe never stalls the child (this is the bench, not the
        // simulation: threads are fine here).
        let drain = |mut r: Box<dyn Read + Send>| {
            std::thread::spawn(move || {
                let mut buf = Vec::new();
                let _ = r.read_to_end(&mut buf);
                buf
            })
        };
        let stdout = drain(Box::new(child.stdout.take().expect("piped")));
        let stderr = drain(Box::new(child.stderr.take().expect("piped")));
        let mut rss_kib = 0u64;
        let status = loop {
            rss_kib = rss_kib.max(harness::daemon::high_water_kib(child.id()).unwrap_or(0));
            if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
                break status;
            }
            std::thread::sleep(Duration::from_millis(2));
        };
        let seconds = start.elapsed().as_secs_f64();
        let rss_mib = rss_kib as f64 / 1024.0;
        let (stdout, stderr) = (stdout.join().unwrap_or_default(), stderr.join().unwrap_or_default());
        let report: serde_json::Value = serde_json::from_slice(&stdout).map_err(|e| {
            format!("etcd-sync check printed no report ({e}): {}", String::from_utf8_lossy(&stderr))
        })?;
        let per_1m = seconds * 1_000_000.0 / keys as f64;
        Ok(json!({
            "bench": "check",
            "quick": opts.quick,
            "cores": cores(),
            "etcd_version": tgt.version,
            "value_bytes": VALUE_BYTES,
            "keys": keys,
            "consistent": status.code() == Some(0),
            "target_revision": report["target_revision"],
            "check_seconds": round(seconds, 3),
            "check_keys_per_s": (keys as f64 / seconds).round(),
            "check_peak_rss_mib": round(rss_mib, 1),
            "goals": [
                goal("check seconds per 1M keys (extrapolated from this run's keys)", per_1m, GOAL_SECONDS_PER_1M_KEYS, false),
                goal("check peak RSS MiB", rss_mib, GOAL_RSS_MIB, false),
            ],
        }))
    })
}

/// Key `i`'s value: a Kubernetes object of about 1 KiB with its own UID, owned by the first
/// object of its group of ten (the check indexes every UID to find dangling owners, so its
/// memory depends on objects, not on opaque bytes).
fn object(i: usize) -> Vec<u8> {
    let uid = |n: usize| format!("{n:08x}-0000-4000-8000-{n:012x}");
    let mut owners = Vec::new();
    if !i.is_multiple_of(10) {
        owners.push(json!({"apiVersion": "v1", "kind": "ConfigMap", "name": format!("k-{:08}", i - i % 10), "uid": uid(i - i % 10)}));
    }
    let mut v = json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": format!("k-{i:08}"), "namespace": "bench", "uid": uid(i), "ownerReferences": owners},
        "data": {"pad": ""},
    });
    let len = serde_json::to_vec(&v).expect("json").len();
    v["data"]["pad"] = json!("p".repeat(VALUE_BYTES.saturating_sub(len)));
    serde_json::to_vec(&v).expect("json")
}
