//! Property tests of the sync engine in the simulator: random source histories (puts, deletes,
//! multi-key txns up to 128 ops, values up to 1 MiB, owner graphs created in random order,
//! compactions) with the sync crashed and restarted at random points.
//!
//! After quiescence: (a) the standby equals the rule-filtered primary, except keys whose owner
//! chain never resolves on the primary (those stay held); (b) keys the rules exclude (the
//! standby's own `global-*` objects) are never touched; (c) no dependent is ever visible on the
//! standby without its owner — from the standby's event stream, not its final state.
//! Each property is shown to fail on the mutant that breaks it.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use harness::fixtures::capi;
use harness::observe::OwnerOrder;
use harness::simsync::{SyncHost, conn_config};
use proptest::prelude::*;
use proptest::test_runner::{Config as PropConfig, RngAlgorithm, TestCaseError, TestRng, TestRunner};
use sim::etcd::{Config, SimEtcd};
use sim::fault::Faults;
use sim::net::{Connector as SimConnector, Links};
use sim::trace::Trace;
use sim::world::{Step as WorldStep, add_etcd, builder, run_schedule};
use sync::conn::Connector;
use sync::engine::Settings;
use sync::rules::{Profile, Rules};

/// Objects 0..IN_SCOPE are workload objects; the rest are named `global-*` (never synced).
const OBJECTS: u8 = 24;
const IN_SCOPE: u8 = 20;
/// The proptest seed of the gate (printed on failure by the runner).
const PROPTEST_SEED: [u8; 32] = *b"drlab-sync-properties-seed-00001";

#[derive(Debug, Clone)]
enum Op {
    Put {
        obj: u8,
        owner: Option<u8>,
        bytes: usize,
    },
    Delete {
        obj: u8,
    },
    /// Puts of several objects in one source txn.
    Txn {
        puts: Vec<(u8, Option<u8>)>,
    },
    /// `n` fresh keys in one source txn (up to etcd's 128-op limit).
    Bulk {
        n: usize,
    },
    Compact,
    CrashSync,
    Pause {
        ms: u64,
    },
}

fn size() -> impl Strategy<Value = usize> {
    prop_oneof![8 => 0usize..512, 2 => 512usize..100_000, 1 => Just(1_000_000)]
}

fn op() -> impl Strategy<Value = Op> {
    let obj = 0..OBJECTS;
    let owner = proptest::option::weighted(0.6, 0..OBJECTS);
    prop_oneof![
        6 => (obj.clone(), owner.clone(), size()).prop_map(|(obj, owner, bytes)| Op::Put { obj, owner, bytes }),
        2 => obj.clone().prop_map(|obj| Op::Delete { obj }),
        2 => proptest::collection::vec((obj, owner), 1..8).prop_map(|puts| Op::Txn { puts }),
        1 => (1usize..=128).prop_map(|n| Op::Bulk { n }),
        1 => Just(Op::Compact),
        1 => Just(Op::CrashSync),
        2 => (1u64..400).prop_map(|ms| Op::Pause { ms }),
    ]
}

fn name(obj: u8) -> String {
    if obj < IN_SCOPE { format!("o{obj}") } else { format!("global-o{obj}") }
}

fn object(obj: u8, owner: Option<u8>, bytes: usize) -> (String, Vec<u8>) {
    let owner_name = owner.map(name);
    let owners: Vec<(&str, &str, String)> =
        owner_name.iter().map(|n| ("Machine", n.as_str(), format!("uid-{n}"))).collect();
    let refs: Vec<(&str, &str, &str)> = owners.iter().map(|(k, n, u)| (*k, *n, u.as_str())).collect();
    let (k, v) = capi("machines", "Machine", &name(obj), &format!("uid-{}", name(obj)), &refs);
    let mut json: serde_json::Value = serde_json::from_slice(&v).expect("fixture json");
    json["spec"]["pad"] = serde_json::Value::String("p".repeat(bytes));
    (k, serde_json::to_vec(&json).expect("json"))
}

