//! The world's control-plane model behaves as the real platform does where Machine safety
//! depends on it. Each assertion is one a wrong model fails (see the comments).

use std::time::Duration;

use sim::k8s::capi::ControllerGate;
use sim::k8s::{Object, kind};
use sim::platform::{Action, PRIMARY, Platform, PlatformConfig, STANDBY};
use sim::topology::{NS, Topology};
use sim::world::Step;

const GATE_KEY: &str = "/test/gate";

fn gate_open(v: Option<&[u8]>) -> bool {
    v == Some(b"open")
}

fn config(seed: u64, secs: u64) -> PlatformConfig {
    PlatformConfig {
        seed,
        sim_secs: secs,
        topology: Topology::vm(2, 3),
        standby_gate: Some(ControllerGate { key: GATE_KEY.into(), open: gate_open }),
        writes_per_s: 0.5,
        ..PlatformConfig::default()
    }
}

fn decode(kvs: &[(Vec<u8>, Vec<u8>)], p: &Platform, side: &str) -> Vec<Object> {
    let api = &p.side(side).api;
    kvs.iter()
        .filter(|(k, _)| k.starts_with(b"/registry/"))
        .filter_map(|(k, v)| api.decode(&String::from_utf8_lossy(k), v).ok())
        .collect()
}

fn machines(p: &Platform, side: &str) -> Vec<Object> {
    let objs = decode(&p.side(side).etcd.dump(), p, side);
    objs.into_iter().filter(|o| o.kind == &kind::MACHINE).collect()
}

#[test]
fn gc_deletes_an_orphan_and_only_an_orphan() {
    let (p, mut sim) = Platform::build(config(3, 60)).expect("world builds");
    let before: Vec<String> = machines(&p, PRIMARY).iter().map(|m| m.name().to_string()).collect();
    let steps = vec![Step::new(Duration::from_secs(10), |_| {
        p.act(Action::Delete { side: PRIMARY.into(), kind: &kind::MACHINE_SET, name: "wc-00-md-0".into() })
    })];
    p.run(&mut sim, steps).expect("runs");
    // The orphans: wc-00's two workers (owned by the deleted MachineSet). The MachineDeployment
    // makes a new MachineSet whose new Machines replace them.
    let deleted: Vec<&String> =
        before.iter().filter(|n| !machines(&p, PRIMARY).iter().any(|m| m.name() == n.as_str())).collect();
    assert_eq!(deleted, ["wc-00-md-0-0", "wc-00-md-0-1"], "exactly the orphaned Machines go");
    let mut vms: Vec<String> = p.iaas.deletions().iter().map(|d| d.vm.id.clone()).collect();
    vms.sort();
    assert_eq!(vms, ["vm-wc-00-md-0-0", "vm-wc-00-md-0-1"], "and exactly their VMs");
    let now = machines(&p, PRIMARY);
    let replacements = now
        .iter()
        .filter(|m| {
            m.label("cluster.x-k8s.io/cluster-name") == Some("wc-00") && m.label("cluster.x-k8s.io/set-name").is_some()
        })
        .count();
    assert_eq!(replacements, 2, "the MachineDeployment's new MachineSet scaled back to 2");
    assert!(now.iter().all(|m| !m.deleting()), "nothing else is being deleted");
}

/// Copies one key from the primary to the standby, raw, as a sync would.
fn copy(p: &Platform, key: &str) {
    let v = p.primary.etcd.get(key.as_bytes()).expect("key on primary");
    p.standby.etcd.seed(&[(key.as_bytes().to_vec(), v)]);
}

