//! The real platform the orchestrator's tests run on: two etcd servers on loopback (3.4
//! primary, 3.5 standby), the shipped `etcd-sync` daemon between them, hooks as the operator's
//! scripts keeping their state in files, a TLS ingress stand-in on each VIP, and provisioned
//! workload clusters.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use harness::daemon::{free_port, status};
use harness::fixtures;
use harness::pki::Pki;
use harness::real_etcd::{EtcdOptions, EtcdServer, EtcdVersion};
use harness::real_ingress::Ingress;
use sync::conn::{ConnConfig, Connector, Etcd};
use sync::target::GateState;

pub const WAIT: Duration = Duration::from_secs(60);
pub const DOMAIN: &str = "platform.test";
/// The VIPs: both loopback, so a probe of either reaches this machine.
pub const PRIMARY_VIP: &str = "127.0.0.2";
pub const STANDBY_VIP: &str = "127.0.0.1";

pub fn binary(name: &str) -> PathBuf {
    let p = PathBuf::from(env!("CARGO_BIN_EXE_drlab")).with_file_name(name);
    assert!(p.is_file(), "{} is missing: build the workspace (`cargo build --release --workspace`)", p.display());
    p
}

pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime")
}

pub fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, format!("#!/bin/sh\nset -eu\nSTATE={}\n{body}\n", dir.join("state").display()))
        .expect("write hook");
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    p
}

pub async fn put_all(e: &Etcd, kvs: Vec<(String, Vec<u8>)>) {
    let mut kv = e.kv.clone();
    for (k, v) in kvs {
        e.call(kv.put(k, v, None)).await.expect("put");
    }
}

pub async fn head(e: &Etcd) -> i64 {
    e.head().await.expect("head")
}

/// Two etcds, the daemon between them, hooks, the ingress and the orchestrator's config.
pub struct World {
    pub dir: tempfile::TempDir,
    pub _pki: Pki,
    /// Each VIP's ingress, on the same port.
    pub _ingress: [Ingress; 2],
    pub primary: EtcdServer,
    pub standby: EtcdServer,
    pub source: Etcd,
    pub target: Etcd,
    pub monitor: String,
    pub daemon: Child,
    pub config: PathBuf,
}

impl World {
    pub async fn start() -> World {
        World::start_with("", 60).await
    }

