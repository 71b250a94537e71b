//! `etcd-sync`: one-way, owner-aware replication of a primary global cluster's etcd to its
//! standby, with a monitor and control API.
//!
//! ```text
//! etcd-sync run     --source-endpoints URL[,URL] --target-endpoints URL[,URL] [--monitor-addr ADDR]
//! etcd-sync check   --source-endpoints … --target-endpoints … [-o text|json] [--target-only]
//! etcd-sync status|freeze|resume|uninstall [--monitor URL]
//! ```

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use serde::Deserialize;
use sync::conn::{ConnConfig, Connector, TlsFiles};
use sync::control::Control;
use sync::crypto::{Boundary, Keyring};
use sync::engine::{Command as EngineCommand, Engine, Handle, Settings};
use sync::rules::{Profile, Rules};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The features this binary was built with: the shipped daemon must say "none".
const VERSION: &str = if cfg!(feature = "mutants") {
    concat!(env!("CARGO_PKG_VERSION"), " (features: mutants — TEST BUILD, NOT FOR SHIPPING)")
} else {
    concat!(env!("CARGO_PKG_VERSION"), " (features: none)")
};

#[derive(Parser)]
#[command(name = "etcd-sync", version = VERSION, about = "One-way, owner-aware etcd replication from a primary to a standby global cluster")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
    /// Log format.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq)]
enum Output {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the sync and its monitor until stopped.
    Run {
        #[command(flatten)]
        conn: ConnArgs,
        /// Address of the monitor and control API.
        #[arg(long, default_value = "127.0.0.1:9090")]
        monitor_addr: String,
        /// Install over a gate a failover cleared (starts a new epoch).
        #[arg(long)]
        reinstall: bool,
        /// Failback: the target's revision at which it held an exact copy of the source (the R
        /// of the failover that made the source serve). Target-only keys last written at or below
        /// it are deleted as copies the source deleted since; later ones are only reported.
        #[arg(long, value_name = "REVISION")]
        baseline_revision: Option<i64>,
    },
    /// Compare source and target now; exit 0 when consistent, 1 when not, 2 on error.
    Check {
        #[command(flatten)]
        conn: ConnArgs,
        #[arg(short = 'o', long, value_enum, default_value_t = Output::Text)]
        output: Output,
        /// Check only the target (when the primary is gone): held, undecryptable, dangling.
        #[arg(long)]
        target_only: bool,
    },
    /// Show a running sync's status.
    Status(MonitorArgs),
    /// Stop applying after a source revision (default: the source head now).
    Freeze {
        #[command(flatten)]
        monitor: MonitorArgs,
        #[arg(long)]
        revision: Option<i64>,
    },
    /// Resume applying.
    Resume(MonitorArgs),
    /// Uninstall: refused unless a fresh check is clean, or forced (recorded with the name).
    Uninstall {
        #[command(flatten)]
        monitor: MonitorArgs,
        /// Force it anyway, naming who does (goes into the audit trail).
        #[arg(long, value_name = "WHO")]
        force: Option<String>,
    },
}

#[derive(Args)]
struct MonitorArgs {
    /// The running sync's monitor address.
    #[arg(long, default_value = "127.0.0.1:9090")]
    monitor: String,
}

#[derive(Args, Default)]
struct ConnArgs {
    /// YAML file with any of these settings (flags win).
    #[arg(long)]
    config: Option<PathBuf>,
    #[arg(long, value_delimiter = ',')]
    source_endpoints: Vec<String>,
    #[arg(long, value_delimiter = ',')]
    target_endpoints: Vec<String>,
    #[arg(long)]
    source_cacert: Option<PathBuf>,
    #[arg(long)]
    source_cert: Option<PathBuf>,
    #[arg(long)]
    source_key: Option<PathBuf>,
    #[arg(long)]
    target_cacert: Option<PathBuf>,
    #[arg(long)]
    target_cert: Option<PathBuf>,
    #[arg(long)]
    target_key: Option<PathBuf>,
    /// immutable (default) or traditional.
    #[arg(long)]
    profile: Option<String>,
    /// Rules file, ahead of the profile's rules.
    #[arg(long)]
    rules: Option<PathBuf>,
    /// The target's --max-txn-ops.
    #[arg(long)]
    target_max_txn_ops: Option<usize>,
    /// Keys per page when reading.
    #[arg(long)]
    page_keys: Option<i64>,
    /// The primary's EncryptionConfiguration (to decrypt and re-encrypt Secrets).
    #[arg(long)]
    source_encryption_config: Option<PathBuf>,
    /// The standby's EncryptionConfiguration.
    #[arg(long)]
    target_encryption_config: Option<PathBuf>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    source_endpoints: Option<Vec<String>>,
    target_endpoints: Option<Vec<String>>,
    source_cacert: Option<PathBuf>,
    source_cert: Option<PathBuf>,
    source_key: Option<PathBuf>,
    target_cacert: Option<PathBuf>,
    target_cert: Option<PathBuf>,
    target_key: Option<PathBuf>,
    profile: Option<String>,
    rules: Option<PathBuf>,
    target_max_txn_ops: Option<usize>,
    page_keys: Option<i64>,
    source_encryption_config: Option<PathBuf>,
    target_encryption_config: Option<PathBuf>,
}