#[test]
fn a_machine_synced_before_its_machineset_is_deleted_by_the_standby_gc_and_its_vm_when_the_gate_clears() {
    let m = kind::MACHINE.key(NS, "wc-00-md-0-0");
    let infra = kind::DCS_MACHINE.key(NS, "wc-00-md-0-0");
    let probe = std::rc::Rc::new(std::cell::RefCell::new(None));
    let (p, mut sim) = Platform::build(config(4, 60)).expect("world builds");
    let steps = vec![
        // The Machine and its DCSMachine arrive; the MachineSet does not (a missed key).
        Step::new(Duration::from_secs(5), |_| {
            copy(&p, &m);
            copy(&p, &infra);
        }),
        Step::new(Duration::from_secs(40), |_| {
            p.act(Action::PutRaw { side: STANDBY.into(), key: GATE_KEY.into(), value: Some(b"open".to_vec()) })
        }),
    ];
    let standby = p.standby.clone();
    let seen = probe.clone();
    let mut steps = steps;
    steps.push(Step::new(Duration::from_secs(30), move |_| {
        *seen.borrow_mut() = standby.etcd.get(kind::MACHINE.key(NS, "wc-00-md-0-0").as_bytes());
    }));
    p.run(&mut sim, steps).expect("runs");
    // Before the gate opened: the GC had marked it (deletionTimestamp, finalizer held) — a model
    // whose GC waited for the gate, or looked owners up in its own cache only, fails here.
    let at_30 = probe.borrow().clone().expect("the Machine is still there at 30 s (its finalizer holds it)");
    let o = p.standby.api.decode(&kind::MACHINE.key(NS, "wc-00-md-0-0"), &at_30).expect("decodes");
    assert!(o.deleting(), "the standby GC set a deletionTimestamp on the Machine whose owner it could not find");
    // The trace keeps the cause: which controller, which owner lookup failed.
    let cause = p
        .trace
        .lines()
        .into_iter()
        .find(|l| l.contains("\"k8s.delete.marked\"") && l.contains("wc-00-md-0-0\""))
        .expect("the Machine's deletion is traced");
    assert!(cause.contains("\"by\":\"garbage-collector\"") && cause.contains("absent-owner-cache"), "{cause}");
    assert!(cause.contains("\"kind\":\"MachineSet\""), "the missing owner is named: {cause}");
    // ... and the cache entry came from the virtual owner's live lookup finding nothing.
    let lookup = p.trace.lines().into_iter().find(|l| l.contains("\"gc.owner-absent\"")).expect("the lookup is traced");
    assert!(lookup.contains("\"name\":\"wc-00-md-0\"") && lookup.contains("lookup-not-found"), "{lookup}");
    assert!(
        p.iaas.deletions().iter().all(|d| d.by_cluster != STANDBY || d.t_ms >= 40_000),
        "no VM deleted while the gate was set"
    );
    // After the gate opened: the standby's CAPI controllers finished the deletion and took the VM.
    let vm = p.iaas.deletions();
    assert_eq!(vm.len(), 1, "one VM deleted: {vm:?}");
    assert_eq!((vm[0].vm.id.as_str(), vm[0].by_cluster.as_str()), ("vm-wc-00-md-0-0", STANDBY));
    assert!(machines(&p, STANDBY).iter().all(|o| o.name() != "wc-00-md-0-0"));
    assert_eq!(machines(&p, PRIMARY).len(), 2 * 3 + 3, "the primary lost nothing");
}

#[test]
fn a_consistent_copy_keeps_every_vm_when_the_gate_clears() {
    // The counterpart of the test above: the same world with the owner chain copied first.
    let mut cfg = config(4, 60);
    cfg.standby_preloaded = true;
    let (p, mut sim) = Platform::build(cfg).expect("world builds");
    let steps = vec![Step::new(Duration::from_secs(20), |_| {
        p.act(Action::PutRaw { side: STANDBY.into(), key: GATE_KEY.into(), value: Some(b"open".to_vec()) })
    })];
    p.run(&mut sim, steps).expect("runs");
    assert_eq!(p.iaas.deletions(), vec![], "a consistent standby deletes nothing");
    assert!(machines(&p, STANDBY).iter().all(|m| !m.deleting()));
}

