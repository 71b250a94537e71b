//! The invariant checkers: each reads the run's trace (streamed from its JSON-lines file) and
//! the final states the runner collected, and returns a verdict with bounded details. Machine
//! and VM violations carry their cause chain: the trace events about the same workload cluster
//! (a lost key, the GC's failed owner lookup, the deletions it cascaded into), in order.

use std::collections::{BTreeMap, BTreeSet};
use std::io::BufRead;

use serde::Serialize;
use serde_json::Value;
use sim::k8s::{kind, leader};
use sim::platform::{PRIMARY, STANDBY};

use crate::allowance::{Allowance, Deletion, Scale};
use crate::runner::Observed;
use crate::scenario::{Invariant, Scenario};
use crate::timeline::{Act, resolve};

/// Details kept per verdict, and cause-chain events per violation.
const DETAILS_MAX: usize = 10;
const CHAIN_MAX: usize = 12;
/// Trace events kept for cause chains (the rest are streamed past).
const EVENTS_KEPT_MAX: usize = 200_000;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Status {
    Held,
    Violated,
    /// The scenario does not exercise it (e.g. rpo without a failover); the reason.
    NotApplicable(String),
}

#[derive(Debug, Clone, Serialize)]
pub struct Verdict {
    pub invariant: Invariant,
    pub status: Status,
    /// Bounded: what broke it, each with its cause chain, or what was measured.
    pub details: Vec<String>,
}

impl Verdict {
    fn new(invariant: Invariant, problems: Vec<String>, measured: Option<String>) -> Verdict {
        let status = if problems.is_empty() { Status::Held } else { Status::Violated };
        let total = problems.len();
        let mut details: Vec<String> = problems.into_iter().take(DETAILS_MAX).collect();
        if total > DETAILS_MAX {
            details.push(format!("… and {} more", total - DETAILS_MAX));
        }
        details.extend(measured);
        Verdict { invariant, status, details }
    }

    fn na(invariant: Invariant, why: &str) -> Verdict {
        Verdict { invariant, status: Status::NotApplicable(why.into()), details: Vec::new() }
    }
}

/// The trace events a checker needs, read once from the trace file.
/// Where the timeline is: before the failover, after it started, after the failback started
/// (from then on the old primary is the reverse sync's target, and then serves again).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
enum Phase {
    #[default]
    Before,
    Failover,
    Failback,
}

#[derive(Default)]
struct Events {
    /// Deletions of Machines: (host, key) → the first event (marked, deleted or removed).
    machine_deletions: BTreeMap<(String, String), Value>,
    /// (t_ms, serving cluster) from the DNS switches.
    switches: Vec<(u64, String)>,
    regenerated: Vec<Value>,
    /// Primary commits: (revision, key, the timeline's phase then).
    primary_commits: Vec<(i64, String, Phase)>,
    /// Standby commits once the failback started (the standby served until its fence).
    standby_commits_in_failback: Vec<(i64, String)>,
    phase: Phase,
    iaas_creates: Vec<Value>,
    /// The system agent's plan Secret patches (bounded by the run: one per agent period).
    agent_patches: Vec<Value>,
    scales: Vec<Scale>,
    /// Events a cause chain may cite.
    kept: Vec<Value>,
    /// The standby's last commit of the sync's gate, and the sync's checkpoint commits after it
    /// (the first kept; all counted).
    standby_gate_rev: i64,
    /// Revisions at which a fault removed a key on a side behind its API (`lose_key`).
    fault_revs: BTreeSet<(String, i64)>,
    checkpoints_after_gate: Vec<(i64, u64)>,
    checkpoints_after_gate_count: usize,
    /// Keys of the kinds that own Machines, per host: when last written, and whether present.
    owner_keys: BTreeMap<(String, String), (u64, bool)>,
    /// Machine deletions the collector based on its absent-owner cache while that owner was
    /// present on the same host (a poisoned cache): (host, key) → what the report adds.
    poisoned: BTreeMap<(String, String), String>,
    /// Revisions of the standby at which a sync txn committed (each carries its checkpoint).
    standby_sync_revs: BTreeSet<i64>,
    /// The standby's commits of Lease and `masterleases` keys: (revision, key, t_ms).
    standby_lease_commits: Vec<(i64, String, u64)>,
    /// `leader.lost` events.
    leaders_lost: Vec<Value>,
    /// Per plan Secret, the highest generation a host read and where (plans-never-regress).
    plans: BTreeMap<String, PlanRead>,
    /// Successful plan reads, and each plan Secret's first read of a lower generation.
    plan_reads: usize,
    plan_regressions: BTreeMap<String, String>,
}

