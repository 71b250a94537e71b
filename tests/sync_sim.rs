//! The real sync engine inside the simulated world: primary and standby etcd hosts, the sync on
//! its own host, a writer and an owner-order observer on a client host.
//!
//! Properties checked: after quiescence the standby holds exactly the rule-filtered primary in
//! scope; keys the rules exclude (the standby's own `global` resources, leader leases) are never
//! touched; no dependent is ever visible on the standby without its owner (from the standby's
//! event stream); a crashed and restarted sync resumes without losing anything.

use std::time::Duration;

use harness::fixtures::{self, capi};
use harness::observe::{Orphaned, OwnerOrder};
use harness::simsync::{SyncHost, conn_config};
use sim::etcd::{Config, SimEtcd};
use sim::fault::Faults;
use sim::net::{Connector as SimConnector, Links};
use sim::trace::Trace;
use sim::world::{Step, add_etcd, builder, run_schedule};
use sync::conn::Connector;
use sync::engine::{Handle, Phase, Settings};
use sync::rules::{Profile, Rules};

type Kvs = Vec<(Vec<u8>, Vec<u8>)>;

fn kvs(v: Vec<(String, Vec<u8>)>) -> Kvs {
    v.into_iter().map(|(k, v)| (k.into_bytes(), v)).collect()
}

/// What the primary holds before the sync starts: workload clusters (dependents sort before
/// their owners: machines < machinesets), the primary's own globals, things no rule syncs.
fn primary_seed() -> Kvs {
    let mut v = Vec::new();
    // Enough objects that a copy needs several txns of at most 128 ops.
    for c in ["wl-a", "wl-b", "wl-c", "wl-e", "wl-f", "wl-g", "wl-h", "wl-i", "wl-j", "wl-k"] {
        v.extend(fixtures::workload_cluster(c, 10));
    }
    v.push(capi("clusters", "Cluster", "global", "uid-primary-global", &[]));
    v.push(capi(
        "machines",
        "Machine",
        "global-cp-0",
        "uid-primary-global-cp-0",
        &[("Cluster", "global", "uid-primary-global")],
    ));
    v.extend(fixtures::service_account_with_token("baremetal-system-agent", "uid-agent-sa", "uid-agent-token"));
    v.push(("/registry/configmaps/cpaas-system/settings".into(), b"{}".to_vec()));
    v.push(("/registry/leases/kube-system/kube-controller-manager".into(), b"holder=primary".to_vec()));
    kvs(v)
}

/// The standby's own resources: same names as the primary's globals, other UIDs.
fn standby_seed() -> Kvs {
    kvs(vec![
        capi("clusters", "Cluster", "global", "uid-standby-global", &[]),
        capi(
            "machines",
            "Machine",
            "global-cp-0",
            "uid-standby-global-cp-0",
            &[("Cluster", "global", "uid-standby-global")],
        ),
        ("/registry/leases/kube-system/kube-controller-manager".into(), b"holder=standby".to_vec()),
    ])
}

struct Outcome {
    /// `etcd-sync check` run from the client at the end of the world.
    report: sync::check::Report,
    primary: SimEtcd,
    standby: SimEtcd,
    violations: Vec<Orphaned>,
    handle: Handle,
    seed: u64,
}

/// Runs the world: the sync starts at 1 s, a writer adds a cluster and scales another during
/// streaming, `faults` runs on the schedule; the run ends at `secs`.
fn run_world(seed: u64, secs: u64, settings: Settings, faults: impl FnOnce(&Faults) -> Vec<Step<'static>>) -> Outcome {
    run_world_then(seed, secs, settings, faults, false, primary_seed())
}

