//! Every Kubernetes API call the operator makes, as RBAC rules: the one list the chart's
//! Role or ClusterRole must grant, no more. A chart test compares the rendered rules with
//! these, and the reconcile tests check every request the operator sends against them,
//! so a new call without a rule, or a rule no call needs, fails a test.

/// One RBAC rule: verbs on resources of one API group (`""` is the core group).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rule {
    pub group: &'static str,
    pub resources: &'static [&'static str],
    pub verbs: &'static [&'static str],
}

/// The rules of the operator in any scope (the chart's Role, and its ClusterRole). Each
/// says which calls need it.
pub const RULES: &[Rule] = &[
    // The controllers list and watch both kinds; a pass reads its object fresh; scheduled
    // backups are created, and deleted beyond their retention.
    Rule { group: "plait.dev", resources: &["plaitclusters"], verbs: &["get", "list", "watch"] },
    Rule {
        group: "plait.dev",
        resources: &["plaitbackups"],
        verbs: &["get", "list", "watch", "create", "delete"],
    },
    // Status is written by server-side apply.
    Rule {
        group: "plait.dev",
        resources: &["plaitclusters/status", "plaitbackups/status"],
        verbs: &["patch"],
    },
    // Owner references with blockOwnerDeletion on what a cluster owns.
    Rule { group: "plait.dev", resources: &["plaitclusters/finalizers"], verbs: &["update"] },
    // Applied by server-side apply (a `patch`, which also needs `create` when it makes the
    // object), read each pass, and watched as owned objects.
    Rule { group: "apps", resources: &["statefulsets"], verbs: &["get", "list", "watch", "create", "patch"] },
    Rule { group: "", resources: &["services"], verbs: &["list", "watch", "create", "patch"] },
    Rule { group: "", resources: &["configmaps"], verbs: &["create", "patch"] },
    Rule { group: "policy", resources: &["poddisruptionbudgets"], verbs: &["create", "patch"] },
    // Read by name; created once (a generated writer key, the cluster CA); applied
    // (certificates, the token, the auth file). Never listed, watched or deleted.
    Rule { group: "", resources: &["secrets"], verbs: &["get", "create", "patch"] },
    // Applied, and deleted when a cluster turns its policy off.
    Rule {
        group: "networking.k8s.io",
        resources: &["networkpolicies"],
        verbs: &["create", "patch", "delete"],
    },
    // Applied per replica with `tls: CertManager`.
    Rule { group: "cert-manager.io", resources: &["certificates"], verbs: &["create", "patch"] },
    // Listed by the cluster's selector, for the revision each pod runs (a roll).
    Rule { group: "", resources: &["pods"], verbs: &["list"] },
    // Read and grown by name; the StatefulSet makes and deletes them.
    Rule { group: "", resources: &["persistentvolumeclaims"], verbs: &["get", "patch"] },
    // What the operator did, and a repeat folded into the same event.
    Rule { group: "events.k8s.io", resources: &["events"], verbs: &["create", "patch"] },
];

/// The rules only a cluster-wide install has: StorageClasses are cluster-scoped, read to
/// tell before growing a volume whether its class allows expansion.
pub const CLUSTER_RULES: &[Rule] =
    &[Rule { group: "storage.k8s.io", resources: &["storageclasses"], verbs: &["get", "list"] }];

/// The rules of leader election, granted by a Role in the operator's own namespace (the
/// Lease lives there): read the Lease, create it the first time, renew and take it over
/// by replacing it at the version read.
pub const ELECTION_RULES: &[Rule] =
    &[Rule { group: "coordination.k8s.io", resources: &["leases"], verbs: &["get", "create", "update"] }];

/// Whether the rules grant `verb` on `resource` (`name/subresource` for a subresource)
/// of `group`.
pub fn permits(rules: &[Rule], group: &str, resource: &str, verb: &str) -> bool {
    rules.iter().any(|r| r.group == group && r.resources.contains(&resource) && r.verbs.contains(&verb))
}
