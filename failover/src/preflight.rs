//! Preflight (seeds 000 and 002): what must hold of both global clusters before a failover,
//! decided without I/O over what the ports read from each side. Every finding says what is
//! wrong and where. Blocking findings stop a failover (`--force` goes past them and is
//! recorded). Warnings break the runbook but not this failover — the pinned check guards what
//! they risk (differing encryption keys show there as undecryptable Secrets) — and fail
//! `drlab preflight`. Advice is printed; what a side cannot tell is listed as not checked,
//! never passed silently.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::ports::Finding;

/// The global cluster's own name; its other resources carry the prefix `global-` (seed 002).
pub const GLOBAL: &str = "global";
const PREFIX: &str = "global-";

/// A side's own resources (`global`, `global-*`) keep their names; every other one is synced.
pub fn is_global_name(name: &str) -> bool {
    name == GLOBAL || name.starts_with(PREFIX)
}
/// Findings kept per kind of check (a side with thousands of misnamed objects stays readable).
pub const FINDINGS_MAX: usize = 50;

/// A resource labelled as the global cluster's own, with the names it references.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GlobalObject {
    pub kind: String,
    pub name: String,
    /// The CAPI Cluster or the provider's infrastructure cluster: named exactly `global`.
    pub cluster_level: bool,
    /// (field, name): owner references and `spec.*Ref` names.
    pub refs: Vec<(String, String)>,
}

/// One rule of a Role the workload agents use (seed 000's shared token).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoleRule {
    pub verbs: Vec<String>,
    pub resources: Vec<String>,
    pub resource_names: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentRole {
    pub namespace: String,
    pub name: String,
    pub rules: Vec<RoleRule>,
}

/// How a side's API server signs and accepts ServiceAccount tokens (seed 000: `sa.key` /
/// `sa.pub`, `--service-account-issuer`, `--api-audiences` must match on both sides).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenSigning {
    /// A fingerprint of the signing key (what `sha256sum sa.pub` compares; never the key).
    pub key_fingerprint: String,
    pub issuer: String,
    pub audiences: Vec<String>,
}

/// The platform certificate a side serves (seed 000: e.g. `cpaas-system/dex.tls`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlatformCertificate {
    /// Where it was read, e.g. `Secret cpaas-system/dex.tls`.
    pub source: String,
    /// The names it covers (DNS and IP subject alternative names), or why they could not be read.
    pub names: Result<Vec<String>, String>,
}

/// Names a certificate bounds (a certificate with thousands of names is reported, not copied).
pub const CERT_NAMES_MAX: usize = 100;

/// The DNS and IP subject alternative names of the first certificate in `pem`.
pub fn certificate_names(pem: &[u8]) -> Result<Vec<String>, String> {
    let (_, pem) = x509_parser::pem::parse_x509_pem(pem).map_err(|e| format!("not a PEM certificate: {e}"))?;
    certificate_names_der(&pem.contents)
}

/// [`certificate_names`] of a DER certificate (what a TLS peer presents).
pub fn certificate_names_der(der: &[u8]) -> Result<Vec<String>, String> {
    use x509_parser::extensions::GeneralName;
    let (_, cert) = x509_parser::parse_x509_certificate(der).map_err(|e| format!("not an X.509 certificate: {e}"))?;
    let san = cert.subject_alternative_name().map_err(|e| format!("its subjectAltName does not parse: {e}"))?;
    let Some(san) = san else { return Ok(Vec::new()) };
    let names = san.value.general_names.iter().filter_map(|n| match n {
        GeneralName::DNSName(d) => Some(d.to_string()),
        GeneralName::IPAddress(b) => match b.len() {
            4 => <[u8; 4]>::try_from(*b).ok().map(|a| std::net::Ipv4Addr::from(a).to_string()),
            16 => <[u8; 16]>::try_from(*b).ok().map(|a| std::net::Ipv6Addr::from(a).to_string()),
            _ => None,
        },
        _ => None,
    });
    Ok(names.take(CERT_NAMES_MAX).collect())
}

/// Whether a certificate naming `names` is valid for `host` (RFC 6125: a wildcard stands for
/// exactly one leftmost label; names compare without case).
pub fn covers(names: &[String], host: &str) -> bool {
    let host = host.to_ascii_lowercase();
    names.iter().any(|n| {
        let n = n.to_ascii_lowercase();
        match n.strip_prefix("*.") {
            Some(rest) => host.split_once('.').is_some_and(|(first, tail)| !first.is_empty() && tail == rest),
            None => n == host,
        }
    })
}

