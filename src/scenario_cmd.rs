//! `drlab run`, `drlab replay` and `drlab schema`: scenarios in, verdicts out. Exit codes: 0 the
//! run matched its expectations, 1 an invariant did not, 2 bad input or a setup error (and then
//! nothing is written).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use harness::scenario::{self, Variant};

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
    let variant = match a.variant.as_deref().map(|v| Variant::parse(v).ok_or(v)) {
        None => s.variant,
        Some(Ok(v)) => v,
        Some(Err(v)) => {
            let known: Vec<&str> = std::iter::once(Variant::Real).chain(Variant::MUTANTS).map(|v| v.name()).collect();
            return bad(format!("unknown variant `{v}` (known: {})", known.join(", ")));
        }
    };
    if a.backend != "sim" {
        return bad(
            "--backend etcd is not available yet: the world's control-plane models do not run against real etcd \
             servers in this build (see issue 6); use --backend sim",
        );
    }
    let seed = a.seed.unwrap_or(s.seeds[0]);
    let dir = a
        .out
        .unwrap_or_else(|| PathBuf::from("reports/runs").join(format!("{}-seed{seed}-{}", s.name, variant.name())));
    let command = format!("drlab run {}", a.scenario.display());
    execute(&s, seed, variant, &dir, &command)
}

fn execute(s: &scenario::Scenario, seed: u64, variant: Variant, dir: &Path, command: &str) -> ExitCode {
    match harness::runner::execute(s, seed, variant, dir, command) {
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
    let r = match harness::runner::execute(&s, seed, variant, &again, &command) {
        Ok(r) => r,
        Err(e) => return bad(e),
    };
    print!("{}", r.summary());
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
