//! `sync`: the etcd-sync engine (one-way, owner-aware replication from the primary's etcd to the
//! standby's). This issue lands its client seam, [`conn`]; the engine and the `etcd-sync` daemon
//! build on it.

pub mod conn;
