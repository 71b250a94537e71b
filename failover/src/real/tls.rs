//! TLS client settings for the orchestrator's own connections (the ingress probe, the read of
//! an etcd server certificate): roots from a PEM file, a client certificate when given, ring.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

fn file(p: &Path, e: impl std::fmt::Display) -> String {
    format!("{}: {e}", p.display())
}

/// A client trusting the certificates in `ca`, presenting `client` (certificate chain, key).
pub fn client_config(ca: &Path, client: Option<(&Path, &Path)>) -> Result<rustls::ClientConfig, String> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).map_err(|e| file(ca, e))? {
        roots.add(cert.map_err(|e| file(ca, e))?).map_err(|e| file(ca, e))?;
    }
    if roots.is_empty() {
        return Err(file(ca, "no certificate in it"));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots);
    match client {
        None => Ok(builder.with_no_client_auth()),
        Some((cert, key)) => {
            let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
                .map_err(|e| file(cert, e))?
                .collect::<Result<_, _>>()
                .map_err(|e| file(cert, e))?;
            let key = PrivateKeyDer::from_pem_file(key).map_err(|e| file(key, e))?;
            builder.with_client_auth_cert(chain, key).map_err(|e| e.to_string())
        }
    }
}
