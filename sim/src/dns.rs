//! DNS for the platform domain, the ingress on each VIP, and the workload-side agents that use
//! them.
//!
//! - [`Dns`]: the authoritative record (platform domain → a VIP host) with its TTL, switched by
//!   the orchestrator or a scenario; queries are in-memory (the resolver path itself is not a
//!   failure domain in this model).
//! - [`Resolver`]: a caching resolver; an answer is used until its TTL runs out.
//! - [`serve_ingress`]: port 443 of a VIP host, naming the cluster that served each request:
//!   `/kubernetes/global/version` answers 401 (as an unauthenticated curl sees it), and a bearer
//!   token's PATCH of a Secret goes through the cluster's authenticator and RBAC
//!   ([`crate::k8s::auth`]) — the bare-metal system agent's plan Secret patch; a cluster
//!   agent's list or watch of its Machines is answered by [`crate::clusteragent::answer`].
//! - [`agent`]: a workload-side agent that resolves the domain once per connection and keeps
//!   its established connection until it breaks or is restarted — why seed 001 restarts the
//!   monitoring agent after a failover.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use crate::net::{Links, SimConn};
use crate::trace::Trace;

pub const INGRESS_PORT: u16 = 443;
pub const VERSION_PATH: &str = "/kubernetes/global/version";
/// Bytes of one request or response head the ingress and agents accept.
const HEAD_BYTES_MAX: usize = 8 * 1024;
/// Header naming the cluster that served a request.
pub const SERVED_BY_HEADER: &str = "x-drlab-cluster";
/// Header saying why a request was refused (never the token).
pub const REASON_HEADER: &str = "x-drlab-reason";
/// The plan a successful plan patch read: `<generation>` or `<generation> reset`.
pub const PLAN_HEADER: &str = "x-drlab-plan";
/// The API path of a namespaced Secret: `/api/v1/namespaces/<ns>/secrets/<name>`.
pub fn secret_path(namespace: &str, name: &str) -> String {
    format!("/api/v1/namespaces/{namespace}/secrets/{name}")
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Record {
    target: String,
    ttl_s: u64,
    serial: u64,
}

/// The authoritative record of the platform domain.
#[derive(Clone)]
pub struct Dns {
    pub domain: String,
    record: Arc<Mutex<Record>>,
    trace: Trace,
}

impl Dns {
    pub fn new(domain: &str, target: &str, ttl_s: u64, trace: Trace) -> Self {
        let record = Record { target: target.into(), ttl_s, serial: 1 };
        Dns { domain: domain.into(), record: Arc::new(Mutex::new(record)), trace }
    }

    /// Points the domain at `target` (a VIP host). Returns the new serial.
    pub fn switch(&self, target: &str, by: &str) -> u64 {
        let mut r = self.record.lock().expect("dns lock");
        r.target = target.into();
        r.serial += 1;
        self.trace.record(
            "dns",
            "dns.switch",
            json!({"domain": self.domain, "to": target, "by": by, "serial": r.serial}),
        );
        r.serial
    }

    /// The current answer and its TTL.
    pub fn answer(&self) -> (String, u64) {
        let r = self.record.lock().expect("dns lock");
        (r.target.clone(), r.ttl_s)
    }
}

/// A caching resolver (one per client machine).
pub struct Resolver {
    dns: Dns,
    cached: Option<(String, tokio::time::Instant)>,
}

impl Resolver {
    pub fn new(dns: Dns) -> Self {
        Resolver { dns, cached: None }
    }

    /// The cached answer while its TTL lasts, else a fresh one.
    pub fn resolve(&mut self) -> String {
        let now = tokio::time::Instant::now();
        if let Some((target, until)) = &self.cached
            && now < *until
        {
            return target.clone();
        }
        let (target, ttl_s) = self.dns.answer();
        self.cached = Some((target.clone(), now + Duration::from_secs(ttl_s)));
        target
    }
}

/// Serves the ingress of one VIP host until the host stops.
pub async fn serve_ingress(cluster: String, links: Links, api: crate::k8s::Api) -> std::io::Result<()> {
    let listener = turmoil::net::TcpListener::bind(("0.0.0.0", INGRESS_PORT)).await?;
    loop {
        let (stream, _) = listener.accept().await?;
        let conn = links.wrap(stream);
        let (cluster, api) = (cluster.clone(), api.clone());
        tokio::spawn(async move {
            let (r, mut w) = tokio::io::split(conn);
            let mut r = BufReader::new(r);
            while let Ok(Some(head)) = read_head(&mut r).await {
                let (status, headers) = route(&api, &head).await;
                let resp = format!(
                    "HTTP/1.1 {status} {}\r\n{SERVED_BY_HEADER}: {cluster}\r\n{headers}content-length: 0\r\n\r\n",
                    status_text(status)
                );
                if w.write_all(resp.as_bytes()).await.is_err() {
                    return;
                }
            }
        });
    }
}

/// One request's status and extra header lines: the version path, a cluster agent's list or
/// watch ([`crate::clusteragent`]), or a Secret PATCH with a bearer token; anything else is 404.
async fn route(api: &crate::k8s::Api, head: &[String]) -> (u16, String) {
    // "PATCH /path HTTP/1.1" → ("PATCH", "/path")
    let mut first = head[0].split(' ');
    let (method, path) = (first.next().unwrap_or_default(), first.next().unwrap_or_default());
    if method == "GET" && path.starts_with(crate::clusteragent::PATH) {
        return crate::clusteragent::answer(api, path).await;
    }
    let crate::k8s::auth::PlanPatch { status, reason, plan } = plan_route(api, method, path, head).await;
    let reason = if reason.is_empty() { String::new() } else { format!("{REASON_HEADER}: {reason}\r\n") };
    let plan = plan
        .map(|p| format!("{PLAN_HEADER}: {}{}\r\n", p.generation, if p.reset { " reset" } else { "" }))
        .unwrap_or_default();
    (status, format!("{reason}{plan}"))
}

/// The version path, or a Secret PATCH with a bearer token.
async fn plan_route(api: &crate::k8s::Api, method: &str, path: &str, head: &[String]) -> crate::k8s::auth::PlanPatch {
    let answer = |status: u16, reason: &str| crate::k8s::auth::PlanPatch { status, reason: reason.into(), plan: None };
    if path == VERSION_PATH {
        return answer(401, "");
    }
    let secret = path.strip_prefix("/api/v1/namespaces/").and_then(|p| p.split_once("/secrets/"));
    let (Some((ns, name)), "PATCH") = (secret, method) else { return answer(404, "") };
    let token = head[1..].iter().find_map(|h| {
        let (k, v) = h.split_once(':')?;
        k.trim().eq_ignore_ascii_case("authorization").then(|| v.trim().strip_prefix("Bearer ").unwrap_or_default())
    });
    match token {
        Some(t) if !t.is_empty() => crate::k8s::auth::patch_plan(api, t, ns, name).await,
        _ => answer(401, "no bearer token"),
    }
}

fn status_text(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        410 => "Gone",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        409 => "Conflict",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Error",
    }
}

