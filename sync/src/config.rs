//! The sync's settings as `etcd-sync --config FILE` reads them (flags win over the file), and
//! what they resolve to: both sides' connections, the rules, the encryption boundary. The
//! failover orchestrator reads the same file, so its checks see what the daemon sees.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::conn::{ConnConfig, Connector, TlsFiles};
use crate::control::Control;
use crate::crypto::{Boundary, Keyring};
use crate::engine::Handle;
use crate::rules::{Profile, Rules};

/// Every setting, each optional (a flag or the file may give it).
#[derive(Deserialize, Default, Debug, Clone)]
#[serde(deny_unknown_fields)]
pub struct SyncConfig {
    pub source_endpoints: Option<Vec<String>>,
    pub target_endpoints: Option<Vec<String>>,
    pub source_cacert: Option<PathBuf>,
    pub source_cert: Option<PathBuf>,
    pub source_key: Option<PathBuf>,
    pub target_cacert: Option<PathBuf>,
    pub target_cert: Option<PathBuf>,
    pub target_key: Option<PathBuf>,
    pub profile: Option<String>,
    pub rules: Option<PathBuf>,
    pub target_max_txn_ops: Option<usize>,
    pub page_keys: Option<i64>,
    pub source_encryption_config: Option<PathBuf>,
    pub target_encryption_config: Option<PathBuf>,
    /// HTTP/2 ping interval on both sides' connections, while a stream is open (10 000 by
    /// default). etcd counts a ping sooner than its `--grpc-keepalive-min-time` (5 s by default)
    /// after the last as a strike and closes the connection on the third.
    pub keepalive_interval_ms: Option<u64>,
    /// How long a ping may go unanswered before the connection counts as dead (5 000).
    pub keepalive_timeout_ms: Option<u64>,
}

/// Bounds on the keep-alive settings: a ping at least every hour, at most every second; an
/// answer awaited at least 100 ms, at most a minute.
const KEEPALIVE_INTERVAL_MS: std::ops::RangeInclusive<u64> = 1_000..=3_600_000;
const KEEPALIVE_TIMEOUT_MS: std::ops::RangeInclusive<u64> = 100..=60_000;
/// etcd's default `--grpc-keepalive-min-time`.
const ETCD_KEEPALIVE_MIN_TIME_MS: u64 = 5_000;

/// A YAML file's error as `file:line:column: message`.
pub fn yaml_error(path: &Path, e: &serde_saphyr::Error) -> String {
    let (l, c, message) = crate::rules::yaml_error(e);
    format!("{}:{l}:{c}: {message}", path.display())
}

impl SyncConfig {
    /// Reads a config file (relative paths inside it are taken as given, from the working dir).
    pub fn load(path: &Path) -> Result<SyncConfig, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        serde_saphyr::from_str::<SyncConfig>(&text).map_err(|e| yaml_error(path, &e))
    }

    /// `self`'s settings where given, else `file`'s.
    pub fn over(self, file: SyncConfig) -> SyncConfig {
        let endpoints = |a: Option<Vec<String>>, b| a.filter(|v: &Vec<String>| !v.is_empty()).or(b);
        SyncConfig {
            source_endpoints: endpoints(self.source_endpoints, file.source_endpoints),
            target_endpoints: endpoints(self.target_endpoints, file.target_endpoints),
            source_cacert: self.source_cacert.or(file.source_cacert),
            source_cert: self.source_cert.or(file.source_cert),
            source_key: self.source_key.or(file.source_key),
            target_cacert: self.target_cacert.or(file.target_cacert),
            target_cert: self.target_cert.or(file.target_cert),
            target_key: self.target_key.or(file.target_key),
            profile: self.profile.or(file.profile),
            rules: self.rules.or(file.rules),
            target_max_txn_ops: self.target_max_txn_ops.or(file.target_max_txn_ops),
            page_keys: self.page_keys.or(file.page_keys),
            source_encryption_config: self.source_encryption_config.or(file.source_encryption_config),
            target_encryption_config: self.target_encryption_config.or(file.target_encryption_config),
            keepalive_interval_ms: self.keepalive_interval_ms.or(file.keepalive_interval_ms),
            keepalive_timeout_ms: self.keepalive_timeout_ms.or(file.keepalive_timeout_ms),
        }
    }

    pub fn resolve(self) -> Result<Resolved, String> {
        let source_endpoints = self.source_endpoints.unwrap_or_default();
        let target_endpoints = self.target_endpoints.unwrap_or_default();
        if source_endpoints.is_empty() || target_endpoints.is_empty() {
            return Err("both sides' endpoints are required (--source-endpoints and --target-endpoints, or source_endpoints and target_endpoints in the config file)".into());
        }
        let profile_name = self.profile.unwrap_or_else(|| "immutable".into());
        let profile = Profile::parse(&profile_name)
            .ok_or_else(|| format!("unknown profile {profile_name:?} (immutable or traditional)"))?;
        let rules = match &self.rules {
            Some(p) => Rules::with_file(profile, p).map_err(|e| e.to_string())?,
            None => Rules::profile(profile),
        };
        let mut source = ConnConfig::new(source_endpoints);
        let mut target = ConnConfig::new(target_endpoints);
        keepalive(self.keepalive_interval_ms, self.keepalive_timeout_ms, [&mut source, &mut target])?;
        source.tls = tls(self.source_cacert, self.source_cert, self.source_key);
        target.tls = tls(self.target_cacert, self.target_cert, self.target_key);
        let keyring = |p: Option<PathBuf>| p.map(|p| Keyring::load(&p).map_err(|e| e.to_string())).transpose();
        let boundary = Boundary::new(keyring(self.source_encryption_config)?, keyring(self.target_encryption_config)?);
        if boundary.source.is_some() != boundary.target.is_some() {
            tracing::warn!(
                "only one side's encryption configuration given: ciphertext will be reported undecryptable, not copied"
            );
        }
        Ok(Resolved {
            boundary,
            source,
            target,
            rules,
            txn_ops_max: self.target_max_txn_ops.unwrap_or(128),
            page_keys: self.page_keys.unwrap_or(1000),
        })
    }
}

