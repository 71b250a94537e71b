//! The KV requests (Range, Put, DeleteRange, Txn) applied to the store, with etcd's validation
//! order: request checks first (ops count, duplicate keys, size), then the compares pick the
//! branch on the state before the transaction, then per-op preconditions (lease exists,
//! `ignore_value` needs the key), and only then writes. A failed check writes nothing.

use std::collections::BTreeSet;

use etcd_client::proto::{
    PbCompare, PbDeleteRequest, PbDeleteResponse, PbKeyValue, PbPutRequest, PbPutResponse, PbRangeRequest,
    PbRangeResponse, PbResponseOp, PbTargetUnion, PbTxnOpRequest, PbTxnOpResponse, PbTxnRequest, PbTxnRequestOp,
    PbTxnResponse,
};
use prost::Message;

use super::EtcdError;
use super::config::Mutant;
use super::store::{Batch, KeyRange, Store};

// Enum values of etcdserverpb (prost keeps them as i32 on the wire types).
const SORT_NONE: i32 = 0;
const SORT_ASCEND: i32 = 1;
const SORT_DESCEND: i32 = 2;
const TARGET_KEY: i32 = 0;
const TARGET_VERSION: i32 = 1;
const TARGET_CREATE: i32 = 2;
const TARGET_MOD: i32 = 3;
const TARGET_VALUE: i32 = 4;
const CMP_EQUAL: i32 = 0;
const CMP_GREATER: i32 = 1;
const CMP_LESS: i32 = 2;
const CMP_NOT_EQUAL: i32 = 3;
const CMP_TARGET_VERSION: i32 = 0;
const CMP_TARGET_CREATE: i32 = 1;
const CMP_TARGET_MOD: i32 = 2;
const CMP_TARGET_VALUE: i32 = 3;
const CMP_TARGET_LEASE: i32 = 4;

/// Size check as etcd does it on the proposal (the request plus a little framing).
pub fn check_size(store: &Store, encoded_len: usize) -> Result<(), EtcdError> {
    if encoded_len > store.cfg.request_bytes_max {
        return Err(EtcdError::RequestTooLarge);
    }
    Ok(())
}

pub fn range(store: &Store, batch: Option<&Batch>, req: &PbRangeRequest) -> Result<PbRangeResponse, EtcdError> {
    if req.key.is_empty() {
        return Err(EtcdError::EmptyKey);
    }
    // Inside a write transaction with changes, reads see those changes.
    let current = match batch {
        Some(b) if !b.events.is_empty() => b.rev,
        _ => store.rev(),
    };
    let at = store.check_read_rev(req.revision, current)?;
    let all = store.range_at(&KeyRange::new(&req.key, &req.range_end), at);
    let mut kvs: Vec<&PbKeyValue> = all
        .into_iter()
        .filter(|kv| req.min_mod_revision == 0 || kv.mod_revision >= req.min_mod_revision)
        .filter(|kv| req.max_mod_revision == 0 || kv.mod_revision <= req.max_mod_revision)
        .filter(|kv| req.min_create_revision == 0 || kv.create_revision >= req.min_create_revision)
        .filter(|kv| req.max_create_revision == 0 || kv.create_revision <= req.max_create_revision)
        .collect();
    let count = kvs.len() as i64;
    let mut order = req.sort_order;
    if req.sort_target != TARGET_KEY && order == SORT_NONE {
        // The store already answers ascending by key; other targets default to ascending.
        order = SORT_ASCEND;
    }
    if order == SORT_DESCEND && store.is(Mutant::DescendSortIgnored) {
        order = SORT_ASCEND;
    }
    if order != SORT_NONE {
        let key_of = |kv: &PbKeyValue| -> (i64, Vec<u8>) {
            match req.sort_target {
                TARGET_VERSION => (kv.version, Vec::new()),
                TARGET_CREATE => (kv.create_revision, Vec::new()),
                TARGET_MOD => (kv.mod_revision, Vec::new()),
                TARGET_VALUE => (0, kv.value.clone()),
                _ => (0, kv.key.clone()),
            }
        };
        kvs.sort_by_key(|kv| key_of(kv));
        if order == SORT_DESCEND {
            kvs.reverse();
        }
    }
    let mut more = false;
    if req.limit > 0 && kvs.len() > req.limit as usize && !store.is(Mutant::LimitIgnored) {
        kvs.truncate(req.limit as usize);
        more = !store.is(Mutant::MoreNeverSet);
    }
    let count = if store.is(Mutant::CountIgnoresLimit) { kvs.len() as i64 } else { count };
    let kvs = if req.count_only {
        Vec::new()
    } else {
        kvs.into_iter()
            .map(|kv| {
                let mut kv = kv.clone();
                if req.keys_only {
                    kv.value.clear();
                }
                kv
            })
            .collect()
    };
    Ok(PbRangeResponse { header: None, kvs, more, count })
}

