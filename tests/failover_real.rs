//! The real orchestrator (`failover::real`, the shipped `dr-failover`) on real parts: two etcd
//! servers on loopback (3.4 primary, 3.5 standby), the shipped `etcd-sync` daemon between them,
//! hooks as the operator's scripts (fence, DNS, pausing — here they keep their state in files),
//! and a TLS ingress stand-in serving the platform certificate. A planned failover end to end
//! through the CLI; a guard refusing an inconsistent standby and the abort undoing it; the
//! daemon's own guard holding when the orchestrator's is off (mutant `uninstall-guard-off`);
//! preflight reading both etcds; bad input and an unreachable standby.

#[path = "failover_real/world.rs"]
mod world;

use world::*;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use etcd_client::GetOptions;
use failover::real::RealPorts;
use failover::real::config::Config;
use harness::daemon::{free_port, status};
use harness::fixtures;
use harness::pki::Pki;
use harness::real_etcd::{EtcdOptions, EtcdServer, EtcdVersion};
use harness::real_ingress::Ingress;
use sync::conn::Connector;
use sync::target::GateState;

#[test]
fn planned_failover_with_the_shipped_daemon_and_orchestrator() {
    runtime().block_on(async {
        let mut w = World::start_with("required_components: [cpaas-system/capi-controller-manager]\n", 60).await;
        let writer = w.writer();
        let (code, out) = w.cli(&["run", "--dry-run"]);
        assert_eq!(code, 0, "{out}");
        assert!(out.contains("dry run, nothing changed") && out.contains("guards (check at source"), "{out}");
        assert!(out.contains("guards") && out.contains(": passes"), "{out}");
        assert_eq!(w.state("dns").trim(), PRIMARY_VIP, "a dry run changes nothing");
        assert_eq!(w.gate().await, GateState::Syncing);

        let (code, out) = w.cli(&["run"]);
        assert_eq!(code, 0, "{out}");
        assert!(out.contains("failover: done; RPO 0 keys"), "{out}");
        for step in ["fence-primary", "pinned-check", "uninstall-sync", "clear-gate", "switch-dns", "verify-ingress"] {
            assert!(out.contains(step), "step {step} reported: {out}");
        }
        let written = writer.await.expect("writer");
        assert!(written > 0, "the primary took writes until it was fenced");
        assert_eq!(w.state("dns").trim(), STANDBY_VIP, "the platform domain points at the standby");
        assert_eq!(w.gate().await, GateState::Cleared);
        let exit = w.daemon_exit().expect("the uninstalled daemon exits");
        assert!(exit.success(), "{exit}");
        let log = w.state("pause.log");
        let all = "cpaas-system/wl-a,cpaas-system/wl-b,cpaas-system/wl-c";
        assert_eq!(log, format!("primary true {all}\nstandby true {all}\nstandby false {all}\n"), "{log}");
        let mut kv = w.target.kv.clone();
        let wl =
            w.target.call(kv.get("/registry/cluster.x-k8s.io/clusters/cpaas-system/wl-a", None)).await.expect("get");
        let wl: serde_json::Value = serde_json::from_slice(wl.kvs()[0].value()).expect("json");
        assert_eq!(wl["spec"]["paused"], false, "unpaused on the new primary after validation: {wl}");

        // No write after R, and the standby holds all of it: an independent check, now.
        let (code, status_out) = w.cli(&["status"]);
        assert_eq!(code, 0, "{status_out}");
        let progress: failover::step::Progress = serde_json::from_str(&status_out).expect("progress JSON");
        assert!(progress.complete(), "{progress:?}");
        assert_eq!(progress.source_revision, Some(head(&w.source).await), "the primary wrote nothing after R");
        let resolved = sync::config::SyncConfig::load(&w.dir.path().join("etcd-sync.yaml"))
            .and_then(|c| c.resolve())
            .expect("sync config");
        // The two sides differ now only where they should: the old primary's workload Clusters
        // stay paused (quiesced), the new primary's run again.
        let report = resolved.control(sync::engine::Handle::default()).check(false).await.expect("check");
        let text = report.text();
        assert_eq!((report.missed.count, report.surplus.count, report.dangling.count), (0, 0, 0), "{text}");
        let clusters =
            ["wl-a", "wl-b", "wl-c"].map(|c| format!("/registry/cluster.x-k8s.io/clusters/cpaas-system/{c}"));
        assert_eq!(report.stale.keys, clusters, "{text}");
        let mut kv = w.target.kv.clone();
        let traffic = w
            .target
            .call(kv.get(
                "/registry/cluster.x-k8s.io/machinedeployments/cpaas-system/traffic-",
                Some(GetOptions::new().with_prefix().with_count_only()),
            ))
            .await
            .expect("count");
        assert_eq!(traffic.count() as u64, written, "every write the primary acknowledged is on the standby");
        let audit = w
            .target
            .call(kv.get(failover::store::AUDIT_PREFIX, Some(GetOptions::new().with_prefix().with_count_only())))
            .await
            .expect("audit");
        assert!(audit.count() >= 14, "each step audited: {}", audit.count());

        // Run again: the completed failover is reported, nothing repeated.
        let (code, out) = w.cli(&["run"]);
        assert_eq!(code, 0, "{out}");
        assert_eq!(w.state("pause.log"), log, "nothing paused again: {out}");
    });
}

