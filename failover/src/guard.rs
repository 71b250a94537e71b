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
    let mut out = match r.source_revision {
        Some(s) => format!(
            "refused: the standby is not consistent with the primary (check pinned at source {s}, target {})\n",
            r.target_revision
        ),
        None => format!(
            "refused: the standby is not consistent on its own (the primary is lost; check of the standby \
             alone at revision {})\n",
            r.target_revision
        ),
    };
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
    out.push_str(match r.source_revision {
        Some(_) => "remedy: resume the sync and let it converge (or resync), then run the failover again; ",
        None => {
            "remedy: restore the missing owners on the standby (from a backup of the primary), then run the \
                 failover again; "
        }
    });
    out.push_str("`--force WHO` goes past the guard and is recorded in the audit trail and every report\n");
    out
}

#[cfg(test)]
mod tests {
    use sync::check::{Listed, Report};

    use super::*;

    fn dangling(source_revision: Option<i64>) -> Report {
        let keys = vec!["/registry/cluster.x-k8s.io/machines/ns/m -> uid".to_string()];
        Report { source_revision, target_revision: 7, dangling: Listed { count: 1, keys }, ..Report::default() }
    }

    #[test]
    fn a_check_of_the_standby_alone_refuses_with_its_own_remedy() {
        let text = decide(&dangling(None), None).expect_err("dangling refuses").text;
        assert!(text.contains("the primary is lost") && text.contains("revision 7"), "{text}");
        assert!(text.contains("restore the missing owners") && text.contains("machines/ns/m"), "{text}");
        let text = decide(&dangling(Some(5)), None).expect_err("dangling refuses").text;
        assert!(text.contains("pinned at source 5, target 7") && text.contains("resume the sync"), "{text}");
        assert!(decide(&dangling(None), Some("ops")).is_ok(), "forced");
        assert!(decide(&Report::default(), None).is_ok(), "clean");
    }
}