fn put_precheck(store: &Store, req: &PbPutRequest) -> Result<(), EtcdError> {
    if req.key.is_empty() {
        return Err(EtcdError::EmptyKey);
    }
    if (req.ignore_value || req.ignore_lease) && store.latest(&req.key).is_none() {
        return Err(EtcdError::KeyNotFound);
    }
    if req.lease != 0 && !store.leases.contains_key(&req.lease) {
        return Err(EtcdError::LeaseNotFound);
    }
    Ok(())
}

fn put(store: &mut Store, batch: &mut Batch, req: &PbPutRequest) -> PbPutResponse {
    let cur = store.latest(&req.key).cloned();
    let value = match (&cur, req.ignore_value) {
        (Some(c), true) => c.value.clone(),
        _ => req.value.clone(),
    };
    let lease = match (&cur, req.ignore_lease) {
        (Some(c), true) => c.lease,
        _ => req.lease,
    };
    let prev = store.put(batch, &req.key, value, lease);
    let prev_kv = if req.prev_kv && !store.is(Mutant::PutPrevKvMissing) { prev } else { None };
    PbPutResponse { header: None, prev_kv }
}

fn delete(store: &mut Store, batch: &mut Batch, req: &PbDeleteRequest) -> PbDeleteResponse {
    let gone = store.delete(batch, &KeyRange::new(&req.key, &req.range_end));
    PbDeleteResponse { header: None, deleted: gone.len() as i64, prev_kvs: if req.prev_kv { gone } else { Vec::new() } }
}

/// Single Put, as its own write transaction.
pub fn put_request(store: &mut Store, req: &PbPutRequest) -> Result<(PbPutResponse, Batch), EtcdError> {
    check_size(store, req.encoded_len())?;
    put_precheck(store, req)?;
    let mut batch = store.begin();
    let resp = put(store, &mut batch, req);
    Ok((resp, batch))
}

pub fn delete_request(store: &mut Store, req: &PbDeleteRequest) -> Result<(PbDeleteResponse, Batch), EtcdError> {
    if req.key.is_empty() {
        return Err(EtcdError::EmptyKey);
    }
    check_size(store, req.encoded_len())?;
    let mut batch = store.begin();
    let resp = delete(store, &mut batch, req);
    Ok((resp, batch))
}

fn compare_one(store: &Store, c: &PbCompare) -> bool {
    let kvs = store.range_at(&KeyRange::new(&c.key, &c.range_end), store.rev());
    if kvs.is_empty() {
        if c.target == CMP_TARGET_VALUE {
            // etcd: a value compare on a missing key always fails (nil and "" look the same).
            return store.is(Mutant::CompareMissingValueTrue);
        }
        return compare_kv(c, &PbKeyValue::default());
    }
    kvs.iter().all(|kv| compare_kv(c, kv))
}

fn compare_kv(c: &PbCompare, kv: &PbKeyValue) -> bool {
    use std::cmp::Ordering;
    let ord = match (&c.target, &c.target_union) {
        (&CMP_TARGET_VALUE, Some(PbTargetUnion::Value(v))) => kv.value.as_slice().cmp(v.as_slice()),
        (&CMP_TARGET_VERSION, Some(PbTargetUnion::Version(v))) => kv.version.cmp(v),
        (&CMP_TARGET_CREATE, Some(PbTargetUnion::CreateRevision(v))) => kv.create_revision.cmp(v),
        (&CMP_TARGET_MOD, Some(PbTargetUnion::ModRevision(v))) => kv.mod_revision.cmp(v),
        (&CMP_TARGET_LEASE, Some(PbTargetUnion::Lease(v))) => kv.lease.cmp(v),
        // A compare without its operand compares against the zero value, as Go's protobuf does.
        (&CMP_TARGET_VALUE, _) => kv.value.as_slice().cmp(&[][..]),
        (&CMP_TARGET_VERSION, _) => kv.version.cmp(&0),
        (&CMP_TARGET_CREATE, _) => kv.create_revision.cmp(&0),
        (&CMP_TARGET_MOD, _) => kv.mod_revision.cmp(&0),
        _ => kv.lease.cmp(&0),
    };
    match c.result {
        CMP_EQUAL => ord == Ordering::Equal,
        CMP_GREATER => ord == Ordering::Greater,
        CMP_LESS => ord == Ordering::Less,
        CMP_NOT_EQUAL => ord != Ordering::Equal,
        _ => false,
    }
}

/// The branch each (nested) transaction takes, decided on the state before any write.
struct Path {
    succeeded: bool,
    nested: Vec<Path>,
}

fn decide(store: &Store, t: &PbTxnRequest) -> Path {
    let succeeded = t.compare.iter().all(|c| compare_one(store, c));
    let ops = if succeeded { &t.success } else { &t.failure };
    let nested = ops
        .iter()
        .filter_map(|op| match &op.request {
            Some(PbTxnOpRequest::RequestTxn(n)) => Some(decide(store, n)),
            _ => None,
        })
        .collect();
    Path { succeeded, nested }
}