#[test]
fn dns_switch_reaches_agents_only_after_their_ttl_and_a_reconnect() {
    let mut cfg = config(5, 90);
    cfg.dns_ttl_s = 30;
    let log = std::rc::Rc::new(std::cell::RefCell::new(Vec::new()));
    let (p, mut sim) = Platform::build(cfg).expect("world builds");
    let pr = &p;
    let served = |p: &Platform| -> Vec<String> { p.agents_served.iter().map(|r| r.borrow().clone()).collect() };
    let (l1, l2, l3) = (log.clone(), log.clone(), log.clone());
    let steps = vec![
        Step::new(Duration::from_secs(15), |_| {
            p.dns.switch(STANDBY, "test");
        }),
        // Established connections stay on the primary.
        Step::new(Duration::from_secs(22), move |_| l1.borrow_mut().push(served(pr))),
        // A restart before the TTL ran out re-resolves from the cache: still the primary.
        Step::new(Duration::from_secs(23), |_| p.act(Action::RestartAgents)),
        Step::new(Duration::from_secs(29), move |_| l2.borrow_mut().push(served(pr))),
        // After the TTL, a restart reaches the standby.
        Step::new(Duration::from_secs(60), |_| p.act(Action::RestartAgents)),
        Step::new(Duration::from_secs(75), move |_| l3.borrow_mut().push(served(pr))),
    ];
    p.run(&mut sim, steps).expect("runs");
    let log = log.borrow();
    assert_eq!(log[0], [PRIMARY, PRIMARY], "switch does not move established connections");
    assert_eq!(log[1], [PRIMARY, PRIMARY], "a cached answer is used until its TTL runs out");
    assert_eq!(log[2], [STANDBY, STANDBY], "after the TTL and a reconnect, agents reach the standby");
}

#[test]
fn a_token_copied_before_its_service_account_is_deleted_by_the_standby_tokens_controller() {
    let token = kind::SECRET.key(NS, "baremetal-system-agent-token");
    let sa = kind::SERVICE_ACCOUNT.key(NS, "baremetal-system-agent");
    for (order, survives) in [([&token, &sa], false), ([&sa, &token], true)] {
        let (p, mut sim) = Platform::build(config(6, 30)).expect("world builds");
        let steps = vec![
            Step::new(Duration::from_secs(5), |_| copy(&p, order[0])),
            Step::new(Duration::from_secs(10), |_| copy(&p, order[1])),
        ];
        p.run(&mut sim, steps).expect("runs");
        let there = p.standby.etcd.get(token.as_bytes()).is_some();
        // A model without the tokens controller keeps the token either way; one that checked
        // the ServiceAccount in a lagging cache only would delete it in both orders.
        assert_eq!(there, survives, "token copied after {}: survives={survives}", order[0]);
        assert!(p.primary.etcd.get(token.as_bytes()).is_some(), "the primary's token is untouched");
    }
}

#[test]
fn a_created_workload_cluster_gets_its_machines_and_vms_from_the_controllers() {
    let (p, mut sim) = Platform::build(config(7, 40)).expect("world builds");
    let steps = vec![Step::new(Duration::from_secs(5), |_| {
        p.act(Action::CreateWorkload { cluster: "wc-new".into(), machines: 3 })
    })];
    p.run(&mut sim, steps).expect("runs");
    let new: Vec<Object> = machines(&p, PRIMARY)
        .into_iter()
        .filter(|m| m.label("cluster.x-k8s.io/cluster-name") == Some("wc-new"))
        .collect();
    assert_eq!(new.len(), 3, "one control-plane Machine and two workers");
    let vms: Vec<_> = p.iaas.vms().into_iter().filter(|v| v.cluster == "wc-new").collect();
    assert_eq!(vms.len(), 3, "each with a VM: {vms:?}");
    assert!(vms.iter().all(|v| v.created_by == PRIMARY));
    assert!(machines(&p, STANDBY).iter().all(|m| m.label("cluster.x-k8s.io/cluster-name") != Some("wc-new")));
}