/// What preflight reads from one side.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Inventory {
    pub side: String,
    pub global_objects: Vec<GlobalObject>,
    /// A fingerprint of the side's EncryptionConfiguration (never the keys).
    pub encryption_fingerprint: Option<String>,
    pub agent_roles: Vec<AgentRole>,
    pub token_signing: Option<TokenSigning>,
    /// Objects the sync's rules leave out (other than the side's own `global` / `global-*` ones,
    /// which each side keeps by design), per namespace: not on the standby after a failover.
    pub excluded: BTreeMap<String, u64>,
    /// Checks this side cannot answer, and why.
    pub not_checked: Vec<String>,
    /// The platform certificate it serves (None: it has none where it should be).
    pub platform_certificate: Option<PlatformCertificate>,
    /// The certificate its etcd serves (None: not read — plain TCP, or not asked).
    #[serde(default)]
    pub etcd_certificate: Option<PlatformCertificate>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Preflight {
    pub blocking: Vec<Finding>,
    pub warnings: Vec<Finding>,
    pub advice: Vec<Finding>,
    pub not_checked: Vec<String>,
    /// What was looked at, per side (so "no findings" is never mistaken for "nothing read").
    pub checked: Vec<String>,
}

impl Preflight {
    /// Every finding, blocking first, in the words of the runbooks.
    pub fn lines(&self) -> Vec<String> {
        let mut out: Vec<String> = self.blocking.iter().map(|f| format!("BLOCKING {}: {}", f.where_, f.what)).collect();
        out.extend(self.warnings.iter().map(|f| format!("WARNING {}: {}", f.where_, f.what)));
        out.extend(self.advice.iter().map(|f| format!("advice {}: {}", f.where_, f.what)));
        out.extend(self.checked.iter().map(|c| format!("checked: {c}")));
        out.extend(self.not_checked.iter().map(|n| format!("not checked: {n}")));
        out
    }
}

fn bounded(mut v: Vec<Finding>, what: &str) -> Vec<Finding> {
    if v.len() > FINDINGS_MAX {
        let more = v.len() - FINDINGS_MAX;
        v.truncate(FINDINGS_MAX);
        v.push(Finding { what: format!("… and {more} more {what}"), where_: String::new(), cluster: None });
    }
    v
}

fn naming(inv: &Inventory) -> Vec<Finding> {
    let mut out = Vec::new();
    let names: Vec<&str> = inv.global_objects.iter().map(|o| o.name.as_str()).collect();
    let at = |o: &GlobalObject| format!("{} {} {}", inv.side, o.kind, o.name);
    for o in &inv.global_objects {
        if o.cluster_level && o.name != GLOBAL {
            out.push(Finding {
                what: format!(
                    "must be named exactly `{GLOBAL}`: the installer looks it up by that name, and the DR \
                     etcd-sync listener is only allocated for it"
                ),
                where_: at(o),
                cluster: None,
            });
        } else if !o.cluster_level && !o.name.starts_with(PREFIX) {
            out.push(Finding {
                what: format!(
                    "lacks the `{PREFIX}` prefix: invisible to DR, so the sync copies it over the standby's own \
                     and the standby's Machines are deleted the first time DR is exercised"
                ),
                where_: at(o),
                cluster: None,
            });
        }
        for (field, name) in &o.refs {
            if !names.contains(&name.as_str()) {
                out.push(Finding {
                    what: format!("{field} names `{name}`, which is not one of the global cluster's resources"),
                    where_: at(o),
                    cluster: None,
                });
            }
        }
    }
    bounded(out, "naming findings")
}

