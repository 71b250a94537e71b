//! `harness`: wires the real sync and failover code into the simulated world or onto real etcd
//! servers, and (as later issues land) runs scenarios and checks invariants.
//!
//! - [`real_etcd`]: real etcd servers on loopback (the conformance suite's reference).
//! - [`containers`]: the same behind testcontainers, for machines with Docker (feature `containers`).

#[cfg(feature = "containers")]
pub mod containers;
pub mod real_etcd;