/// Seed 000's shared token on the wire: the system agent's plan Secret patches, served by the
/// standby once the domain points there and the primary is fenced, are refused until the
/// agent's bundle is there exactly — 401 without its token Secret and ServiceAccount, 403
/// without its Role and RoleBinding — and accepted once it is. A model that did not look the
/// token up, or authorized without RBAC, fails the first or the second window.
#[test]
fn the_agent_token_needs_its_secret_service_account_role_and_binding_where_it_is_served() {
    let dir = tempfile::tempdir().expect("tempdir");
    let trace = dir.path().join("trace.jsonl");
    let mut cfg = config(8, 80);
    cfg.dns_ttl_s = 5;
    cfg.standby_preloaded = true;
    cfg.trace_path = Some(trace.clone());
    let agent = sim::topology::AGENT;
    let bundle = [
        kind::SERVICE_ACCOUNT.key(NS, agent),
        kind::SECRET.key(NS, &format!("{agent}-token")),
        kind::ROLE.key(NS, agent),
        kind::ROLE_BINDING.key(NS, agent),
    ];
    let (authn, authz) = (bundle[..2].to_vec(), bundle[2..].to_vec());
    let (p, mut sim) = Platform::build(cfg).expect("world builds");
    let steps = vec![
        Step::new(Duration::from_secs(2), |_| {
            p.dns.switch(STANDBY, "test");
            p.primary.api.set_fenced(true);
        }),
        Step::new(Duration::from_secs(30), |_| authn.iter().for_each(|k| copy(&p, k))),
        Step::new(Duration::from_secs(50), |_| authz.iter().for_each(|k| copy(&p, k))),
    ];
    p.run(&mut sim, steps).expect("runs");
    let patches: Vec<serde_json::Value> = std::fs::read_to_string(&trace)
        .expect("trace")
        .lines()
        .map(|l| serde_json::from_str(l).expect("json"))
        .filter(|v: &serde_json::Value| v["event"] == "agent.patch" && v["cluster"] == STANDBY)
        .collect();
    let window = |from_s: u64, to_s: u64| -> Vec<(u64, String)> {
        let t = |v: &serde_json::Value| v["t_ms"].as_u64().unwrap_or(0);
        patches
            .iter()
            .filter(|v| (from_s * 1000..to_s * 1000).contains(&t(v)))
            .map(|v| (v["status"].as_u64().unwrap_or(0), v["reason"].as_str().unwrap_or("").to_string()))
            .collect()
    };
    let (none, no_rbac, all) = (window(0, 30), window(31, 50), window(51, 200));
    assert!(!none.is_empty() && none.iter().all(|(s, r)| *s == 401 && r == "token Secret not found"), "{none:?}");
    assert!(!no_rbac.is_empty() && no_rbac.iter().all(|(s, r)| *s == 403 && r.contains("cannot patch")), "{no_rbac:?}");
    assert!(!all.is_empty() && all.iter().all(|(s, _)| *s == 200), "{all:?}");
}

/// Writes `o` on the standby as a sync would (stored as the standby's API server stores it).
fn put(p: &Platform, o: &Object) {
    p.standby.etcd.seed(&[(o.key().into_bytes(), p.standby.api.encode(o))]);
}

