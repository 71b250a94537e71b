//! The orchestrator's ports on a real platform (`dr-failover`): the two etcds through the
//! sync's own settings file (heads, the gate, the checkpoint, the pinned checks — the same
//! `sync` code the daemon runs, so the check sees what the sync sees), the running `etcd-sync`
//! through its monitor (freeze, resume, the guarded uninstall, what it has seen), fencing, DNS,
//! pausing and installs through configured hooks, and the ingress through an HTTP(S) probe.
//! Progress, audit and the lock live on the standby's etcd ([`crate::store`]).

pub mod config;
pub mod hooks;
pub mod inventory;
pub mod peer_cert;
pub mod probe;
pub mod tls;

use std::time::Duration;

use sync::check::Report;
use sync::config::Resolved;
use sync::conn::{Connector, Etcd};
use sync::control::Control;
use sync::engine::Handle;
use sync::remote::{RemoteError, urlencode};
use sync::target::GateState;

use crate::orchestrator::Options;
use crate::ports::{Finding, PortError, Ports, Probe, from_control};
use crate::preflight::Inventory;
use crate::step::Progress;
use crate::store::{AUDIT_PREFIX, Lock, PROGRESS_KEY, decode_progress};
use config::Config;

/// How long a monitor call may take (a freeze waits up to 30 s for the sync; an uninstall runs
/// a pinned check of both sides).
const MONITOR_WITHIN: Duration = Duration::from_secs(300);
/// Findings a validate hook may add.
const HOOK_FINDINGS_MAX: usize = 200;

pub struct RealPorts {
    config: Config,
    sync: Resolved,
    /// The checks and the gate, without an engine in this process.
    control: Control,
    /// The standby's etcd: progress, audit, lock.
    standby: Etcd,
    prober: probe::Prober,
    lock: Lock,
    token_signing: Option<(crate::preflight::TokenSigning, crate::preflight::TokenSigning)>,
}

fn port<E: std::fmt::Display>(p: &'static str) -> impl Fn(E) -> PortError {
    move |e| PortError::new(p, e)
}

impl RealPorts {
    /// Reads the sync's settings and connects to the standby (the primary may be lost: it is
    /// reached only when a step needs it).
    pub async fn new(config: Config) -> Result<RealPorts, String> {
        let sync = sync::config::SyncConfig::load(&config.sync_config)?.resolve()?;
        let control = sync.control(Handle::default());
        let standby = sync::conn::connect(&sync.target, &Connector::Tcp, 0).await.map_err(|e| e.to_string())?;
        let prober = probe::Prober::new(&config.probe, &config.platform_domain)?;
        let token_signing = match &config.service_accounts {
            None => None,
            Some(sa) => Some((sa.primary.read()?, sa.standby.read()?)),
        };
        Ok(RealPorts { config, sync, control, standby, prober, lock: Lock::default(), token_signing })
    }

    /// The orchestrator's options for this platform: its roles and its timeouts.
    pub fn options(&self) -> Options {
        let t = &self.config.timeouts;
        let mut o = Options::new(&self.config.primary, &self.config.standby);
        o.step_timeout = Duration::from_secs(t.step_s);
        o.quiesce = Duration::from_secs(t.quiesce_s);
        o.poll = Duration::from_millis(t.poll_ms);
        o
    }

