//! Faults as small rules over the turmoil world, each traced.
//!
//! turmoil's TCP never retransmits, so no rule here drops a segment: a partition holds segments
//! (delivered on heal), and a partition that outlasts a keep-alive ends with a connection reset
//! ([`Faults::reset_link`]), as a real kernel's gave-up retransmission would. Loss is modelled as
//! latency.

use std::time::Duration;

use serde_json::json;

use crate::net::Links;
use crate::trace::Trace;

/// The fault plumbing of one world.
#[derive(Clone)]
pub struct Faults {
    links: Links,
    trace: Trace,
}

impl Faults {
    pub fn new(links: Links, trace: Trace) -> Self {
        Faults { links, trace }
    }

    pub fn trace(&self) -> &Trace {
        &self.trace
    }

    /// Holds every segment between `a` and `b`, both ways, until [`Faults::heal`].
    pub fn partition(&self, sim: &turmoil::Sim<'_>, a: &str, b: &str) {
        sim.hold(a, b);
        self.trace.record("world", "fault.partition", json!({"a": a, "b": b}));
    }

    /// Delivers what was held and lets traffic flow again.
    pub fn heal(&self, sim: &turmoil::Sim<'_>, a: &str, b: &str) {
        sim.release(a, b);
        self.trace.record("world", "fault.heal", json!({"a": a, "b": b}));
    }

    /// Holds every segment from `from` to `to` until [`Faults::heal_oneway`]; `to` → `from`
    /// flows (an asymmetric route, a one-way firewall rule). New connections between the two
    /// wait for the heal.
    pub fn partition_oneway(&self, sim: &turmoil::Sim<'_>, from: &str, to: &str) {
        self.links.hold_oneway(sim.lookup(from), sim.lookup(to));
        self.trace.record("world", "fault.partition-oneway", json!({"from": from, "to": to}));
    }

    pub fn heal_oneway(&self, sim: &turmoil::Sim<'_>, from: &str, to: &str) {
        self.links.release_oneway(sim.lookup(from), sim.lookup(to));
        self.trace.record("world", "fault.heal-oneway", json!({"from": from, "to": to}));
    }

    /// Resets every connection between `a` and `b`; returns how many connection ends saw it.
    pub fn reset_link(&self, sim: &turmoil::Sim<'_>, a: &str, b: &str) -> usize {
        let n = self.links.reset(sim.lookup(a), sim.lookup(b));
        self.trace.record("world", "fault.reset", json!({"a": a, "b": b, "ends": n}));
        n
    }

    /// Adds latency to every message between `a` and `b` (a slow link or a slow disk).
    pub fn delay(&self, sim: &turmoil::Sim<'_>, a: &str, b: &str, latency: Duration) {
        sim.set_link_latency(a, b, latency);
        self.trace.record("world", "fault.delay", json!({"a": a, "b": b, "ms": latency.as_millis() as u64}));
    }

    /// Crashes a host: its tasks stop, its peers' connections are reset. A simulated etcd keeps
    /// its committed state (it lives outside the host).
    pub fn crash(&self, sim: &mut turmoil::Sim<'_>, host: &str) {
        let ip = sim.lookup(host);
        sim.crash(host);
        self.links.reset_host(ip);
        self.trace.record("world", "fault.crash", json!({"host": host}));
    }

    /// Makes a simulated etcd's disk slow: each write waits `latency` for its fsync (zero: fast
    /// again).
    pub fn slow_disk(&self, etcd: &crate::etcd::SimEtcd, host: &str, latency: Duration) {
        etcd.set_disk_latency(latency);
        self.trace.record("world", "fault.slow-disk", json!({"host": host, "ms": latency.as_millis() as u64}));
    }

    /// Compacts a simulated etcd at its head revision, as its API server's compactor would.
    pub fn compact(&self, etcd: &crate::etcd::SimEtcd, host: &str) -> i64 {
        let rev = etcd.compact_now();
        self.trace.record("world", "fault.compact", json!({"host": host, "rev": rev}));
        rev
    }

    /// `etcdctl snapshot save` on a simulated etcd.
    pub fn save_snapshot(&self, etcd: &crate::etcd::SimEtcd, host: &str) -> i64 {
        let rev = etcd.save_snapshot();
        self.trace.record("world", "fault.snapshot-save", json!({"host": host, "rev": rev}));
        rev
    }

    /// An operator restores a simulated etcd from its last snapshot: the host goes down, the
    /// member's data is replaced (revision back to the snapshot's, or bumped and marked
    /// compacted), and the host starts again. None when no snapshot was saved.
    pub fn restore_snapshot(
        &self,
        sim: &mut turmoil::Sim<'_>,
        etcd: &crate::etcd::SimEtcd,
        host: &str,
        bump_revision: i64,
    ) -> Option<i64> {
        self.crash(sim, host);
        let rev = etcd.restore_snapshot(bump_revision);
        self.trace.record("world", "fault.snapshot-restore", json!({"host": host, "rev": rev, "bump": bump_revision}));
        self.restart(sim, host);
        rev
    }

    /// Starts a crashed host's software again.
    pub fn restart(&self, sim: &mut turmoil::Sim<'_>, host: &str) {
        sim.bounce(host);
        self.trace.record("world", "fault.restart", json!({"host": host}));
    }
}