/// The absent-owner cache race (kube-controller-manager's `absentOwnerCache`): a dependent
/// copied before one of its two owners makes the standby's GC look that owner up, find nothing
/// and cache its UID as absent (the dependent, with a live owner left, only loses the dangling
/// reference). The owner then arrives and the dependent is copied again with both references;
/// when the other owner is deleted, the cached owner still counts as absent although it exists,
/// and the dependent is deleted. The same objects with the late owner there first keep the
/// dependent: the cache, not the model's rule, deletes it. A GC without the cache (or one that
/// forgot the entry when the owner appeared) keeps it in both orders.
#[test]
fn a_cached_absent_owner_that_appears_later_still_counts_as_absent() {
    use serde_json::json;
    let object = |kind: &'static sim::k8s::Kind, name: &str, uid: &str| {
        let mut o = Object::custom(kind, NS, name, json!({}));
        o.meta.uid = Some(uid.into());
        o
    };
    let a = object(&kind::MACHINE_SET, "race-owner-a", "uid-race-a");
    let b = object(&kind::MACHINE_DEPLOYMENT, "race-owner-b", "uid-race-b");
    let mut d = object(&kind::MACHINE, "race-dependent", "uid-race-d");
    d.owned_by(&a);
    d.owned_by(&b);
    for (late, deleted) in [(true, true), (false, false)] {
        let (p, mut sim) = Platform::build(config(9, 40)).expect("world builds");
        let b_at = Duration::from_secs(if late { 10 } else { 2 });
        let steps = vec![
            Step::new(b_at, |_| put(&p, &b)),
            Step::new(Duration::from_secs(5), |_| {
                put(&p, &a);
                put(&p, &d);
            }),
            // The sync copies the primary's dependent again: both references are back.
            Step::new(Duration::from_secs(12), |_| put(&p, &d)),
            Step::new(Duration::from_secs(15), |_| {
                p.standby.etcd.remove(&[a.key().into_bytes()]);
            }),
        ];
        p.run(&mut sim, steps).expect("runs");
        let gone = p
            .standby
            .etcd
            .get(d.key().as_bytes())
            .is_none_or(|v| p.standby.api.decode(&d.key(), &v).is_ok_and(|o| o.deleting()));
        assert_eq!(gone, deleted, "owner B late={late}: the dependent deleted={deleted}");
        assert!(p.standby.etcd.get(b.key().as_bytes()).is_some(), "owner B exists all along");
    }
}

/// `kubectl delete --cascade=orphan` then `kubectl create` of wc-00's MachineSet (the cluster
/// paused, so nothing adopts the Machines): the workers lose their controller reference a moment
/// before their old owner is deleted. A GC informer that has not seen the orphaning yet still
/// links them to the deleted MachineSet and queues them; the live objects have no owners left,
/// so they are nobody's dependents and stay. A GC that judged "all owners absent" over the live
/// object's empty owner list deleted them (seed 3 here, and machineset-adoption-after-failover's
/// seed 3, before the fix).
#[test]
fn machines_orphaned_just_before_their_owner_is_deleted_are_not_collected() {
    for seed in 1..=4 {
        let (p, mut sim) = Platform::build(config(seed, 30)).expect("world builds");
        let machineset_uid = |p: &Platform| {
            let objs = decode(&p.primary.etcd.dump(), p, PRIMARY);
            let ms = objs.into_iter().find(|o| o.kind == &kind::MACHINE_SET && o.name() == "wc-00-md-0");
            ms.map(|o| o.uid().to_string())
        };
        let before = machineset_uid(&p).expect("wc-00's MachineSet");
        let steps = vec![
            Step::new(Duration::from_secs(5), |_| {
                p.act(Action::Pause { side: PRIMARY.into(), cluster: "wc-00".into(), paused: true })
            }),
            Step::new(Duration::from_secs(10), |_| {
                p.act(Action::RecreateMachineSet { side: PRIMARY.into(), cluster: "wc-00".into() })
            }),
        ];
        p.run(&mut sim, steps).expect("runs");
        let workers: Vec<Object> =
            machines(&p, PRIMARY).into_iter().filter(|m| m.name().starts_with("wc-00-md-0-")).collect();
        let names: Vec<&str> = workers.iter().map(|m| m.name()).collect();
        assert_eq!(names, ["wc-00-md-0-0", "wc-00-md-0-1"], "seed {seed}: both workers are still there");
        assert!(workers.iter().all(|m| !m.deleting() && m.owners().is_empty()), "seed {seed}: orphans, not deleting");
        assert!(p.iaas.deletions().is_empty(), "seed {seed}: no VM deleted");
        let after = machineset_uid(&p).expect("the MachineSet was created again");
        assert_ne!(after, before, "seed {seed}: the same name, a new UID");
    }
}