fn agent_roles(inv: &Inventory) -> Vec<Finding> {
    let mut out = Vec::new();
    for role in &inv.agent_roles {
        let at = format!("{} Role {}/{}", inv.side, role.namespace, role.name);
        for rule in role.rules.iter().filter(|r| r.resources.iter().any(|s| s == "secrets" || s == "*")) {
            for verb in rule.verbs.iter().filter(|v| ["list", "watch", "*"].contains(&v.as_str())) {
                out.push(Finding {
                    what: format!("grants `{verb}` on Secrets: the shared agent token could read every Secret"),
                    where_: at.clone(),
                    cluster: None,
                });
            }
            if rule.resource_names.is_empty() {
                out.push(Finding {
                    what: "grants Secrets without resourceNames: only the hosts' plan Secrets may be named".into(),
                    where_: at.clone(),
                    cluster: None,
                });
            }
            for name in rule.resource_names.iter().filter(|n| !n.ends_with("-plan")) {
                out.push(Finding {
                    what: format!(
                        "grants Secret `{name}`, not a plan Secret (registry, bootstrap and kubeconfig Secrets must \
                         not be reachable with the agent token)"
                    ),
                    where_: at.clone(),
                    cluster: None,
                });
            }
        }
    }
    bounded(out, "agent Role findings")
}

/// Decides over the sides read (the primary first; a lost primary is simply absent), without
/// the platform certificate check (see [`decide_covering`]).
pub fn decide(sides: &[Inventory]) -> Preflight {
    decide_covering(sides, &[])
}

/// Seed 000: the platform certificate each side serves covers every name clients use to reach
/// the platform — its domain and both VIPs — or clients going by a name it lacks fail TLS
/// verification once the other side serves.
fn platform_certificate(inv: &Inventory, names: &[String]) -> Vec<Finding> {
    let at = |source: &str| format!("{} {source}", inv.side);
    match &inv.platform_certificate {
        None if inv.not_checked.iter().any(|n| n.starts_with("platform certificate")) => Vec::new(),
        None => vec![Finding {
            what: "no platform certificate: the ingress cannot serve the platform domain over TLS".into(),
            where_: at("platform certificate"),
            cluster: None,
        }],
        Some(cert) => {
            uncovered(inv, cert, names, "platform", "clients reaching the platform by that name fail TLS verification")
        }
    }
}

/// What a certificate (`what`: platform, etcd server) lacks of `names`: each name it does not
/// cover, with what happens to a client using it, or why it could not be read.
fn uncovered(inv: &Inventory, cert: &PlatformCertificate, names: &[String], what: &str, so: &str) -> Vec<Finding> {
    let at = format!("{} {}", inv.side, cert.source);
    match &cert.names {
        Err(e) => {
            vec![Finding { what: format!("the {what} certificate cannot be read: {e}"), where_: at, cluster: None }]
        }
        Ok(has) => names
            .iter()
            .filter(|n| !covers(has, n))
            .map(|n| Finding {
                what: format!(
                    "the {what} certificate does not cover `{n}` (it covers {}): {so}",
                    if has.is_empty() { "no name".to_string() } else { has.join(", ") }
                ),
                where_: at.clone(),
                cluster: None,
            })
            .collect(),
    }
}

/// "checked" words for a certificate read (`what`), or nothing when none was.
fn read_summary(cert: &Option<PlatformCertificate>, what: &str) -> String {
    match cert {
        Some(PlatformCertificate { names: Ok(n), .. }) => format!(", {what}: {} names", n.len()),
        Some(PlatformCertificate { names: Err(_), .. }) => format!(", {what} unreadable"),
        None => String::new(),
    }
}

/// Seed 000: each side's etcd server certificate names both VIPs and the platform domain, so
/// the replication path (the 2379 forwarding on the VIPs) and the failover's reads reach it under
/// any of them. Checked only where the certificate was read.
fn etcd_certificate(inv: &Inventory, names: &[String]) -> Vec<Finding> {
    let Some(cert) = &inv.etcd_certificate else { return Vec::new() };
    uncovered(inv, cert, names, "etcd server", "the replication path through that name fails TLS verification")
}

