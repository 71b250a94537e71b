//! Which Machine deletions a scenario's own actions explain (no-machine-deleted, no-vm-destroyed).
//!
//! A scale-down explains as many worker Machines of its cluster as it lowers the replicas by,
//! deleted on the cluster serving at the time, not before it; a scripted delete of a Machine
//! explains that Machine; a scripted delete of any other object of a workload cluster (its
//! Cluster, MachineDeployment, …) explains all of that cluster's Machines. A deletion on the
//! non-serving cluster is explained only as the sync's copy of an explained one. Everything else
//! — a control-plane Machine during a scale-down, one worker more than the replicas went down
//! by, a deletion before the scale — is a violation: a whole-cluster exemption would hide a GC
//! cascade that happens to hit a cluster the operator was scaling.

use std::collections::{BTreeMap, BTreeSet};

use crate::invariants::cluster_of;

/// A scale of a MachineDeployment as the trace recorded it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scale {
    pub t_ms: u64,
    pub cluster: String,
    pub from: u64,
    pub to: u64,
}

/// A Machine deletion: where, when, which Machine (its etcd key, and its name).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deletion {
    pub host: String,
    pub t_ms: u64,
    pub key: String,
    pub name: String,
}

#[derive(Debug, Default)]
struct Budget {
    workers: u64,
    from_ms: u64,
}

#[derive(Debug, Default)]
pub struct Allowance {
    /// Workload clusters a scripted delete of one of their non-Machine objects opens entirely.
    whole: BTreeSet<String>,
    /// Machines deleted by name.
    named: BTreeSet<String>,
    /// Per cluster: worker Machines the scale-downs may remove, from the first one on.
    budgets: BTreeMap<String, Budget>,
    /// Machines whose deletion on the serving cluster was explained (filled by `judge`).
    explained: BTreeSet<String>,
}

