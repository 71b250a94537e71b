//! `drlab`: runs the deterministic world, and (as later commands land) scenarios, the explorer,
//! real-etcd replays and benchmarks.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod bench;
mod preflight_cmd;
mod scenario_cmd;

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
        /// The workload clusters run on bare metal (hosts reset by plans) instead of VMs.
        #[arg(long)]
        baremetal: bool,
        /// Write the JSON-lines trace here.
        #[arg(long)]
        trace: Option<PathBuf>,
    },
    /// Run a drill with a failover (planned, or --unplanned) by the real orchestrator (simulated
    /// platform).
    Failover {
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Simulated seconds to run (the failover starts at --at).
        #[arg(long, default_value_t = 120)]
        sim_secs: u64,
        /// When the orchestrator starts, in simulated seconds.
        #[arg(long, default_value_t = 30)]
        at: u64,
        #[arg(long, default_value_t = 2)]
        clusters: usize,
        #[arg(long, default_value_t = 3)]
        machines: usize,
        /// Print the plan with every precondition evaluated; change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Go past the guards, recording WHO in the audit trail and the report.
        #[arg(long, value_name = "WHO")]
        force: Option<String>,
        /// An operator aborts the failover at this simulated second (undone before the
        /// uninstall; refused after it, or while the failover runs past the lock wait).
        #[arg(long, value_name = "S")]
        abort_at: Option<u64>,
        /// The primary is lost 5 s before --at (its host crashes): an unplanned failover, fenced
        /// through the hook, R taken from the sync, guarded by a check of the standby alone.
        #[arg(long)]
        unplanned: bool,
        /// The real failback starts at this simulated second (after --at): the sync installed in
        /// reverse onto the fenced old primary, then a planned failover back.
        #[arg(long, value_name = "S")]
        failback_at: Option<u64>,
        /// A DR-aware upgrade instead of a failover: the guarded uninstall of the sync at --at
        /// (the primary keeps serving), its reinstall — a new epoch that resyncs onto the
        /// standby without a blind delete — at --reinstall-at.
        #[arg(long)]
        upgrade: bool,
        /// With --upgrade: when the sync is reinstalled (default: --at + 60).
        #[arg(long, value_name = "S", requires = "upgrade")]
        reinstall_at: Option<u64>,
        /// Write the JSON-lines trace here.
        #[arg(long)]
        trace: Option<PathBuf>,
    },
    /// Preflight by the real code (seeds 000 and 002) on the simulated platform: the global
    /// cluster's naming, both sides' encryption configurations and ServiceAccount token signing,
    /// the agent Role, the platform certificate's names, what the sync does not copy. Exit 0: nothing blocking or warned; 1: findings; 2: bad input or setup error.
    Preflight {
        #[arg(long, default_value_t = 1)]
        seed: u64,
        #[arg(long, default_value_t = 2)]
        clusters: usize,
        #[arg(long, default_value_t = 3)]
        machines: usize,
        /// The primary's global cluster gets a MachineDeployment `workers` (seed 002's mistake).
        #[arg(long)]
        misnamed_global: bool,
        /// The standby encrypts Secrets with other key bytes than the primary.
        #[arg(long)]
        keys_differ: bool,
        /// The standby signs ServiceAccount tokens with another key than the primary.
        #[arg(long)]
        sa_key_differs: bool,
        /// The platform certificate covers the domain and the primary's VIP, not the standby's.
        #[arg(long)]
        cert_without_standby_vip: bool,
    },
    /// Run a scenario: print each invariant's verdict, the seed and the run directory.
    /// Exit 0: as expected; 1: an invariant was not; 2: bad input or setup error.
    Run {
        /// A scenario file (scenarios/*.yaml).
        scenario: PathBuf,
        /// Seed (default: the scenario's first).
        #[arg(long)]
        seed: Option<u64>,
        /// The code under test: `real` or a mutant (owner-order-off, ignore-rules-off,
        /// uninstall-guard-off, fencing-off, raw-secret-copy, checkpoint-outside-txn, ledger-off,
        /// baseline-off, restore-blind, gate-compare-off).
        #[arg(long)]
        variant: Option<String>,
        /// `sim` (the deterministic world) or `etcd` (two real etcd servers on loopback, 3.4 → 3.5,
        /// in real time; scenarios that need DNS clients or VIPs are refused).
        #[arg(long, default_value = "sim", value_parser = ["sim", "etcd"])]
        backend: String,
        /// Run directory (default: reports/runs/<scenario>-seed<N>-<variant>).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Random workloads and fault schedules against the code under test; the first failing
    /// case is shrunk and written out as a scenario `drlab run` replays.
    /// Exit 0: every case passed; 1: a failing case was found; 2: bad input or setup error.
    Explore {
        /// Random cases to run.
        #[arg(long, default_value_t = 64)]
        cases: u32,
        /// Cases run in parallel (default: the machine's cores).
        #[arg(long)]
        jobs: Option<usize>,
        /// The proptest seed (default: a fresh one, printed): the same seed draws the same cases.
        #[arg(long)]
        seed: Option<u64>,
        /// The code under test: `real` or a mutant.
        #[arg(long, default_value = "real")]
        variant: String,
        /// Runs shrinking may spend on a failing case.
        #[arg(long, default_value_t = 200)]
        shrink_runs: u32,
        /// Where a failing case's scenario and run directory go.
        #[arg(long, default_value = "reports/explore")]
        out: PathBuf,
    },
    /// Re-run a saved run from its directory and confirm the same trace and verdict.
    Replay { dir: PathBuf },
    /// Print the JSON Schema of the scenario format.
    Schema,
    /// Benchmarks on real etcd servers started for the run.
    Bench {
        #[command(subcommand)]
        what: BenchWhat,
    },
}

