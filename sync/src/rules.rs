//! What is synced: an ordered rule list, first match wins, behind a hard deny list no rules file
//! can override.
//!
//! A rules file (`--rules FILE`) is YAML:
//!
//! ```yaml
//! rules:
//!   - exclude: {namespace: kube-system}
//!   - include: {group: {glob: "*cluster.x-k8s.io"}, namespace: cpaas-system}
//!   - exclude: {prefix: /registry/events/}
//! default: exclude        # when no rule matches (optional: the profile's default stands)
//! ```
//!
//! A matcher's fields are AND-ed: `prefix` (key prefix), `group` ("" for built-in resources),
//! `resource`, `namespace`, `name`; each of the last four is an exact string or `{prefix: …}` /
//! `{glob: …}` (`*` and `?`). Fields other than `prefix` only match keys that parse as object
//! paths. The file's rules go ahead of the profile's.

use std::path::Path;

use serde::Deserialize;

use crate::keys;

/// Keys that never cross, whatever the rules say (and in every mutant but `ignore-rules-off`):
/// the sync's own bookkeeping; leader-election Leases (a copied lease stops the standby's
/// controllers from electing a leader, or makes two fight); `masterleases` (the primary's API
/// server IPs would become the standby's `kubernetes` Service endpoints); Events; and the API
/// server's compaction key (a copied one disturbs the standby's own compaction).
pub const HARD_DENY_PREFIXES: &[&str] = &[
    crate::BOOKKEEPING_PREFIX,
    "/registry/leases/",
    "/registry/masterleases/",
    "/registry/events/",
    "compact_rev_key",
    "/registry/compact_rev_key",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Include,
    Exclude,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum StrMatch {
    Exact(String),
    Pattern(Pattern),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pattern {
    prefix: Option<String>,
    glob: Option<String>,
}

impl StrMatch {
    fn matches(&self, s: &str) -> bool {
        match self {
            StrMatch::Exact(e) => s == e,
            StrMatch::Pattern(p) => {
                p.prefix.as_ref().is_none_or(|x| s.starts_with(x.as_str()))
                    && p.glob.as_ref().is_none_or(|g| glob(g, s))
            }
        }
    }
}

/// `*` any run, `?` any one character.
pub fn glob(pattern: &str, s: &str) -> bool {
    let (p, s): (Vec<char>, Vec<char>) = (pattern.chars().collect(), s.chars().collect());
    let (mut pi, mut si, mut star, mut mark) = (0, 0, None, 0);
    while si < s.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == s[si]) {
            pi += 1;
            si += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = si;
            pi += 1;
        } else if let Some(st) = star {
            pi = st + 1;
            mark += 1;
            si = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Matcher {
    prefix: Option<String>,
    group: Option<StrMatch>,
    resource: Option<StrMatch>,
    namespace: Option<StrMatch>,
    name: Option<StrMatch>,
}

impl Matcher {
    fn matches(&self, key: &[u8]) -> bool {
        if let Some(p) = &self.prefix
            && !key.starts_with(p.as_bytes())
        {
            return false;
        }
        let needs_object =
            self.group.is_some() || self.resource.is_some() || self.namespace.is_some() || self.name.is_some();
        if !needs_object {
            return true;
        }
        let Some(info) = keys::parse(key) else { return false };
        self.group.as_ref().is_none_or(|m| m.matches(info.group))
            && self.resource.as_ref().is_none_or(|m| m.matches(info.resource))
            && self.namespace.as_ref().is_none_or(|m| info.namespace.is_some_and(|ns| m.matches(ns)))
            && self.name.as_ref().is_none_or(|m| m.matches(info.name))
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "lowercase", deny_unknown_fields)]
pub enum Rule {
    Include(Matcher),
    Exclude(Matcher),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleFile {
    #[serde(default)]
    rules: Vec<Rule>,
    default: Option<Action>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Profile {
    Immutable,
    Traditional,
}

impl Profile {
    pub fn parse(s: &str) -> Option<Profile> {
        match s {
            "immutable" => Some(Profile::Immutable),
            "traditional" => Some(Profile::Traditional),
            _ => None,
        }
    }

    fn source(self) -> (&'static str, &'static str) {
        match self {
            Profile::Immutable => ("profile immutable", include_str!("../profiles/immutable.yaml")),
            Profile::Traditional => ("profile traditional", include_str!("../profiles/traditional.yaml")),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RulesError {
    #[error("{path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("{path}:{line}:{column}: {message}")]
    Parse { path: String, line: u64, column: u64, message: String },
}

/// Why a key is or is not synced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Include,
    /// Excluded by a rule (or the default).
    Exclude,
    /// Excluded by the hard deny list.
    Denied,
}

#[derive(Debug, Clone)]
pub struct Rules {
    rules: Vec<Rule>,
    default: Action,
    /// Test-only: the `ignore-rules-off` mutant syncs everything, deny list included.
    #[cfg(feature = "mutants")]
    pub ignore_rules_off: bool,
}

fn parse_file(path: &str, text: &str) -> Result<RuleFile, RulesError> {
    serde_saphyr::from_str::<RuleFile>(text).map_err(|e| {
        let (line, column, message) = yaml_error(&e);
        RulesError::Parse { path: path.to_string(), line, column, message }
    })
}

/// A YAML error as (line, column, message) for a `file:line:column: message` report: the
/// library's message carries its location twice (an `error: line L column C:` prefix and a
/// suffix on later lines); this keeps the first line without the prefix.
pub fn yaml_error(e: &serde_saphyr::Error) -> (u64, u64, String) {
    let (line, column) = e.location().map(|l| (l.line(), l.column())).unwrap_or((1, 1));
    let first = e.to_string().lines().next().unwrap_or("invalid YAML").to_string();
    let message = first
        .strip_prefix("error: line ")
        .and_then(|rest| rest.split_once(": ").map(|(_, m)| m.to_string()))
        .unwrap_or(first);
    (line, column, message)
}

impl Rules {
    pub fn profile(p: Profile) -> Rules {
        let (name, text) = p.source();
        let f = parse_file(name, text).expect("shipped profiles parse");
        Rules {
            rules: f.rules,
            default: f.default.unwrap_or(Action::Exclude),
            #[cfg(feature = "mutants")]
            ignore_rules_off: false,
        }
    }

    /// The profile with a rules file's rules ahead of its own.
    pub fn with_file(p: Profile, path: &Path) -> Result<Rules, RulesError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| RulesError::Read { path: shown.clone(), source })?;
        Self::with_text(p, &shown, &text)
    }

    pub fn with_text(p: Profile, name: &str, text: &str) -> Result<Rules, RulesError> {
        let f = parse_file(name, text)?;
        let mut r = Rules::profile(p);
        let mut rules = f.rules;
        rules.append(&mut r.rules);
        r.rules = rules;
        if let Some(d) = f.default {
            r.default = d;
        }
        Ok(r)
    }

    pub fn decide(&self, key: &[u8]) -> Decision {
        #[cfg(feature = "mutants")]
        if self.ignore_rules_off {
            return Decision::Include;
        }
        if HARD_DENY_PREFIXES.iter().any(|p| key.starts_with(p.as_bytes())) {
            return Decision::Denied;
        }
        for rule in &self.rules {
            match rule {
                Rule::Include(m) if m.matches(key) => return Decision::Include,
                Rule::Exclude(m) if m.matches(key) => return Decision::Exclude,
                _ => {}
            }
        }
        match self.default {
            Action::Include => Decision::Include,
            Action::Exclude => Decision::Exclude,
        }
    }

    pub fn includes(&self, key: &[u8]) -> bool {
        self.decide(key) == Decision::Include
    }

    /// A digest of the rules: the sync's ledger is only valid under the rules it was verified
    /// under (they decide which keys are in scope).
    pub fn digest(&self) -> String {
        use sha2::{Digest, Sha256};
        hex::encode(&Sha256::digest(format!("{self:?}").as_bytes())[..8])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inc(r: &Rules, k: &str) -> bool {
        r.includes(k.as_bytes())
    }

    #[test]
    fn glob_matches_like_shell() {
        assert!(glob("global-*", "global-ca"));
        assert!(glob("*cluster.x-k8s.io", "infrastructure.cluster.x-k8s.io"));
        assert!(glob("*cluster.x-k8s.io", "cluster.x-k8s.io"));
        assert!(!glob("global-*", "global"));
        assert!(glob("m?", "m1"));
        assert!(!glob("m?", "m12"));
        assert!(glob("*", ""));
    }

    #[test]
    fn immutable_profile_syncs_workload_capi_but_not_the_standbys_globals() {
        let r = Rules::profile(Profile::Immutable);
        assert!(inc(&r, "/registry/cluster.x-k8s.io/machines/cpaas-system/wl-1-md-abc"));
        assert!(inc(&r, "/registry/cluster.x-k8s.io/machinesets/cpaas-system/wl-1-md"));
        assert!(inc(&r, "/registry/infrastructure.cluster.x-k8s.io/baremetalmachines/cpaas-system/wl-1-m0"));
        assert!(inc(&r, "/registry/elemental.cattle.io/machineinventories/cpaas-system/host-7"));
        assert!(inc(&r, "/registry/secrets/cpaas-system/wl-1-kubeconfig"));
        assert!(inc(&r, "/registry/serviceaccounts/cpaas-system/baremetal-system-agent"));
        assert!(inc(&r, "/registry/secrets/cpaas-system/baremetal-system-agent-token"));
        assert!(inc(&r, "/registry/roles/cpaas-system/baremetal-system-agent"));
        assert!(!inc(&r, "/registry/cluster.x-k8s.io/clusters/cpaas-system/global"));
        assert!(!inc(&r, "/registry/infrastructure.cluster.x-k8s.io/baremetalclusters/cpaas-system/global"));
        assert!(!inc(&r, "/registry/cluster.x-k8s.io/machines/cpaas-system/global-cp-0"));
        assert!(!inc(&r, "/registry/secrets/cpaas-system/global-kubeconfig"));
        assert!(!inc(&r, "/registry/elemental.cattle.io/seedimages/cpaas-system/iso-1"));
        assert!(!inc(&r, "/registry/configmaps/cpaas-system/anything"));
        assert!(!inc(&r, "/registry/cluster.x-k8s.io/machines/other-ns/m"));
        assert!(!inc(&r, "/registry/serviceaccounts/cpaas-system/default"));
    }

    #[test]
    fn traditional_profile_keeps_out_excluded_namespaces_and_cluster_local_keys() {
        let r = Rules::profile(Profile::Traditional);
        assert!(inc(&r, "/registry/configmaps/team-a/cfg"));
        assert!(inc(&r, "/registry/namespaces/team-a"));
        for ns in ["cpaas-system", "kube-system", "default", "kube-node-lease", "operators", "kubevirt"] {
            assert!(!inc(&r, &format!("/registry/configmaps/{ns}/x")), "{ns}");
        }
        assert!(!inc(&r, "/registry/ranges/serviceips"));
        assert!(!inc(&r, "/registry/minions/node-1"));
        assert!(!inc(&r, "/registry/apiregistration.k8s.io/apiservices/v1.apps"));
        assert!(!inc(&r, "/registry/mutatingwebhookconfigurations/x"));
        assert!(!inc(&r, "/registry/persistentvolumes/pv-1"));
    }

    #[test]
    fn hard_deny_list_beats_every_rules_file() {
        let text = "rules:\n  - include: {prefix: \"\"}\ndefault: include\n";
        let r = Rules::with_text(Profile::Traditional, "t.yaml", text).expect("parses");
        for k in [
            "/registry/leases/team-a/leader",
            "/registry/masterleases/10.0.0.1",
            "/registry/events/team-a/e1",
            "compact_rev_key",
            "/drlab/etcd-sync/checkpoint",
        ] {
            assert_eq!(r.decide(k.as_bytes()), Decision::Denied, "{k}");
        }
        assert!(inc(&r, "/registry/configmaps/kube-system/x"), "the file's include-all goes first");
    }

    #[test]
    fn rules_file_goes_ahead_of_the_profile() {
        let text = "rules:\n  - exclude: {namespace: team-a, resource: secrets}\n";
        let r = Rules::with_text(Profile::Traditional, "t.yaml", text).expect("parses");
        assert!(!inc(&r, "/registry/secrets/team-a/s"));
        assert!(inc(&r, "/registry/configmaps/team-a/c"));
    }

    #[test]
    fn malformed_rules_file_names_file_line_and_column() {
        let text = "rules:\n  - include: {namespace: a}\n  - exclud: {namespace: b}\n";
        let e = Rules::with_text(Profile::Immutable, "bad.yaml", text).unwrap_err().to_string();
        assert!(e.starts_with("bad.yaml:3:"), "{e}");
        let text = "rules:\n  - include: {namespace: a, colour: red}\n";
        let e = Rules::with_text(Profile::Immutable, "bad.yaml", text).unwrap_err().to_string();
        assert!(e.starts_with("bad.yaml:2:"), "{e}");
        assert!(!e.contains("error: line"), "the location is said once: {e}");
        let e = Rules::with_text(Profile::Immutable, "bad.yaml", "rules: [").unwrap_err().to_string();
        assert!(e.starts_with("bad.yaml:"), "{e}");
    }
}
