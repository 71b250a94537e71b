//! The sync's bookkeeping on the target: the gate, the checkpoint, and the guarded write.
//!
//! Every data txn compares the gate key's value with the value this sync installed, and puts the
//! checkpoint in the same txn as the data it covers. A failover that takes the gate (sets it to
//! `cleared` or `uninstalled`) therefore stops any leftover or zombie sync process at its next
//! write, and a crash can never separate data from its checkpoint.

use etcd_client::{Compare, CompareOp, GetOptions, Txn, TxnOp};
use serde::{Deserialize, Serialize};

use crate::BOOKKEEPING_PREFIX;
use crate::conn::{ConnError, Etcd};
use crate::ledger::Ledger;
use crate::plan::Op;

pub fn gate_key() -> String {
    format!("{BOOKKEEPING_PREFIX}gate")
}

pub fn checkpoint_key() -> String {
    format!("{BOOKKEEPING_PREFIX}checkpoint")
}

pub fn ledger_key() -> String {
    format!("{BOOKKEEPING_PREFIX}ledger")
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GateState {
    /// The sync may write; the standby's controllers hold still.
    Syncing,
    /// The sync was uninstalled: no more sync writes; controllers still hold still.
    Uninstalled,
    /// Cleared by a failover: the standby's controllers act; no sync may write.
    Cleared,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Gate {
    pub state: GateState,
    pub epoch: u64,
    /// A target revision at which a clean check pinned against the source proved the target a
    /// copy of it in scope (recorded by a clean uninstall, carried into the next epoch by a
    /// reinstall): a target-only key last written at or below it is a copy the source deleted
    /// since — a reinstall onto a standby that diverged during a DR-aware upgrade deletes it and
    /// only reports what the standby wrote after.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proven_at: Option<i64>,
}

impl Gate {
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("gate serialises")
    }

    /// The gate a stored value holds (what a controller gate or a control call reads).
    pub fn decode(value: &[u8]) -> Result<Gate, serde_json::Error> {
        serde_json::from_slice(value)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// The source cluster this checkpoint belongs to.
    pub source_cluster_id: u64,
    /// Every source revision up to this one is applied (but see `partial`).
    pub revision: i64,
    /// `revision` itself is only partly applied (a split revision): resume re-applies it.
    #[serde(default)]
    pub partial: bool,
    /// The last chunk of a split `revision` applied (0 when not split). A resume re-applies the
    /// whole revision: its puts and deletes are idempotent, and chunking need not repeat exactly.
    #[serde(default)]
    pub chunk: u32,
    /// A resync at `revision` is in progress: resume must resync again.
    #[serde(default)]
    pub resyncing: bool,
    pub epoch: u64,
    /// A source write at or below `revision` that a resume checks is still in the source's
    /// history (None: nothing streamed since the last resync, or written before anchors).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub anchor: Option<crate::anchor::Anchor>,
}

#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    #[error(transparent)]
    Conn(#[from] ConnError),
    #[error("the sync gate is no longer ours (found {found}): a failover or another sync took it")]
    GateLost { found: String },
    #[error("the sync gate is {state:?} (epoch {epoch}); reinstall the sync explicitly to sync again")]
    GateNotSyncing { state: GateState, epoch: u64 },
    #[error("bookkeeping key {key} holds something that is not ours: {reason}")]
    Corrupt { key: String, reason: String },
}

async fn get(target: &Etcd, key: &str) -> Result<Option<Vec<u8>>, ConnError> {
    let mut kv = target.kv.clone();
    let r = target.call(kv.get(key, None)).await?;
    Ok(r.kvs().first().map(|kv| kv.value().to_vec()))
}

pub async fn read_gate(target: &Etcd) -> Result<Option<Gate>, TargetError> {
    let Some(v) = get(target, &gate_key()).await? else { return Ok(None) };
    Gate::decode(&v).map(Some).map_err(|e| TargetError::Corrupt { key: gate_key(), reason: e.to_string() })
}

/// Adopts a syncing gate, or installs one (epoch + 1) when none exists — or, with `reinstall`,
/// over a cleared or uninstalled one. Returns the exact value every sync txn will compare with.
pub async fn ensure_gate(target: &Etcd, reinstall: bool) -> Result<Gate, TargetError> {
    let current = read_gate(target).await?;
    let next = match &current {
        Some(g) if g.state == GateState::Syncing => return Ok(g.clone()),
        Some(g) if !reinstall => return Err(TargetError::GateNotSyncing { state: g.state, epoch: g.epoch }),
        Some(g) => Gate { state: GateState::Syncing, epoch: g.epoch + 1, proven_at: g.proven_at },
        None => Gate { state: GateState::Syncing, epoch: 1, proven_at: None },
    };
    let guard = match &current {
        None => Compare::create_revision(gate_key(), CompareOp::Equal, 0),
        Some(g) => Compare::value(gate_key(), CompareOp::Equal, g.encode()),
    };
    let txn = Txn::new().when([guard]).and_then([TxnOp::put(gate_key(), next.encode(), None)]);
    let mut kv = target.kv.clone();
    let r = target.call(kv.txn(txn)).await?;
    if !r.succeeded() {
        // Another sync installed it between the read and the txn (two processes starting at
        // once: a restart overlapping the old one). Had it read a moment later it would have
        // adopted that syncing gate, so it does now; anything else is not ours to take.
        let found = get(target, &gate_key()).await?;
        if let Some(won) = found.as_deref().and_then(|v| Gate::decode(v).ok())
            && won.state == GateState::Syncing
            && won.epoch == next.epoch
        {
            return Ok(won);
        }
        let found = found.map(|v| String::from_utf8_lossy(&v).into_owned()).unwrap_or_default();
        return Err(TargetError::GateLost { found });
    }
    Ok(next)
}

/// Moves the gate from `from` to `to` state (used by uninstall and the failover's clear).
pub async fn set_gate(target: &Etcd, from: &Gate, to: GateState) -> Result<Gate, TargetError> {
    replace_gate(target, from, Gate { state: to, ..from.clone() }).await
}

/// Replaces the gate `from` with `next` when it still holds `from`.
pub async fn replace_gate(target: &Etcd, from: &Gate, next: Gate) -> Result<Gate, TargetError> {
    let txn = Txn::new().when([Compare::value(gate_key(), CompareOp::Equal, from.encode())]).and_then([TxnOp::put(
        gate_key(),
        next.encode(),
        None,
    )]);
    let mut kv = target.kv.clone();
    if !target.call(kv.txn(txn)).await?.succeeded() {
        let found =
            get(target, &gate_key()).await?.map(|v| String::from_utf8_lossy(&v).into_owned()).unwrap_or_default();
        return Err(TargetError::GateLost { found });
    }
    Ok(next)
}

pub async fn read_checkpoint(target: &Etcd) -> Result<Option<Checkpoint>, TargetError> {
    let Some(v) = get(target, &checkpoint_key()).await? else { return Ok(None) };
    serde_json::from_slice(&v)
        .map(Some)
        .map_err(|e| TargetError::Corrupt { key: checkpoint_key(), reason: e.to_string() })
}

/// The saved ledger; None when there is none or it does not decode (a ledger is only proof: losing
/// it loses claims, never safety).
pub async fn read_ledger(target: &Etcd) -> Result<Option<Ledger>, TargetError> {
    let Some(v) = get(target, &ledger_key()).await? else { return Ok(None) };
    match Ledger::decode(&v) {
        Ok(l) => Ok(Some(l)),
        Err(e) => {
            tracing::warn!(key = %ledger_key(), error = %e, "the saved ledger does not decode; starting a new one");
            Ok(None)
        }
    }
}

/// Saves the ledger, guarded by the gate like every sync write.
pub async fn save_ledger(target: &Etcd, gate: &Gate, ledger: &Ledger) -> Result<(), TargetError> {
    send(target, Some(gate), vec![TxnOp::put(ledger_key(), ledger.encode(), None)]).await.map(|_| ())
}

/// Whether target revision `rev` is one of the sync's own txns (the checkpoint key changed at
/// exactly that revision): the proof while the target's history still holds `rev`, and the
/// fallback behind the [`Ledger`]. False when it cannot be proven (e.g. compacted history).
pub async fn written_by_sync(target: &Etcd, rev: i64) -> bool {
    let mut kv = target.kv.clone();
    match target.call(kv.get(checkpoint_key(), Some(GetOptions::new().with_revision(rev)))).await {
        Ok(r) => r.kvs().first().is_some_and(|kv| kv.mod_revision() == rev),
        Err(_) => false,
    }
}

/// How a batch is written: always one gate-guarded txn with its checkpoint, except under the
/// test-only mutants that split the checkpoint off or drop the gate compare.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriteMode {
    pub split_checkpoint: bool,
    pub unguarded: bool,
}

/// Writes one batch with its checkpoint, guarded by the gate; returns the target revision the
/// data committed at.
pub async fn write(
    target: &Etcd,
    gate: &Gate,
    ops: Vec<(Vec<u8>, Op)>,
    cp: &Checkpoint,
    mode: WriteMode,
) -> Result<i64, TargetError> {
    let cp_op = TxnOp::put(checkpoint_key(), serde_json::to_vec(cp).expect("checkpoint serialises"), None);
    let mut txn_ops: Vec<TxnOp> = ops
        .into_iter()
        .map(|(k, op)| match op {
            Op::Put(v) => TxnOp::put(k, v, None),
            Op::Delete => TxnOp::delete(k, None),
        })
        .collect();
    let guard = (!mode.unguarded).then_some(gate);
    if mode.split_checkpoint {
        // `checkpoint-outside-txn` mutant: the checkpoint goes first, in a txn of its own, so a
        // crash between the two loses the data it claims.
        send(target, guard, vec![cp_op]).await?;
    } else {
        txn_ops.push(cp_op);
    }
    send(target, guard, txn_ops).await
}

/// One txn, guarded by `gate` (None: only the `gate-compare-off` mutant); returns the revision
/// it committed at.
async fn send(target: &Etcd, gate: Option<&Gate>, ops: Vec<TxnOp>) -> Result<i64, TargetError> {
    let compare: Vec<Compare> =
        gate.map(|g| Compare::value(gate_key(), CompareOp::Equal, g.encode())).into_iter().collect();
    let txn = Txn::new().when(compare).and_then(ops).or_else([TxnOp::get(gate_key(), None)]);
    let mut kv = target.kv.clone();
    let r = target.call(kv.txn(txn)).await?;
    if !r.succeeded() {
        let found = r
            .op_responses()
            .into_iter()
            .find_map(|op| match op {
                etcd_client::TxnOpResponse::Get(g) => {
                    g.kvs().first().map(|kv| String::from_utf8_lossy(kv.value()).into_owned())
                }
                _ => None,
            })
            .unwrap_or_else(|| "no gate".into());
        return Err(TargetError::GateLost { found });
    }
    Ok(r.header().expect("etcd answers with a header").revision())
}
