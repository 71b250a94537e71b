//! The bare-metal hosts' system agent (elemental-system-agent) as the platform sees it: a
//! workload-side client that patches its host's plan Secret through the platform domain with
//! the ServiceAccount token it received at registration (seed 000: existing hosts keep that
//! token across a failover). One task stands for the hosts: each round it patches the next
//! plan Secret of its list, so every name the Role grants is exercised.
//!
//! Every patch is traced as `agent.patch` with the serving cluster, the status and, when
//! refused, why — never the token. Like a real agent it keeps its connection while answers
//! come, and dials again (resolving the domain through its caching resolver) after an error or
//! a 5xx: a fenced primary answers 503.

use std::time::Duration;

use crate::dns::{self, Resolver};
use crate::net::Links;
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
}

impl std::fmt::Debug for SystemAgent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SystemAgent").field("name", &self.name).field("plans", &self.plans.len()).finish()
    }
}

/// Runs the agent until its host stops.
pub async fn run(agent: SystemAgent, mut resolver: Resolver, links: Links, trace: Trace) {
    assert!(!agent.plans.is_empty(), "a system agent patches at least one plan Secret");
    let mut next = 0usize;
    loop {
        let (target, mut conn) = dns::dial(&mut resolver, &links, agent.period).await;
        loop {
            let plan = &agent.plans[next % agent.plans.len()];
            next += 1;
            let req = format!(
                "PATCH {} HTTP/1.1\r\nhost: {target}\r\nauthorization: Bearer {}\r\ncontent-length: 0\r\n\r\n",
                dns::secret_path(&agent.namespace, plan),
                agent.token
            );
            let got =
                tokio::time::timeout(agent.period, dns::exchange(&mut conn, &req)).await.ok().and_then(Result::ok);
            if let Some(p) = &got {
                trace.record(
                    "agents",
                    "agent.patch",
                    json!({"agent": agent.name, "cluster": p.served_by, "secret": plan, "status": p.status, "reason": p.reason}),
                );
            }
            tokio::time::sleep(agent.period).await;
            if got.is_none_or(|p| p.status >= 500) {
                break;
            }
        }
    }
}
