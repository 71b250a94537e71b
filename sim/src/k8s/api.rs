//! The model's kube-apiserver: typed reads and writes of [`Object`]s straight on that cluster's
//! etcd through the real etcd-client, with the API server's rules — resourceVersion
//! preconditions (the key's mod revision), finalizers turning a delete into a deletionTimestamp,
//! no un-deleting, Secrets sealed at rest — and one trace record per write that matters.
//!
//! The sync bypasses all of this (it writes etcd directly), which is exactly how a copy can make
//! a deletionTimestamp vanish: the model's API never allows it, the trace shows who did.

use std::sync::{Arc, Mutex};

use etcd_client::{Compare, CompareOp, GetOptions, KvClient, Txn, TxnOp};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::{Value, json};

use super::atrest::AtRest;
use super::auth::TokenSigning;
use super::kind::{self, Kind};
use super::object::{DecodeError, Object};
use crate::trace::Trace;

/// Objects one list returns at most (a bound, not a page size: the model's clusters are small).
pub const LIST_OBJECTS_MAX: i64 = 200_000;

pub const FOREGROUND_FINALIZER: &str = "foregroundDeletion";
/// The one writer a fence lets through: the failover orchestrator, which pauses and unpauses
/// Clusters on a fenced side (a failback's old primary).
pub const FENCE_EXEMPT_ACTOR: &str = "failover";

/// What one cluster's API server knows about itself.
pub struct ApiServer {
    pub cluster: String,
    at_rest: Mutex<AtRest>,
    /// The ServiceAccount token key, issuer and audiences its authenticator accepts.
    signing: TokenSigning,
    rng: Mutex<ChaCha8Rng>,
    pub trace: Trace,
    epoch_s: i64,
    /// Writes through this API server are refused (a failover fenced this cluster).
    fenced: std::sync::atomic::AtomicBool,
}

