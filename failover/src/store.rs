//! Where an orchestrator keeps its state: on the standby's etcd, under `/drlab/failover/` — the
//! progress record a restarted orchestrator resumes from, the audit trail, and a lease-backed
//! lock so a failover, its resume and an abort never act at once (a crashed holder's lease
//! lapses after [`LOCK_TTL_S`]). Shared by every adapter: the lock is etcd, wherever it runs.

use std::sync::Mutex;
use std::time::Duration;

use etcd_client::{Client, Compare, CompareOp, PutOptions, Txn, TxnOp, TxnOpResponse};
use serde_json::json;

use crate::ports::PortError;
use crate::step::Progress;

pub const PROGRESS_KEY: &str = "/drlab/failover/progress";
pub const AUDIT_PREFIX: &str = "/drlab/failover/audit/";
pub const LOCK_KEY: &str = "/drlab/failover/lock";
/// The lock's lease: a crashed orchestrator's lock lapses after this long.
pub const LOCK_TTL_S: i64 = 10;
const LOCK_KEEPALIVE: Duration = Duration::from_secs(3);

/// A persisted progress record (the orchestrator wrote it: it is JSON).
pub fn decode_progress(v: &[u8]) -> Progress {
    serde_json::from_slice(v).expect("the orchestrator's progress is JSON")
}

/// The orchestrator lock on one etcd: at most one holder, released at unlock or when the
/// holder's process ends (its keep-alive stops and the lease lapses).
#[derive(Default)]
pub struct Lock {
    /// The held lock's lease and its keep-alive task.
    held: Mutex<Option<(i64, tokio::task::JoinHandle<()>)>>,
}

impl Drop for Lock {
    fn drop(&mut self) {
        if let Some((_, keeper)) = self.held.lock().expect("lock").take() {
            keeper.abort();
        }
    }
}

impl Lock {
    /// Takes the lock for `holder`: None when taken, else who holds it.
    pub async fn try_lock(&self, etcd: &Client, side: &'static str, holder: &str) -> Result<Option<String>, PortError> {
        let port = |e: etcd_client::Error| PortError::new(side, e);
        let mut c = etcd.clone();
        let lease = c.lease_grant(LOCK_TTL_S, None).await.map_err(port)?.id();
        let value = json!({"holder": holder}).to_string();
        let txn = Txn::new()
            .when([Compare::create_revision(LOCK_KEY, CompareOp::Equal, 0)])
            .and_then([TxnOp::put(LOCK_KEY, value, Some(PutOptions::new().with_lease(lease)))])
            .or_else([TxnOp::get(LOCK_KEY, None)]);
        let r = c.txn(txn).await.map_err(port)?;
        if !r.succeeded() {
            let _ = c.lease_revoke(lease).await;
            let held = r.op_responses().into_iter().find_map(|op| match op {
                TxnOpResponse::Get(g) => g.kvs().first().map(|kv| kv.value().to_vec()),
                _ => None,
            });
            let holder = held
                .and_then(|v| serde_json::from_slice::<serde_json::Value>(&v).ok())
                .and_then(|v| v["holder"].as_str().map(str::to_string))
                .unwrap_or_else(|| "unknown".into());
            return Ok(Some(holder));
        }
        let keeper = tokio::spawn(async move {
            // Ends with the process (a crash) or at unlock; the lease then lapses or is revoked.
            let Ok((mut keeper, mut answers)) = c.lease_keep_alive(lease).await else { return };
            loop {
                tokio::time::sleep(LOCK_KEEPALIVE).await;
                if keeper.keep_alive().await.is_err() || answers.message().await.is_err() {
                    return;
                }
            }
        });
        *self.held.lock().expect("lock") = Some((lease, keeper));
        Ok(None)
    }

    pub async fn unlock(&self, etcd: &Client, side: &'static str) -> Result<(), PortError> {
        let held = self.held.lock().expect("lock").take();
        if let Some((lease, keeper)) = held {
            keeper.abort();
            // Revoking the lease deletes the lock key with it.
            etcd.clone().lease_revoke(lease).await.map_err(|e| PortError::new(side, e))?;
        }
        Ok(())
    }
}