/// [`decide`], and the platform certificate of each side must cover `names` (the platform
/// domain and both VIPs; empty: not checked).
pub fn decide_covering(sides: &[Inventory], names: &[String]) -> Preflight {
    let mut pf = Preflight::default();
    if names.is_empty() {
        pf.not_checked.push("platform certificate: the platform domain and VIPs were not given".into());
    }
    for inv in sides {
        if !names.is_empty() {
            pf.blocking.extend(platform_certificate(inv, names));
            pf.blocking.extend(etcd_certificate(inv, names));
        }
        pf.blocking.extend(naming(inv));
        pf.blocking.extend(agent_roles(inv));
        for (ns, n) in &inv.excluded {
            pf.advice.push(Finding {
                what: format!("{n} objects are not copied by the sync's rules: back up by hand what a failover needs"),
                where_: format!("{} namespace {ns}", inv.side),
                cluster: None,
            });
        }
        pf.not_checked.extend(inv.not_checked.iter().map(|n| format!("{}: {n}", inv.side)));
        let read = |known: bool| if known { "read" } else { "unknown" };
        let cert = read_summary(&inv.platform_certificate, "platform certificate");
        let etcd = read_summary(&inv.etcd_certificate, "etcd certificate");
        pf.checked.push(format!(
            "{}: {} global resources, {} agent Roles, encryption fingerprint {}, token signing {}{cert}{etcd}",
            inv.side,
            inv.global_objects.len(),
            inv.agent_roles.len(),
            read(inv.encryption_fingerprint.is_some()),
            read(inv.token_signing.is_some())
        ));
    }
    match sides {
        [a, b] => match (&a.encryption_fingerprint, &b.encryption_fingerprint) {
            (Some(x), Some(y)) if x != y => pf.warnings.push(Finding {
                what: format!(
                    "encryption provider configurations differ (fingerprint {x} on {}, {y} on {}): the standby \
                     reads the primary's Secrets only through a sync holding both keys, and a failback or a \
                     restore needs them equal",
                    a.side, b.side
                ),
                where_: "EncryptionConfiguration".into(),
                cluster: None,
            }),
            (Some(_), Some(_)) => {}
            _ => pf.not_checked.push("encryption configurations: a side's fingerprint is unknown".into()),
        },
        _ => pf.not_checked.push("encryption configurations: only one side could be read".into()),
    }
    match sides {
        [a, b] => match (&a.token_signing, &b.token_signing) {
            (Some(x), Some(y)) => pf.blocking.extend(token_signing(x, y, &a.side, &b.side)),
            _ => pf
                .not_checked
                .push("ServiceAccount token signing: a side's key, issuer or audiences are unknown".into()),
        },
        _ => pf.not_checked.push("ServiceAccount token signing: only one side could be read".into()),
    }
    pf
}

