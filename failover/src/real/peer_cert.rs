//! The certificate an etcd endpoint serves, read in a TLS handshake the way the sync connects:
//! verified against the configured CA, presenting the configured client certificate. Only its
//! names leave this module (seed 000: they must include both VIPs and the platform domain).

use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::ServerName;
use sync::conn::TlsFiles;

use crate::preflight::PlatformCertificate;

/// The names of the certificate `endpoint` (`https://host:port`) serves, or why they could
/// not be read (a handshake the configured CA does not verify is such a reason).
pub async fn etcd_certificate(endpoint: &str, tls: &TlsFiles, within: Duration) -> PlatformCertificate {
    let source = format!("etcd server certificate at {endpoint}");
    let names = match tokio::time::timeout(within, names(endpoint, tls)).await {
        Err(_) => Err(format!("no TLS handshake within {} s", within.as_secs())),
        Ok(r) => r,
    };
    PlatformCertificate { source, names }
}

async fn names(endpoint: &str, tls: &TlsFiles) -> Result<Vec<String>, String> {
    let authority = endpoint.strip_prefix("https://").ok_or("not an https endpoint")?.trim_end_matches('/');
    let host = match authority.rsplit_once(':') {
        Some((h, _)) => h.trim_start_matches('[').trim_end_matches(']'),
        None => authority,
    };
    let addr = if authority.contains(':') { authority.to_string() } else { format!("{authority}:2379") };
    let ca = tls.cacert.as_ref().ok_or("no CA certificate configured to verify it with")?;
    let client = match (&tls.cert, &tls.key) {
        (Some(cert), Some(key)) => Some((cert.as_path(), key.as_path())),
        _ => None,
    };
    let config = super::tls::client_config(ca, client)?;
    let name = ServerName::try_from(host.to_string()).map_err(|e| e.to_string())?;
    let tcp = tokio::net::TcpStream::connect(&addr).await.map_err(|e| format!("{addr}: {e}"))?;
    let stream = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .map_err(|e| format!("TLS handshake as {host}: {e}"))?;
    let (_, session) = stream.get_ref();
    let leaf = session.peer_certificates().and_then(|c| c.first()).ok_or("it presented no certificate")?;
    crate::preflight::certificate_names_der(leaf)
}
