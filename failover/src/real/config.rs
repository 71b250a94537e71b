//! The real orchestrator's configuration (`dr-failover --config FILE`, YAML). Roles are
//! relative: a failback runs with a file whose `primary` is the cluster serving now.
//!
//! ```yaml
//! primary: 192.0.2.10            # the primary's VIP: where the platform domain points before
//! standby: 192.0.2.20            # the standby's VIP: where it points after
//! platform_domain: platform.example.com
//! sync_config: etcd-sync.yaml    # the file `etcd-sync run --config` reads (source = primary)
//! sync_monitor: 127.0.0.1:9090   # that daemon's monitor and control API
//! hooks:                         # argv lists, run without a shell; see `hooks`
//!   fence_primary: [/opt/dr/fence, on]
//!   unfence_primary: [/opt/dr/fence, off]
//!   primary_fenced: [/opt/dr/fence, status]
//!   pause_clusters: [/opt/dr/pause]
//!   dns_target: [/opt/dr/dns, show]
//!   switch_dns: [/opt/dr/dns, set]
//! probe:
//!   url: "https://{vip}/kubernetes/global/version"
//!   ca_file: platform-ca.pem     # the platform certificate must verify for platform_domain
//! ```
//!
//! Relative paths (the sync config, the CA file, a hook's program when it names a path) are
//! taken from the directory of the config file.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// Everything `dr-failover` needs to reach the platform.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub primary: String,
    pub standby: String,
    pub platform_domain: String,
    pub sync_config: PathBuf,
    pub sync_monitor: String,
    pub hooks: Hooks,
    #[serde(default)]
    pub probe: ProbeConfig,
    #[serde(default)]
    pub timeouts: Timeouts,
    /// The Secret holding the platform certificate, `namespace/name`.
    #[serde(default = "default_platform_certificate")]
    pub platform_certificate: String,
    /// Deployments (`namespace/name`) the standby must run before its workload Clusters are
    /// unpaused (seed 000: CAPI core, the kubeadm and infrastructure providers, …): each must
    /// exist on the standby with a ready replica, or the validation fails and they stay paused.
    #[serde(default)]
    pub required_components: Vec<String>,
    /// Each side's ServiceAccount token signing (kube-apiserver's flags, not in etcd); absent:
    /// preflight lists the check as not done.
    #[serde(default)]
    pub service_accounts: Option<ServiceAccounts>,
}

fn default_platform_certificate() -> String {
    "cpaas-system/dex.tls".into()
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceAccounts {
    pub primary: ServiceAccountSigning,
    pub standby: ServiceAccountSigning,
}

/// `--service-account-key-file`, `--service-account-issuer`, `--api-audiences` of one side.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceAccountSigning {
    pub public_key_file: PathBuf,
    pub issuer: String,
    pub audiences: Vec<String>,
}

impl ServiceAccountSigning {
    /// The key as a fingerprint (its bytes never leave this function).
    pub fn read(&self) -> Result<crate::preflight::TokenSigning, String> {
        use sha2::Digest;
        let key =
            std::fs::read(&self.public_key_file).map_err(|e| format!("{}: {e}", self.public_key_file.display()))?;
        Ok(crate::preflight::TokenSigning {
            key_fingerprint: hex::encode(&sha2::Sha256::digest(key.trim_ascii())[..8]),
            issuer: self.issuer.clone(),
            audiences: self.audiences.clone(),
        })
    }
}