struct Resolved {
    boundary: Boundary,
    source: ConnConfig,
    target: ConnConfig,
    rules: Rules,
    txn_ops_max: usize,
    page_keys: i64,
}

impl Resolved {
    /// The control operations over real TCP, reporting on `handle`'s engine.
    fn control(&self, handle: Handle) -> Control {
        Control {
            source: self.source.clone(),
            target: self.target.clone(),
            source_connector: Connector::Tcp,
            target_connector: Connector::Tcp,
            rules: self.rules.clone(),
            boundary: self.boundary.clone(),
            handle,
            page_keys: self.page_keys,
        }
    }
}

fn tls(cacert: Option<PathBuf>, cert: Option<PathBuf>, key: Option<PathBuf>) -> Option<TlsFiles> {
    (cacert.is_some() || cert.is_some() || key.is_some()).then_some(TlsFiles { cacert, cert, key })
}

impl ConnArgs {
    fn resolve(self) -> Result<Resolved, String> {
        let file = match &self.config {
            None => FileConfig::default(),
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|e| format!("{}: {e}", p.display()))?;
                serde_saphyr::from_str::<FileConfig>(&text).map_err(|e| {
                    let (l, c) = e.location().map(|l| (l.line(), l.column())).unwrap_or((1, 1));
                    format!("{}:{l}:{c}: {}", p.display(), e.to_string().lines().next().unwrap_or("invalid config"))
                })?
            }
        };
        let pick =
            |flag: Vec<String>, f: Option<Vec<String>>| if flag.is_empty() { f.unwrap_or_default() } else { flag };
        let source_endpoints = pick(self.source_endpoints, file.source_endpoints);
        let target_endpoints = pick(self.target_endpoints, file.target_endpoints);
        if source_endpoints.is_empty() || target_endpoints.is_empty() {
            return Err("both --source-endpoints and --target-endpoints are required".into());
        }
        let profile_name = self.profile.or(file.profile).unwrap_or_else(|| "immutable".into());
        let profile = Profile::parse(&profile_name)
            .ok_or_else(|| format!("unknown profile {profile_name:?} (immutable or traditional)"))?;
        let rules = match self.rules.or(file.rules) {
            Some(p) => Rules::with_file(profile, &p).map_err(|e| e.to_string())?,
            None => Rules::profile(profile),
        };
        let mut source = ConnConfig::new(source_endpoints);
        source.tls = tls(
            self.source_cacert.or(file.source_cacert),
            self.source_cert.or(file.source_cert),
            self.source_key.or(file.source_key),
        );
        let mut target = ConnConfig::new(target_endpoints);
        target.tls = tls(
            self.target_cacert.or(file.target_cacert),
            self.target_cert.or(file.target_cert),
            self.target_key.or(file.target_key),
        );
        let keyring = |p: Option<PathBuf>| p.map(|p| Keyring::load(&p).map_err(|e| e.to_string())).transpose();
        let boundary = Boundary::new(
            keyring(self.source_encryption_config.or(file.source_encryption_config))?,
            keyring(self.target_encryption_config.or(file.target_encryption_config))?,
        );
        if boundary.source.is_some() != boundary.target.is_some() {
            tracing::warn!(
                "only one side's encryption configuration given: ciphertext will be reported undecryptable, not copied"
            );
        }
        Ok(Resolved {
            boundary,
            source,
            target,
            rules,
            txn_ops_max: self.target_max_txn_ops.or(file.target_max_txn_ops).unwrap_or(128),
            page_keys: self.page_keys.or(file.page_keys).unwrap_or(1000),
        })
    }
}

