//! The gRPC services and the two ways of serving them: a turmoil listener inside the world, or a
//! real TCP listener on loopback. Both run the same [`tonic`] server.

use std::pin::Pin;

use etcd_client::proto::*;
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use super::{EtcdError, SimEtcd, kv};
use crate::net::Links;

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;
type Answer<T> = Result<Response<T>, Status>;

/// Headroom above `--max-request-bytes` that etcd's gRPC server accepts before refusing at the
/// transport (`grpcOverheadBytes`): requests in between get etcd's own "request is too large".
const GRPC_OVERHEAD_BYTES: usize = 512 * 1024;

/// Outbound messages per stream before the server waits for the client to read.
pub(crate) const STREAM_QUEUE_MAX: usize = 64;

fn unimplemented<T>(what: &'static str) -> Answer<T> {
    Err(EtcdError::Unimplemented(what).into())
}

#[tonic::async_trait]
impl PbKvService for SimEtcd {
    async fn range(&self, req: Request<PbRangeRequest>) -> Answer<PbRangeResponse> {
        let store = self.lock();
        let mut resp = kv::range(&store, None, req.get_ref())?;
        resp.header = self.header(store.rev());
        Ok(Response::new(resp))
    }

    type RangeStreamStream = BoxStream<PbRangeStreamResponse>;
    async fn range_stream(&self, _: Request<PbRangeRequest>) -> Answer<Self::RangeStreamStream> {
        unimplemented("RangeStream")
    }

    async fn put(&self, req: Request<PbPutRequest>) -> Answer<PbPutResponse> {
        self.fsync().await;
        let (mut resp, rev) = self.write(|s| kv::put_request(s, req.get_ref()))?;
        resp.header = self.header(rev);
        Ok(Response::new(resp))
    }

    async fn delete_range(&self, req: Request<PbDeleteRequest>) -> Answer<PbDeleteResponse> {
        self.fsync().await;
        let (mut resp, rev) = self.write(|s| kv::delete_request(s, req.get_ref()))?;
        resp.header = self.header(rev);
        Ok(Response::new(resp))
    }

    async fn txn(&self, req: Request<PbTxnRequest>) -> Answer<PbTxnResponse> {
        self.fsync().await;
        let (mut resp, rev) = self.write(|s| kv::txn_request(s, req.get_ref()))?;
        set_txn_headers(self, &mut resp, rev);
        Ok(Response::new(resp))
    }

    async fn compact(&self, req: Request<PbCompactionRequest>) -> Answer<PbCompactionResponse> {
        let mut store = self.lock();
        store.compact(req.get_ref().revision)?;
        Ok(Response::new(PbCompactionResponse { header: self.header(store.rev()) }))
    }
}

/// etcd stamps the responses inside a transaction with the transaction's revision.
fn set_txn_headers(etcd: &SimEtcd, resp: &mut PbTxnResponse, rev: i64) {
    resp.header = etcd.header(rev);
    for op in &mut resp.responses {
        match &mut op.response {
            Some(PbTxnOpResponse::ResponseRange(r)) => r.header = etcd.header(rev),
            Some(PbTxnOpResponse::ResponsePut(r)) => r.header = etcd.header(rev),
            Some(PbTxnOpResponse::ResponseDeleteRange(r)) => r.header = etcd.header(rev),
            Some(PbTxnOpResponse::ResponseTxn(t)) => {
                set_txn_headers(etcd, t, rev);
                // etcd leaves a nested transaction's own header at revision 0.
                t.header = etcd.header(0);
            }
            None => {}
        }
    }
}

impl SimEtcd {
    /// Runs one write transaction and publishes it to watchers. Returns the response and the
    /// revision to stamp it with.
    fn write<T>(
        &self,
        f: impl FnOnce(&mut super::Store) -> Result<(T, super::store::Batch), EtcdError>,
    ) -> Result<(T, i64), EtcdError> {
        let (resp, rev, committed) = {
            let mut store = self.lock();
            let (resp, batch) = f(&mut store)?;
            let committed = store.commit(batch);
            (resp, store.rev(), committed)
        };
        if committed {
            self.notify_commit(rev);
        }
        Ok((resp, rev))
    }
}

#[tonic::async_trait]
impl PbLeaseService for SimEtcd {
    async fn lease_grant(&self, req: Request<PbLeaseGrantRequest>) -> Answer<PbLeaseGrantResponse> {
        Ok(Response::new(SimEtcd::lease_grant(self, req.get_ref())?))
    }

    async fn lease_revoke(&self, req: Request<PbLeaseRevokeRequest>) -> Answer<PbLeaseRevokeResponse> {
        Ok(Response::new(SimEtcd::lease_revoke(self, req.get_ref().id)?))
    }

