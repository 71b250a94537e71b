//! What preflight reads of one side of a real platform, straight from its etcd (the keys
//! kube-apiserver stores): the global cluster's own CAPI and provider resources (JSON, labelled
//! `cluster.x-k8s.io/cluster-name: global`) with their references, the workload agents' Roles
//! (protobuf), the keys the sync's rules leave out per namespace, and the platform certificate
//! (a `kubernetes.io/tls` Secret, decrypted with the side's EncryptionConfiguration from the
//! sync's config), and the certificate the side's etcd serves (its names, from a TLS handshake
//! as the sync makes it). What etcd does not hold — the API server's ServiceAccount signing flags
//! — comes from the orchestrator's config or is listed as not checked.

use std::collections::BTreeMap;

use etcd_client::GetOptions;
use k8s_pb::api::core::v1::Secret;
use k8s_pb::api::rbac::v1::Role;
use sync::conn::Etcd;
use sync::crypto::Keyring;
use sync::rules::{Decision, Rules};

use crate::ports::PortError;
use crate::preflight::{
    AgentRole, GLOBAL, GlobalObject, Inventory, PlatformCertificate, RoleRule, TokenSigning, is_global_name,
};
use crate::validation::decode_builtin;

/// Keys read per listing (a keys-only read for the excluded namespaces; values for the CAPI
/// groups and Roles): what lies past it is reported as unread.
const KEYS_MAX: i64 = 200_000;
/// The API groups whose objects may be the global cluster's own CAPI / provider resources.
const CAPI_GROUPS: [&str; 4] = [
    "cluster.x-k8s.io",
    "infrastructure.cluster.x-k8s.io",
    "controlplane.cluster.x-k8s.io",
    "bootstrap.cluster.x-k8s.io",
];
const CLUSTER_NAME_LABEL: &str = "cluster.x-k8s.io/cluster-name";

/// What the side's inventory is read with.
pub struct Side<'a> {
    pub name: &'a str,
    pub etcd: &'a Etcd,
    /// The side's EncryptionConfiguration, when the sync's config names it.
    pub keyring: Option<&'a Keyring>,
    pub rules: &'a Rules,
    /// `namespace/name` of the platform certificate's Secret.
    pub certificate: (&'a str, &'a str),
    pub token_signing: Option<TokenSigning>,
    /// The etcd endpoint the sync uses for this side, with its TLS files when it has them.
    pub endpoint: (&'a str, Option<&'a sync::conn::TlsFiles>),
    /// How long reading the etcd server certificate may take.
    pub hook_within: std::time::Duration,
}

fn port(side: &str, e: impl std::fmt::Display) -> PortError {
    PortError::new("preflight", format!("{side}: {e}"))
}

pub async fn inventory(s: &Side<'_>) -> Result<Inventory, PortError> {
    let mut inv = Inventory { side: s.name.to_string(), ..Inventory::default() };
    let get = |prefix: String, keys_only: bool| async move {
        let mut opts = GetOptions::new().with_prefix().with_limit(KEYS_MAX);
        if keys_only {
            opts = opts.with_keys_only();
        }
        let mut kv = s.etcd.kv.clone();
        s.etcd.call(kv.get(prefix, Some(opts))).await.map_err(|e| port(s.name, e))
    };
    for group in CAPI_GROUPS {
        let listed = get(format!("/registry/{group}/"), false).await?;
        if listed.more() {
            inv.not_checked.push(format!("global resources: only the first {KEYS_MAX} objects of {group} were read"));
        }
        inv.global_objects.extend(listed.kvs().iter().filter_map(|kv| global_object(kv.value())));
    }
    let roles = get("/registry/roles/".into(), false).await?;
    for kv in roles.kvs() {
        let Some(info) = sync::keys::parse(kv.key()) else { continue };
        if !info.name.contains("agent") {
            continue;
        }
        if let Some(rules) = decode_builtin::<Role>(kv.value()).map(|r| role_rules(&r)) {
            let namespace = info.namespace.unwrap_or_default().to_string();
            inv.agent_roles.push(AgentRole { namespace, name: info.name.to_string(), rules });
        }
    }
    inv.encryption_fingerprint = s.keyring.map(Keyring::fingerprint);
    if s.keyring.is_none() {
        inv.not_checked.push("encryption configuration: the sync's config names none for this side".into());
    }
    inv.token_signing = s.token_signing.clone();
    if s.token_signing.is_none() {
        inv.not_checked.push(
            "ServiceAccount token signing: the API server's flags are not in etcd (give service_accounts in the \
             orchestrator's config)"
                .into(),
        );
    }
    let listed = get("/registry/".into(), true).await?;
    let mut excluded: BTreeMap<String, u64> = BTreeMap::new();
    for kv in listed.kvs() {
        let Some(info) = sync::keys::parse(kv.key()) else { continue };
        let own = is_global_name(info.name);
        if let Some(ns) = info.namespace.filter(|_| !own && s.rules.decide(kv.key()) == Decision::Exclude) {
            *excluded.entry(ns.to_string()).or_default() += 1;
        }
    }
    inv.excluded = excluded;
    if listed.more() {
        inv.not_checked.push(format!("excluded namespaces: only the first {KEYS_MAX} keys were read"));
    }
    inv.platform_certificate = platform_certificate(s).await?;
    match s.endpoint {
        (endpoint, Some(tls)) if endpoint.starts_with("https://") => {
            inv.etcd_certificate = Some(super::peer_cert::etcd_certificate(endpoint, tls, s.hook_within).await);
        }
        (endpoint, _) => {
            inv.not_checked.push(format!("etcd server certificate SANs: {endpoint} is reached without TLS"))
        }
    }
    Ok(inv)
}