fn init_logs(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let b = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        LogFormat::Text => b.init(),
        LogFormat::Json => b.json().init(),
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logs(cli.log_format);
    match cli.command {
        Cmd::Run { conn, monitor_addr, reinstall, baseline_revision } => {
            run(conn, monitor_addr, reinstall, baseline_revision).await
        }
        Cmd::Check { conn, output, target_only } => check(conn, output, target_only).await,
        Cmd::Status(m) => http(&m.monitor, "GET", "/status").await,
        Cmd::Freeze { monitor, revision } => {
            let path = revision.map(|r| format!("/freeze?revision={r}")).unwrap_or_else(|| "/freeze".into());
            http(&monitor.monitor, "POST", &path).await
        }
        Cmd::Resume(m) => http(&m.monitor, "POST", "/resume").await,
        Cmd::Uninstall { monitor, force } => {
            let path =
                force.map(|w| format!("/uninstall?force={}", urlencode(&w))).unwrap_or_else(|| "/uninstall".into());
            http(&monitor.monitor, "POST", &path).await
        }
    }
}

fn urlencode(s: &str) -> String {
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

async fn run(conn: ConnArgs, monitor_addr: String, reinstall: bool, baseline_revision: Option<i64>) -> ExitCode {
    let r = match conn.resolve() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("etcd-sync: {e}");
            return ExitCode::from(2);
        }
    };
    let mut settings = Settings::new(r.rules.clone());
    settings.limits = sync::batch::Limits::for_target(r.txn_ops_max, 1536 * 1024);
    settings.page_keys = r.page_keys;
    settings.reinstall = reinstall;
    settings.baseline_revision = baseline_revision;
    // The daemon seeds jitter and IVs from the OS; the simulator injects its world seed instead.
    settings.seed = rand::random();
    settings.boundary = r.boundary.clone();
    let handle = Handle::default();
    let control = r.control(handle.clone());
    let listener = match tokio::net::TcpListener::bind(&monitor_addr).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("etcd-sync: cannot listen on {monitor_addr}: {e}");
            return ExitCode::from(2);
        }
    };
    tracing::info!(monitor = %monitor_addr, version = VERSION, "etcd-sync starting");
    // The monitor outlives the engine long enough to answer in-flight requests (an uninstall's
    // answer is sent after the engine has stopped).
    let (shutdown, shutdown_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        let graceful = async {
            let _ = shutdown_rx.await;
        };
        if let Err(e) = axum::serve(listener, sync::monitor::router(control)).with_graceful_shutdown(graceful).await {
            tracing::error!(error = %e, "monitor stopped");
        }
    });
    let engine = Engine {
        source: r.source,
        target: r.target,
        source_connector: Connector::Tcp,
        target_connector: Connector::Tcp,
        settings,
        handle: handle.clone(),
    };
    let stop = handle.clone();
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            tracing::info!("stopping");
            stop.command(EngineCommand::Stop);
        }
    });
    let result = engine.run().await;
    let _ = shutdown.send(());
    // Bounded: a stuck client must not keep a stopped sync alive.
    let _ = tokio::time::timeout(Duration::from_secs(10), server).await;
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("etcd-sync: {e}");
            ExitCode::from(1)
        }
    }
}

async fn check(conn: ConnArgs, output: Output, target_only: bool) -> ExitCode {
    let r = match conn.resolve() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("etcd-sync: {e}");
            return ExitCode::from(2);
        }
    };
    let control = r.control(Handle::default());
    match control.check(target_only).await {
        Err(e) => {
            eprintln!("etcd-sync: {e}");
            ExitCode::from(2)
        }
        Ok(report) => {
            match output {
                Output::Text => print!("{}", report.text()),
                Output::Json => println!("{}", serde_json::to_string_pretty(&report).expect("report serialises")),
            }
            if report.is_clean() { ExitCode::SUCCESS } else { ExitCode::from(1) }
        }
    }
}

/// A minimal HTTP/1.1 request to the monitor (no TLS: it listens on a local address).
async fn http(monitor: &str, method: &str, path: &str) -> ExitCode {
    let addr = monitor.trim_start_matches("http://").trim_end_matches('/');
    let result = tokio::time::timeout(Duration::from_secs(60), async {
        let mut s = tokio::net::TcpStream::connect(addr).await?;
        let req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await?;
        Ok::<_, std::io::Error>(buf)
    })
    .await;
    let buf = match result {
        Ok(Ok(b)) => b,
        Ok(Err(e)) => {
            eprintln!("etcd-sync: monitor at {addr}: {e}");
            return ExitCode::from(2);
        }
        Err(_) => {
            eprintln!("etcd-sync: monitor at {addr} did not answer within 60 s");
            return ExitCode::from(2);
        }
    };
    let text = String::from_utf8_lossy(&buf);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let code: u16 = head.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    print!("{body}");
    match code {
        200..=299 => ExitCode::SUCCESS,
        409 => ExitCode::from(1),
        _ => ExitCode::from(2),
    }
}
