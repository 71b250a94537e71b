//! `drlab bench sync`: the shipped `etcd-sync` daemon's throughput on real etcd — initial copy and
//! streaming at several source rates — next to the target's own raw write ceiling measured in the
//! same run, and `etcdctl make-mirror` on exactly the same workloads.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use etcd_client::GetOptions;
use harness::daemon;
use harness::real_etcd::{EtcdOptions, EtcdServer, EtcdVersion};
use serde_json::json;
use sync::conn::Etcd;

use super::stream::{self, Ends, Mode, Round};
use super::{Options, VALUE_BYTES, connect, goal, load, round};

/// The goals: initial sync at 90 % of the ceiling and 30× make-mirror; p99 lag ≤ 100 ms at 5k/s;
/// streaming keeps up with every source rate below the ceiling.
const GOAL_INITIAL_VS_CEILING: f64 = 0.9;
const GOAL_INITIAL_VS_MAKE_MIRROR: f64 = 30.0;
const GOAL_LAG_P99_MS_AT_5K: f64 = 100.0;
/// Keys the bench may load (each side holds keys × 1 KiB; etcd's quota is 2 GiB).
const KEYS_MAX: usize = 1_000_000;
/// Keys under a namespace the `traditional` profile syncs.
const PREFIX: &str = "/registry/configmaps/bench/";

/// How long the sync's copy may take before the bench calls it stuck.
const CATCH_UP_MAX: Duration = Duration::from_secs(900);
/// How long make-mirror's initial copy is watched. It slows down as the keyspace grows (2k keys/s
/// at 100k keys, ~720 at 1M), so a 1M-key copy would take ~25 min: past this, the bench reports
/// its rate so far as an upper bound rather than waiting or throwing the run's figures away.
const MIRROR_COPY_MAX: Duration = Duration::from_secs(900);

