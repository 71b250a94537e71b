//! The client seam: one [`connect`] builds an etcd-client for a real etcd over TCP (optionally
//! mTLS) or for a simulated one over turmoil, from the same settings.
//!
//! etcd-client's `from_channel` ignores `ConnectOptions` keep-alive and timeouts, and its own
//! `Client::connect` balances over endpoints with a randomly seeded hasher. So keep-alive and
//! timeouts are set on the tonic `Endpoint` here, every call is wrapped in a deadline
//! ([`Etcd::call`]), the decode limit is raised above tonic's 4 MiB (large watch catch-ups and
//! range pages exceed it), and endpoint failover is ours: in order, deterministically.

use std::path::PathBuf;
use std::time::Duration;

use etcd_client::{Client, KvClient, LeaseClient, MaintenanceClient, WatchClient};
use http::Uri;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};
use tower::util::BoxCloneSyncService;
use tower::{Service, ServiceExt};

/// Something a tonic channel can speak HTTP/2 over.
pub trait Io: hyper::rt::Read + hyper::rt::Write + Send + Unpin + 'static {}
impl<T: hyper::rt::Read + hyper::rt::Write + Send + Unpin + 'static> Io for T {}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// How to reach an endpoint: real TCP, or a custom dialler (the simulator's turmoil connector).
#[derive(Clone)]
pub enum Connector {
    Tcp,
    Custom(BoxCloneSyncService<Uri, Box<dyn Io>, BoxError>),
}

impl Connector {
    /// Wraps any tower connector (e.g. `sim::net::Connector`).
    pub fn custom<C>(c: C) -> Self
    where
        C: Service<Uri> + Clone + Send + Sync + 'static,
        C::Response: Io,
        C::Error: Into<BoxError>,
        C::Future: Send + 'static,
    {
        Connector::Custom(BoxCloneSyncService::new(
            c.map_response(|io| Box::new(io) as Box<dyn Io>).map_err(Into::into),
        ))
    }
}

/// Client certificate files for one side (etcdctl's `--cacert --cert --key`).
#[derive(Debug, Clone, Default)]
pub struct TlsFiles {
    pub cacert: Option<PathBuf>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
}

#[derive(Debug, Clone)]
pub struct ConnConfig {
    /// `http://host:port` or `https://host:port`, tried in this order.
    pub endpoints: Vec<String>,
    pub tls: Option<TlsFiles>,
    /// HTTP/2 pings while a stream (a watch, a call) is open; a peer that answers none within
    /// `keepalive_timeout` is dead.
    pub keepalive_interval: Duration,
    pub keepalive_timeout: Duration,
    /// Pings with no stream open too. etcd refuses that (its gRPC enforcement policy does not
    /// permit pings without a stream) and closes the connection after three strikes, so it is
    /// off but for the simulated etcd, which has no such policy.
    pub keepalive_while_idle: bool,
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
    /// Largest gRPC message accepted from the server.
    pub message_bytes_max: usize,
}