/// Commands for what only the platform's own tooling can do. Each is an argv list run without
/// a shell, its environment carrying `DRLAB_*` variables (see [`super::hooks`]).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Hooks {
    /// Stops every write to the primary (its API's write path or its VIP); idempotent.
    pub fence_primary: Vec<String>,
    pub unfence_primary: Vec<String>,
    /// Exit 0 when the primary refuses writes, 1 when it takes them.
    pub primary_fenced: Vec<String>,
    /// The same for the standby (a failback's standby is the fenced old primary); absent: the
    /// standby is never fenced.
    #[serde(default)]
    pub standby_fenced: Option<Vec<String>>,
    #[serde(default)]
    pub unfence_standby: Option<Vec<String>>,
    /// Sets `spec.paused` to `DRLAB_PAUSED` (true / false) on each CAPI Cluster in
    /// `DRLAB_CLUSTERS` (comma-separated `namespace/name`, never empty) of side `DRLAB_SIDE`
    /// (primary / standby) — e.g. `kubectl patch cluster`. The orchestrator chooses them from
    /// etcd and reads back that the pause took.
    pub pause_clusters: Vec<String>,
    /// Prints where the platform domain points now (a VIP, as `primary` / `standby` name them).
    pub dns_target: Vec<String>,
    /// Points the platform domain at `DRLAB_DNS_TARGET`.
    pub switch_dns: Vec<String>,
    /// Removes the replication path (seed 001: the 2379 forwarding on both VIPs); absent:
    /// nothing to remove.
    #[serde(default)]
    pub remove_replication_path: Option<Vec<String>>,
    /// Starts an `etcd-sync run` primary → standby (a failback's reverse sync, a reinstall);
    /// `DRLAB_BASELINE_REVISION` set when it must pass `--baseline-revision`, `DRLAB_REINSTALL`
    /// (true) when `--reinstall`. Absent: installs are refused with what to run by hand.
    #[serde(default)]
    pub install_sync: Option<Vec<String>>,
    /// Extra post-failover validation: each line printed is a finding (`WHERE<TAB>WHAT`).
    #[serde(default)]
    pub validate: Option<Vec<String>>,
    /// Prints the workload VMs no Machine on the standby names, one per line.
    #[serde(default)]
    pub orphan_vms: Option<Vec<String>>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProbeConfig {
    /// `{vip}` is replaced by the side's VIP. `https` needs `ca_file`.
    #[serde(default = "default_probe_url")]
    pub url: String,
    /// PEM roots the platform certificate must chain to; it must name `platform_domain`.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    #[serde(default = "default_probe_timeout_s")]
    pub timeout_s: u64,
}

fn default_probe_url() -> String {
    "https://{vip}/kubernetes/global/version".into()
}

fn default_probe_timeout_s() -> u64 {
    10
}

impl Default for ProbeConfig {
    fn default() -> Self {
        ProbeConfig { url: default_probe_url(), ca_file: None, timeout_s: default_probe_timeout_s() }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Timeouts {
    /// Each step's bound.
    #[serde(default = "default_step_s")]
    pub step_s: u64,
    /// A hook's bound (it is killed after it).
    #[serde(default = "default_hook_s")]
    pub hook_s: u64,
    /// How long the primary's controllers get to finish a reconcile once paused.
    #[serde(default = "default_quiesce_s")]
    pub quiesce_s: u64,
    #[serde(default = "default_poll_ms")]
    pub poll_ms: u64,
}

fn default_step_s() -> u64 {
    120
}
fn default_hook_s() -> u64 {
    60
}
fn default_quiesce_s() -> u64 {
    5
}
fn default_poll_ms() -> u64 {
    500
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            step_s: default_step_s(),
            hook_s: default_hook_s(),
            quiesce_s: default_quiesce_s(),
            poll_ms: default_poll_ms(),
        }
    }
}

impl Timeouts {
    pub fn hook(&self) -> Duration {
        Duration::from_secs(self.hook_s)
    }
}

impl Config {
    /// Reads and checks a config file: YAML errors at `file:line:column`, then what cannot work.
    pub fn load(path: &Path) -> Result<Config, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let mut c: Config = serde_saphyr::from_str(&text).map_err(|e| sync::config::yaml_error(path, &e))?;
        let dir = path.parent().unwrap_or(Path::new("."));
        c.rebase(dir);
        c.validate().map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(c)
    }

    /// Relative paths are the config file's directory's.
    fn rebase(&mut self, dir: &Path) {
        let at = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = dir.join(&*p);
            }
        };
        at(&mut self.sync_config);
        if let Some(ca) = &mut self.probe.ca_file {
            at(ca);
        }
        if let Some(sa) = &mut self.service_accounts {
            at(&mut sa.primary.public_key_file);
            at(&mut sa.standby.public_key_file);
        }
        for argv in self.hooks.all_mut() {
            if let Some(program) = argv.first_mut().filter(|p| p.contains('/') && Path::new(p.as_str()).is_relative()) {
                *program = dir.join(&*program).display().to_string();
            }
        }
    }

    fn validate(&self) -> Result<(), String> {
        for (name, argv) in self.hooks.named() {
            if argv.is_some_and(|a| a.is_empty() || a[0].is_empty()) {
                return Err(format!("hooks.{name}: an empty command"));
            }
        }
        if self.primary == self.standby {
            return Err(format!("primary and standby are both {:?}", self.primary));
        }
        if !self.probe.url.contains("{vip}") {
            return Err("probe.url must contain {vip}".into());
        }
        if self.probe.url.starts_with("https://") && self.probe.ca_file.is_none() {
            return Err(
                "probe.url is https: probe.ca_file must give the roots the platform certificate chains to".into()
            );
        }
        if !self.probe.url.starts_with("https://") && !self.probe.url.starts_with("http://") {
            return Err("probe.url must be http:// or https://".into());
        }
        if let Some(c) = self.required_components.iter().find(|c| split_name(c).is_none()) {
            return Err(format!("required_components: {c:?} is not namespace/name"));
        }
        if self.certificate().is_none() {
            return Err(format!("platform_certificate {:?}: namespace/name", self.platform_certificate));
        }
        if self.timeouts.step_s == 0 || self.timeouts.hook_s == 0 || self.timeouts.poll_ms == 0 {
            return Err("timeouts must be positive".into());
        }
        Ok(())
    }
}

