//! The errors a simulated etcd answers with, worded and coded exactly as etcd's gRPC layer does
//! (`etcdserver/api/v3rpc/rpctypes`), because the code under test matches on these strings.

use tonic::{Code, Status};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EtcdError {
    #[error("etcdserver: mvcc: required revision has been compacted")]
    Compacted,
    #[error("etcdserver: mvcc: required revision is a future revision")]
    FutureRev,
    #[error("etcdserver: too many operations in txn request")]
    TooManyOps,
    #[error("etcdserver: duplicate key given in txn request")]
    DuplicateKey,
    #[error("etcdserver: request is too large")]
    RequestTooLarge,
    #[error("etcdserver: key is not provided")]
    EmptyKey,
    #[error("etcdserver: key not found")]
    KeyNotFound,
    #[error("etcdserver: requested lease not found")]
    LeaseNotFound,
    #[error("etcdserver: lease already exists")]
    LeaseExists,
    #[error("etcdserver: too large lease TTL")]
    LeaseTtlTooLarge,
    #[error("etcdserver: {0} is not implemented by the simulated etcd")]
    Unimplemented(&'static str),
}

impl EtcdError {
    pub fn code(&self) -> Code {
        match self {
            EtcdError::Compacted | EtcdError::FutureRev => Code::OutOfRange,
            EtcdError::LeaseNotFound => Code::NotFound,
            EtcdError::LeaseExists => Code::FailedPrecondition,
            EtcdError::Unimplemented(_) => Code::Unimplemented,
            EtcdError::TooManyOps
            | EtcdError::DuplicateKey
            | EtcdError::RequestTooLarge
            | EtcdError::EmptyKey
            | EtcdError::KeyNotFound
            | EtcdError::LeaseTtlTooLarge => Code::InvalidArgument,
        }
    }
}

impl From<EtcdError> for Status {
    fn from(e: EtcdError) -> Status {
        Status::new(e.code(), e.to_string())
    }
}