    type LeaseKeepAliveStream = BoxStream<PbLeaseKeepAliveResponse>;
    async fn lease_keep_alive(
        &self,
        req: Request<Streaming<PbLeaseKeepAliveRequest>>,
    ) -> Answer<Self::LeaseKeepAliveStream> {
        let mut inbound = req.into_inner();
        let (tx, rx) = tokio::sync::mpsc::channel(STREAM_QUEUE_MAX);
        let etcd = self.clone();
        tokio::spawn(async move {
            while let Ok(Some(r)) = inbound.message().await {
                if tx.send(Ok(SimEtcd::lease_keep_alive(&etcd, r.id))).await.is_err() {
                    break;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn lease_time_to_live(&self, req: Request<PbLeaseTimeToLiveRequest>) -> Answer<PbLeaseTimeToLiveResponse> {
        Ok(Response::new(SimEtcd::lease_time_to_live(self, req.get_ref())))
    }

    async fn lease_leases(&self, _: Request<PbLeaseLeasesRequest>) -> Answer<PbLeaseLeasesResponse> {
        Ok(Response::new(SimEtcd::lease_leases(self)))
    }
}

#[tonic::async_trait]
impl PbMaintenanceService for SimEtcd {
    async fn alarm(&self, _: Request<PbAlarmRequest>) -> Answer<PbAlarmResponse> {
        let rev = self.revision();
        Ok(Response::new(PbAlarmResponse { header: self.header(rev), alarms: Vec::new() }))
    }

    async fn status(&self, _: Request<PbStatusRequest>) -> Answer<PbStatusResponse> {
        let store = self.lock();
        let header = self.header(store.rev());
        let member = header.as_ref().map(|h| h.member_id).unwrap_or_default();
        Ok(Response::new(PbStatusResponse {
            header,
            version: store.cfg.version.clone(),
            db_size: store.db_size(),
            db_size_in_use: store.db_size(),
            leader: member,
            raft_index: store.rev() as u64,
            raft_term: 2,
            raft_applied_index: store.rev() as u64,
            ..Default::default()
        }))
    }

    async fn defragment(&self, _: Request<PbDefragmentRequest>) -> Answer<PbDefragmentResponse> {
        let rev = self.revision();
        Ok(Response::new(PbDefragmentResponse { header: self.header(rev) }))
    }

    async fn hash(&self, _: Request<PbHashRequest>) -> Answer<PbHashResponse> {
        unimplemented("Hash")
    }

    async fn hash_kv(&self, _: Request<PbHashKvRequest>) -> Answer<PbHashKvResponse> {
        unimplemented("HashKV")
    }

    type SnapshotStream = BoxStream<PbSnapshotResponse>;
    async fn snapshot(&self, _: Request<PbSnapshotRequest>) -> Answer<Self::SnapshotStream> {
        unimplemented("Snapshot")
    }

    async fn move_leader(&self, _: Request<PbMoveLeaderRequest>) -> Answer<PbMoveLeaderResponse> {
        unimplemented("MoveLeader")
    }

    async fn downgrade(&self, _: Request<PbDowngradeRequest>) -> Answer<PbDowngradeResponse> {
        unimplemented("Downgrade")
    }
}

fn router(etcd: &SimEtcd) -> tonic::transport::server::Router {
    let decode_max = etcd.config().request_bytes_max + GRPC_OVERHEAD_BYTES;
    tonic::transport::Server::builder()
        .add_service(PbKvServer::new(etcd.clone()).max_decoding_message_size(decode_max))
        .add_service(PbWatchServer::new(etcd.clone()).max_decoding_message_size(decode_max))
        .add_service(PbLeaseServer::new(etcd.clone()).max_decoding_message_size(decode_max))
        .add_service(PbMaintenanceServer::new(etcd.clone()).max_decoding_message_size(decode_max))
}

/// Serves `etcd` on a turmoil port of the current host until the host stops. Connections are
/// registered with `links` so the world can reset them.
pub async fn serve(etcd: SimEtcd, port: u16, links: Links) -> Result<(), Box<dyn std::error::Error>> {
    let incoming = crate::net::incoming(port, links).await?;
    let lease_loop = tokio::spawn(etcd.clone().run_lease_expiry());
    let result = router(&etcd).serve_with_incoming(incoming).await;
    lease_loop.abort();
    Ok(result?)
}

/// Serves `etcd` on a real TCP listener (for conformance runs and tools on loopback).
pub async fn serve_tcp(etcd: SimEtcd, listener: tokio::net::TcpListener) -> Result<(), tonic::transport::Error> {
    let lease_loop = tokio::spawn(etcd.clone().run_lease_expiry());
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
    let result = router(&etcd).serve_with_incoming(incoming).await;
    lease_loop.abort();
    result
}