/// The highest plan generation a host read: on which cluster, when.
struct PlanRead {
    generation: u64,
    cluster: String,
    t_ms: u64,
}

impl Events {
    /// A system agent's read of a plan: a generation below one it read before is a regression
    /// (the host carries out an older plan again).
    fn note_plan(&mut self, v: &Value) {
        let (Some(200), Some(generation), Some(secret)) =
            (v["status"].as_u64(), v["generation"].as_u64(), v["secret"].as_str())
        else {
            return;
        };
        self.plan_reads += 1;
        let (cluster, t_ms) = (v["cluster"].as_str().unwrap_or_default().to_string(), v["t_ms"].as_u64().unwrap_or(0));
        match self.plans.get(secret) {
            Some(seen)
                if generation < seen.generation
                    && !self.plan_regressions.contains_key(secret)
                    && self.plan_regressions.len() < EVENTS_KEPT_MAX =>
            {
                // The first regression of each plan Secret is reported (bounded).
                let what = format!(
                    "plan Secret {secret} went back: generation {} read on {} at t={:.3}s, then {generation} on {cluster} at t={:.3}s",
                    seen.generation,
                    seen.cluster,
                    seen.t_ms as f64 / 1000.0,
                    t_ms as f64 / 1000.0
                );
                self.plan_regressions.insert(secret.to_string(), what);
            }
            Some(seen) if generation <= seen.generation => {}
            _ if self.plans.len() < EVENTS_KEPT_MAX || self.plans.contains_key(secret) => {
                self.plans.insert(secret.to_string(), PlanRead { generation, cluster, t_ms });
            }
            _ => {}
        }
    }

    /// A collector deletion citing its absent-owner cache for an owner that is on this host
    /// now: the cache outlived the owner's absence (owners the cache wrongly remembers).
    fn note_poisoned(&mut self, host: &str, key: &str, v: &Value) {
        if v["by"] != "garbage-collector" || self.poisoned.len() >= EVENTS_KEPT_MAX {
            return;
        }
        let namespace = key.rsplit('/').nth(1).unwrap_or_default();
        let owners = v["why"]["owners"].as_array().map(Vec::as_slice).unwrap_or_default();
        let notes: Vec<String> = owners
            .iter()
            .filter(|o| o["reason"] == "absent-owner-cache")
            .filter_map(|o| {
                let (kind_name, name) = (o["kind"].as_str()?, o["name"].as_str()?);
                let owner_key = kind::Kind::by_name(kind_name)?.key(namespace, name);
                match self.owner_keys.get(&(host.to_string(), owner_key)) {
                    Some((t, true)) => Some(format!(
                        "the absent-owner cache was poisoned: {kind_name} {name} has been on {host} since t={:.3}s",
                        *t as f64 / 1000.0
                    )),
                    _ => None,
                }
            })
            .collect();
        if !notes.is_empty() {
            self.poisoned.insert((host.to_string(), key.to_string()), notes.join("; "));
        }
    }
}