/// As [`run_world`]; with `perturb`, the client then damages the standby behind the sync's back
/// (as a garbage collector or an operator would) before the final check.
fn run_world_then(
    seed: u64,
    secs: u64,
    settings: Settings,
    faults: impl FnOnce(&Faults) -> Vec<Step<'static>>,
    perturb: bool,
    primary_kvs: Kvs,
) -> Outcome {
    let links = Links::default();
    let trace = Trace::new(None).expect("trace");
    let mut sim = builder(seed, Duration::from_secs(secs), Duration::from_millis(1)).build();
    let (primary, standby) = (
        SimEtcd::new(Config { seed, ..Config::default() }),
        SimEtcd::new(Config { seed: seed + 1, ..Config::default() }),
    );
    primary.seed(&primary_kvs);
    standby.seed(&standby_seed());
    add_etcd(&mut sim, "primary", primary.clone(), links.clone(), trace.clone());
    add_etcd(&mut sim, "standby", standby.clone(), links.clone(), trace.clone());
    let host =
        SyncHost { start_delay: Duration::from_secs(1), ..SyncHost::new("primary", "standby", settings.clone()) };
    let handle = host.add(&mut sim, links.clone());
    let observer = OwnerOrder::default();
    let rules = settings.rules.clone();
    let boundary = settings.boundary.clone();
    let obs = observer.clone();
    let l = links.clone();
    let report = std::sync::Arc::new(std::sync::Mutex::new(None));
    let slot = report.clone();
    sim.client("client", async move {
        let connector = Connector::custom(SimConnector::new(l));
        let standby = sync::conn::connect(&conn_config("standby"), &connector, 0).await?;
        let rules2 = rules.clone();
        tokio::spawn(obs.run(standby.clone(), move |k| rules2.includes(k)));
        let primary = sync::conn::connect(&conn_config("primary"), &connector, 0).await?;
        tokio::time::sleep(Duration::from_secs(5)).await;
        let mut kv = primary.kv.clone();
        // A new workload cluster, written owner first as the API server would.
        for (k, v) in fixtures::workload_cluster("wl-d", 3) {
            primary.call(kv.put(k, v, None)).await?;
        }
        // Scale wl-a down by one Machine: its bootstrap Secret goes with it.
        primary.call(kv.delete("/registry/secrets/cpaas-system/wl-a-md-0-m9-bootstrap", None)).await?;
        primary.call(kv.delete("/registry/cluster.x-k8s.io/machines/cpaas-system/wl-a-md-0-m9", None)).await?;
        tokio::time::sleep(Duration::from_secs(secs - 10)).await;
        if perturb {
            let mut skv = standby.kv.clone();
            standby.call(skv.delete("/registry/cluster.x-k8s.io/machines/cpaas-system/wl-b-md-0-m0", None)).await?;
            let (k, v) = capi("machines", "Machine", "ghost", "uid-ghost", &[("MachineSet", "gone", "uid-gone")]);
            standby.call(skv.put(k, v, None)).await?;
            let (k, _) = capi("clusters", "Cluster", "wl-c", "uid-wl-c", &[]);
            standby.call(skv.put(k, b"{\"kind\":\"Cluster\"}".to_vec(), None)).await?;
        }
        let r = sync::check::check(Some(&primary), &standby, &rules, &boundary, None, 64).await?;
        *slot.lock().expect("report slot") = Some(r);
        Ok(())
    });
    let steps = faults(&Faults::new(links, trace.clone()));
    run_schedule(&mut sim, steps, seed, &trace).unwrap_or_else(|e| panic!("{e}"));
    let report = report.lock().expect("report slot").take().unwrap_or_else(|| panic!("no check report (seed={seed})"));
    Outcome { report, primary, standby, violations: observer.violations(), handle, seed }
}

/// The standby must hold exactly the primary's in-scope keys; out-of-scope standby keys must be
/// what the standby had.
fn assert_converged(o: &Outcome, rules: &Rules) {
    let seed = o.seed;
    let scope = |kvs: Kvs| -> Kvs { kvs.into_iter().filter(|(k, _)| rules.includes(k)).collect() };
    let (p, s) = (scope(o.primary.dump()), scope(o.standby.dump()));
    let missed: Vec<String> =
        p.iter().filter(|kv| !s.contains(kv)).map(|(k, _)| String::from_utf8_lossy(k).into_owned()).collect();
    let surplus: Vec<String> =
        s.iter().filter(|kv| !p.contains(kv)).map(|(k, _)| String::from_utf8_lossy(k).into_owned()).collect();
    assert!(
        missed.is_empty() && surplus.is_empty(),
        "missed {missed:?}, surplus/stale {surplus:?} (reproduce with seed={seed})"
    );
    for (k, v) in standby_seed() {
        assert_eq!(
            o.standby.get(&k).as_ref(),
            Some(&v),
            "the standby's own {} was touched (seed={seed})",
            String::from_utf8_lossy(&k)
        );
    }
    assert!(
        o.standby.get(b"/registry/configmaps/cpaas-system/settings").is_none(),
        "an excluded key was copied (seed={seed})"
    );
}

fn immutable() -> Settings {
    Settings::new(Rules::profile(Profile::Immutable))
}

