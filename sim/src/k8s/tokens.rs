//! kube-controller-manager's ServiceAccount tokens controller, the part that deletes: a token
//! Secret (`kubernetes.io/service-account-token`) whose ServiceAccount is missing — no object of
//! the annotated name, or one with another UID — is deleted. Like the garbage collector it runs
//! on the standby whatever the sync gate says, so a token copied before its ServiceAccount is
//! lost there (the sync treats the annotated ServiceAccount as the token's implicit owner).

use std::collections::{BTreeSet, VecDeque};
use std::time::Duration;

use serde_json::json;
use tokio::sync::mpsc;

use super::api::{Api, ApiError, Propagation, Stored};
use super::informer::{self, Delta};
use super::kind;
use super::object::{Body, Object};

pub const TOKEN_TYPE: &str = "kubernetes.io/service-account-token";
pub const SA_NAME_ANNOTATION: &str = "kubernetes.io/service-account.name";
pub const SA_UID_ANNOTATION: &str = "kubernetes.io/service-account.uid";
const DELTAS_BUFFERED_MAX: usize = 1_024;
const RETRY_DELAY: Duration = Duration::from_millis(500);

fn is_token(o: &Object) -> bool {
    matches!(&o.body, Body::Secret { type_: Some(t), .. } if t == TOKEN_TYPE)
}

/// Runs the controller against `api`'s cluster until the host stops.
pub async fn run(api: Api, etcd: etcd_client::Client, lag: Duration) {
    let (tx, mut rx) = mpsc::channel(DELTAS_BUFFERED_MAX);
    informer::spawn(api.clone(), etcd.clone(), &kind::SECRET, lag, tx.clone());
    informer::spawn(api.clone(), etcd, &kind::SERVICE_ACCOUNT, lag, tx);
    // Token Secrets by key; ServiceAccount events queue the tokens that name them.
    let mut tokens: std::collections::BTreeMap<String, Stored> = Default::default();
    let mut queue: VecDeque<String> = VecDeque::new();
    let mut queued: BTreeSet<String> = BTreeSet::new();
    let mut unsynced = 2;
    while let Some(d) = rx.recv().await {
        match d {
            Delta::Synced(_) => unsynced -= 1,
            Delta::Upsert(s) if is_token(&s.obj) => {
                let k = s.obj.key();
                tokens.insert(k.clone(), s);
                if queued.insert(k.clone()) {
                    queue.push_back(k);
                }
            }
            Delta::Deleted(o) if is_token(&o) => {
                tokens.remove(&o.key());
            }
            Delta::Deleted(o) if o.kind == &kind::SERVICE_ACCOUNT => {
                for (k, t) in &tokens {
                    if t.obj.namespace() == o.namespace()
                        && t.obj.annotation(SA_NAME_ANNOTATION) == Some(o.name())
                        && queued.insert(k.clone())
                    {
                        queue.push_back(k.clone());
                    }
                }
            }
            Delta::Upsert(_) | Delta::Deleted(_) => {}
        }
        if unsynced > 0 || !rx.is_empty() {
            continue;
        }
        while let Some(k) = queue.pop_front() {
            queued.remove(&k);
            let Some(t) = tokens.get(&k).cloned() else { continue };
            if let Err(e) = check(&api, &t).await {
                api.trace_error(&k, &e);
                tokio::time::sleep(RETRY_DELAY).await;
                if queued.insert(k.clone()) {
                    queue.push_back(k);
                }
                break;
            }
        }
    }
}

/// Deletes the token `t` when its ServiceAccount is missing or has another UID.
async fn check(api: &Api, t: &Stored) -> Result<(), ApiError> {
    let name = t.obj.annotation(SA_NAME_ANNOTATION).unwrap_or_default();
    let uid = t.obj.annotation(SA_UID_ANNOTATION).unwrap_or_default();
    let reason = match api.get(&kind::SERVICE_ACCOUNT, t.obj.namespace(), name).await? {
        None => "service account not found",
        Some(sa) if !uid.is_empty() && sa.obj.uid() != uid => "service account uid mismatch",
        Some(_) => return Ok(()),
    };
    // Re-read the token: it may have changed or gone since it was queued.
    let Some(live) = api.get(&kind::SECRET, t.obj.namespace(), t.obj.name()).await? else { return Ok(()) };
    if live.obj.uid() != t.obj.uid() {
        return Ok(());
    }
    let why = json!({"controller": "serviceaccount-tokens", "rule": reason, "serviceaccount": name, "uid": uid});
    api.delete(&live, Propagation::Background, why).await.map(|_| ())
}