    fn env(&self, extra: &[(&str, String)]) -> Vec<(String, String)> {
        let mut env = vec![
            ("DRLAB_PRIMARY".to_string(), self.config.primary.clone()),
            ("DRLAB_STANDBY".to_string(), self.config.standby.clone()),
            ("DRLAB_PLATFORM_DOMAIN".to_string(), self.config.platform_domain.clone()),
        ];
        env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.clone())));
        env
    }

    async fn act(
        &self,
        name: &'static str,
        argv: &[String],
        extra: &[(&str, String)],
    ) -> Result<Vec<String>, PortError> {
        Ok(hooks::act(name, argv, &self.env(extra), self.config.timeouts.hook()).await?.lines())
    }

    /// A yes / no hook: exit 0 yes, 1 no.
    async fn ask(&self, name: &'static str, argv: &[String]) -> Result<bool, PortError> {
        Ok(hooks::run(name, argv, &self.env(&[]), self.config.timeouts.hook()).await?.code == 0)
    }

    /// Has the pause hook set `spec.paused` on `clusters` (`namespace/name`) of one side;
    /// returns them. The orchestrator chooses them from etcd; the hook only acts.
    async fn pause(&self, side: &str, clusters: Vec<String>, paused: bool) -> Result<Vec<String>, PortError> {
        if clusters.is_empty() {
            return Ok(clusters);
        }
        let env = [
            ("DRLAB_SIDE", side.to_string()),
            ("DRLAB_PAUSED", paused.to_string()),
            ("DRLAB_CLUSTERS", clusters.join(",")),
        ];
        self.act("pause_clusters", &self.config.hooks.pause_clusters, &env).await?;
        Ok(clusters)
    }

    async fn monitor(&self, method: &str, path: &str) -> Result<(u16, String), RemoteError> {
        sync::remote::request(&self.config.sync_monitor, method, path, MONITOR_WITHIN).await
    }

    /// A monitor call that must answer 2xx.
    async fn monitor_ok(&self, method: &str, path: &str) -> Result<String, PortError> {
        let (code, body) = self.monitor(method, path).await.map_err(port("sync"))?;
        answered_ok(method, path, code, body)
    }

    /// [`Self::monitor_ok`], or None when no daemon listens (it died): then the standby's state —
    /// the checkpoint and the gate the daemon left — is all there is to ask.
    async fn monitor_ok_unless_gone(&self, method: &str, path: &str) -> Result<Option<String>, PortError> {
        match self.monitor(method, path).await {
            Ok((code, body)) => answered_ok(method, path, code, body).map(Some),
            Err(RemoteError::Io { source, .. }) if source.kind() == std::io::ErrorKind::ConnectionRefused => Ok(None),
            Err(e) => Err(PortError::new("sync", e)),
        }
    }

    async fn primary(&self) -> Result<Etcd, PortError> {
        sync::conn::connect(&self.sync.source, &Connector::Tcp, 0).await.map_err(port("primary"))
    }

    async fn get(etcd: &Etcd, key: &str, side: &'static str) -> Result<Option<Vec<u8>>, PortError> {
        let mut kv = etcd.kv.clone();
        let r = etcd.call(kv.get(key, None)).await.map_err(port(side))?;
        Ok(r.kvs().first().map(|kv| kv.value().to_vec()))
    }

    async fn put(&self, key: String, value: Vec<u8>) -> Result<(), PortError> {
        let mut kv = self.standby.kv.clone();
        self.standby.call(kv.put(key, value, None)).await.map_err(port("standby"))?;
        Ok(())
    }
}

impl Ports for RealPorts {
    async fn source_head(&self) -> Result<i64, PortError> {
        from_control::source_head(&self.control).await
    }

    async fn target_head(&self) -> Result<i64, PortError> {
        from_control::target_head(&self.control).await
    }

    async fn sync_checkpoint(&self) -> Result<i64, PortError> {
        from_control::checkpoint(&self.control).await
    }

    async fn sync_source_seen(&self) -> Result<Option<i64>, PortError> {
        let Some(body) = self.monitor_ok_unless_gone("GET", "/status").await? else { return Ok(None) };
        let status: serde_json::Value = serde_json::from_str(&body).map_err(port("sync"))?;
        let seen = status["source_head"].as_i64();
        seen.map(Some).ok_or_else(|| PortError::new("sync", "/status has no source_head"))
    }

    async fn sync_running(&self) -> Result<bool, PortError> {
        from_control::gate_is(&self.control, GateState::Syncing).await
    }

    async fn sync_uninstalled(&self) -> Result<bool, PortError> {
        from_control::gate_is(&self.control, GateState::Uninstalled).await
    }

    async fn freeze_sync(&self, at: i64) -> Result<(), PortError> {
        let Some(body) = self.monitor_ok_unless_gone("POST", &format!("/freeze?revision={at}")).await? else {
            // No daemon runs: nothing applies past what it applied. A daemon started again
            // before the uninstall could; the uninstall's gate stops it from then on.
            let applied = self.sync_checkpoint().await?;
            if applied >= at {
                return Ok(());
            }
            let monitor = sync::remote::address(&self.config.sync_monitor);
            return Err(PortError::new(
                "sync",
                format!(
                    "etcd-sync monitor at {monitor}: no daemon answers, and it applied only {applied} of {at}; \
                     start it to catch up"
                ),
            ));
        };
        let f: serde_json::Value = serde_json::from_str(&body).map_err(port("sync"))?;
        if f["reached"].as_bool() != Some(true) {
            return Err(PortError::new("sync", format!("frozen at {at} but only applied {}", f["checkpoint"])));
        }
        Ok(())
    }

    async fn resume_sync(&self) -> Result<(), PortError> {
        self.monitor_ok("POST", "/resume").await.map(|_| ())
    }