/// Roles are relative: the failback runs with a config whose primary is the serving cluster.
/// Its install hook starts the reverse `etcd-sync` with the failover's R as baseline, so what
/// the serving cluster deleted since goes from the old primary too.
#[test]
fn failback_installs_the_reverse_sync_and_hands_the_platform_back() {
    runtime().block_on(async {
        let w = World::start().await;
        let (code, out) = w.cli(&["run"]);
        assert_eq!(code, 0, "{out}");
        // The standby serves: a new workload cluster, and a Machine scaled down with its Secret.
        put_all(&w.target, vec![fixtures::capi("clusters", "Cluster", "wl-new", "uid-wl-new", &[])]).await;
        let gone = "/registry/cluster.x-k8s.io/machines/cpaas-system/wl-c-md-0-m4";
        let mut kv = w.target.kv.clone();
        w.target.call(kv.delete("/registry/secrets/cpaas-system/wl-c-md-0-m4-bootstrap", None)).await.expect("delete");
        let infra = "/registry/infrastructure.cluster.x-k8s.io/dcsmachines/cpaas-system/wl-c-md-0-m4";
        w.target.call(kv.delete(infra, None)).await.expect("delete");
        w.target.call(kv.delete(gone, None)).await.expect("delete");

        let d = w.dir.path();
        let monitor = format!("127.0.0.1:{}", free_port());
        std::fs::write(
            d.join("reverse.yaml"),
            format!(
                "source_endpoints: [{}]\ntarget_endpoints: [{}]\npage_keys: 50\n",
                w.standby.endpoint(),
                w.primary.endpoint()
            ),
        )
        .expect("reverse sync config");
        script(
            d,
            "install",
            &format!(
                r#"base=""
if [ -n "${{DRLAB_BASELINE_REVISION:-}}" ]; then base="--baseline-revision $DRLAB_BASELINE_REVISION"; fi
nohup {} run --config {} --monitor-addr {monitor} --reinstall $base >/dev/null 2>&1 &
echo $! > "$STATE/reverse.pid""#,
                binary("etcd-sync").display(),
                d.join("reverse.yaml").display()
            ),
        );
        let forward = std::fs::read_to_string(&w.config).expect("config");
        let back = forward
            .replace(
                &format!("primary: {PRIMARY_VIP}\nstandby: {STANDBY_VIP}"),
                &format!("primary: {STANDBY_VIP}\nstandby: {PRIMARY_VIP}"),
            )
            .replace("sync_config: etcd-sync.yaml", "sync_config: reverse.yaml")
            .replace(
                &format!("[./pause, {}, {}]", w.primary.endpoint(), w.standby.endpoint()),
                &format!("[./pause, {}, {}]", w.standby.endpoint(), w.primary.endpoint()),
            )
            .replace(&w.monitor, &monitor)
            .replace("[./fence, a, on]", "[./fence, b, on]")
            .replace("[./fence, a, off]", "[./fence, b, off]")
            .replace(
                "[./fence, a, status]",
                "[./fence, b, status]\n  standby_fenced: [./fence, a, status]\n  unfence_standby: [./fence, a, off]\n  \
                 install_sync: [./install]",
            );
        let back_path = d.join("failback.yaml");
        std::fs::write(&back_path, back).expect("failback config");
        let out = Command::new(binary("dr-failover"))
            .arg("--config")
            .arg(&back_path)
            .arg("failback")
            .output()
            .expect("failback");
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert_eq!(out.status.code(), Some(0), "{text}");
        assert!(text.contains("failback: done; RPO 0 keys"), "{text}");
        assert_eq!(w.state("dns").trim(), PRIMARY_VIP, "the platform is handed back");
        assert!(!w.fenced().exists(), "the old primary takes writes again");
        assert!(d.join("state/fenced-b").exists(), "the cluster that served is fenced now");
        let gate = sync::target::read_gate(&w.source).await.expect("gate").expect("the reverse sync's gate");
        assert_eq!(gate.state, GateState::Cleared);
        let mut kv = w.source.kv.clone();
        let new =
            w.source.call(kv.get("/registry/cluster.x-k8s.io/clusters/cpaas-system/wl-new", None)).await.expect("get");
        assert_eq!(new.kvs().len(), 1, "what the standby wrote while it served came back");
        let old = w.source.call(kv.get(gone, None)).await.expect("get");
        assert!(old.kvs().is_empty(), "what it deleted (written before R) was deleted on the old primary too");
        assert_eq!(w.state("dns").trim(), PRIMARY_VIP);
    });
}

