//! The ingress probe: `GET /kubernetes/global/version` (or the configured URL) on one side's VIP.
//! Over https the platform certificate must chain to the configured roots and name the platform
//! domain (sent as SNI and Host, as a client resolving the domain would) — a certificate that
//! does not cover the domain fails the probe, whatever the status. Any HTTP answer counts as
//! the ingress serving; the orchestrator accepts 200, 401 and 403.

use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::config::ProbeConfig;
use crate::ports::{PortError, Probe};

/// Of an answer, only the status line matters; read at most this much.
const ANSWER_BYTES_MAX: u64 = 64 << 10;

pub struct Prober {
    url: String,
    domain: String,
    tls: Option<tokio_rustls::TlsConnector>,
    within: Duration,
}

fn err(e: impl std::fmt::Display) -> PortError {
    PortError::new("ingress", e)
}

impl Prober {
    pub fn new(c: &ProbeConfig, domain: &str) -> Result<Prober, String> {
        let tls = match &c.ca_file {
            Some(ca) if c.url.starts_with("https://") => {
                Some(tokio_rustls::TlsConnector::from(Arc::new(super::tls::client_config(ca, None)?)))
            }
            _ => None,
        };
        Ok(Prober { url: c.url.clone(), domain: domain.to_string(), tls, within: Duration::from_secs(c.timeout_s) })
    }

    /// The URL probed for `vip`.
    pub fn url(&self, vip: &str) -> String {
        self.url.replace("{vip}", vip)
    }

    pub async fn probe(&self, vip: &str) -> Result<Probe, PortError> {
        let url = self.url(vip);
        let (https, rest) = match url.split_once("://") {
            Some(("https", rest)) => (true, rest),
            Some(("http", rest)) => (false, rest),
            _ => return Err(err(format!("{url}: not an http(s) URL"))),
        };
        let (authority, path) = rest.split_once('/').map(|(a, p)| (a, format!("/{p}"))).unwrap_or((rest, "/".into()));
        let addr = if authority.contains(':') && !authority.ends_with(']') {
            authority.to_string()
        } else {
            format!("{authority}:{}", if https { 443 } else { 80 })
        };
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {}\r\nUser-Agent: dr-failover\r\nConnection: close\r\n\r\n",
            self.domain
        );
        let exchange = async {
            let tcp = tokio::net::TcpStream::connect(&addr).await.map_err(|e| err(format!("{url}: {e}")))?;
            match (https, &self.tls) {
                (false, _) => exchange(tcp, &request).await,
                (true, None) => Err(err("https probe without roots")),
                (true, Some(tls)) => {
                    let name = ServerName::try_from(self.domain.clone()).map_err(err)?;
                    let stream = tls.connect(name, tcp).await.map_err(|e| {
                        err(format!("{url}: TLS as {}: {e} (does the platform certificate cover it?)", self.domain))
                    })?;
                    exchange(stream, &request).await
                }
            }
            .map_err(|e| err(format!("{url}: {e}")))
        };
        let status = tokio::time::timeout(self.within, exchange)
            .await
            .map_err(|_| err(format!("{url}: no answer within {} s", self.within.as_secs())))??;
        Ok(Probe { status, served_by: None })
    }
}

async fn exchange(mut s: impl AsyncRead + AsyncWrite + Unpin, request: &str) -> Result<u16, PortError> {
    s.write_all(request.as_bytes()).await.map_err(err)?;
    let mut buf = Vec::new();
    // A TLS peer closing without close_notify still gave its status line.
    let _ = (&mut s).take(ANSWER_BYTES_MAX).read_to_end(&mut buf).await;
    let text = String::from_utf8_lossy(&buf);
    let line = text.lines().next().unwrap_or_default();
    match line.split_whitespace().collect::<Vec<_>>().as_slice() {
        [v, code, ..] if v.starts_with("HTTP/") => code.parse().map_err(|_| err(format!("status line {line:?}"))),
        _ => Err(err(if buf.is_empty() { "no answer".to_string() } else { format!("not HTTP: {line:?}") })),
    }
}
