//! `drlab`: runs the deterministic world, and (as later commands land) scenarios, the explorer,
//! real-etcd replays and benchmarks.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod bench;

#[derive(Parser)]
#[command(name = "drlab", version, about = "Proves a DR failover never deletes a Cluster API Machine")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a small simulated world: a primary and a standby etcd, a client writing and watching.
    World {
        /// Seed of the run: the same seed gives the same trace.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Simulated seconds to run.
        #[arg(long, default_value_t = 60)]
        sim_secs: u64,
        /// Simulated time per turmoil tick, in milliseconds.
        #[arg(long, default_value_t = 1)]
        tick_ms: u64,
        /// Write the JSON-lines trace here.
        #[arg(long)]
        trace: Option<PathBuf>,
    },
    /// Benchmarks on real etcd servers started for the run.
    Bench {
        #[command(subcommand)]
        what: BenchWhat,
    },
}

#[derive(Subcommand)]
enum BenchWhat {
    /// Sync throughput (initial copy, streaming lag) next to the target's raw write ceiling.
    Sync {
        /// 10k keys and 3 s of streaming instead of 100k and 10 s.
        #[arg(long)]
        quick: bool,
        /// Print one JSON object instead of a table.
        #[arg(short = 'o', long, value_parser = ["table", "json"], default_value = "table")]
        output: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::World { seed, sim_secs, tick_ms, trace } => world(seed, sim_secs, tick_ms, trace),
        Command::Bench { what: BenchWhat::Sync { quick, output } } => bench_sync(quick, output == "json"),
    }
}

fn world(seed: u64, sim_secs: u64, tick_ms: u64, trace: Option<PathBuf>) -> ExitCode {
    println!("seed: {seed}");
    let cfg = sim::world::WorldConfig { seed, sim_secs, tick_ms, trace_path: trace.clone() };
    // Wall-clock time is measured here, outside the simulation, only to report its speed.
    let wall = std::time::Instant::now();
    let result = sim::world::run_small(&cfg);
    let wall_s = wall.elapsed().as_secs_f64();
    match result {
        Ok(r) => {
            println!("sim-secs: {}", r.sim_secs);
            println!("writes: {}", r.writes);
            println!("mirrored: {}", r.mirrored);
            println!("converged: {}", r.converged);
            println!("trace-events: {}", r.trace_events);
            if let Some(p) = &trace {
                println!("trace: {}", p.display());
            }
            println!("trace-hash: {}", r.trace_hash);
            println!("speed: {:.1} sim-s/wall-s", r.sim_secs as f64 / wall_s.max(1e-9));
            if r.converged {
                ExitCode::SUCCESS
            } else {
                println!(
                    "the standby did not converge; reproduce with: drlab world --seed {seed} --sim-secs {sim_secs}"
                );
                ExitCode::from(1)
            }
        }
        Err(e) => {
            eprintln!("error: {e}");
            eprintln!("reproduce with: drlab world --seed {seed} --sim-secs {sim_secs} --tick-ms {tick_ms}");
            ExitCode::from(2)
        }
    }
}

fn bench_sync(quick: bool, json: bool) -> ExitCode {
    match bench::sync(bench::Options { quick }) {
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
        Ok(v) => {
            let dir = PathBuf::from("reports/bench");
            let written = std::fs::create_dir_all(&dir)
                .and_then(|_| std::fs::write(dir.join("sync.json"), serde_json::to_string_pretty(&v).expect("json")));
            if json {
                println!("{v}");
            } else {
                for (k, val) in v.as_object().expect("an object") {
                    println!("{k:28} {val}");
                }
            }
            if let Err(e) = written {
                eprintln!("warning: could not write reports/bench/sync.json: {e}");
            }
            ExitCode::SUCCESS
        }
    }
}
