//! The HTTP monitor and control API of a running `etcd-sync`:
//!
//! | request | answer |
//! | --- | --- |
//! | `GET /healthz` | 200 `ok`, 503 when the engine has failed |
//! | `GET /status` | JSON: phase, checkpoint, source head, gate epoch, frozen, counters, held |
//! | `GET /metrics` | Prometheus text |
//! | `GET /check[?output=json][&target_only=true][&PIN]` | the consistency check (200 clean, 409 not) |
//! | `POST /freeze[?revision=R]` | stop after R (default: the source head now), JSON |
//! | `POST /resume` | resume applying |
//! | `POST /uninstall[?force=WHO][&target_only=true][&PIN]` | guarded uninstall (409 with the report when refused) |
//! | `POST /gate?state=cleared&who=WHO` | move the gate |
//!
//! `PIN` is `source_revision=R&target_revision=T` (with `target_only=true`, `target_revision=T`
//! alone): the check reads both sides at those revisions — what a failover decides on, since
//! the standby's own writes after T (its Clusters paused) must not count against it.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

use crate::check as sync_check;
use crate::control::{Control, ControlError};
use crate::engine::{Phase, Status};
use crate::target::GateState;

/// How long `POST /freeze` waits for the sync to reach the revision.
const FREEZE_WAIT: Duration = Duration::from_secs(30);

type Params = Query<BTreeMap<String, String>>;

pub fn router(control: Control) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/status", get(status))
        .route("/metrics", get(metrics))
        .route("/check", get(check))
        .route("/freeze", post(freeze))
        .route("/resume", post(resume))
        .route("/uninstall", post(uninstall))
        .route("/gate", post(gate))
        .with_state(Arc::new(control))
}

fn error(e: ControlError) -> Response {
    let code = match e {
        ControlError::Refused { .. } => StatusCode::CONFLICT,
        _ => StatusCode::SERVICE_UNAVAILABLE,
    };
    (code, format!("{e}\n")).into_response()
}

fn json(v: impl serde::Serialize) -> Response {
    ([("content-type", "application/json")], serde_json::to_string_pretty(&v).expect("serialises")).into_response()
}

async fn healthz(State(c): State<Arc<Control>>) -> Response {
    match c.handle.status().phase {
        Phase::Failed => (StatusCode::SERVICE_UNAVAILABLE, "failed\n").into_response(),
        _ => "ok\n".into_response(),
    }
}

async fn status(State(c): State<Arc<Control>>) -> Response {
    json(c.handle.status())
}

async fn metrics(State(c): State<Arc<Control>>) -> Response {
    ([("content-type", "text/plain; version=0.0.4")], prometheus(&c.handle.status())).into_response()
}

/// Prometheus exposition of the engine's status.
pub fn prometheus(s: &Status) -> String {
    let mut out = String::new();
    let mut gauge = |name: &str, help: &str, kind: &str, samples: Vec<(String, f64)>| {
        out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n"));
        for (labels, v) in samples {
            out.push_str(&format!("{name}{labels} {v}\n"));
        }
    };
    let lag = (s.source_head - s.checkpoint).max(0) as f64;
    gauge(
        "etcd_sync_lag_revisions",
        "Source revisions not yet applied to the target.",
        "gauge",
        vec![(String::new(), lag)],
    );
    gauge(
        "etcd_sync_lag_seconds",
        "How long the target has been behind the source (0 when caught up).",
        "gauge",
        vec![(String::new(), s.lag_seconds())],
    );
    gauge(
        "etcd_sync_checkpoint_revision",
        "Last source revision applied.",
        "gauge",
        vec![(String::new(), s.checkpoint as f64)],
    );
    gauge(
        "etcd_sync_source_head_revision",
        "Latest source revision seen.",
        "gauge",
        vec![(String::new(), s.source_head as f64)],
    );
    gauge("etcd_sync_applied_ops_total", "Target ops written.", "counter", vec![(String::new(), s.applied_ops as f64)]);
    gauge(
        "etcd_sync_applied_txns_total",
        "Target txns written.",
        "counter",
        vec![(String::new(), s.applied_txns as f64)],
    );
    gauge(
        "etcd_sync_resyncs_total",
        "Resyncs (start, compaction, restored source).",
        "counter",
        vec![(String::new(), s.resyncs as f64)],
    );
    gauge(
        "etcd_sync_errors_total",
        "Failed sessions (each retried with backoff).",
        "counter",
        vec![(String::new(), s.sessions_failed as f64)],
    );
    gauge(
        "etcd_sync_split_revisions_total",
        "Source revisions too large for one target txn.",
        "counter",
        vec![(String::new(), s.split_revisions as f64)],
    );
    gauge(
        "etcd_sync_skipped_keys_total",
        "Source keys not written, by reason.",
        "counter",
        vec![("{reason=\"leased\"}".into(), s.skipped_leased as f64)],
    );
    let mut held: BTreeMap<&str, f64> =
        ["owner-pending", "owner-excluded", "owner-absent-on-source"].into_iter().map(|r| (r, 0.0)).collect();
    for (_, reason) in &s.held {
        *held.entry(reason.as_str()).or_default() += 1.0;
    }
    gauge(
        "etcd_sync_held_keys",
        "Keys held back until their owners land, by reason.",
        "gauge",
        held.into_iter().map(|(r, n)| (format!("{{reason=\"{r}\"}}"), n)).collect(),
    );
    gauge(
        "etcd_sync_surplus_keys",
        "Target-only keys found by the last resync (reported, never deleted).",
        "gauge",
        vec![(String::new(), s.surplus_total as f64)],
    );
    gauge(
        "etcd_sync_ledger_ranges",
        "Target revision ranges the sync can prove it wrote (its authorship ledger).",
        "gauge",
        vec![(String::new(), s.ledger_ranges as f64)],
    );
    gauge(
        "etcd_sync_ledger_dropped_total",
        "Ledger ranges dropped past its bound: keys there become surplus instead of deletable.",
        "counter",
        vec![(String::new(), s.ledger_dropped as f64)],
    );
    let phase = serde_json::to_value(s.phase).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default();
    gauge("etcd_sync_phase", "The engine's phase.", "gauge", vec![(format!("{{phase=\"{phase}\"}}"), 1.0)]);
    out
}