#[test]
fn a_failover_stopped_by_a_failing_hook_resumes_where_it_stopped() {
    runtime().block_on(async {
        let w = World::start().await;
        std::fs::write(w.dir.path().join("state/dns-down"), "").expect("break DNS");
        let (code, out) = w.cli(&["run"]);
        assert_eq!(code, 1, "{out}");
        assert!(out.contains("switch_dns") && out.contains("DNS API unavailable"), "{out}");
        assert_eq!(w.gate().await, GateState::Cleared, "the steps before it are done");
        let (_, status_out) = w.cli(&["status"]);
        let p: failover::step::Progress = serde_json::from_str(&status_out).expect("progress");
        assert_eq!(p.done, Some(failover::step::Step::RemoveReplicationPath), "{p:?}");
        // A refused abort: the sync is uninstalled, the standby may have acted as the primary.
        let (code, out) = w.cli(&["abort"]);
        assert_eq!(code, 1, "{out}");
        assert!(out.contains("then fail back"), "{out}");

        std::fs::remove_file(w.dir.path().join("state/dns-down")).expect("repair DNS");
        let (code, out) = w.cli(&["run"]);
        assert_eq!(code, 0, "{out}");
        assert!(out.contains("failover: done; RPO 0 keys"), "{out}");
        assert_eq!(w.state("fence.log"), "on a\n", "fenced once: the resumed run did not repeat it");
        assert_eq!(w.state("dns").trim(), STANDBY_VIP);
        let log = w.state("pause.log");
        assert_eq!(log.matches("primary true").count(), 1, "the primary paused once: {log}");
    });
}

/// Seed 000's `dig +short`: the switch is done when the name answers with the standby. A DNS
/// API that accepts the change and never applies it times the step out; DNS stays as it was.
#[test]
fn a_dns_switch_that_does_not_take_times_out() {
    runtime().block_on(async {
        let w = World::start_with("", 3).await;
        std::fs::write(
            w.dir.path().join("dns"),
            "#!/bin/sh\ncase \"$1\" in show) cat \"$(dirname \"$0\")/state/dns\";; set) exit 0;; esac\n",
        )
        .expect("a DNS that ignores changes");
        let (code, out) = w.cli(&["run"]);
        assert_eq!(code, 1, "{out}");
        assert!(out.contains("SwitchDns: timed out"), "{out}");
        assert_eq!(w.state("dns").trim(), PRIMARY_VIP);
    });
}

