//! Resume from a checkpoint and stream: watch the source, plan each revision, coalesce into
//! gate-guarded txns; freeze and stop on command.

use etcd_client::{EventType, GetOptions, KeyValue, WatchOptions};

use super::{Command, Phase, Session, SyncError, put_of};
use crate::conn::ConnError;
use crate::plan::{Change, HELD_PREFIX};
use crate::scan::{Scan, is_compacted, prefix_end};
use crate::target::Checkpoint;

/// Watch responses coalesced before a flush (each is bounded by the source's watch batching;
/// the batcher splits what exceeds a txn).
const RESPONSES_COALESCED_MAX: usize = 1_024;

impl Session<'_> {
    pub(super) async fn resume(&mut self, cp: &Checkpoint) -> Result<i64, SyncError> {
        self.handle.update(|s| s.phase = Phase::Resuming);
        tracing::info!(checkpoint = cp.revision, partial = cp.partial, chunk = cp.chunk, "resume");
        let mut index = Scan::new(&self.source, &[0], &[0], cp.revision, self.settings.page_keys);
        while let Some(kv) = index.next().await? {
            self.planner.observe_source(kv.key(), kv.value());
        }
        let t_rev = self.target_head().await?;
        let held_start = HELD_PREFIX.as_bytes();
        let mut held = Scan::new(&self.target, held_start, &prefix_end(held_start), t_rev, self.settings.page_keys);
        while let Some(kv) = held.next().await? {
            let key = kv.key()[held_start.len()..].to_vec();
            let rec: serde_json::Value = serde_json::from_slice(kv.value()).unwrap_or_default();
            let rev = rec.get("revision").and_then(|v| v.as_i64()).unwrap_or(cp.revision);
            let mut src = self.source.kv.clone();
            let r = match self.source.call(src.get(key.clone(), Some(GetOptions::new().with_revision(rev)))).await {
                Err(e) if is_compacted(&e) => return Err(SyncError::Compacted(rev)),
                r => r?,
            };
            if let Some(v) = r.kvs().first() {
                self.planner.restore_hold(key, v.value().to_vec(), rev);
            }
        }
        let mut ops = Vec::new();
        let mut tgt = Scan::new(&self.target, &[0], &[0], t_rev, self.settings.page_keys);
        while let Some(kv) = tgt.next().await? {
            if self.planner.rules().includes(kv.key()) {
                self.planner.verified_on_target(kv.value(), &mut ops)?;
            }
        }
        self.planner.release_ready(&mut ops)?;
        if !ops.is_empty() {
            let cp = self.checkpoint(cp.revision, cp.partial, false);
            self.write(ops, cp).await?;
        }
        self.publish_held();
        self.handle.update(|s| s.checkpoint = cp.revision);
        Ok(if cp.partial { cp.revision } else { cp.revision + 1 })
    }

    pub(super) async fn wait_while_frozen(&mut self, next_rev: i64) -> Result<bool, SyncError> {
        // Called before every revision: when nothing stops it, skip the subscription and the
        // status update (a resume from a freeze leaves through the loop below, which resets them).
        match *self.handle.commands.borrow() {
            Command::Run => return Ok(true),
            Command::Freeze(at) if next_rev <= at => return Ok(true),
            _ => {}
        }
        let mut commands = self.handle.commands.subscribe();
        loop {
            let c = *commands.borrow_and_update();
            match c {
                Command::Stop => return Ok(false),
                Command::Freeze(at) if next_rev > at => {
                    if let Some(t) = self.batcher.flush() {
                        let cp = self.txn_checkpoint(&t);
                        self.write(t.ops, cp).await?;
                    }
                    self.save_ledger(true).await?;
                    self.handle.update(|s| {
                        s.phase = Phase::Frozen;
                        s.frozen_at = Some(at);
                    });
                    if commands.changed().await.is_err() {
                        return Ok(false);
                    }
                }
                _ => {
                    self.handle.update(|s| {
                        s.phase = Phase::Streaming;
                        s.frozen_at = None;
                    });
                    return Ok(true);
                }
            }
        }
    }

    pub(super) async fn stream(&mut self, from: i64) -> Result<(), SyncError> {
        self.handle.update(|s| s.phase = Phase::Streaming);
        let opts = WatchOptions::new().with_from_key().with_start_revision(from).with_prev_key();
        let mut w = self.source.watch.clone();
        let mut stream = self.source.call(w.watch(vec![0u8], Some(opts))).await?;
        let mut applied = from - 1;
        if !self.wait_while_frozen(applied + 1).await? {
            return Ok(());
        }
        loop {
            let msg = tokio::select! {
                m = stream.message() => m,
                _ = self.handle_changed() => {
                    if !self.wait_while_frozen(applied + 1).await? {
                        return Ok(());
                    }
                    continue;
                }
            };
            let mut resp = self.watch_response(msg)?;
            // Watch responses that are already here (they pile up while a write is in flight,
            // e.g. over a slow link) join the same target txns: one response per txn would cap
            // the apply rate at one revision per round trip.
            let mut absorbed = 0;
            loop {
                if !self.absorb(&resp, &mut applied).await? {
                    return Ok(());
                }
                absorbed += 1;
                if absorbed >= RESPONSES_COALESCED_MAX {
                    break;
                }
                let next = tokio::select! {
                    biased;
                    m = stream.message() => Some(m),
                    _ = std::future::ready(()) => None,
                };
                match next {
                    Some(m) => resp = self.watch_response(m)?,
                    None => break,
                }
            }
            if let Some(t) = self.batcher.flush() {
                let cp = self.txn_checkpoint(&t);
                self.write(t.ops, cp).await?;
            }
            // Published with the checkpoint it belongs to, before the ledger's own write.
            self.publish_held();
            self.save_ledger(false).await?;
        }
    }

    /// A watch message as a response to apply, or the error that ends the stream.
    pub(super) fn watch_response(
        &self,
        msg: Result<Option<etcd_client::WatchResponse>, etcd_client::Error>,
    ) -> Result<etcd_client::WatchResponse, SyncError> {
        let resp = match msg {
            Ok(Some(r)) => r,
            Ok(None) => return Err(SyncError::WatchEnded("closed by the source".into())),
            Err(e) => {
                return Err(SyncError::Conn(ConnError::Unreachable {
                    endpoint: self.source.endpoint.clone(),
                    source: e,
                }));
            }
        };
        if resp.compact_revision() != 0 {
            return Err(SyncError::Compacted(resp.compact_revision()));
        }
        if resp.canceled() {
            return Err(SyncError::WatchEnded(format!("cancelled: {}", resp.cancel_reason())));
        }
        if let Some(h) = resp.header() {
            let head = h.revision();
            self.handle.update(|s| s.source_head = s.source_head.max(head));
        }
        Ok(resp)
    }

    /// Plans one watch response's revisions into the batcher, writing each txn it fills; false
    /// when a freeze or uninstall ends the stream.
    pub(super) async fn absorb(
        &mut self,
        resp: &etcd_client::WatchResponse,
        applied: &mut i64,
    ) -> Result<bool, SyncError> {
        let mut events = resp.events().iter().peekable();
        // The response's last put becomes an anchor once it is planned: one digest per response,
        // not per revision (any source write at or below a checkpoint's revision serves).
        let mut last_put: Option<(i64, &KeyValue)> = None;
        while let Some(first) = events.peek() {
            let rev = first.kv().map(|kv| kv.mod_revision()).unwrap_or_default();
            if !self.wait_while_frozen(rev).await? {
                return Ok(false);
            }
            let mut ops = Vec::new();
            while let Some(e) = events.next_if(|e| e.kv().map(|kv| kv.mod_revision()) == Some(rev)) {
                let kv = e.kv().expect("watch events carry a key-value");
                let change = match e.event_type() {
                    EventType::Put => {
                        last_put = Some((rev, kv));
                        put_of(kv)
                    }
                    EventType::Delete => Change::Delete { key: kv.key().to_vec() },
                };
                self.planner.change(rev, change, &mut ops)?;
            }
            for t in self.batcher.push(rev, ops) {
                let cp = self.txn_checkpoint(&t);
                self.write(t.ops, cp).await?;
            }
            *applied = rev;
        }
        if let Some((rev, kv)) = last_put {
            self.anchors.observe(rev, kv.key(), kv.value());
        }
        Ok(true)
    }

    /// Resolves when a command arrives that the stream must act on.
    pub(super) async fn handle_changed(&self) {
        let mut commands = self.handle.commands.subscribe();
        loop {
            if commands.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
            if *commands.borrow() != Command::Run {
                return;
            }
        }
    }
}