/// `namespace/name` split, None when it is not one.
pub fn split_name(s: &str) -> Option<(&str, &str)> {
    s.split_once('/').filter(|(ns, n)| !ns.is_empty() && !n.is_empty() && !n.contains('/'))
}

impl Config {
    /// The platform certificate's Secret as (namespace, name).
    pub fn certificate(&self) -> Option<(&str, &str)> {
        split_name(&self.platform_certificate)
    }
}

impl Hooks {
    fn named(&self) -> Vec<(&'static str, Option<&Vec<String>>)> {
        vec![
            ("fence_primary", Some(&self.fence_primary)),
            ("unfence_primary", Some(&self.unfence_primary)),
            ("primary_fenced", Some(&self.primary_fenced)),
            ("standby_fenced", self.standby_fenced.as_ref()),
            ("unfence_standby", self.unfence_standby.as_ref()),
            ("pause_clusters", Some(&self.pause_clusters)),
            ("dns_target", Some(&self.dns_target)),
            ("switch_dns", Some(&self.switch_dns)),
            ("remove_replication_path", self.remove_replication_path.as_ref()),
            ("install_sync", self.install_sync.as_ref()),
            ("validate", self.validate.as_ref()),
            ("orphan_vms", self.orphan_vms.as_ref()),
        ]
    }

    fn all_mut(&mut self) -> Vec<&mut Vec<String>> {
        let mut v = vec![
            &mut self.fence_primary,
            &mut self.unfence_primary,
            &mut self.primary_fenced,
            &mut self.pause_clusters,
            &mut self.dns_target,
            &mut self.switch_dns,
        ];
        v.extend(
            [
                &mut self.standby_fenced,
                &mut self.unfence_standby,
                &mut self.remove_replication_path,
                &mut self.install_sync,
                &mut self.validate,
                &mut self.orphan_vms,
            ]
            .into_iter()
            .flatten(),
        );
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = "primary: 10.0.0.1\nstandby: 10.0.0.2\nplatform_domain: p.test\nsync_config: sync.yaml\n\
        sync_monitor: 127.0.0.1:9090\nhooks: {fence_primary: [./fence, on], unfence_primary: [/bin/fence, off], \
        primary_fenced: [fence, status], pause_clusters: [p], dns_target: [d], switch_dns: [d]}\n\
        probe: {url: \"http://{vip}/version\"}\n";

    /// Loads `text` from a file in a fresh directory (kept as long as the answer).
    fn load(text: &str) -> (tempfile::TempDir, Result<Config, String>) {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("dr.yaml");
        std::fs::write(&p, text).expect("write");
        let c = Config::load(&p);
        (dir, c)
    }

    #[test]
    fn relative_paths_are_the_config_files_directory() {
        let (dir, c) = load(MINIMAL);
        let c = c.expect("loads");
        assert_eq!(c.sync_config, dir.path().join("sync.yaml"));
        assert_eq!(c.hooks.fence_primary[0], dir.path().join("./fence").display().to_string());
        assert_eq!(c.hooks.unfence_primary[0], "/bin/fence", "absolute stays");
        assert_eq!(c.hooks.primary_fenced[0], "fence", "a bare program is looked up in PATH");
        assert_eq!(c.certificate(), Some(("cpaas-system", "dex.tls")));
    }

    #[test]
    fn what_cannot_work_is_refused_with_where() {
        let e = load(&MINIMAL.replace("switch_dns: [d]", "switch_dns: []")).1.expect_err("empty hook");
        assert!(e.contains("hooks.switch_dns: an empty command"), "{e}");
        let e = load(&MINIMAL.replace("http://{vip}", "https://{vip}")).1.expect_err("https without roots");
        assert!(e.contains("probe.ca_file"), "{e}");
        let e = load(&MINIMAL.replace("standby: 10.0.0.2", "standby: 10.0.0.1")).1.expect_err("same");
        assert!(e.contains("both"), "{e}");
        let e = load(&MINIMAL.replace("sync_monitor", "sync_montor")).1.expect_err("unknown field");
        assert!(e.contains("dr.yaml:5:1") && e.contains("sync_montor"), "{e}");
    }
}
