//! The Kubernetes test harness against a real control plane on loopback (etcd,
//! kube-apiserver, kube-controller-manager): it starts, the operator's CRDs install, the
//! API server enforces their schemas and CEL rules, serves their printer columns and scale
//! subresource, and the operator's identity starts without permissions.

use std::fmt::Debug;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::authentication::v1::SelfSubjectReview;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use plait_operator::{PlaitBackup, PlaitBackupSpec, PlaitCluster, PlaitClusterSpec};
use plait_tests::kube::{self as harness, ControlPlane, OPERATOR_NAMESPACE, OPERATOR_USER, Options};
use plait_tests::wait_until;
use serde_json::{Value, json};

/// How long the controller manager may take to act on an object.
const CONTROLLER_TIMEOUT: Duration = Duration::from_secs(30);

/// A control plane with the CRDs installed and a namespace `ns` created.
async fn start_with_crds(ns: &str) -> (ControlPlane, Client) {
    let plane = ControlPlane::start().await.unwrap();
    let admin = plane.admin_client();
    harness::install_crds(&admin).await.unwrap();
    harness::create_namespace(&admin, ns).await.unwrap();
    (plane, admin)
}

/// A cluster spec from JSON; what is omitted takes the Rust defaults.
fn cluster_spec(spec: Value) -> PlaitClusterSpec {
    serde_json::from_value(spec).unwrap()
}

fn backup_spec(spec: Value) -> PlaitBackupSpec {
    serde_json::from_value(spec).unwrap()
}

/// Asserts that the API server refused a request as 422 Invalid with a message that
/// contains every one of `mentions` (the field, and the rule's message where there is one).
fn assert_invalid<T: Debug>(result: kube::Result<T>, mentions: &[&str]) {
    let status = match result {
        Err(kube::Error::Api(status)) => status,
        other => panic!("expected 422 Invalid mentioning {mentions:?}, got {other:?}"),
    };
    assert_eq!((status.code, status.reason.as_str()), (422, "Invalid"), "{status:?}");
    for mention in mentions {
        assert!(status.message.contains(mention), "{:?} does not mention {mention:?}", status.message);
    }
}

fn assert_forbidden<T: Debug>(result: kube::Result<T>) {
    match result {
        Err(kube::Error::Api(status)) => {
            assert_eq!((status.code, status.reason.as_str()), (403, "Forbidden"), "{status:?}");
            assert!(status.message.contains(OPERATOR_USER), "{:?}", status.message);
        }
        other => panic!("expected 403 Forbidden, got {other:?}"),
    }
}

/// The control plane starts within the harness's deadline, and the admin client can
/// create a namespace and read it back.
#[tokio::test]
async fn control_plane_starts_and_admin_creates_a_namespace() {
    let started = Instant::now();
    let plane = ControlPlane::start().await.unwrap();
    eprintln!("control plane ready in {:?} at {}", started.elapsed(), plane.url());
    assert!(plane.url().starts_with("https://127.0.0.1:"));
    assert!(plane.kubeconfig_path().is_file());

    let admin = plane.admin_client();
    harness::create_namespace(&admin, "first").await.unwrap();
    let namespace = Api::<Namespace>::all(admin).get("first").await.unwrap();
    assert_eq!(namespace.name_any(), "first");
}

/// Both CRDs apply with server-side apply and become Established; applying them again
/// (an upgrade with nothing changed) succeeds too.
#[tokio::test]
async fn crds_install_and_are_established() {
    let plane = ControlPlane::start().await.unwrap();
    let admin = plane.admin_client();
    let crds = harness::crds().unwrap();
    let names: Vec<String> = crds.iter().map(|c| c.name_any()).collect();
    assert_eq!(names, ["plaitclusters.plait.dev", "plaitbackups.plait.dev"]);

    harness::install_crds(&admin).await.unwrap();
    harness::install_crds(&admin).await.unwrap();
    for name in &names {
        let crd = Api::<CustomResourceDefinition>::all(admin.clone()).get(name).await.unwrap();
        let conditions = crd.status.unwrap().conditions.unwrap();
        assert!(conditions.iter().any(|c| c.type_ == "Established" && c.status == "True"), "{name}");
    }
    // Served: an empty list, not a 404.
    let clusters = Api::<PlaitCluster>::all(admin).list(&ListParams::default()).await.unwrap();
    assert!(clusters.items.is_empty());
}

