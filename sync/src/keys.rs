//! kube-apiserver storage paths.
//!
//! Built-in resources live at `/registry/<resource>/<namespace>/<name>` (namespaced) or
//! `/registry/<resource>/<name>` (cluster-scoped); CRDs and aggregated groups at
//! `/registry/<group>/<resource>/…`, where the group always contains a dot. Object names never
//! contain `/`, so the number of segments tells namespaced from cluster-scoped. Anything else
//! (`compact_rev_key`, `/registry/masterleases/<ip>`, foreign prefixes) is unparsed and left to
//! prefix rules.

/// The prefix kube-apiserver stores objects under (its `--etcd-prefix` default).
pub const REGISTRY: &str = "/registry/";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyInfo<'a> {
    /// API group; "" for built-in resources stored without a group segment.
    pub group: &'a str,
    pub resource: &'a str,
    /// None for cluster-scoped objects.
    pub namespace: Option<&'a str>,
    pub name: &'a str,
}

/// Parses a storage key; None when it is not an object path.
pub fn parse(key: &[u8]) -> Option<KeyInfo<'_>> {
    let key = std::str::from_utf8(key).ok()?;
    let rest = key.strip_prefix(REGISTRY)?;
    let parts: Vec<&str> = rest.split('/').collect();
    if parts.iter().any(|p| p.is_empty()) {
        return None;
    }
    let (group, parts) = if parts[0].contains('.') { (parts[0], &parts[1..]) } else { ("", &parts[..]) };
    match parts {
        [resource, name] => Some(KeyInfo { group, resource, namespace: None, name }),
        [resource, namespace, name] => Some(KeyInfo { group, resource, namespace: Some(namespace), name }),
        _ => None,
    }
}

impl KeyInfo<'_> {
    /// The storage key of another object of the same group and scope (for owner lookups).
    pub fn sibling(group: &str, resource: &str, namespace: Option<&str>, name: &str) -> String {
        let mut k = String::from(REGISTRY);
        if !group.is_empty() {
            k.push_str(group);
            k.push('/');
        }
        k.push_str(resource);
        k.push('/');
        if let Some(ns) = namespace {
            k.push_str(ns);
            k.push('/');
        }
        k.push_str(name);
        k
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_storage_layouts() {
        fn p(k: &str) -> Option<KeyInfo<'_>> {
            parse(k.as_bytes())
        }
        assert_eq!(
            p("/registry/secrets/cpaas-system/global-ca"),
            Some(KeyInfo { group: "", resource: "secrets", namespace: Some("cpaas-system"), name: "global-ca" })
        );
        assert_eq!(
            p("/registry/namespaces/default"),
            Some(KeyInfo { group: "", resource: "namespaces", namespace: None, name: "default" })
        );
        assert_eq!(
            p("/registry/cluster.x-k8s.io/machines/cpaas-system/m-1"),
            Some(KeyInfo {
                group: "cluster.x-k8s.io",
                resource: "machines",
                namespace: Some("cpaas-system"),
                name: "m-1"
            })
        );
        assert_eq!(
            p("/registry/apiregistration.k8s.io/apiservices/v1.apps"),
            Some(KeyInfo {
                group: "apiregistration.k8s.io",
                resource: "apiservices",
                namespace: None,
                name: "v1.apps"
            })
        );
        // A dotted name in a built-in cluster-scoped path stays a name.
        assert_eq!(
            p("/registry/minions/node-1.example"),
            Some(KeyInfo { group: "", resource: "minions", namespace: None, name: "node-1.example" })
        );
        assert_eq!(p("compact_rev_key"), None);
        assert_eq!(p("/registry/ranges"), None);
        assert_eq!(p("/registry/a/b/c/d"), None);
        assert_eq!(p("/registry/secrets//x"), None);
        assert_eq!(p("/other/secrets/ns/x"), None);
    }

    #[test]
    fn sibling_builds_keys_parse_accepts() {
        let k = KeyInfo::sibling("cluster.x-k8s.io", "machinesets", Some("ns"), "ms");
        assert_eq!(k, "/registry/cluster.x-k8s.io/machinesets/ns/ms");
        assert_eq!(parse(k.as_bytes()).map(|i| i.resource), Some("machinesets"));
        assert_eq!(KeyInfo::sibling("", "namespaces", None, "x"), "/registry/namespaces/x");
    }
}
