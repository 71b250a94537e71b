//! One streaming round of `drlab bench sync`: the source written at a fixed rate (or as fast as
//! it takes) while a replicator copies it; every key's lag measured where it lands.
//!
//! Lag is measured the same way for `etcd-sync` and `etcdctl make-mirror`: a watch on the
//! destination sees each key arrive; its lag is arrival − the source's ack of the write, in
//! milliseconds, and in revisions the source had acked by then beyond the key's own.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use etcd_client::{EventType, Txn, TxnOp, WatchOptions};
use serde_json::json;
use sync::conn::Etcd;
use tokio::sync::Semaphore;

use super::{VALUE_BYTES, percentile, round};

/// Keys per txn in the txn mode.
pub const STREAM_TXN_OPS: usize = 16;
/// Writes in flight at a fixed rate: 20k puts/s at up to ~10 ms each.
const WRITES_IN_FLIGHT_MAX: usize = 256;
/// Writers back to back for the source's maximum rate.
const MAX_RATE_WRITERS: usize = 64;
/// A round kept up when every key arrived, the p99 lag stayed under this, and the keys landed
/// at ≥ 90 % of the rate they were written: lag bounded, not growing with the round (a
/// replicator behind the source piles lag up by the second).
pub const KEPT_UP_LAG_P99_MS: f64 = 1000.0;
const KEPT_UP_APPLIED_VS_WRITTEN: f64 = 0.9;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Puts,
    Txns,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::Puts => "puts",
            Mode::Txns => "txns",
        }
    }

    fn keys_per_write(self) -> usize {
        match self {
            Mode::Puts => 1,
            Mode::Txns => STREAM_TXN_OPS,
        }
    }
}

/// Where a round writes and where it watches the copies land.
pub struct Ends<'a> {
    pub source: &'a Etcd,
    /// Source keys are `{source_prefix}{tag}{i:08}`.
    pub source_prefix: &'a str,
    pub sink: &'a Etcd,
    /// … and land as `{sink_prefix}{tag}{i:08}`.
    pub sink_prefix: &'a str,
}

pub struct Round {
    /// Distinguishes this round's keys from every other's.
    pub tag: String,
    pub mode: Mode,
    /// Keys per second; `None` for the source's own maximum.
    pub rate_per_s: Option<u32>,
    pub duration: Duration,
    /// How long to wait for the last keys after the writes stop.
    pub drain: Duration,
}

/// Acked writes: key index → (source revision, ack time).
type Acks = Arc<Mutex<BTreeMap<usize, (i64, Instant)>>>;