/// The API server refuses cluster specs the schema forbids (replicas out of 1..=15, a
/// storage size that is not a quantity, a backup destination that is neither s3:// nor
/// file://, a setting the operator manages itself, a name that is not a DNS-1035 label of at
/// most 45 characters), each with 422 naming the field or the rule; and it
/// accepts a minimal one, filling in the defaults itself (replicas 3, storage 10Gi).
#[tokio::test]
async fn invalid_cluster_specs_are_refused_and_defaults_filled_in() {
    let (_plane, admin) = start_with_crds("validation").await;
    let clusters: Api<PlaitCluster> = Api::namespaced(admin.clone(), "validation");
    let post = PostParams::default();

    for (name, spec, mentions) in [
        ("zero", json!({ "replicas": 0 }), ["spec.replicas", "greater than or equal to 1"]),
        ("sixteen", json!({ "replicas": 16 }), ["spec.replicas", "less than or equal to 15"]),
        ("size", json!({ "storage": { "size": "ten gigs" } }), ["spec.storage.size", "ten gigs"]),
        ("ftp", json!({ "backup": { "destination": "ftp://x" } }), ["spec.backup.destination", "ftp://x"]),
        (
            "listen",
            json!({ "settings": { "PLAIT_LISTEN": "0.0.0.0:1" } }),
            ["spec.settings", "settings must be PLAIT_* variables the operator does not manage itself"],
        ),
    ] {
        let result = clusters.create(&post, &PlaitCluster::new(name, cluster_spec(spec))).await;
        assert_invalid(result, &mentions);
    }
    // The name becomes the Services' and, with suffixes, the pods', volumes' and Secrets'.
    for (name, mentions) in [
        ("1db", ["must be a DNS-1035 label"]),
        ("db.example", ["must be a DNS-1035 label"]),
        (&"d".repeat(46)[..], ["is at most 45 characters"]),
    ] {
        let result = clusters.create(&post, &PlaitCluster::new(name, cluster_spec(json!({})))).await;
        assert_invalid(result, &mentions);
    }
    clusters.create(&post, &PlaitCluster::new(&"d".repeat(45), cluster_spec(json!({})))).await.unwrap();
    // A setting the operator does not manage is fine.
    let tuned = PlaitCluster::new("tuned", cluster_spec(json!({ "settings": { "PLAIT_LOG": "debug" } })));
    clusters.create(&post, &tuned).await.unwrap();

    // Omitted fields: a typed object would carry the Rust defaults itself, so this one is
    // sent and read back as plain JSON to see what the API server filled in.
    let resource = ApiResource::erase::<PlaitCluster>(&());
    let dynamic: Api<DynamicObject> = Api::namespaced_with(admin, "validation", &resource);
    let minimal: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "plait.dev/v1alpha1",
        "kind": "PlaitCluster",
        "metadata": { "name": "minimal" },
        "spec": {},
    }))
    .unwrap();
    let created = dynamic.create(&post, &minimal).await.unwrap();
    assert_eq!(created.data["spec"]["replicas"], json!(3), "{:?}", created.data);
    assert_eq!(created.data["spec"]["storage"]["size"], json!("10Gi"), "{:?}", created.data);
    let stored = dynamic.get("minimal").await.unwrap();
    assert_eq!(stored.data["spec"], created.data["spec"]);
}

