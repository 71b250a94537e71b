//! `drlab explore`: random workloads and fault schedules (proptest strategies, [`case`]) run
//! against the real code or a mutant. Cases run on `jobs` threads (each simulation is its own
//! single-threaded world); the first failing case — the lowest index, whatever the threads'
//! timing — is shrunk to a minimal one and written out as a scenario that `drlab run` replays to
//! the same failure.

pub mod case;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use proptest::strategy::{Strategy, ValueTree};
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};

use crate::report::RunReport;
use crate::runner::RunError;
use crate::scenario::{Scenario, Variant, to_yaml};

pub use case::Case;

/// Bounds (TIGER_STYLE): a run of the explorer is a test, not a soak.
pub const CASES_MAX: u32 = 100_000;
pub const JOBS_MAX: usize = 64;
pub const SHRINK_RUNS_MAX: u32 = 10_000;

#[derive(Debug, Clone)]
pub struct Explore {
    pub cases: u32,
    pub jobs: usize,
    /// The proptest seed: the same seed draws the same cases.
    pub seed: u64,
    pub variant: Variant,
    /// How many runs shrinking may spend (0: report the case as drawn).
    pub shrink_runs: u32,
    /// Where a failing case's scenario and run directory go.
    pub out: PathBuf,
}

/// A failing case, shrunk.
#[derive(Debug)]
pub struct Finding {
    /// Index of the case as drawn.
    pub index: usize,
    /// The failing checks of the case as drawn (shrinking keeps one of them failing).
    pub failed: BTreeSet<String>,
    pub case: Case,
    pub shrink_runs: u32,
    /// The minimal scenario, written as YAML here; its run directory beside it.
    pub scenario_path: PathBuf,
    pub run_dir: PathBuf,
    pub report: RunReport,
}

#[derive(Debug)]
pub struct Outcome {
    /// Cases run before the verdict (all of them when none failed).
    pub cases_run: usize,
    pub finding: Option<Finding>,
}

/// Progress, for a bar on a terminal.
#[derive(Debug, Clone, Copy)]
pub enum Progress {
    Case { done: usize, of: usize, failing: usize },
    Shrink { runs: u32, faults: usize },
}

