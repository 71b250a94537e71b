//! The bare-metal hosts' system agent (elemental-system-agent) as the platform sees it: a
//! workload-side client that patches its host's plan Secret through the platform domain with
//! the ServiceAccount token it received at registration (seed 000: existing hosts keep that
//! token across a failover). One task stands for the hosts: each period it patches the next
//! plan Secret of its list, so every name the Role grants is exercised and every host reads its
//! plan in turn. One plan a period, because every request costs a token review: reading 16 a
//! period cost the 50 × 10 drill a quarter of its speed; a host reads its plan every
//! `plans × period`.
//!
//! Every patch is traced as `agent.patch` with the serving cluster, the status, the plan it
//! read (its generation, and whether it is a reset the host then carries out) and, when
//! refused, why — never the token. Like a real agent it keeps its connection while answers
//! come, and dials again (resolving the domain through its caching resolver) after an error or
//! a 5xx: a fenced primary answers 503.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::BufReader;
use tokio::sync::Notify;

use crate::dns::{self, Resolver};
use crate::net::{Links, SimConn};
use crate::trace::Trace;
use serde_json::json;

/// What one system agent holds.
#[derive(Clone)]
pub struct SystemAgent {
    pub name: String,
    pub namespace: String,
    /// The plan Secrets it patches, in turn.
    pub plans: Vec<String>,
    /// Its bearer token (kept out of Debug and the trace).
    pub token: String,
    pub period: Duration,
    /// How long it patches: its writes stop with the rest of the traffic, so the world settles
    /// (converged-after-heal compares the sides once writes have quiesced).
    pub active: Duration,
}

impl std::fmt::Debug for SystemAgent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SystemAgent").field("name", &self.name).field("plans", &self.plans.len()).finish()
    }
}

/// Runs the agent until its host stops; `restart` makes it resolve the domain and connect again
/// (an operator restarting the agents after a failover, as seed 001 does).
pub async fn run(agent: SystemAgent, mut resolver: Resolver, links: Links, restart: Arc<Notify>, trace: Trace) {
    assert!(!agent.plans.is_empty(), "a system agent patches at least one plan Secret");
    let mut next = 0usize;
    let work = async {
        loop {
            let (target, conn) = dns::dial(&mut resolver, &links, agent.period).await;
            tokio::select! {
                _ = rounds(&agent, &target, conn, &mut next, &trace) => {}
                _ = restart.notified() => {
                    trace.record("agents", "agent.restart", json!({"agent": agent.name}));
                }
            }
        }
    };
    // The run's traffic ends: so do the hosts' writes.
    let _ = tokio::time::timeout(agent.active, work).await;
}

/// Patches one plan a period on one connection; returns after an error or a 5xx (a fenced
/// primary answers 503) and a pause of one period.
async fn rounds(agent: &SystemAgent, target: &str, mut conn: BufReader<SimConn>, next: &mut usize, trace: &Trace) {
    loop {
        let plan = &agent.plans[*next % agent.plans.len()];
        *next += 1;
        let req = format!(
            "PATCH {} HTTP/1.1\r\nhost: {target}\r\nauthorization: Bearer {}\r\ncontent-length: 0\r\n\r\n",
            dns::secret_path(&agent.namespace, plan),
            agent.token
        );
        let got = tokio::time::timeout(agent.period, dns::exchange(&mut conn, &req)).await.ok().and_then(Result::ok);
        if let Some(p) = &got {
            trace.record(
                "agents",
                "agent.patch",
                json!({"agent": agent.name, "cluster": p.served_by, "secret": plan, "status": p.status, "reason": p.reason,
                    "generation": p.plan.map(|x| x.generation), "reset": p.plan.map(|x| x.reset)}),
            );
        }
        tokio::time::sleep(agent.period).await;
        if got.is_none_or(|p| p.status >= 500) {
            return;
        }
    }
}
