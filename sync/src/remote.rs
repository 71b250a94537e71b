//! A running `etcd-sync`'s monitor, from another process (the CLI's control subcommands, the
//! failover orchestrator): one HTTP/1.1 request per call over plain TCP — the monitor listens
//! on a local or cluster-internal address, never the internet.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// An answer is at most this large (a check's report is bounded; `/metrics` is small).
const ANSWER_BYTES_MAX: u64 = 4 << 20;

#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    #[error("etcd-sync monitor at {addr}: {source}")]
    Io { addr: String, source: std::io::Error },
    #[error("etcd-sync monitor at {addr} did not answer {method} {path} within {within_s} s")]
    Timeout { addr: String, method: String, path: String, within_s: u64 },
    #[error("etcd-sync monitor at {addr}: not an HTTP answer")]
    Garbled { addr: String },
}

/// The address part of `http://host:port/` (or of `host:port`).
pub fn address(monitor: &str) -> &str {
    monitor.trim_start_matches("http://").trim_end_matches('/')
}

/// One request: the status code and the body.
pub async fn request(monitor: &str, method: &str, path: &str, within: Duration) -> Result<(u16, String), RemoteError> {
    let addr = address(monitor);
    let io = |source| RemoteError::Io { addr: addr.to_string(), source };
    let exchange = async {
        let mut s = tokio::net::TcpStream::connect(addr).await?;
        let req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await?;
        let mut buf = Vec::new();
        s.take(ANSWER_BYTES_MAX).read_to_end(&mut buf).await?;
        Ok::<_, std::io::Error>(buf)
    };
    let buf = tokio::time::timeout(within, exchange)
        .await
        .map_err(|_| RemoteError::Timeout {
            addr: addr.to_string(),
            method: method.to_string(),
            path: path.to_string(),
            within_s: within.as_secs(),
        })?
        .map_err(io)?;
    let text = String::from_utf8_lossy(&buf);
    let garbled = || RemoteError::Garbled { addr: addr.to_string() };
    let (head, body) = text.split_once("\r\n\r\n").ok_or_else(garbled)?;
    let code = head.split_whitespace().nth(1).and_then(|c| c.parse().ok()).ok_or_else(garbled)?;
    Ok((code, body.to_string()))
}

/// Percent-encodes a query value (a name for the audit trail).
pub fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}