/// Advances `etcd`'s revision to at least `rev` with writes of unrelated keys (a cluster's own
/// traffic: Leases, Events, the sync's bookkeeping).
fn advance(etcd: &sim::etcd::SimEtcd, rev: i64) {
    for i in 0..(rev - etcd.revision()).max(0) {
        etcd.seed(&[(format!("/test/traffic/{i}").into_bytes(), b"x".to_vec())]);
    }
}

/// The cluster agent's informer (wc-00's Machines, through the platform domain) keeps its
/// resourceVersion — the primary's etcd revision R — when the primary stops answering, and
/// resumes its watch from R on the standby the domain names next. The standby's revisions count
/// another history: a Machine change it holds at a revision below R (the sync copied a
/// heartbeat) is never delivered, and the cache stays stale although the standby answers 200.
/// Only a relist (here: the agent restarted, as seed 001 does after a failover) shows it. With
/// the standby's head still below R the watch is refused as "Too large resource version" and
/// the informer relists by itself. A model that relisted on every reconnect, or that resumed by
/// content rather than by revision number, fails the first half.
#[test]
fn an_informer_carrying_its_resource_version_across_the_switch_misses_changes_until_it_relists() {
    use std::sync::Mutex;
    for standby_ahead in [true, false] {
        let mut cfg = config(4, 60);
        cfg.standby_preloaded = true;
        cfg.writes_per_s = 0.0;
        cfg.dns_ttl_s = 5;
        cfg.cluster_agent = Some("wc-00".into());
        let seen: Mutex<Vec<sim::clusteragent::View>> = Mutex::new(Vec::new());
        let (p, mut sim) = Platform::build(cfg).expect("world builds");
        let look = |_: &mut turmoil::Sim<'_>| seen.lock().unwrap().push(p.cluster_agent.lock().unwrap().clone());
        let steps = vec![
            Step::new(Duration::from_secs(11), |_| {
                // The sync copies a heartbeat of wc-00-md-0-0 onto the standby; then the primary's
                // history runs ahead of it, and (standby_ahead) the standby's too.
                let key = "/registry/cluster.x-k8s.io/machines/cpaas-system/wc-00-md-0-0";
                let v = p.standby.etcd.get(key.as_bytes()).expect("preloaded");
                let mut m = p.standby.api.decode(key, &v).expect("decodes");
                m.meta
                    .annotations
                    .get_or_insert_with(Default::default)
                    .insert("drlab.io/heartbeat".into(), "s1".into());
                put(&p, &m);
                advance(&p.primary.etcd, p.standby.etcd.revision() + 200);
            }),
            Step::new(Duration::from_secs(17), look),
            Step::new(Duration::from_secs(18), |_| {
                let r = p.cluster_agent.lock().unwrap().resource_version;
                if standby_ahead {
                    advance(&p.standby.etcd, r + 50);
                }
                p.primary.api.set_fenced(true);
                p.dns.switch(STANDBY, "test");
            }),
            Step::new(Duration::from_secs(35), look),
            Step::new(Duration::from_secs(36), |_| p.act(Action::RestartAgents)),
            Step::new(Duration::from_secs(50), look),
        ];
        p.run(&mut sim, steps).expect("runs");
        let seen = seen.lock().unwrap().clone();
        let beat = |v: &sim::clusteragent::View| v.cache.get("wc-00-md-0-0").cloned();
        assert_eq!((seen[0].served_by.as_str(), beat(&seen[0])), (PRIMARY, Some(String::new())), "{seen:?}");
        assert!(seen[0].resource_version > p.standby.etcd.revision() - 300, "the primary's revision: {seen:?}");
        assert_eq!(seen[1].served_by, STANDBY, "{seen:?}");
        let stale = if standby_ahead { String::new() } else { "s1".into() };
        assert_eq!(beat(&seen[1]), Some(stale), "standby_ahead={standby_ahead}: {seen:?}");
        assert_eq!(beat(&seen[2]), Some("s1".into()), "a relist shows the standby's copy: {seen:?}");
    }
}
