//! `dr-failover`: the guarded failover / failback orchestrator on a real platform.
//!
//! ```text
//! dr-failover --config FILE run [--dry-run] [--force WHO] [--unplanned]
//! dr-failover --config FILE abort [--dry-run]
//! dr-failover --config FILE failback          # a config whose primary is the cluster serving now
//! dr-failover --config FILE upgrade uninstall|reinstall [--force WHO]
//! dr-failover --config FILE preflight
//! dr-failover --config FILE status
//! ```
//!
//! Exit 0 when done, 1 when refused or failed (the reason and the remedy printed), 2 for bad
//! input or an unreachable standby.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use failover::ports::Ports;
use failover::real::RealPorts;
use failover::real::config::Config;

/// The features this binary was built with: the shipped orchestrator must say "none".
const VERSION: &str = if cfg!(feature = "mutants") {
    concat!(env!("CARGO_PKG_VERSION"), " (features: mutants — TEST BUILD, NOT FOR SHIPPING)")
} else {
    concat!(env!("CARGO_PKG_VERSION"), " (features: none)")
};

#[derive(Parser)]
#[command(name = "dr-failover", version = VERSION, about = "Guarded, resumable failover and failback of a primary / standby global cluster")]
struct Cli {
    /// The orchestrator's config (YAML): roles, the sync's config and monitor, hooks, probe.
    #[arg(long, global = true, default_value = "dr-failover.yaml")]
    config: PathBuf,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Fail over to the standby (resumes a failover a crash interrupted).
    Run {
        /// Print the plan with every precondition evaluated; change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Go past a refusing guard, naming who decides (recorded in the audit trail).
        #[arg(long, value_name = "WHO")]
        force: Option<String>,
        /// The primary is lost: fence through the hook, decide on the standby alone.
        #[arg(long)]
        unplanned: bool,
    },
    /// Undo a failover that stopped before the uninstall.
    Abort {
        #[arg(long)]
        dry_run: bool,
    },
    /// Install the reverse sync and fail back (run with the roles as they are now).
    Failback {
        #[arg(long, value_name = "WHO")]
        force: Option<String>,
    },
    /// The DR-aware upgrade's guarded uninstall, or the reinstall after it.
    Upgrade {
        #[arg(value_parser = ["uninstall", "reinstall"])]
        what: String,
        #[arg(long, value_name = "WHO")]
        force: Option<String>,
    },
    /// Preflight of both sides: naming, encryption, agent Roles, token signing, certificate.
    Preflight,
    /// The persisted progress of the last failover on the standby.
    Status,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = match Config::load(&cli.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("dr-failover: {e}");
            return ExitCode::from(2);
        }
    };
    let ports = match RealPorts::new(config).await {
        Ok(p) => p,
        Err(e) => {
            eprintln!("dr-failover: {e}");
            return ExitCode::from(2);
        }
    };
    let mut o = ports.options();
    let result = match cli.command {
        Cmd::Run { dry_run, force, unplanned } => {
            o.dry_run = dry_run;
            o.force = force;
            o.unplanned = unplanned;
            failover::run(&ports, &o).await.map(|out| report(&out, "failover", dry_run))
        }
        Cmd::Abort { dry_run } => {
            o.dry_run = dry_run;
            failover::abort(&ports, &o).await.map(|out| plan(&out, "abort"))
        }
        Cmd::Failback { force } => {
            o.force = force;
            failover::failback(&ports, &o).await.map(|out| report(&out, "failback", false))
        }
        Cmd::Upgrade { what, force } => {
            o.force = force;
            match what.as_str() {
                "uninstall" => failover::upgrade::uninstall(&ports, &o).await,
                _ => failover::upgrade::reinstall(&ports, &o).await,
            }
            .map(|out| plan(&out, &format!("upgrade {what}")))
        }
        Cmd::Preflight => match failover::preflight(&ports, &o).await {
            Ok(pf) => {
                println!("preflight: {} blocking, {} warnings", pf.blocking.len(), pf.warnings.len());
                for line in pf.lines() {
                    println!("  {line}");
                }
                return if pf.blocking.is_empty() && pf.warnings.is_empty() {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::from(1)
                };
            }
            Err(e) => Err(e),
        },
        Cmd::Status => match ports.load_progress().await {
            Ok(p) => {
                println!("{}", serde_json::to_string_pretty(&p).expect("progress serialises"));
                return ExitCode::SUCCESS;
            }
            Err(e) => Err(e.into()),
        },
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("dr-failover: {e}");
            ExitCode::from(1)
        }
    }
}

fn report(out: &failover::Outcome, what: &str, dry_run: bool) {
    if dry_run {
        println!("{what}: dry run, nothing changed");
        for line in &out.plan {
            println!("  {line}");
        }
        return;
    }
    for line in out.lines(what) {
        println!("{line}");
    }
}

fn plan(out: &failover::Outcome, what: &str) {
    println!("{what}: done");
    for line in &out.plan {
        println!("  {line}");
    }
}