/// Seed 000 step 6: the standby must run the provider components before its Clusters are
/// unpaused. One not ready fails the validation: the Clusters stay paused.
#[test]
fn a_required_component_not_running_fails_the_validation() {
    runtime().block_on(async {
        let w = World::start_with(
            "required_components: [cpaas-system/capi-controller-manager, cpaas-system/elemental-operator]\n",
            60,
        )
        .await;
        let (code, out) = w.cli(&["run"]);
        assert_eq!(code, 1, "{out}");
        assert!(out.contains("validation failed; clusters stay paused"), "{out}");
        assert!(out.contains("0 of 1 replicas ready (Deployment cpaas-system/elemental-operator)"), "{out}");
        assert!(!out.contains("capi-controller-manager"), "the running one passes: {out}");
        assert!(!w.state("pause.log").contains("standby false"), "nothing unpaused: {}", w.state("pause.log"));
    });
}

/// Validation reads the standby's workload Clusters and Machine bindings from its etcd: a Cluster
/// the primary saw not Ready, and a Machine whose DCSMachine is gone (its VM has no object, so
/// no controller manages it), are named; their Clusters stay paused, the validated one is not.
#[test]
fn validation_names_a_cluster_not_ready_and_a_machine_without_its_infrastructure() {
    runtime().block_on(async {
        let w = World::start().await;
        let not_ready = serde_json::json!({"type": "Ready", "status": "False", "reason": "WaitingForControlPlane"});
        w.patch_source("/registry/cluster.x-k8s.io/clusters/cpaas-system/wl-b", |v| {
            v["status"]["conditions"][0] = not_ready
        })
        .await;
        let infra = "/registry/infrastructure.cluster.x-k8s.io/dcsmachines/cpaas-system/wl-c-md-0-m1";
        w.source.call(w.source.kv.clone().delete(infra, None)).await.expect("delete");
        w.caught_up().await;
        let (code, out) = w.cli(&["run"]);
        assert_eq!(code, 1, "{out}");
        assert!(out.contains("validation failed; clusters stay paused"), "{out}");
        assert!(
            out.contains("the Cluster is not Ready (False): WaitingForControlPlane (cluster.x-k8s.io/clusters/cpaas-system/wl-b)"),
            "{out}"
        );
        assert!(
            out.contains("its infrastructure machine DCSMachine wl-c-md-0-m1 is missing (cluster.x-k8s.io/machines/cpaas-system/wl-c-md-0-m1)"),
            "{out}"
        );
        assert_eq!(out.matches("(cluster.x-k8s.io/").count(), 2, "nothing else: {out}");
        assert!(out.contains("clusters stay paused: cpaas-system/wl-b, cpaas-system/wl-c (the others"), "{out}");
        // Each Cluster is unpaused after its own validation: wl-a passed.
        let log = w.state("pause.log");
        assert!(log.lines().any(|l| l == "standby false cpaas-system/wl-a"), "{log}");
        let mut unpaused = log.lines().filter(|l| l.starts_with("standby false"));
        assert!(unpaused.all(|l| !l.contains("wl-b") && !l.contains("wl-c")), "{log}");
    });
}