    async fn pinned_check(&self, source_rev: i64, target_rev: i64) -> Result<Report, PortError> {
        self.control.check_pinned(source_rev, target_rev).await.map_err(port("sync"))
    }

    async fn target_check(&self, target_rev: i64) -> Result<Report, PortError> {
        self.control.check_target_pinned(target_rev).await.map_err(port("sync"))
    }

    async fn uninstall_sync(&self, report: &Report, forced_by: Option<&str>) -> Result<(), PortError> {
        // Idempotent: a restarted orchestrator finds the gate already uninstalled.
        if self.sync_uninstalled().await? {
            return Ok(());
        }
        // The daemon decides again on the same pinned check (a second guard) and stops.
        let t = report.target_revision;
        let mut path = match report.source_revision {
            Some(r) => format!("/uninstall?source_revision={r}&target_revision={t}"),
            None => format!("/uninstall?target_only=true&target_revision={t}"),
        };
        if let Some(who) = forced_by {
            path.push_str(&format!("&force={}", urlencode(who)));
        }
        match self.monitor_ok_unless_gone("POST", &path).await? {
            Some(_) => Ok(()),
            // No daemon answers (it died): the gate is the commit point, and a daemon started
            // again refuses to run over an uninstalled gate.
            None => self.control.uninstall_checked(report, forced_by).await.map(|_| ()).map_err(port("sync")),
        }
    }

    async fn clear_gate(&self, who: &str) -> Result<(), PortError> {
        from_control::clear_gate(&self.control, who).await
    }

    async fn pause_primary(&self) -> Result<Vec<String>, PortError> {
        let unpaused = inventory::workload_clusters(&self.primary().await?, "primary", true).await?;
        self.pause("primary", unpaused, true).await
    }

    async fn primary_unpaused(&self) -> Result<Vec<String>, PortError> {
        inventory::workload_clusters(&self.primary().await?, "primary", true).await
    }

    async fn fence_primary(&self) -> Result<(), PortError> {
        self.act("fence_primary", &self.config.hooks.fence_primary, &[]).await.map(|_| ())
    }

    async fn unfence_primary(&self) -> Result<(), PortError> {
        self.act("unfence_primary", &self.config.hooks.unfence_primary, &[]).await.map(|_| ())
    }

    async fn unpause_primary(&self, clusters: &[String]) -> Result<Vec<String>, PortError> {
        self.pause("primary", clusters.to_vec(), false).await
    }

    async fn primary_fenced(&self) -> Result<bool, PortError> {
        self.ask("primary_fenced", &self.config.hooks.primary_fenced).await
    }

    async fn standby_fenced(&self) -> Result<bool, PortError> {
        match &self.config.hooks.standby_fenced {
            Some(argv) => self.ask("standby_fenced", argv).await,
            None => Ok(false),
        }
    }

    async fn unfence_standby(&self) -> Result<(), PortError> {
        match &self.config.hooks.unfence_standby {
            Some(argv) => self.act("unfence_standby", argv, &[]).await.map(|_| ()),
            None => Err(PortError::new("hook", "the standby is fenced and no unfence_standby hook is configured")),
        }
    }

    async fn served_since(&self) -> Result<Option<Progress>, PortError> {
        let primary = self.primary().await?;
        Ok(Self::get(&primary, PROGRESS_KEY, "primary").await?.map(|v| decode_progress(&v)))
    }

    async fn install_sync(&self, baseline_revision: Option<i64>) -> Result<(), PortError> {
        let Some(argv) = &self.config.hooks.install_sync else {
            let baseline = baseline_revision.map(|r| format!(" --baseline-revision {r}")).unwrap_or_default();
            return Err(PortError::new(
                "hook",
                format!(
                    "no install_sync hook: start `etcd-sync run --reinstall{baseline}` (primary → standby) by hand"
                ),
            ));
        };
        let env = [("DRLAB_BASELINE_REVISION", baseline_revision.map(|r| r.to_string()).unwrap_or_default())];
        self.act("install_sync", argv, &env).await.map(|_| ())
    }

    async fn remove_replication_path(&self) -> Result<(), PortError> {
        match &self.config.hooks.remove_replication_path {
            Some(argv) => self.act("remove_replication_path", argv, &[]).await.map(|_| ()),
            None => Ok(()),
        }
    }

    async fn dns_target(&self) -> Result<String, PortError> {
        let lines = self.act("dns_target", &self.config.hooks.dns_target, &[]).await?;
        lines.into_iter().next().ok_or_else(|| PortError::new("hook", "dns_target printed nothing"))
    }