#[derive(Subcommand)]
enum BenchWhat {
    /// Sync throughput (initial copy, streaming lag) next to the target's raw write ceiling and
    /// `etcdctl make-mirror`.
    Sync {
        /// 10k keys, rounds of 2 s at 1k and 5k writes/s (and the source's max) instead of
        /// 100k keys and rounds of 5 s at 1k, 5k, 10k and 20k.
        #[arg(long)]
        quick: bool,
        /// Keys for the initial copy (up to 1000000).
        #[arg(long)]
        keys: Option<usize>,
        /// Print one JSON object instead of a table.
        #[arg(short = 'o', long, value_parser = ["table", "json"], default_value = "table")]
        output: String,
    },
    /// The consistency check (`etcd-sync check`): time and peak RSS over N keys on both sides.
    Check {
        /// 10k keys instead of 100k.
        #[arg(long)]
        quick: bool,
        /// Keys on each side (e.g. 1000000 for the goal's figure).
        #[arg(long)]
        keys: Option<usize>,
        #[arg(short = 'o', long, value_parser = ["table", "json"], default_value = "table")]
        output: String,
    },
    /// The simulator: sim-s per wall-s on the 50 × 10 drill, scenario-seeds per hour on 2 threads.
    Sim {
        /// 5 simulated minutes and 8 scenario seeds instead of an hour and 64.
        #[arg(long)]
        quick: bool,
        #[arg(short = 'o', long, value_parser = ["table", "json"], default_value = "table")]
        output: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::World { seed, sim_secs, tick_ms, clusters, machines, writes_per_s, baremetal, trace } => {
            world(harness::drill::DrillOptions {
                seed,
                sim_secs,
                tick_ms,
                clusters,
                machines,
                writes_per_s,
                bare_metal: baremetal,
                trace,
            })
        }
        Command::Failover {
            seed,
            sim_secs,
            at,
            clusters,
            machines,
            dry_run,
            force,
            abort_at,
            unplanned,
            failback_at,
            upgrade,
            reinstall_at,
            trace,
        } => {
            let drill = harness::drill::DrillOptions {
                seed,
                sim_secs,
                tick_ms: 10,
                clusters,
                machines,
                writes_per_s: 1.0,
                bare_metal: false,
                trace,
            };
            failover(harness::drill::FailoverDrill {
                drill,
                at_s: at,
                dry_run,
                force,
                abort_at_s: abort_at,
                unplanned,
                failback_at_s: failback_at,
                reinstall_at_s: upgrade.then(|| reinstall_at.unwrap_or(at + 60)),
            })
        }
        Command::Preflight {
            seed,
            clusters,
            machines,
            misnamed_global,
            keys_differ,
            sa_key_differs,
            cert_without_standby_vip,
        } => {
            let drill = harness::drill::DrillOptions {
                seed,
                sim_secs: harness::drill::PREFLIGHT_AT.as_secs() + 5,
                tick_ms: 10,
                clusters,
                machines,
                writes_per_s: 1.0,
                bare_metal: false,
                trace: None,
            };
            preflight_cmd::preflight(harness::drill::PreflightDrill {
                drill,
                misnamed_global,
                keys_differ,
                sa_key_differs,
                cert_without_standby_vip,
            })
        }
        Command::Run { scenario, seed, variant, backend, out } => {
            scenario_cmd::run(scenario_cmd::RunArgs { scenario, seed, variant, backend, out })
        }
        Command::Explore { cases, jobs, seed, variant, shrink_runs, out } => {
            scenario_cmd::explore(scenario_cmd::ExploreArgs { cases, jobs, seed, variant, shrink_runs, out })
        }
        Command::Replay { dir } => scenario_cmd::replay(&dir),
        Command::Schema => scenario_cmd::schema(),
        Command::Bench { what: BenchWhat::Sync { quick, keys, output } } => {
            bench_report("sync", bench::throughput::sync(bench::Options { quick, keys }), output == "json")
        }
        Command::Bench { what: BenchWhat::Check { quick, keys, output } } => {
            bench_report("check", bench::check::check(bench::Options { quick, keys }), output == "json")
        }
        Command::Bench { what: BenchWhat::Sim { quick, output } } => {
            bench_report("sim", bench::sim::sim(bench::Options { quick, keys: None }), output == "json")
        }
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

fn failover(f: harness::drill::FailoverDrill) -> ExitCode {
    let o = &f.drill;
    let mut reproduce = format!(
        "reproduce with: drlab failover --seed {} --sim-secs {} --at {} --clusters {} --machines {}",
        o.seed, o.sim_secs, f.at_s, o.clusters, o.machines
    );
    if f.dry_run {
        reproduce.push_str(" --dry-run");
    }
    if let Some(w) = &f.force {
        reproduce.push_str(&format!(" --force {w}"));
    }
    if let Some(t) = f.abort_at_s {
        reproduce.push_str(&format!(" --abort-at {t}"));
    }
    if f.unplanned {
        reproduce.push_str(" --unplanned");
    }
    if let Some(t) = f.failback_at_s {
        reproduce.push_str(&format!(" --failback-at {t}"));
    }
    if let Some(t) = f.reinstall_at_s {
        reproduce.push_str(&format!(" --upgrade --reinstall-at {t}"));
    }
    let upgrade_in_run = f.reinstall_at_s.is_none_or(|t| {
        f.at_s < t
            && t < o.sim_secs
            && !f.dry_run
            && !f.unplanned
            && f.abort_at_s.is_none()
            && f.failback_at_s.is_none()
    });
    let abort_in_run = f.abort_at_s.is_none_or(|t| f.at_s <= t && t < o.sim_secs)
        && f.failback_at_s.is_none_or(|t| f.at_s < t && t < o.sim_secs && !f.dry_run);
    let loss_in_run = !f.unplanned || f.at_s >= harness::drill::UNPLANNED_LOSS_S;
    if f.at_s >= o.sim_secs
        || !abort_in_run
        || !loss_in_run
        || !upgrade_in_run
        || !(1..=sim::topology::CLUSTERS_MAX).contains(&o.clusters)
    {
        eprintln!(
            "error: --at must be before --sim-secs (and at least {} with --unplanned), --abort-at from --at to \
             --sim-secs, --failback-at after --at and before --sim-secs (not with --dry-run), --reinstall-at after --at \
             and before --sim-secs (--upgrade alone: no dry run, abort, failback or unplanned), and --clusters 1..={}",
            harness::drill::UNPLANNED_LOSS_S,
            sim::topology::CLUSTERS_MAX
        );
        return ExitCode::from(2);
    }
    println!("seed: {}", o.seed);
    let r = match harness::drill::failover_drill(&f) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}\n{reproduce}");
            return ExitCode::from(2);
        }
    };
    let mut ok = r.vm_deletions.is_empty();
    if f.reinstall_at_s.is_some() {
        // A DR-aware upgrade: both halves must finish and the new epoch catch up.
        for (what, runs) in [("upgrade uninstall", &r.uninstalls), ("upgrade reinstall", &r.reinstalls)] {
            match finished(what, runs) {
                None => ok = false,
                Some(out) => {
                    println!("{what}: done");
                    for line in &out.plan {
                        println!("  {line}");
                    }
                }
            }
        }
        let s = &r.drill.sync;
        println!("sync: {:?}, checkpoint {} of source head {}", s.phase, s.checkpoint, r.drill.source_head);
        ok &= r.drill.caught_up();
    }
    let failover = if f.reinstall_at_s.is_some() { None } else { Some(finished("failover", &r.runs)) };
    match failover {
        None => {}
        Some(None) => ok = false,
        Some(Some(out)) if f.dry_run => {
            println!("failover: dry run, nothing changed");
            for line in &out.plan {
                println!("  {line}");
            }
        }
        Some(Some(out)) => {
            for line in out.lines("failover") {
                println!("{line}");
            }
        }
    }
    if f.abort_at_s.is_some() {
        // Asked for an abort: it decides the exit (a refused failover it undoes is the point).
        match finished("abort", &r.aborts) {
            None => ok = false,
            Some(out) => {
                println!("abort: done");
                for line in &out.plan {
                    println!("  {line}");
                }
                ok = r.vm_deletions.is_empty();
            }
        }
    }
    if f.failback_at_s.is_some() {
        match finished("failback", &r.failbacks) {
            None => ok = false,
            Some(out) => {
                let last = out.progress.step_ms.last().map(|(_, ms)| *ms).unwrap_or(0);
                let missed = out.report.as_ref().map(|r| r.missed.count).unwrap_or(0);
                println!("failback: done; RPO {missed} keys, RTO {last} ms");
            }
        }
    }
    println!("platform domain -> {}", r.dns_target);
    println!("vm-deletions: {}", r.vm_deletions.len());
    for d in &r.vm_deletions {
        println!("  {} by {} ({}) because {}", d.vm.id, d.by_cluster, d.controller, d.why);
    }
    println!("trace-hash: {}", r.drill.platform.trace_hash);
    if ok {
        ExitCode::SUCCESS
    } else {
        println!("{reproduce}");
        ExitCode::from(1)
    }
}

