//! `drlab run`, `drlab replay` and `drlab schema`: scenarios in, verdicts out. Exit codes: 0 the
//! run matched its expectations, 1 an invariant did not, 2 bad input or a setup error (and then
//! nothing is written).

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use harness::explore::{Explore, Progress};
use harness::scenario::{self, Backend, Variant};

pub struct RunArgs {
    pub scenario: PathBuf,
    pub seed: Option<u64>,
    pub variant: Option<String>,
    pub backend: String,
    pub out: Option<PathBuf>,
}

fn bad(message: impl std::fmt::Display) -> ExitCode {
    eprintln!("error: {message}");
    ExitCode::from(2)
}

pub fn run(a: RunArgs) -> ExitCode {
    let s = match scenario::load(&a.scenario) {
        Ok(s) => s,
        Err(e) => return bad(e),
    };
    let variant = match a.variant.as_deref().map(variant_of) {
        None => s.variant,
        Some(Ok(v)) => v,
        Some(Err(e)) => return bad(e),
    };
    let Some(backend) = Backend::parse(&a.backend) else {
        return bad(format!("unknown backend `{}` (known: sim, etcd)", a.backend));
    };
    let seed = a.seed.unwrap_or(s.seeds[0]);
    let on = if backend == Backend::Etcd { "-etcd" } else { "" };
    let dir = a
        .out
        .unwrap_or_else(|| PathBuf::from("reports/runs").join(format!("{}-seed{seed}-{}{on}", s.name, variant.name())));
    let mut command = format!("drlab run {}", a.scenario.display());
    if backend == Backend::Etcd {
        command.push_str(" --backend etcd");
    }
    execute(backend, &s, seed, variant, &dir, &command)
}

fn variant_of(v: &str) -> Result<Variant, String> {
    Variant::parse(v).ok_or_else(|| {
        let known: Vec<&str> = std::iter::once(Variant::Real).chain(Variant::MUTANTS).map(|v| v.name()).collect();
        format!("unknown variant `{v}` (known: {})", known.join(", "))
    })
}

fn execute(
    backend: Backend,
    s: &scenario::Scenario,
    seed: u64,
    variant: Variant,
    dir: &Path,
    command: &str,
) -> ExitCode {
    match harness::runner::execute_on(backend, s, seed, variant, dir, command) {
        Err(e) => bad(format!("{e}\nreproduce with: {command} --seed {seed} --variant {}", variant.name())),
        Ok(r) => {
            print!("{}", r.summary());
            println!("run directory: {}", dir.display());
            if r.pass { ExitCode::SUCCESS } else { ExitCode::from(1) }
        }
    }
}

/// Re-runs a saved run from its directory: the same scenario, seed and variant must give the
/// same trace hash and verdict (else the world is not deterministic: exit 2).
pub fn replay(dir: &Path) -> ExitCode {
    let s = match scenario::load(&dir.join("scenario.yaml")) {
        Ok(s) => s,
        Err(e) => return bad(e),
    };
    let saved = dir.join("verdicts.json");
    let saved: serde_json::Value = match std::fs::read(&saved)
        .map_err(|e| e.to_string())
        .and_then(|b| serde_json::from_slice(&b).map_err(|e| format!("{}: {e}", saved.display())))
    {
        Ok(v) => v,
        Err(e) => return bad(e),
    };
    let (Some(hash), Some(pass)) = (saved["trace_hash"].as_str(), saved["pass"].as_bool()) else {
        return bad(format!("{}: no trace_hash / pass", dir.join("verdicts.json").display()));
    };
    let (seed, variant) = (s.seeds[0], s.variant);
    let again = dir.join("replay");
    let command = format!("drlab replay {}", dir.display());
    // A real-etcd run is not deterministic: its replay runs on real etcd again and must reach
    // the same verdict; only the simulator's must give the same trace.
    let backend = saved["backend"].as_str().and_then(Backend::parse).unwrap_or_default();
    let r = match harness::runner::execute_on(backend, &s, seed, variant, &again, &command) {
        Ok(r) => r,
        Err(e) => return bad(e),
    };
    print!("{}", r.summary());
    if backend == Backend::Etcd {
        if r.pass != pass {
            return bad(format!("the replay on real etcd reached another verdict (pass {pass} → {})", r.pass));
        }
        println!("replayed on real etcd: same verdict as {}", dir.display());
        return if r.pass { ExitCode::SUCCESS } else { ExitCode::from(1) };
    }
    if r.trace_hash != hash || r.pass != pass {
        return bad(format!(
            "the replay differs from the saved run (trace {hash} → {}, pass {pass} → {}): the world is not \
             deterministic for seed={seed}",
            r.trace_hash, r.pass
        ));
    }
    println!("replayed: same trace hash and verdict as {}", dir.display());
    if r.pass { ExitCode::SUCCESS } else { ExitCode::from(1) }
}

pub fn schema() -> ExitCode {
    println!("{}", serde_json::to_string_pretty(&scenario::schema()).expect("json"));
    ExitCode::SUCCESS
}

pub struct ExploreArgs {
    pub cases: u32,
    pub jobs: Option<usize>,
    pub seed: Option<u64>,
    pub variant: String,
    pub shrink_runs: u32,
    pub out: PathBuf,
}

/// A fresh seed when none is given (the explorer's own choice, printed; never inside a world).
fn fresh_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    h.finish() % 1_000_000_000
}

pub fn explore(a: ExploreArgs) -> ExitCode {
    let variant = match variant_of(&a.variant) {
        Ok(v) => v,
        Err(e) => return bad(e),
    };
    let jobs = a.jobs.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let e = Explore {
        cases: a.cases,
        jobs,
        seed: a.seed.unwrap_or_else(fresh_seed),
        variant,
        shrink_runs: a.shrink_runs,
        out: a.out,
    };
    println!("explore: {} cases, seed {}, variant {}, {} jobs", e.cases, e.seed, variant.name(), e.jobs);
    let bar = std::io::stderr().is_terminal();
    let show = |p: Progress| {
        if !bar {
            return;
        }
        let line = match p {
            Progress::Case { done, of, failing } => {
                let width = 30;
                let filled = done * width / of.max(1);
                format!("[{}{}] {done}/{of} cases, {failing} failing", "#".repeat(filled), ".".repeat(width - filled))
            }
            Progress::Shrink { runs, faults } => format!("shrinking: {runs} runs, {faults} faults left"),
        };
        let mut err = std::io::stderr().lock();
        let _ = write!(err, "\r\x1b[2K{line}");
        let _ = err.flush();
    };
    let outcome = harness::explore::explore(&e, show);
    if bar {
        eprintln!();
    }
    match outcome {
        Err(err) => bad(format!("{err}\nreproduce with: drlab explore --seed {} --variant {}", e.seed, variant.name())),
        Ok(o) => match o.finding {
            None => {
                println!("{} cases passed (seed {}, variant {})", o.cases_run, e.seed, variant.name());
                ExitCode::SUCCESS
            }
            Some(f) => {
                print!("{}", f.report.summary());
                println!(
                    "case {} of seed {} failed ({}); shrunk in {} runs to {} faults{}",
                    f.index,
                    e.seed,
                    f.failed.iter().cloned().collect::<Vec<_>>().join(", "),
                    f.shrink_runs,
                    f.case.effective_faults().len(),
                    if f.case.failover.is_some() { " and a failover" } else { "" },
                );
                println!("scenario: {}\nrun directory: {}", f.scenario_path.display(), f.run_dir.display());
                println!("reproduce with: drlab run {}", f.scenario_path.display());
                ExitCode::from(1)
            }
        },
    }
}