impl ConnConfig {
    pub fn new(endpoints: impl IntoIterator<Item = impl Into<String>>) -> Self {
        ConnConfig {
            endpoints: endpoints.into_iter().map(Into::into).collect(),
            tls: None,
            // etcd counts a ping sooner than `--grpc-keepalive-min-time` (5 s by default) after
            // the last one, while it has sent nothing, as a strike, and closes the connection on
            // the third: a quiet watch pinged every 2 s was cut after ~8 s, again and again.
            // grpc-go clients never ping more often than every 10 s for the same reason.
            keepalive_interval: Duration::from_secs(10),
            keepalive_timeout: Duration::from_secs(5),
            keepalive_while_idle: false,
            connect_timeout: Duration::from_secs(3),
            request_timeout: Duration::from_secs(10),
            // etcd's own gRPC send limit is math.MaxInt32; 64 MiB covers a 1000-revision catch-up
            // of 1.5 MiB requests with room to spare, and still bounds one message.
            message_bytes_max: 64 * 1024 * 1024,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConnError {
    #[error("no etcd endpoint given")]
    NoEndpoint,
    #[error("invalid etcd endpoint {endpoint}: {reason}")]
    InvalidEndpoint { endpoint: String, reason: String },
    #[error("cannot read TLS file {path}: {source}")]
    TlsFile { path: PathBuf, source: std::io::Error },
    #[error("TLS setup for {endpoint}: {source}")]
    Tls { endpoint: String, source: tonic::transport::Error },
    #[error("etcd at {endpoint} is unreachable: {source}")]
    Unreachable { endpoint: String, source: etcd_client::Error },
    #[error("etcd at {endpoint} did not answer within {after_ms} ms")]
    Timeout { endpoint: String, after_ms: u128 },
    #[error("etcd at {endpoint}: {source}")]
    Etcd { endpoint: String, source: etcd_client::Error },
    #[error("no etcd endpoint reachable: {0}")]
    AllUnreachable(String),
}

/// A client bound to one endpoint, with the per-service clients already configured.
#[derive(Clone)]
pub struct Etcd {
    pub client: Client,
    pub kv: KvClient,
    pub watch: WatchClient,
    pub lease: LeaseClient,
    pub maintenance: MaintenanceClient,
    pub endpoint: String,
    pub request_timeout: Duration,
}

impl Etcd {
    /// Runs one request against this endpoint with the request deadline.
    pub async fn call<T>(
        &self,
        fut: impl std::future::Future<Output = Result<T, etcd_client::Error>>,
    ) -> Result<T, ConnError> {
        match tokio::time::timeout(self.request_timeout, fut).await {
            Err(_) => {
                Err(ConnError::Timeout { endpoint: self.endpoint.clone(), after_ms: self.request_timeout.as_millis() })
            }
            Ok(Err(source)) if is_transport(&source) => {
                Err(ConnError::Unreachable { endpoint: self.endpoint.clone(), source })
            }
            Ok(Err(source)) => Err(ConnError::Etcd { endpoint: self.endpoint.clone(), source }),
            Ok(Ok(v)) => Ok(v),
        }
    }
}

impl Etcd {
    /// The server's current revision, from a linearizable read's header (never from a watch
    /// progress notification, which etcd 3.4.23 and 3.5.1 can deliver out of order).
    pub async fn head(&self) -> Result<i64, ConnError> {
        let mut kv = self.kv.clone();
        let r = self.call(kv.get(vec![0u8], Some(etcd_client::GetOptions::new().with_count_only()))).await?;
        Ok(r.header().map(|h| h.revision()).unwrap_or_default())
    }
}

/// Whether an error means "could not talk to the server" rather than "the server said no".
pub fn is_transport(e: &etcd_client::Error) -> bool {
    match e {
        etcd_client::Error::TransportError(_) | etcd_client::Error::IoError(_) => true,
        etcd_client::Error::GRpcStatus(s) => {
            matches!(s.code(), tonic::Code::Unavailable | tonic::Code::Unknown)
                && !s.message().starts_with("etcdserver:")
        }
        _ => false,
    }
}

fn read(path: &PathBuf) -> Result<Vec<u8>, ConnError> {
    std::fs::read(path).map_err(|source| ConnError::TlsFile { path: path.clone(), source })
}

fn endpoint(cfg: &ConnConfig, url: &str) -> Result<Endpoint, ConnError> {
    let invalid = |reason: String| ConnError::InvalidEndpoint { endpoint: url.to_string(), reason };
    let uri: Uri = url.parse().map_err(|e| invalid(format!("{e}")))?;
    match uri.scheme_str() {
        Some("http") | Some("https") => {}
        _ => return Err(invalid("expected http://host:port or https://host:port".into())),
    }
    if uri.host().is_none() {
        return Err(invalid("no host".into()));
    }
    let mut ep = Endpoint::from(uri.clone())
        .connect_timeout(cfg.connect_timeout)
        .http2_keep_alive_interval(cfg.keepalive_interval)
        .keep_alive_timeout(cfg.keepalive_timeout)
        .keep_alive_while_idle(cfg.keepalive_while_idle);
    if uri.scheme_str() == Some("https") {
        let mut tls = ClientTlsConfig::new();
        if let Some(files) = &cfg.tls {
            if let Some(ca) = &files.cacert {
                tls = tls.ca_certificate(Certificate::from_pem(read(ca)?));
            }
            if let (Some(cert), Some(key)) = (&files.cert, &files.key) {
                tls = tls.identity(Identity::from_pem(read(cert)?, read(key)?));
            }
        }
        ep = ep.tls_config(tls).map_err(|source| ConnError::Tls { endpoint: url.to_string(), source })?;
    }
    Ok(ep)
}

/// Builds a client for endpoint number `index` of `cfg` (no network I/O: the channel dials on
/// first use and re-dials after a broken connection).
pub async fn connect_one(cfg: &ConnConfig, connector: &Connector, index: usize) -> Result<Etcd, ConnError> {
    let url = cfg.endpoints.get(index).ok_or(ConnError::NoEndpoint)?;
    let ep = endpoint(cfg, url)?;
    let channel = match connector {
        Connector::Tcp => ep.connect_lazy(),
        Connector::Custom(c) => ep.connect_with_connector_lazy(c.clone()),
    };
    let client = Client::from_channel(etcd_client::Channel::Tonic(channel), None)
        .await
        .map_err(|source| ConnError::Unreachable { endpoint: url.clone(), source })?;
    Ok(Etcd {
        kv: client.kv_client().max_decoding_message_size(cfg.message_bytes_max),
        watch: client.watch_client().max_decoding_message_size(cfg.message_bytes_max),
        lease: client.lease_client(),
        maintenance: client.maintenance_client(),
        client,
        endpoint: url.clone(),
        request_timeout: cfg.request_timeout,
    })
}

/// Connects to the first endpoint, in the configured order starting at `start`, that answers a
/// Status request within the request deadline. Deterministic: no random balancing.
pub async fn connect(cfg: &ConnConfig, connector: &Connector, start: usize) -> Result<Etcd, ConnError> {
    if cfg.endpoints.is_empty() {
        return Err(ConnError::NoEndpoint);
    }
    let mut failures = Vec::new();
    for i in 0..cfg.endpoints.len() {
        let index = (start + i) % cfg.endpoints.len();
        let etcd = connect_one(cfg, connector, index).await?;
        let mut m = etcd.maintenance.clone();
        match etcd.call(m.status()).await {
            Ok(_) => return Ok(etcd),
            Err(e) => failures.push(e.to_string()),
        }
    }
    Err(ConnError::AllUnreachable(failures.join("; ")))
}