/// What is fixed at creation cannot change: the storage class, whether the cluster
/// bootstraps from a backup, and a backup's spec; the storage size may only grow (compared
/// as quantities, whatever the notation). Each refusal is a 422 with the rule's message.
/// Fields that may change (replicas, a larger size) still can.
#[tokio::test]
async fn fields_fixed_at_creation_cannot_change() {
    let (_plane, admin) = start_with_crds("fixed").await;
    let clusters: Api<PlaitCluster> = Api::namespaced(admin.clone(), "fixed");
    let post = PostParams::default();
    let patch = PatchParams::default();

    let spec = cluster_spec(json!({ "storage": { "size": "1Gi", "storageClassName": "fast" } }));
    clusters.create(&post, &PlaitCluster::new("c", spec)).await.unwrap();

    let change_class = json!({ "spec": { "storage": { "storageClassName": "slow" } } });
    let result = clusters.patch("c", &patch, &Patch::Merge(&change_class)).await;
    assert_invalid(result, &["spec.storage", "storage.storageClassName cannot change after creation"]);
    let drop_class = json!({ "spec": { "storage": { "storageClassName": null } } });
    let result = clusters.patch("c", &patch, &Patch::Merge(&drop_class)).await;
    assert_invalid(result, &["spec.storage", "storage.storageClassName cannot change after creation"]);
    // The size may grow, in any notation, but never shrink.
    for smaller in ["1023Mi", "1G", "512Mi"] {
        let shrink = json!({ "spec": { "storage": { "size": smaller } } });
        let result = clusters.patch("c", &patch, &Patch::Merge(&shrink)).await;
        assert_invalid(result, &["spec.storage.size", "storage.size may grow but never shrink"]);
    }
    let grown = json!({ "spec": { "storage": { "size": "1536Mi" } } });
    let grown = clusters.patch("c", &patch, &Patch::Merge(&grown)).await.unwrap();
    assert_eq!(grown.spec.storage.size, "1536Mi");
    let same = json!({ "spec": { "storage": { "size": "1.5Gi" } } });
    clusters.patch("c", &patch, &Patch::Merge(&same)).await.unwrap();

    let add_bootstrap = json!({ "spec": { "bootstrap": { "from": "s3://backups/c" } } });
    let result = clusters.patch("c", &patch, &Patch::Merge(&add_bootstrap)).await;
    assert_invalid(result, &["spec", "bootstrap is chosen at creation"]);

    let scaled =
        clusters.patch("c", &patch, &Patch::Merge(json!({ "spec": { "replicas": 5 } }))).await.unwrap();
    assert_eq!(scaled.spec.replicas, 5);
    assert_eq!(scaled.spec.storage.storage_class_name.as_deref(), Some("fast"));

    let backups: Api<PlaitBackup> = Api::namespaced(admin, "fixed");
    let backup = PlaitBackup::new("b", backup_spec(json!({ "cluster": "c", "kind": "Full" })));
    backups.create(&post, &backup).await.unwrap();
    let result = backups.patch("b", &patch, &Patch::Merge(json!({ "spec": { "kind": "Delta" } }))).await;
    assert_invalid(result, &["a backup's spec cannot change after creation"]);
    let result = backups.patch("b", &patch, &Patch::Merge(json!({ "spec": { "cluster": "other" } }))).await;
    assert_invalid(result, &["a backup's spec cannot change after creation"]);
    // Labels are not spec.
    let labelled = json!({ "metadata": { "labels": { "kept": "yes" } } });
    backups.patch("b", &patch, &Patch::Merge(&labelled)).await.unwrap();
}