/// A Machine's DCSMachine re-owned on the primary by a UID the primary does not hold: the sync
/// holds that update (`owner-absent-on-source`: the primary's garbage collector deletes it), which
/// does not block the guard. The failover completes, the standby keeps its correctly owned copy,
/// and the report says which keys were held.
#[test]
fn a_hold_that_does_not_block_is_reported() {
    runtime().block_on(async {
        let w = World::start().await;
        let infra = "/registry/infrastructure.cluster.x-k8s.io/dcsmachines/cpaas-system/wl-c-md-0-m1";
        w.patch_source(infra, |v| v["metadata"]["ownerReferences"][0]["uid"] = serde_json::json!("uid-replaced")).await;
        w.caught_up().await;
        let (code, out) = w.cli(&["run"]);
        assert_eq!(code, 0, "{out}");
        assert!(out.contains("held by the sync, not copied (1; "), "{out}");
        assert!(out.contains(&format!("{infra} (owner-absent-on-source)")), "{out}");
        let r = w.target.call(w.target.kv.clone().get(infra, None)).await.expect("get");
        assert!(String::from_utf8_lossy(r.kvs()[0].value()).contains("uid-wl-c-md-0-m1"), "the standby's copy kept");
    });
}

/// The quiesce's postcondition: every workload Cluster on the primary reads back paused before
/// the fence. A pause that did not take at first is made again.
#[test]
fn a_pause_that_did_not_take_is_made_again_before_the_fence() {
    runtime().block_on(async {
        let w = World::start().await;
        std::fs::write(w.dir.path().join("state/pause-skips-once"), "").expect("flaky pause");
        let (code, out) = w.cli(&["run"]);
        assert_eq!(code, 0, "{out}");
        let log = w.state("pause.log");
        let all = "cpaas-system/wl-a,cpaas-system/wl-b,cpaas-system/wl-c";
        assert!(log.starts_with(&format!("primary true {all}\nprimary true cpaas-system/wl-c\n")), "{log}");
        let mut kv = w.source.kv.clone();
        let wl =
            w.source.call(kv.get("/registry/cluster.x-k8s.io/clusters/cpaas-system/wl-c", None)).await.expect("get");
        let wl: serde_json::Value = serde_json::from_slice(wl.kvs()[0].value()).expect("json");
        assert_eq!(wl["spec"]["paused"], true, "quiesced on the old primary: {wl}");
    });
}

#[test]
fn unplanned_failover_after_the_primary_is_lost() {
    runtime().block_on(async {
        let mut w = World::start().await;
        let before = head(&w.source).await;
        w.primary.kill();
        let (code, out) = w.cli(&["run", "--unplanned"]);
        assert_eq!(code, 0, "{out}");
        assert!(out.contains("failover: done (unplanned); RPO 0 revisions known lost"), "{out}");
        assert!(out.contains(&format!("R {before}")), "R is what the sync applied: {out}");
        assert!(w.fenced().exists(), "fenced through the hook");
        assert_eq!(w.gate().await, GateState::Cleared);
        assert_eq!(w.state("dns").trim(), STANDBY_VIP);
        assert!(!w.state("pause.log").contains("primary"), "nothing reaches a lost primary: {}", w.state("pause.log"));
    });
}

/// The sync's daemon lost with the primary (same failure domain): R is the checkpoint it left on
/// the standby, the freeze has nothing to stop, the uninstall goes through the gate, and the RPO
/// is reported unknown rather than 0.
#[test]
fn unplanned_failover_after_the_primary_and_the_sync_are_lost() {
    runtime().block_on(async {
        let mut w = World::start().await;
        let before = head(&w.source).await;
        w.primary.kill();
        w.daemon.kill().expect("kill etcd-sync");
        w.daemon.wait().expect("reaped");
        let (code, out) = w.cli(&["run", "--unplanned"]);
        assert_eq!(code, 0, "{out}");
        assert!(
            out.contains(&format!("RPO unknown: no sync process answered (R {before} is what it applied")),
            "{out}"
        );
        assert_eq!(w.gate().await, GateState::Cleared);
        assert_eq!(w.state("dns").trim(), STANDBY_VIP);
        let (code, out) = w.cli(&["run", "--unplanned"]);
        assert_eq!(code, 0, "a resume reports the same: {out}");
        assert!(out.contains("RPO unknown"), "{out}");
    });
}