/// The keep-alive settings given, checked against their bounds, on both sides' connections.
fn keepalive(interval_ms: Option<u64>, timeout_ms: Option<u64>, conns: [&mut ConnConfig; 2]) -> Result<(), String> {
    let check = |name: &str, v: Option<u64>, range: &std::ops::RangeInclusive<u64>| match v {
        Some(ms) if !range.contains(&ms) => {
            Err(format!("{name} must be {}..={} (got {ms})", range.start(), range.end()))
        }
        v => Ok(v.map(std::time::Duration::from_millis)),
    };
    let interval = check("keepalive_interval_ms", interval_ms, &KEEPALIVE_INTERVAL_MS)?;
    let timeout = check("keepalive_timeout_ms", timeout_ms, &KEEPALIVE_TIMEOUT_MS)?;
    if interval_ms.is_some_and(|ms| ms < ETCD_KEEPALIVE_MIN_TIME_MS) {
        tracing::warn!(
            keepalive_interval_ms = interval_ms,
            "pings more often than etcd's default --grpc-keepalive-min-time (5s): an etcd left at \
             its default closes the connection after three of them"
        );
    }
    for c in conns {
        if let Some(d) = interval {
            c.keepalive_interval = d;
        }
        if let Some(d) = timeout {
            c.keepalive_timeout = d;
        }
    }
    Ok(())
}

fn tls(cacert: Option<PathBuf>, cert: Option<PathBuf>, key: Option<PathBuf>) -> Option<TlsFiles> {
    (cacert.is_some() || cert.is_some() || key.is_some()).then_some(TlsFiles { cacert, cert, key })
}

/// Settings ready to use.
#[derive(Clone)]
pub struct Resolved {
    pub boundary: Boundary,
    pub source: ConnConfig,
    pub target: ConnConfig,
    pub rules: Rules,
    pub txn_ops_max: usize,
    pub page_keys: i64,
}

impl Resolved {
    /// The control operations over real TCP, reporting on `handle`'s engine (a detached
    /// `Handle::default()` for a process that runs none: the checks and the gate need no engine).
    pub fn control(&self, handle: Handle) -> Control {
        Control {
            source: self.source.clone(),
            target: self.target.clone(),
            source_connector: Connector::Tcp,
            target_connector: Connector::Tcp,
            rules: self.rules.clone(),
            boundary: self.boundary.clone(),
            handle,
            page_keys: self.page_keys,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn file(text: &str) -> SyncConfig {
        serde_saphyr::from_str(text).expect("a valid settings file")
    }

    const ENDS: &str = "source_endpoints: [http://127.0.0.1:2379]\ntarget_endpoints: [http://127.0.0.1:2380]\n";

    #[test]
    fn keepalive_from_the_file_reaches_both_sides() {
        let r = file(&format!("{ENDS}keepalive_interval_ms: 30000\nkeepalive_timeout_ms: 2000\n")).resolve().unwrap();
        for c in [&r.source, &r.target] {
            assert_eq!((c.keepalive_interval, c.keepalive_timeout), (Duration::from_secs(30), Duration::from_secs(2)));
            assert!(!c.keepalive_while_idle, "etcd's ping policy forbids idle pings");
        }
    }

    #[test]
    fn keepalive_defaults_to_the_shipped_ones_and_flags_win() {
        let r = file(ENDS).resolve().unwrap();
        let d = ConnConfig::new(["x"]);
        assert_eq!(
            (r.source.keepalive_interval, r.target.keepalive_timeout),
            (d.keepalive_interval, d.keepalive_timeout)
        );
        let flags = SyncConfig { keepalive_interval_ms: Some(20_000), ..SyncConfig::default() };
        let r = flags.over(file(&format!("{ENDS}keepalive_interval_ms: 30000\n"))).resolve().unwrap();
        assert_eq!(r.target.keepalive_interval, Duration::from_secs(20));
    }

    #[test]
    fn keepalive_out_of_bounds_is_refused_by_name() {
        for (line, name) in [
            ("keepalive_interval_ms: 0", "keepalive_interval_ms"),
            ("keepalive_timeout_ms: 600000", "keepalive_timeout_ms"),
        ] {
            let e = file(&format!("{ENDS}{line}\n")).resolve().err().expect("refused");
            assert!(e.starts_with(name), "{e}");
        }
    }
}
