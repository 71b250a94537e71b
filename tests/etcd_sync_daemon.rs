//! The `etcd-sync` daemon as an operator runs it, between two real etcd servers (3.4 source,
//! 3.5 target): initial sync with owners first, streaming, `check`, `/metrics`, a SIGKILL and
//! restart with nothing lost, freeze / resume, the guarded uninstall (refused on an inconsistent
//! standby, forced with a name in the audit trail), and no restart over an uninstalled gate.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use etcd_client::GetOptions;
use harness::daemon::{free_port, http, status};
use harness::fixtures;
use harness::observe::OwnerOrder;
use harness::real_etcd::{EtcdOptions, EtcdServer, EtcdVersion};
use sync::conn::{ConnConfig, Connector, Etcd};
use sync::rules::{Profile, Rules};

const WAIT: Duration = Duration::from_secs(30);

fn binary() -> PathBuf {
    let drlab = PathBuf::from(env!("CARGO_BIN_EXE_drlab"));
    let p = drlab.with_file_name("etcd-sync");
    assert!(p.is_file(), "{} is missing: build the workspace (`cargo build --release --workspace`)", p.display());
    p
}

struct Daemon {
    child: Child,
}

impl Daemon {
    fn start(source: &str, target: &str, monitor: &str, extra: &[&str]) -> Daemon {
        let child = Command::new(binary())
            .args([
                "run",
                "--source-endpoints",
                source,
                "--target-endpoints",
                target,
                "--monitor-addr",
                monitor,
                "--page-keys",
                "50",
            ])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start etcd-sync");
        Daemon { child }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn head(e: &Etcd) -> i64 {
    let mut kv = e.kv.clone();
    e.call(kv.get(vec![0u8], Some(GetOptions::new().with_count_only())))
        .await
        .expect("head")
        .header()
        .expect("header")
        .revision()
}

/// Waits until the daemon's checkpoint reaches the source head.
async fn caught_up(monitor: &str, source: &Etcd) -> serde_json::Value {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let want = head(source).await;
        if let Some(s) = status(monitor).await {
            if s["checkpoint"].as_i64() == Some(want) && s["phase"] == "streaming" {
                return s;
            }
            assert!(tokio::time::Instant::now() < deadline, "not caught up with {want}: {s}");
        }
        assert!(tokio::time::Instant::now() < deadline, "no status from {monitor}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn check_cli(source: &str, target: &str) -> (i32, String) {
    let out = Command::new(binary())
        .args(["check", "--source-endpoints", source, "--target-endpoints", target])
        .output()
        .expect("check");
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).into_owned())
}

async fn put_all(e: &Etcd, kvs: Vec<(String, Vec<u8>)>) {
    let mut kv = e.kv.clone();
    for (k, v) in kvs {
        e.call(kv.put(k, v, None)).await.expect("put");
    }
}

#[test]
fn daemon_syncs_checks_survives_kill_and_guards_uninstall() {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    rt.block_on(async {
        let src = EtcdServer::start(EtcdVersion::V34, EtcdOptions::default()).await.unwrap_or_else(|e| panic!("{e}"));
        let tgt = EtcdServer::start(EtcdVersion::V35, EtcdOptions::default()).await.unwrap_or_else(|e| panic!("{e}"));
        let (s_ep, t_ep) = (src.endpoint(), tgt.endpoint());
        let source = sync::conn::connect(&ConnConfig::new([s_ep.clone()]), &Connector::Tcp, 0).await.expect("source");
        let target = sync::conn::connect(&ConnConfig::new([t_ep.clone()]), &Connector::Tcp, 0).await.expect("target");
        for c in ["wl-a", "wl-b", "wl-c", "wl-d", "wl-e"] {
            put_all(&source, fixtures::workload_cluster(c, 10)).await;
        }
        let standby_global = fixtures::capi("clusters", "Cluster", "global", "uid-standby-global", &[]);
        put_all(&target, vec![standby_global.clone()]).await;
        put_all(&source, vec![fixtures::capi("clusters", "Cluster", "global", "uid-primary-global", &[])]).await;

        let rules = Rules::profile(Profile::Immutable);
        let observer = OwnerOrder::default();
        let scope = rules.clone();
        tokio::spawn(observer.clone().run(target.clone(), move |k| scope.includes(k)));
        tokio::time::sleep(Duration::from_millis(200)).await;

        let monitor = format!("127.0.0.1:{}", free_port());
        let mut daemon = Daemon::start(&s_ep, &t_ep, &monitor, &[]);
        let st = caught_up(&monitor, &source).await;
        assert!(st["held_total"].as_u64() > Some(0), "dependents met before owners were held: {st}");

        put_all(&source, fixtures::workload_cluster("wl-f", 5)).await;
        let mut kv = source.kv.clone();
        // A scale-down: the Machine and the bootstrap Secret it owns (the source GC's part).
        source.call(kv.delete("/registry/secrets/cpaas-system/wl-a-md-0-m9-bootstrap", None)).await.expect("delete");
        source
            .call(kv.delete("/registry/cluster.x-k8s.io/machines/cpaas-system/wl-a-md-0-m9", None))
            .await
            .expect("delete");
        caught_up(&monitor, &source).await;
        let (code, text) = check_cli(&s_ep, &t_ep);
        assert_eq!(code, 0, "{text}");
        assert!(text.contains("LOCAL ETCD missed keys: 0") && text.ends_with("result: consistent\n"), "{text}");
        let (_, metrics) = http(&monitor, "GET", "/metrics").await.expect("metrics");
        assert!(metrics.contains("etcd_sync_lag_revisions 0\n"), "{metrics}");
        assert!(metrics.contains("etcd_sync_held_keys{reason=\"owner-pending\"} 0\n"), "{metrics}");

        // SIGKILL while the source is being written, then restart: nothing lost.
        let writer = {
            let source = source.clone();
            tokio::spawn(async move { put_all(&source, fixtures::workload_cluster("wl-g", 20)).await })
        };
        tokio::time::sleep(Duration::from_millis(30)).await;
        daemon.child.kill().expect("kill");
        daemon.child.wait().expect("wait");
        writer.await.expect("writer");
        let mut daemon = Daemon::start(&s_ep, &t_ep, &monitor, &[]);
        caught_up(&monitor, &source).await;
        let (code, text) = check_cli(&s_ep, &t_ep);
        assert_eq!(code, 0, "after kill and restart: {text}");

        // Freeze: later source writes wait until resume.
        let (code, body) = http(&monitor, "POST", "/freeze").await.expect("freeze");
        assert_eq!(code, 200, "{body}");
        let frozen: serde_json::Value = serde_json::from_str(&body).expect("json");
        assert_eq!(frozen["reached"], true, "{frozen}");
        put_all(&source, vec![fixtures::capi("clusters", "Cluster", "wl-late", "uid-wl-late", &[])]).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let st = status(&monitor).await.expect("status");
        assert_eq!(st["phase"], "frozen", "{st}");
        assert_eq!(st["checkpoint"], frozen["revision"], "{st}");
        let (code, _) = http(&monitor, "POST", "/resume").await.expect("resume");
        assert_eq!(code, 200);
        caught_up(&monitor, &source).await;

        // The standby's GC deletes a Machine behind the sync's back: uninstall must refuse.
        let mut tkv = target.kv.clone();
        target
            .call(tkv.delete("/registry/cluster.x-k8s.io/machines/cpaas-system/wl-b-md-0-m0", None))
            .await
            .expect("delete");
        let (code, body) = http(&monitor, "POST", "/uninstall").await.expect("uninstall");
        assert_eq!(code, 409, "{body}");
        assert!(body.contains("wl-b-md-0-m0") && body.contains("LOCAL ETCD missed keys: 1"), "{body}");
        let out = Command::new(binary())
            .args(["uninstall", "--monitor", &monitor, "--force", "alice@ops"])
            .output()
            .expect("uninstall");
        let body = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{:?}: {body}{}", out.status, String::from_utf8_lossy(&out.stderr));
        assert!(body.contains("\"forced_by\": \"alice@ops\"") && body.contains("\"uninstalled\""), "{body}");
        let status = daemon.child.wait().expect("the daemon stops after uninstall");
        assert!(status.success(), "{status:?}");
        let audit = target
            .call(tkv.get("/drlab/etcd-sync/audit/", Some(GetOptions::new().with_prefix())))
            .await
            .expect("audit");
        assert!(
            audit.kvs().iter().any(|kv| String::from_utf8_lossy(kv.value()).contains("alice@ops")),
            "audit trail names who forced it"
        );

        // A zombie restart cannot take an uninstalled gate back.
        let mut zombie = Daemon::start(&s_ep, &t_ep, &format!("127.0.0.1:{}", free_port()), &[]);
        let status = zombie.child.wait().expect("zombie exits");
        assert!(!status.success(), "a sync must not start over an uninstalled gate");
        let mut err = String::new();
        use std::io::Read;
        zombie.child.stderr.take().expect("stderr").read_to_string(&mut err).expect("stderr");
        assert!(err.contains("gate is Uninstalled"), "{err}");

        let g = target.call(tkv.get(standby_global.0.clone(), None)).await.expect("get");
        assert_eq!(g.kvs()[0].value(), standby_global.1.as_slice(), "the standby's own global Cluster is untouched");
        assert!(observer.violations().is_empty(), "dependents before owners: {:?}", observer.violations());
    });
}

/// `etcd-sync check` with extra flags: (exit code, stdout, stderr).
fn check_with(source: &str, target: &str, flags: &[String]) -> (i32, String, String) {
    let out = Command::new(binary())
        .args(["check", "--source-endpoints", source, "--target-endpoints", target])
        .args(flags)
        .output()
        .expect("check");
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (out.status.code().unwrap_or(-1), text(&out.stdout), text(&out.stderr))
}

fn tls_flags(side: &str, files: &sync::conn::TlsFiles) -> Vec<String> {
    let mut f = Vec::new();
    for (flag, path) in [("cacert", &files.cacert), ("cert", &files.cert), ("key", &files.key)] {
        if let Some(p) = path {
            f.push(format!("--{side}-{flag}"));
            f.push(p.display().to_string());
        }
    }
    f
}

/// Both etcds serve clients over TLS and require client certificates (as a platform's etcd does):
/// the daemon syncs and checks with etcdctl-style `--cacert --cert --key` per side; without a
/// client certificate, or trusting another CA, it fails with an error naming the endpoint.
#[test]
fn daemon_syncs_over_mutual_tls_and_names_the_endpoint_it_cannot_reach() {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    rt.block_on(async {
        let pki = harness::pki::Pki::generate("drlab test").expect("pki");
        let tls = || EtcdOptions { tls: Some(pki.server()), ..EtcdOptions::default() };
        let src = EtcdServer::start(EtcdVersion::V34, tls()).await.unwrap_or_else(|e| panic!("{e}"));
        let tgt = EtcdServer::start(EtcdVersion::V35, tls()).await.unwrap_or_else(|e| panic!("{e}"));
        let (s_ep, t_ep) = (src.endpoint(), tgt.endpoint());
        assert!(s_ep.starts_with("https://"), "{s_ep}");
        let source = sync::conn::connect(&src.conn_config(), &Connector::Tcp, 0).await.expect("source over TLS");
        put_all(&source, fixtures::workload_cluster("wl-a", 4)).await;

        let mut flags = tls_flags("source", &pki.client());
        flags.extend(tls_flags("target", &pki.client()));
        let monitor = format!("127.0.0.1:{}", free_port());
        let args: Vec<&str> = flags.iter().map(String::as_str).collect();
        let _daemon = Daemon::start(&s_ep, &t_ep, &monitor, &args);
        caught_up(&monitor, &source).await;
        let (code, out, err) = check_with(&s_ep, &t_ep, &flags);
        assert_eq!(code, 0, "check over mutual TLS: {out}{err}");

        // No client certificate for the source: its etcd refuses the handshake.
        let mut no_cert =
            tls_flags("source", &sync::conn::TlsFiles { cacert: Some(pki.ca.clone()), cert: None, key: None });
        no_cert.extend(tls_flags("target", &pki.client()));
        let (code, out, err) = check_with(&s_ep, &t_ep, &no_cert);
        assert_eq!(code, 2, "no client certificate must be an error: {out}{err}");
        assert!(err.contains(&s_ep), "the error names the endpoint: {err}");

        // Trusting another CA: the target's certificate does not verify.
        let other = harness::pki::Pki::generate("another").expect("pki");
        let mut wrong_ca = tls_flags("source", &pki.client());
        wrong_ca.extend(tls_flags("target", &sync::conn::TlsFiles { cacert: Some(other.ca.clone()), ..pki.client() }));
        let (code, out, err) = check_with(&s_ep, &t_ep, &wrong_ca);
        assert_eq!(code, 2, "an untrusted server certificate must be an error: {out}{err}");
        assert!(err.contains(&t_ep), "the error names the endpoint: {err}");
    });
}