async fn options(w: &World) -> (RealPorts, failover::Options) {
    let ports = RealPorts::new(Config::load(&w.config).expect("config")).await.expect("ports");
    let o = ports.options();
    (ports, o)
}

/// A Machine the sync copied, deleted on the standby behind its back: a missed key.
async fn lose_a_machine(w: &World) -> &'static str {
    const KEY: &str = "/registry/cluster.x-k8s.io/machines/cpaas-system/wl-b-md-0-m3";
    let mut kv = w.target.kv.clone();
    let deleted = w.target.call(kv.delete(KEY, None)).await.expect("delete");
    assert_eq!(deleted.deleted(), 1, "the sync had copied it");
    KEY
}

#[test]
fn the_guard_refuses_an_inconsistent_standby_and_abort_undoes_the_failover() {
    runtime().block_on(async {
        let w = World::start().await;
        let lost = lose_a_machine(&w).await;
        let (ports, o) = options(&w).await;
        let err = failover::run(&ports, &o).await.expect_err("refused");
        match &err {
            failover::FailoverError::Refused { step: failover::step::Step::UninstallSync, text } => {
                assert!(text.contains(lost.trim_start_matches("/registry/")) || text.contains(lost), "{text}");
            }
            other => panic!("expected the uninstall guard's refusal, got: {other}"),
        }
        assert_eq!(w.gate().await, GateState::Syncing, "nothing uninstalled");
        assert_eq!(w.state("dns").trim(), PRIMARY_VIP, "DNS untouched");
        assert!(w.fenced().exists(), "the primary stays fenced until an abort or a fix");
        let st = status(&w.monitor).await.expect("the daemon still runs");
        assert!(st["frozen_at"].is_i64(), "the sync stays frozen at R: {st}");

        let out = failover::abort(&ports, &o).await.expect("abort");
        assert!(!out.plan.is_empty());
        assert!(!w.fenced().exists(), "the abort unfenced the primary");
        let st = status(&w.monitor).await.expect("the daemon still runs");
        assert!(st["frozen_at"].is_null(), "the abort resumed the sync: {st}");
        let log = w.state("pause.log");
        assert!(log.contains("primary false cpaas-system/wl-a,cpaas-system/wl-b,cpaas-system/wl-c\n"), "{log}");
        use failover::ports::Ports;
        let cleared = ports.load_progress().await.expect("progress");
        assert!(cleared.as_ref().is_none_or(|p| p.done.is_none()), "progress cleared: {cleared:?}");
        // The sync streams again: a new write reaches the standby.
        put_all(&w.source, vec![fixtures::capi("clusters", "Cluster", "wl-z", "uid-wl-z", &[])]).await;
        w.caught_up().await;
    });
}

/// With the orchestrator's guard off, the daemon decides again on the same pinned check and
/// refuses: the standby's gate still says syncing and DNS never moves.
#[cfg(feature = "mutants")]
#[test]
fn the_daemons_guard_holds_when_the_orchestrators_is_off() {
    runtime().block_on(async {
        let w = World::start().await;
        lose_a_machine(&w).await;
        let (ports, mut o) = options(&w).await;
        o.guard_off = true;
        let err = failover::run(&ports, &o).await.expect_err("refused by the daemon");
        let text = err.to_string();
        assert!(text.contains("409") && text.contains("missed"), "{text}");
        assert_eq!(w.gate().await, GateState::Syncing);
        assert_eq!(w.state("dns").trim(), PRIMARY_VIP);
    });
}

/// Without the fence the primary goes on taking writes after R: what the planned test's
/// "nothing written after R" catches (mutant `fencing-off`).
#[cfg(feature = "mutants")]
#[test]
fn without_the_fence_the_primary_writes_past_r() {
    runtime().block_on(async {
        let w = World::start().await;
        let writer = w.writer();
        let (ports, mut o) = options(&w).await;
        o.fencing_off = true;
        // It completes, or its guard refuses a standby the sync had taken past R by then.
        let _ = failover::run(&ports, &o).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        use failover::ports::Ports;
        let progress = ports.load_progress().await.expect("progress").expect("saved");
        let r = progress.source_revision.expect("R");
        assert!(head(&w.source).await > r, "the unfenced primary wrote after R");
        writer.abort();
    });
}

