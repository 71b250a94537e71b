//! The guard: the sync is uninstalled and the gate cleared only on a pinned check that reports
//! nothing missed, surplus, stale, held owner-pending, undecryptable or dangling. A fresh check
//! after the gate is cleared would see the standby's own writes and never pass, so both guards
//! decide on the one pinned check.

use sync::check::Report;

/// Keys the refusal lists per category (the report counts them all).
pub const KEYS_SHOWN_MAX: usize = 20;

/// Why a guard refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub text: String,
}

/// Whether `report` lets a failover past the guard; with `force`, anything passes and the
/// caller records who forced it.
pub fn decide(report: &Report, force: Option<&str>) -> Result<(), Refusal> {
    if report.is_clean() || force.is_some() {
        return Ok(());
    }
    Err(Refusal { text: refusal_text(report) })
}

/// The refusal: each non-empty category with a bounded key list, and the remedy.
pub fn refusal_text(r: &Report) -> String {
    let mut out = format!(
        "refused: the standby is not consistent with the primary (check pinned at source {:?}, target {})\n",
        r.source_revision, r.target_revision
    );
    let cats = [
        ("missed", &r.missed),
        ("surplus", &r.surplus),
        ("stale", &r.stale),
        ("held", &r.held),
        ("undecryptable", &r.undecryptable),
        ("dangling", &r.dangling),
    ];
    for (name, l) in cats {
        if l.count == 0 {
            continue;
        }
        out.push_str(&format!("  {name}: {}\n", l.count));
        for k in l.keys.iter().take(KEYS_SHOWN_MAX) {
            out.push_str(&format!("    {k}\n"));
        }
        if l.count as usize > KEYS_SHOWN_MAX {
            out.push_str(&format!("    … and {} more\n", l.count as usize - KEYS_SHOWN_MAX));
        }
    }
    out.push_str(
        "remedy: resume the sync and let it converge (or resync), then run the failover again; \
         `--force WHO` goes past the guard and is recorded in the audit trail and every report\n",
    );
    out
}
