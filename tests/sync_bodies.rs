//! The same sync test bodies against the simulated etcds (inside turmoil) and against real etcd
//! (3.4 source, 3.5 target). Each body drives the real engine in-process through an [`Env`]
//! that differs only in its connector and endpoints: a crash is an abort of the engine task
//! (its memory and connections are gone), a compaction is the etcd Compact call.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use etcd_client::GetOptions;
use harness::fixtures::{self, capi};
use harness::observe::OwnerOrder;
use harness::real_etcd::{EtcdOptions, EtcdServer, EtcdVersion};
use sim::etcd::{Config, SimEtcd};
use sim::net::{Connector as SimConnector, Links};
use sim::trace::Trace;
use sim::world::{add_etcd, builder};
use sync::conn::{ConnConfig, Connector, Etcd};
use sync::control::Control;
use sync::engine::{Engine, Handle, Phase, Settings};
use sync::rules::{Profile, Rules};
use sync::target::GateState;

const SEED: u64 = 41;
/// Bound on every wait in a body (simulated or real seconds).
const WAIT: Duration = Duration::from_secs(60);

struct Env {
    source: Etcd,
    target: Etcd,
    source_cfg: ConnConfig,
    target_cfg: ConnConfig,
    connector: Connector,
    settings: Mutex<Settings>,
    handle: Mutex<Handle>,
    task: Mutex<Option<tokio::task::JoinHandle<Result<(), sync::engine::SyncError>>>>,
}

impl Env {
    async fn new(source_cfg: ConnConfig, target_cfg: ConnConfig, connector: Connector) -> Result<Env, String> {
        let source = sync::conn::connect(&source_cfg, &connector, 0).await.map_err(|e| e.to_string())?;
        let target = sync::conn::connect(&target_cfg, &connector, 0).await.map_err(|e| e.to_string())?;
        let mut settings = Settings::new(Rules::profile(Profile::Immutable));
        settings.seed = SEED;
        settings.page_keys = 50;
        Ok(Env {
            source,
            target,
            source_cfg,
            target_cfg,
            connector,
            settings: Mutex::new(settings),
            handle: Mutex::default(),
            task: Mutex::default(),
        })
    }

    fn settings(&self) -> Settings {
        self.settings.lock().expect("settings").clone()
    }

    fn handle(&self) -> Handle {
        self.handle.lock().expect("handle").clone()
    }

    /// Starts a fresh engine (a new process, as far as the engine can tell).
    fn start_sync(&self) {
        let handle = Handle::default();
        *self.handle.lock().expect("handle") = handle.clone();
        let engine = Engine {
            source: self.source_cfg.clone(),
            target: self.target_cfg.clone(),
            source_connector: self.connector.clone(),
            target_connector: self.connector.clone(),
            settings: self.settings(),
            handle,
        };
        *self.task.lock().expect("task") = Some(tokio::spawn(async move { engine.run().await }));
    }

    fn crash_sync(&self) {
        if let Some(t) = self.task.lock().expect("task").take() {
            t.abort();
        }
    }

    fn control(&self) -> Control {
        Control {
            source: self.source_cfg.clone(),
            target: self.target_cfg.clone(),
            source_connector: self.connector.clone(),
            target_connector: self.connector.clone(),
            rules: self.settings().rules,
            boundary: self.settings().boundary,
            handle: self.handle(),
            page_keys: 50,
        }
    }

