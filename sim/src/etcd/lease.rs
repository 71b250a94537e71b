//! Lease requests and the expiry loop (etcd's leader revokes expired leases every 500 ms).

use etcd_client::proto::{
    PbLeaseGrantRequest, PbLeaseGrantResponse, PbLeaseKeepAliveResponse, PbLeaseLeasesResponse, PbLeaseRevokeResponse,
    PbLeaseStatus, PbLeaseTimeToLiveRequest, PbLeaseTimeToLiveResponse,
};
use tokio::time::Instant;

use super::{EtcdError, SimEtcd};

impl SimEtcd {
    pub(crate) fn lease_grant(&self, req: &PbLeaseGrantRequest) -> Result<PbLeaseGrantResponse, EtcdError> {
        let mut store = self.lock();
        let lease = store.lease_grant(req.id, req.ttl, Instant::now())?;
        Ok(PbLeaseGrantResponse {
            header: self.header(store.rev()),
            id: lease.id,
            ttl: lease.ttl_s,
            error: String::new(),
        })
    }

    pub(crate) fn lease_revoke(&self, id: i64) -> Result<PbLeaseRevokeResponse, EtcdError> {
        let (rev, committed) = {
            let mut store = self.lock();
            let committed = match store.lease_revoke(id)? {
                Some(batch) => store.commit(batch),
                None => false,
            };
            (store.rev(), committed)
        };
        if committed {
            self.notify_commit(rev);
        }
        Ok(PbLeaseRevokeResponse { header: self.header(rev) })
    }

    pub(crate) fn lease_keep_alive(&self, id: i64) -> PbLeaseKeepAliveResponse {
        let mut store = self.lock();
        // etcd answers a keep-alive for an unknown lease with TTL 0, not an error.
        let ttl = store.lease_renew(id, Instant::now()).unwrap_or(0);
        PbLeaseKeepAliveResponse { header: self.header(store.rev()), id, ttl }
    }

    pub(crate) fn lease_time_to_live(&self, req: &PbLeaseTimeToLiveRequest) -> PbLeaseTimeToLiveResponse {
        let store = self.lock();
        let header = self.header(store.rev());
        match store.leases.get(&req.id) {
            // etcd answers TTL -1 for a lease it does not know.
            None => PbLeaseTimeToLiveResponse { header, id: req.id, ttl: -1, granted_ttl: 0, keys: Vec::new() },
            Some(l) => {
                let remaining = l.expiry.saturating_duration_since(Instant::now());
                PbLeaseTimeToLiveResponse {
                    header,
                    id: l.id,
                    ttl: remaining.as_secs_f64().ceil() as i64,
                    granted_ttl: l.ttl_granted_s,
                    keys: if req.keys { l.keys.iter().cloned().collect() } else { Vec::new() },
                }
            }
        }
    }

    pub(crate) fn lease_leases(&self) -> PbLeaseLeasesResponse {
        let store = self.lock();
        let leases = store.leases.keys().map(|id| PbLeaseStatus { id: *id }).collect();
        PbLeaseLeasesResponse { header: self.header(store.rev()), leases }
    }

    /// Revokes every expired lease; returns how many.
    pub fn expire_leases(&self) -> usize {
        let now = Instant::now();
        let expired = self.lock().expired_leases(now);
        for id in &expired {
            // A lease revoked concurrently is simply gone already.
            let _ = self.lease_revoke(*id);
        }
        expired.len()
    }

    /// The expiry loop a serving member runs.
    pub(crate) async fn run_lease_expiry(self) {
        let period = self.config().lease_check_interval;
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            self.expire_leases();
        }
    }
}