    async fn platform_domain(&self) -> Result<String, PortError> {
        Ok(self.config.platform_domain.clone())
    }

    async fn switch_dns(&self, to: &str) -> Result<(), PortError> {
        self.act("switch_dns", &self.config.hooks.switch_dns, &[("DRLAB_DNS_TARGET", to.to_string())]).await.map(|_| ())
    }

    async fn probe(&self, vip: &str) -> Result<Probe, PortError> {
        self.prober.probe(vip).await
    }

    async fn set_paused(&self, clusters: Option<&[String]>, paused: bool) -> Result<Vec<String>, PortError> {
        let clusters = match clusters {
            Some(c) => c.to_vec(),
            // Every workload Cluster: the ones the sync copied paused from the primary too, so
            // the failover's last step unpauses them all.
            None => inventory::workload_clusters(&self.standby, "standby", false).await?,
        };
        self.pause("standby", clusters, paused).await
    }

    async fn validate(&self) -> Result<Vec<Finding>, PortError> {
        let mut out = crate::validation::read(&self.standby).await?;
        for c in &self.config.required_components {
            let (ns, name) = config::split_name(c).expect("validated when loaded");
            out.extend(crate::validation::component(&self.standby, ns, name).await?);
        }
        if let Some(argv) = &self.config.hooks.validate {
            let lines = self.act("validate", argv, &[]).await?;
            out.extend(lines.into_iter().take(HOOK_FINDINGS_MAX).map(|l| match l.split_once('\t') {
                Some((at, what)) => Finding { what: what.to_string(), where_: at.to_string(), cluster: None },
                None => Finding { what: l, where_: "validate hook".into(), cluster: None },
            }));
        }
        Ok(out)
    }

    async fn orphan_vms(&self) -> Result<Vec<String>, PortError> {
        match &self.config.hooks.orphan_vms {
            Some(argv) => self.act("orphan_vms", argv, &[]).await,
            None => Ok(Vec::new()),
        }
    }

    async fn inventory(&self, side: &str) -> Result<Inventory, PortError> {
        let primary_side = side == self.config.primary;
        let etcd = if primary_side { self.primary().await? } else { self.standby.clone() };
        let keyring =
            if primary_side { self.sync.boundary.source.as_ref() } else { self.sync.boundary.target.as_ref() };
        let signing = self.token_signing.as_ref().map(|(p, s)| if primary_side { p.clone() } else { s.clone() });
        let conn = if primary_side { &self.sync.source } else { &self.sync.target };
        let s = inventory::Side {
            name: side,
            etcd: &etcd,
            keyring,
            rules: &self.sync.rules,
            certificate: self.config.certificate().expect("validated when loaded"),
            token_signing: signing,
            endpoint: (&conn.endpoints[0], conn.tls.as_ref()),
            hook_within: self.config.timeouts.hook(),
        };
        inventory::inventory(&s).await
    }

    async fn try_lock(&self, holder: &str) -> Result<Option<String>, PortError> {
        self.lock.try_lock(&self.standby.client, "standby", holder).await
    }

    async fn unlock(&self) -> Result<(), PortError> {
        self.lock.unlock(&self.standby.client, "standby").await
    }

    async fn now_ms(&self) -> Result<u64, PortError> {
        // Wall time: the RTO of a resumed failover counts from its first start, across processes.
        let since = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_err(port("clock"))?;
        Ok(since.as_millis() as u64)
    }

    async fn load_progress(&self) -> Result<Option<Progress>, PortError> {
        Ok(Self::get(&self.standby, PROGRESS_KEY, "standby").await?.map(|v| decode_progress(&v)))
    }

    async fn save_progress(&self, p: &Progress) -> Result<(), PortError> {
        self.put(PROGRESS_KEY.into(), serde_json::to_vec(p).expect("progress serialises")).await
    }

    async fn audit(&self, record: &serde_json::Value) -> Result<(), PortError> {
        let rev = self.target_head().await?;
        self.put(format!("{AUDIT_PREFIX}{rev:012}"), record.to_string().into_bytes()).await
    }
}

/// A monitor answer's body when it is 2xx; else the call and what the daemon said.
fn answered_ok(method: &str, path: &str, code: u16, body: String) -> Result<String, PortError> {
    if !(200..300).contains(&code) {
        return Err(PortError::new("sync", format!("{method} {path}: {code} {}", body.trim())));
    }
    Ok(body)
}