/// Where a check reads: now, or pinned at revisions.
enum Pin {
    Now { target_only: bool },
    Both { source: i64, target: i64 },
    Target(i64),
}

/// The pin a request asks for, or why it is malformed (answered 400).
fn pin(q: &BTreeMap<String, String>) -> Result<Pin, String> {
    let target_only = q.get("target_only").is_some_and(|v| v == "true");
    let rev = |name: &str| match q.get(name).map(|r| r.parse::<i64>()) {
        None => Ok(None),
        Some(Ok(r)) if r > 0 => Ok(Some(r)),
        Some(_) => Err(format!("{name} must be a positive integer\n")),
    };
    match (rev("source_revision")?, rev("target_revision")?, target_only) {
        (None, None, target_only) => Ok(Pin::Now { target_only }),
        (Some(source), Some(target), false) => Ok(Pin::Both { source, target }),
        (None, Some(target), true) => Ok(Pin::Target(target)),
        _ => Err("pin both source_revision and target_revision, or target_only=true with target_revision\n".into()),
    }
}

async fn pinned_check(c: &Control, pin: Pin) -> Result<sync_check::Report, ControlError> {
    match pin {
        Pin::Now { target_only } => c.check(target_only).await,
        Pin::Both { source, target } => c.check_pinned(source, target).await,
        Pin::Target(target) => c.check_target_pinned(target).await,
    }
}

async fn check(State(c): State<Arc<Control>>, Query(q): Params) -> Response {
    let pin = match pin(&q) {
        Ok(p) => p,
        Err(why) => return (StatusCode::BAD_REQUEST, why).into_response(),
    };
    match pinned_check(&c, pin).await {
        Err(e) => error(e),
        Ok(r) => {
            let code = if r.is_clean() { StatusCode::OK } else { StatusCode::CONFLICT };
            if q.get("output").is_some_and(|o| o == "json") {
                (code, json(&r)).into_response()
            } else {
                (code, r.text()).into_response()
            }
        }
    }
}

async fn freeze(State(c): State<Arc<Control>>, Query(q): Params) -> Response {
    let at = match q.get("revision").map(|r| r.parse::<i64>()) {
        None => None,
        Some(Ok(r)) => Some(r),
        Some(Err(_)) => return (StatusCode::BAD_REQUEST, "revision must be an integer\n").into_response(),
    };
    match c.freeze(at, FREEZE_WAIT).await {
        Ok(f) => json(f),
        Err(e) => error(e),
    }
}

async fn resume(State(c): State<Arc<Control>>) -> Response {
    c.resume();
    json(serde_json::json!({"resumed": true}))
}

async fn uninstall(State(c): State<Arc<Control>>, Query(q): Params) -> Response {
    let pin = match pin(&q) {
        Ok(p) => p,
        Err(why) => return (StatusCode::BAD_REQUEST, why).into_response(),
    };
    let report = match pinned_check(&c, pin).await {
        Ok(r) => r,
        Err(e) => return error(e),
    };
    match c.uninstall_checked(&report, q.get("force").map(String::as_str)).await {
        Ok(u) => json(u),
        Err(e) => error(e),
    }
}

async fn gate(State(c): State<Arc<Control>>, Query(q): Params) -> Response {
    let state = match q.get("state").map(String::as_str) {
        Some("cleared") => GateState::Cleared,
        Some("uninstalled") => GateState::Uninstalled,
        _ => return (StatusCode::BAD_REQUEST, "state must be cleared or uninstalled\n").into_response(),
    };
    let Some(who) = q.get("who") else {
        return (StatusCode::BAD_REQUEST, "who is required (it goes into the audit trail)\n").into_response();
    };
    match c.set_gate(state, who).await {
        Ok(g) => json(g),
        Err(e) => error(e),
    }
}