    async fn put_all(&self, kvs: Vec<(String, Vec<u8>)>) -> Result<(), String> {
        let mut kv = self.source.kv.clone();
        for (k, v) in kvs {
            self.source.call(kv.put(k, v, None)).await.map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    async fn source_head(&self) -> Result<i64, String> {
        let mut kv = self.source.kv.clone();
        let r = self
            .source
            .call(kv.get(vec![0u8], Some(GetOptions::new().with_count_only())))
            .await
            .map_err(|e| e.to_string())?;
        Ok(r.header().map(|h| h.revision()).unwrap_or_default())
    }

    /// Waits until the engine has applied the source head and streams.
    async fn caught_up(&self) -> Result<sync::engine::Status, String> {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let want = self.source_head().await?;
            let st = self.handle().status();
            if st.checkpoint >= want && st.phase == Phase::Streaming {
                return Ok(st);
            }
            if tokio::time::Instant::now() > deadline {
                return Err(format!("not caught up with {want}: {st:?}"));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn clean_check(&self) -> Result<(), String> {
        let r = self.control().check(false).await.map_err(|e| e.to_string())?;
        if r.is_clean() { Ok(()) } else { Err(r.text()) }
    }
}

fn standby_global() -> (String, Vec<u8>) {
    capi("clusters", "Cluster", "global", "uid-standby-global", &[])
}

/// Initial copy (dependents sort before owners) and streaming: converged, owners first, the
/// standby's own global untouched.
async fn initial_and_streaming(env: &Env) -> Result<(), String> {
    for c in ["wl-a", "wl-b", "wl-c", "wl-d", "wl-e", "wl-f"] {
        env.put_all(fixtures::workload_cluster(c, 10)).await?;
    }
    env.put_all(vec![capi("clusters", "Cluster", "global", "uid-primary-global", &[])]).await?;
    let (gk, gv) = standby_global();
    let mut tkv = env.target.kv.clone();
    env.target.call(tkv.put(gk.clone(), gv.clone(), None)).await.map_err(|e| e.to_string())?;
    let observer = OwnerOrder::default();
    let rules = env.settings().rules;
    tokio::spawn(observer.clone().run(env.target.clone(), move |k| rules.includes(k)));
    tokio::time::sleep(Duration::from_millis(200)).await;
    env.start_sync();
    let st = env.caught_up().await?;
    if st.held_total == 0 {
        return Err(format!("the key-ordered copy met dependents first and must have held some: {st:?}"));
    }
    env.put_all(fixtures::workload_cluster("wl-g", 4)).await?;
    env.caught_up().await?;
    env.clean_check().await?;
    let g = env.target.call(tkv.get(gk, None)).await.map_err(|e| e.to_string())?;
    if g.kvs().first().map(|kv| kv.value()) != Some(gv.as_slice()) {
        return Err("the standby's own global Cluster was overwritten".into());
    }
    let v = observer.violations();
    if !v.is_empty() {
        return Err(format!("dependents before owners: {v:?}"));
    }
    Ok(())
}

/// The engine is killed again and again while the source is written: nothing is lost.
async fn crash_and_resume(env: &Env) -> Result<(), String> {
    env.start_sync();
    for round in 0..5 {
        let writes = fixtures::workload_cluster(&format!("wl-{round}"), 6);
        let (source, kvs) = (env.source.clone(), writes);
        let writer = tokio::spawn(async move {
            let mut kv = source.kv.clone();
            for (k, v) in kvs {
                source.call(kv.put(k, v, None)).await.map_err(|e| e.to_string())?;
            }
            Ok::<(), String>(())
        });
        tokio::time::sleep(Duration::from_millis(15 + round * 7)).await;
        env.crash_sync();
        writer.await.map_err(|e| e.to_string())??;
        env.start_sync();
    }
    env.caught_up().await?;
    env.clean_check().await
}

/// A Machine of `wl-a` that the compaction bodies delete on the source while the sync is down.
const GONE: &str = "/registry/cluster.x-k8s.io/machines/cpaas-system/wl-a-md-0-m7";

/// With the sync down: deletes `gone` on the source, writes more, compacts the source at its head;
/// then restarts the sync and waits until it caught up, which must have taken a resync.
async fn delete_compact_and_restart(env: &Env, gone: &str) -> Result<sync::engine::Status, String> {
    let mut kv = env.source.kv.clone();
    env.source.call(kv.delete(gone, None)).await.map_err(|e| e.to_string())?;
    env.put_all(fixtures::workload_cluster("wl-b", 3)).await?;
    let head = env.source_head().await?;
    env.source.call(kv.compact(head, None)).await.map_err(|e| e.to_string())?;
    env.start_sync();
    let st = env.caught_up().await?;
    if st.resyncs == 0 {
        return Err(format!("a compacted checkpoint must resync: {st:?}"));
    }
    Ok(st)
}

/// Keys deleted on the source while the sync is down, history compacted meanwhile: the restart
/// resyncs and deletes what it can prove it wrote (make-mirror restarted without `--rev` would
/// leave them as surplus).
async fn compaction_while_down(env: &Env) -> Result<(), String> {
    env.put_all(fixtures::workload_cluster("wl-a", 8)).await?;
    env.start_sync();
    env.caught_up().await?;
    env.crash_sync();
    let mut kv = env.source.kv.clone();
    env.source
        .call(kv.delete("/registry/secrets/cpaas-system/wl-a-md-0-m7-bootstrap", None))
        .await
        .map_err(|e| e.to_string())?;
    let st = delete_compact_and_restart(env, GONE).await?;
    let mut tkv = env.target.kv.clone();
    if !env.target.call(tkv.get(GONE, None)).await.map_err(|e| e.to_string())?.kvs().is_empty() {
        return Err(format!("{GONE} was deleted on the source but survived the resync: {:?}", st.surplus));
    }
    env.clean_check().await
}

/// As above, but the standby compacted its own history too (kube-apiserver does every 5 minutes),
/// so only the sync's ledger can prove which target keys it wrote: the key deleted on the source
/// goes; a key the standby wrote itself between two sync txns stays, reported as surplus.
async fn compaction_on_both_sides_while_down(env: &Env) -> Result<(), String> {
    env.put_all(fixtures::workload_cluster("wl-a", 8)).await?;
    env.start_sync();
    env.caught_up().await?;
    let (ours, v) = capi("machines", "Machine", "standby-only", "uid-standby-only", &[]);
    let mut tkv = env.target.kv.clone();
    env.target.call(tkv.put(ours.clone(), v, None)).await.map_err(|e| e.to_string())?;
    // More sync txns after the standby's own write: it sits in a gap between the sync's ranges.
    env.put_all(fixtures::workload_cluster("wl-c", 2)).await?;
    env.caught_up().await?;
    env.crash_sync();
    // A write out of scope, then the standby's compaction at its head: no sync txn's revision is
    // readable in its history any more.
    let lease = "/registry/leases/kube-system/kube-controller-manager";
    env.target.call(tkv.put(lease, "standby", None)).await.map_err(|e| e.to_string())?;
    let t_head = env.target.call(tkv.get(lease, None)).await.map_err(|e| e.to_string())?;
    let t_head = t_head.header().map(|h| h.revision()).unwrap_or_default();
    env.target.call(tkv.compact(t_head, None)).await.map_err(|e| e.to_string())?;
    let st = delete_compact_and_restart(env, GONE).await?;
    let gone = GONE;
    if !env.target.call(tkv.get(gone, None)).await.map_err(|e| e.to_string())?.kvs().is_empty() {
        return Err(format!("{gone} was deleted on the source but survived the resync: {:?}", st.surplus));
    }
    if env.target.call(tkv.get(ours.as_str(), None)).await.map_err(|e| e.to_string())?.kvs().is_empty() {
        return Err(format!("{ours} was the standby's own write, yet the resync deleted it"));
    }
    if st.surplus != vec![ours.clone()] {
        return Err(format!("the surplus reported must be exactly {ours}: {:?}", st.surplus));
    }
    let r = env.control().check(false).await.map_err(|e| e.to_string())?;
    if r.surplus.keys != vec![ours.clone()] || r.missed.count + r.stale.count != 0 {
        return Err(r.text());
    }
    Ok(())
}

/// A failback's reverse sync onto an old primary that was the source before: a key the new
/// source deleted since the failover (last written at or below the baseline revision) goes; one
/// the old primary wrote after the baseline is surplus, reported and kept.
async fn failback_baseline(env: &Env) -> Result<(), String> {
    baseline_body(env, true).await
}

async fn baseline_body(env: &Env, with_baseline: bool) -> Result<(), String> {
    let kept = fixtures::workload_cluster("wl-a", 4);
    env.put_all(kept.clone()).await?;
    // The old primary (the target here) as the failover left it: the same keys, and one the new
    // primary has deleted since.
    let (copy, cv) = capi("machines", "Machine", "deleted-since", "uid-deleted-since", &[]);
    let mut tkv = env.target.kv.clone();
    for (k, v) in kept.iter().cloned().chain([(copy.clone(), cv)]) {
        env.target.call(tkv.put(k, v, None)).await.map_err(|e| e.to_string())?;
    }
    let baseline = env.target.call(tkv.get(copy.as_str(), None)).await.map_err(|e| e.to_string())?;
    let baseline = baseline.header().map(|h| h.revision()).unwrap_or_default();
    // A dying primary's write after R: nobody can tell whether it matters.
    let (late, lv) = capi("machines", "Machine", "written-after-r", "uid-after-r", &[]);
    env.target.call(tkv.put(late.clone(), lv, None)).await.map_err(|e| e.to_string())?;
    env.settings.lock().expect("settings").baseline_revision = with_baseline.then_some(baseline);
    env.start_sync();
    let st = env.caught_up().await?;
    if !env.target.call(tkv.get(copy.as_str(), None)).await.map_err(|e| e.to_string())?.kvs().is_empty() {
        return Err(format!("{copy} was deleted on the source since the baseline but survived: {:?}", st.surplus));
    }
    if env.target.call(tkv.get(late.as_str(), None)).await.map_err(|e| e.to_string())?.kvs().is_empty() {
        return Err(format!("{late} was written after the baseline, yet the resync deleted it"));
    }
    if st.surplus != vec![late.clone()] {
        return Err(format!("the surplus reported must be exactly {late}: {:?}", st.surplus));
    }
    Ok(())
}

/// Held keys carry their reason, survive a restart (they are bookkeeping on the target) and are
/// released once their owner lands; a leased key is skipped, never written without expiry.
async fn held_keys_survive_a_restart_and_leased_keys_are_skipped(env: &Env) -> Result<(), String> {
    let (orphan, v) = capi("machines", "Machine", "waits-for-owner", "uid-w", &[("MachineSet", "late-ms", "uid-late")]);
    let (excluded, v2) =
        capi("machines", "Machine", "owned-by-global", "uid-g", &[("MachineSet", "global-ms", "uid-global-ms")]);
    let global_ms = capi("machinesets", "MachineSet", "global-ms", "uid-global-ms", &[]);
    env.put_all(vec![global_ms, (orphan.clone(), v), (excluded.clone(), v2)]).await?;
    let mut lease = env.source.lease.clone();
    let granted = env.source.call(lease.grant(600, None)).await.map_err(|e| e.to_string())?;
    let (leased, lv) = capi("machines", "Machine", "leased", "uid-leased", &[]);
    let mut kv = env.source.kv.clone();
    let opts = etcd_client::PutOptions::new().with_lease(granted.id());
    env.source.call(kv.put(leased.clone(), lv, Some(opts))).await.map_err(|e| e.to_string())?;
    env.start_sync();
    let want = |st: &sync::engine::Status| {
        let mut held: Vec<(String, String)> = st.held.clone();
        held.sort();
        held
    };
    let expected =
        vec![(excluded.clone(), "owner-excluded".to_string()), (orphan.clone(), "owner-absent-on-source".to_string())];
    let st = env.caught_up().await?;
    if want(&st) != expected || st.skipped_leased == 0 {
        return Err(format!("held {:?} skipped_leased {} (want {expected:?} and ≥ 1)", st.held, st.skipped_leased));
    }
    let mut tkv = env.target.kv.clone();
    for k in [&orphan, &excluded, &leased] {
        if !env.target.call(tkv.get(k.as_str(), None)).await.map_err(|e| e.to_string())?.kvs().is_empty() {
            return Err(format!("{k} reached the target"));
        }
    }
    let r = env.control().check(false).await.map_err(|e| e.to_string())?;
    if r.held.count != 2 || r.missed.count != 0 || r.held_pending != 0 {
        return Err(format!("the check must list two held keys, none pending, nothing missed:\n{}", r.text()));
    }
    // A restart resumes with the same holds (no resync rebuilt them).
    env.crash_sync();
    env.start_sync();
    let st = env.caught_up().await?;
    if want(&st) != expected || st.resyncs != 0 {
        return Err(format!("after a restart: held {:?}, resyncs {}", st.held, st.resyncs));
    }
    // The owner lands on the source: the orphan is released after it, in order.
    env.put_all(vec![capi("machinesets", "MachineSet", "late-ms", "uid-late", &[])]).await?;
    let st = env.caught_up().await?;
    if want(&st) != vec![(excluded.clone(), "owner-excluded".to_string())] {
        return Err(format!("the orphan's owner landed but it is still held: {:?}", st.held));
    }
    if env.target.call(tkv.get(orphan.as_str(), None)).await.map_err(|e| e.to_string())?.kvs().is_empty() {
        return Err(format!("{orphan} was released but did not land"));
    }
    Ok(())
}

/// A checkpoint that belongs to another source cluster, to a source revision the source does
/// not have, or whose anchor — the source write it names — the source's history no longer holds
/// at that revision (restored from a snapshot, its head past the checkpoint again), forces a
/// resync instead of a resume: the resync restores a key a resume would never have looked at again.
async fn foreign_or_future_checkpoint_forces_a_resync(env: &Env) -> Result<(), String> {
    env.put_all(fixtures::workload_cluster("wl-a", 3)).await?;
    for round in 0..3 {
        env.start_sync();
        env.caught_up().await?;
        if round == 2 {
            // A streamed put, so that the checkpoint names an anchor.
            env.put_all(vec![fixtures::capi("clusters", "Cluster", "anchor", "uid-anchor", &[])]).await?;
            env.caught_up().await?;
        }
        env.crash_sync();
        let cp = sync::target::read_checkpoint(&env.target).await.map_err(|e| e.to_string())?.ok_or("no checkpoint")?;
        let anchor = match (round, cp.anchor.clone()) {
            (2, None) => return Err(format!("a streamed checkpoint names no anchor: {cp:?}")),
            (2, Some(a)) => Some(sync::anchor::Anchor { value_digest: "0000000000000000".into(), ..a }),
            (_, a) => a,
        };
        let forged = sync::target::Checkpoint {
            source_cluster_id: if round == 0 { cp.source_cluster_id ^ 0x5a5a } else { cp.source_cluster_id },
            revision: cp.revision + if round == 1 { 1_000 } else { 0 },
            anchor,
            ..cp
        };
        let mut tkv = env.target.kv.clone();
        let victim = "/registry/cluster.x-k8s.io/machines/cpaas-system/wl-a-md-0-m1";
        env.target.call(tkv.delete(victim, None)).await.map_err(|e| e.to_string())?;
        let body = serde_json::to_vec(&forged).map_err(|e| e.to_string())?;
        env.target.call(tkv.put(sync::target::checkpoint_key(), body, None)).await.map_err(|e| e.to_string())?;
        env.start_sync();
        let st = env.caught_up().await?;
        if st.resyncs == 0 {
            return Err(format!("round {round}: checkpoint {forged:?} was resumed from instead of resynced"));
        }
        if env.target.call(tkv.get(victim, None)).await.map_err(|e| e.to_string())?.kvs().is_empty() {
            return Err(format!("round {round}: the resync did not restore {victim}"));
        }
        env.clean_check().await?;
        env.crash_sync();
    }
    Ok(())
}

/// After a failover takes the gate, a leftover sync cannot write a single key.
async fn zombie_is_fenced_by_the_gate(env: &Env) -> Result<(), String> {
    env.put_all(fixtures::workload_cluster("wl-a", 2)).await?;
    env.start_sync();
    env.caught_up().await?;
    env.control().set_gate(GateState::Cleared, "failover-test").await.map_err(|e| e.to_string())?;
    env.put_all(vec![capi("clusters", "Cluster", "after-failover", "uid-after", &[])]).await?;
    let deadline = tokio::time::Instant::now() + WAIT;
    while env.handle().status().phase != Phase::Failed {
        if tokio::time::Instant::now() > deadline {
            return Err(format!("the zombie kept running: {:?}", env.handle().status()));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut tkv = env.target.kv.clone();
    let k = "/registry/cluster.x-k8s.io/clusters/cpaas-system/after-failover";
    if !env.target.call(tkv.get(k, None)).await.map_err(|e| e.to_string())?.kvs().is_empty() {
        return Err("a write landed after the gate was cleared".into());
    }
    // A restarted zombie refuses to start over a cleared gate.
    env.start_sync();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let st = env.handle().status();
    match st.last_error {
        Some(e) if e.contains("Cleared") && st.phase == Phase::Failed => Ok(()),
        _ => Err(format!("a sync started over a cleared gate: {st:?}")),
    }
}

/// Secrets encrypted with the primary's key reach a standby whose `key1` is another secret,
/// re-encrypted so the standby reads them; the check compares plaintexts.
async fn secrets_cross_the_encryption_boundary(env: &Env) -> Result<(), String> {
    use rand::SeedableRng;
    let (a, b) = (fixtures::keyring("key1", 1), fixtures::keyring("key1", 2));
    env.settings.lock().expect("settings").boundary = sync::crypto::Boundary::new(Some(a.clone()), Some(b.clone()));
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(SEED);
    let mut plain = Vec::new();
    let kvs: Vec<(String, Vec<u8>)> = fixtures::workload_cluster("wl-enc", 5)
        .into_iter()
        .map(|(k, v)| {
            if k.starts_with("/registry/secrets/") {
                plain.push((k.clone(), v.clone()));
                let ct = a.encrypt(&v, &mut rng).expect("encrypts");
                (k, ct)
            } else {
                (k, v)
            }
        })
        .collect();
    env.put_all(kvs).await?;
    env.start_sync();
    env.caught_up().await?;
    let mut tkv = env.target.kv.clone();
    for (k, p) in &plain {
        let r = env.target.call(tkv.get(k.as_str(), None)).await.map_err(|e| e.to_string())?;
        let v = r.kvs().first().map(|kv| kv.value().to_vec()).ok_or(format!("{k} missing on the standby"))?;
        if b.decrypt(&v).as_ref() != Some(p) {
            return Err(format!("the standby cannot read {k} with its own key"));
        }
    }
    env.clean_check().await
}

/// A 128-op source txn plus the checkpoint exceeds the target's 128-op limit: it is split, the
/// split is counted, and the standby still converges.
async fn oversized_revision_is_split(env: &Env) -> Result<(), String> {
    env.start_sync();
    env.caught_up().await?;
    let ops: Vec<etcd_client::TxnOp> = (0..128)
        .map(|i| etcd_client::TxnOp::put(format!("/registry/secrets/cpaas-system/bulk-{i:03}"), vec![b'x'; 64], None))
        .collect();
    let mut kv = env.source.kv.clone();
    env.source.call(kv.txn(etcd_client::Txn::new().and_then(ops))).await.map_err(|e| e.to_string())?;
    let st = env.caught_up().await?;
    if st.split_revisions < 1 {
        return Err(format!("a 128-op revision must be split: {st:?}"));
    }
    env.clean_check().await
}

/// Freeze holds later source writes back until resume; the uninstall is refused on an
/// inconsistent standby and goes through only when forced by a named operator.
async fn freeze_resume_and_guarded_uninstall(env: &Env) -> Result<(), String> {
    env.put_all(fixtures::workload_cluster("wl-a", 3)).await?;
    env.start_sync();
    env.caught_up().await?;
    let control = env.control();
    let frozen = control.freeze(None, WAIT).await.map_err(|e| e.to_string())?;
    if !frozen.reached {
        return Err(format!("freeze did not reach its revision: {frozen:?}"));
    }
    env.put_all(vec![capi("clusters", "Cluster", "late", "uid-late", &[])]).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let st = env.handle().status();
    if st.phase != Phase::Frozen || st.checkpoint != frozen.revision {
        return Err(format!("a frozen sync applied past {}: {st:?}", frozen.revision));
    }
    control.resume();
    env.caught_up().await?;
    let mut tkv = env.target.kv.clone();
    let victim = "/registry/cluster.x-k8s.io/machines/cpaas-system/wl-a-md-0-m1";
    env.target.call(tkv.delete(victim, None)).await.map_err(|e| e.to_string())?;
    match control.uninstall(None).await {
        Err(sync::control::ControlError::Refused { report }) if report.contains(victim) => {}
        other => return Err(format!("an inconsistent uninstall must be refused naming {victim}: {other:?}")),
    }
    let done = control.uninstall(Some("bob@ops")).await.map_err(|e| e.to_string())?;
    if done.forced_by.as_deref() != Some("bob@ops") || done.gate.state != GateState::Uninstalled {
        return Err(format!("{done:?}"));
    }
    if done.gate.proven_at.is_some() {
        return Err(format!("a forced uninstall proves no copy: {done:?}"));
    }
    Ok(())
}

/// A DR-aware upgrade: a clean uninstall records its proof in the gate; while the sync is gone
/// the source deletes a key and both sides compact (no history, and the new epoch's ledger is
/// empty), and the standby writes a key of its own. The reinstall deletes the copy and reports
/// the standby's key as surplus.
async fn reinstall_after_a_clean_uninstall(env: &Env) -> Result<(), String> {
    env.put_all(fixtures::workload_cluster("wl-a", 8)).await?;
    env.start_sync();
    env.caught_up().await?;
    let done = env.control().uninstall(None).await.map_err(|e| e.to_string())?;
    if done.gate.proven_at.is_none() {
        return Err(format!("a clean uninstall records its proof: {done:?}"));
    }
    env.crash_sync();
    let mut kv = env.source.kv.clone();
    env.source.call(kv.delete(GONE, None)).await.map_err(|e| e.to_string())?;
    let head = env.source_head().await?;
    env.source.call(kv.compact(head, None)).await.map_err(|e| e.to_string())?;
    let mut tkv = env.target.kv.clone();
    let (ours, v) = capi("machines", "Machine", "standby-after-uninstall", "uid-after", &[]);
    let r = env.target.call(tkv.put(ours.clone(), v, None)).await.map_err(|e| e.to_string())?;
    let t_head = r.header().map(|h| h.revision()).unwrap_or_default();
    env.target.call(tkv.compact(t_head, None)).await.map_err(|e| e.to_string())?;
    env.settings.lock().expect("settings").reinstall = true;
    env.start_sync();
    let st = env.caught_up().await?;
    if !env.target.call(tkv.get(GONE, None)).await.map_err(|e| e.to_string())?.kvs().is_empty() {
        return Err(format!("{GONE} was deleted on the source while uninstalled but survived: {:?}", st.surplus));
    }
    if env.target.call(tkv.get(ours.as_str(), None)).await.map_err(|e| e.to_string())?.kvs().is_empty() {
        return Err(format!("{ours} was the standby's own write after the proof, yet the resync deleted it"));
    }
    if st.surplus != vec![ours.clone()] {
        return Err(format!("the surplus reported must be exactly {ours}: {:?}", st.surplus));
    }
    Ok(())
}

type Body = for<'a> fn(&'a Env) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), String>> + 'a>>;

fn run_sim(body: Body) {
    let links = Links::default();
    let trace = Trace::new(None).expect("trace");
    let mut sim = builder(SEED, Duration::from_secs(600), Duration::from_millis(1)).build();
    add_etcd(
        &mut sim,
        "primary",
        SimEtcd::new(Config { seed: SEED, ..Config::default() }),
        links.clone(),
        trace.clone(),
    );
    add_etcd(&mut sim, "standby", SimEtcd::new(Config { seed: SEED + 1, ..Config::default() }), links.clone(), trace);
    let out: Arc<Mutex<Option<Result<(), String>>>> = Arc::default();
    let slot = out.clone();
    sim.client("tester", async move {
        let connector = Connector::custom(SimConnector::new(links));
        let env =
            Env::new(harness::simsync::conn_config("primary"), harness::simsync::conn_config("standby"), connector)
                .await;
        let r = match env {
            Ok(env) => {
                let r = body(&env).await;
                env.crash_sync();
                r
            }
            Err(e) => Err(e),
        };
        *slot.lock().expect("slot") = Some(r);
        Ok(())
    });
    sim.run().unwrap_or_else(|e| panic!("sim (seed={SEED}): {e}"));
    let r = out.lock().expect("slot").take().expect("body finished");
    if let Err(e) = r {
        panic!("simulated etcd: {e} (reproduce with seed={SEED})");
    }
}

fn run_real(body: Body) {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    rt.block_on(async {
        let src = EtcdServer::start(EtcdVersion::V34, EtcdOptions::default()).await.unwrap_or_else(|e| panic!("{e}"));
        let tgt = EtcdServer::start(EtcdVersion::V35, EtcdOptions::default()).await.unwrap_or_else(|e| panic!("{e}"));
        let env = Env::new(ConnConfig::new([src.endpoint()]), ConnConfig::new([tgt.endpoint()]), Connector::Tcp)
            .await
            .expect("env");
        let r = body(&env).await;
        env.crash_sync();
        if let Err(e) = r {
            panic!("real etcd {} → {}: {e}", src.version, tgt.version);
        }
    });
}

macro_rules! both {
    ($body:ident, $sim:ident, $real:ident) => {
        #[test]
        fn $sim() {
            run_sim(|e| Box::pin($body(e)));
        }
        #[test]
        fn $real() {
            run_real(|e| Box::pin($body(e)));
        }
    };
}

both!(initial_and_streaming, initial_and_streaming_sim, initial_and_streaming_real);
both!(crash_and_resume, crash_and_resume_sim, crash_and_resume_real);
both!(compaction_while_down, compaction_while_down_sim, compaction_while_down_real);
both!(compaction_on_both_sides_while_down, compaction_on_both_sides_sim, compaction_on_both_sides_real);
both!(held_keys_survive_a_restart_and_leased_keys_are_skipped, held_and_leased_sim, held_and_leased_real);
both!(foreign_or_future_checkpoint_forces_a_resync, foreign_checkpoint_sim, foreign_checkpoint_real);
both!(zombie_is_fenced_by_the_gate, zombie_is_fenced_by_the_gate_sim, zombie_is_fenced_by_the_gate_real);
both!(secrets_cross_the_encryption_boundary, encryption_boundary_sim, encryption_boundary_real);
both!(oversized_revision_is_split, oversized_revision_is_split_sim, oversized_revision_is_split_real);
both!(freeze_resume_and_guarded_uninstall, freeze_and_uninstall_sim, freeze_and_uninstall_real);
both!(failback_baseline, failback_baseline_sim, failback_baseline_real);
both!(reinstall_after_a_clean_uninstall, reinstall_after_uninstall_sim, reinstall_after_uninstall_real);

/// Without the gate's proof (the `baseline-off` mutant) the reinstall cannot tell the copy of the
/// deleted key from a standby-only write: it stays as surplus.
#[cfg(feature = "mutants")]
#[test]
fn baseline_off_leaves_the_copy_after_a_reinstall() {
    run_sim(|env| {
        Box::pin(async move {
            env.settings.lock().expect("settings").baseline_off = true;
            match reinstall_after_a_clean_uninstall(env).await {
                Err(e) if e.contains("deleted on the source while uninstalled but survived") => Ok(()),
                other => Err(format!("baseline-off must leave the copy behind: {other:?}")),
            }
        })
    });
}

/// Without the baseline (a forced failover proved no copy) the key the source deleted since is
/// surplus like any other old-primary-only key: the body's first check fails.
#[test]
fn without_a_baseline_the_deleted_copy_is_surplus() {
    run_sim(|env| {
        Box::pin(async move {
            match baseline_body(env, false).await {
                Err(e) if e.contains("deleted on the source since the baseline but survived") => Ok(()),
                other => Err(format!("without a baseline the copy must stay: {other:?}")),
            }
        })
    });
}

/// Without the ledger (the `ledger-off` mutant) the key deleted on the source is not provably the
/// sync's once the standby's history is compacted: the resync leaves it as surplus.
#[cfg(feature = "mutants")]
#[test]
fn ledger_off_leaves_the_deleted_key_as_surplus() {
    run_sim(|env| {
        Box::pin(async move {
            env.settings.lock().expect("settings").ledger_off = true;
            match compaction_on_both_sides_while_down(env).await {
                Err(e) if e.contains("survived the resync") => Ok(()),
                other => Err(format!("ledger-off must leave the deleted key behind: {other:?}")),
            }
        })
    });
}
