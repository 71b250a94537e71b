//! The sync's in-process parts, measured with criterion (`cargo bench --bench sync_parts`):
//! key parsing, rule matching, owner tracking (the planner over a workload in key order, where
//! dependents come before their owners), envelope re-encryption, and the check's per-key compare
//! of re-encrypted Secrets. `cargo test` runs each once (criterion's test mode) — the smoke mode
//! that keeps these benches from rotting; timing goals live in the figures, never in tests.

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use harness::fixtures;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
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

criterion_group!(benches, keys_and_rules, owner_tracking, encryption);
criterion_main!(benches);
