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
use sync::config::{Resolved, SyncConfig};
use sync::conn::Connector;
use sync::engine::{Command as EngineCommand, Engine, Handle, Settings};

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
    /// HTTP/2 ping interval while a stream is open [default: 10000]; below etcd's
    /// --grpc-keepalive-min-time (5 s by default) etcd closes the connection.
    #[arg(long)]
    keepalive_interval_ms: Option<u64>,
    /// How long a ping may go unanswered before the connection is dead [default: 5000].
    #[arg(long)]
    keepalive_timeout_ms: Option<u64>,
}

impl ConnArgs {
    /// The flags over the `--config` file's settings.
    fn resolve(self) -> Result<Resolved, String> {
        let file = match &self.config {
            None => SyncConfig::default(),
            Some(p) => SyncConfig::load(p)?,
        };
        let flags = SyncConfig {
            source_endpoints: Some(self.source_endpoints),
            target_endpoints: Some(self.target_endpoints),
            source_cacert: self.source_cacert,
            source_cert: self.source_cert,
            source_key: self.source_key,
            target_cacert: self.target_cacert,
            target_cert: self.target_cert,
            target_key: self.target_key,
            profile: self.profile,
            rules: self.rules,
            target_max_txn_ops: self.target_max_txn_ops,
            page_keys: self.page_keys,
            source_encryption_config: self.source_encryption_config,
            target_encryption_config: self.target_encryption_config,
            keepalive_interval_ms: self.keepalive_interval_ms,
            keepalive_timeout_ms: self.keepalive_timeout_ms,
        };
        flags.over(file).resolve()
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
            let path = force
                .map(|w| format!("/uninstall?force={}", sync::remote::urlencode(&w)))
                .unwrap_or_else(|| "/uninstall".into());
            http(&monitor.monitor, "POST", &path).await
        }
    }
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

/// One request to the monitor; its body on stdout. Exit 0 for 2xx, 1 for a refusal (409), 2
/// otherwise.
async fn http(monitor: &str, method: &str, path: &str) -> ExitCode {
    match sync::remote::request(monitor, method, path, Duration::from_secs(60)).await {
        Err(e) => {
            eprintln!("etcd-sync: {e}");
            ExitCode::from(2)
        }
        Ok((code, body)) => {
            print!("{body}");
            match code {
                200..=299 => ExitCode::SUCCESS,
                409 => ExitCode::from(1),
                _ => ExitCode::from(2),
            }
        }
    }
}
