//! What the engine needs to know of a stored Kubernetes object: its UID and owners.
//!
//! Values are JSON (CRDs, such as every Cluster API kind), Kubernetes protobuf behind the
//! `k8s\0` magic (built-in kinds: a `runtime.Unknown` whose `raw` is the typed object, field 1 of
//! which is always `ObjectMeta`), or ciphertext behind `k8s:enc:<provider>:v1:<key name>:`. Only
//! metadata is decoded.
//!
//! Ownership is not only `ownerReferences`: the ServiceAccount token controller deletes a token
//! Secret whose ServiceAccount is missing, so a readable token Secret gets its ServiceAccount (by
//! the `kubernetes.io/service-account.uid` annotation) as an implicit owner.

use k8s_pb::apimachinery::pkg::apis::meta::v1::PartialObjectMetadata;
use k8s_pb::apimachinery::pkg::runtime::Unknown;
use prost::Message;
use serde::Deserialize;

pub const PROTOBUF_MAGIC: &[u8] = b"k8s\0";
pub const ENCRYPTED_PREFIX: &[u8] = b"k8s:enc:";
const SA_TOKEN_TYPE: &str = "kubernetes.io/service-account-token";
const SA_UID_ANNOTATION: &str = "kubernetes.io/service-account.uid";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    pub uid: String,
    pub kind: String,
    pub name: String,
    /// Whether this is an implicit dependency (token Secret → ServiceAccount), not an ownerReference.
    pub implicit: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Meta {
    pub uid: String,
    pub kind: String,
    pub owners: Vec<Owner>,
    pub deleting: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decoded {
    Object(Meta),
    /// Encrypted at rest: metadata unreadable without the key.
    Encrypted {
        provider: String,
        key_name: String,
    },
    /// Not a Kubernetes object (or not one we can read): a leaf.
    Opaque,
}

/// Splits `k8s:enc:<provider>:<v1|v2>:<key name>:<ciphertext>`; None when not an envelope.
pub fn envelope(value: &[u8]) -> Option<(&str, &str, &[u8])> {
    let rest = value.strip_prefix(ENCRYPTED_PREFIX)?;
    let mut parts = rest.splitn(4, |b| *b == b':');
    let provider = std::str::from_utf8(parts.next()?).ok()?;
    let _version = parts.next()?;
    let key_name = std::str::from_utf8(parts.next()?).ok()?;
    let ciphertext = parts.next()?;
    Some((provider, key_name, ciphertext))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct JsonObject {
    #[serde(default)]
    kind: String,
    #[serde(default)]
    metadata: JsonMeta,
    #[serde(default, rename = "type")]
    secret_type: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct JsonMeta {
    #[serde(default)]
    uid: String,
    #[serde(default)]
    owner_references: Vec<JsonOwner>,
    #[serde(default)]
    deletion_timestamp: Option<String>,
    #[serde(default)]
    annotations: std::collections::BTreeMap<String, String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct JsonOwner {
    #[serde(default)]
    uid: String,
    #[serde(default)]
    kind: String,
    #[serde(default)]
    name: String,
}

/// The `type` field of a protobuf Secret (tag 3), decoded without the data.
#[derive(Clone, PartialEq, Message)]
struct SecretType {
    #[prost(string, optional, tag = "3")]
    r#type: Option<String>,
}

fn implicit_sa_owner(
    kind: &str,
    secret_type: Option<&str>,
    annotations: &std::collections::BTreeMap<String, String>,
) -> Option<Owner> {
    if kind != "Secret" || secret_type != Some(SA_TOKEN_TYPE) {
        return None;
    }
    let uid = annotations.get(SA_UID_ANNOTATION)?;
    let name = annotations.get("kubernetes.io/service-account.name").cloned().unwrap_or_default();
    Some(Owner { uid: uid.clone(), kind: "ServiceAccount".into(), name, implicit: true })
}

pub fn decode(value: &[u8]) -> Decoded {
    if let Some((provider, key_name, _)) = envelope(value) {
        return Decoded::Encrypted { provider: provider.into(), key_name: key_name.into() };
    }
    if value.starts_with(PROTOBUF_MAGIC) {
        return unwrap_protobuf(value).and_then(decode_protobuf).map(Decoded::Object).unwrap_or(Decoded::Opaque);
    }
    if value.first() == Some(&b'{')
        && let Ok(o) = serde_json::from_slice::<JsonObject>(value)
    {
        {
            let mut owners: Vec<Owner> = o
                .metadata
                .owner_references
                .into_iter()
                .map(|r| Owner { uid: r.uid, kind: r.kind, name: r.name, implicit: false })
                .collect();
            owners.extend(implicit_sa_owner(&o.kind, o.secret_type.as_deref(), &o.metadata.annotations));
            return Decoded::Object(Meta {
                uid: o.metadata.uid,
                kind: o.kind,
                owners,
                deleting: o.metadata.deletion_timestamp.is_some(),
            });
        }
    }
    Decoded::Opaque
}

/// A built-in object as kube-apiserver stores it (`k8s\0` + `runtime.Unknown`): its kind and
/// the object's own protobuf bytes. None when `value` is not one.
pub fn unwrap_protobuf(value: &[u8]) -> Option<(String, Vec<u8>)> {
    let unknown = Unknown::decode(value.strip_prefix(PROTOBUF_MAGIC)?).ok()?;
    let kind = unknown.type_meta.as_ref().and_then(|t| t.kind.clone()).unwrap_or_default();
    Some((kind, unknown.raw?))
}

fn decode_protobuf((kind, raw): (String, Vec<u8>)) -> Option<Meta> {
    let meta = PartialObjectMetadata::decode(raw.as_slice()).ok()?.metadata?;
    let mut owners: Vec<Owner> = meta
        .owner_references
        .iter()
        .map(|r| Owner {
            uid: r.uid.clone().unwrap_or_default(),
            kind: r.kind.clone().unwrap_or_default(),
            name: r.name.clone().unwrap_or_default(),
            implicit: false,
        })
        .collect();
    if kind == "Secret" {
        let t = SecretType::decode(raw.as_slice()).ok().and_then(|s| s.r#type);
        owners.extend(implicit_sa_owner(&kind, t.as_deref(), &meta.annotations));
    }
    Some(Meta { uid: meta.uid.unwrap_or_default(), kind, owners, deleting: meta.deletion_timestamp.is_some() })
}

/// Encodes a built-in object the way kube-apiserver stores it (`k8s\0` + `runtime.Unknown`).
/// Used by tests and by the simulated control plane.
pub fn encode_protobuf(api_version: &str, kind: &str, raw: Vec<u8>) -> Vec<u8> {
    let unknown = Unknown {
        type_meta: Some(k8s_pb::apimachinery::pkg::runtime::TypeMeta {
            api_version: Some(api_version.into()),
            kind: Some(kind.into()),
        }),
        raw: Some(raw),
        content_encoding: Some(String::new()),
        content_type: Some(String::new()),
    };
    let mut out = PROTOBUF_MAGIC.to_vec();
    out.extend(unknown.encode_to_vec());
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_pb::api::core::v1::Secret;
    use k8s_pb::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};

    #[test]
    fn json_objects_give_uid_and_owner_references() {
        let v = br#"{"apiVersion":"cluster.x-k8s.io/v1beta1","kind":"Machine","metadata":{"name":"m","uid":"u-m",
            "ownerReferences":[{"apiVersion":"cluster.x-k8s.io/v1beta1","kind":"MachineSet","name":"ms","uid":"u-ms","controller":true}]}}"#;
        let Decoded::Object(m) = decode(v) else { panic!("an object") };
        assert_eq!(m.uid, "u-m");
        assert_eq!(m.kind, "Machine");
        assert_eq!(
            m.owners,
            vec![Owner { uid: "u-ms".into(), kind: "MachineSet".into(), name: "ms".into(), implicit: false }]
        );
        assert!(!m.deleting);
    }

    #[test]
    fn protobuf_objects_give_metadata_and_token_secrets_their_service_account() {
        let secret = Secret {
            metadata: Some(ObjectMeta {
                name: Some("agent-token".into()),
                uid: Some("u-secret".into()),
                owner_references: vec![OwnerReference {
                    uid: Some("u-owner".into()),
                    kind: Some("Thing".into()),
                    ..Default::default()
                }],
                annotations: [
                    ("kubernetes.io/service-account.name".to_string(), "agent".to_string()),
                    ("kubernetes.io/service-account.uid".to_string(), "u-sa".to_string()),
                ]
                .into(),
                ..Default::default()
            }),
            r#type: Some("kubernetes.io/service-account-token".into()),
            ..Default::default()
        };
        let v = encode_protobuf("v1", "Secret", secret.encode_to_vec());
        let Decoded::Object(m) = decode(&v) else { panic!("an object") };
        assert_eq!(m.uid, "u-secret");
        let owners: Vec<(&str, bool)> = m.owners.iter().map(|o| (o.uid.as_str(), o.implicit)).collect();
        assert_eq!(owners, vec![("u-owner", false), ("u-sa", true)]);
    }

    #[test]
    fn ciphertext_is_recognised_and_not_parsed() {
        assert_eq!(
            decode(b"k8s:enc:aescbc:v1:key1:\x00\x01binary"),
            Decoded::Encrypted { provider: "aescbc".into(), key_name: "key1".into() }
        );
        assert_eq!(envelope(b"k8s:enc:kms:v2:vault:xyz"), Some(("kms", "vault", &b"xyz"[..])));
        assert_eq!(decode(b"plain text"), Decoded::Opaque);
        assert_eq!(decode(b"k8s\0garbage"), Decoded::Opaque);
    }
}
