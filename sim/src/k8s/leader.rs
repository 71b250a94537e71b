//! Leader election of a controller manager, as client-go's `leaderelection` does it over a
//! `coordination.k8s.io` Lease, and kube-apiserver's own `masterleases` key.
//!
//! - A candidate tries every [`RETRY_PERIOD`]: a missing Lease is created with itself as holder;
//!   its own Lease is renewed (a new `renewTime`, guarded by the revision it read); another
//!   holder's Lease is taken over only once that record has not changed for
//!   [`LEASE_DURATION`] *as this candidate observed it* — client-go compares records, not clocks.
//! - A leader that cannot renew for [`RENEW_DEADLINE`] stops leading (kube-controller-manager
//!   exits and is restarted; the model stops its controllers and stands again).
//! - So a Lease copied from another cluster, renewed there every two seconds, keeps this
//!   cluster's controllers from ever leading while the copies arrive (the hazard of a rule set
//!   that forgot Leases), and holds them back [`LEASE_DURATION`] after the copies stop.
//!
//! kube-apiserver also writes `/registry/masterleases/<ip>` under an etcd lease of
//! [`MASTERLEASE_TTL`]: the `kubernetes` Service's endpoints are made from these keys, so a copy on
//! another cluster would send its in-cluster clients to this one.

use std::time::Duration;

use etcd_client::PutOptions;
use serde_json::json;
use tokio::sync::watch;
use tokio::time::Instant;

use super::api::Api;
use super::kind;
use super::object::{Body, Object};

/// client-go's defaults as kube-controller-manager sets them.
pub const LEASE_DURATION: Duration = Duration::from_secs(15);
pub const RENEW_DEADLINE: Duration = Duration::from_secs(10);
pub const RETRY_PERIOD: Duration = Duration::from_secs(2);
/// kube-apiserver's `--endpoint-reconciler-type=lease` TTL, and how often it refreshes.
pub const MASTERLEASE_TTL: Duration = Duration::from_secs(15);
const MASTERLEASE_PERIOD: Duration = Duration::from_secs(10);
pub const MASTERLEASES_PREFIX: &str = "/registry/masterleases/";

/// One controller manager's Lease.
#[derive(Debug, Clone, Copy)]
pub struct Election {
    pub namespace: &'static str,
    pub name: &'static str,
}

/// kube-controller-manager's (its garbage collector leads with it).
pub const KUBE_CONTROLLER_MANAGER: Election = Election { namespace: "kube-system", name: "kube-controller-manager" };
/// The Cluster API controller manager's.
pub const CAPI_CONTROLLER_MANAGER: Election = Election { namespace: "cpaas-system", name: "capi-controller-manager" };

impl Election {
    pub fn key(&self) -> String {
        kind::LEASE.key(self.namespace, self.name)
    }
}

/// The holder identity of a manager of `cluster` (client-go uses `<hostname>_<uuid>`; the
/// model's names say which cluster a holder runs in).
pub fn identity(cluster: &str, e: Election) -> String {
    format!("{cluster}/{}", e.name)
}

fn now_ms() -> u64 {
    crate::clock::elapsed().map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// What one attempt found: whether this candidate holds the Lease now, and the holder seen.
struct Attempt {
    ours: bool,
    holder: Option<String>,
}

struct Candidate {
    api: Api,
    election: Election,
    me: String,
    /// The last record seen (holder, renewTime) and when this candidate first saw it.
    observed: Option<((Option<String>, u64), Instant)>,
}

impl Candidate {
    async fn attempt(&mut self) -> Attempt {
        let e = self.election;
        let lease = |holder: &str| {
            Object::new(
                &kind::LEASE,
                e.namespace,
                e.name,
                Body::Lease { holder: Some(holder.into()), renew_ms: now_ms() },
            )
        };
        let current = match self.api.get(&kind::LEASE, e.namespace, e.name).await {
            Ok(c) => c,
            Err(_) => return Attempt { ours: false, holder: None },
        };
        let Some(current) = current else {
            let ours = self.api.create(lease(&self.me)).await.is_ok();
            return Attempt { ours, holder: ours.then(|| self.me.clone()) };
        };
        let Body::Lease { holder, renew_ms } = &current.obj.body else {
            return Attempt { ours: false, holder: None };
        };
        let record = (holder.clone(), *renew_ms);
        if self.observed.as_ref().is_none_or(|(r, _)| *r != record) {
            self.observed = Some((record, Instant::now()));
        }
        let since = self.observed.as_ref().map(|(_, t)| *t).unwrap_or_else(Instant::now);
        let foreign = holder.as_deref() != Some(self.me.as_str());
        if foreign && since.elapsed() < LEASE_DURATION {
            return Attempt { ours: false, holder: holder.clone() };
        }
        let mut obj = current.obj.clone();
        obj.body = Body::Lease { holder: Some(self.me.clone()), renew_ms: now_ms() };
        match self.api.update(&current, obj).await {
            Ok(_) => Attempt { ours: true, holder: Some(self.me.clone()) },
            Err(_) => Attempt { ours: false, holder: holder.clone() },
        }
    }
}

/// Runs `election` for this cluster's manager until the host stops; `leading` says whether it
/// leads. Transitions are traced (`leader.acquired`, `leader.lost` with the holder seen).
pub async fn run(api: Api, election: Election, leading: watch::Sender<bool>) {
    let me = identity(api.cluster(), election);
    let mut c = Candidate { api, election, me, observed: None };
    let mut renewed = Instant::now();
    loop {
        let a = c.attempt().await;
        let leads = *leading.borrow();
        if a.ours {
            renewed = Instant::now();
            if !leads {
                c.api.server.trace.record(
                    c.api.cluster(),
                    "leader.acquired",
                    json!({"key": election.key(), "identity": c.me}),
                );
                leading.send_replace(true);
            }
        } else if leads && renewed.elapsed() >= RENEW_DEADLINE {
            c.api.server.trace.record(
                c.api.cluster(),
                "leader.lost",
                json!({"key": election.key(), "identity": c.me, "holder": a.holder}),
            );
            leading.send_replace(false);
        }
        tokio::time::sleep(RETRY_PERIOD).await;
    }
}

/// Whether a manager gated by `leading` may act now (None: no election, it always acts).
pub fn leads(leading: &Option<watch::Receiver<bool>>) -> bool {
    leading.as_ref().is_none_or(|r| *r.borrow())
}

/// Resolves when leadership changes (never without an election; ends quietly once the election
/// is gone, as the host is stopping).
pub async fn leadership_changed(leading: &mut Option<watch::Receiver<bool>>) {
    let changed = match leading {
        Some(r) => r.changed().await.is_ok(),
        None => false,
    };
    if !changed {
        std::future::pending::<()>().await;
    }
}

/// kube-apiserver's endpoint lease: `/registry/masterleases/<address>` under an etcd lease,
/// refreshed every [`MASTERLEASE_PERIOD`] until the host stops. Errors wait for the next period
/// (a fenced or unreachable etcd).
pub async fn masterlease(mut etcd: etcd_client::Client, address: String) {
    let key = format!("{MASTERLEASES_PREFIX}{address}");
    loop {
        if let Ok(l) = etcd.lease_grant(MASTERLEASE_TTL.as_secs() as i64, None).await {
            let value =
                serde_json::to_vec(&json!({"kind": "Endpoints", "subsets": [{"addresses": [{"ip": address}]}]}))
                    .expect("json");
            let _ = etcd.put(key.as_str(), value, Some(PutOptions::new().with_lease(l.id()))).await;
        }
        tokio::time::sleep(MASTERLEASE_PERIOD).await;
    }
}