/// The CRD carries the printer columns, and the API server renders them as `kubectl get`
/// asks for (a Table); the scale subresource reads and writes `spec.replicas`, and the
/// replica bound holds through it.
#[tokio::test]
async fn printer_columns_and_scale_subresource() {
    let (_plane, admin) = start_with_crds("columns").await;

    let crd =
        Api::<CustomResourceDefinition>::all(admin.clone()).get("plaitclusters.plait.dev").await.unwrap();
    let version = &crd.spec.versions[0];
    let columns: Vec<&str> =
        version.additional_printer_columns.iter().flatten().map(|c| c.name.as_str()).collect();
    assert_eq!(columns, ["Replicas", "Ready", "Phase", "Members", "Last Backup", "Age"]);
    let subresources = version.subresources.as_ref().unwrap();
    assert!(subresources.status.is_some() && subresources.scale.is_some());

    let clusters: Api<PlaitCluster> = Api::namespaced(admin.clone(), "columns");
    clusters.create(&PostParams::default(), &PlaitCluster::new("c", cluster_spec(json!({})))).await.unwrap();

    let table = http::Request::get("/apis/plait.dev/v1alpha1/namespaces/columns/plaitclusters")
        .header(http::header::ACCEPT, "application/json;as=Table;v=v1;g=meta.k8s.io")
        .body(Vec::new())
        .unwrap();
    let table: Value = serde_json::from_str(&admin.request_text(table).await.unwrap()).unwrap();
    assert_eq!(table["kind"], "Table", "{table}");
    let headers: Vec<&str> =
        table["columnDefinitions"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap()).collect();
    assert_eq!(headers, ["Name", "Replicas", "Ready", "Phase", "Members", "Last Backup", "Age"]);
    let cells = &table["rows"][0]["cells"];
    assert_eq!((&cells[0], &cells[1]), (&json!("c"), &json!(3)), "{table}");
    // Members is ready/total, from the status.
    let status = json!({ "status": { "membersReady": "2/3", "replicas": 3 } });
    clusters.patch_status("c", &PatchParams::default(), &Patch::Merge(&status)).await.unwrap();
    let table = http::Request::get("/apis/plait.dev/v1alpha1/namespaces/columns/plaitclusters")
        .header(http::header::ACCEPT, "application/json;as=Table;v=v1;g=meta.k8s.io")
        .body(Vec::new())
        .unwrap();
    let table: Value = serde_json::from_str(&admin.request_text(table).await.unwrap()).unwrap();
    assert_eq!(table["rows"][0]["cells"][4], json!("2/3"), "{table}");

    let scale = clusters.get_scale("c").await.unwrap();
    assert_eq!(scale.spec.unwrap().replicas, Some(3));
    let patch = PatchParams::default();
    let scale =
        clusters.patch_scale("c", &patch, &Patch::Merge(json!({ "spec": { "replicas": 5 } }))).await.unwrap();
    assert_eq!(scale.spec.unwrap().replicas, Some(5));
    assert_eq!(clusters.get("c").await.unwrap().spec.replicas, 5);

    let result =
        clusters.patch_scale("c", &patch, &Patch::Merge(json!({ "spec": { "replicas": 16 } }))).await;
    assert_invalid(result, &["spec.replicas"]);
    assert_eq!(clusters.get("c").await.unwrap().spec.replicas, 5);
}

/// The operator's token authenticates as its service account (with the service-account
/// groups), and before any RBAC binding it may not list PlaitClusters, cluster-wide or
/// in its own namespace: 403.
#[tokio::test]
async fn operator_identity_is_forbidden_before_any_binding() {
    let (plane, admin) = start_with_crds(OPERATOR_NAMESPACE).await;
    let operator = plane.operator_client();

    let review = Api::<SelfSubjectReview>::all(operator.clone())
        .create(&PostParams::default(), &SelfSubjectReview::default())
        .await
        .unwrap();
    let user = review.status.unwrap().user_info.unwrap();
    assert_eq!(user.username.as_deref(), Some(OPERATOR_USER));
    let groups = user.groups.unwrap_or_default();
    for group in ["system:serviceaccounts", "system:serviceaccounts:plait-system", "system:authenticated"] {
        assert!(groups.iter().any(|g| g == group), "{group} not in {groups:?}");
    }

    assert_forbidden(Api::<PlaitCluster>::all(operator.clone()).list(&ListParams::default()).await);
    assert_forbidden(
        Api::<PlaitCluster>::namespaced(operator, OPERATOR_NAMESPACE).list(&ListParams::default()).await,
    );
    // The admin may.
    Api::<PlaitCluster>::all(admin).list(&ListParams::default()).await.unwrap();
}

