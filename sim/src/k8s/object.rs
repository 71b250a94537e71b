//! Objects of the simulated control plane: Kubernetes `ObjectMeta` (k8s-openapi) and a body,
//! encoded as kube-apiserver stores them — JSON for custom resources, `k8s\0` + protobuf
//! `runtime.Unknown` (k8s-pb) for built-ins.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference, Time};
use k8s_pb::api::core::v1 as pbcore;
use k8s_pb::api::rbac::v1 as pbrbac;
use k8s_pb::apimachinery::pkg::apis::meta::v1 as pbmeta;
use k8s_pb::apimachinery::pkg::runtime::{TypeMeta, Unknown};
use prost::Message;
use serde_json::{Map, Value};

use super::kind::{self, Kind};

pub const PROTOBUF_MAGIC: &[u8] = b"k8s\0";

/// What an object carries besides its metadata.
#[derive(Debug, Clone, PartialEq)]
pub enum Body {
    /// A custom resource: every top-level field but `apiVersion`, `kind` and `metadata`.
    Json(Map<String, Value>),
    Secret {
        type_: Option<String>,
        data: BTreeMap<String, Vec<u8>>,
    },
    ServiceAccount,
    ConfigMap {
        data: BTreeMap<String, String>,
    },
    Role {
        rules: Vec<Rule>,
    },
    RoleBinding {
        role: String,
        subjects: Vec<String>,
    },
    Lease {
        holder: Option<String>,
        /// spec.renewTime in milliseconds of the world's clock (changes on every renewal).
        renew_ms: u64,
    },
    /// A platform component (the failover's validation requires a ready replica).
    Deployment {
        replicas: i32,
        ready: i32,
    },
}

/// One RBAC rule (the parts the model's authorizer reads).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub verbs: Vec<String>,
    pub resources: Vec<String>,
    pub resource_names: Vec<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Object {
    pub kind: &'static Kind,
    pub meta: ObjectMeta,
    pub body: Body,
}

#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("{key}: not an object the model knows ({why})")]
    Unknown { key: String, why: String },
}

impl Object {
    pub fn new(kind: &'static Kind, namespace: &str, name: &str, body: Body) -> Self {
        let meta = ObjectMeta { name: Some(name.into()), namespace: Some(namespace.into()), ..Default::default() };
        Object { kind, meta, body }
    }

    /// A custom resource with the given `spec`.
    pub fn custom(kind: &'static Kind, namespace: &str, name: &str, spec: Value) -> Self {
        let mut body = Map::new();
        body.insert("spec".into(), spec);
        Object::new(kind, namespace, name, Body::Json(body))
    }

    pub fn name(&self) -> &str {
        self.meta.name.as_deref().unwrap_or_default()
    }

    pub fn namespace(&self) -> &str {
        self.meta.namespace.as_deref().unwrap_or_default()
    }

    pub fn uid(&self) -> &str {
        self.meta.uid.as_deref().unwrap_or_default()
    }

    pub fn key(&self) -> String {
        self.kind.key(self.namespace(), self.name())
    }

    pub fn owners(&self) -> &[OwnerReference] {
        self.meta.owner_references.as_deref().unwrap_or_default()
    }

    pub fn finalizers(&self) -> &[String] {
        self.meta.finalizers.as_deref().unwrap_or_default()
    }

    pub fn deleting(&self) -> bool {
        self.meta.deletion_timestamp.is_some()
    }

    pub fn label(&self, k: &str) -> Option<&str> {
        self.meta.labels.as_ref()?.get(k).map(String::as_str)
    }

    pub fn set_label(&mut self, k: &str, v: &str) {
        self.meta.labels.get_or_insert_with(Default::default).insert(k.into(), v.into());
    }

    pub fn annotation(&self, k: &str) -> Option<&str> {
        self.meta.annotations.as_ref()?.get(k).map(String::as_str)
    }

    pub fn add_finalizer(&mut self, f: &str) {
        let fs = self.meta.finalizers.get_or_insert_with(Vec::new);
        if !fs.iter().any(|x| x == f) {
            fs.push(f.into());
        }
    }

    pub fn remove_finalizer(&mut self, f: &str) {
        if let Some(fs) = self.meta.finalizers.as_mut() {
            fs.retain(|x| x != f);
        }
    }

    /// A controller owner reference to `owner` (blockOwnerDeletion set, as controllers do).
    pub fn owned_by(&mut self, owner: &Object) {
        let r = OwnerReference {
            api_version: owner.kind.api_version(),
            kind: owner.kind.kind.into(),
            name: owner.name().into(),
            uid: owner.uid().into(),
            controller: Some(true),
            block_owner_deletion: Some(true),
        };
        self.meta.owner_references.get_or_insert_with(Vec::new).push(r);
    }