/// The workload CAPI Clusters (JSON under `cluster.x-k8s.io/clusters/`) as `namespace/name`:
/// all, or only those without `spec.paused: true`.
pub async fn workload_clusters(etcd: &Etcd, side: &'static str, unpaused_only: bool) -> Result<Vec<String>, PortError> {
    const PREFIX: &str = "/registry/cluster.x-k8s.io/clusters/";
    let mut kv = etcd.kv.clone();
    let opts = GetOptions::new().with_prefix().with_limit(KEYS_MAX);
    let r = etcd.call(kv.get(PREFIX, Some(opts))).await.map_err(|e| PortError::new(side, e))?;
    if r.more() {
        return Err(PortError::new(side, format!("more than {KEYS_MAX} Clusters: not all could be read")));
    }
    let chosen = r.kvs().iter().filter_map(|kv| {
        let o: serde_json::Value = serde_json::from_slice(kv.value()).ok()?;
        let (ns, name) = (o["metadata"]["namespace"].as_str()?, o["metadata"]["name"].as_str()?);
        // A side's own global Cluster is not a workload one; a paused one is skipped when asked.
        let skip = is_global_name(name) || (unpaused_only && o["spec"]["paused"] == serde_json::json!(true));
        (!skip).then(|| format!("{ns}/{name}"))
    });
    Ok(chosen.collect())
}

/// A CAPI / provider object labelled as the global cluster's, with the names it references.
fn global_object(value: &[u8]) -> Option<GlobalObject> {
    let o: serde_json::Value = serde_json::from_slice(value).ok()?;
    let meta = &o["metadata"];
    if meta["labels"][CLUSTER_NAME_LABEL].as_str() != Some(GLOBAL) {
        return None;
    }
    let kind = o["kind"].as_str()?.to_string();
    let mut refs: Vec<(String, String)> = meta["ownerReferences"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| r["name"].as_str().map(|n| ("ownerReferences".to_string(), n.to_string())))
        .collect();
    for field in ["controlPlaneRef", "infrastructureRef"] {
        if let Some(name) = o["spec"][field]["name"].as_str() {
            refs.push((format!("spec.{field}"), name.to_string()));
        }
    }
    Some(GlobalObject {
        // The CAPI Cluster and the provider's infrastructure cluster.
        cluster_level: kind.ends_with("Cluster"),
        kind,
        name: meta["name"].as_str()?.to_string(),
        refs,
    })
}

/// A built-in object of type `M` as kube-apiserver stores it.
fn role_rules(r: &Role) -> Vec<RoleRule> {
    r.rules
        .iter()
        .map(|p| RoleRule {
            verbs: p.verbs.clone(),
            resources: p.resources.clone(),
            resource_names: p.resource_names.clone(),
        })
        .collect()
}

/// The platform certificate's names: None when the Secret is missing; only names leave this
/// function, never key bytes.
async fn platform_certificate(s: &Side<'_>) -> Result<Option<PlatformCertificate>, PortError> {
    let (ns, name) = s.certificate;
    let source = format!("Secret {ns}/{name}");
    let mut kv = s.etcd.kv.clone();
    let got = s.etcd.call(kv.get(format!("/registry/secrets/{ns}/{name}"), None)).await.map_err(|e| port(s.name, e))?;
    let Some(stored) = got.kvs().first().map(|kv| kv.value().to_vec()) else { return Ok(None) };
    let plain = match sync::object::envelope(&stored) {
        None => Ok(stored),
        Some(_) => match s.keyring.and_then(|k| k.decrypt(&stored)) {
            Some(p) => Ok(p),
            None if s.keyring.is_none() => Err("sealed at rest, and the sync's config names no key for this side"),
            None => Err("sealed with a key this side's EncryptionConfiguration lacks"),
        },
    };
    let names = plain.map_err(str::to_string).and_then(|p| match decode_builtin::<Secret>(&p) {
        None => Err("not a stored Secret".to_string()),
        Some(secret) => match secret.data.get("tls.crt") {
            Some(pem) => crate::preflight::certificate_names(pem),
            None => Err("it has no tls.crt".to_string()),
        },
    });
    Ok(Some(PlatformCertificate { source, names }))
}
