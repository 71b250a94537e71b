//! The sync's in-process parts, measured with criterion (`cargo bench --bench sync_parts`):
//! key parsing, rule matching, owner tracking (the planner over a workload in key order, where
//! dependents come before their owners), envelope re-encryption, the check's per-key compare
//! of re-encrypted Secrets, and the check's merge of two keyspaces. `cargo test` runs each once (criterion's test mode) — the smoke mode
//! that keeps these benches from rotting; timing goals live in the figures, never in tests.

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use harness::fixtures;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use sync::check::Advance;
use sync::crypto::{Boundary, Carry};
use sync::engine::Settings;
use sync::plan::Change;
use sync::rules::{Profile, Rules};

/// The standard drill's keyspace: 50 workload clusters × 10 Machines (every CAPI / provider
/// object and its Secrets), as the primary stores it, in key order.
fn workload() -> Vec<(String, Vec<u8>)> {
    let mut kvs: Vec<(String, Vec<u8>)> =
        (0..50).flat_map(|c| fixtures::workload_cluster(&format!("wl-{c:02}"), 10)).collect();
    kvs.sort();
    kvs
}

fn keys_and_rules(c: &mut Criterion) {
    let kvs = workload();
    let mut g = c.benchmark_group("keys");
    g.throughput(Throughput::Elements(kvs.len() as u64));
    g.bench_function("parse", |b| {
        b.iter(|| kvs.iter().filter(|(k, _)| sync::keys::parse(k.as_bytes()).is_some()).count())
    });
    for profile in [Profile::Immutable, Profile::Traditional] {
        let rules = Rules::profile(profile);
        g.bench_function(format!("rules-{profile:?}").to_lowercase(), |b| {
            b.iter(|| kvs.iter().filter(|(k, _)| rules.includes(k.as_bytes())).count())
        });
    }
    g.finish();
}

fn owner_tracking(c: &mut Criterion) {
    let kvs = workload();
    let settings = Settings::new(Rules::profile(Profile::Immutable));
    let mut g = c.benchmark_group("planner");
    g.throughput(Throughput::Elements(kvs.len() as u64));
    g.bench_function("initial-copy-in-key-order", |b| {
        b.iter_batched(
            || settings.planner(1),
            |mut p| {
                let mut out = Vec::new();
                for (rev, (k, v)) in kvs.iter().enumerate() {
                    let change = Change::Put { key: k.clone().into_bytes(), value: v.clone(), lease: 0 };
                    p.change(rev as i64 + 1, change, &mut out).expect("within the held bound");
                }
                out.len()
            },
            BatchSize::LargeInput,
        )
    });
    g.finish();
}

fn encryption(c: &mut Criterion) {
    let (source, target) = (fixtures::keyring("key1", 1), fixtures::keyring("key1", 2));
    let boundary = Boundary::new(Some(source.clone()), Some(target.clone()));
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let plain = vec![b's'; 1024];
    let on_source = source.encrypt(&plain, &mut rng).expect("the source keyring encrypts");
    let on_target = target.encrypt(&plain, &mut rng).expect("the target keyring encrypts");
    let mut g = c.benchmark_group("secrets");
    g.throughput(Throughput::Elements(1));
    g.bench_function("reencrypt-1KiB", |b| {
        b.iter(|| match boundary.carry(&on_source, &mut rng) {
            Carry::Write(v) => v.len(),
            other => panic!("a readable Secret is carried: {other:?}"),
        })
    });
    g.bench_function("check-compare-1KiB", |b| b.iter(|| assert!(boundary.same(&on_source, &on_target))));
    g.finish();
}

/// Side `side`'s `n`-th (key, value), as a scan yields it.
fn at(side: &[(String, Vec<u8>)], n: usize) -> Option<(&[u8], &[u8])> {
    side.get(n).map(|(k, v)| (k.as_bytes(), v.as_slice()))
}

/// The check's merge ([`sync::check::merge_step`]) of the drill's keyspace against a copy with
/// one key in a hundred missed, one stale and one surplus: the in-process part of a check,
/// without the reads.
fn check_merge(c: &mut Criterion) {
    let source = workload();
    let mut target = Vec::new();
    for (i, (k, v)) in source.iter().enumerate() {
        match i % 100 {
            0 => {}
            1 => target.push((k.clone(), b"changed".to_vec())),
            2 => {
                target.push((k.clone(), v.clone()));
                target.push((format!("{k}-surplus"), v.clone()));
            }
            _ => target.push((k.clone(), v.clone())),
        }
    }
    target.sort();
    let boundary = Boundary::new(None, None);
    let per_100 = source.len().div_ceil(100) as u64;
    let mut g = c.benchmark_group("check");
    g.throughput(Throughput::Elements(source.len() as u64));
    g.bench_function("merge-drill-keyspace", |b| {
        b.iter(|| {
            let (mut r, mut i, mut j) = (sync::check::Report::default(), 0, 0);
            while let Some(step) = sync::check::merge_step(&mut r, &boundary, at(&source, i), at(&target, j)) {
                match step {
                    Advance::Source => i += 1,
                    Advance::Target => j += 1,
                    Advance::Both => (i, j) = (i + 1, j + 1),
                }
            }
            // The merge found what was planted (this runs in `cargo test` too).
            assert_eq!((r.missed.count, r.stale.count, r.surplus.count), (per_100, per_100, per_100));
            r.missed.count
        })
    });
    g.finish();
}

criterion_group!(benches, keys_and_rules, owner_tracking, encryption, check_merge);
criterion_main!(benches);
