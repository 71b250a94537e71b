//! The shared IaaS: one inventory of VMs that both global clusters' providers act on — the
//! physical truth. Every deletion is recorded with which cluster, which controller and why;
//! the invariant checkers read [`Iaas::deletions`] and the trace.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use serde::Serialize;
use serde_json::{Value, json};

use crate::trace::Trace;

/// VMs one inventory holds at most.
const VMS_MAX: usize = 100_000;

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Vm {
    pub id: String,
    /// The workload cluster the VM serves (or the global cluster's own name).
    pub cluster: String,
    /// The global cluster whose provider created it.
    pub created_by: String,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct VmDeletion {
    pub t_ms: u64,
    pub vm: Vm,
    /// The global cluster whose provider deleted it.
    pub by_cluster: String,
    pub controller: String,
    pub action: Destruction,
    pub why: Value,
}

/// How a VM or host was destroyed.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Destruction {
    /// A VM deleted through the IaaS API.
    Delete,
    /// A bare-metal host wiped by a reset plan written to its plan Secret.
    Reset,
}

impl Destruction {
    /// Its name in the trace (`iaas.<name>`) and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Destruction::Delete => "delete",
            Destruction::Reset => "reset",
        }
    }
}

#[derive(Default)]
struct Inner {
    vms: BTreeMap<String, Vm>,
    deletions: Vec<VmDeletion>,
}

#[derive(Clone)]
pub struct Iaas {
    inner: Arc<Mutex<Inner>>,
    trace: Trace,
}

impl Iaas {
    pub fn new(trace: Trace) -> Self {
        Iaas { inner: Arc::default(), trace }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().expect("iaas lock")
    }

    /// Creates a VM; false if the id exists.
    pub fn create(&self, vm: Vm) -> bool {
        let mut inner = self.lock();
        if inner.vms.contains_key(&vm.id) {
            return false;
        }
        assert!(inner.vms.len() < VMS_MAX, "the IaaS outgrew VMS_MAX");
        self.trace.record(&vm.created_by, "iaas.create", json!({"vm": vm.id, "cluster": vm.cluster}));
        inner.vms.insert(vm.id.clone(), vm);
        true
    }

    /// Deletes a VM; false if there was none.
    pub fn delete(&self, id: &str, by_cluster: &str, controller: &str, why: Value) -> bool {
        self.destroy(id, by_cluster, controller, Destruction::Delete, why)
    }

    /// Resets a bare-metal host (a reset plan was written for it): its installation is gone, so
    /// it leaves the inventory like a deleted VM; false if there was none.
    pub fn reset(&self, id: &str, by_cluster: &str, controller: &str, why: Value) -> bool {
        self.destroy(id, by_cluster, controller, Destruction::Reset, why)
    }

    fn destroy(&self, id: &str, by_cluster: &str, controller: &str, action: Destruction, why: Value) -> bool {
        let mut inner = self.lock();
        let Some(vm) = inner.vms.remove(id) else { return false };
        let t_ms = crate::clock::elapsed().map(|d| d.as_millis() as u64).unwrap_or(0);
        self.trace.record(
            by_cluster,
            &format!("iaas.{}", action.name()),
            json!({"vm": id, "cluster": vm.cluster, "controller": controller, "why": why}),
        );
        inner.deletions.push(VmDeletion {
            t_ms,
            vm,
            by_cluster: by_cluster.into(),
            controller: controller.into(),
            action,
            why,
        });
        true
    }

    pub fn exists(&self, id: &str) -> bool {
        self.lock().vms.contains_key(id)
    }

    pub fn vms(&self) -> Vec<Vm> {
        self.lock().vms.values().cloned().collect()
    }

    pub fn deletions(&self) -> Vec<VmDeletion> {
        self.lock().deletions.clone()
    }
}