impl Allowance {
    /// `deletes`: the scripted deletes (kind, name); `scales`: the scales the trace recorded.
    pub fn new<'a>(deletes: impl IntoIterator<Item = (&'a str, &'a str)>, scales: &[Scale]) -> Allowance {
        let mut a = Allowance::default();
        for (kind, name) in deletes {
            if kind == sim::k8s::kind::MACHINE.kind {
                a.named.insert(name.to_string());
            } else {
                a.whole.insert(cluster_of(name));
            }
        }
        for s in scales.iter().filter(|s| s.to < s.from) {
            let b = a.budgets.entry(s.cluster.clone()).or_insert(Budget { workers: 0, from_ms: s.t_ms });
            b.workers += s.from - s.to;
            b.from_ms = b.from_ms.min(s.t_ms);
        }
        a
    }

    fn scripted(&self, name: &str) -> bool {
        self.named.contains(name) || self.whole.contains(&cluster_of(name))
    }

    /// The deletions no scripted action explains. `serving` names the cluster serving at a time.
    /// The serving cluster's deletions are judged first, in time order, so each scale-down's
    /// budget goes to the earliest deletions; the other side's then count as copies.
    pub fn judge<'d>(&mut self, deletions: &'d [Deletion], serving: impl Fn(u64) -> String) -> Vec<&'d Deletion> {
        let mut order: Vec<&Deletion> = deletions.iter().collect();
        order.sort_by(|a, b| (a.t_ms, &a.name, &a.host).cmp(&(b.t_ms, &b.name, &b.host)));
        let (on_serving, elsewhere): (Vec<&Deletion>, Vec<&Deletion>) =
            order.into_iter().partition(|d| d.host == serving(d.t_ms));
        let mut unexplained = Vec::new();
        for d in on_serving {
            let cluster = cluster_of(&d.name);
            let worker = d.name.starts_with(&format!("{cluster}-md-"));
            if self.scripted(&d.name) {
                self.explained.insert(d.name.clone());
                continue;
            }
            match self.budgets.get_mut(&cluster).filter(|b| worker && d.t_ms >= b.from_ms && b.workers > 0) {
                Some(b) => {
                    b.workers -= 1;
                    self.explained.insert(d.name.clone());
                }
                None => unexplained.push(d),
            }
        }
        unexplained.extend(elsewhere.into_iter().filter(|d| !self.machine_explained(&d.name)));
        unexplained.sort_by(|a, b| (a.t_ms, &a.name).cmp(&(b.t_ms, &b.name)));
        unexplained
    }

    /// Whether a scripted delete removes the whole workload cluster (its Secrets included).
    pub fn cluster_deleted(&self, cluster: &str) -> bool {
        self.whole.contains(cluster)
    }

    /// Whether a Machine's deletion (and so its VM's) was explained; call after `judge`.
    pub fn machine_explained(&self, name: &str) -> bool {
        self.explained.contains(name) || self.scripted(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn del(host: &str, t_ms: u64, name: &str) -> Deletion {
        Deletion { host: host.into(), t_ms, key: format!("/registry/machines/{name}"), name: name.into() }
    }

    fn scale(t_ms: u64, from: u64, to: u64) -> Scale {
        Scale { t_ms, cluster: "wc-00".into(), from, to }
    }

    fn names(v: Vec<&Deletion>) -> Vec<String> {
        v.into_iter().map(|d| format!("{}@{}", d.name, d.host)).collect()
    }

    const PRIMARY: &str = "primary";

    #[test]
    fn a_scale_down_explains_as_many_workers_as_it_lowers_by() {
        let mut a = Allowance::new([], &[scale(1000, 3, 1)]);
        let d = [
            del(PRIMARY, 2000, "wc-00-md-0-2"),
            del(PRIMARY, 2100, "wc-00-md-0-1"),
            del(PRIMARY, 2200, "wc-00-md-0-0"),
            del(PRIMARY, 2300, "wc-00-cp-0"),
            del(PRIMARY, 2300, "wc-01-md-0-0"),
        ];
        let bad = names(a.judge(&d, |_| PRIMARY.into()));
        assert_eq!(bad, ["wc-00-md-0-0@primary", "wc-00-cp-0@primary", "wc-01-md-0-0@primary"]);
        assert!(a.machine_explained("wc-00-md-0-2") && !a.machine_explained("wc-00-md-0-0"));
    }

    #[test]
    fn a_deletion_before_the_scale_is_not_explained_by_it() {
        let mut a = Allowance::new([], &[scale(5000, 3, 2)]);
        let bad = names(a.judge(&[del(PRIMARY, 4999, "wc-00-md-0-2")], |_| PRIMARY.into()));
        assert_eq!(bad, ["wc-00-md-0-2@primary"]);
    }

    #[test]
    fn the_standby_may_only_copy_explained_deletions() {
        let mut a = Allowance::new([], &[scale(1000, 2, 1)]);
        let d = [
            del("standby", 1500, "wc-00-md-0-1"),
            del(PRIMARY, 1200, "wc-00-md-0-1"),
            del("standby", 1600, "wc-00-md-0-0"),
        ];
        let bad = names(a.judge(&d, |_| PRIMARY.into()));
        assert_eq!(bad, ["wc-00-md-0-0@standby"], "the standby's own deletion is no copy");
    }

    #[test]
    fn a_scale_up_or_a_deletion_on_the_non_serving_side_explains_nothing() {
        let mut a = Allowance::new([], &[scale(1000, 1, 3)]);
        let bad = names(a.judge(&[del(PRIMARY, 2000, "wc-00-md-0-0")], |_| PRIMARY.into()));
        assert_eq!(bad, ["wc-00-md-0-0@primary"]);
        let mut a = Allowance::new([], &[scale(1000, 3, 1)]);
        let bad = names(a.judge(&[del(PRIMARY, 2000, "wc-00-md-0-0")], |_| "standby".into()));
        assert_eq!(bad, ["wc-00-md-0-0@primary"], "after a switch the old primary's deletion is unexplained");
    }

    #[test]
    fn scripted_deletes_explain_a_machine_or_a_whole_cluster() {
        let mut a = Allowance::new([("Machine", "wc-00-cp-0"), ("Cluster", "wc-01")], &[]);
        let d = [del(PRIMARY, 1, "wc-00-cp-0"), del(PRIMARY, 1, "wc-00-md-0-0"), del(PRIMARY, 1, "wc-01-cp-0")];
        assert_eq!(names(a.judge(&d, |_| PRIMARY.into())), ["wc-00-md-0-0@primary"]);
    }
}
