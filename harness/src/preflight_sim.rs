//! What preflight reads from one side of the simulated world: the global cluster's own CAPI and
//! provider resources (labelled `cluster.x-k8s.io/cluster-name: global`) with their references,
//! the API server's EncryptionConfiguration as a fingerprint, the workload agents' Roles, and the
//! keys the sync's rules leave out, per namespace, and the API server's ServiceAccount token
//! signing (key fingerprint, issuer, audiences), and the platform certificate's names (the
//! `kubernetes.io/tls` Secret `cpaas-system/dex.tls`). The world's etcd serves plain TCP: its
//! server certificate check is listed as not done.

use std::collections::BTreeMap;

use failover::ports::PortError;
use failover::preflight::{AgentRole, GLOBAL, GlobalObject, Inventory, PlatformCertificate, RoleRule, TokenSigning};
use sim::k8s::api::Api;
use sim::k8s::capi::CLUSTER_NAME_LABEL;
use sim::k8s::kind;
use sim::k8s::object::Body;
use sync::rules::{Decision, Rules};

/// Keys preflight lists per side (a keys-only read; the rest is reported as unread).
const KEYS_MAX: i64 = 200_000;

fn port(side: &str, e: impl std::fmt::Display) -> PortError {
    PortError::new("preflight", format!("{side}: {e}"))
}

pub async fn inventory(api: &Api, etcd: &etcd_client::Client, rules: &Rules) -> Result<Inventory, PortError> {
    let side = api.cluster().to_string();
    let mut inv = Inventory { side: side.clone(), ..Inventory::default() };
    for k in kind::ALL.iter().filter(|k| !k.builtin) {
        let (objects, _) = api.list(k).await.map_err(|e| port(&side, e))?;
        for o in objects.iter().filter(|o| o.obj.label(CLUSTER_NAME_LABEL) == Some(GLOBAL)) {
            let mut refs: Vec<(String, String)> =
                o.obj.owners().iter().map(|r| ("ownerReferences".to_string(), r.name.clone())).collect();
            for field in ["controlPlaneRef", "infrastructureRef"] {
                if let Some(name) = o.obj.field(&["spec", field, "name"]).and_then(|v| v.as_str()) {
                    refs.push((format!("spec.{field}"), name.to_string()));
                }
            }
            inv.global_objects.push(GlobalObject {
                kind: k.kind.to_string(),
                name: o.obj.name().to_string(),
                // The CAPI Cluster and the provider's infrastructure cluster (`DCSCluster`, …).
                cluster_level: k.kind.ends_with("Cluster"),
                refs,
            });
        }
    }
    // The configuration holds the keys: only its fingerprint leaves this function.
    let config = api.server.at_rest().encryption_configuration();
    inv.encryption_fingerprint = sync::crypto::Keyring::parse("encryption configuration", &config)
        .map(|k| k.fingerprint())
        .map_err(|e| port(&side, e))
        .ok();
    let signing = api.server.signing();
    inv.token_signing = Some(TokenSigning {
        key_fingerprint: signing.fingerprint(),
        issuer: signing.issuer.clone(),
        audiences: signing.audiences.clone(),
    });
    let (roles, _) = api.list(&kind::ROLE).await.map_err(|e| port(&side, e))?;
    for r in roles.iter().filter(|r| r.obj.name().contains("agent")) {
        if let Body::Role { rules } = &r.obj.body {
            let rules = rules
                .iter()
                .map(|x| RoleRule {
                    verbs: x.verbs.clone(),
                    resources: x.resources.clone(),
                    resource_names: x.resource_names.clone(),
                })
                .collect();
            inv.agent_roles.push(AgentRole {
                namespace: r.obj.namespace().to_string(),
                name: r.obj.name().to_string(),
                rules,
            });
        }
    }
    let mut kv = etcd.kv_client();
    let opts = etcd_client::GetOptions::new().with_prefix().with_keys_only().with_limit(KEYS_MAX);
    let listed = kv.get("/registry/", Some(opts)).await.map_err(|e| port(&side, e))?;
    let mut excluded: BTreeMap<String, u64> = BTreeMap::new();
    for kv in listed.kvs() {
        let Some(info) = sync::keys::parse(kv.key()) else { continue };
        let own_global = sim::topology::is_global_name(info.name);
        if let Some(ns) = info.namespace.filter(|_| !own_global && rules.decide(kv.key()) == Decision::Exclude) {
            *excluded.entry(ns.to_string()).or_default() += 1;
        }
    }
    inv.excluded = excluded;
    if listed.more() {
        inv.not_checked.push(format!("excluded namespaces: only the first {KEYS_MAX} keys were read"));
    }
    inv.platform_certificate = platform_certificate(api).await.map_err(|e| port(&side, e))?;
    inv.not_checked.push("etcd server certificate SANs: the world's etcd serves plain TCP".into());
    Ok(inv)
}

/// The platform certificate's names, read (and decrypted) through the side's API: None when the
/// Secret is missing; the names, or why they cannot be read (no `tls.crt`, not a certificate, a
/// Secret sealed with a key this side lacks). Only names leave this function, never key bytes.
async fn platform_certificate(api: &Api) -> Result<Option<PlatformCertificate>, sim::k8s::ApiError> {
    let name = sim::topology::PLATFORM_CERT_SECRET;
    let source = format!("Secret {}/{name}", sim::topology::NS);
    let names = match api.get(&kind::SECRET, sim::topology::NS, name).await {
        Ok(None) => return Ok(None),
        Ok(Some(s)) => match &s.obj.body {
            Body::Secret { data, .. } => match data.get("tls.crt") {
                Some(pem) => failover::preflight::certificate_names(pem),
                None => Err("it has no tls.crt".to_string()),
            },
            _ => Err("not a Secret".to_string()),
        },
        Err(sim::k8s::ApiError::Undecryptable(_)) => Err("sealed with a key this side lacks".to_string()),
        Err(e) => return Err(e),
    };
    Ok(Some(PlatformCertificate { source, names }))
}
