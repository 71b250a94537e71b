//! `drlab bench sync`: the sync's throughput on real etcd, next to the target's own raw write
//! ceiling measured in the same run, and `etcdctl make-mirror` on the same keys.

use std::time::{Duration, Instant};

use etcd_client::GetOptions;
use harness::real_etcd::{EtcdOptions, EtcdServer, EtcdVersion};
use serde_json::json;
use sync::conn::{ConnConfig, Connector, Etcd};
use sync::engine::{Engine, Handle, Phase, Settings};
use sync::rules::{Profile, Rules};

use super::{IN_FLIGHT, Options, TXN_OPS, VALUE_BYTES, connect, goal, load, percentile};

/// The goals: initial sync at 90 % of the ceiling and 30× make-mirror; p99 lag ≤ 100 ms at 5k/s.
const GOAL_INITIAL_VS_CEILING: f64 = 0.9;
const GOAL_INITIAL_VS_MAKE_MIRROR: f64 = 30.0;
const GOAL_LAG_P99_MS_AT_5K: f64 = 100.0;

fn goal_p99(goals: &mut Vec<serde_json::Value>, p99_ms: f64) {
    goals.push(goal("stream lag p99 ms at 5k writes/s", p99_ms, GOAL_LAG_P99_MS_AT_5K, false));
}

/// How long the sync may take before the bench calls it stuck.
const CATCH_UP_MAX: Duration = Duration::from_secs(600);