#[test]
fn preflight_reads_both_etcds_and_names_a_misnamed_global() {
    runtime().block_on(async {
        let w = World::start().await;
        let (code, out) = w.cli(&["preflight"]);
        assert!(out.contains("preflight: 0 blocking"), "{out}");
        assert!(out.contains(&format!("checked: {PRIMARY_VIP}: 2 global resources")), "{out}");
        assert!(out.contains("platform certificate: 3 names"), "{out}");
        assert!(out.contains("not checked") && out.contains("ServiceAccount token signing"), "{out}");
        assert_eq!(code, 0, "nothing blocks or warns; what it could not read is listed: {out}");

        let misnamed = fixtures::capi("machinesets", "MachineSet", "md-0", "uid-primary-ms", &[]);
        put_all(&w.source, vec![fixtures::labelled(misnamed, "global")]).await;
        let (code, out) = w.cli(&["preflight"]);
        assert_eq!(code, 1, "{out}");
        assert!(out.contains(&format!("BLOCKING {PRIMARY_VIP} MachineSet md-0")) && out.contains("global-"), "{out}");
        // The failover refuses at its first step, before fencing anything.
        let (code, out) = w.cli(&["run"]);
        assert_eq!(code, 1, "{out}");
        assert!(out.contains("preflight found what breaks the runbook"), "{out}");
        assert!(!w.fenced().exists(), "nothing fenced: {out}");
    });
}