fn read_events(o: &Observed) -> std::io::Result<Events> {
    let file = std::fs::File::open(&o.trace)?;
    let mut ev = Events::default();
    let machines = kind::MACHINE.prefix();
    // Key prefixes, made once: every commit of the trace is matched against them.
    // The kinds whose objects own Machines (what a poisoned cache can name).
    let machine_owners = [kind::MACHINE_SET.prefix(), kind::KUBEADM_CONTROL_PLANE.prefix()];
    let leases = [kind::LEASE.prefix(), leader::MASTERLEASES_PREFIX.to_string()];
    let (gate_key, checkpoint_key) = (sync::target::gate_key(), sync::target::checkpoint_key());
    for line in std::io::BufReader::new(file).lines() {
        let v: Value = serde_json::from_str(&line?).map_err(std::io::Error::other)?;
        let event = v["event"].as_str().unwrap_or_default();
        let host = v["host"].as_str().unwrap_or_default().to_string();
        let key = v["key"].as_str().unwrap_or_default().to_string();
        match event {
            "etcd.commit" => {
                let rev = v["rev"].as_i64().unwrap_or(0);
                if host == STANDBY && key == checkpoint_key && ev.standby_sync_revs.len() < EVENTS_KEPT_MAX {
                    ev.standby_sync_revs.insert(rev);
                }
                if host == STANDBY
                    && leases.iter().any(|p| key.starts_with(p.as_str()))
                    && ev.standby_lease_commits.len() < EVENTS_KEPT_MAX
                {
                    ev.standby_lease_commits.push((rev, key.clone(), v["t_ms"].as_u64().unwrap_or(0)));
                }
                if host == STANDBY && key == gate_key {
                    ev.standby_gate_rev = rev;
                    ev.checkpoints_after_gate.clear();
                    ev.checkpoints_after_gate_count = 0;
                } else if host == STANDBY && key == checkpoint_key {
                    ev.checkpoints_after_gate_count += 1;
                    if ev.checkpoints_after_gate.len() < DETAILS_MAX {
                        ev.checkpoints_after_gate.push((rev, v["t_ms"].as_u64().unwrap_or(0)));
                    }
                }
                if host == PRIMARY {
                    ev.primary_commits.push((rev, key.clone(), ev.phase));
                } else if host == STANDBY && ev.phase == Phase::Failback {
                    ev.standby_commits_in_failback.push((rev, key.clone()));
                }
                if machine_owners.iter().any(|p| key.starts_with(p.as_str())) {
                    let put = v["op"] == "put";
                    let t = v["t_ms"].as_u64().unwrap_or(0);
                    let e = ev.owner_keys.entry((host.clone(), key.clone())).or_insert((t, put));
                    if put != e.1 {
                        *e = (t, put);
                    }
                }
                if v["op"] == "delete" && key.starts_with(&machines) {
                    ev.machine_deletions.entry((host, key)).or_insert_with(|| v.clone());
                }
                continue;
            }
            "k8s.delete" | "k8s.delete.marked" | "k8s.removed" if key.starts_with(&machines) => {
                ev.note_poisoned(&host, &key, &v);
                ev.machine_deletions.entry((host, key)).or_insert_with(|| v.clone());
            }
            "dns.switch" => ev.switches.push((v["t_ms"].as_u64().unwrap_or(0), v["to"].as_str().unwrap_or("").into())),
            "capi.kcp.regenerate-secret" => ev.regenerated.push(v.clone()),
            "fault.lose-key" if ev.fault_revs.len() < EVENTS_KEPT_MAX => {
                if let (Some(side), Some(rev)) = (v["side"].as_str(), v["rev"].as_i64()) {
                    ev.fault_revs.insert((side.to_string(), rev));
                }
            }
            "iaas.create" => ev.iaas_creates.push(v.clone()),
            "leader.lost" if ev.leaders_lost.len() < EVENTS_KEPT_MAX => ev.leaders_lost.push(v.clone()),
            "agent.patch" => {
                ev.note_plan(&v);
                if ev.agent_patches.len() < EVENTS_KEPT_MAX {
                    ev.agent_patches.push(v.clone());
                }
            }
            "timeline.failover" => ev.phase = Phase::Failover,
            "timeline.failback" => ev.phase = Phase::Failback,
            "operator.scale" => ev.scales.push(Scale {
                t_ms: v["t_ms"].as_u64().unwrap_or(0),
                cluster: v["cluster"].as_str().unwrap_or_default().into(),
                from: v["from"].as_u64().unwrap_or(0),
                to: v["replicas"].as_u64().unwrap_or(0),
            }),
            _ => {}
        }
        let cited = event.starts_with("k8s.delete")
            || event.starts_with("gc.")
            || event.starts_with("fault.")
            || event.starts_with("operator.")
            || event.starts_with("iaas.")
            || event.starts_with("capi.")
            || event == "dns.switch"
            || event == "k8s.removed";
        if cited && ev.kept.len() < EVENTS_KEPT_MAX {
            ev.kept.push(v);
        }
    }
    Ok(ev)
}

/// Keys kube-apiserver writes to its etcd itself, below any fence at the API (its compaction
/// key; its `masterleases` key, under an etcd lease): no client's write, never synced.
fn server_own(key: &str) -> bool {
    key == "compact_rev_key" || key.starts_with(leader::MASTERLEASES_PREFIX)
}

