//! A throwaway PKI for real-etcd TLS runs: a CA, a server certificate for 127.0.0.1 and
//! localhost, and a client certificate, written as PEM files into a temp dir that lives as long
//! as the [`Pki`]. Keys come from the OS (ring), which is fine: no simulated code runs here.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
};
use sync::conn::TlsFiles;

use crate::real_etcd::ServerTls;

#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("generating a certificate: {0}")]
    Cert(#[from] rcgen::Error),
    #[error("writing {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
}

pub struct Pki {
    _dir: tempfile::TempDir,
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
}

fn write(dir: &Path, name: &str, pem: String) -> Result<PathBuf, PkiError> {
    let path = dir.join(name);
    std::fs::write(&path, pem).map_err(|source| PkiError::Write { path: path.clone(), source })?;
    Ok(path)
}

fn leaf(
    cn: &str,
    sans: &[&str],
    usage: &[ExtendedKeyUsagePurpose],
    issuer: &Issuer<'_, KeyPair>,
) -> Result<(String, String), PkiError> {
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>())?;
    params.distinguished_name.push(DnType::CommonName, cn);
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
    params.extended_key_usages = usage.to_vec();
    Ok((params.signed_by(&key, issuer)?.pem(), key.serialize_pem()))
}

impl Pki {
    /// A new CA named `name` and the two leaf certificates it signs.
    pub fn generate(name: &str) -> Result<Pki, PkiError> {
        Pki::generate_for(name, &["127.0.0.1", "localhost"])
    }

    /// The same, the server certificate naming `server_names` (DNS names or IP addresses).
    pub fn generate_for(name: &str, server_names: &[&str]) -> Result<Pki, PkiError> {
        let dir = tempfile::Builder::new()
            .prefix("drlab-pki-")
            .tempdir()
            .map_err(|source| PkiError::Write { path: std::env::temp_dir(), source })?;
        let ca_key = KeyPair::generate()?;
        let mut ca = CertificateParams::new(Vec::<String>::new())?;
        ca.distinguished_name.push(DnType::CommonName, format!("{name} CA"));
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        let ca_pem = ca.self_signed(&ca_key)?.pem();
        let issuer = Issuer::new(ca, ca_key);
        // etcd's gRPC gateway dials the server with its own certificate: it needs clientAuth too.
        let (server_cert, server_key) = leaf(
            "etcd",
            server_names,
            &[ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth],
            &issuer,
        )?;
        let (client_cert, client_key) = leaf("etcd-sync", &[], &[ExtendedKeyUsagePurpose::ClientAuth], &issuer)?;
        let d = dir.path();
        Ok(Pki {
            ca: write(d, "ca.pem", ca_pem)?,
            server_cert: write(d, "server.pem", server_cert)?,
            server_key: write(d, "server-key.pem", server_key)?,
            client_cert: write(d, "client.pem", client_cert)?,
            client_key: write(d, "client-key.pem", client_key)?,
            _dir: dir,
        })
    }

    /// The client side's files (etcdctl's `--cacert --cert --key`).
    pub fn client(&self) -> TlsFiles {
        TlsFiles {
            cacert: Some(self.ca.clone()),
            cert: Some(self.client_cert.clone()),
            key: Some(self.client_key.clone()),
        }
    }

    /// A server serving TLS with this PKI's certificate, requiring client certificates it signed.
    pub fn server(&self) -> ServerTls {
        ServerTls {
            cert: self.server_cert.clone(),
            key: self.server_key.clone(),
            client_ca: Some(self.ca.clone()),
            client: self.client(),
        }
    }
}
