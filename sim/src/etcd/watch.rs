//! The Watch service: one session task per gRPC stream, many watchers per session. Like etcd's
//! watchable store, a watcher is "unsynced" until it has replayed history up to the current
//! revision; every commit wakes the session, which reads the new events from the store's event
//! log — so a slow client never loses events, and a watcher that falls behind a compaction is
//! cancelled with `compact_revision`.

use std::collections::BTreeMap;

use etcd_client::proto::{PbEvent, PbWatchRequest, PbWatchRequestUnion, PbWatchResponse, PbWatchService};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use super::SimEtcd;
use super::config::Mutant;
use super::service::STREAM_QUEUE_MAX;
use super::store::{EVENT_DELETE, EVENT_PUT, KeyRange};

const FILTER_NOPUT: i32 = 0;
const FILTER_NODELETE: i32 = 1;
/// `clientv3.InvalidWatchID`: the id of a stream-wide progress response.
const WATCH_ID_STREAM: i64 = -1;
/// Watchers per stream; etcd has no limit, but every queue here has one.
const WATCHERS_PER_STREAM_MAX: usize = 10_000;

struct Watcher {
    range: KeyRange,
    next_rev: i64,
    prev_kv: bool,
    no_put: bool,
    no_delete: bool,
    progress_notify: bool,
    delivered_any: bool,
}

type Tx = mpsc::Sender<Result<PbWatchResponse, Status>>;

#[tonic::async_trait]
impl PbWatchService for SimEtcd {
    type WatchStream = ReceiverStream<Result<PbWatchResponse, Status>>;