/// The workload cluster an object or VM name belongs to (`wc-03-md-0-1` → `wc-03`).
pub fn cluster_of(name: &str) -> String {
    let name = name.strip_prefix("vm-").unwrap_or(name);
    for sep in ["-md-", "-cp-", "-cp"] {
        if let Some(i) = name.find(sep) {
            return name[..i].to_string();
        }
    }
    name.to_string()
}

fn mentions(v: &Value, cluster: &str) -> bool {
    let hit = |s: &str| {
        let last = s.rsplit('/').next().unwrap_or(s);
        let last = last.strip_prefix("vm-").unwrap_or(last);
        last == cluster || last.starts_with(&format!("{cluster}-"))
    };
    ["key", "name", "vm", "cluster"].iter().any(|f| v[*f].as_str().is_some_and(hit))
}

/// Events that concern every cluster on a side rather than one.
fn sidewide(v: &Value) -> bool {
    matches!(v["event"].as_str(), Some("operator.gate" | "capi.gate-open" | "dns.switch"))
}

fn line(v: &Value) -> String {
    let t = v["t_ms"].as_u64().unwrap_or(0) as f64 / 1000.0;
    let what = ["key", "vm", "name"].iter().find_map(|f| v[*f].as_str()).unwrap_or("");
    let mut s = format!("t={t:.3}s {} {} {what}", v["host"].as_str().unwrap_or(""), v["event"].as_str().unwrap_or(""));
    for f in ["by", "controller", "reason", "why"] {
        if !v[f].is_null() {
            s.push_str(&format!(" {f}={}", v[f]));
        }
    }
    s
}

fn chain(ev: &Events, cluster: &str, shown: &mut BTreeSet<String>) -> String {
    if !shown.insert(cluster.to_string()) {
        return format!("    (cause chain of {cluster} as above)");
    }
    // The world's set-up (VMs created at t=0) is not a cause. What acts on every cluster of a
    // side (a gate set or cleared, a controller manager let loose, a DNS switch) is always
    // shown, in its place in time; the cluster's own events up to CHAIN_MAX.
    let (mut out, mut own, mut wide, mut more) = (Vec::new(), 0, 0, 0);
    for v in ev.kept.iter().filter(|v| v["event"] != "iaas.create") {
        if sidewide(v) && wide < CHAIN_MAX {
            wide += 1;
            out.push(format!("    {}", line(v)));
        } else if mentions(v, cluster) && own < CHAIN_MAX {
            own += 1;
            out.push(format!("    {}", line(v)));
        } else if mentions(v, cluster) {
            more += 1;
        }
    }
    if more > 0 {
        out.push(format!("    … {more} more events about {cluster}"));
    }
    out.join("\n")
}