#[test]
fn initial_sync_and_streaming_converge_with_owners_first() {
    let o = run_world(21, 30, immutable(), |_| Vec::new());
    let st = o.handle.status();
    assert_eq!(st.phase, Phase::Streaming, "{st:?}");
    assert!(st.held.is_empty(), "nothing should stay held: {:?}", st.held);
    assert_eq!(st.checkpoint, o.primary.revision(), "caught up with the primary");
    assert_convergeds(&o);
    assert!(o.violations.is_empty(), "dependents landed before owners: {:?} (seed={})", o.violations, o.seed);
    assert!(o.report.is_clean(), "{}", o.report.text());
    // The initial copy met dependents before their owners in key order: it held and released them.
    assert!(st.held_total > 0 && st.released_total >= st.held_total, "{st:?}");
    assert!(st.applied_txns >= 3, "several txns: {st:?}");
}

#[test]
fn sync_crashed_repeatedly_resumes_without_losing_anything() {
    let o = run_world(22, 40, immutable(), |f| {
        let mut steps = Vec::new();
        for i in 0..6u64 {
            let (c, r) = (f.clone(), f.clone());
            steps.push(Step::new(Duration::from_millis(1_300 + i * 2_700), move |sim| c.crash(sim, "sync")));
            steps.push(Step::new(Duration::from_millis(2_000 + i * 2_700), move |sim| r.restart(sim, "sync")));
        }
        steps
    });
    assert_convergeds(&o);
    assert!(o.violations.is_empty(), "dependents landed before owners: {:?} (seed={})", o.violations, o.seed);
}

#[test]
fn partitioned_sync_link_heals_without_operator_action() {
    let o = run_world(23, 60, immutable(), |f| {
        let (a, b, c) = (f.clone(), f.clone(), f.clone());
        vec![
            Step::new(Duration::from_secs(3), move |sim| a.partition(sim, "sync", "primary")),
            Step::new(Duration::from_secs(8), move |sim| {
                b.reset_link(sim, "sync", "primary");
            }),
            Step::new(Duration::from_secs(25), move |sim| c.heal(sim, "sync", "primary")),
        ]
    });
    assert_convergeds(&o);
    assert!(o.handle.status().sessions_failed >= 1, "the partition broke a session");
}

fn assert_convergeds(o: &Outcome) {
    assert_converged(o, &Rules::profile(Profile::Immutable));
}

#[cfg(feature = "mutants")]
#[test]
fn owner_order_off_lands_dependents_before_owners() {
    let mut settings = immutable();
    settings.owner_order_off = true;
    let o = run_world(21, 30, settings, |_| Vec::new());
    assert!(!o.violations.is_empty(), "a key-ordered copy must land Machines before MachineSets (seed={})", o.seed);
}

#[cfg(feature = "mutants")]
#[test]
fn ignore_rules_off_overwrites_the_standbys_globals() {
    let mut settings = immutable();
    settings.rules.ignore_rules_off = true;
    let o = run_world(21, 30, settings, |_| Vec::new());
    let standby_global = o.standby.get(b"/registry/cluster.x-k8s.io/clusters/cpaas-system/global");
    assert_ne!(
        standby_global,
        Some(standby_seed()[0].1.clone()),
        "without rules the primary's global overwrites the standby's"
    );
}

#[test]
fn check_reports_what_was_done_behind_the_syncs_back() {
    let o = run_world_then(24, 30, immutable(), |_| Vec::new(), true, primary_seed());
    let r = &o.report;
    assert!(!r.is_clean());
    assert_eq!(r.missed.keys, vec!["/registry/cluster.x-k8s.io/machines/cpaas-system/wl-b-md-0-m0"], "{}", r.text());
    assert_eq!(r.surplus.keys, vec!["/registry/cluster.x-k8s.io/machines/cpaas-system/ghost"], "{}", r.text());
    assert_eq!(r.stale.keys, vec!["/registry/cluster.x-k8s.io/clusters/cpaas-system/wl-c"], "{}", r.text());
    let dangling: Vec<&str> = r.dangling.keys.iter().map(String::as_str).collect();
    assert!(dangling.contains(&"/registry/cluster.x-k8s.io/machines/cpaas-system/ghost -> uid-gone"), "{}", r.text());
    // The deleted Machine's bootstrap Secret now points at a Machine the standby lacks.
    assert!(
        dangling.contains(&"/registry/secrets/cpaas-system/wl-b-md-0-m0-bootstrap -> uid-wl-b-md-0-m0"),
        "{}",
        r.text()
    );
    let text = r.text();
    assert!(text.contains("LOCAL ETCD missed keys: 1") && text.contains("LOCAL ETCD surplus keys: 1"), "{text}");
    assert!(text.ends_with("result: INCONSISTENT\n"), "{text}");
}

