//! A stand-in for a side's ingress on loopback, for the real orchestrator's tests: TLS with a
//! given certificate (the platform certificate), every request answered `401 Unauthorized` — as
//! kube-apiserver answers an anonymous `GET /kubernetes/global/version` behind the platform's
//! ingress. Real time and real sockets: never inside the simulator.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A request head is at most this large.
const REQUEST_BYTES_MAX: usize = 16 << 10;

pub struct Ingress {
    pub addr: std::net::SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Ingress {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Ingress {
    /// Serves on `bind` (e.g. `127.0.0.1:0`) with the PEM certificate and key.
    pub async fn start(bind: &str, cert: &Path, key: &Path) -> std::io::Result<Ingress> {
        let invalid = |e: String| std::io::Error::new(std::io::ErrorKind::InvalidData, e);
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
            .map_err(|e| invalid(e.to_string()))?
            .collect::<Result<_, _>>()
            .map_err(|e| invalid(e.to_string()))?;
        let key = PrivateKeyDer::from_pem_file(key).map_err(|e| invalid(e.to_string()))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| invalid(e.to_string()))?
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .map_err(|e| invalid(e.to_string()))?;
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind(bind).await?;
        let addr = listener.local_addr()?;
        let task = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    // A client refusing the certificate ends the handshake: nothing to answer.
                    let Ok(mut tls) = acceptor.accept(tcp).await else { return };
                    let mut buf = vec![0u8; REQUEST_BYTES_MAX];
                    let mut got = 0;
                    while got < buf.len() && !buf[..got].windows(4).any(|w| w == b"\r\n\r\n") {
                        match tls.read(&mut buf[got..]).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => got += n,
                        }
                    }
                    let body = "{\"kind\":\"Status\",\"status\":\"Failure\",\"reason\":\"Unauthorized\",\"code\":401}";
                    let answer = format!(
                        "HTTP/1.1 401 Unauthorized\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = tls.write_all(answer.as_bytes()).await;
                    let _ = tls.shutdown().await;
                });
            }
        });
        Ok(Ingress { addr, task })
    }
}
