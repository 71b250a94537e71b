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
    /// Run a drill on the simulated platform: a primary and a standby global cluster with
    /// their control planes, the real sync between them, workload clusters and traffic.
    World {
        /// Seed of the run: the same seed gives the same trace.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Simulated seconds to run.
        #[arg(long, default_value_t = 60)]
        sim_secs: u64,
        /// Simulated time per turmoil tick, in milliseconds.
        #[arg(long, default_value_t = 10)]
        tick_ms: u64,
        /// Workload clusters.
        #[arg(long, default_value_t = 2)]
        clusters: usize,
        /// Machines per workload cluster (one control-plane Machine included).
        #[arg(long, default_value_t = 3)]
        machines: usize,
        /// Background writes (Machine heartbeats) per simulated second on the serving cluster.
        #[arg(long, default_value_t = 1.0)]
        writes_per_s: f64,
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
        Command::World { seed, sim_secs, tick_ms, clusters, machines, writes_per_s, trace } => {
            world(harness::drill::DrillOptions { seed, sim_secs, tick_ms, clusters, machines, writes_per_s, trace })
        }
        Command::Bench { what: BenchWhat::Sync { quick, output } } => bench_sync(quick, output == "json"),
    }
}

fn world(o: harness::drill::DrillOptions) -> ExitCode {
    let reproduce = format!(
        "reproduce with: drlab world --seed {} --sim-secs {} --tick-ms {} --clusters {} --machines {} --writes-per-s {}",
        o.seed, o.sim_secs, o.tick_ms, o.clusters, o.machines, o.writes_per_s
    );
    if !(1..=sim::topology::CLUSTERS_MAX).contains(&o.clusters)
        || !(1..=sim::topology::MACHINES_PER_CLUSTER_MAX).contains(&o.machines)
    {
        eprintln!(
            "error: --clusters must be 1..={} and --machines 1..={}",
            sim::topology::CLUSTERS_MAX,
            sim::topology::MACHINES_PER_CLUSTER_MAX
        );
        return ExitCode::from(2);
    }
    if !(0.0..=1000.0).contains(&o.writes_per_s) {
        eprintln!("error: --writes-per-s must be 0..=1000");
        return ExitCode::from(2);
    }
    println!("seed: {}", o.seed);
    // Wall-clock time is measured here, outside the simulation, only to report its speed.
    let wall = std::time::Instant::now();
    let result = harness::drill::drill(&o);
    let wall_s = wall.elapsed().as_secs_f64();
    let r = match result {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            eprintln!("{reproduce}");
            return ExitCode::from(2);
        }
    };
    let p = &r.platform;
    println!("sim-secs: {}", p.sim_secs);
    println!("workload: {} clusters x {} machines", o.clusters, o.machines);
    println!("keys: primary {} standby {}", p.keys_primary, p.keys_standby);
    println!(
        "sync: {:?}, checkpoint {} of source head {}, {} ops applied",
        r.sync.phase, r.sync.checkpoint, r.source_head, r.sync.applied_ops
    );
    println!("vm-deletions: {}", p.vm_deletions);
    println!("trace-events: {}", p.trace_events);
    if let Some(t) = &o.trace {
        println!("trace: {}", t.display());
    }
    println!("trace-hash: {}", p.trace_hash);
    println!("speed: {:.1} sim-s/wall-s", p.sim_secs as f64 / wall_s.max(1e-9));
    if p.vm_deletions > 0 || !r.caught_up() {
        println!("the drill failed: {} VM deletions, caught up: {}; {reproduce}", p.vm_deletions, r.caught_up());
        return ExitCode::from(1);
    }
    ExitCode::SUCCESS
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
