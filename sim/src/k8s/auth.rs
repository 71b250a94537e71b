//! kube-apiserver's authentication of ServiceAccount tokens and its RBAC authorizer: the parts
//! seed 000's shared-token rules depend on. Existing bare-metal hosts keep the agent token they
//! received before a failover; it works on the standby only if both sides share the signing
//! key, the issuer and an audience, and the ServiceAccount, token Secret, Role and RoleBinding
//! were copied exactly (a legacy token is looked up: its Secret must exist, be readable and hold
//! this token, and its ServiceAccount must have the UID the token names).
//!
//! A real cluster signs with the RSA or ECDSA key in `sa.key` and verifies with `sa.pub`; the
//! model signs with HMAC-SHA256 under one 32-byte key standing for that pair, because all that
//! matters here is whether a token verifies under a cluster's key. No key or token ever reaches
//! the trace: [`TokenSigning`]'s Debug names the key, and a denial says why, not what.

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::api::{Api, ApiError};
use super::kind;
use super::object::{Body, Object};

/// kube-apiserver's `--service-account-issuer` and `--api-audiences` as seed 000 sets them.
pub const DEFAULT_ISSUER: &str = "https://kubernetes.default.svc.cluster.local";
pub const DEFAULT_AUDIENCE: &str = "https://kubernetes.default.svc.cluster.local";
/// Bytes of a token the authenticator looks at (a bound: real tokens are about 1 KiB).
pub const TOKEN_BYTES_MAX: usize = 8 * 1024;

type HmacSha256 = Hmac<Sha256>;

/// One cluster's ServiceAccount token signing key, issuer and accepted audiences.
#[derive(Clone, PartialEq, Eq)]
pub struct TokenSigning {
    key_name: String,
    key: [u8; 32],
    pub issuer: String,
    pub audiences: Vec<String>,
}

impl std::fmt::Debug for TokenSigning {
    // Never prints key bytes.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenSigning")
            .field("key_name", &self.key_name)
            .field("issuer", &self.issuer)
            .field("audiences", &self.audiences)
            .finish()
    }
}

impl TokenSigning {
    /// The key `key_name` with the default issuer and audience.
    pub fn new(key_name: &str, key: [u8; 32]) -> Self {
        TokenSigning {
            key_name: key_name.into(),
            key,
            issuer: DEFAULT_ISSUER.into(),
            audiences: vec![DEFAULT_AUDIENCE.into()],
        }
    }

    pub fn with_issuer(mut self, issuer: &str) -> Self {
        self.issuer = issuer.into();
        self
    }

    pub fn with_audiences(mut self, audiences: &[&str]) -> Self {
        self.audiences = audiences.iter().map(|a| a.to_string()).collect();
        self
    }

    /// What `sha256sum sa.pub` compares: a digest of the key, never the key (16 hex digits).
    pub fn fingerprint(&self) -> String {
        hex::encode(&Sha256::digest(self.key)[..8])
    }

    fn mac(&self) -> HmacSha256 {
        HmacSha256::new_from_slice(&self.key).expect("HMAC takes any key length")
    }

    /// A token for `claims`, signed with this key (JWT compact form).
    pub fn issue(&self, claims: &Claims) -> String {
        use base64::Engine;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let header = serde_json::json!({"alg": "HS256", "kid": self.key_name});
        let signed = format!(
            "{}.{}",
            b64.encode(header.to_string()),
            b64.encode(serde_json::to_vec(claims).expect("claims serialize"))
        );
        let mut mac = self.mac();
        mac.update(signed.as_bytes());
        format!("{signed}.{}", b64.encode(mac.finalize().into_bytes()))
    }

