//! The control-plane model of one global cluster, running against that cluster's etcd through
//! the real etcd-client: kube-apiserver storage rules ([`api`]), informers, the garbage
//! collector ([`gc`]), the ServiceAccount tokens controller ([`tokens`]), token authentication and
//! RBAC ([`auth`]), the Cluster API controllers ([`capi`]) and the leader election that lets each
//! controller manager act ([`leader`]).

pub mod api;
pub mod atrest;
pub mod auth;
pub mod capi;
pub mod gc;
pub mod informer;
pub mod kind;
pub mod leader;
pub mod object;
pub mod queue;
pub mod tokens;

pub use api::{Api, ApiError, ApiServer, Stored};
pub use kind::Kind;
pub use object::{Body, Object};