impl ApiServer {
    pub fn new(cluster: &str, at_rest: AtRest, signing: TokenSigning, seed: u64, trace: Trace) -> Arc<Self> {
        Arc::new(ApiServer {
            cluster: cluster.into(),
            at_rest: Mutex::new(at_rest),
            signing,
            rng: Mutex::new(ChaCha8Rng::seed_from_u64(seed)),
            trace,
            epoch_s: crate::world::EPOCH_UNIX_S as i64,
            fenced: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// Fences (or unfences) the cluster's write path at the API layer: every create, update and
    /// delete is refused, whoever sends it (controllers, agents, operators) — but the DR
    /// orchestrator itself ([`FENCE_EXEMPT_ACTOR`]), as an admission rule that owns the fence
    /// would let its owner through.
    pub fn set_fenced(&self, fenced: bool) {
        self.fenced.store(fenced, std::sync::atomic::Ordering::SeqCst);
        self.trace.record(&self.cluster, "apiserver.fence", json!({"fenced": fenced}));
    }

    pub fn fenced(&self) -> bool {
        self.fenced.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// A fresh UID from the cluster's seeded RNG (UUID-shaped).
    pub fn uid(&self) -> String {
        let mut b = [0u8; 16];
        self.rng.lock().expect("api rng").fill_bytes(&mut b);
        super::object::uuid(b)
    }

    pub fn signing(&self) -> &TokenSigning {
        &self.signing
    }

    /// The encryption configuration in force.
    pub fn at_rest(&self) -> AtRest {
        self.at_rest.lock().expect("at-rest lock").clone()
    }

    /// Rotates the encryption key: `name` encrypts from now on (traced by name, never bytes).
    pub fn rotate_key(&self, name: &str, key: [u8; 32]) {
        let mut at_rest = self.at_rest.lock().expect("at-rest lock");
        *at_rest = at_rest.rotated(name, key);
        self.trace.record(
            &self.cluster,
            "apiserver.rotate-key",
            json!({"encrypting": name, "keys": at_rest.key_names()}),
        );
    }

    /// Simulated wall-clock now, as an API timestamp.
    pub fn now(&self) -> Time {
        let s = crate::clock::elapsed().map(|d| d.as_secs() as i64).unwrap_or(0);
        Time(k8s_openapi::jiff::Timestamp::from_second(self.epoch_s + s).expect("simulated time in range"))
    }

    /// The stored bytes of `obj` (Secrets sealed with this cluster's key).
    pub fn encode(&self, obj: &Object) -> Vec<u8> {
        let plain = obj.encode();
        if obj.kind == &kind::SECRET {
            self.at_rest().seal(&plain, &mut *self.rng.lock().expect("api rng"))
        } else {
            plain
        }
    }

    pub fn decode(&self, key: &str, value: &[u8]) -> Result<Object, ApiError> {
        let plain = self.at_rest().open(value).ok_or_else(|| ApiError::Undecryptable(key.into()))?;
        Ok(Object::decode(key, &plain)?)
    }
}

/// An object as read, with its resourceVersion (the key's mod revision).
#[derive(Debug, Clone, PartialEq)]
pub struct Stored {
    pub obj: Object,
    pub rev: i64,
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("etcd: {0}")]
    Etcd(#[from] etcd_client::Error),
    #[error("{0}: conflict (the object changed)")]
    Conflict(String),
    #[error("{0}: already exists")]
    AlreadyExists(String),
    #[error("{0}: not found")]
    NotFound(String),
    #[error("{0}: invalid: {1}")]
    Invalid(String, &'static str),
    #[error("{0}: refused, the cluster is fenced")]
    Fenced(String),
    #[error("{0}: unable to transform key (sealed with a key this cluster lacks)")]
    Undecryptable(String),
    #[error(transparent)]
    Decode(#[from] DecodeError),
}

/// Why a watch cannot resume at a resourceVersion.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resume {
    /// 410: compacted away; the client relists.
    Gone,
    /// Past the head ("Too large resource version"); client-go's reflector relists too.
    TooLarge,
}

/// How a delete treats dependents (metadata.deleteOptions.propagationPolicy).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Propagation {
    Background,
    Foreground,
}

/// What a delete did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deleted {
    /// The key is gone.
    Removed,
    /// Finalizers remain: the object now carries a deletionTimestamp.
    Marked,
    /// It was already being deleted.
    AlreadyDeleting,
}

/// A client of one cluster's API server: who is calling (for the trace) and the etcd behind it.
#[derive(Clone)]
pub struct Api {
    pub server: Arc<ApiServer>,
    kv: KvClient,
    /// The controller acting through this client, e.g. "garbage-collector".
    pub actor: String,
}

impl Api {
    pub fn new(server: Arc<ApiServer>, etcd: &etcd_client::Client, actor: &str) -> Self {
        Api { server, kv: etcd.kv_client(), actor: actor.into() }
    }

    pub fn cluster(&self) -> &str {
        &self.server.cluster
    }

    pub async fn get(&self, kind: &'static Kind, namespace: &str, name: &str) -> Result<Option<Stored>, ApiError> {
        let key = kind.key(namespace, name);
        let r = self.kv.clone().get(key.as_str(), None).await?;
        let Some(kv) = r.kvs().first() else { return Ok(None) };
        Ok(Some(Stored { obj: self.server.decode(&key, kv.value())?, rev: kv.mod_revision() }))
    }

    /// [`Api::get`] of an object that must exist.
    pub async fn require(&self, kind: &'static Kind, namespace: &str, name: &str) -> Result<Stored, ApiError> {
        self.get(kind, namespace, name).await?.ok_or_else(|| ApiError::NotFound(kind.key(namespace, name)))
    }

    /// Sets `spec.<field>` of a custom resource read as `old` (an update with its precondition).
    pub async fn set_spec(&self, old: &Stored, field: &str, value: Value) -> Result<(), ApiError> {
        let mut obj = old.obj.clone();
        obj.set_field(&["spec", field], value);
        self.update(old, obj).await.map(|_| ())
    }

    /// Every object of `kind` and the revision read at. Objects that do not decrypt are left
    /// out and traced (a real API server fails the whole list; the model keeps the rest visible).
    pub async fn list(&self, kind: &'static Kind) -> Result<(Vec<Stored>, i64), ApiError> {
        let opts = GetOptions::new().with_prefix().with_limit(LIST_OBJECTS_MAX);
        let r = self.kv.clone().get(kind.prefix(), Some(opts)).await?;
        assert!(!r.more(), "a list of {} hit LIST_OBJECTS_MAX", kind.resource);
        let rev = r.header().map(|h| h.revision()).unwrap_or(0);
        Ok((self.decode_all(&r), rev))
    }

    /// The objects a read returned; those that do not decode are left out and traced.
    fn decode_all(&self, r: &etcd_client::GetResponse) -> Vec<Stored> {
        let mut out = Vec::with_capacity(r.kvs().len());
        for kv in r.kvs() {
            let key = String::from_utf8_lossy(kv.key()).into_owned();
            match self.server.decode(&key, kv.value()) {
                Ok(obj) => out.push(Stored { obj, rev: kv.mod_revision() }),
                Err(e) => self.trace_error(&key, &e),
            }
        }
        out
    }

    /// The objects under `prefix` modified after resourceVersion `after`, and the head: what a
    /// watch resumed at `after` reports (each object's latest state; deletions are not
    /// modelled). `Resume::Gone` when `after` is compacted away (410 "too old resource
    /// version"; kube-apiserver's watch cache window is this etcd's history here),
    /// `Resume::TooLarge` past the head ("Too large resource version"). `after` 0 is a list.
    pub async fn changed_since(
        &self,
        prefix: &str,
        after: i64,
    ) -> Result<Result<(Vec<Stored>, i64), Resume>, ApiError> {
        if after > 0 {
            let probe = GetOptions::new().with_prefix().with_count_only().with_revision(after);
            match self.kv.clone().get(prefix, Some(probe)).await {
                Err(e) if e.to_string().contains("has been compacted") => return Ok(Err(Resume::Gone)),
                Err(e) if e.to_string().contains("future revision") => return Ok(Err(Resume::TooLarge)),
                r => r?,
            };
        }
        let opts = GetOptions::new().with_prefix().with_min_mod_revision(after + 1).with_limit(LIST_OBJECTS_MAX);
        let r = self.kv.clone().get(prefix, Some(opts)).await?;
        assert!(!r.more(), "a watch under {prefix} hit LIST_OBJECTS_MAX");
        let head = r.header().map(|h| h.revision()).unwrap_or(0);
        Ok(Ok((self.decode_all(&r), head)))
    }

    pub fn trace_error(&self, key: &str, e: &ApiError) {
        self.server.trace.record(
            self.cluster(),
            "apiserver.error",
            json!({"key": key, "by": self.actor, "error": e.to_string()}),
        );
    }

    /// Creates `obj`, giving it a UID and creationTimestamp unless it has them.
    pub async fn create(&self, mut obj: Object) -> Result<Stored, ApiError> {
        if obj.meta.uid.is_none() {
            obj.meta.uid = Some(self.server.uid());
        }
        obj.meta.creation_timestamp.get_or_insert_with(|| self.server.now());
        let key = obj.key();
        self.writable(&key)?;
        let txn = Txn::new()
            .when([Compare::create_revision(key.as_str(), CompareOp::Equal, 0)])
            .and_then([TxnOp::put(key.as_str(), self.server.encode(&obj), None)]);
        let r = self.kv.clone().txn(txn).await?;
        if !r.succeeded() {
            return Err(ApiError::AlreadyExists(key));
        }
        let rev = r.header().map(|h| h.revision()).unwrap_or(0);
        self.server.trace.record(
            self.cluster(),
            "k8s.create",
            json!({"key": key, "uid": obj.uid(), "by": self.actor, "rev": rev}),
        );
        Ok(Stored { obj, rev })
    }

    /// Replaces `old` with `obj` if nothing changed since `old` was read. An object being
    /// deleted whose last finalizer goes is removed (Ok(None)), as kube-apiserver does.
    pub async fn update(&self, old: &Stored, obj: Object) -> Result<Option<Stored>, ApiError> {
        let key = obj.key();
        self.writable(&key)?;
        if old.obj.deleting() && !obj.deleting() {
            return Err(ApiError::Invalid(key, "metadata.deletionTimestamp cannot be removed"));
        }
        let guard = Compare::mod_revision(key.as_str(), CompareOp::Equal, old.rev);
        let remove = obj.deleting() && obj.finalizers().is_empty();
        let op = if remove {
            TxnOp::delete(key.as_str(), None)
        } else {
            TxnOp::put(key.as_str(), self.server.encode(&obj), None)
        };
        let r = self.kv.clone().txn(Txn::new().when([guard]).and_then([op])).await?;
        if !r.succeeded() {
            return Err(ApiError::Conflict(key));
        }
        let rev = r.header().map(|h| h.revision()).unwrap_or(0);
        if remove {
            self.server.trace.record(
                self.cluster(),
                "k8s.removed",
                json!({"key": key, "uid": obj.uid(), "by": self.actor, "rev": rev, "why": "last finalizer removed"}),
            );
            return Ok(None);
        }
        Ok(Some(Stored { obj, rev }))
    }

    /// Deletes the object `old` (precondition: its UID and resourceVersion). `why` is the cause
    /// the trace keeps; a deletion without one is a bug in the caller.
    pub async fn delete(&self, old: &Stored, propagation: Propagation, why: Value) -> Result<Deleted, ApiError> {
        let key = old.obj.key();
        self.writable(&key)?;
        if old.obj.deleting() {
            return Ok(Deleted::AlreadyDeleting);
        }
        let mut obj = old.obj.clone();
        if propagation == Propagation::Foreground {
            obj.add_finalizer(FOREGROUND_FINALIZER);
        }
        let guard = Compare::mod_revision(key.as_str(), CompareOp::Equal, old.rev);
        let (op, outcome) = if obj.finalizers().is_empty() {
            (TxnOp::delete(key.as_str(), None), Deleted::Removed)
        } else {
            obj.meta.deletion_timestamp = Some(self.server.now());
            obj.meta.deletion_grace_period_seconds = Some(0);
            (TxnOp::put(key.as_str(), self.server.encode(&obj), None), Deleted::Marked)
        };
        let r = self.kv.clone().txn(Txn::new().when([guard]).and_then([op])).await?;
        if !r.succeeded() {
            return Err(ApiError::Conflict(key));
        }
        let rev = r.header().map(|h| h.revision()).unwrap_or(0);
        let event = if outcome == Deleted::Removed { "k8s.delete" } else { "k8s.delete.marked" };
        self.server.trace.record(
            self.cluster(),
            event,
            json!({"key": key, "kind": obj.kind.kind, "uid": obj.uid(), "by": self.actor, "rev": rev, "why": why}),
        );
        Ok(outcome)
    }

    fn writable(&self, key: &str) -> Result<(), ApiError> {
        if self.server.fenced() && self.actor != FENCE_EXEMPT_ACTOR {
            return Err(ApiError::Fenced(key.into()));
        }
        Ok(())
    }

    /// Reads a raw key (for gates and bookkeeping outside `/registry/`).
    pub async fn get_raw(&self, key: &str) -> Result<Option<Vec<u8>>, ApiError> {
        let r = self.kv.clone().get(key, None).await?;
        Ok(r.kvs().first().map(|kv| kv.value().to_vec()))
    }

    /// Writes or deletes a raw key (operator actions on bookkeeping outside `/registry/`).
    pub async fn put_raw(&self, key: &str, value: Option<Vec<u8>>) -> Result<(), ApiError> {
        match value {
            Some(v) => self.kv.clone().put(key, v, None).await.map(|_| ())?,
            None => self.kv.clone().delete(key, None).await.map(|_| ())?,
        }
        Ok(())
    }
}