    /// The token's claims if it verifies under this key, names this issuer and one of these
    /// audiences (the JWT authenticator's checks, in its order).
    pub fn verify(&self, token: &str) -> Result<Claims, Denied> {
        use base64::Engine;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        if token.len() > TOKEN_BYTES_MAX {
            return Err(Denied::Malformed);
        }
        let Some((signed, sig)) = token.rsplit_once('.') else { return Err(Denied::Malformed) };
        let Some((_header, payload)) = signed.split_once('.').filter(|(_, p)| !p.contains('.')) else {
            return Err(Denied::Malformed);
        };
        let sig = b64.decode(sig).map_err(|_| Denied::Malformed)?;
        let mut mac = self.mac();
        mac.update(signed.as_bytes());
        mac.verify_slice(&sig).map_err(|_| Denied::Signature)?;
        let claims: Claims = serde_json::from_slice(&b64.decode(payload).map_err(|_| Denied::Malformed)?)
            .map_err(|_| Denied::Malformed)?;
        if claims.iss != self.issuer {
            return Err(Denied::Issuer(claims.iss));
        }
        if !claims.aud.iter().any(|a| self.audiences.contains(a)) {
            return Err(Denied::Audience);
        }
        Ok(claims)
    }
}

/// A ServiceAccount token's claims (legacy Secret-based tokens, with issuer and audience).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub iss: String,
    pub aud: Vec<String>,
    /// `system:serviceaccount:<namespace>:<name>`.
    pub sub: String,
    #[serde(rename = "kubernetes.io/serviceaccount/namespace")]
    pub namespace: String,
    #[serde(rename = "kubernetes.io/serviceaccount/secret.name")]
    pub secret_name: String,
    #[serde(rename = "kubernetes.io/serviceaccount/service-account.name")]
    pub service_account: String,
    #[serde(rename = "kubernetes.io/serviceaccount/service-account.uid")]
    pub service_account_uid: String,
}

impl Claims {
    /// The claims of a token Secret `secret_name` for ServiceAccount `name` (UID `uid`).
    pub fn service_account(signing: &TokenSigning, namespace: &str, name: &str, uid: &str, secret_name: &str) -> Self {
        Claims {
            iss: signing.issuer.clone(),
            aud: signing.audiences.clone(),
            sub: format!("system:serviceaccount:{namespace}:{name}"),
            namespace: namespace.into(),
            secret_name: secret_name.into(),
            service_account: name.into(),
            service_account_uid: uid.into(),
        }
    }
}