    /// A JSON body field (custom resources), e.g. `field(&["spec", "replicas"])`.
    pub fn field(&self, path: &[&str]) -> Option<&Value> {
        let Body::Json(m) = &self.body else { return None };
        let (first, rest) = path.split_first()?;
        rest.iter().try_fold(m.get(*first)?, |v, p| v.get(p))
    }

    /// Sets a JSON body field, creating objects on the way.
    pub fn set_field(&mut self, path: &[&str], value: Value) {
        let Body::Json(m) = &mut self.body else { panic!("set_field on a built-in {}", self.kind.kind) };
        let (last, init) = path.split_last().expect("a non-empty field path");
        let mut cur = m;
        for p in init {
            let next = cur.entry(p.to_string()).or_insert_with(|| Value::Object(Map::new()));
            if !next.is_object() {
                *next = Value::Object(Map::new());
            }
            cur = next.as_object_mut().expect("just made an object");
        }
        cur.insert(last.to_string(), value);
    }

    pub fn secret_data(&self, k: &str) -> Option<&[u8]> {
        match &self.body {
            Body::Secret { data, .. } => data.get(k).map(Vec::as_slice),
            _ => None,
        }
    }

    /// The stored bytes (unencrypted).
    pub fn encode(&self) -> Vec<u8> {
        let mut meta = self.meta.clone();
        meta.resource_version = None;
        if let Body::Json(body) = &self.body {
            let mut m = Map::new();
            m.insert("apiVersion".into(), self.kind.api_version().into());
            m.insert("kind".into(), self.kind.kind.into());
            m.insert("metadata".into(), serde_json::to_value(&meta).expect("ObjectMeta serialises"));
            m.extend(body.clone());
            return serde_json::to_vec(&Value::Object(m)).expect("JSON serialises");
        }
        let pm = Some(meta_to_pb(&meta));
        let raw = match &self.body {
            Body::Json(_) => unreachable!("handled above"),
            Body::Secret { type_, data } => {
                pbcore::Secret { metadata: pm, r#type: type_.clone(), data: data.clone(), ..Default::default() }
                    .encode_to_vec()
            }
            Body::ServiceAccount => pbcore::ServiceAccount { metadata: pm, ..Default::default() }.encode_to_vec(),
            Body::ConfigMap { data } => {
                pbcore::ConfigMap { metadata: pm, data: data.clone(), ..Default::default() }.encode_to_vec()
            }
            Body::Role { rules } => pbrbac::Role {
                metadata: pm,
                rules: rules
                    .iter()
                    .map(|r| pbrbac::PolicyRule {
                        verbs: r.verbs.clone(),
                        api_groups: vec![String::new()],
                        resources: r.resources.clone(),
                        resource_names: r.resource_names.clone(),
                        non_resource_ur_ls: vec![],
                    })
                    .collect(),
            }
            .encode_to_vec(),
            Body::RoleBinding { role, subjects } => pbrbac::RoleBinding {
                metadata: pm,
                role_ref: Some(pbrbac::RoleRef {
                    api_group: Some("rbac.authorization.k8s.io".into()),
                    kind: Some("Role".into()),
                    name: Some(role.clone()),
                }),
                subjects: subjects
                    .iter()
                    .map(|s| pbrbac::Subject {
                        kind: Some("ServiceAccount".into()),
                        name: Some(s.clone()),
                        namespace: meta.namespace.clone(),
                        ..Default::default()
                    })
                    .collect(),
            }
            .encode_to_vec(),
            Body::Deployment { replicas, ready } => {
                use k8s_pb::api::apps::v1::{Deployment, DeploymentSpec, DeploymentStatus};
                Deployment {
                    metadata: pm,
                    spec: Some(DeploymentSpec { replicas: Some(*replicas), ..Default::default() }),
                    status: Some(DeploymentStatus {
                        replicas: Some(*replicas),
                        ready_replicas: Some(*ready),
                        ..Default::default()
                    }),
                }
                .encode_to_vec()
            }
            Body::Lease { holder, renew_ms } => k8s_pb::api::coordination::v1::Lease {
                metadata: pm,
                spec: Some(k8s_pb::api::coordination::v1::LeaseSpec {
                    holder_identity: holder.clone(),
                    renew_time: Some(k8s_pb::apimachinery::pkg::apis::meta::v1::MicroTime {
                        seconds: Some((renew_ms / 1000) as i64),
                        nanos: Some(((renew_ms % 1000) * 1_000_000) as i32),
                    }),
                    ..Default::default()
                }),
            }
            .encode_to_vec(),
        };
        let unknown = Unknown {
            type_meta: Some(TypeMeta { api_version: Some(self.kind.api_version()), kind: Some(self.kind.kind.into()) }),
            raw: Some(raw),
            content_encoding: Some(String::new()),
            content_type: Some(String::new()),
        };
        let mut out = PROTOBUF_MAGIC.to_vec();
        out.extend(unknown.encode_to_vec());
        out
    }

    /// Decodes stored (unencrypted) bytes of the object at `key`.
    pub fn decode(key: &str, value: &[u8]) -> Result<Object, DecodeError> {
        let bad = |why: &str| DecodeError::Unknown { key: key.into(), why: why.into() };
        let kind = Kind::of_key(key).ok_or_else(|| bad("no known kind stores here"))?;
        if !kind.builtin {
            let Value::Object(mut m) = serde_json::from_slice(value).map_err(|e| bad(&e.to_string()))? else {
                return Err(bad("JSON that is not an object"));
            };
            m.remove("apiVersion");
            m.remove("kind");
            let meta =
                serde_json::from_value(m.remove("metadata").unwrap_or_default()).map_err(|e| bad(&e.to_string()))?;
            return Ok(Object { kind, meta, body: Body::Json(m) });
        }
        let pb = value.strip_prefix(PROTOBUF_MAGIC).ok_or_else(|| bad("no k8s protobuf magic"))?;
        let raw = Unknown::decode(pb).map_err(|e| bad(&e.to_string()))?.raw.unwrap_or_default();
        let raw = raw.as_slice();
        let perr = |e: prost::DecodeError| bad(&e.to_string());
        let (pm, body) = if kind == &kind::SECRET {
            let s = pbcore::Secret::decode(raw).map_err(perr)?;
            (s.metadata, Body::Secret { type_: s.r#type, data: s.data })
        } else if kind == &kind::SERVICE_ACCOUNT {
            (pbcore::ServiceAccount::decode(raw).map_err(perr)?.metadata, Body::ServiceAccount)
        } else if kind == &kind::CONFIG_MAP {
            let c = pbcore::ConfigMap::decode(raw).map_err(perr)?;
            (c.metadata, Body::ConfigMap { data: c.data })
        } else if kind == &kind::ROLE {
            let r = pbrbac::Role::decode(raw).map_err(perr)?;
            let rules = r
                .rules
                .into_iter()
                .map(|p| Rule { verbs: p.verbs, resources: p.resources, resource_names: p.resource_names })
                .collect();
            (r.metadata, Body::Role { rules })
        } else if kind == &kind::ROLE_BINDING {
            let b = pbrbac::RoleBinding::decode(raw).map_err(perr)?;
            let role = b.role_ref.and_then(|r| r.name).unwrap_or_default();
            let subjects = b.subjects.into_iter().filter_map(|s| s.name).collect();
            (b.metadata, Body::RoleBinding { role, subjects })
        } else if kind == &kind::DEPLOYMENT {
            let d = k8s_pb::api::apps::v1::Deployment::decode(raw).map_err(perr)?;
            let replicas = d.spec.and_then(|s| s.replicas).unwrap_or(1);
            let ready = d.status.and_then(|s| s.ready_replicas).unwrap_or(0);
            (d.metadata, Body::Deployment { replicas, ready })
        } else {
            let l = k8s_pb::api::coordination::v1::Lease::decode(raw).map_err(perr)?;
            let spec = l.spec.unwrap_or_default();
            let renew_ms = spec
                .renew_time
                .map(|t| t.seconds.unwrap_or(0).max(0) as u64 * 1000 + t.nanos.unwrap_or(0).max(0) as u64 / 1_000_000)
                .unwrap_or(0);
            (l.metadata, Body::Lease { holder: spec.holder_identity, renew_ms })
        };
        Ok(Object { kind, meta: meta_from_pb(pm.unwrap_or_default()), body })
    }
}

/// A UUID-shaped string from 16 random bytes (UIDs come from seeded RNGs in the world).
pub fn uuid(b: [u8; 16]) -> String {
    let h = hex::encode(b);
    format!("{}-{}-{}-{}-{}", &h[..8], &h[8..12], &h[12..16], &h[16..20], &h[20..])
}

fn time_to_pb(t: &Time) -> pbmeta::Time {
    pbmeta::Time { seconds: Some(t.0.as_second()), nanos: Some(0) }
}

fn time_from_pb(t: pbmeta::Time) -> Time {
    Time(k8s_openapi::jiff::Timestamp::from_second(t.seconds.unwrap_or(0)).expect("a stored time is in range"))
}

fn meta_to_pb(m: &ObjectMeta) -> pbmeta::ObjectMeta {
    pbmeta::ObjectMeta {
        name: m.name.clone(),
        namespace: m.namespace.clone(),
        uid: m.uid.clone(),
        generation: m.generation,
        creation_timestamp: m.creation_timestamp.as_ref().map(time_to_pb),
        deletion_timestamp: m.deletion_timestamp.as_ref().map(time_to_pb),
        deletion_grace_period_seconds: m.deletion_grace_period_seconds,
        labels: m.labels.clone().unwrap_or_default(),
        annotations: m.annotations.clone().unwrap_or_default(),
        owner_references: m
            .owner_references
            .iter()
            .flatten()
            .map(|r| pbmeta::OwnerReference {
                api_version: Some(r.api_version.clone()),
                kind: Some(r.kind.clone()),
                name: Some(r.name.clone()),
                uid: Some(r.uid.clone()),
                controller: r.controller,
                block_owner_deletion: r.block_owner_deletion,
            })
            .collect(),
        finalizers: m.finalizers.clone().unwrap_or_default(),
        ..Default::default()
    }
}

fn meta_from_pb(m: pbmeta::ObjectMeta) -> ObjectMeta {
    let non_empty_map = |x: BTreeMap<String, String>| (!x.is_empty()).then_some(x);
    let owners: Vec<OwnerReference> = m
        .owner_references
        .into_iter()
        .map(|r| OwnerReference {
            api_version: r.api_version.unwrap_or_default(),
            kind: r.kind.unwrap_or_default(),
            name: r.name.unwrap_or_default(),
            uid: r.uid.unwrap_or_default(),
            controller: r.controller,
            block_owner_deletion: r.block_owner_deletion,
        })
        .collect();
    ObjectMeta {
        name: m.name,
        namespace: m.namespace,
        uid: m.uid,
        generation: m.generation,
        creation_timestamp: m.creation_timestamp.map(time_from_pb),
        deletion_timestamp: m.deletion_timestamp.map(time_from_pb),
        deletion_grace_period_seconds: m.deletion_grace_period_seconds,
        labels: non_empty_map(m.labels),
        annotations: non_empty_map(m.annotations),
        owner_references: (!owners.is_empty()).then_some(owners),
        finalizers: (!m.finalizers.is_empty()).then_some(m.finalizers),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn roundtrip(o: &Object) -> Object {
        Object::decode(&o.key(), &o.encode()).expect("decodes")
    }

    #[test]
    fn custom_resources_roundtrip_as_json() {
        let mut owner = Object::custom(&kind::MACHINE_SET, "ns", "ms", json!({"replicas": 2}));
        owner.meta.uid = Some("u-ms".into());
        let mut m = Object::custom(&kind::MACHINE, "ns", "m", json!({"clusterName": "c"}));
        m.meta.uid = Some("u-m".into());
        m.owned_by(&owner);
        m.add_finalizer("machine.cluster.x-k8s.io");
        m.set_field(&["spec", "providerID"], json!("vm-1"));
        let bytes = m.encode();
        assert_eq!(bytes[0], b'{');
        let back = roundtrip(&m);
        assert_eq!(back, m);
        assert_eq!(back.owners()[0].uid, "u-ms");
        assert_eq!(back.field(&["spec", "providerID"]), Some(&json!("vm-1")));
    }

    #[test]
    fn builtins_roundtrip_as_protobuf() {
        let mut s = Object::new(
            &kind::SECRET,
            "ns",
            "plan-1",
            Body::Secret {
                type_: Some("elemental.cattle.io/plan".into()),
                data: [("plan".into(), b"x".to_vec())].into(),
            },
        );
        s.meta.uid = Some("u-s".into());
        s.meta.deletion_timestamp = Some(Time(k8s_openapi::jiff::Timestamp::from_second(1_767_225_600).unwrap()));
        s.add_finalizer("f");
        assert!(s.encode().starts_with(PROTOBUF_MAGIC));
        assert_eq!(roundtrip(&s), s);
        let r = Object::new(
            &kind::ROLE,
            "ns",
            "agent",
            Body::Role {
                rules: vec![Rule {
                    verbs: vec!["get".into(), "patch".into()],
                    resources: vec!["secrets".into()],
                    resource_names: vec!["plan-1".into()],
                }],
            },
        );
        assert_eq!(roundtrip(&r), r);
        let b = Object::new(
            &kind::ROLE_BINDING,
            "ns",
            "agent",
            Body::RoleBinding { role: "agent".into(), subjects: vec!["sa".into()] },
        );
        assert_eq!(roundtrip(&b), b);
        let d = Object::new(&kind::DEPLOYMENT, "ns", "capi", Body::Deployment { replicas: 2, ready: 1 });
        assert_eq!(d.key(), "/registry/deployments/ns/capi");
        assert_eq!(roundtrip(&d), d);
    }

    #[test]
    fn unknown_keys_are_errors() {
        assert!(Object::decode("/registry/widgets/ns/x", b"{}").is_err());
        assert!(Object::decode("/registry/secrets/ns/x", b"{}").is_err());
    }
}