/// Runs one round; returns its figures (`kept_up` among them).
pub async fn run(ends: &Ends<'_>, r: &Round) -> Result<serde_json::Value, String> {
    let watch_prefix = format!("{}{}", ends.sink_prefix, r.tag);
    // From the sink's head of now: nothing of this round can land before it.
    let from = ends.sink.head().await.map_err(|e| e.to_string())? + 1;
    let mut wc = ends.sink.watch.clone();
    let mut events = wc
        .watch(watch_prefix.clone(), Some(WatchOptions::new().with_prefix().with_start_revision(from)))
        .await
        .map_err(|e| format!("watch {}: {e}", ends.sink.endpoint))?;
    let acked_head = Arc::new(AtomicI64::new(0));
    let arrivals: Arc<Mutex<BTreeMap<usize, (Instant, i64)>>> = Arc::default();
    let recorder = {
        let (arrivals, acked_head) = (arrivals.clone(), acked_head.clone());
        tokio::spawn(async move {
            while let Ok(Some(msg)) = events.message().await {
                let now = Instant::now();
                for ev in msg.events().iter().filter(|e| e.event_type() == EventType::Put) {
                    let Some(kv) = ev.kv() else { continue };
                    let index = kv.key().get(watch_prefix.len()..).and_then(|s| std::str::from_utf8(s).ok());
                    if let Some(i) = index.and_then(|s| s.parse::<usize>().ok()) {
                        arrivals.lock().expect("lock").entry(i).or_insert((now, acked_head.load(Ordering::Relaxed)));
                    }
                }
            }
        })
    };

    let acks: Acks = Arc::default();
    let start = Instant::now();
    let written = write(ends, r, start, &acks, &acked_head).await?;
    let write_secs = start.elapsed().as_secs_f64();
    let drain_until = Instant::now() + r.drain;
    while arrivals.lock().expect("lock").len() < written && Instant::now() < drain_until {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // Dropping the stream ends the watch.
    recorder.abort();

    let acks = acks.lock().expect("lock");
    let arrivals = arrivals.lock().expect("lock");
    let (mut lag_ms, mut lag_revs) = (Vec::new(), Vec::new());
    for (i, (rev, acked)) in acks.iter() {
        if let Some((arrived, head)) = arrivals.get(i) {
            lag_ms.push(arrived.saturating_duration_since(*acked).as_secs_f64() * 1000.0);
            lag_revs.push((head - rev).max(0) as f64);
        }
    }
    lag_ms.sort_by(f64::total_cmp);
    lag_revs.sort_by(f64::total_cmp);
    let last_arrival = arrivals.values().map(|(t, _)| *t).max().unwrap_or(start);
    let arrived = arrivals.len().min(written);
    let p99_ms = percentile(&lag_ms, 0.99);
    let (written_per_s, applied_per_s) =
        (written as f64 / write_secs, arrived as f64 / last_arrival.duration_since(start).as_secs_f64().max(1e-3));
    let kept_up = arrived == written
        && p99_ms <= KEPT_UP_LAG_P99_MS
        && applied_per_s >= KEPT_UP_APPLIED_VS_WRITTEN * written_per_s;
    let stat = |v: &[f64], places| json!({"p50": round(percentile(v, 0.5), places), "p99": round(percentile(v, 0.99), places), "max": round(percentile(v, 1.0), places)});
    Ok(json!({
        "mode": r.mode.name(),
        "rate_target_per_s": r.rate_per_s,
        "rate_achieved_per_s": written_per_s.round(),
        "applied_per_s": applied_per_s.round(),
        "keys": written,
        "arrived": arrived,
        "lag_ms": stat(&lag_ms, 2),
        "lag_revisions": stat(&lag_revs, 0),
        "kept_up": kept_up,
    }))
}

/// Writes the round's keys; returns how many were acked.
async fn write(
    ends: &Ends<'_>,
    r: &Round,
    start: Instant,
    acks: &Acks,
    head: &Arc<AtomicI64>,
) -> Result<usize, String> {
    let per_write = r.mode.keys_per_write();
    let put = {
        let (source, prefix, tag, acks, head) =
            (ends.source.clone(), ends.source_prefix.to_string(), r.tag.clone(), acks.clone(), head.clone());
        move |w: usize| {
            let (source, acks, head) = (source.clone(), acks.clone(), head.clone());
            let keys: Vec<(usize, String)> =
                (w * per_write..(w + 1) * per_write).map(|i| (i, format!("{prefix}{tag}{i:08}"))).collect();
            async move {
                let mut kv = source.kv.clone();
                let value = || vec![b's'; VALUE_BYTES];
                let rev = match keys.as_slice() {
                    [(_, k)] => source.call(kv.put(k.as_str(), value(), None)).await.map(|r| r.header().cloned()),
                    _ => {
                        let ops: Vec<TxnOp> = keys.iter().map(|(_, k)| TxnOp::put(k.as_str(), value(), None)).collect();
                        source.call(kv.txn(Txn::new().and_then(ops))).await.map(|r| r.header().cloned())
                    }
                };
                let rev = rev.map(|h| h.map(|h| h.revision()));
                let rev = rev.map_err(|e| e.to_string())?.ok_or("a write answered without a header")?;
                let now = Instant::now();
                head.fetch_max(rev, Ordering::Relaxed);
                let mut acks = acks.lock().expect("lock");
                for (i, _) in keys {
                    acks.insert(i, (rev, now));
                }
                Ok::<(), String>(())
            }
        }
    };
    let mut tasks = tokio::task::JoinSet::new();
    match r.rate_per_s {
        Some(rate) => {
            let period = Duration::from_secs_f64(per_write as f64 / f64::from(rate));
            let permits = Arc::new(Semaphore::new(WRITES_IN_FLIGHT_MAX));
            let writes = (r.duration.as_secs_f64() / period.as_secs_f64()).ceil() as usize;
            for w in 0..writes {
                tokio::time::sleep_until((start + period.mul_f64(w as f64)).into()).await;
                let permit = permits.clone().acquire_owned().await.expect("semaphore");
                let f = put(w);
                tasks.spawn(async move {
                    let r = f.await;
                    drop(permit);
                    r
                });
            }
        }
        None => {
            let next = Arc::new(AtomicUsize::new(0));
            for _ in 0..MAX_RATE_WRITERS {
                let (next, put, until) = (next.clone(), put.clone(), start + r.duration);
                tasks.spawn(async move {
                    while Instant::now() < until {
                        put(next.fetch_add(1, Ordering::Relaxed)).await?;
                    }
                    Ok(())
                });
            }
        }
    }
    while let Some(done) = tasks.join_next().await {
        done.map_err(|e| e.to_string())??;
    }
    Ok(acks.lock().expect("lock").len())
}
