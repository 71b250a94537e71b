//! drlab's deterministic world. This crate is a leaf: it knows nothing of the sync or failover
//! code, which `harness` wires into the hosts the world offers.
//!
//! - [`etcd`]: a simulated etcd member speaking the etcd v3 gRPC API.
//! - [`net`]: turmoil TCP with world-controlled connection resets, and the client connector.
//! - [`fault`]: faults as small rules (partition as hold, resets, latency, crash / restart).
//! - [`clusteragent`]: a workload cluster's informer of its Machines through the platform domain.
//! - [`clock`]: simulated time in turmoil, real time when the models run against real etcd.
//! - [`trace`]: the structured JSON-lines trace and its hash.
//! - [`world`]: turmoil worlds built from these parts.

// tokio's own RNG (the branch order of `select!`) is only seeded from turmoil's seed when tokio is
// built with `--cfg tokio_unstable`. Without it two runs of one seed can differ, so refuse to build.
#[cfg(not(tokio_unstable))]
compile_error!("drlab-sim needs `--cfg tokio_unstable` (set in .cargo/config.toml; a RUSTFLAGS variable replaces it)");

pub mod clock;
pub mod clusteragent;
pub mod dns;
pub mod etcd;
pub mod fault;
pub mod iaas;
pub mod k8s;
pub mod net;
pub mod platform;
pub mod sysagent;
pub mod topology;
pub mod trace;
pub mod world;