#[derive(Debug, thiserror::Error)]
pub enum ExploreError {
    #[error(transparent)]
    Run(#[from] RunError),
    #[error("{path}: {source}")]
    Write { path: String, source: std::io::Error },
    #[error("{0}")]
    Invalid(String),
}

fn rng(seed: u64) -> TestRng {
    let mut bytes = [0u8; 32];
    bytes[..8].copy_from_slice(&seed.to_le_bytes());
    TestRng::from_seed(RngAlgorithm::ChaCha, &bytes)
}

/// The `n` cases `seed` draws, with their value trees (for shrinking).
pub fn draw(seed: u64, n: usize) -> Vec<Box<dyn ValueTree<Value = Case>>> {
    let mut runner = TestRunner::new_with_rng(Config::default(), rng(seed));
    let strategy = case::strategy().boxed();
    (0..n).map(|_| strategy.new_tree(&mut runner).expect("the case strategy never rejects")).collect()
}

type Ran = Result<RunReport, RunError>;

fn failing(r: &Ran) -> bool {
    !matches!(r, Ok(r) if r.pass)
}

/// What failed in a report: the invariants not as expected, and the failover's end.
fn failed_checks(r: &RunReport) -> BTreeSet<String> {
    let mut out: BTreeSet<String> = r.verdicts.iter().filter(|j| !j.ok).map(|j| j.verdict.invariant.name()).collect();
    if r.failover.as_ref().is_some_and(|f| !f.ok) {
        out.insert("failover-outcome".into());
    }
    out
}

fn name_of(e: &Explore, index: usize) -> String {
    format!("explore-{}-{}-case{index}", e.seed, e.variant.name())
}

fn proves(e: &Explore, index: usize) -> String {
    format!(
        "Found by `drlab explore --seed {} --variant {}` (case {index}): a random workload and fault schedule, \
         shrunk. Every checked invariant must hold, and the failover (if any) end as expected.",
        e.seed,
        e.variant.name()
    )
}

/// Round-trips the case's scenario through YAML, so what runs is what a file replays.
fn scenario_of(e: &Explore, index: usize, c: &Case) -> Scenario {
    let s = c.scenario(&name_of(e, index), e.variant, &proves(e, index));
    crate::scenario::parse("<explore>", &to_yaml(&s))
        .unwrap_or_else(|err| panic!("the explorer drew an invalid scenario ({err}): {c:?}"))
}

fn run_case(e: &Explore, index: usize, c: &Case, dir: &Path) -> Result<RunReport, RunError> {
    let s = scenario_of(e, index, c);
    let command = format!("drlab run {}", dir.with_extension("yaml").display());
    crate::runner::execute(&s, c.world_seed, e.variant, dir, &command)
}

/// Runs the exploration; `progress` sees every finished case and shrink run.
pub fn explore(e: &Explore, progress: impl Fn(Progress) + Sync) -> Result<Outcome, ExploreError> {
    if !(1..=CASES_MAX).contains(&e.cases) || !(1..=JOBS_MAX).contains(&e.jobs) || e.shrink_runs > SHRINK_RUNS_MAX {
        return Err(ExploreError::Invalid(format!(
            "cases must be 1..={CASES_MAX}, jobs 1..={JOBS_MAX}, shrink runs 0..={SHRINK_RUNS_MAX}"
        )));
    }
    let n = e.cases as usize;
    let mut trees = draw(e.seed, n);
    let cases: Vec<Case> = trees.iter().map(|t| t.current()).collect();
    let scratch = tempfile::tempdir().map_err(|source| ExploreError::Write { path: "temp dir".into(), source })?;

    // Workers take cases in index order; after a failure (or a setup error) at index i no case
    // past i starts, so the lowest failing index is the same whatever the threads' timing.
    let next = AtomicUsize::new(0);
    let first_failure = AtomicUsize::new(usize::MAX);
    // The results so far, and how many of them fail (for the progress bar).
    let results: Mutex<(Vec<(usize, Ran)>, usize)> = Mutex::new((Vec::new(), 0));
    std::thread::scope(|scope| {
        for _ in 0..e.jobs.min(n) {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    if i >= n || i > first_failure.load(Ordering::SeqCst) {
                        return;
                    }
                    let dir = scratch.path().join(format!("case{i}"));
                    let r = run_case(e, i, &cases[i], &dir);
                    // The trace is not needed again: a failing case is run again as it shrinks.
                    let _ = std::fs::remove_dir_all(&dir);
                    let failed = failing(&r);
                    if failed {
                        first_failure.fetch_min(i, Ordering::SeqCst);
                    }
                    let mut guard = results.lock().expect("results");
                    let (res, failing_n) = &mut *guard;
                    res.push((i, r));
                    *failing_n += usize::from(failed);
                    progress(Progress::Case { done: res.len(), of: n, failing: *failing_n });
                }
            });
        }
    });
    let (mut results, _) = results.into_inner().expect("results");
    results.sort_by_key(|(i, _)| *i);
    let Some(pos) = results.iter().position(|(_, r)| failing(r)) else {
        return Ok(Outcome { cases_run: results.len(), finding: None });
    };
    let (index, report) = results.swap_remove(pos);
    let report = report?;
    let failed = failed_checks(&report);
    let finding = shrink(e, index, trees.swap_remove(index), failed, &progress)?;
    Ok(Outcome { cases_run: index + 1, finding: Some(finding) })
}

/// Shrinks a failing case: a simpler case is kept when it still fails one of the checks the
/// drawn case failed (so shrinking does not wander to another failure).
fn shrink(
    e: &Explore,
    index: usize,
    mut tree: Box<dyn ValueTree<Value = Case>>,
    failed: BTreeSet<String>,
    progress: &impl Fn(Progress),
) -> Result<Finding, ExploreError> {
    let scratch = tempfile::tempdir().map_err(|source| ExploreError::Write { path: "temp dir".into(), source })?;
    let mut best = tree.current();
    let mut runs = 0;
    if e.shrink_runs > 0 && tree.simplify() {
        while runs < e.shrink_runs {
            runs += 1;
            let candidate = tree.current();
            let r = run_case(e, index, &candidate, &scratch.path().join("shrink"))?;
            let _ = std::fs::remove_dir_all(scratch.path().join("shrink"));
            let still = !r.pass && failed_checks(&r).iter().any(|f| failed.contains(f));
            progress(Progress::Shrink { runs, faults: best.effective_faults().len() });
            let more = if still {
                best = candidate;
                tree.simplify()
            } else {
                tree.complicate()
            };
            if !more {
                break;
            }
        }
    }
    // The minimal case, written where the user looks, and run once more into its directory.
    std::fs::create_dir_all(&e.out)
        .map_err(|source| ExploreError::Write { path: e.out.display().to_string(), source })?;
    let name = name_of(e, index);
    let scenario_path = e.out.join(format!("{name}.yaml"));
    let s = scenario_of(e, index, &best);
    let header = format!("# {name}: written by drlab explore; replay with `drlab run {}`\n", scenario_path.display());
    std::fs::write(&scenario_path, header + &to_yaml(&s))
        .map_err(|source| ExploreError::Write { path: scenario_path.display().to_string(), source })?;
    let run_dir = e.out.join(&name);
    let report = run_case(e, index, &best, &run_dir)?;
    assert!(!report.pass, "the shrunk case passed on its final run: the world is not deterministic for {best:?}");
    Ok(Finding { index, failed, case: best, shrink_runs: runs, scenario_path, run_dir, report })
}