/// What the scripted actions may delete: the timeline's deletes and the scales the trace recorded.
fn allowance(s: &Scenario, ev: &Events) -> Allowance {
    let deletes: Vec<(&'static str, String)> = resolve(s)
        .into_iter()
        .filter_map(|e| match e.act {
            Act::Delete { kind, name, .. } => Some((kind.kind, name)),
            _ => None,
        })
        .collect();
    Allowance::new(deletes.iter().map(|(k, n)| (*k, n.as_str())), &ev.scales)
}

fn serving_at(ev: &Events, t_ms: u64) -> &str {
    ev.switches.iter().rev().find(|(t, _)| *t <= t_ms).map(|(_, to)| to.as_str()).unwrap_or(PRIMARY)
}

/// Evaluates every checked invariant of a run.
pub fn check(s: &Scenario, o: &Observed) -> std::io::Result<Vec<Verdict>> {
    let ev = read_events(o)?;
    let mut allowed = allowance(s, &ev);
    // An abort that undid the failover gives the primary back and resumes the sync: the sync
    // must converge again, and the primary's writes after it are no split brain.
    let aborted = matches!(o.abort, Some(Ok(_)));
    let has_failover = s.failover().is_some() && !aborted;
    let outcome = o.failover.as_ref().and_then(|r| r.as_ref().ok());
    // A failover its preconditions stopped (a platform domain not at the primary) acted on
    // nothing and left the sync running, which must then converge as in a run without one.
    // (A guard's refusal leaves a standby the operator must repair first: not judged.)
    let failover_acted = has_failover && crate::report::end_of(o.failover.as_ref()) != "precondition-failed";
    // A DNS switch by hand before the failover is not the failover's.
    let done = o.failover_progress.as_ref().and_then(|p| p.done).filter(|_| has_failover);
    let failover_switched = done >= Some(failover::step::Step::SwitchDns);
    let mut out = Vec::new();

    // no-machine-deleted
    let mut problems = Vec::new();
    let mut shown = BTreeSet::new();
    let deletions: Vec<Deletion> = ev
        .machine_deletions
        .iter()
        .map(|((host, key), v)| Deletion {
            host: host.clone(),
            t_ms: v["t_ms"].as_u64().unwrap_or(0),
            key: key.clone(),
            name: key.rsplit('/').next().unwrap_or_default().into(),
        })
        .collect();
    for d in allowed.judge(&deletions, |t| serving_at(&ev, t).to_string()) {
        let at = (d.host.clone(), d.key.clone());
        let v = &ev.machine_deletions[&at];
        let c = cluster_of(&d.name);
        let poisoned = ev.poisoned.get(&at).map(|n| format!("\n    {n}")).unwrap_or_default();
        problems.push(format!(
            "Machine {} deleted on {}: {}{poisoned}\n{}",
            d.name,
            d.host,
            line(v),
            chain(&ev, &c, &mut shown)
        ));
    }
    out.push(Verdict::new(Invariant::NoMachineDeleted, problems, None));

    // no-vm-destroyed
    let mut problems = Vec::new();
    let mut shown = BTreeSet::new();
    for d in &o.vm_deletions {
        let serving = serving_at(&ev, d.t_ms);
        let machine = d.vm.id.strip_prefix("vm-").or_else(|| d.vm.id.strip_prefix("host-")).unwrap_or(&d.vm.id);
        if !allowed.machine_explained(machine) || d.by_cluster != serving {
            let what = match d.action {
                sim::iaas::Destruction::Reset => "host reset by a plan",
                sim::iaas::Destruction::Delete => "VM destroyed",
            };
            problems.push(format!(
                "{what}: {} (cluster {}) at t={:.3}s by {}/{} (serving: {serving}) because {}\n{}",
                d.vm.id,
                d.vm.cluster,
                d.t_ms as f64 / 1000.0,
                d.by_cluster,
                d.controller,
                d.why,
                chain(&ev, &d.vm.cluster, &mut shown)
            ));
        }
    }
    for v in ev.iaas_creates.iter().filter(|v| v["t_ms"].as_u64().unwrap_or(0) > 0) {
        let t = v["t_ms"].as_u64().unwrap_or(0);
        let by = v["host"].as_str().unwrap_or_default();
        if by != serving_at(&ev, t) {
            problems.push(format!("IaaS change by the non-serving cluster {by}: {}", line(v)));
        }
    }
    out.push(Verdict::new(Invariant::NoVmDestroyed, problems, None));

    // standby-globals-untouched (and the primary's, which a failback's reverse sync targets)
    let problems = [(STANDBY, PRIMARY, &o.standby_globals), (PRIMARY, STANDBY, &o.primary_globals)]
        .into_iter()
        .flat_map(|(side, other, globals)| {
            globals.iter().filter_map(move |(key, (before, after))| match after {
                None => Some(format!("{key}: the {side}'s own object is gone")),
                Some(a) if a.uid != before.uid => Some(format!(
                    "{key}: overwritten on the {side} (uid {} → {}, the {other}'s copy)",
                    before.uid, a.uid
                )),
                Some(a) if a.deleting && !before.deleting => Some(format!("{key}: marked for deletion on the {side}")),
                Some(_) => None,
            })
        })
        .collect();
    out.push(Verdict::new(Invariant::StandbyGlobalsUntouched, problems, None));

    // converged-after-heal
    out.push(if failover_acted {
        Verdict::na(Invariant::ConvergedAfterHeal, "the failover ends the sync by design")
    } else {
        let mut problems = Vec::new();
        let d = &o.diff;
        for (what, keys) in [("missed", &d.missed), ("stale", &d.stale), ("surplus", &d.surplus)] {
            problems.extend(keys.iter().map(|k| format!("{what} at the end: {k}")));
        }
        let bound_ms = (s.expect.converge_s_per_1k_keys * (o.keys_in_scope as f64 / 1000.0).max(1.0) * 1000.0) as u64;
        let measured = match o.caught_up_ms {
            Some(t) => {
                let took = t.saturating_sub(o.last_heal_ms);
                if took > bound_ms {
                    problems.push(format!("caught up {took} ms after the last heal, bound {bound_ms} ms"));
                }
                format!("caught up {took} ms after the last heal (bound {bound_ms} ms, {} keys)", o.keys_in_scope)
            }
            None => {
                problems.push("never caught up after the last heal".into());
                String::new()
            }
        };
        Verdict::new(Invariant::ConvergedAfterHeal, problems, Some(measured).filter(|m| !m.is_empty()))
    });

    // no-dependent-before-owner
    // What the observer did not see cannot pass: it says which revisions.
    let problems = o
        .orphaned
        .iter()
        .map(|v| {
            format!("{} landed at standby revision {} before its owner uid {}", v.key, v.revision, v.missing_owner_uid)
        })
        .chain(o.unobserved.iter().map(|(a, b)| {
            let to = if *b == i64::MAX { "the end".to_string() } else { b.to_string() };
            format!("standby revisions {a} to {to} were not observed (compacted while the observer was away)")
        }))
        .collect();
    out.push(Verdict::new(Invariant::NoDependentBeforeOwner, problems, None));

    // secrets-readable-on-standby
    let problems = o.unreadable_on_standby.iter().map(|k| format!("{k}: the standby's key cannot open it")).collect();
    out.push(Verdict::new(Invariant::SecretsReadableOnStandby, problems, None));

    // no-split-brain-write and rpo
    // R from the progress the orchestrator persisted (a refused or crashed run has it too).
    let r = o.failover_progress.as_ref().and_then(|p| p.source_revision);
    // From the failback on, the old primary's commits are the reverse sync's and then its own
    // as the serving cluster again. A key a fault removed behind the API (`lose_key`: etcdctl,
    // a restore tool) is no client's write: the fence, at the API, cannot refuse it, and no
    // client lost it.
    let by_fault = |rev: i64| ev.fault_revs.contains(&(PRIMARY.to_string(), rev));
    let after_r: Vec<&(i64, String, Phase)> = match r {
        Some(r) => ev
            .primary_commits
            .iter()
            .filter(|(rev, k, phase)| *rev > r && !server_own(k) && *phase < Phase::Failback && !by_fault(*rev))
            .collect(),
        None => Vec::new(),
    };
    // A commit after R made before the failover started is a lost write of a primary that died
    // before the sync applied it (the RPO's), not a split brain: a planned failover reads R
    // after it started, an unplanned one after the primary was lost.
    let mut split: Vec<String> = after_r
        .iter()
        .filter(|(_, _, phase)| *phase == Phase::Failover)
        .map(|(rev, k, _)| format!("the old primary committed {k} at revision {rev} > R={}", r.unwrap_or(0)))
        .collect();
    // The failback fences the serving cluster at its own R: nothing commits there after it.
    if let Some(rb) = o.failback_progress.as_ref().and_then(|p| p.source_revision) {
        split.extend(
            ev.standby_commits_in_failback.iter().filter(|(rev, k)| *rev > rb && !server_own(k)).map(|(rev, k)| {
                format!("the fenced {STANDBY} committed {k} at revision {rev} > the failback's R={rb}")
            }),
        );
    }
    out.push(match r {
        None if aborted => Verdict::na(Invariant::NoSplitBrainWrite, "the abort gave the primary back"),
        None => Verdict::na(Invariant::NoSplitBrainWrite, "no failover fenced the primary"),
        Some(_) => Verdict::new(Invariant::NoSplitBrainWrite, split, None),
    });
    out.push(match outcome {
        Some(x) if x.progress.done.is_some() && x.report.is_some() => {
            let missed = x.report.as_ref().map(|r| r.missed.count).unwrap_or(0);
            let lost: BTreeSet<&str> = after_r.iter().map(|(_, k, _)| k.as_str()).collect();
            let rpo = missed + lost.len() as u64;
            let problems = if rpo > s.expect.rpo_keys_max {
                vec![format!(
                    "RPO {rpo} keys ({missed} missed at R, {} written after R), target {}",
                    lost.len(),
                    s.expect.rpo_keys_max
                )]
            } else {
                Vec::new()
            };
            let known = match (x.progress.source_known, x.progress.source_revision) {
                // What the orchestrator could know when it took R from the sync alone.
                (Some(k), Some(r)) => format!(" (R={r}; the sync had seen the lost primary up to {k})"),
                _ => String::new(),
            };
            Verdict::new(Invariant::Rpo, problems, Some(format!("RPO {rpo} keys{known}")))
        }
        _ => Verdict::na(Invariant::Rpo, "no completed failover"),
    });
    out.push(match outcome {
        Some(x) if x.progress.done == Some(failover::step::Step::UnpauseClusters) => {
            let rto_ms = x.progress.step_ms.last().map(|(_, ms)| *ms).unwrap_or(0);
            let bound_s = s.expect.rto_s_max.unwrap_or(s.topology.dns_ttl_s + 60);
            let problems =
                if rto_ms > bound_s * 1000 { vec![format!("RTO {rto_ms} ms > {bound_s} s")] } else { Vec::new() };
            Verdict::new(Invariant::Rto, problems, Some(format!("RTO {rto_ms} ms (bound {bound_s} s)")))
        }
        _ => Verdict::na(Invariant::Rto, "no completed failover"),
    });

    // cluster-secrets-intact
    // A KCP making the Secrets of a cluster created during the run is generation, not
    // regeneration: only clusters whose Secrets existed before count.
    let existed: BTreeSet<String> =
        o.cluster_secrets_before.keys().map(|k| cluster_of(k.rsplit('/').next().unwrap_or_default())).collect();
    let mut problems: Vec<String> = ev
        .regenerated
        .iter()
        .filter(|v| v["cluster"].as_str().is_some_and(|c| existed.contains(c)))
        .map(|v| format!("regenerated: {} {}", line(v), v["secret"].as_str().unwrap_or_default()))
        .collect();
    for (key, before) in &o.cluster_secrets_before {
        let name = key.rsplit('/').next().unwrap_or_default();
        if allowed.cluster_deleted(&cluster_of(name)) {
            continue;
        }
        for side in [sim::platform::PRIMARY, sim::platform::STANDBY] {
            match o.cluster_secrets_after.get(&(side.to_string(), key.clone())) {
                Some(a) if a.uid != before.uid => {
                    problems.push(format!("{key} on {side}: uid {} → {}", before.uid, a.uid))
                }
                None if side == PRIMARY => problems.push(format!("{key} gone from the primary")),
                _ => {}
            }
        }
    }
    out.push(Verdict::new(Invariant::ClusterSecretsIntact, problems, None));
    out.push(agent_token(&ev, failover_switched));
    out.push(sync_writes_after_uninstall(&ev, o));
    out.push(leases_own(s, &ev));
    out.push(plans_never_regress(s, &ev));
    Ok(out)
}

/// plans-never-regress (bare metal): a host's plan is carried out by its system agent from
/// whichever cluster the platform domain points to; the generation it reads from its plan
/// Secret must never go below one it read before — after a failover or failback a stale copy
/// makes the host apply an old plan again (or undo a reset it was given).
fn plans_never_regress(s: &Scenario, ev: &Events) -> Verdict {
    let inv = Invariant::PlansNeverRegress;
    if s.topology.provider != crate::scenario::Provider::Baremetal {
        return Verdict::na(inv, "plans are carried out by bare-metal hosts (provider: vm)");
    }
    if ev.plan_reads == 0 {
        return Verdict::na(inv, "no host read its plan");
    }
    let highest = ev.plans.values().map(|p| p.generation).max().unwrap_or(0);
    let measured =
        format!("{} plan reads of {} plan Secrets, generations up to {highest}", ev.plan_reads, ev.plans.len());
    Verdict::new(inv, ev.plan_regressions.values().cloned().collect(), Some(measured))
}

/// standby-leases-own: the standby's controller managers lead with their own Leases and its
/// API server keeps its own `masterleases` key — no sync txn writes either there (a copied
/// Lease, renewed on the primary every two seconds, keeps the standby's managers from leading;
/// a copied masterlease sends its in-cluster clients to the primary), and no manager of the
/// standby loses its leadership to a holder of another cluster.
fn leases_own(s: &Scenario, ev: &Events) -> Verdict {
    let inv = Invariant::StandbyLeasesOwn;
    if !s.topology.leader_election {
        return Verdict::na(inv, "the world runs no leader election (topology.leader_election)");
    }
    let secs = |t: u64| t as f64 / 1000.0;
    let written = ev.standby_lease_commits.iter().filter(|(rev, _, _)| ev.standby_sync_revs.contains(rev)).map(
        |(rev, key, t)| format!("t={:.3}s {key} written on the {STANDBY} by a sync txn at revision {rev}", secs(*t)),
    );
    let own = format!("{STANDBY}/");
    let lost = ev
        .leaders_lost
        .iter()
        .filter(|v| v["host"] == STANDBY && v["holder"].as_str().is_some_and(|h| !h.starts_with(&own)))
        .map(|v| {
            format!(
                "t={:.3}s the {STANDBY}'s {} lost its leadership: its Lease names {}",
                secs(v["t_ms"].as_u64().unwrap_or(0)),
                v["identity"].as_str().unwrap_or_default(),
                v["holder"].as_str().unwrap_or_default()
            )
        });
    let problems: Vec<String> = lost.chain(written).collect();
    let leases = ev.standby_lease_commits.len();
    Verdict::new(inv, problems, Some(format!("{leases} Lease and masterleases commits on the {STANDBY}")))
}

/// no-sync-write-after-uninstall: once the sync's gate on the standby says uninstalled or
/// cleared, no sync txn commits there — every sync txn carries its checkpoint and compares the
/// gate it started under, so a sync process that outlived its uninstall (a zombie) is refused.
/// Judged on the gate's last commit: a reinstall's new epoch starts a new judgement.
fn sync_writes_after_uninstall(ev: &Events, o: &Observed) -> Verdict {
    let inv = Invariant::NoSyncWriteAfterUninstall;
    let state = match &o.standby_gate {
        Some(g) if g.state != sync::target::GateState::Syncing => g.state,
        Some(_) => return Verdict::na(inv, "the sync's gate on the standby still lets it write"),
        None => return Verdict::na(inv, "the standby has no sync gate"),
    };
    let problems = ev
        .checkpoints_after_gate
        .iter()
        .map(|(rev, t)| {
            format!(
                "t={:.3}s a sync txn committed on the {STANDBY} at revision {rev}, after its gate was {state:?} at revision {}",
                *t as f64 / 1000.0,
                ev.standby_gate_rev
            )
        })
        .chain((ev.checkpoints_after_gate_count > DETAILS_MAX).then(|| {
            format!("… {} sync txns in all", ev.checkpoints_after_gate_count)
        }))
        .collect();
    Verdict::new(inv, problems, Some(format!("the gate has been {state:?} since revision {}", ev.standby_gate_rev)))
}

/// agent-token-works-after-failover (seed 000's shared token): once a failover pointed the
/// platform domain at the standby, the token the hosts received from the primary must still
/// authenticate and be authorized for their plan Secrets there. Every refusal (401, 403) fails
/// it, with why; a run in which the agent never reached the standby after the switch says so
/// instead of passing.
fn agent_token(ev: &Events, failover_switched: bool) -> Verdict {
    let inv = Invariant::AgentTokenWorksAfterFailover;
    // The failover's switch is the last one to the standby (an operator's may come first).
    let switched = ev.switches.iter().rev().find(|(_, to)| to == STANDBY).map(|(t, _)| *t);
    let Some(t_switch) = switched.filter(|_| failover_switched) else {
        return Verdict::na(inv, "no failover pointed the platform domain at the standby");
    };
    let t = |v: &Value| v["t_ms"].as_u64().unwrap_or(0);
    let refused: Vec<String> = ev
        .agent_patches
        .iter()
        .filter(|v| matches!(v["status"].as_u64(), Some(401 | 403)))
        .map(|v| {
            format!(
                "t={:.3}s {} answered {} to the agent's patch of {}: {}",
                t(v) as f64 / 1000.0,
                v["cluster"].as_str().unwrap_or_default(),
                v["status"],
                v["secret"].as_str().unwrap_or_default(),
                v["reason"].as_str().unwrap_or_default()
            )
        })
        .collect();
    let on_standby = ev.agent_patches.iter().filter(|v| t(v) >= t_switch && v["cluster"] == STANDBY).count();
    if refused.is_empty() && on_standby == 0 {
        return Verdict::na(
            inv,
            "the agent never reached the standby after the switch (a DNS TTL longer than the run?)",
        );
    }
    let ok = ev.agent_patches.iter().filter(|v| t(v) >= t_switch && v["cluster"] == STANDBY && v["status"] == 200);
    let measured =
        format!("{} of the agent's {on_standby} patches on the {STANDBY} after the switch succeeded", ok.count());
    Verdict::new(inv, refused, Some(measured))
}
