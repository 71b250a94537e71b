//! A run's verdict against the scenario's expectations, and its output directory: the resolved
//! scenario, the trace (JSON lines), the verdicts (JSON) and a short human summary. No secret
//! value reaches any of them: the trace records keys and names, never values.

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::invariants::{Status, Verdict};
use crate::runner::Observed;
use crate::scenario::{AbortEnd, FailoverEnd, Invariant, Scenario, Variant, to_yaml};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Expected {
    Hold,
    Fail,
    /// Under a mutant, only the invariants its teeth name are judged.
    Unjudged,
}

#[derive(Debug, Clone, Serialize)]
pub struct Judged {
    #[serde(flatten)]
    pub verdict: Verdict,
    pub expected: Expected,
    pub ok: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct FailoverSummary {
    /// `done`, `refused`, `failed: …` or `unfinished`.
    pub outcome: String,
    pub expected: Option<FailoverEnd>,
    pub forced_by: Option<String>,
    /// Why it did not finish (the orchestrator's error, bounded).
    pub error: Option<String>,
    pub ok: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct AbortSummary {
    /// `done`, `refused`, `failed: …` or `unfinished`.
    pub outcome: String,
    pub expected: Option<AbortEnd>,
    pub ok: bool,
}

/// Characters of an orchestrator's error a report keeps.
const ERROR_CHARS_MAX: usize = 2_000;
/// Lines of it the summary shows after the first.
const ERROR_LINES_MAX: usize = 12;

/// A unit variant's name as a scenario spells it (`timed-out`).
fn name_of(e: &impl Serialize) -> String {
    serde_json::to_value(e).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default()
}

/// Bumped when a field changes meaning; readers check it.
pub const REPORT_VERSION: u32 = 1;

#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    pub version: u32,
    pub scenario: String,
    pub seed: u64,
    pub variant: Variant,
    /// Where the etcd servers ran (a real backend's trace hash is not reproducible).
    pub backend: crate::scenario::Backend,
    pub sim_secs: u64,
    pub trace: PathBuf,
    pub trace_hash: String,
    pub trace_events: u64,
    pub verdicts: Vec<Judged>,
    pub failover: Option<FailoverSummary>,
    pub abort: Option<AbortSummary>,
    pub failback: Option<FailoverSummary>,
    pub upgrade: Option<FailoverSummary>,
    pub vm_deletions: usize,
    /// The sync's last applied primary revision, and the primary's head, at the end.
    pub sync_checkpoint: i64,
    pub source_head: i64,
    pub pass: bool,
    /// Whether the scenario names invariants this run's mutant must fail (always false for
    /// the real code): without teeth a mutant run is judged like the real code.
    pub mutant_has_teeth: bool,
    pub reproduce: String,
}

pub fn expected(s: &Scenario, variant: Variant, i: Invariant) -> Expected {
    match (variant, s.teeth.get(&variant)) {
        (Variant::Real, _) if s.expect.fail.contains(&i) => Expected::Fail,
        (Variant::Real, _) => Expected::Hold,
        (_, Some(fails)) if fails.contains(&i) => Expected::Fail,
        (_, Some(_)) => Expected::Unjudged,
        (_, None) if s.expect.fail.contains(&i) => Expected::Unjudged,
        (_, None) => Expected::Hold,
    }
}

fn failover_summary(s: &Scenario, o: &Observed) -> Option<FailoverSummary> {
    s.failover()?;
    let mut f = end_summary(o.failover.as_ref(), o.variant, s.expect.failover);
    // A failover that failed after a forced guard still recorded the force in its progress.
    if f.forced_by.is_none() {
        f.forced_by = o.failover_progress.as_ref().and_then(|p| p.forced_by.clone());
    }
    Some(f)
}

/// The failback ends like a failover: it is one, back.
fn failback_summary(s: &Scenario, o: &Observed) -> Option<FailoverSummary> {
    s.has_failback().then(|| end_summary(o.failback.as_ref(), o.variant, s.expect.failback))
}

/// The DR-aware upgrade must end done: its uninstall, then its reinstall (a mutant's end is not
/// judged, as for a failover).
fn upgrade_summary(o: &Observed) -> Option<FailoverSummary> {
    let (uninstall, reinstall) = o.upgrade.as_ref()?;
    let end = |r: &Option<crate::runner::JobResult>| match r {
        None => "unfinished".to_string(),
        Some(Ok(_)) => "done".to_string(),
        Some(Err(e)) if e.contains("refused") => "refused".to_string(),
        Some(Err(e)) => format!("failed: {}", e.lines().next().unwrap_or_default()),
    };
    let (u, r) = (end(uninstall), end(reinstall));
    let expected = (o.variant == Variant::Real).then_some(FailoverEnd::Done);
    let ok = expected.is_none() || (u == "done" && r == "done");
    let forced_by = uninstall.as_ref().and_then(|r| r.as_ref().ok()).and_then(|x| x.progress.forced_by.clone());
    Some(FailoverSummary { outcome: format!("uninstall {u}, reinstall {r}"), expected, forced_by, error: None, ok })
}

/// A failover's or a failback's error in a summary: its first line, then up to
/// ERROR_LINES_MAX more, indented.
fn push_error(out: &mut String, job: &str, error: Option<&str>) {
    let Some(e) = error else { return };
    let mut lines = e.lines();
    out.push_str(&format!("{job} error: {}\n", lines.next().unwrap_or_default()));
    for l in lines.take(ERROR_LINES_MAX) {
        out.push_str(&format!("  {}\n", l.trim_start()));
    }
}

/// How a failover (or a failback) ended, in `expect.failover`'s words where it has one.
pub(crate) fn end_of(result: Option<&Result<failover::Outcome, String>>) -> String {
    match result {
        None => "unfinished".to_string(),
        Some(Ok(x)) if x.progress.done == Some(failover::step::Step::UnpauseClusters) => "done".to_string(),
        Some(Ok(x)) => format!("stopped after {:?}", x.progress.done),
        // Before `refused`: a finding's words may contain it.
        Some(Err(e)) if e.starts_with("validation failed") => "validation-failed".to_string(),
        Some(Err(e)) if e.contains(": precondition failed: ") => "precondition-failed".to_string(),
        Some(Err(e)) if e.contains("refused") => "refused".to_string(),
        Some(Err(e)) if e.contains("timed out") => "timed-out".to_string(),
        Some(Err(e)) => format!("failed: {}", e.lines().next().unwrap_or_default()),
    }
}

fn end_summary(
    result: Option<&Result<failover::Outcome, String>>,
    variant: Variant,
    expected: FailoverEnd,
) -> FailoverSummary {
    let outcome = end_of(result);
    let forced_by = result.and_then(|r| r.as_ref().ok()).and_then(|x| x.progress.forced_by.clone());
    // A mutant changes how a failover ends by design: only the real code's end is judged.
    let expected = (variant == Variant::Real).then_some(expected);
    let ok = match expected {
        Some(FailoverEnd::Done) => outcome == "done",
        Some(FailoverEnd::Refused) => outcome == "refused",
        Some(FailoverEnd::TimedOut) => outcome == "timed-out",
        Some(FailoverEnd::ValidationFailed) => outcome == "validation-failed",
        Some(FailoverEnd::PreconditionFailed) => outcome == "precondition-failed",
        None => true,
    };
    let error = match result {
        Some(Err(e)) => Some(e.chars().take(ERROR_CHARS_MAX).collect()),
        _ => None,
    };
    FailoverSummary { outcome, expected, forced_by, error, ok }
}

fn abort_summary(s: &Scenario, o: &Observed) -> Option<AbortSummary> {
    if !s.has_abort() {
        return None;
    }
    let outcome = match &o.abort {
        None => "unfinished".to_string(),
        Some(Ok(_)) => "done".to_string(),
        // Too late, or the failover holds the lock: the operator was told no.
        Some(Err(e)) if e.starts_with("cannot abort") || e.starts_with("another orchestrator") => "refused".to_string(),
        Some(Err(e)) => format!("failed: {}", e.lines().next().unwrap_or_default()),
    };
    // As for the failover: a mutant changes how the abort ends by design.
    let expected = (o.variant == Variant::Real).then_some(s.expect.abort);
    let ok = match expected {
        Some(AbortEnd::Done) => outcome == "done",
        Some(AbortEnd::Refused) => outcome == "refused",
        None => true,
    };
    Some(AbortSummary { outcome, expected, ok })
}

/// Judges the verdicts; `command` is how to run this again (for the reproduce line).
pub fn judge(s: &Scenario, o: &Observed, verdicts: Vec<Verdict>, command: &str) -> RunReport {
    let verdicts: Vec<Judged> = verdicts
        .into_iter()
        .map(|v| {
            let expected = expected(s, o.variant, v.invariant);
            let ok = match expected {
                Expected::Hold => v.status != Status::Violated,
                Expected::Fail => v.status == Status::Violated,
                Expected::Unjudged => true,
            };
            Judged { verdict: v, expected, ok }
        })
        .collect();
    let failover = failover_summary(s, o);
    let abort = abort_summary(s, o);
    let failback = failback_summary(s, o);
    let upgrade = upgrade_summary(o);
    let pass = verdicts.iter().all(|j| j.ok)
        && failover.as_ref().is_none_or(|f| f.ok)
        && abort.as_ref().is_none_or(|a| a.ok)
        && failback.as_ref().is_none_or(|f| f.ok)
        && upgrade.as_ref().is_none_or(|u| u.ok);
    RunReport {
        version: REPORT_VERSION,
        scenario: s.name.clone(),
        seed: o.seed,
        variant: o.variant,
        backend: o.backend,
        sim_secs: o.sim_secs,
        trace: o.trace.clone(),
        trace_hash: o.trace_hash.clone(),
        trace_events: o.trace_events,
        verdicts,
        failover,
        abort,
        failback,
        upgrade,
        vm_deletions: o.vm_deletions.len(),
        sync_checkpoint: o.sync.checkpoint,
        source_head: o.source_head,
        pass,
        mutant_has_teeth: o.variant != Variant::Real && s.teeth.contains_key(&o.variant),
        reproduce: format!("{command} --seed {} --variant {}", o.seed, o.variant.name()),
    }
}

impl RunReport {
    /// The verdict of one invariant.
    pub fn status(&self, i: Invariant) -> &Status {
        &self
            .verdicts
            .iter()
            .find(|j| j.verdict.invariant == i)
            .expect("every checked invariant is judged")
            .verdict
            .status
    }