/// Keys whose owner chain resolves on `source` (owner present, in scope, itself resolved).
fn expected_held(source: &BTreeMap<Vec<u8>, Vec<u8>>, rules: &Rules) -> BTreeSet<Vec<u8>> {
    let meta: BTreeMap<Vec<u8>, (String, Vec<String>)> = source
        .iter()
        .filter_map(|(k, v)| match sync::object::decode(v) {
            sync::object::Decoded::Object(m) => {
                Some((k.clone(), (m.uid, m.owners.into_iter().map(|o| o.uid).collect())))
            }
            _ => None,
        })
        .collect();
    let key_of: BTreeMap<&String, &Vec<u8>> = meta.iter().map(|(k, (u, _))| (u, k)).collect();
    let mut held: BTreeSet<Vec<u8>> = meta.keys().filter(|k| rules.includes(k)).cloned().collect();
    // Fixed point: release every key whose owners are all resolvable.
    loop {
        let release: Vec<Vec<u8>> = held
            .iter()
            .filter(|k| {
                meta[*k].1.iter().all(|o| key_of.get(o).is_some_and(|ok| rules.includes(ok) && !held.contains(*ok)))
            })
            .cloned()
            .collect();
        if release.is_empty() {
            return held;
        }
        for k in release {
            held.remove(&k);
        }
    }
}