async fn wait_caught_up(handle: &Handle, source: &Etcd) -> Duration {
    let start = Instant::now();
    let want = source.head().await.expect("source head");
    loop {
        let s = handle.status();
        if s.checkpoint >= want && s.phase == Phase::Streaming {
            return start.elapsed();
        }
        assert!(start.elapsed() < CATCH_UP_MAX, "the sync did not catch up within {CATCH_UP_MAX:?}: {s:?}");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// `etcdctl make-mirror` (Debian's etcd-client, or `ETCDCTL`) copying the same keys to a fresh
/// server: keys/s until the destination holds them all.
async fn make_mirror(source: &str, prefix: &str, keys: usize) -> Result<f64, String> {
    let dest = EtcdServer::start(EtcdVersion::V35, EtcdOptions::default()).await.map_err(|e| e.to_string())?;
    let dest_etcd = connect(&dest.endpoint()).await;
    let bin = std::env::var("ETCDCTL").unwrap_or_else(|_| "etcdctl".into());
    // etcdctl 3.4's make-mirror takes host:port, without a scheme (with one it copies nothing).
    let (source, dest_addr) =
        (source.trim_start_matches("http://"), dest.endpoint().trim_start_matches("http://").to_string());
    let start = Instant::now();
    let mut child = std::process::Command::new(&bin)
        .env("ETCDCTL_API", "3")
        .args(["--endpoints", source, "make-mirror", "--prefix", prefix, "--no-dest-prefix", &dest_addr])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot run {bin}: {e} (install Debian's etcd-client)"))?;
    let result = loop {
        let mut kv = dest_etcd.kv.clone();
        // --no-dest-prefix strips the prefix on the way: count every key of the fresh server.
        let n = dest_etcd
            .call(kv.get(vec![0u8], Some(GetOptions::new().with_from_key().with_count_only())))
            .await
            .map(|r| r.count())
            .unwrap_or(0);
        if n as usize >= keys {
            break Ok(keys as f64 / start.elapsed().as_secs_f64());
        }
        if start.elapsed() > CATCH_UP_MAX {
            break Err(format!("make-mirror copied {n} of {keys} keys in {CATCH_UP_MAX:?}"));
        }
        if let Ok(Some(status)) = child.try_wait() {
            break Err(format!("make-mirror exited: {status}"));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let _ = child.kill();
    let _ = child.wait();
    result
}

/// Moves every write the checkpoint now covers from `pending` to `lags_ms`.
fn settle(pending: &mut Vec<(i64, Instant)>, lags_ms: &mut Vec<f64>, checkpoint: i64) {
    pending.retain(|(rev, t)| {
        let done = *rev <= checkpoint;
        if done {
            lags_ms.push(t.elapsed().as_secs_f64() * 1000.0);
        }
        !done
    });
}

pub fn sync(opts: Options) -> Result<serde_json::Value, String> {
    let rt = super::runtime()?;
    rt.block_on(async {
        let keys = if opts.quick { 10_000 } else { 100_000 };
        let stream_rate = if opts.quick { 1_000 } else { 5_000 };
        let stream_secs = if opts.quick { 3 } else { 10 };
        let (src, tgt) = super::two_servers().await?;
        let (source, target) = (connect(&src.endpoint()).await, connect(&tgt.endpoint()).await);

        // Ceiling: the target's own raw write rate, then cleaned away.
        let ceiling = load(&target, "/bench-ceiling/", keys).await;
        let mut kv = target.kv.clone();
        target
            .call(kv.delete("/bench-ceiling/", Some(etcd_client::DeleteOptions::new().with_prefix())))
            .await
            .map_err(|e| e.to_string())?;

        load(&source, "/registry/configmaps/bench/k-", keys).await;
        let handle = Handle::default();
        let mut settings = Settings::new(Rules::profile(Profile::Traditional));
        settings.seed = 1;
        let engine = Engine {
            source: ConnConfig::new([src.endpoint()]),
            target: ConnConfig::new([tgt.endpoint()]),
            source_connector: Connector::Tcp,
            target_connector: Connector::Tcp,
            settings,
            handle: handle.clone(),
        };
        let task = tokio::spawn(async move { engine.run().await });
        let initial = wait_caught_up(&handle, &source).await;
        let initial_rate = keys as f64 / initial.as_secs_f64();

        // Streaming: single puts at a fixed rate; lag = source ack → checkpoint covers it.
        let mut lags_ms = Vec::new();
        let period = Duration::from_secs_f64(1.0 / stream_rate as f64);
        let start = Instant::now();
        let mut pending: Vec<(i64, Instant)> = Vec::new();
        let mut i = 0usize;
        while start.elapsed() < Duration::from_secs(stream_secs) {
            let due = start + period * i as u32;
            if Instant::now() < due {
                tokio::time::sleep_until(due.into()).await;
            }
            let mut kv = source.kv.clone();
            let r = source
                .call(kv.put(format!("/registry/configmaps/bench/s-{i:08}"), vec![b's'; VALUE_BYTES], None))
                .await
                .map_err(|e| e.to_string())?;
            pending.push((r.header().expect("header").revision(), Instant::now()));
            i += 1;
            settle(&mut pending, &mut lags_ms, handle.status().checkpoint);
        }
        let achieved_rate = i as f64 / start.elapsed().as_secs_f64();
        while !pending.is_empty() {
            tokio::time::sleep(Duration::from_millis(1)).await;
            settle(&mut pending, &mut lags_ms, handle.status().checkpoint);
        }
        handle.command(sync::engine::Command::Stop);
        task.abort();
        let mirror = make_mirror(&src.endpoint(), "/registry/configmaps/bench/k-", keys).await?;
        lags_ms.sort_by(f64::total_cmp);
        let mut goals = vec![
            goal("initial sync / concurrent-txn ceiling", initial_rate / ceiling, GOAL_INITIAL_VS_CEILING, true),
            goal("initial sync / make-mirror", initial_rate / mirror, GOAL_INITIAL_VS_MAKE_MIRROR, true),
        ];
        if stream_rate == 5_000 {
            goal_p99(&mut goals, percentile(&lags_ms, 0.99));
        }
        Ok(json!({
            "bench": "sync",
            "quick": opts.quick,
            "cores": super::cores(),
            "etcd_version": tgt.version,
            "value_bytes": VALUE_BYTES,
            "keys": keys,
            "ceiling_keys_per_s": ceiling.round(),
            "ceiling_mode": format!("txns of {TXN_OPS}, {IN_FLIGHT} in flight"),
            "initial_keys_per_s": initial_rate.round(),
            "initial_vs_ceiling": (initial_rate / ceiling * 1000.0).round() / 1000.0,
            "make_mirror_keys_per_s": mirror.round(),
            "initial_vs_make_mirror": (initial_rate / mirror * 10.0).round() / 10.0,
            "stream_rate_target_per_s": stream_rate,
            "stream_rate_achieved_per_s": achieved_rate.round(),
            "stream_lag_p50_ms": (percentile(&lags_ms, 0.5) * 100.0).round() / 100.0,
            "stream_lag_p99_ms": (percentile(&lags_ms, 0.99) * 100.0).round() / 100.0,
            "stream_lag_max_ms": (percentile(&lags_ms, 1.0) * 100.0).round() / 100.0,
            "goals": goals,
        }))
    })
}