/// With the controller manager: a StatefulSet gets its Pods (left Pending: there is no
/// scheduler or kubelet), and deleting an owner garbage-collects what it owns.
#[tokio::test]
async fn controller_manager_creates_pods_and_collects_garbage() {
    let plane = ControlPlane::start_with(Options { controller_manager: true }).await.unwrap();
    let admin = plane.admin_client();
    harness::create_namespace(&admin, "controllers").await.unwrap();

    let statefulsets: Api<StatefulSet> = Api::namespaced(admin.clone(), "controllers");
    let statefulset: StatefulSet = serde_json::from_value(json!({
        "metadata": { "name": "web" },
        "spec": {
            "replicas": 2,
            // Both at once: ordered start would wait for web-0 to be ready, which it never is.
            "podManagementPolicy": "Parallel",
            "serviceName": "web",
            "selector": { "matchLabels": { "app": "web" } },
            "template": {
                "metadata": { "labels": { "app": "web" } },
                "spec": { "containers": [{ "name": "web", "image": "plait.invalid/web:1" }] },
            },
        },
    }))
    .unwrap();
    statefulsets.create(&PostParams::default(), &statefulset).await.unwrap();
    let pods: Api<Pod> = Api::namespaced(admin.clone(), "controllers");
    wait_until(CONTROLLER_TIMEOUT, "the StatefulSet's two Pods", || async {
        pods.list(&ListParams::default().labels("app=web")).await.is_ok_and(|l| l.items.len() == 2)
    })
    .await
    .unwrap();
    for pod in pods.list(&ListParams::default()).await.unwrap() {
        let owner = &pod.owner_references()[0];
        assert_eq!((owner.kind.as_str(), owner.name.as_str()), ("StatefulSet", "web"));
        assert_eq!(pod.status.and_then(|s| s.phase).as_deref(), Some("Pending"));
    }

    let config_maps: Api<ConfigMap> = Api::namespaced(admin, "controllers");
    let owner: ConfigMap = serde_json::from_value(json!({ "metadata": { "name": "owner" } })).unwrap();
    let owner = config_maps.create(&PostParams::default(), &owner).await.unwrap();
    let dependent: ConfigMap = serde_json::from_value(json!({
        "metadata": {
            "name": "dependent",
            "ownerReferences": [{ "apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": owner.uid().unwrap() }],
        },
    }))
    .unwrap();
    config_maps.create(&PostParams::default(), &dependent).await.unwrap();
    config_maps.delete("owner", &DeleteParams::background()).await.unwrap();
    wait_until(CONTROLLER_TIMEOUT, "the dependent ConfigMap to be collected", || async {
        matches!(config_maps.get_opt("dependent").await, Ok(None))
    })
    .await
    .unwrap();
}