/// A child process killed when dropped (a failed bench leaves nothing running).
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The shipped daemon next to this binary, syncing `source` → `target` under `traditional`.
fn start_sync(source: &str, target: &str, monitor: &str) -> Result<Killed, String> {
    let bin = super::etcd_sync_binary()?;
    Command::new(&bin)
        .args(["run", "--source-endpoints", source, "--target-endpoints", target, "--monitor-addr", monitor])
        .args(["--profile", "traditional"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map(Killed)
        .map_err(|e| format!("cannot run {}: {e}", bin.display()))
}

/// Until the daemon's checkpoint covers the source head of now, streaming.
async fn wait_caught_up(monitor: &str, source: &Etcd) -> Result<Duration, String> {
    let start = Instant::now();
    let want = source.head().await.map_err(|e| e.to_string())?;
    loop {
        let s = daemon::status(monitor).await;
        let done = s.as_ref().is_some_and(|s| {
            s["checkpoint"].as_i64().is_some_and(|c| c >= want) && s["phase"].as_str() == Some("streaming")
        });
        if done {
            return Ok(start.elapsed());
        }
        if start.elapsed() > CATCH_UP_MAX {
            return Err(format!("etcd-sync did not catch up with revision {want} within {CATCH_UP_MAX:?}: {s:?}"));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// make-mirror running, and how its initial copy went.
struct Mirror {
    child: Killed,
    /// Keys per second over the copy; an upper bound when the copy did not finish (it slows as
    /// it goes).
    keys_per_s: f64,
    /// Keys on the destination when the copy finished or was given up on.
    copied: u64,
    complete: bool,
}

/// `etcdctl make-mirror` (Debian's etcd-client, or `ETCDCTL`) of `PREFIX` onto `dest`, with the
/// prefix stripped (`--no-dest-prefix`), watched until its initial copy holds `keys` keys or
/// `MIRROR_COPY_MAX` has passed.
async fn start_make_mirror(source: &str, dest: &EtcdServer, keys: usize) -> Result<Mirror, String> {
    let dest_etcd = connect(&dest.endpoint()).await;
    let bin = std::env::var("ETCDCTL").unwrap_or_else(|_| "etcdctl".into());
    // etcdctl 3.4's make-mirror takes host:port, without a scheme (with one it copies nothing).
    let (source, dest_addr) =
        (source.trim_start_matches("http://"), dest.endpoint().trim_start_matches("http://").to_string());
    let start = Instant::now();
    let mut child = Command::new(&bin)
        .env("ETCDCTL_API", "3")
        .args(["--endpoints", source, "make-mirror", "--prefix", PREFIX, "--no-dest-prefix", &dest_addr])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map(Killed)
        .map_err(|e| format!("cannot run {bin}: {e} (install Debian's etcd-client)"))?;
    loop {
        let mut kv = dest_etcd.kv.clone();
        let n = dest_etcd
            .call(kv.get(vec![0u8], Some(GetOptions::new().with_from_key().with_count_only())))
            .await
            .map(|r| r.count())
            .unwrap_or(0);
        let complete = n as usize >= keys;
        if complete || start.elapsed() > MIRROR_COPY_MAX {
            let keys_per_s = n as f64 / start.elapsed().as_secs_f64();
            return Ok(Mirror { child, keys_per_s, copied: n as u64, complete });
        }
        if let Ok(Some(status)) = child.0.try_wait() {
            return Err(format!("make-mirror exited: {status}"));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The streaming rounds of one replicator: each mode at each rate, then the source's maximum;
/// a mode stops at the first rate it does not keep up with (its backlog would spill into the
/// next round).
async fn rounds(
    tool: &str,
    ends: &Ends<'_>,
    rates: &[u32],
    duration: Duration,
    drain: Duration,
) -> Result<Vec<serde_json::Value>, String> {
    let mut out = Vec::new();
    for mode in [Mode::Puts, Mode::Txns] {
        for rate in rates.iter().map(|&r| Some(r)).chain([None]) {
            let tag = format!("s{}-{}-", mode.name(), rate.map_or("max".to_string(), |r| r.to_string()));
            let mut v = stream::run(ends, &Round { tag, mode, rate_per_s: rate, duration, drain }).await?;
            v["tool"] = json!(tool);
            let kept_up = v["kept_up"].as_bool() == Some(true);
            out.push(v);
            if !kept_up {
                break;
            }
        }
    }
    Ok(out)
}

/// The highest source rate each (tool, mode) kept up with: the rate the source achieved (on a
/// shared 2-core machine it may fall short of the target rate, and the maximum has none).
fn highest_kept_up(streams: &[serde_json::Value]) -> serde_json::Value {
    let mut best = serde_json::Map::new();
    for s in streams.iter().filter(|s| s["kept_up"].as_bool() == Some(true)) {
        let name = format!("{} {}", s["tool"].as_str().unwrap_or(""), s["mode"].as_str().unwrap_or(""));
        let rate = s["rate_achieved_per_s"].as_f64().unwrap_or(0.0);
        let e = best.entry(name).or_insert(json!(0.0));
        if rate > e.as_f64().unwrap_or(0.0) {
            *e = json!(rate);
        }
    }
    serde_json::Value::Object(best)
}

pub fn sync(opts: Options) -> Result<serde_json::Value, String> {
    let keys = opts.keys.unwrap_or(if opts.quick { 10_000 } else { 100_000 });
    if !(1..=KEYS_MAX).contains(&keys) {
        return Err(format!("--keys must be 1..={KEYS_MAX}"));
    }
    let rates: &[u32] = if opts.quick { &[1_000, 5_000] } else { &[1_000, 5_000, 10_000, 20_000] };
    let duration = Duration::from_secs(if opts.quick { 2 } else { 5 });
    let drain = Duration::from_secs(if opts.quick { 5 } else { 15 });
    let rt = super::runtime()?;
    rt.block_on(async {
        let (src, tgt) = super::two_servers().await?;
        let (source, target) = (connect(&src.endpoint()).await, connect(&tgt.endpoint()).await);

        // Ceiling: the target's own raw write rate in each mode, then cleaned away; the goals
        // use the last, concurrent txns (the fastest).
        let modes = super::ceiling(&target, keys).await?;
        let (ceiling_mode, ceiling) = modes.last().cloned().expect("four modes");
        load(&source, &format!("{PREFIX}k-"), keys).await;

        // etcd-sync: initial copy, then the rounds, then its peak RSS.
        let monitor = format!("127.0.0.1:{}", daemon::free_port());
        let sync_child = start_sync(&src.endpoint(), &tgt.endpoint(), &monitor)?;
        let initial = wait_caught_up(&monitor, &source).await?;
        let initial_rate = keys as f64 / initial.as_secs_f64();
        let ends = Ends { source: &source, source_prefix: PREFIX, sink: &target, sink_prefix: PREFIX };
        let mut streams = rounds("etcd-sync", &ends, rates, duration, drain).await?;
        let rss_mib = daemon::high_water_kib(sync_child.0.id()).unwrap_or(0) as f64 / 1024.0;
        drop(sync_child);
        // The rounds' keys go, so make-mirror's initial copy is exactly the same keys.
        super::delete_prefix(&source, &format!("{PREFIX}s")).await?;

        // make-mirror: the same initial keys onto a fresh server, then the same rounds.
        let dest = EtcdServer::start(EtcdVersion::V35, EtcdOptions::default()).await.map_err(|e| e.to_string())?;
        let dest_etcd = connect(&dest.endpoint()).await;
        let m = start_make_mirror(&src.endpoint(), &dest, keys).await?;
        let mirror = m.keys_per_s;
        // make-mirror's rounds only once its copy is done: a copy still running would be
        // measured as lag.
        if m.complete {
            let ends = Ends { source: &source, source_prefix: PREFIX, sink: &dest_etcd, sink_prefix: "" };
            // The same tags again: prefix them so the source's keys are new writes.
            let ends_m = Ends { source_prefix: &format!("{PREFIX}m"), sink_prefix: "m", ..ends };
            streams.extend(rounds("make-mirror", &ends_m, rates, duration, drain).await?);
        }
        drop(m.child);
        let vs_mirror = if m.complete {
            "initial sync / make-mirror".to_string()
        } else {
            format!(
                "initial sync / make-mirror (make-mirror copied {} of {keys} keys in {}s: its rate is an upper bound, this ratio a lower one)",
                m.copied,
                MIRROR_COPY_MAX.as_secs()
            )
        };

        let sync_p99_at = |rate: u32| {
            streams
                .iter()
                .find(|s| s["tool"] == "etcd-sync" && s["mode"] == "puts" && s["rate_target_per_s"] == rate)
                .and_then(|s| s["lag_ms"]["p99"].as_f64())
        };
        let p99_5k = sync_p99_at(5_000);
        let below_ceiling: Vec<&serde_json::Value> = streams
            .iter()
            .filter(|s| s["tool"] == "etcd-sync")
            .filter(|s| s["rate_achieved_per_s"].as_f64().is_some_and(|r| r < ceiling))
            .collect();
        let kept = below_ceiling.iter().filter(|s| s["kept_up"].as_bool() == Some(true)).count();
        let mut goals = vec![
            goal("initial sync / concurrent-txn ceiling", initial_rate / ceiling, GOAL_INITIAL_VS_CEILING, true),
            goal(&vs_mirror, initial_rate / mirror, GOAL_INITIAL_VS_MAKE_MIRROR, true),
            goal(
                "etcd-sync rounds below the ceiling kept up (fraction)",
                kept as f64 / below_ceiling.len().max(1) as f64,
                1.0,
                true,
            ),
        ];
        if let Some(p99) = p99_5k {
            goals.push(goal("stream lag p99 ms at 5k writes/s", p99, GOAL_LAG_P99_MS_AT_5K, false));
        }
        Ok(json!({
            "bench": "sync",
            "quick": opts.quick,
            "cores": super::cores(),
            "etcd_version": tgt.version,
            "value_bytes": VALUE_BYTES,
            "keys": keys,
            "ceiling_keys_per_s": ceiling.round(),
            "ceiling_mode": ceiling_mode,
            "ceiling_modes": modes.iter().map(|(mode, rate)| json!({"mode": mode, "keys_per_s": rate.round()})).collect::<Vec<_>>(),
            "initial_keys_per_s": initial_rate.round(),
            "initial_vs_ceiling": round(initial_rate / ceiling, 3),
            "sync_peak_rss_mib": round(rss_mib, 1),
            "make_mirror_keys_per_s": mirror.round(),
            "make_mirror_copy_complete": m.complete,
            "make_mirror_keys_copied": m.copied,
            "initial_vs_make_mirror": round(initial_rate / mirror, 1),
            "stream_rates_per_s": rates,
            "stream_round_seconds": duration.as_secs(),
            "stream_txn_keys": stream::STREAM_TXN_OPS,
            "stream_lag_p99_ms": p99_5k.or_else(|| sync_p99_at(rates[0])),
            "highest_rate_kept_up": highest_kept_up(&streams),
            "streams": streams,
            "goals": goals,
        }))
    })
}