    async fn watch(&self, req: Request<Streaming<PbWatchRequest>>) -> Result<Response<Self::WatchStream>, Status> {
        let (tx, rx) = mpsc::channel(STREAM_QUEUE_MAX);
        tokio::spawn(Session { etcd: self.clone(), watchers: BTreeMap::new(), tx }.run(req.into_inner()));
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

struct Session {
    etcd: SimEtcd,
    watchers: BTreeMap<i64, Watcher>,
    tx: Tx,
}

impl Session {
    async fn run(mut self, mut inbound: Streaming<PbWatchRequest>) {
        let mut commits = self.etcd.subscribe();
        let interval = self.etcd.config().progress_notify_interval;
        let mut progress = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
        loop {
            let ok = tokio::select! {
                msg = inbound.message() => match msg {
                    Ok(Some(req)) => self.handle(req).await,
                    _ => false,
                },
                changed = commits.changed() => changed.is_ok() && self.deliver().await,
                _ = progress.tick() => self.progress_notify().await,
            };
            if !ok {
                return;
            }
        }
    }

    async fn send(&self, resp: PbWatchResponse) -> bool {
        self.tx.send(Ok(resp)).await.is_ok()
    }

    async fn handle(&mut self, req: PbWatchRequest) -> bool {
        match req.request_union {
            Some(PbWatchRequestUnion::CreateRequest(c)) => {
                if self.watchers.len() >= WATCHERS_PER_STREAM_MAX {
                    return self
                        .tx
                        .send(Err(Status::resource_exhausted("too many watchers on one stream")))
                        .await
                        .is_ok();
                }
                let id = if c.watch_id != 0 {
                    c.watch_id
                } else {
                    (0..).find(|id| !self.watchers.contains_key(id)).expect("ids are unbounded")
                };
                let (rev, mut next_rev) = {
                    let store = self.etcd.lock();
                    (store.rev(), c.start_revision)
                };
                if next_rev <= 0 {
                    next_rev = rev + 1;
                }
                let created = PbWatchResponse {
                    header: self.etcd.header(rev),
                    watch_id: id,
                    created: true,
                    ..Default::default()
                };
                if self.watchers.contains_key(&id) {
                    // etcd refuses a duplicate id with a created-and-cancelled response.
                    let refused = PbWatchResponse {
                        canceled: true,
                        cancel_reason: "etcdserver: duplicate watch ID".into(),
                        ..created
                    };
                    return self.send(refused).await;
                }
                self.watchers.insert(
                    id,
                    Watcher {
                        range: KeyRange::new(&c.key, &c.range_end),
                        next_rev,
                        prev_kv: c.prev_kv,
                        no_put: c.filters.contains(&FILTER_NOPUT),
                        no_delete: c.filters.contains(&FILTER_NODELETE),
                        progress_notify: c.progress_notify,
                        delivered_any: false,
                    },
                );
                self.send(created).await && self.deliver().await
            }
            Some(PbWatchRequestUnion::CancelRequest(c)) => {
                if self.watchers.remove(&c.watch_id).is_none() {
                    return true;
                }
                let rev = self.etcd.revision();
                self.send(PbWatchResponse {
                    header: self.etcd.header(rev),
                    watch_id: c.watch_id,
                    canceled: true,
                    ..Default::default()
                })
                .await
            }
            Some(PbWatchRequestUnion::ProgressRequest(_)) => {
                // etcd answers only when every watcher of the stream has caught up.
                let rev = self.etcd.revision();
                if self.watchers.values().all(|w| w.next_rev > rev) {
                    return self
                        .send(PbWatchResponse {
                            header: self.etcd.header(rev),
                            watch_id: WATCH_ID_STREAM,
                            ..Default::default()
                        })
                        .await;
                }
                true
            }
            None => true,
        }
    }

    /// Sends every watcher the events it has not seen yet, in bounded responses.
    async fn deliver(&mut self) -> bool {
        let mut out: Vec<PbWatchResponse> = Vec::new();
        {
            let store = self.etcd.lock();
            let (rev, compact_rev) = (store.rev(), store.compact_rev());
            let batch_max = store.cfg.watch_catchup_events_max;
            let mut cancelled = Vec::new();
            for (id, w) in self.watchers.iter_mut() {
                if w.next_rev > rev {
                    continue;
                }
                if w.next_rev < compact_rev && !store.is(Mutant::CompactionNoCancel) {
                    // etcd sends this without a header revision: the response carries none.
                    out.push(PbWatchResponse {
                        header: self.etcd.header(0),
                        watch_id: *id,
                        compact_revision: compact_rev,
                        canceled: true,
                        ..Default::default()
                    });
                    cancelled.push(*id);
                    continue;
                }
                let mut events: Vec<PbEvent> = Vec::new();
                for (_, evs) in store.events_in(w.next_rev, rev) {
                    // A revision is never split across responses.
                    if events.len() >= batch_max {
                        out.push(PbWatchResponse {
                            header: self.etcd.header(rev),
                            watch_id: *id,
                            events: std::mem::take(&mut events),
                            ..Default::default()
                        });
                    }
                    for e in evs {
                        let kv = e.kv.as_ref().expect("stored events carry their key-value");
                        if !w.range.contains(&kv.key)
                            || (e.r#type == EVENT_PUT && w.no_put)
                            || (e.r#type == EVENT_DELETE && w.no_delete)
                        {
                            continue;
                        }
                        let mut e = e.clone();
                        let strip =
                            !w.prev_kv || (e.r#type == EVENT_DELETE && store.is(Mutant::WatchDeletePrevKvMissing));
                        if strip {
                            e.prev_kv = None;
                        }
                        events.push(e);
                    }
                }
                w.next_rev = rev + 1;
                if !w.delivered_any && !events.is_empty() && store.is(Mutant::WatchSkipsFirstEvent) {
                    events.remove(0);
                }
                w.delivered_any |= !events.is_empty();
                if !events.is_empty() {
                    out.push(PbWatchResponse {
                        header: self.etcd.header(rev),
                        watch_id: *id,
                        events,
                        ..Default::default()
                    });
                }
            }
            for id in cancelled {
                self.watchers.remove(&id);
            }
        }
        for resp in out {
            if !self.send(resp).await {
                return false;
            }
        }
        true
    }

    async fn progress_notify(&mut self) -> bool {
        let rev = self.etcd.revision();
        let ids: Vec<i64> =
            self.watchers.iter().filter(|(_, w)| w.progress_notify && w.next_rev > rev).map(|(id, _)| *id).collect();
        for id in ids {
            if !self.send(PbWatchResponse { header: self.etcd.header(rev), watch_id: id, ..Default::default() }).await {
                return false;
            }
        }
        true
    }
}