/// Over TLS, preflight reads the certificate each etcd serves (as the sync connects: its CA, its
/// client certificate) and blocks when one does not name the platform domain and both VIPs.
#[test]
fn preflight_reads_each_etcds_server_certificate() {
    runtime().block_on(async {
        let wide = Pki::generate_for("etcd-a", &["127.0.0.1", DOMAIN, PRIMARY_VIP, STANDBY_VIP]).expect("pki");
        let narrow = Pki::generate_for("etcd-b", &["127.0.0.1", "localhost"]).expect("pki");
        let tls = |p: &Pki| EtcdOptions { tls: Some(p.server()), ..EtcdOptions::default() };
        let a = EtcdServer::start(EtcdVersion::V34, tls(&wide)).await.unwrap_or_else(|e| panic!("{e}"));
        let b = EtcdServer::start(EtcdVersion::V35, tls(&narrow)).await.unwrap_or_else(|e| panic!("{e}"));
        let cert = std::fs::read(&wide.server_cert).expect("cert");
        for side in [&a, &b] {
            let e = sync::conn::connect(&side.conn_config(), &Connector::Tcp, 0).await.expect("connect");
            put_all(&e, vec![fixtures::tls_secret("dex.tls", "uid-dex", &cert)]).await;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        let files = |side: &str, p: &Pki| {
            format!(
                "{side}_cacert: {}\n{side}_cert: {}\n{side}_key: {}\n",
                p.ca.display(),
                p.client_cert.display(),
                p.client_key.display()
            )
        };
        std::fs::write(
            d.join("etcd-sync.yaml"),
            format!(
                "source_endpoints: [{}]\ntarget_endpoints: [{}]\n{}{}",
                a.endpoint(),
                b.endpoint(),
                files("source", &wide),
                files("target", &narrow)
            ),
        )
        .expect("sync config");
        let config = d.join("dr-failover.yaml");
        std::fs::write(
            &config,
            format!(
                "primary: {PRIMARY_VIP}\nstandby: {STANDBY_VIP}\nplatform_domain: {DOMAIN}\nsync_config: etcd-sync.yaml\n\
                 sync_monitor: 127.0.0.1:1\nhooks: {{fence_primary: [f], unfence_primary: [f], primary_fenced: [f], \
                 pause_clusters: [p], dns_target: [d], switch_dns: [d]}}\nprobe: {{url: \"http://{{vip}}/version\"}}\n"
            ),
        )
        .expect("config");
        let out = Command::new(binary("dr-failover")).arg("--config").arg(&config).arg("preflight").output().expect("run");
        let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{text}");
        let standby_at = format!("BLOCKING {STANDBY_VIP} etcd server certificate at {}", b.endpoint());
        assert!(text.contains(&standby_at) && text.contains(&format!("does not cover `{DOMAIN}`")), "{text}");
        assert!(!text.contains(&format!("BLOCKING {PRIMARY_VIP} etcd server certificate")), "the primary's covers all: {text}");
        assert!(!text.contains("is reached without TLS"), "{text}");
        assert!(text.contains(&format!("checked: {PRIMARY_VIP}: ")) && text.contains("etcd certificate: 4 names"), "{text}");
    });
}

#[test]
fn the_probe_verifies_the_platform_certificate() {
    runtime().block_on(async {
        let pki = Pki::generate_for("platform", &[DOMAIN]).expect("pki");
        let ingress = Ingress::start("127.0.0.1:0", &pki.server_cert, &pki.server_key).await.expect("ingress");
        let config = |ca: &Path| failover::real::config::ProbeConfig {
            url: format!("https://{{vip}}:{}/kubernetes/global/version", ingress.addr.port()),
            ca_file: Some(ca.to_path_buf()),
            timeout_s: 5,
        };
        let p = failover::real::probe::Prober::new(&config(&pki.ca), DOMAIN).expect("prober");
        assert_eq!(p.probe("127.0.0.1").await.expect("probe").status, 401);
        // A certificate that does not name the domain clients use fails, whatever the status.
        let p = failover::real::probe::Prober::new(&config(&pki.ca), "other.test").expect("prober");
        let e = p.probe("127.0.0.1").await.expect_err("wrong name").to_string();
        assert!(e.contains("does the platform certificate cover it"), "{e}");
        // One another CA signed does not verify.
        let other = Pki::generate_for("other", &[DOMAIN]).expect("pki");
        let p = failover::real::probe::Prober::new(&config(&other.ca), DOMAIN).expect("prober");
        assert!(p.probe("127.0.0.1").await.is_err());
    });
}

#[test]
fn bad_input_gets_a_clear_error_and_an_unreachable_standby_names_its_endpoint() {
    let dir = tempfile::tempdir().expect("tempdir");
    let run = |config: &Path| {
        let out = Command::new(binary("dr-failover")).arg("--config").arg(config).arg("run").output().expect("run");
        (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stderr).into_owned())
    };
    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, "primary: a\nstandby: b\nplatfrom_domain: x\n").expect("write");
    let (code, err) = run(&bad);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("bad.yaml:3:1") && err.contains("platfrom_domain"), "{err}");

    let port = free_port();
    std::fs::write(
        dir.path().join("etcd-sync.yaml"),
        format!("source_endpoints: [http://127.0.0.1:{port}]\ntarget_endpoints: [http://127.0.0.1:{port}]\n"),
    )
    .expect("write");
    let good = dir.path().join("dr-failover.yaml");
    std::fs::write(
        &good,
        "primary: a\nstandby: b\nplatform_domain: p.test\nsync_config: etcd-sync.yaml\nsync_monitor: 127.0.0.1:1\n\
         hooks: {fence_primary: [f], unfence_primary: [f], primary_fenced: [f], pause_clusters: [p], dns_target: [d], switch_dns: [d]}\n\
         probe: {url: \"http://{vip}/version\"}\n",
    )
    .expect("write");
    let (code, err) = run(&good);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains(&format!("127.0.0.1:{port}")), "the endpoint is named: {err}");
    let https = dir.path().join("https.yaml");
    std::fs::write(&https, std::fs::read_to_string(&good).expect("read").replace("http://{vip}", "https://{vip}"))
        .expect("write");
    let (code, err) = run(&https);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("probe.ca_file"), "{err}");
}
