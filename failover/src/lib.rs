//! The guarded, resumable failover orchestrator: the runbooks of seeds 000 and 001 as a state
//! machine over [`ports::Ports`] — sync control, fencing, DNS, probes, the standby's clusters and
//! a progress store. The same code runs in the simulator (adapters in `harness`) and for real.
//!
//! - [`abort`]: the operator's undo of a failover stopped before the uninstall.
//! - [`failback`]: the reverse sync onto the old primary, then a planned failover back.
//! - [`upgrade`]: the DR-aware upgrade's guarded uninstall and its reinstall.
//! - [`step`]: the planned-failover steps, in order, and the persisted [`step::Progress`].
//! - [`guard`]: the check a failover decides on, and the refusal it prints.
//! - [`ports`]: what the orchestrator needs from the world.
//! - [`real`]: the ports on a real platform (`dr-failover`): etcd, the `etcd-sync` monitor, hooks,
//!   an HTTP(S) probe.
//! - [`store`]: progress, audit and the orchestrator lock on the standby's etcd.
//! - [`preflight`]: naming, encryption, agent Role and backup checks of both sides (seeds 000, 002).
//! - [`validation`]: the standby's workload Clusters ready and every Machine bound to its
//!   infrastructure machine and VM, read from etcd.
//! - [`orchestrator`]: runs the steps — each with a timeout and an audit record — and resumes
//!   from persisted progress after a crash.

pub mod abort;
pub mod failback;
pub mod guard;
pub mod orchestrator;
pub mod ports;
pub mod preflight;
pub mod real;
pub mod step;
pub mod store;
pub mod upgrade;
pub mod validation;

pub use abort::abort;
pub use failback::failback;
pub use orchestrator::{FailoverError, Options, Outcome, preflight, run};
