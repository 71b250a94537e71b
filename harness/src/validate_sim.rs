//! The post-failover validation's agent-token check on the simulated platform (seed 000: "plan
//! Secrets writable by the agent token"): the agent's token Secret as the standby holds it, then
//! `kubectl --token=… auth can-i patch secret <plan>` for the plan Secrets its Role names, asked
//! of the standby's own authenticator and RBAC. A real adapter asks the API server the same with
//! a SelfSubjectAccessReview. The token never leaves this function.

use failover::ports::{Finding, PortError};
use sim::k8s::api::{Api, ApiError};
use sim::k8s::auth::{self, Denied};
use sim::k8s::kind;
use sim::k8s::object::Body;
use sim::topology::{AGENT, NS};

/// Plan Secrets asked about at most (each is one review).
const PLANS_CHECKED_MAX: usize = 20;

fn port(e: impl std::fmt::Display) -> PortError {
    PortError::new("standby", e)
}

pub async fn agent_token(api: &Api) -> Result<Vec<Finding>, PortError> {
    let secret = format!("{AGENT}-token");
    let at = |what: &str| format!("{} {what}", api.cluster());
    let token = match api.get(&kind::SECRET, NS, &secret).await {
        Ok(Some(s)) => match s.obj.body {
            Body::Secret { data, .. } => data.get("token").map(|t| String::from_utf8_lossy(t).into_owned()),
            _ => None,
        },
        Ok(None) => None,
        Err(ApiError::Undecryptable(_)) => {
            let what = "the agent's token Secret cannot be read (sealed with another key)".into();
            return Ok(vec![Finding { what, where_: at(&format!("Secret {NS}/{secret}")), cluster: None }]);
        }
        Err(e) => return Err(port(e)),
    };
    let Some(token) = token else {
        let what = "the agent's token Secret is missing: existing hosts cannot authenticate".into();
        return Ok(vec![Finding { what, where_: at(&format!("Secret {NS}/{secret}")), cluster: None }]);
    };
    let plans = match api.get(&kind::ROLE, NS, AGENT).await.map_err(port)? {
        Some(r) => match r.obj.body {
            Body::Role { rules } => rules.into_iter().flat_map(|r| r.resource_names).collect(),
            _ => Vec::new(),
        },
        None => Vec::new(),
    };
    let mut out = Vec::new();
    for plan in plans.iter().filter(|p| p.ends_with("-plan")).take(PLANS_CHECKED_MAX) {
        match auth::review(api, &token, "patch", NS, plan).await {
            Ok(_) => {}
            Err(Denied::Unavailable(e)) => return Err(port(e)),
            // Authorization is per name; authentication fails the same way for every one.
            Err(d @ Denied::Forbidden(_)) => out.push(Finding {
                what: format!("the agent token cannot patch it: {d}"),
                where_: at(&format!("Secret {NS}/{plan}")),
                cluster: None,
            }),
            Err(d) => {
                let what = format!("the agent token is refused ({}): {d}", d.status());
                return Ok(vec![Finding { what, where_: at("ServiceAccount token authentication"), cluster: None }]);
            }
        }
    }
    if plans.is_empty() {
        out.push(Finding {
            what: "no Role grants the agent its plan Secrets".into(),
            where_: at(&format!("Role {NS}/{AGENT}")),
            cluster: None,
        });
    }
    Ok(out)
}