/// A world where a writer puts a fresh key every 15 ms while `faults` run; returns whether the
/// standby ends with every key, and the engine's status.
fn streaming_world(
    seed: u64,
    settings: Settings,
    faults: impl FnOnce(&Faults, &SimEtcd) -> Vec<Step<'static>>,
) -> (Vec<String>, Outcome) {
    let links = Links::default();
    let trace = Trace::new(None).expect("trace");
    let mut sim = builder(seed, Duration::from_secs(60), Duration::from_millis(1)).build();
    let primary = SimEtcd::new(Config { seed, ..Config::default() });
    let standby = SimEtcd::new(Config { seed: seed + 1, ..Config::default() });
    add_etcd(&mut sim, "primary", primary.clone(), links.clone(), trace.clone());
    add_etcd(&mut sim, "standby", standby.clone(), links.clone(), trace.clone());
    let handle = SyncHost::new("primary", "standby", settings).add(&mut sim, links.clone());
    let l = links.clone();
    sim.client("writer", async move {
        let connector = Connector::custom(SimConnector::new(l));
        let primary = sync::conn::connect(&conn_config("primary"), &connector, 0).await?;
        let mut kv = primary.kv.clone();
        for i in 0..1200 {
            let (k, v) = capi("machines", "Machine", &format!("m-{i:05}"), &format!("uid-m-{i}"), &[]);
            // Retry through the primary's own hiccups; each key is written exactly once.
            while primary.call(kv.put(k.clone(), v.clone(), None)).await.is_err() {}
            tokio::time::sleep(Duration::from_millis(15)).await;
        }
        tokio::time::sleep(Duration::from_secs(15)).await;
        Ok(())
    });
    let steps = faults(&Faults::new(links, trace.clone()), &primary);
    run_schedule(&mut sim, steps, seed, &trace).unwrap_or_else(|e| panic!("{e}"));
    let missing: Vec<String> = primary
        .dump()
        .into_iter()
        .filter(|(k, _)| k.starts_with(b"/registry/"))
        .filter(|(k, v)| standby.get(k).as_ref() != Some(v))
        .map(|(k, _)| String::from_utf8_lossy(&k).into_owned())
        .collect();
    let o = Outcome { report: sync::check::Report::default(), primary, standby, violations: Vec::new(), handle, seed };
    (missing, o)
}

/// Crashes the sync every 530 ms (restarting it 170 ms later) while the writer runs: 30 kills at
/// offsets that drift against the writer's 15 ms period, so some land between two txns of one
/// apply.
fn crash_often(f: &Faults, _: &SimEtcd) -> Vec<Step<'static>> {
    let mut steps = Vec::new();
    for i in 0..30u64 {
        let (c, r) = (f.clone(), f.clone());
        steps.push(Step::new(Duration::from_millis(2_000 + i * 530), move |sim| c.crash(sim, "sync")));
        steps.push(Step::new(Duration::from_millis(2_170 + i * 530), move |sim| r.restart(sim, "sync")));
    }
    steps
}

#[test]
fn crashes_mid_stream_lose_nothing_when_the_checkpoint_is_in_the_txn() {
    let (missing, o) = streaming_world(31, immutable(), crash_often);
    assert!(
        missing.is_empty(),
        "lost {} keys: {:?} (seed={})",
        missing.len(),
        missing.iter().take(5).collect::<Vec<_>>(),
        o.seed
    );
}

#[cfg(feature = "mutants")]
#[test]
fn checkpoint_outside_txn_loses_keys_when_crashed_mid_stream() {
    let mut settings = immutable();
    settings.checkpoint_outside_txn = true;
    let (missing, o) = streaming_world(31, settings, crash_often);
    assert!(
        !missing.is_empty(),
        "a checkpoint written apart from its data must lose an apply under crashes (seed={})",
        o.seed
    );
}

