//! The kinds the simulated control plane stores, and where kube-apiserver keeps them in etcd.
//!
//! Built-in kinds live at `/registry/<resource>/<namespace>/<name>` (no group segment, even for
//! `rbac.authorization.k8s.io` and `coordination.k8s.io`), custom resources at
//! `/registry/<group>/<resource>/<namespace>/<name>`. Built-ins are stored as protobuf with the
//! `k8s\0` magic, custom resources as JSON — as kube-apiserver does.

#[derive(Debug, PartialEq, Eq)]
pub struct Kind {
    pub kind: &'static str,
    pub group: &'static str,
    pub version: &'static str,
    /// Plural resource name, the key's resource segment.
    pub resource: &'static str,
    /// Built-in kinds are stored as protobuf and keyed without their group.
    pub builtin: bool,
}

impl Kind {
    pub fn api_version(&self) -> String {
        if self.group.is_empty() { self.version.to_string() } else { format!("{}/{}", self.group, self.version) }
    }

    /// Every object of this kind lives under this prefix.
    pub fn prefix(&self) -> String {
        if self.builtin {
            format!("/registry/{}/", self.resource)
        } else {
            format!("/registry/{}/{}/", self.group, self.resource)
        }
    }

    /// The storage key of one (namespaced) object.
    pub fn key(&self, namespace: &str, name: &str) -> String {
        format!("{}{namespace}/{name}", self.prefix())
    }

    /// Looks a kind up by its `kind` (owner references carry kind and apiVersion).
    pub fn by_name(kind: &str) -> Option<&'static Kind> {
        ALL.iter().copied().find(|k| k.kind == kind)
    }

    /// The kind a storage key belongs to.
    pub fn of_key(key: &str) -> Option<&'static Kind> {
        ALL.iter().copied().find(|k| key.starts_with(&k.prefix()))
    }
}

const CAPI: &str = "cluster.x-k8s.io";
const CONTROLPLANE: &str = "controlplane.cluster.x-k8s.io";
const BOOTSTRAP: &str = "bootstrap.cluster.x-k8s.io";
const INFRA: &str = "infrastructure.cluster.x-k8s.io";
const ELEMENTAL: &str = "elemental.cattle.io";

macro_rules! crd {
    ($name:ident, $kind:literal, $group:expr, $version:literal, $resource:literal) => {
        pub static $name: Kind =
            Kind { kind: $kind, group: $group, version: $version, resource: $resource, builtin: false };
    };
}
macro_rules! builtin {
    ($name:ident, $kind:literal, $group:literal, $resource:literal) => {
        pub static $name: Kind = Kind { kind: $kind, group: $group, version: "v1", resource: $resource, builtin: true };
    };
}

crd!(CLUSTER, "Cluster", CAPI, "v1beta1", "clusters");
crd!(MACHINE_DEPLOYMENT, "MachineDeployment", CAPI, "v1beta1", "machinedeployments");
crd!(MACHINE_SET, "MachineSet", CAPI, "v1beta1", "machinesets");
crd!(MACHINE, "Machine", CAPI, "v1beta1", "machines");
crd!(KUBEADM_CONTROL_PLANE, "KubeadmControlPlane", CONTROLPLANE, "v1beta1", "kubeadmcontrolplanes");
crd!(KUBEADM_CONFIG, "KubeadmConfig", BOOTSTRAP, "v1beta1", "kubeadmconfigs");
crd!(KUBEADM_CONFIG_TEMPLATE, "KubeadmConfigTemplate", BOOTSTRAP, "v1beta1", "kubeadmconfigtemplates");
crd!(DCS_CLUSTER, "DCSCluster", INFRA, "v1beta1", "dcsclusters");
crd!(DCS_MACHINE, "DCSMachine", INFRA, "v1beta1", "dcsmachines");
crd!(DCS_MACHINE_TEMPLATE, "DCSMachineTemplate", INFRA, "v1beta1", "dcsmachinetemplates");
crd!(BAREMETAL_MACHINE, "BaremetalMachine", INFRA, "v1beta1", "baremetalmachines");
crd!(MACHINE_INVENTORY, "MachineInventory", ELEMENTAL, "v1beta1", "machineinventories");
crd!(MACHINE_REGISTRATION, "MachineRegistration", ELEMENTAL, "v1beta1", "machineregistrations");
crd!(SEED_IMAGE, "SeedImage", ELEMENTAL, "v1beta1", "seedimages");
builtin!(SECRET, "Secret", "", "secrets");
builtin!(SERVICE_ACCOUNT, "ServiceAccount", "", "serviceaccounts");
builtin!(CONFIG_MAP, "ConfigMap", "", "configmaps");
builtin!(ROLE, "Role", "rbac.authorization.k8s.io", "roles");
builtin!(ROLE_BINDING, "RoleBinding", "rbac.authorization.k8s.io", "rolebindings");
builtin!(LEASE, "Lease", "coordination.k8s.io", "leases");
builtin!(DEPLOYMENT, "Deployment", "apps", "deployments");

/// Every kind the model knows, in the order the garbage collector starts its informers.
pub static ALL: &[&Kind] = &[
    &CLUSTER,
    &MACHINE_DEPLOYMENT,
    &MACHINE_SET,
    &MACHINE,
    &KUBEADM_CONTROL_PLANE,
    &KUBEADM_CONFIG,
    &KUBEADM_CONFIG_TEMPLATE,
    &DCS_CLUSTER,
    &DCS_MACHINE,
    &DCS_MACHINE_TEMPLATE,
    &BAREMETAL_MACHINE,
    &MACHINE_INVENTORY,
    &MACHINE_REGISTRATION,
    &SEED_IMAGE,
    &SECRET,
    &SERVICE_ACCOUNT,
    &CONFIG_MAP,
    &ROLE,
    &ROLE_BINDING,
    &LEASE,
    &DEPLOYMENT,
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_follow_the_apiserver_layout() {
        assert_eq!(MACHINE.key("ns", "m"), "/registry/cluster.x-k8s.io/machines/ns/m");
        assert_eq!(SECRET.key("ns", "s"), "/registry/secrets/ns/s");
        assert_eq!(ROLE.key("ns", "r"), "/registry/roles/ns/r");
        assert_eq!(Kind::of_key("/registry/cluster.x-k8s.io/machinesets/ns/x"), Some(&MACHINE_SET));
        // "machines/" must not match "machinesets/" or the reverse.
        assert_eq!(Kind::of_key("/registry/cluster.x-k8s.io/machines/ns/x"), Some(&MACHINE));
        assert_eq!(MACHINE.api_version(), "cluster.x-k8s.io/v1beta1");
        assert_eq!(SECRET.api_version(), "v1");
    }

    #[test]
    fn prefixes_are_disjoint() {
        for a in ALL {
            for b in ALL {
                if a != b {
                    assert!(!a.prefix().starts_with(&b.prefix()), "{} under {}", a.kind, b.kind);
                }
            }
        }
    }
}