/// Seed 000's shared token requirements: existing hosts keep the agent token the primary
/// signed, so the standby must verify it (same key), accept its issuer and one of its audiences.
fn token_signing(a: &TokenSigning, b: &TokenSigning, a_side: &str, b_side: &str) -> Vec<Finding> {
    let mut out = Vec::new();
    let at = |what: &str| format!("{what} ({a_side} / {b_side})");
    let after = "existing hosts' agent tokens get 401 after a failover";
    if a.key_fingerprint != b.key_fingerprint {
        out.push(Finding {
            what: format!(
                "ServiceAccount signing keys differ (fingerprint {} on {a_side}, {} on {b_side}): {after}; copy \
                 sa.key and sa.pub from the primary",
                a.key_fingerprint, b.key_fingerprint
            ),
            where_: at("/etc/kubernetes/pki/sa.key, sa.pub"),
            cluster: None,
        });
    }
    if a.issuer != b.issuer {
        out.push(Finding {
            what: format!(
                "service-account-issuer differs ({} on {a_side}, {} on {b_side}): {after}",
                a.issuer, b.issuer
            ),
            where_: at("kube-apiserver --service-account-issuer"),
            cluster: None,
        });
    }
    if !a.audiences.iter().any(|x| b.audiences.contains(x)) {
        out.push(Finding {
            what: format!(
                "api-audiences share nothing ({:?} on {a_side}, {:?} on {b_side}): {after}",
                a.audiences, b.audiences
            ),
            where_: at("kube-apiserver --api-audiences"),
            cluster: None,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(kind: &str, name: &str, cluster_level: bool, refs: &[(&str, &str)]) -> GlobalObject {
        let refs = refs.iter().map(|(f, n)| (f.to_string(), n.to_string())).collect();
        GlobalObject { kind: kind.into(), name: name.into(), cluster_level, refs }
    }

    fn side(name: &str, objects: Vec<GlobalObject>, fingerprint: &str) -> Inventory {
        Inventory {
            side: name.into(),
            global_objects: objects,
            encryption_fingerprint: Some(fingerprint.into()),
            ..Inventory::default()
        }
    }

    fn well_named() -> Vec<GlobalObject> {
        vec![
            obj("Cluster", "global", true, &[]),
            obj("DCSCluster", "global", true, &[("ownerReferences", "global")]),
            obj("KubeadmControlPlane", "global-kcp", false, &[("ownerReferences", "global")]),
        ]
    }

    #[test]
    fn each_etcd_server_certificate_must_cover_the_domain_and_both_vips_where_it_was_read() {
        let names = ["platform.example.com", "primary", "standby"].map(String::from);
        let with = |side_name: &str, cert: Option<Result<Vec<String>, String>>| Inventory {
            etcd_certificate: cert.map(|names| PlatformCertificate { source: "etcd at https://e".into(), names }),
            platform_certificate: Some(PlatformCertificate {
                source: "Secret ns/tls".into(),
                names: Ok(names.to_vec()),
            }),
            ..side(side_name, well_named(), "ab")
        };
        let all = Some(Ok(names.to_vec()));
        let narrow = Some(Ok(vec!["127.0.0.1".to_string()]));
        let pf = decide_covering(&[with("primary", all.clone()), with("standby", None)], &names);
        assert!(!pf.lines().join("\n").contains("etcd server certificate"), "{:?}", pf.lines());
        let pf = decide_covering(&[with("primary", all), with("standby", narrow)], &names);
        let text = pf.lines().join("\n");
        assert_eq!(pf.blocking.len(), 3, "{text}");
        assert!(
            text.contains("BLOCKING standby etcd at https://e: the etcd server certificate does not cover `primary`")
        );
        let pf = decide_covering(&[with("primary", Some(Err("handshake".into())))], &names);
        assert!(pf.lines().join("\n").contains("the etcd server certificate cannot be read: handshake"));
    }

    #[test]
    fn a_wildcard_covers_one_label_and_names_compare_without_case() {
        let names = vec!["*.Example.com".to_string(), "primary".to_string()];
        assert!(covers(&names, "platform.example.com"));
        assert!(covers(&names, "PRIMARY"));
        assert!(!covers(&names, "a.platform.example.com"), "one label only");
        assert!(!covers(&names, "example.com"));
        assert!(!covers(&names, "standby"));
    }

    #[test]
    fn the_platform_certificate_must_cover_the_domain_and_both_vips() {
        let names = ["platform.example.com", "primary", "standby"].map(String::from);
        let with = |side_name: &str, cert: Option<Result<Vec<String>, String>>| Inventory {
            platform_certificate: cert.map(|names| PlatformCertificate { source: "Secret ns/tls".into(), names }),
            ..side(side_name, well_named(), "ab")
        };
        let all = Some(Ok(names.to_vec()));
        let pf = decide_covering(&[with("primary", all.clone()), with("standby", all.clone())], &names);
        assert!(pf.blocking.is_empty(), "{:?}", pf.lines());
        let lacking = Some(Ok(vec!["*.example.com".to_string(), "primary".to_string()]));
        let pf = decide_covering(&[with("primary", all.clone()), with("standby", lacking)], &names);
        let text = pf.lines().join("\n");
        assert_eq!(pf.blocking.len(), 1, "{text}");
        assert!(text.contains("BLOCKING standby Secret ns/tls: the platform certificate does not cover `standby`"));
        let pf = decide_covering(&[with("primary", None), with("standby", Some(Err("not PEM".into())))], &names);
        let text = pf.lines().join("\n");
        assert!(text.contains("BLOCKING primary platform certificate: no platform certificate"), "{text}");
        assert!(text.contains("BLOCKING standby Secret ns/tls: the platform certificate cannot be read: not PEM"));
        // Without the names to cover, it is said not to be checked, never passed.
        let pf = decide(&[with("primary", all.clone()), with("standby", all)]);
        assert!(pf.not_checked.iter().any(|n| n.starts_with("platform certificate")), "{:?}", pf.lines());
    }

    #[test]
    fn well_named_sides_with_one_key_pass() {
        let pf = decide(&[side("primary", well_named(), "ab"), side("standby", well_named(), "ab")]);
        assert_eq!(pf.blocking, vec![], "{:?}", pf.lines());
    }

    #[test]
    fn seed_002_naming_rules_are_enforced_with_where() {
        let mut objects = well_named();
        objects.push(obj("MachineDeployment", "workers", false, &[("ownerReferences", "global")]));
        objects.push(obj("DCSCluster", "global-infra", true, &[]));
        objects.push(obj("Cluster", "global", true, &[("spec.controlPlaneRef", "global-cp")]));
        let pf = decide(&[side("primary", objects, "ab"), side("standby", well_named(), "ab")]);
        let text = pf.lines().join("\n");
        assert!(text.contains("primary MachineDeployment workers: lacks the `global-` prefix"), "{text}");
        assert!(text.contains("primary DCSCluster global-infra: must be named exactly `global`"), "{text}");
        assert!(text.contains("spec.controlPlaneRef names `global-cp`, which is not"), "{text}");
        assert_eq!(pf.blocking.len(), 3, "{text}");
    }

    #[test]
    fn different_encryption_keys_warn_by_fingerprint_only() {
        let pf = decide(&[side("primary", well_named(), "1111"), side("standby", well_named(), "2222")]);
        assert!(pf.blocking.is_empty() && pf.warnings.len() == 1, "{:?}", pf.lines());
        assert!(pf.warnings[0].what.contains("fingerprint 1111 on primary, 2222 on standby"), "{:?}", pf.warnings);
        let pf = decide(&[side("standby", well_named(), "2222")]);
        assert!(pf.blocking.is_empty() && pf.not_checked.iter().any(|n| n.contains("only one side")));
    }

    #[test]
    fn seed_000_shared_token_requirements_block() {
        let signing = |key: &str, issuer: &str, aud: &[&str]| TokenSigning {
            key_fingerprint: key.into(),
            issuer: issuer.into(),
            audiences: aud.iter().map(|a| a.to_string()).collect(),
        };
        let with = |name: &str, t: TokenSigning| Inventory { token_signing: Some(t), ..side(name, well_named(), "ab") };
        let same = signing("k1", "https://kubernetes.default.svc", &["a", "b"]);
        let pf = decide(&[with("primary", same.clone()), with("standby", signing("k1", &same.issuer, &["b"]))]);
        assert!(pf.blocking.is_empty(), "one shared audience is enough: {:?}", pf.lines());
        let pf = decide(&[with("primary", same.clone()), with("standby", signing("k2", "https://other", &["c"]))]);
        let text = pf.lines().join("\n");
        assert_eq!(pf.blocking.len(), 3, "{text}");
        assert!(text.contains("signing keys differ (fingerprint k1 on primary, k2 on standby)"), "{text}");
        assert!(text.contains("service-account-issuer differs") && text.contains("api-audiences share nothing"));
        let pf = decide(&[with("primary", same), side("standby", well_named(), "ab")]);
        assert!(pf.blocking.is_empty() && pf.not_checked.iter().any(|n| n.contains("token signing")), "{pf:?}");
    }

    #[test]
    fn the_agent_role_may_name_plan_secrets_only() {
        let rule = |verbs: &[&str], names: &[&str]| RoleRule {
            verbs: verbs.iter().map(|v| v.to_string()).collect(),
            resources: vec!["secrets".into()],
            resource_names: names.iter().map(|v| v.to_string()).collect(),
        };
        let mut s = side("primary", well_named(), "ab");
        s.agent_roles = vec![AgentRole {
            namespace: "cpaas-system".into(),
            name: "agent".into(),
            rules: vec![rule(&["get", "patch"], &["m-0-plan"]), rule(&["list"], &[]), rule(&["get"], &["registry"])],
        }];
        let pf = decide(&[s, side("standby", well_named(), "ab")]);
        let text = pf.lines().join("\n");
        assert_eq!(pf.blocking.len(), 3, "{text}");
        assert!(text.contains("grants `list` on Secrets") && text.contains("without resourceNames"), "{text}");
        assert!(text.contains("grants Secret `registry`, not a plan Secret"), "{text}");
    }

    #[test]
    fn excluded_namespaces_are_advice_and_findings_are_bounded() {
        let mut s = side("primary", Vec::new(), "ab");
        s.excluded.insert("kube-system".into(), 12);
        s.global_objects = (0..200).map(|i| obj("MachineSet", &format!("w-{i}"), false, &[])).collect();
        let pf = decide(&[s]);
        assert_eq!(pf.advice.len(), 1);
        assert!(pf.advice[0].what.starts_with("12 objects") && pf.advice[0].where_.ends_with("kube-system"));
        assert_eq!(pf.blocking.len(), FINDINGS_MAX + 1, "bounded, with a count of the rest");
        assert!(pf.blocking.last().unwrap().what.contains("150 more"));
    }
}