/// The outcome of an orchestrator job's first run, or None after saying why there is none.
fn finished<'a, T>(job: &str, runs: &'a [Result<T, String>]) -> Option<&'a T> {
    match runs.first() {
        None => {
            println!("{job}: did not finish within the run");
            None
        }
        Some(Err(e)) => {
            println!("{job}: {e}");
            None
        }
        Some(Ok(out)) => Some(out),
    }
}

/// Prints a bench's figures (a table, or one JSON object) and writes them to
/// `reports/bench/<what>.json`; goals missed are figures, not failures.
fn bench_report(what: &str, result: Result<serde_json::Value, String>, json: bool) -> ExitCode {
    let v = match result {
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
        Ok(v) => v,
    };
    let dir = PathBuf::from("reports/bench");
    let path = dir.join(format!("{what}.json"));
    let written = std::fs::create_dir_all(&dir)
        .and_then(|_| std::fs::write(&path, serde_json::to_string_pretty(&v).expect("json")));
    if json {
        println!("{v}");
    } else {
        for (k, val) in v.as_object().expect("an object") {
            if k == "goals" {
                continue;
            }
            match val.as_array().filter(|a| a.iter().all(serde_json::Value::is_object)) {
                Some(rows) if !rows.is_empty() => {
                    println!("{k}:");
                    for row in rows {
                        println!("  {row}");
                    }
                }
                _ => println!("{k:28} {val}"),
            }
        }
        for g in v["goals"].as_array().into_iter().flatten() {
            let verdict = match g["missed_by_factor"].as_f64() {
                None => "met".to_string(),
                Some(f) => format!("MISSED by {f}×"),
            };
            println!(
                "goal: {} — measured {} vs {}: {verdict}",
                g["goal"].as_str().unwrap_or(""),
                g["measured"],
                g["bound"]
            );
        }
    }
    if let Err(e) = written {
        eprintln!("warning: could not write {}: {e}", path.display());
    }
    ExitCode::SUCCESS
}