fn check_ops_count(store: &Store, t: &PbTxnRequest) -> Result<(), EtcdError> {
    let max = store.cfg.txn_ops_max;
    let over = t.compare.len() > max || t.success.len() > max || t.failure.len() > max;
    if over && !store.is(Mutant::TooManyOpsUnchecked) {
        return Err(EtcdError::TooManyOps);
    }
    for op in t.success.iter().chain(&t.failure) {
        if let Some(PbTxnOpRequest::RequestTxn(n)) = &op.request {
            check_ops_count(store, n)?;
        }
    }
    Ok(())
}

/// etcd's `checkIntervals`: a key may be put once per branch, and never inside a range the same
/// branch deletes. Nested transactions may reuse keys between their own two branches.
fn check_intervals(ops: &[PbTxnRequestOp]) -> Result<(Vec<KeyRange>, BTreeSet<Vec<u8>>), EtcdError> {
    let mut dels = Vec::new();
    let mut puts = BTreeSet::new();
    for op in ops {
        match &op.request {
            Some(PbTxnOpRequest::RequestPut(p)) if !puts.insert(p.key.clone()) => {
                return Err(EtcdError::DuplicateKey);
            }
            Some(PbTxnOpRequest::RequestDeleteRange(d)) => dels.push(KeyRange::new(&d.key, &d.range_end)),
            Some(PbTxnOpRequest::RequestTxn(n)) => {
                let (sd, sp) = check_intervals(&n.success)?;
                let (fd, fp) = check_intervals(&n.failure)?;
                for k in sp.iter().chain(&fp) {
                    if puts.contains(k) {
                        return Err(EtcdError::DuplicateKey);
                    }
                }
                for k in sd.iter().chain(&fd) {
                    if puts.iter().any(|p| k.contains(p)) {
                        return Err(EtcdError::DuplicateKey);
                    }
                }
                puts.extend(sp);
                puts.extend(fp);
                dels.extend(sd);
                dels.extend(fd);
            }
            _ => {}
        }
    }
    if puts.iter().any(|p| dels.iter().any(|d| d.contains(p))) {
        return Err(EtcdError::DuplicateKey);
    }
    Ok((dels, puts))
}

fn precheck_path(store: &Store, t: &PbTxnRequest, path: &Path) -> Result<(), EtcdError> {
    let ops = if path.succeeded { &t.success } else { &t.failure };
    let mut nested = path.nested.iter();
    for op in ops {
        match &op.request {
            Some(PbTxnOpRequest::RequestPut(p)) => put_precheck(store, p)?,
            Some(PbTxnOpRequest::RequestRange(r)) if r.key.is_empty() => return Err(EtcdError::EmptyKey),
            Some(PbTxnOpRequest::RequestDeleteRange(d)) if d.key.is_empty() => return Err(EtcdError::EmptyKey),
            Some(PbTxnOpRequest::RequestTxn(n)) => {
                precheck_path(store, n, nested.next().expect("one path per nested txn"))?
            }
            _ => {}
        }
    }
    Ok(())
}

fn execute(store: &mut Store, batch: &mut Batch, t: &PbTxnRequest, path: &Path) -> Result<PbTxnResponse, EtcdError> {
    let ops = if path.succeeded { &t.success } else { &t.failure };
    let mut nested = path.nested.iter();
    let mut responses = Vec::with_capacity(ops.len());
    for op in ops {
        let response = match &op.request {
            Some(PbTxnOpRequest::RequestRange(r)) => PbTxnOpResponse::ResponseRange(range(store, Some(batch), r)?),
            Some(PbTxnOpRequest::RequestPut(p)) => PbTxnOpResponse::ResponsePut(put(store, batch, p)),
            Some(PbTxnOpRequest::RequestDeleteRange(d)) => {
                PbTxnOpResponse::ResponseDeleteRange(delete(store, batch, d))
            }
            Some(PbTxnOpRequest::RequestTxn(n)) => {
                let p = nested.next().expect("one path per nested txn");
                PbTxnOpResponse::ResponseTxn(execute(store, batch, n, p)?)
            }
            None => continue,
        };
        responses.push(PbResponseOp { response: Some(response) });
    }
    Ok(PbTxnResponse { header: None, succeeded: path.succeeded, responses })
}

pub fn txn_request(store: &mut Store, req: &PbTxnRequest) -> Result<(PbTxnResponse, Batch), EtcdError> {
    check_ops_count(store, req)?;
    check_intervals(&req.success)?;
    check_intervals(&req.failure)?;
    check_size(store, req.encoded_len())?;
    let path = decide(store, req);
    precheck_path(store, req, &path)?;
    let mut batch = store.begin();
    let resp = execute(store, &mut batch, req, &path)?;
    Ok((resp, batch))
}