/// Reads one HTTP head (request or response), bounded by `HEAD_BYTES_MAX`: its first line and
/// its header lines, without line ends. None at a clean end of stream.
async fn read_head<R: tokio::io::AsyncBufRead + Unpin>(r: &mut R) -> std::io::Result<Option<Vec<String>>> {
    let mut lines = Vec::new();
    let mut total = 0;
    let mut line = String::new();
    loop {
        line.clear();
        let n = r.read_line(&mut line).await?;
        if n == 0 {
            if lines.is_empty() {
                return Ok(None);
            }
            return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "incomplete HTTP head"));
        }
        total += n;
        if total > HEAD_BYTES_MAX {
            return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, "HTTP head too long"));
        }
        if line == "\r\n" && !lines.is_empty() {
            return Ok(Some(lines));
        }
        lines.push(line.trim_end().to_string());
    }
}

/// What one request saw: its status, the cluster that served it and why it was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    pub status: u16,
    pub served_by: String,
    pub reason: String,
    /// The plan a plan patch read (None for anything else).
    pub plan: Option<crate::k8s::capi::baremetal::Plan>,
}

/// One `GET` of the version path on an established connection.
async fn request<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    conn: &mut BufReader<S>,
    host: &str,
) -> std::io::Result<Probe> {
    exchange(conn, &format!("GET {VERSION_PATH} HTTP/1.1\r\nhost: {host}\r\n\r\n")).await
}