/// Runs one history; Err names the property that failed.
fn run_case(ops: &[Op], seed: u64, settings: &Settings) -> Result<(), TestCaseError> {
    // The oracle's rules are the profile's, whatever variant of the code runs.
    let rules = Rules::profile(Profile::Immutable);
    let links = Links::default();
    let trace = Trace::new(None).expect("trace");
    let mut sim = builder(seed, Duration::from_secs(600), Duration::from_millis(1)).build();
    let primary = SimEtcd::new(Config { seed, ..Config::default() });
    let standby = SimEtcd::new(Config { seed: seed + 1, ..Config::default() });
    let own: Vec<(Vec<u8>, Vec<u8>)> = (IN_SCOPE..OBJECTS)
        .map(|o| object(o, None, 10))
        .map(|(k, mut v)| {
            v.extend_from_slice(b" ");
            (k.into_bytes(), v)
        })
        .collect();
    standby.seed(&own);
    add_etcd(&mut sim, "primary", primary.clone(), links.clone(), trace.clone());
    add_etcd(&mut sim, "standby", standby.clone(), links.clone(), trace.clone());
    SyncHost::new("primary", "standby", settings.clone()).add(&mut sim, links.clone());
    let observer = OwnerOrder::default();
    let (obs, l, scope) = (observer.clone(), links.clone(), rules.clone());
    // Crash and compaction times come from the history's own clock (pauses and op times).
    let mut steps = Vec::new();
    let faults = Faults::new(links.clone(), trace);
    let mut t_ms = 500u64;
    for op in ops {
        match op {
            Op::Pause { ms } => t_ms += ms,
            Op::CrashSync => {
                let (c, r) = (faults.clone(), faults.clone());
                steps.push(WorldStep::new(Duration::from_millis(t_ms), move |sim| c.crash(sim, "sync")));
                steps.push(WorldStep::new(Duration::from_millis(t_ms + 150), move |sim| r.restart(sim, "sync")));
            }
            Op::Compact => {
                let (f, p) = (faults.clone(), primary.clone());
                steps.push(WorldStep::new(Duration::from_millis(t_ms), move |_| {
                    f.compact(&p, "primary");
                }));
            }
            _ => t_ms += 20,
        }
    }
    let history = ops.to_vec();
    sim.client("writer", async move {
        let connector = Connector::custom(SimConnector::new(l));
        let standby = sync::conn::connect(&conn_config("standby"), &connector, 0).await?;
        tokio::spawn(obs.run(standby, move |k| scope.includes(k)));
        let primary = sync::conn::connect(&conn_config("primary"), &connector, 0).await?;
        let mut kv = primary.kv.clone();
        tokio::time::sleep(Duration::from_millis(500)).await;
        let mut bulk = 0usize;
        for op in history {
            match op {
                Op::Put { obj, owner, bytes } => {
                    let (k, v) = object(obj, owner, bytes);
                    primary.call(kv.put(k, v, None)).await?;
                }
                Op::Delete { obj } => {
                    primary.call(kv.delete(object(obj, None, 0).0, None)).await?;
                }
                Op::Txn { puts } => {
                    let mut seen = BTreeSet::new();
                    let ops: Vec<etcd_client::TxnOp> = puts
                        .into_iter()
                        .filter(|(o, _)| seen.insert(*o))
                        .map(|(o, w)| {
                            let (k, v) = object(o, w, 64);
                            etcd_client::TxnOp::put(k, v, None)
                        })
                        .collect();
                    primary.call(kv.txn(etcd_client::Txn::new().and_then(ops))).await?;
                }
                Op::Bulk { n } => {
                    let ops: Vec<etcd_client::TxnOp> = (0..n)
                        .map(|i| {
                            etcd_client::TxnOp::put(
                                format!("/registry/secrets/cpaas-system/bulk-{bulk}-{i}"),
                                vec![b'b'; 32],
                                None,
                            )
                        })
                        .collect();
                    bulk += 1;
                    primary.call(kv.txn(etcd_client::Txn::new().and_then(ops))).await?;
                }
                Op::Pause { ms } => tokio::time::sleep(Duration::from_millis(ms)).await,
                Op::Compact | Op::CrashSync => {}
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // Quiesce: time for restarts, resyncs and catch-up.
        tokio::time::sleep(Duration::from_secs(30)).await;
        Ok(())
    });
    let trace = faults.trace().clone();
    run_schedule(&mut sim, steps, seed, &trace).map_err(|e| TestCaseError::fail(e.to_string()))?;

    let in_scope = |kvs: Vec<(Vec<u8>, Vec<u8>)>| -> BTreeMap<Vec<u8>, Vec<u8>> {
        kvs.into_iter().filter(|(k, _)| rules.includes(k)).collect()
    };
    let src = in_scope(primary.dump());
    let tgt = in_scope(standby.dump());
    let held = expected_held(&src, &rules);
    let want: BTreeMap<_, _> = src.iter().filter(|(k, _)| !held.contains(*k)).collect();
    let got: BTreeMap<_, _> = tgt.iter().filter(|(k, _)| !held.contains(*k)).collect();
    if want != got {
        let missed: Vec<String> = want
            .keys()
            .filter(|k| got.get(*k) != want.get(*k))
            .map(|k| String::from_utf8_lossy(k).into_owned())
            .collect();
        let extra: Vec<String> =
            got.keys().filter(|k| !want.contains_key(*k)).map(|k| String::from_utf8_lossy(k).into_owned()).collect();
        return Err(TestCaseError::fail(format!(
            "(a) standby != filtered primary: missed/stale {missed:?}, surplus {extra:?} (seed={seed})"
        )));
    }
    for (k, v) in &own {
        if standby.get(k).as_ref() != Some(v) {
            return Err(TestCaseError::fail(format!(
                "(b) excluded {} was touched (seed={seed})",
                String::from_utf8_lossy(k)
            )));
        }
    }
    let v = observer.violations();
    if !v.is_empty() {
        return Err(TestCaseError::fail(format!(
            "(c) dependent before owner: {:?} (seed={seed})",
            &v[..v.len().min(3)]
        )));
    }
    Ok(())
}

fn runner(cases: u32) -> TestRunner {
    let cfg = PropConfig { cases, max_shrink_iters: 64, failure_persistence: None, ..PropConfig::default() };
    TestRunner::new_with_rng(cfg, TestRng::from_seed(RngAlgorithm::ChaCha, &PROPTEST_SEED))
}

fn histories() -> impl Strategy<Value = (Vec<Op>, u64)> {
    (proptest::collection::vec(op(), 5..60), 0u64..1_000_000)
}

fn settings() -> Settings {
    Settings::new(Rules::profile(Profile::Immutable))
}

#[test]
fn random_histories_with_crashes_keep_every_property() {
    let s = settings();
    let result = runner(48).run(&histories(), |(ops, seed)| run_case(&ops, seed, &s));
    if let Err(e) = result {
        panic!("{e} (proptest seed {PROPTEST_SEED:?})");
    }
}

/// The first failure random histories find against a mutant, or None.
#[cfg(feature = "mutants")]
fn first_failure(s: Settings) -> Option<String> {
    runner(48).run(&histories(), |(ops, seed)| run_case(&ops, seed, &s)).err().map(|e| e.to_string())
}

#[cfg(feature = "mutants")]
#[test]
fn owner_order_off_is_caught_by_random_histories() {
    let mut s = settings();
    s.owner_order_off = true;
    let f = first_failure(s).expect("random histories must catch owner-order-off");
    assert!(f.contains("(c) dependent before owner"), "{f}");
}

#[cfg(feature = "mutants")]
#[test]
fn checkpoint_outside_txn_is_caught_by_random_histories() {
    let mut s = settings();
    s.checkpoint_outside_txn = true;
    let f = first_failure(s).expect("random histories must catch checkpoint-outside-txn");
    assert!(f.contains("(a) standby != filtered primary"), "{f}");
}

#[cfg(feature = "mutants")]
#[test]
fn ignore_rules_off_is_caught_by_random_histories() {
    let mut s = settings();
    s.rules.ignore_rules_off = true;
    let f = first_failure(s).expect("random histories must catch ignore-rules-off");
    assert!(f.contains("(b) excluded"), "{f}");
}
