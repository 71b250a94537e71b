//! `sync`: the etcd-sync engine (one-way, owner-aware etcd replication from the primary's etcd to the
//! standby's) and its daemon.
//!
//! - [`conn`]: the client seam (real TCP or the simulator's turmoil connector).
//! - [`keys`]: kube-apiserver storage paths.
//! - [`object`]: UIDs and owners of stored objects (JSON, protobuf, ciphertext).
//! - [`rules`]: what is synced (profiles, rules files, the hard deny list).

pub mod anchor;
pub mod batch;
pub mod check;
pub mod config;
pub mod conn;
pub mod control;
pub mod crypto;
pub mod engine;
pub mod keys;
pub mod ledger;
pub mod monitor;
pub mod object;
pub mod plan;
pub mod remote;
pub mod rules;
pub mod scan;
pub mod target;
pub mod window;

/// Every key the sync writes for itself on the target lives under this prefix.
pub const BOOKKEEPING_PREFIX: &str = "/drlab/etcd-sync/";