/// Why a request was refused: 401 for authentication, 403 for authorization, 503 when the
/// API server could not decide. Never carries the token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Denied {
    #[error("malformed token")]
    Malformed,
    #[error("invalid signature: the token was signed with another ServiceAccount key")]
    Signature,
    #[error("issuer {0} is not this cluster's service-account-issuer")]
    Issuer(String),
    #[error("no audience of the token is in this cluster's api-audiences")]
    Audience,
    #[error("token Secret {0}")]
    TokenSecret(&'static str),
    #[error("ServiceAccount {0}")]
    ServiceAccount(&'static str),
    #[error("forbidden: {0}")]
    Forbidden(String),
    #[error("unavailable: {0}")]
    Unavailable(String),
}

impl Denied {
    pub fn status(&self) -> u16 {
        match self {
            Denied::Forbidden(_) => 403,
            Denied::Unavailable(_) => 503,
            _ => 401,
        }
    }
}

/// RBAC over `objects` (the cluster's Roles and RoleBindings): whether ServiceAccount `sa` of
/// `namespace` may `verb` the `resource` named `name` there. A rule with resourceNames grants
/// only those names.
pub fn allows(objects: &[Object], namespace: &str, sa: &str, verb: &str, resource: &str, name: &str) -> bool {
    let in_ns = |o: &&Object| o.namespace() == namespace;
    let role = |n: &str| {
        objects.iter().filter(in_ns).find_map(|o| match &o.body {
            Body::Role { rules } if o.name() == n => Some(rules),
            _ => None,
        })
    };
    let any = |v: &[String], x: &str| v.iter().any(|s| s == x || s == "*");
    objects.iter().filter(in_ns).any(|o| match &o.body {
        Body::RoleBinding { role: r, subjects } if subjects.iter().any(|s| s == sa) => role(r).is_some_and(|rules| {
            rules.iter().any(|rule| {
                any(&rule.verbs, verb)
                    && any(&rule.resources, resource)
                    && (rule.resource_names.is_empty() || rule.resource_names.iter().any(|n| n == name))
            })
        }),
        _ => false,
    })
}

fn unavailable(e: ApiError) -> Denied {
    Denied::Unavailable(e.to_string())
}

/// Authenticates `token` on `api`'s cluster and authorizes `verb` on Secret `namespace/name`
/// (what `kubectl --token=… auth can-i` answers): the token's claims, or why not.
pub async fn review(api: &Api, token: &str, verb: &str, namespace: &str, name: &str) -> Result<Claims, Denied> {
    use super::tokens::SA_UID_ANNOTATION;
    let claims = api.server.signing().verify(token)?;
    // The legacy token lookup: the Secret must still hold this token for this ServiceAccount.
    let secret = match api.get(&kind::SECRET, &claims.namespace, &claims.secret_name).await {
        Ok(Some(s)) => s,
        Ok(None) => return Err(Denied::TokenSecret("not found")),
        Err(ApiError::Undecryptable(_)) => return Err(Denied::TokenSecret("cannot be read: sealed with another key")),
        Err(e) => return Err(unavailable(e)),
    };
    let holds = matches!(&secret.obj.body, Body::Secret { data, .. } if data.get("token").map(Vec::as_slice) == Some(token.as_bytes()));
    if !holds || secret.obj.annotation(SA_UID_ANNOTATION) != Some(claims.service_account_uid.as_str()) {
        return Err(Denied::TokenSecret("holds another token"));
    }
    match api.get(&kind::SERVICE_ACCOUNT, &claims.namespace, &claims.service_account).await {
        Ok(Some(sa)) if sa.obj.uid() == claims.service_account_uid => {}
        Ok(Some(_)) => return Err(Denied::ServiceAccount("has another UID (recreated)")),
        Ok(None) => return Err(Denied::ServiceAccount("not found")),
        Err(e) => return Err(unavailable(e)),
    }
    let mut objects = Vec::new();
    for k in [&kind::ROLE, &kind::ROLE_BINDING] {
        objects.extend(api.list(k).await.map_err(unavailable)?.0.into_iter().map(|s| s.obj));
    }
    if !allows(&objects, namespace, &claims.service_account, verb, "secrets", name) {
        return Err(Denied::Forbidden(format!("{} cannot {verb} secrets/{name} in {namespace}", claims.sub)));
    }
    Ok(claims)
}

/// A system agent's plan Secret patch: it records the plan generation its host applied. The
/// status code, why it was refused, and the plan it read. Like kube-apiserver, admission (the
/// fence) answers before anything else, and a patch that changes nothing writes nothing — so a
/// host re-reading a plan it applied costs no etcd write.
pub async fn patch_plan(api: &Api, token: &str, namespace: &str, name: &str) -> PlanPatch {
    let refused = |status: u16, reason: String| PlanPatch { status, reason, plan: None };
    let claims = match review(api, token, "patch", namespace, name).await {
        Ok(c) => c,
        Err(d) => return refused(d.status(), d.to_string()),
    };
    if api.server.fenced() {
        return refused(503, "fenced".into());
    }
    let mut api = api.clone();
    api.actor = claims.sub;
    let old = match api.get(&kind::SECRET, namespace, name).await {
        Ok(Some(s)) => s,
        Ok(None) => return refused(404, "not found".into()),
        Err(e) => return refused(503, e.to_string()),
    };
    let plan = crate::k8s::capi::baremetal::Plan::of(&old.obj);
    let applied = plan.map(|p| p.generation.to_string().into_bytes());
    let mut obj = old.obj.clone();
    let Body::Secret { data, .. } = &mut obj.body else { return refused(500, "not a Secret".into()) };
    if applied.is_none() || data.get(APPLIED_KEY) == applied.as_ref() {
        return PlanPatch { status: 200, reason: String::new(), plan };
    }
    data.insert(APPLIED_KEY.into(), applied.expect("checked above"));
    match api.update(&old, obj).await {
        Ok(_) => PlanPatch { status: 200, reason: String::new(), plan },
        Err(ApiError::Fenced(_)) => refused(503, "fenced".into()),
        Err(ApiError::Conflict(_)) => refused(409, "conflict".into()),
        Err(e) => refused(500, e.to_string()),
    }
}

/// The plan Secret's data key where the agent records the generation its host applied.
pub const APPLIED_KEY: &str = "applied-generation";

/// What a system agent's plan patch got: the status, why it was refused, and on success the
/// plan it read (which the agent then carries out).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanPatch {
    pub status: u16,
    pub reason: String,
    pub plan: Option<crate::k8s::capi::baremetal::Plan>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::k8s::object::Rule;

    fn claims(s: &TokenSigning) -> Claims {
        Claims::service_account(s, "ns", "agent", "uid-1", "agent-token")
    }

    #[test]
    fn a_token_verifies_only_under_its_key_issuer_and_audience() {
        let a = TokenSigning::new("sa", [1; 32]);
        let token = a.issue(&claims(&a));
        assert_eq!(a.verify(&token), Ok(claims(&a)));
        assert_eq!(TokenSigning::new("sa", [2; 32]).verify(&token), Err(Denied::Signature));
        let issuer = a.clone().with_issuer("https://other");
        assert_eq!(issuer.verify(&token), Err(Denied::Issuer(DEFAULT_ISSUER.into())));
        assert_eq!(a.clone().with_audiences(&["api"]).verify(&token), Err(Denied::Audience));
        assert_eq!(a.verify("a.b"), Err(Denied::Malformed));
        // A payload swapped under the same signature does not verify.
        let forged: Vec<&str> = token.split('.').collect();
        let other = a.issue(&Claims { sub: "system:admin".into(), ..claims(&a) });
        let swapped = format!("{}.{}.{}", forged[0], other.split('.').nth(1).unwrap(), forged[2]);
        assert_eq!(a.verify(&swapped), Err(Denied::Signature));
        assert!(!format!("{a:?}").contains("[1, 1"), "Debug never shows the key");
        assert_ne!(a.fingerprint(), TokenSigning::new("sa", [2; 32]).fingerprint());
    }

    #[test]
    fn rbac_grants_exactly_the_resource_names() {
        let role = Object::new(
            &kind::ROLE,
            "ns",
            "agent",
            Body::Role {
                rules: vec![Rule {
                    verbs: vec!["get".into(), "patch".into()],
                    resources: vec!["secrets".into()],
                    resource_names: vec!["m-0-plan".into()],
                }],
            },
        );
        let binding = Object::new(
            &kind::ROLE_BINDING,
            "ns",
            "agent",
            Body::RoleBinding { role: "agent".into(), subjects: vec!["agent".into()] },
        );
        let objs = vec![role.clone(), binding.clone()];
        assert!(allows(&objs, "ns", "agent", "patch", "secrets", "m-0-plan"));
        assert!(!allows(&objs, "ns", "agent", "patch", "secrets", "registry"));
        assert!(!allows(&objs, "ns", "agent", "delete", "secrets", "m-0-plan"));
        assert!(!allows(&objs, "other", "agent", "patch", "secrets", "m-0-plan"));
        assert!(!allows(&objs, "ns", "someone", "patch", "secrets", "m-0-plan"));
        assert!(!allows(&[binding], "ns", "agent", "patch", "secrets", "m-0-plan"), "no Role: nothing granted");
        assert!(!allows(&[role], "ns", "agent", "patch", "secrets", "m-0-plan"), "no binding: nothing granted");
    }
}