/// A response head: its status and header lines.
pub struct Head {
    pub status: u16,
    lines: Vec<String>,
}

impl Head {
    /// The value of header `name` ("" when absent).
    pub fn header(&self, name: &str) -> String {
        let prefix = format!("{name}: ");
        self.lines.iter().find_map(|h| h.strip_prefix(&prefix)).unwrap_or_default().to_string()
    }
}

/// Sends one request head on an established connection and reads the response head.
pub(crate) async fn exchange_head<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    conn: &mut BufReader<S>,
    req: &str,
) -> std::io::Result<Head> {
    conn.get_mut().write_all(req.as_bytes()).await?;
    let mut lines =
        read_head(conn).await?.ok_or_else(|| std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "no response"))?;
    // "HTTP/1.1 401 Unauthorized" → "401"
    let status = lines[0].split(' ').nth(1).unwrap_or_default();
    let status = status.parse().map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidData, "bad status"))?;
    lines.remove(0);
    Ok(Head { status, lines })
}

/// [`exchange_head`], read as a probe.
pub(crate) async fn exchange<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    conn: &mut BufReader<S>,
    req: &str,
) -> std::io::Result<Probe> {
    let head = exchange_head(conn, req).await?;
    let (status, header) = (head.status, |name: &str| head.header(name));
    // "7" or "7 reset"
    let plan = header(PLAN_HEADER);
    let mut words = plan.split(' ');
    let plan = words
        .next()
        .and_then(|g| g.parse().ok())
        .map(|generation| crate::k8s::capi::baremetal::Plan { generation, reset: words.next() == Some("reset") });
    Ok(Probe { status, served_by: header(SERVED_BY_HEADER), reason: header(REASON_HEADER), plan })
}

/// One probe on a fresh connection to `host` (the orchestrator's verify step).
pub async fn probe(host: &str, links: &Links) -> std::io::Result<Probe> {
    let stream = turmoil::net::TcpStream::connect((host, INGRESS_PORT)).await?;
    let mut conn = BufReader::new(links.wrap(stream));
    request(&mut conn, host).await
}

/// A workload-side client's connection to the ingress the domain resolves to: resolve (through
/// the cache), connect within `period`, else wait `period` and try again. The target and the
/// connection.
pub(crate) async fn dial(resolver: &mut Resolver, links: &Links, period: Duration) -> (String, BufReader<SimConn>) {
    loop {
        let target = resolver.resolve();
        let connect = turmoil::net::TcpStream::connect((target.as_str(), INGRESS_PORT));
        match tokio::time::timeout(period, connect).await {
            Ok(Ok(s)) => return (target, BufReader::new(links.wrap(s))),
            _ => tokio::time::sleep(period).await,
        }
    }
}

/// Runs one workload agent: resolve, connect, then one request every `period` on that
/// connection; on any error, or when `restart` is notified, resolve and connect again. Each
/// change of serving cluster is traced and published on `served`.
pub async fn agent(
    name: String,
    mut resolver: Resolver,
    links: Links,
    period: Duration,
    restart: Arc<tokio::sync::Notify>,
    served: tokio::sync::watch::Sender<String>,
    trace: Trace,
) {
    loop {
        let (target, mut conn) = dial(&mut resolver, &links, period).await;
        trace.record("agents", "agent.connect", json!({"agent": name, "to": target}));
        loop {
            let once = async {
                let r = tokio::time::timeout(period, request(&mut conn, &target)).await.ok().and_then(Result::ok);
                tokio::time::sleep(period).await;
                r
            };
            let got = tokio::select! {
                r = once => r,
                _ = restart.notified() => {
                    trace.record("agents", "agent.restart", json!({"agent": name}));
                    None
                }
            };
            let Some(p) = got else { break };
            if *served.borrow() != p.served_by {
                trace.record(
                    "agents",
                    "agent.served-by",
                    json!({"agent": name, "cluster": p.served_by, "status": p.status}),
                );
                served.send_replace(p.served_by);
            }
        }
    }
}