    pub fn summary(&self) -> String {
        let on = match self.backend {
            crate::scenario::Backend::Sim => "",
            crate::scenario::Backend::Etcd => ", on real etcd 3.4 → 3.5",
        };
        let mut out =
            format!("scenario: {} (seed {}, variant {}{on})\n", self.scenario, self.seed, self.variant.name());
        for j in &self.verdicts {
            let (word, note) = match (&j.verdict.status, j.expected) {
                (Status::Held, Expected::Fail) => ("held", "  ← expected to fail"),
                (Status::Held, _) => ("held", ""),
                (Status::Violated, Expected::Fail) => ("VIOLATED", "  (expected: the hazard is shown)"),
                (Status::Violated, Expected::Hold) => ("VIOLATED", "  ← must hold"),
                (Status::Violated, Expected::Unjudged) => ("violated", "  (not judged under this variant)"),
                (Status::NotApplicable(_), Expected::Fail) => ("n/a", "  ← expected to fail"),
                (Status::NotApplicable(_), _) => ("n/a", ""),
            };
            out.push_str(&format!("  {word:<9} {}{note}\n", j.verdict.invariant.name()));
            if let Status::NotApplicable(why) = &j.verdict.status {
                out.push_str(&format!("            {why}\n"));
            }
            for d in &j.verdict.details {
                for l in d.lines() {
                    out.push_str(&format!("            {l}\n"));
                }
            }
        }
        if let Some(f) = &self.failover {
            let exp = f.expected.map(|e| format!(" (expected {})", name_of(&e))).unwrap_or_default();
            out.push_str(&format!("failover: {}{exp}\n", f.outcome));
            if let Some(w) = &f.forced_by {
                out.push_str(&format!("forced by: {w}\n"));
            }
            push_error(&mut out, "failover", f.error.as_deref());
        }
        if let Some(a) = &self.abort {
            let exp = a.expected.map(|e| format!(" (expected {})", name_of(&e))).unwrap_or_default();
            out.push_str(&format!("abort: {}{exp}\n", a.outcome));
        }
        if let Some(f) = &self.failback {
            let exp = f.expected.map(|e| format!(" (expected {})", name_of(&e))).unwrap_or_default();
            out.push_str(&format!("failback: {}{exp}\n", f.outcome));
            push_error(&mut out, "failback", f.error.as_deref());
        }
        if let Some(u) = &self.upgrade {
            out.push_str(&format!("upgrade: {}\n", u.outcome));
        }
        out.push_str(&format!("vm-deletions: {}\n", self.vm_deletions));
        out.push_str(&format!("sync: checkpoint {} of primary head {}\n", self.sync_checkpoint, self.source_head));
        out.push_str(&format!(
            "trace: {} ({} events, sha256 {})\n",
            self.trace.display(),
            self.trace_events,
            self.trace_hash
        ));
        let word = match (self.pass, self.variant, self.mutant_has_teeth) {
            (true, Variant::Real, _) => "PASS",
            (true, _, true) => "PASS (the mutant was caught where the scenario says)",
            (true, _, false) => "PASS (no teeth for this mutant here: every checked invariant held)",
            (false, Variant::Real, _) => "FAIL",
            (false, _, true) => "FAIL (the mutant was not caught as the scenario says)",
            (false, _, false) => "FAIL (no teeth for this mutant here, yet an invariant or the failover's end was off)",
        };
        out.push_str(&format!("verdict: {word}\n"));
        if !self.pass {
            out.push_str(&format!("reproduce with: {}\n", self.reproduce));
        }
        out
    }
}

/// Writes the run's directory (the trace is already there): scenario.yaml, verdicts.json,
/// summary.txt.
pub fn write_dir(dir: &Path, s: &Scenario, r: &RunReport) -> std::io::Result<()> {
    std::fs::write(dir.join("scenario.yaml"), to_yaml(s))?;
    let json = serde_json::to_string_pretty(r).map_err(std::io::Error::other)?;
    std::fs::write(dir.join("verdicts.json"), json + "\n")?;
    std::fs::write(dir.join("summary.txt"), r.summary())
}
