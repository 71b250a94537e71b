//! Informers: list then watch one kind, keep a cache, and hand each change to a controller after
//! that informer's own lag (real informers of one controller manager drift apart; the garbage
//! collector's ordering hazards live in that drift). A watch that breaks or is compacted away
//! ends in a relist, whose difference with the cache is delivered as changes.

use std::collections::BTreeMap;
use std::time::Duration;

use etcd_client::{EventType, WatchOptions, WatchResponse, WatchStream};
use tokio::sync::mpsc;

use super::api::{Api, Stored};
use super::kind::Kind;
use super::object::Object;

/// Backoff between relists after an error; capped so a healed link is noticed quickly. The
/// count is unbounded on purpose: an informer, like a real one, retries for as long as it runs.
const RELIST_BACKOFF_MS: [u64; 5] = [100, 200, 500, 1_000, 2_000];
/// Watch responses read ahead of their delivery (the reader waits when this many are due).
const RESPONSES_BUFFERED_MAX: usize = 1_024;

/// A change one informer saw.
#[derive(Debug, Clone)]
pub enum Delta {
    Upsert(Stored),
    /// The object is gone; the last version the informer held.
    Deleted(Object),
    /// The first list of this kind has been delivered.
    Synced(&'static Kind),
}

/// Starts an informer on the current runtime (a task of the calling host).
pub fn spawn(api: Api, etcd: etcd_client::Client, kind: &'static Kind, lag: Duration, tx: mpsc::Sender<Delta>) {
    tokio::spawn(async move {
        let mut cache: BTreeMap<String, Stored> = BTreeMap::new();
        let mut failures = 0usize;
        let mut synced = false;
        loop {
            match run(&api, etcd.clone(), kind, lag, &tx, &mut cache, &mut synced).await {
                Ok(()) => return, // the consumer is gone
                Err(e) => {
                    api.server.trace.record(
                        api.cluster(),
                        "informer.relist",
                        serde_json::json!({"by": api.actor, "kind": kind.kind, "error": e.to_string()}),
                    );
                    let ms = RELIST_BACKOFF_MS[failures.min(RELIST_BACKOFF_MS.len() - 1)];
                    failures += 1;
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                }
            }
        }
    });
}

/// One list + watch; Ok(()) when the consumer hung up, Err to relist.
async fn run(
    api: &Api,
    mut etcd: etcd_client::Client,
    kind: &'static Kind,
    lag: Duration,
    tx: &mpsc::Sender<Delta>,
    cache: &mut BTreeMap<String, Stored>,
    synced: &mut bool,
) -> Result<(), super::api::ApiError> {
    let (objects, rev) = api.list(kind).await?;
    let mut fresh: BTreeMap<String, Stored> = objects.into_iter().map(|s| (s.obj.key(), s)).collect();
    tokio::time::sleep(lag).await;
    for (key, old) in std::mem::take(cache) {
        if !fresh.contains_key(&key) && tx.send(Delta::Deleted(old.obj)).await.is_err() {
            return Ok(());
        }
    }
    for s in fresh.values() {
        if tx.send(Delta::Upsert(s.clone())).await.is_err() {
            return Ok(());
        }
    }
    std::mem::swap(cache, &mut fresh);
    if !*synced {
        *synced = true;
        if tx.send(Delta::Synced(kind)).await.is_err() {
            return Ok(());
        }
    }
    let opts = WatchOptions::new().with_prefix().with_start_revision(rev + 1);
    let stream = etcd.watch(kind.prefix(), Some(opts)).await?;
    // The lag is a latency, not a rate: a reader task stamps each response as it arrives, and
    // each is handed on `lag` after its arrival. (Sleeping `lag` per response would cap the
    // informer at one response per lag and let it fall minutes behind a burst of writes, which
    // no real informer does.)
    let (rtx, mut rrx) = mpsc::channel(RESPONSES_BUFFERED_MAX);
    let _reader = Reader(tokio::spawn(read(stream, rtx)));
    while let Some(item) = rrx.recv().await {
        let (arrived, resp) = item?;
        if resp.canceled() || resp.compact_revision() > 0 {
            return Err(etcd_client::Error::WatchError(format!("watch of {} ended", kind.resource)).into());
        }
        if resp.events().is_empty() {
            continue;
        }
        tokio::time::sleep_until(arrived + lag).await;
        for e in resp.events() {
            let Some(kv) = e.kv() else { continue };
            let key = String::from_utf8_lossy(kv.key()).into_owned();
            let delta = match e.event_type() {
                EventType::Delete => match cache.remove(&key) {
                    Some(old) => Delta::Deleted(old.obj),
                    None => continue,
                },
                EventType::Put => match api.server.decode(&key, kv.value()) {
                    Ok(obj) => {
                        let s = Stored { obj, rev: kv.mod_revision() };
                        cache.insert(key, s.clone());
                        Delta::Upsert(s)
                    }
                    Err(err) => {
                        api.trace_error(&key, &err);
                        continue;
                    }
                },
            };
            if tx.send(delta).await.is_err() {
                return Ok(());
            }
        }
    }
    Err(etcd_client::Error::WatchError(format!("watch of {} closed", kind.resource)).into())
}

type Stamped = Result<(tokio::time::Instant, WatchResponse), etcd_client::Error>;

/// Reads a watch stream, stamping each response with its arrival; ends after an error.
async fn read(mut stream: WatchStream, tx: mpsc::Sender<Stamped>) {
    loop {
        let item = match stream.message().await {
            Ok(Some(resp)) => Ok((tokio::time::Instant::now(), resp)),
            Ok(None) => return,
            Err(e) => Err(e),
        };
        let failed = item.is_err();
        if tx.send(item).await.is_err() || failed {
            return;
        }
    }
}

/// Stops the reader when its informer stops (a relist starts a new one).
struct Reader(tokio::task::JoinHandle<()>);

impl Drop for Reader {
    fn drop(&mut self) {
        self.0.abort();
    }
}