    /// `extra` goes into the orchestrator's config as written; steps time out after `step_s`.
    pub async fn start_with(extra: &str, step_s: u64) -> World {
        let primary =
            EtcdServer::start(EtcdVersion::V34, EtcdOptions::default()).await.unwrap_or_else(|e| panic!("{e}"));
        let standby =
            EtcdServer::start(EtcdVersion::V35, EtcdOptions::default()).await.unwrap_or_else(|e| panic!("{e}"));
        let connect = async |ep: String| sync::conn::connect(&ConnConfig::new([ep]), &Connector::Tcp, 0).await;
        let source = connect(primary.endpoint()).await.expect("primary");
        let target = connect(standby.endpoint()).await.expect("standby");
        let pki = Pki::generate_for("platform", &[DOMAIN, PRIMARY_VIP, STANDBY_VIP]).expect("pki");
        let cert = std::fs::read(&pki.server_cert).expect("cert");
        for c in ["wl-a", "wl-b", "wl-c"] {
            put_all(&source, fixtures::provisioned_cluster(c, 5)).await;
        }
        put_all(&source, vec![fixtures::tls_secret("dex.tls", "uid-dex-tls", &cert)]).await;
        // The standby runs its own components (the sync's rules leave Deployments out).
        put_all(&target, vec![fixtures::deployment("cpaas-system", "capi-controller-manager", 2, 2)]).await;
        put_all(&target, vec![fixtures::deployment("cpaas-system", "elemental-operator", 1, 0)]).await;
        // Each side's own global cluster, named as seed 002 asks.
        for (side, uid) in [(&source, "uid-primary"), (&target, "uid-standby")] {
            let cluster = fixtures::capi("clusters", "Cluster", "global", &format!("{uid}-global"), &[]);
            let md = fixtures::capi("machinedeployments", "MachineDeployment", "global-md", &format!("{uid}-md"), &[]);
            put_all(side, vec![fixtures::labelled(cluster, "global"), fixtures::labelled(md, "global")]).await;
        }
        let ingress =
            Ingress::start(&format!("{STANDBY_VIP}:0"), &pki.server_cert, &pki.server_key).await.expect("ingress");
        let port = ingress.addr.port();
        let primary_ingress = Ingress::start(&format!("{PRIMARY_VIP}:{port}"), &pki.server_cert, &pki.server_key)
            .await
            .expect("the primary's ingress");

        let dir = tempfile::Builder::new().prefix("drlab-failover-real-").tempdir().expect("tempdir");
        let d = dir.path();
        std::fs::create_dir(d.join("state")).expect("state dir");
        std::fs::write(d.join("state/dns"), format!("{PRIMARY_VIP}\n")).expect("dns");
        // The fence waits for in-flight writes to drain, as an API server's does.
        script(
            d,
            "fence",
            r#"side=$1
case "$2" in on) echo "on $side" >> "$STATE/fence.log"; touch "$STATE/fenced-$side"; sleep 0.3;;
  off) rm -f "$STATE/fenced-$side";; status) test -f "$STATE/fenced-$side";; *) exit 2;; esac"#,
        );
        script(
            d,
            "dns",
            r#"case "$1" in show) cat "$STATE/dns";;
  set) if [ -e "$STATE/dns-down" ]; then echo "DNS API unavailable" >&2; exit 1; fi
       printf '%s\n' "$DRLAB_DNS_TARGET" > "$STATE/dns";;
  *) exit 2;; esac"#,
        );
        script(
            d,
            "pause",
            // As `kubectl patch cluster` would: through the side's store (here its etcd, with
            // etcdctl), so the orchestrator reads back that the pause took.
            r#"if [ "$DRLAB_SIDE" = primary ]; then ep=$1; else ep=$2; fi
echo "$DRLAB_SIDE $DRLAB_PAUSED $DRLAB_CLUSTERS" >> "$STATE/pause.log"
list=$(echo "$DRLAB_CLUSTERS" | tr , ' ')
# A pause that does not take at first (a controller reverting it): the last Cluster is skipped once.
if [ -e "$STATE/pause-skips-once" ]; then rm "$STATE/pause-skips-once"; list=${list% *}; fi
for c in $list; do
  key=/registry/cluster.x-k8s.io/clusters/$c
  v=$(ETCDCTL_API=3 etcdctl --endpoints="$ep" get --print-value-only "$key")
  [ -n "$v" ] || { echo "no Cluster $c" >&2; exit 3; }
  p=$DRLAB_PAUSED
  printf '%s' "$v" | sed -e 's/"paused":[a-z]*/"paused":'$p'/' -e t -e 's/"spec":{}/"spec":{"paused":'$p'}/' \
    | ETCDCTL_API=3 etcdctl --endpoints="$ep" put "$key" > /dev/null
done"#,
        );
        let monitor = format!("127.0.0.1:{}", free_port());
        std::fs::write(
            d.join("etcd-sync.yaml"),
            format!(
                "source_endpoints: [{}]\ntarget_endpoints: [{}]\npage_keys: 50\n",
                primary.endpoint(),
                standby.endpoint()
            ),
        )
        .expect("sync config");
        let config = d.join("dr-failover.yaml");
        std::fs::write(
            &config,
            format!(
                "primary: {PRIMARY_VIP}\nstandby: {STANDBY_VIP}\nplatform_domain: {DOMAIN}\n\
                 sync_config: etcd-sync.yaml\nsync_monitor: {monitor}\n\
                 hooks:\n  fence_primary: [./fence, a, on]\n  unfence_primary: [./fence, a, off]\n  primary_fenced: [./fence, a, status]\n  \
                 pause_clusters: [./pause, {}, {}]\n  dns_target: [./dns, show]\n  switch_dns: [./dns, set]\n\
                 probe:\n  url: \"https://{{vip}}:{}/kubernetes/global/version\"\n  ca_file: {}\n\
                 timeouts: {{step_s: {step_s}, quiesce_s: 1, poll_ms: 100}}\n{extra}",
                primary.endpoint(),
                standby.endpoint(),
                port,
                pki.ca.display()
            ),
        )
        .expect("config");
        let daemon = Command::new(binary("etcd-sync"))
            .args(["run", "--config"])
            .arg(d.join("etcd-sync.yaml"))
            .args(["--monitor-addr", &monitor])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start etcd-sync");
        let w = World {
            dir,
            _pki: pki,
            _ingress: [ingress, primary_ingress],
            primary,
            standby,
            source,
            target,
            monitor,
            daemon,
            config,
        };
        w.caught_up().await;
        w
    }

    pub async fn caught_up(&self) {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let want = head(&self.source).await;
            if let Some(s) = status(&self.monitor).await
                && s["checkpoint"].as_i64() == Some(want)
                && s["phase"] == "streaming"
            {
                return;
            }
            assert!(tokio::time::Instant::now() < deadline, "the sync did not catch up with {want}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Rewrites the JSON object at `key` on the primary with `f`, as an update through its API.
    pub async fn patch_source(&self, key: &str, f: impl FnOnce(&mut serde_json::Value)) {
        let mut kv = self.source.kv.clone();
        let r = self.source.call(kv.get(key, None)).await.expect("get");
        let mut v: serde_json::Value = serde_json::from_slice(r.kvs()[0].value()).expect("json");
        f(&mut v);
        put_all(&self.source, vec![(key.to_string(), serde_json::to_vec(&v).expect("json"))]).await;
    }

    pub fn state(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.path().join("state").join(name)).unwrap_or_default()
    }

    pub fn cli(&self, args: &[&str]) -> (i32, String) {
        let out =
            Command::new(binary("dr-failover")).arg("--config").arg(&self.config).args(args).output().expect("run");
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        (out.status.code().unwrap_or(-1), text)
    }

    pub async fn gate(&self) -> GateState {
        sync::target::read_gate(&self.target).await.expect("gate").expect("a gate").state
    }

    /// Writes to the primary every 10 ms until the fence hook fences it (its API would refuse).
    pub fn writer(&self) -> tokio::task::JoinHandle<u64> {
        let (source, fenced) = (self.source.clone(), self.fenced());
        tokio::spawn(async move {
            let mut n = 0u64;
            while !fenced.exists() {
                let mut kv = source.kv.clone();
                let name = format!("traffic-{n}");
                let (key, value) =
                    fixtures::capi("machinedeployments", "MachineDeployment", &name, &format!("uid-{name}"), &[]);
                source.call(kv.put(key, value, None)).await.expect("write");
                n += 1;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            n
        })
    }

    pub fn fenced(&self) -> PathBuf {
        self.dir.path().join("state/fenced-a")
    }

    pub fn daemon_exit(&mut self) -> Option<std::process::ExitStatus> {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while std::time::Instant::now() < deadline {
            if let Some(s) = self.daemon.try_wait().expect("wait") {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }
}

impl Drop for World {
    fn drop(&mut self) {
        // A reverse sync an install hook started.
        if let Ok(pid) = std::fs::read_to_string(self.dir.path().join("state/reverse.pid")) {
            let _ = Command::new("kill").arg(pid.trim()).status();
        }
        let _ = self.daemon.kill();
        let _ = self.daemon.wait();
        self.primary.terminate();
        self.standby.terminate();
    }
}
