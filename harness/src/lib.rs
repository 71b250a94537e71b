//! `harness`: wires the real sync and failover code into the simulated world or onto real etcd
//! servers, runs scenarios and checks invariants.
//!
//! - [`scenario`]: the YAML scenario format and its JSON Schema; [`timeline`]: its validated,
//!   resolved timeline.
//! - [`runner`]: one scenario at one seed on the simulated platform (`drlab run`).
//! - [`invariants`]: the checkers over the trace and final states; [`report`]: verdicts against
//!   the expectations, and the run directory.
//! - [`explore`]: random fault schedules, shrunk to a minimal failing scenario (`drlab explore`).
//! - [`daemon`]: a shipped `etcd-sync` daemon's monitor and memory, from outside.
//! - [`drill`]: the platform world with the real sync between its clusters (`drlab world`).
//! - [`failover_sim`]: the failover orchestrator's ports in the world, and its host;
//!   [`preflight_sim`] and [`validate_sim`]: what its preflight and validation read there.
//! - [`fixtures`]: Kubernetes objects as stored (CAPI JSON, built-in protobuf).
//! - [`observe`]: watchers that record what invariant checks need (e.g. owner order).
//! - [`real_etcd`]: real etcd servers on loopback (the conformance suite's reference);
//!   [`real_backend`]: a scenario on two of them (`drlab run --backend etcd`), its sync links
//!   through [`proxy`]; [`real_ingress`]: a TLS ingress stand-in for the real orchestrator's
//!   tests; [`state`]: the stored state the checkers read, for both backends.
//! - [`simsync`]: the real sync engine as a host of the simulated world.
//! - [`allowance`]: which Machine deletions the scenario's own scale-downs and deletes explain.
//! - [`containers`]: the same behind testcontainers, for machines with Docker (feature `containers`).

pub mod allowance;
#[cfg(feature = "containers")]
pub mod containers;
pub mod daemon;
pub mod drill;
pub mod explore;
pub mod failover_sim;
pub mod fixtures;
pub mod invariants;
pub mod observe;
pub mod pki;
pub mod preflight_sim;
pub mod proxy;
pub mod real_backend;
pub mod real_etcd;
pub mod real_ingress;
pub mod report;
pub mod runner;
pub mod scenario;
pub mod simsync;
pub mod state;
pub mod timeline;
pub mod validate_sim;
