//! What the checkers read of the two clusters' stored state, before and after a run — the same
//! for both backends: a simulated etcd's dump or a real server's range read, decoded by that
//! side's API server model.

use std::collections::BTreeMap;

use sim::k8s::ApiServer;
use sim::k8s::kind;
use sim::platform::{PRIMARY, STANDBY};
use sync::engine::Settings;

use crate::drill::Diff;
use crate::failover_sim::{PROGRESS_KEY, decode_progress};
use crate::runner::Ident;

/// One side's keys and values at a moment, with its API server to decode them.
pub struct SideState<'a> {
    pub name: &'a str,
    pub kvs: BTreeMap<Vec<u8>, Vec<u8>>,
    pub api: &'a ApiServer,
}

impl<'a> SideState<'a> {
    pub fn new(name: &'a str, kvs: impl IntoIterator<Item = (Vec<u8>, Vec<u8>)>, api: &'a ApiServer) -> Self {
        SideState { name, kvs: kvs.into_iter().collect(), api }
    }

    fn ident(&self, key: &str) -> Option<Ident> {
        let v = self.kvs.get(key.as_bytes())?;
        let o = self.api.decode(key, v).ok()?;
        Some(Ident { uid: o.uid().to_string(), deleting: o.deleting() })
    }

    fn keys(&self, prefix: &str) -> impl Iterator<Item = String> + '_ {
        let pre = prefix.as_bytes().to_vec();
        self.kvs.range(pre.clone()..).take_while(move |(k, _)| k.starts_with(&pre)).map(|(k, _)| name(k))
    }
}

fn name(k: &[u8]) -> String {
    String::from_utf8_lossy(k).into_owned()
}

fn is_cluster_secret(key: &str) -> bool {
    let name = key.rsplit('/').next().unwrap_or_default();
    !sim::topology::is_global_name(name)
        && sim::k8s::capi::CLUSTER_SECRET_SUFFIXES.iter().any(|s| name.ends_with(&format!("-{s}")))
}

/// The objects the state checkers follow, as they were before the run.
#[derive(Debug, Default)]
pub struct Before {
    /// The standby's own objects (all of them start as its globals) and the primary's
    /// `global` / `global-*` ones: (before, after — None: gone).
    pub standby_globals: BTreeMap<String, (Ident, Option<Ident>)>,
    pub primary_globals: BTreeMap<String, (Ident, Option<Ident>)>,
    /// Every workload cluster Secret (`<cluster>-ca`, …) on the primary.
    pub cluster_secrets_before: BTreeMap<String, Ident>,
}

pub fn before(primary: &SideState, standby: &SideState) -> Before {
    let mut b = Before::default();
    for key in standby.keys("/registry/") {
        if let Some(id) = standby.ident(&key) {
            b.standby_globals.insert(key, (id, None));
        }
    }
    for key in primary.keys("/registry/") {
        if sim::topology::is_global_name(key.rsplit('/').next().unwrap_or_default())
            && let Some(id) = primary.ident(&key)
        {
            b.primary_globals.insert(key, (id, None));
        }
    }
    for key in primary.keys(&kind::SECRET.prefix()).filter(|k| is_cluster_secret(k)) {
        if let Some(id) = primary.ident(&key) {
            b.cluster_secrets_before.insert(key, id);
        }
    }
    b
}

/// The end of a run as the checkers read it.
#[derive(Debug)]
pub struct After {
    pub before: Before,
    /// The cluster Secrets of `before` still present, per (side, key).
    pub cluster_secrets_after: BTreeMap<(String, String), Ident>,
    /// Standby Secrets its own API server cannot open.
    pub unreadable_on_standby: Vec<String>,
    /// The offline comparison under `settings`' rules, and how many primary keys they include.
    pub diff: Diff,
    pub keys_in_scope: usize,
    /// The sync's gate on the standby (None: none, or not a gate).
    pub standby_gate: Option<sync::target::Gate>,
    /// The progress the orchestrator persisted: a failover's on the standby, a failback's (its
    /// failover back) on the primary.
    pub failover_progress: Option<failover::step::Progress>,
    pub failback_progress: Option<failover::step::Progress>,
}

pub fn after(mut before: Before, primary: &SideState, standby: &SideState, settings: &Settings) -> After {
    assert_eq!((primary.name, standby.name), (PRIMARY, STANDBY), "sides in their roles");
    for (key, (_, after)) in before.standby_globals.iter_mut() {
        *after = standby.ident(key);
    }
    for (key, (_, after)) in before.primary_globals.iter_mut() {
        *after = primary.ident(key);
    }
    let mut cluster_secrets_after = BTreeMap::new();
    for key in before.cluster_secrets_before.keys() {
        for side in [primary, standby] {
            if let Some(id) = side.ident(key) {
                cluster_secrets_after.insert((side.name.to_string(), key.clone()), id);
            }
        }
    }
    let unreadable_on_standby = standby
        .keys(&kind::SECRET.prefix())
        .filter(|k| standby.kvs.get(k.as_bytes()).is_some_and(|v| standby.api.decode(k, v).is_err()))
        .collect();
    let keys_in_scope = primary.kvs.keys().filter(|k| settings.rules.includes(k)).count();
    let diff = diff(&primary.kvs, &standby.kvs, settings);
    let standby_gate =
        standby.kvs.get(sync::target::gate_key().as_bytes()).and_then(|v| sync::target::Gate::decode(v).ok());
    let progress = |s: &SideState| s.kvs.get(PROGRESS_KEY.as_bytes()).map(|v| decode_progress(v));
    let (failover_progress, failback_progress) = (progress(standby), progress(primary));
    After {
        before,
        cluster_secrets_after,
        unreadable_on_standby,
        diff,
        keys_in_scope,
        standby_gate,
        failover_progress,
        failback_progress,
    }
}

/// How the standby's copy differs from the primary by the sync's own rules (an offline
/// comparison of final states, not the sync's `/check`).
pub fn diff(primary: &BTreeMap<Vec<u8>, Vec<u8>>, standby: &BTreeMap<Vec<u8>, Vec<u8>>, settings: &Settings) -> Diff {
    let mut d = Diff::default();
    for (k, v) in primary.iter().filter(|(k, _)| settings.rules.includes(k)) {
        match standby.get(k) {
            None => d.missed.push(name(k)),
            Some(t) if !settings.boundary.same(v, t) => d.stale.push(name(k)),
            Some(_) => {}
        }
    }
    for k in standby.keys().filter(|k| settings.rules.includes(k) && !primary.contains_key(*k)) {
        d.surplus.push(name(k));
    }
    d
}