/// Leader election against the real API server, with the operator's identity and only
/// the chart's leader-election Role: the first candidate takes the Lease and renews it;
/// another follows while it is renewed, takes it once it has not been for a lease
/// duration (one transition), and the old leader then follows; a released Lease is taken
/// at the next attempt; a leader whose Lease was taken stops leading at its next
/// renewal; of two candidates racing for a new Lease exactly one wins.
#[tokio::test]
async fn leader_election_hands_over_on_expiry_and_release() {
    use plait_operator::leader::{Attempt, Elector};
    let plane = ControlPlane::start().await.unwrap();
    let admin = plane.admin_client();
    harness::create_namespace(&admin, OPERATOR_NAMESPACE).await.unwrap();
    let role: k8s_openapi::api::rbac::v1::Role = serde_json::from_value(json!({
        "metadata": { "name": "leader-election", "namespace": OPERATOR_NAMESPACE },
        "rules": plait_operator::rbac::ELECTION_RULES.iter().map(|r| json!({
            "apiGroups": [r.group], "resources": r.resources, "verbs": r.verbs,
        })).collect::<Vec<_>>(),
    }))
    .unwrap();
    Api::<k8s_openapi::api::rbac::v1::Role>::namespaced(admin.clone(), OPERATOR_NAMESPACE)
        .create(&PostParams::default(), &role)
        .await
        .unwrap();
    let binding: k8s_openapi::api::rbac::v1::RoleBinding = serde_json::from_value(json!({
        "metadata": { "name": "leader-election", "namespace": OPERATOR_NAMESPACE },
        "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "leader-election" },
        "subjects": [{ "kind": "User", "name": OPERATOR_USER }],
    }))
    .unwrap();
    Api::<k8s_openapi::api::rbac::v1::RoleBinding>::namespaced(admin.clone(), OPERATOR_NAMESPACE)
        .create(&PostParams::default(), &binding)
        .await
        .unwrap();

    let elector = |name: &str, identity: &str| {
        let settings = plait_operator::LeaseSettings {
            namespace: OPERATOR_NAMESPACE.into(),
            name: name.into(),
            identity: identity.into(),
            lease_duration: Duration::from_secs(2),
            renew_deadline: Duration::from_millis(1500),
            retry_period: Duration::from_millis(200),
        };
        settings.validate().unwrap();
        Elector::new(plane.operator_client(), settings, std::sync::Arc::new(plait_operator::SystemClock))
    };
    let lease = |name: &'static str| {
        let admin = admin.clone();
        async move {
            Api::<k8s_openapi::api::coordination::v1::Lease>::namespaced(admin, OPERATOR_NAMESPACE)
                .get(name)
                .await
                .unwrap()
                .spec
                .unwrap()
        }
    };

    let (mut a, mut b) = (elector("lock", "a"), elector("lock", "b"));
    assert_eq!(a.try_acquire_or_renew().await.unwrap(), Attempt::Leading);
    assert_eq!(b.try_acquire_or_renew().await.unwrap(), Attempt::Following(Some("a".into())));
    let first = lease("lock").await;
    assert_eq!(a.try_acquire_or_renew().await.unwrap(), Attempt::Leading, "renewed");
    let renewed = lease("lock").await;
    assert_eq!(renewed.acquire_time, first.acquire_time, "a renewal keeps the acquire time");
    assert!(renewed.renew_time > first.renew_time);
    assert_eq!(b.try_acquire_or_renew().await.unwrap(), Attempt::Following(Some("a".into())));

    // a stops renewing: b takes over once a lease duration has passed on its own clock.
    let mut attempts = 0;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        attempts += 1;
        if b.try_acquire_or_renew().await.unwrap() == Attempt::Leading {
            break;
        }
        assert!(Instant::now() < deadline, "b never took the expired lease");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(attempts > 1, "b took a lease that was still being renewed");
    let taken = lease("lock").await;
    assert_eq!((taken.holder_identity.as_deref(), taken.lease_transitions), (Some("b"), Some(1)));
    assert_eq!(a.try_acquire_or_renew().await.unwrap(), Attempt::Following(Some("b".into())));

    // b releases: a takes it at its next attempt, without waiting out the duration.
    b.release().await.unwrap();
    assert_eq!(lease("lock").await.holder_identity, None);
    assert_eq!(a.try_acquire_or_renew().await.unwrap(), Attempt::Leading);
    assert_eq!(lease("lock").await.lease_transitions, Some(2));
    // Releasing a Lease one does not hold changes nothing.
    let before = lease("lock").await;
    b.release().await.unwrap();
    assert_eq!(lease("lock").await, before);

    // A leader that finds the Lease taken from it stops leading at its next renewal.
    let leases =
        Api::<k8s_openapi::api::coordination::v1::Lease>::namespaced(admin.clone(), OPERATOR_NAMESPACE);
    let intruder = json!({ "spec": { "holderIdentity": "intruder" } });
    leases.patch("lock", &PatchParams::default(), &Patch::Merge(&intruder)).await.unwrap();
    let lost = tokio::time::timeout(Duration::from_secs(10), a.keep()).await.expect("keep returns");
    assert!(lost.to_string().contains("taken by intruder"), "{lost}");

    // A race for a new Lease: exactly one winner.
    let (mut c, mut d) = (elector("race", "c"), elector("race", "d"));
    let (c_got, d_got) = tokio::join!(c.try_acquire_or_renew(), d.try_acquire_or_renew());
    let leaders = [c_got.unwrap(), d_got.unwrap()].iter().filter(|a| **a == Attempt::Leading).count();
    assert_eq!(leaders, 1, "two candidates both took one Lease");
}