#[test]
fn compaction_while_partitioned_triggers_a_resync_that_converges() {
    let (missing, o) = streaming_world(32, immutable(), |f, primary| {
        let (a, b, c, d) = (f.clone(), f.clone(), f.clone(), f.clone());
        let primary = primary.clone();
        vec![
            Step::new(Duration::from_secs(3), move |sim| a.partition(sim, "sync", "primary")),
            Step::new(Duration::from_secs(7), move |sim| {
                b.reset_link(sim, "sync", "primary");
            }),
            // The primary's API server compacts while the sync is cut off.
            Step::new(Duration::from_secs(9), move |_| {
                d.compact(&primary, "primary");
            }),
            Step::new(Duration::from_secs(12), move |sim| c.heal(sim, "sync", "primary")),
        ]
    });
    assert!(missing.is_empty(), "lost {} keys (seed={})", missing.len(), o.seed);
    let st = o.handle.status();
    assert!(st.resyncs >= 2, "the compacted watch must trigger a resync: {st:?}");
}

fn keyring(secret: u8) -> sync::crypto::Keyring {
    // The usual mistake: both sides call their key `key1`, with different secrets.
    fixtures::keyring("key1", secret)
}

/// The primary's seed with every Secret encrypted at rest with the primary's key; returns the
/// plaintexts by key too.
fn encrypted_primary() -> (Kvs, Kvs) {
    use rand::SeedableRng;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
    let k = keyring(1);
    let mut plain = Vec::new();
    let kvs = primary_seed()
        .into_iter()
        .map(|(key, v)| {
            if key.starts_with(b"/registry/secrets/") {
                plain.push((key.clone(), v.clone()));
                (key, k.encrypt(&v, &mut rng).expect("encrypts"))
            } else {
                (key, v)
            }
        })
        .collect();
    (kvs, plain)
}

fn with_keys(source: Option<u8>, target: Option<u8>) -> Settings {
    let mut s = immutable();
    s.boundary.source = source.map(keyring);
    s.boundary.target = target.map(keyring);
    s
}

#[test]
fn secrets_are_reencrypted_for_a_standby_with_other_keys() {
    let (kvs, plain) = encrypted_primary();
    let o = run_world_then(25, 30, with_keys(Some(1), Some(2)), |_| Vec::new(), false, kvs);
    let standby_key = keyring(2);
    // (The writer deletes one Machine and its Secret during the run.)
    let plain: Vec<_> = plain.into_iter().filter(|(k, _)| o.primary.get(k).is_some()).collect();
    assert!(plain.len() > 50);
    for (k, p) in &plain {
        let v =
            o.standby.get(k).unwrap_or_else(|| panic!("{} not synced (seed={})", String::from_utf8_lossy(k), o.seed));
        assert_eq!(
            standby_key.decrypt(&v).as_ref(),
            Some(p),
            "the standby reads {} with its own key",
            String::from_utf8_lossy(k)
        );
    }
    assert!(o.report.is_clean(), "the check compares plaintexts: {}", o.report.text());
    // Owners of encrypted Secrets are visible through the source key: none landed early.
    assert!(o.violations.is_empty(), "{:?}", o.violations);
}

#[test]
fn without_the_source_key_ciphertext_is_never_written_and_is_reported() {
    let (kvs, plain) = encrypted_primary();
    let o = run_world_then(26, 30, with_keys(None, Some(2)), |_| Vec::new(), false, kvs);
    let plain: Vec<_> = plain.into_iter().filter(|(k, _)| o.primary.get(k).is_some()).collect();
    for (k, _) in &plain {
        assert!(
            o.standby.get(k).is_none(),
            "undecryptable {} was written (seed={})",
            String::from_utf8_lossy(k),
            o.seed
        );
    }
    assert_eq!(o.report.undecryptable.count as usize, plain.len(), "{}", o.report.text());
    assert!(!o.report.is_clean());
    assert_eq!(o.handle.status().undecryptable.len(), plain.len());
}

#[cfg(feature = "mutants")]
#[test]
fn raw_secret_copy_leaves_the_standby_unable_to_read_its_secrets() {
    let (kvs, plain) = encrypted_primary();
    let mut settings = with_keys(Some(1), Some(2));
    settings.boundary.raw_secret_copy = true;
    let o = run_world_then(25, 30, settings, |_| Vec::new(), false, kvs);
    let standby_key = keyring(2);
    let unreadable =
        plain.iter().filter(|(k, _)| o.standby.get(k).is_some_and(|v| standby_key.decrypt(&v).is_none())).count();
    assert!(unreadable > 0, "a raw copy across different keys must leave unreadable Secrets (seed={})", o.seed);
}
