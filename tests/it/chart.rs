//! The Helm chart and the manifests generated from it: `helm lint`, what the chart
//! renders (security contexts, least-privilege RBAC, the optional ServiceMonitor, the
//! one-namespace mode), values the schema refuses, drift of the committed CRDs and
//! `install.yaml`, the example manifests against the CRD types, everything applied to a
//! real API server, and the kind end-to-end run (ignored: it needs docker and kind).
//!
//! helm comes from `PLAIT_HELM` or `PATH`; `tests/kube/install-helm.sh` installs it (and
//! `scripts/test-prereqs.sh` calls it). Without helm these tests fail rather than skip.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use k8s_openapi::api::authorization::v1::SelfSubjectAccessReview;
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use kube::core::GroupVersionKind;
use kube::discovery::Scope;
use serde::Deserialize;
use serde_json::{Value, json};

/// The chart, relative to the repository root.
const CHART: &str = "charts/plait-operator";
/// The release name and namespace `manifests/install.yaml` is rendered with.
const RELEASE: &str = "plait-operator";
const NAMESPACE: &str = "plait-system";
/// What to run when a generated file drifts.
const REGENERATE: &str = "run scripts/render-manifests.sh and commit the result";

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ has a parent").to_path_buf()
}

/// The helm binary: `PLAIT_HELM`, else the first `helm` on `PATH`.
fn helm() -> PathBuf {
    if let Some(helm) = std::env::var_os("PLAIT_HELM").filter(|helm| !helm.is_empty()) {
        let helm = PathBuf::from(helm);
        assert!(
            helm.is_file(),
            "PLAIT_HELM={} is not a file; tests/kube/install-helm.sh installs helm",
            helm.display()
        );
        return helm;
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join("helm"))
        .find(|candidate| candidate.is_file())
        .unwrap_or_else(|| {
            panic!(
                "helm is not on PATH and PLAIT_HELM is not set: the chart tests need it. Install it with \
                 tests/kube/install-helm.sh (it prints the directory to add to PATH); \
                 scripts/test-prereqs.sh does this."
            )
        })
}

fn run_helm(args: &[&str]) -> Output {
    Command::new(helm()).current_dir(repo_root()).args(args).output().expect("helm runs")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// `helm template` of the chart with `extra` arguments; panics unless it succeeds.
fn template(extra: &[&str]) -> Vec<Value> {
    let mut args = vec!["template", RELEASE, CHART, "--namespace", NAMESPACE];
    args.extend_from_slice(extra);
    let out = run_helm(&args);
    assert!(out.status.success(), "helm {args:?} failed: {}", stderr(&out));
    documents(&String::from_utf8(out.stdout).expect("helm prints UTF-8"))
}

/// The non-empty documents of a multi-document YAML stream.
fn documents(yaml: &str) -> Vec<Value> {
    serde_yaml::Deserializer::from_str(yaml)
        .map(|document| Value::deserialize(document).expect("a YAML document"))
        .filter(|document| !document.is_null())
        .collect()
}

fn of_kind<'a>(documents: &'a [Value], kind: &str) -> Vec<&'a Value> {
    documents.iter().filter(|d| d["kind"] == kind).collect()
}

fn only<'a>(documents: &'a [Value], kind: &str) -> &'a Value {
    let found = of_kind(documents, kind);
    assert_eq!(found.len(), 1, "expected exactly one {kind}, found {}", found.len());
    found[0]
}

fn kinds(documents: &[Value]) -> Vec<&str> {
    documents.iter().map(|d| d["kind"].as_str().unwrap_or("?")).collect()
}

fn read(relative: &str) -> String {
    let path = repo_root().join(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The chart's appVersion, which the default image tags follow.
fn app_version() -> String {
    let chart: Value = serde_yaml::from_str(&read(&format!("{CHART}/Chart.yaml"))).unwrap();
    chart["appVersion"].as_str().expect("Chart.yaml has an appVersion").to_owned()
}

/// The operator's permissions, exactly: what it reconciles into and reads, nothing more.
fn expected_rules() -> Value {
    rules_json(plait_operator::rbac::RULES)
}

/// Rules as the chart writes them.
fn rules_json(rules: &[plait_operator::rbac::Rule]) -> Value {
    rules
        .iter()
        .map(|r| json!({ "apiGroups": [r.group], "resources": r.resources, "verbs": r.verbs }))
        .collect()
}

/// The verbs the rules grant on one resource of one API group.
fn verbs_on<'a>(rules: &'a Value, group: &str, resource: &str) -> Vec<&'a str> {
    rules
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["apiGroups"].as_array().unwrap().iter().any(|g| g == group))
        .filter(|r| r["resources"].as_array().unwrap().iter().any(|x| x == resource))
        .flat_map(|r| r["verbs"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()))
        .collect()
}

/// The chart passes `helm lint --strict` with its defaults and with the optional parts
/// switched on (ServiceMonitor, one watched namespace, an existing ServiceAccount).
#[test]
fn chart_lints_strictly() {
    for extra in [
        &[][..],
        &[
            "--set",
            "serviceMonitor.enabled=true",
            "--set",
            "replicaPodMonitor.enabled=true",
            "--set",
            "watchNamespace=plait-apps",
        ],
        &["--set", "serviceAccount.create=false", "--set", "serviceAccount.name=existing"],
    ] {
        let mut args = vec!["lint", "--strict", CHART];
        args.extend_from_slice(extra);
        let out = run_helm(&args);
        assert!(
            out.status.success(),
            "helm {args:?} failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            stderr(&out)
        );
    }
}

/// With default values the Deployment runs two operators under leader election (a
/// rolling update that starts a new pod before stopping an old one, the pods preferring
/// different nodes) as a non-root user with a read-only root file
/// system, no capabilities and no privilege escalation, wired to its settings (watching
/// every namespace: no `PLAIT_OPERATOR_NAMESPACE`), probes and ServiceAccount; the
/// images default to the chart's appVersion.
#[test]
fn deployment_is_locked_down() {
    let documents = template(&[]);
    let deployment = only(&documents, "Deployment");
    assert_eq!(deployment["metadata"]["namespace"], NAMESPACE);
    assert_eq!(deployment["spec"]["replicas"], 2);
    assert_eq!(
        deployment["spec"]["strategy"],
        json!({ "type": "RollingUpdate", "rollingUpdate": { "maxSurge": 1, "maxUnavailable": 0 } })
    );
    let pod = &deployment["spec"]["template"]["spec"];
    let spread = &pod["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"][0];
    assert_eq!(spread["podAffinityTerm"]["topologyKey"], "kubernetes.io/hostname");
    assert_eq!(
        spread["podAffinityTerm"]["labelSelector"]["matchLabels"],
        deployment["spec"]["selector"]["matchLabels"]
    );

    let pod_security = &pod["securityContext"];
    assert_eq!(pod_security["runAsNonRoot"], true, "{pod_security}");
    assert_eq!(pod_security["runAsUser"], 65532, "{pod_security}");
    assert_eq!(pod_security["runAsGroup"], 65532, "{pod_security}");
    assert_eq!(pod_security["fsGroup"], 65532, "{pod_security}");
    assert_eq!(pod_security["seccompProfile"]["type"], "RuntimeDefault", "{pod_security}");
    assert_eq!(pod["automountServiceAccountToken"], true, "the operator needs the API");

    let containers = pod["containers"].as_array().unwrap();
    assert_eq!(containers.len(), 1);
    let container = &containers[0];
    let security = &container["securityContext"];
    assert_eq!(security["allowPrivilegeEscalation"], false, "{security}");
    assert_eq!(security["readOnlyRootFilesystem"], true, "{security}");
    assert_eq!(security["capabilities"]["drop"], json!(["ALL"]), "{security}");
    assert!(security["capabilities"]["add"].is_null(), "{security}");
    assert!(security["privileged"].is_null() || security["privileged"] == false, "{security}");

    let version = app_version();
    assert_eq!(container["image"], format!("plait/plait-operator:{version}"));
    assert_eq!(container["imagePullPolicy"], "IfNotPresent");
    assert_eq!(container["args"], json!(["run"]));
    let env: Vec<(&str, &str)> = container["env"]
        .as_array()
        .unwrap()
        .iter()
        // POD_NAME and POD_NAMESPACE come from the downward API.
        .filter(|e| e["value"].is_string())
        .map(|e| (e["name"].as_str().unwrap(), e["value"].as_str().unwrap()))
        .collect();
    let downward: Vec<&str> = container["env"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["valueFrom"]["fieldRef"].is_object())
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert_eq!(downward, ["POD_NAME", "POD_NAMESPACE"]);
    let replica_image = format!("plait/plaitd:{version}");
    assert_eq!(
        env,
        [
            ("PLAIT_OPERATOR_REPLICA_IMAGE", replica_image.as_str()),
            ("PLAIT_OPERATOR_LISTEN", "0.0.0.0:8080"),
            ("PLAIT_OPERATOR_LOG", "info,kube=warn"),
            ("PLAIT_OPERATOR_LOG_JSON", "false"),
            ("PLAIT_OPERATOR_LEADER_ELECT", "true"),
            ("PLAIT_OPERATOR_LEASE_NAME", RELEASE),
            ("PLAIT_OPERATOR_LEASE_DURATION_SECONDS", "15"),
            ("PLAIT_OPERATOR_RENEW_DEADLINE_SECONDS", "10"),
            ("PLAIT_OPERATOR_RETRY_PERIOD_SECONDS", "2"),
        ]
    );
    assert_eq!(container["ports"], json!([{ "name": "http", "containerPort": 8080, "protocol": "TCP" }]));
    assert_eq!(container["livenessProbe"]["httpGet"], json!({ "path": "/healthz", "port": "http" }));
    assert_eq!(container["readinessProbe"]["httpGet"], json!({ "path": "/readyz", "port": "http" }));
    let resources = &container["resources"];
    for bound in ["requests.cpu", "requests.memory", "limits.memory"] {
        let (kind, resource) = bound.split_once('.').unwrap();
        assert!(resources[kind][resource].is_string(), "resources.{bound} has no default: {resources}");
    }

    let account = only(&documents, "ServiceAccount");
    assert_eq!(pod["serviceAccountName"], account["metadata"]["name"]);
    for document in &documents {
        let labels = &document["metadata"]["labels"];
        for label in [
            "app.kubernetes.io/name",
            "app.kubernetes.io/instance",
            "app.kubernetes.io/version",
            "app.kubernetes.io/managed-by",
            "helm.sh/chart",
        ] {
            assert!(labels[label].is_string(), "{} has no {label} label", document["kind"]);
        }
    }

    // The metrics Service selects exactly the operator's pod.
    let service = only(&documents, "Service");
    assert_eq!(
        service["spec"]["ports"],
        json!([{ "name": "http", "port": 8080, "targetPort": "http", "protocol": "TCP" }])
    );
    let pod_labels = deployment["spec"]["template"]["metadata"]["labels"].as_object().unwrap();
    for (key, value) in service["spec"]["selector"].as_object().unwrap() {
        assert_eq!(
            pod_labels.get(key),
            Some(value),
            "the Service selects {key}={value}, the pod does not carry it"
        );
    }
    assert_eq!(deployment["spec"]["selector"]["matchLabels"], service["spec"]["selector"]);
}

/// Watching all namespaces, the ClusterRole grants exactly the listed rules: no
/// wildcard, Secrets never deleted or updated whole, Pods only read, Events created and
/// patched. It is bound to the operator's ServiceAccount, and no namespaced Role exists
/// but leader election's.
#[test]
fn cluster_role_is_least_privilege() {
    let documents = template(&[]);
    let roles = of_kind(&documents, "Role");
    assert!(
        roles.len() == 1 && roles[0]["metadata"]["name"] == format!("{RELEASE}-leader-election"),
        "{roles:?}"
    );
    let role = only(&documents, "ClusterRole");
    let rules = &role["rules"];
    // Exactly the calls the operator makes (`plait_operator::rbac`, which the reconcile
    // tests check every request against), plus the cluster-scoped reads of a
    // cluster-wide install.
    let mut expected = expected_rules();
    expected
        .as_array_mut()
        .unwrap()
        .extend(rules_json(plait_operator::rbac::CLUSTER_RULES).as_array().unwrap().clone());
    assert_eq!(rules, &expected, "the ClusterRole's rules are not the operator's calls");

    for rule in rules.as_array().unwrap() {
        for field in ["apiGroups", "resources", "verbs"] {
            assert!(!rule[field].as_array().unwrap().iter().any(|v| v == "*"), "wildcard {field} in {rule}");
        }
        assert!(rule["resourceNames"].is_null() && rule["nonResourceURLs"].is_null(), "{rule}");
    }
    let secrets = verbs_on(rules, "", "secrets");
    // Read by name only: no listing or watching every Secret in the cluster.
    for forbidden in ["delete", "deletecollection", "update", "list", "watch"] {
        assert!(!secrets.contains(&forbidden), "Secrets: {forbidden} granted");
    }
    assert_eq!(verbs_on(rules, "", "pods"), ["list"]);
    assert_eq!(verbs_on(rules, "events.k8s.io", "events"), ["create", "patch"]);

    let binding = only(&documents, "ClusterRoleBinding");
    let account = only(&documents, "ServiceAccount");
    assert_eq!(
        binding["roleRef"],
        json!({ "apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role["metadata"]["name"] })
    );
    assert_eq!(
        binding["subjects"],
        json!([{ "kind": "ServiceAccount", "name": account["metadata"]["name"], "namespace": NAMESPACE }])
    );
}

/// With `watchNamespace` set, the same rules come as a Role and RoleBinding in that
/// namespace, binding the ServiceAccount from the release's namespace, with nothing
/// cluster-wide; the operator is told the namespace.
#[test]
fn watch_namespace_uses_a_role() {
    let documents = template(&["--set", "watchNamespace=foo"]);
    assert!(
        of_kind(&documents, "ClusterRole").is_empty() && of_kind(&documents, "ClusterRoleBinding").is_empty(),
        "cluster-wide RBAC with watchNamespace set: {:?}",
        kinds(&documents)
    );
    let in_foo = |kind: &str| -> Vec<&Value> {
        of_kind(&documents, kind).into_iter().filter(|d| d["metadata"]["namespace"] == "foo").collect()
    };
    let roles = in_foo("Role");
    assert_eq!(roles.len(), 1, "{roles:?}");
    let role = roles[0];
    assert_eq!(role["rules"], expected_rules());

    let bindings = in_foo("RoleBinding");
    assert_eq!(bindings.len(), 1, "{bindings:?}");
    let binding = bindings[0];
    assert_eq!(binding["roleRef"]["kind"], "Role");
    assert_eq!(binding["roleRef"]["name"], role["metadata"]["name"]);
    assert_eq!(binding["subjects"][0]["namespace"], NAMESPACE);

    let deployment = only(&documents, "Deployment");
    let env = &deployment["spec"]["template"]["spec"]["containers"][0]["env"];
    let namespace = env.as_array().unwrap().iter().find(|e| e["name"] == "PLAIT_OPERATOR_NAMESPACE").unwrap();
    assert_eq!(namespace["value"], "foo");
}

/// Leader election's Role, in the release namespace, grants exactly what the election
/// calls (`plait_operator::rbac::ELECTION_RULES`: read, create and replace Leases) and is
/// bound to the operator's ServiceAccount. With election off there is no such Role, one
/// pod, Recreate (two never overlap) and no election settings; more than one pod
/// without election is refused with the reason.
#[test]
fn leader_election_is_on_by_default_and_least_privilege() {
    let documents = template(&[]);
    let name = format!("{RELEASE}-leader-election");
    let role = of_kind(&documents, "Role").into_iter().find(|r| r["metadata"]["name"] == name).unwrap();
    assert_eq!(role["metadata"]["namespace"], NAMESPACE);
    assert_eq!(role["rules"], rules_json(plait_operator::rbac::ELECTION_RULES));
    let binding =
        of_kind(&documents, "RoleBinding").into_iter().find(|b| b["metadata"]["name"] == name).unwrap();
    assert_eq!(binding["metadata"]["namespace"], NAMESPACE);
    assert_eq!(
        binding["roleRef"],
        json!({ "apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name })
    );
    let account = only(&documents, "ServiceAccount");
    assert_eq!(
        binding["subjects"],
        json!([{ "kind": "ServiceAccount", "name": account["metadata"]["name"], "namespace": NAMESPACE }])
    );

    let single = template(&["--set", "leaderElection.enabled=false", "--set", "replicaCount=1"]);
    assert!(of_kind(&single, "Role").is_empty() && of_kind(&single, "RoleBinding").is_empty());
    let deployment = only(&single, "Deployment");
    assert_eq!(deployment["spec"]["replicas"], 1);
    assert_eq!(deployment["spec"]["strategy"], json!({ "type": "Recreate" }));
    let env = deployment["spec"]["template"]["spec"]["containers"][0]["env"].as_array().unwrap();
    assert!(
        !env.iter()
            .any(|e| e["name"].as_str().unwrap().contains("LEASE")
                || e["name"] == "PLAIT_OPERATOR_LEADER_ELECT")
    );

    let out = run_helm(&["template", RELEASE, CHART, "--set", "leaderElection.enabled=false"]);
    assert!(!out.status.success(), "two operators without leader election rendered");
    assert!(stderr(&out).contains("needs leaderElection.enabled"), "{}", stderr(&out));
}

/// No ServiceMonitor by default (its CRD may not exist); when enabled, one scrapes
/// `/metrics` on the Service's `http` port at the configured interval, with extra labels.
#[test]
fn service_monitor_is_optional() {
    assert!(of_kind(&template(&[]), "ServiceMonitor").is_empty(), "a ServiceMonitor by default");

    let documents = template(&[
        "--set",
        "serviceMonitor.enabled=true",
        "--set",
        "serviceMonitor.interval=15s",
        "--set",
        "serviceMonitor.labels.release=prometheus",
    ]);
    let monitor = only(&documents, "ServiceMonitor");
    assert_eq!(monitor["apiVersion"], "monitoring.coreos.com/v1");
    assert_eq!(monitor["metadata"]["labels"]["release"], "prometheus");
    assert_eq!(
        monitor["spec"]["endpoints"],
        json!([{ "port": "http", "path": "/metrics", "interval": "15s" }])
    );
    let service = only(&documents, "Service");
    assert_eq!(monitor["spec"]["selector"]["matchLabels"], service["spec"]["selector"]);
    assert_eq!(monitor["spec"]["namespaceSelector"]["matchNames"], json!([NAMESPACE]));
}

/// The replicas' PodMonitor is optional: off by default; on, it selects replica pods
/// (the labels the operator gives them) on their `metrics` port in every namespace, or
/// only in `watchNamespace`, and labels series with the cluster's name.
#[test]
fn replica_pod_monitor_is_optional() {
    assert!(of_kind(&template(&[]), "PodMonitor").is_empty(), "a PodMonitor by default");
    let documents =
        template(&["--set", "replicaPodMonitor.enabled=true", "--set", "replicaPodMonitor.labels.release=p"]);
    let monitor = only(&documents, "PodMonitor");
    assert_eq!(monitor["apiVersion"], "monitoring.coreos.com/v1");
    assert_eq!(monitor["metadata"]["labels"]["release"], "p");
    assert_eq!(
        monitor["spec"]["selector"]["matchLabels"],
        json!({ "app.kubernetes.io/name": "plaitd", "app.kubernetes.io/component": "replica" })
    );
    assert_eq!(monitor["spec"]["namespaceSelector"], json!({ "any": true }));
    assert_eq!(monitor["spec"]["podTargetLabels"], json!(["app.kubernetes.io/instance"]));
    assert_eq!(
        monitor["spec"]["podMetricsEndpoints"],
        json!([{ "port": "metrics", "path": "/metrics", "interval": "30s" }])
    );
    let one = template(&["--set", "replicaPodMonitor.enabled=true", "--set", "watchNamespace=apps"]);
    assert_eq!(only(&one, "PodMonitor")["spec"]["namespaceSelector"], json!({ "matchNames": ["apps"] }));
}

/// values.schema.json refuses misspelled keys (at the top and nested) and values of the
/// wrong type or outside their set, so a typo fails the install instead of being
/// ignored; valid overrides of the same keys render.
#[test]
fn schema_refuses_bad_values() {
    for (set, complaint) in [
        ("replicaCountt=2", "replicaCountt"),
        ("serviceMonitor.enabledd=true", "enabledd"),
        ("operator.image.tagg=v1", "tagg"),
        ("logJson=yes", "logJson"),
        ("service.port=http", "port"),
        ("operator.image.pullPolicy=Sometimes", "pullPolicy"),
        ("watchNamespace=Not_A_Namespace", "watchNamespace"),
        ("serviceMonitor.interval=often", "interval"),
    ] {
        let out = run_helm(&["template", RELEASE, CHART, "--set", set]);
        assert!(!out.status.success(), "helm template accepted --set {set}");
        let message = stderr(&out);
        assert!(message.contains("schema") && message.contains(complaint), "--set {set}: {message}");
    }

    let documents = template(&[
        "--set",
        "logJson=true",
        "--set",
        "service.port=9000",
        "--set",
        "operator.image.pullPolicy=Always",
        "--set",
        "serviceMonitor.interval=1m",
        "--set-string",
        "operator.image.tag=2024.1",
    ]);
    let container = &only(&documents, "Deployment")["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container["image"], "plait/plait-operator:2024.1");
    assert_eq!(container["imagePullPolicy"], "Always");
}

/// A tag that is a digest renders as `repository@sha256:…` (with or without the `@` in
/// the value), never as the invalid `repository:@sha256:…`; a plain tag as `repository:tag`.
#[test]
fn image_digests_render_as_references() {
    let digest = format!("sha256:{}", "ab".repeat(32));
    let image = |set: &[&str]| {
        let documents = template(set);
        let container = only(&documents, "Deployment")["spec"]["template"]["spec"]["containers"][0].clone();
        let replica = container["env"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["name"] == "PLAIT_OPERATOR_REPLICA_IMAGE")
            .unwrap()["value"]
            .clone();
        (container["image"].as_str().unwrap().to_owned(), replica.as_str().unwrap().to_owned())
    };
    let operator_tag = format!("operator.image.tag={digest}");
    let replica_tag = format!("replicaImage.tag=@{digest}");
    assert_eq!(
        image(&["--set-string", &operator_tag, "--set-string", &replica_tag]),
        (format!("plait/plait-operator@{digest}"), format!("plait/plaitd@{digest}"))
    );
    assert_eq!(
        image(&["--set-string", "operator.image.tag=v2", "--set-string", "replicaImage.tag=v3"]),
        ("plait/plait-operator:v2".to_owned(), "plait/plaitd:v3".to_owned())
    );
}

/// The chart's appVersion is the workspace's version, so the default image tags name
/// the binaries built from this tree.
#[test]
fn chart_app_version_is_the_workspace_version() {
    assert_eq!(app_version(), env!("CARGO_PKG_VERSION"));
}

/// The committed CRDs (`manifests/crds.yaml` and the chart's copy) are exactly what
/// `plait-operator crd` prints from the Rust types.
#[test]
fn committed_crds_match_the_types() {
    let generated = plait_operator::crds_yaml();
    for path in ["manifests/crds.yaml", "charts/plait-operator/files/crds.yaml"] {
        assert!(read(path) == generated, "{path} differs from `plait-operator crd`: {REGENERATE}");
    }
}

/// The chart renders the CRDs from `templates/`, so `helm upgrade` upgrades them: the
/// generated ones, unchanged but for the chart's labels and `helm.sh/resource-policy:
/// keep` (an uninstall must not delete every PlaitCluster); `crds.create=false` renders
/// none.
#[test]
fn crds_are_templates_helm_upgrades_and_keeps() {
    let generated: Vec<Value> = serde_yaml::Deserializer::from_str(&plait_operator::crds_yaml())
        .map(|d| Value::deserialize(d).unwrap())
        .filter(|d| !d.is_null())
        .collect();
    let documents = template(&[]);
    let rendered = of_kind(&documents, "CustomResourceDefinition");
    assert_eq!(rendered.len(), 2);
    for (rendered, generated) in rendered.into_iter().zip(&generated) {
        assert_eq!(rendered["metadata"]["annotations"], json!({ "helm.sh/resource-policy": "keep" }));
        assert_eq!(rendered["metadata"]["labels"]["app.kubernetes.io/managed-by"], "Helm");
        let mut bare = rendered.clone();
        let meta = bare["metadata"].as_object_mut().unwrap();
        meta.remove("annotations");
        meta.remove("labels");
        // Helm's YAML round trip writes `1000.0` as `1000`: the same JSON number.
        assert_eq!(
            as_floats(&bare),
            as_floats(generated),
            "a rendered CRD differs from `plait-operator crd`"
        );
    }
    let off = template(&["--set", "crds.create=false"]);
    assert!(of_kind(&off, "CustomResourceDefinition").is_empty());
    assert!(!of_kind(&off, "Deployment").is_empty());
    assert!(!repo_root().join(CHART).join("crds").exists(), "crds/ is never upgraded");
}

/// `value` with every number as a float.
fn as_floats(value: &Value) -> Value {
    match value {
        Value::Number(n) => json!(n.as_f64().unwrap()),
        Value::Array(items) => items.iter().map(as_floats).collect(),
        Value::Object(map) => Value::Object(map.iter().map(|(k, v)| (k.clone(), as_floats(v))).collect()),
        other => other.clone(),
    }
}

/// `manifests/install.yaml` is exactly what scripts/render-manifests.sh renders from the
/// chart holding freshly generated CRDs: the same script step, on a copy of the chart in
/// a temporary directory.
#[test]
fn install_manifest_matches_a_fresh_render() {
    let scratch = tempfile::tempdir().unwrap();
    let chart = scratch.path().join("plait-operator");
    copy_dir(&repo_root().join(CHART), &chart);
    std::fs::write(chart.join("files/crds.yaml"), plait_operator::crds_yaml()).unwrap();

    let out = Command::new(repo_root().join("scripts/render-manifests.sh"))
        .arg("--install")
        .arg(&chart)
        .env("PLAIT_HELM", helm())
        .output()
        .expect("scripts/render-manifests.sh runs");
    assert!(out.status.success(), "render-manifests.sh --install failed: {}", stderr(&out));
    let fresh = String::from_utf8(out.stdout).unwrap();
    let committed = read("manifests/install.yaml");
    if committed != fresh {
        let line = committed
            .lines()
            .zip(fresh.lines())
            .position(|(a, b)| a != b)
            .map_or_else(|| committed.lines().count().min(fresh.lines().count()) + 1, |index| index + 1);
        panic!("manifests/install.yaml differs from a fresh render from line {line} on: {REGENERATE}");
    }

    // What install.yaml holds: the namespace first, the CRDs before the operator.
    let documents = documents(&fresh);
    let kinds = kinds(&documents);
    assert_eq!(kinds[0], "Namespace");
    let crds: Vec<usize> =
        kinds.iter().enumerate().filter(|(_, k)| **k == "CustomResourceDefinition").map(|(i, _)| i).collect();
    let deployment = kinds.iter().position(|k| *k == "Deployment").unwrap();
    assert!(crds.len() == 2 && crds.iter().all(|i| *i < deployment), "{kinds:?}");
    assert_eq!(documents[0]["metadata"]["name"], NAMESPACE);
    for kind in [
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Role",
        "RoleBinding",
        "Service",
        "Deployment",
    ] {
        assert_eq!(kinds.iter().filter(|k| **k == kind).count(), 1, "{kind} in {kinds:?}");
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// Every key of `written` is in `parsed` with the same value. `parsed` is what the types
/// read back and write out again, so a misspelled or unknown field (which serde drops)
/// shows up as missing.
fn assert_fields_known(written: &Value, parsed: &Value, path: &str) {
    match (written, parsed) {
        (Value::Object(written), Value::Object(parsed)) => {
            for (key, value) in written {
                let inner = format!("{path}.{key}");
                let Some(parsed) = parsed.get(key) else { panic!("{inner} is not a field of the type") };
                assert_fields_known(value, parsed, &inner);
            }
        }
        (Value::Array(written), Value::Array(parsed)) => {
            assert_eq!(written.len(), parsed.len(), "{path}");
            for (index, (written, parsed)) in written.iter().zip(parsed).enumerate() {
                assert_fields_known(written, parsed, &format!("{path}[{index}]"));
            }
        }
        _ => assert_eq!(written, parsed, "{path} reads back differently"),
    }
}

/// Reads `spec` of an example into `T` and checks no field was dropped on the way.
fn check_spec<T: serde::de::DeserializeOwned + serde::Serialize>(file: &str, document: &Value) -> T {
    let spec: serde_yaml::Value = serde_yaml::to_value(&document["spec"]).unwrap();
    let typed: T = serde_yaml::from_value(spec).unwrap_or_else(|e| panic!("{file}: spec: {e}"));
    assert_fields_known(&document["spec"], &serde_json::to_value(&typed).unwrap(), &format!("{file}: spec"));
    typed
}

/// The example manifests parse, each `spec` reads into the operator's own types with
/// every field known, and they fit together: the backup names the cluster, the restore
/// reads from the cluster's backup destination with the cluster's generated writer key,
/// and the credentials Secret they name exists with the keys plaitd reads.
#[test]
fn examples_match_the_types() {
    let example = |file: &str| -> Value {
        let documents = documents(&read(&format!("manifests/examples/{file}")));
        assert_eq!(documents.len(), 1, "{file}: one document");
        documents.into_iter().next().unwrap()
    };
    let group_version = format!("{}/{}", plait_operator::GROUP, plait_operator::VERSION);

    let cluster_document = example("plaitcluster.yaml");
    assert_eq!(cluster_document["apiVersion"], group_version.as_str());
    assert_eq!(cluster_document["kind"], "PlaitCluster");
    let cluster_name = cluster_document["metadata"]["name"].as_str().unwrap();
    let cluster: plait_operator::PlaitClusterSpec = check_spec("plaitcluster.yaml", &cluster_document);
    assert_eq!(cluster.replicas, 3);
    assert_eq!(cluster.storage.size, "10Gi");
    let backup = cluster.backup.as_ref().expect("plaitcluster.yaml: spec.backup");
    assert!(backup.destination.starts_with("s3://"), "{}", backup.destination);
    assert_eq!(backup.schedule.as_deref(), Some("0 2 * * *"));
    let credentials =
        backup.s3.as_ref().and_then(|s3| s3.credentials_secret.clone()).expect("backup credentials");

    let restore_document = example("plaitcluster-restore.yaml");
    assert_eq!(restore_document["apiVersion"], group_version.as_str());
    assert_eq!(restore_document["kind"], "PlaitCluster");
    assert_ne!(restore_document["metadata"]["name"], cluster_name, "the restore is a new cluster");
    let restore: plait_operator::PlaitClusterSpec =
        check_spec("plaitcluster-restore.yaml", &restore_document);
    let bootstrap = restore.bootstrap.as_ref().expect("plaitcluster-restore.yaml: spec.bootstrap");
    assert_eq!(bootstrap.from, backup.destination);
    assert_eq!(restore.writer_key_secret, Some(format!("{cluster_name}-writer-key")));
    assert_eq!(bootstrap.s3.as_ref().and_then(|s3| s3.credentials_secret.as_ref()), Some(&credentials));

    let backup_document = example("plaitbackup.yaml");
    assert_eq!(backup_document["apiVersion"], group_version.as_str());
    assert_eq!(backup_document["kind"], "PlaitBackup");
    let on_demand: plait_operator::PlaitBackupSpec = check_spec("plaitbackup.yaml", &backup_document);
    assert_eq!(on_demand.cluster, cluster_name);
    assert_eq!(on_demand.kind, plait_operator::BackupKind::Full);

    let secret = example("s3-credentials-secret.yaml");
    assert_eq!(secret["kind"], "Secret");
    assert_eq!(secret["metadata"]["name"], credentials.as_str());
    for key in ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"] {
        assert!(secret["stringData"][key].is_string(), "s3-credentials-secret.yaml: no {key}");
    }
}

/// Server-side applies one manifest document, with strict field validation: a field the
/// API server's schema does not know is an error, not silently dropped.
async fn apply(
    client: &kube::Client,
    document: &Value,
    namespace: &str,
) -> Result<DynamicObject, kube::Error> {
    let object: DynamicObject = serde_json::from_value(document.clone()).expect("a Kubernetes object");
    let gvk = GroupVersionKind::try_from(object.types.as_ref().expect("apiVersion and kind")).unwrap();
    let (resource, capabilities) = kube::discovery::pinned_kind(client, &gvk).await?;
    let api: Api<DynamicObject> = match capabilities.scope {
        Scope::Namespaced => Api::namespaced_with(
            client.clone(),
            object.metadata.namespace.as_deref().unwrap_or(namespace),
            &resource,
        ),
        Scope::Cluster => Api::all_with(client.clone(), &resource),
    };
    let params = PatchParams::apply(plait_tests::kube::FIELD_MANAGER).force().validation_strict();
    api.patch(&object.name_any(), &params, &Patch::Apply(&object)).await
}

/// Whether the API server's authorizer lets the operator's ServiceAccount do `verb`.
async fn operator_may(
    plane: &plait_tests::kube::ControlPlane,
    verb: &str,
    group: &str,
    resource: &str,
    namespace: &str,
) -> bool {
    let (resource, subresource) = resource.split_once('/').unwrap_or((resource, ""));
    let review: SelfSubjectAccessReview = serde_json::from_value(json!({
        "spec": { "resourceAttributes": {
            "verb": verb, "group": group, "resource": resource, "subresource": subresource, "namespace": namespace,
        } }
    }))
    .unwrap();
    let review = Api::<SelfSubjectAccessReview>::all(plane.operator_client())
        .create(&PostParams::default(), &review)
        .await
        .expect("a SelfSubjectAccessReview");
    review.status.is_some_and(|s| s.allowed)
}

/// On a real API server (`tests/kube/build-binaries.sh`): `manifests/install.yaml`
/// applies with strict field validation; the RBAC it installs lets the operator's
/// ServiceAccount do what it needs and refuses the rest (deleting Secrets, creating Pods,
/// reading Nodes, granting RBAC); the operator's pod is admitted in its namespace, which
/// enforces the restricted Pod Security Standard, while a privileged variant is refused;
/// and the examples are accepted by the CRDs' schemas and rules, where a misspelled
/// field or a wrong destination is refused.
#[tokio::test]
async fn manifests_apply_to_a_real_api_server() {
    let plane = plait_tests::kube::ControlPlane::start().await.expect("a control plane");
    let admin = plane.admin_client();

    let install = documents(&read("manifests/install.yaml"));
    for document in &install {
        apply(&admin, document, NAMESPACE).await.unwrap_or_else(|e| {
            panic!("install.yaml: {} {}: {e}", document["kind"], document["metadata"]["name"])
        });
    }
    for crd in of_kind(&install, "CustomResourceDefinition") {
        let name = crd["metadata"]["name"].as_str().unwrap();
        plait_tests::kube::wait_established(&admin, name, Duration::from_secs(30)).await.unwrap();
    }

    let tenant = "plait-examples";
    // Every call the operator makes is allowed ...
    for rule in plait_operator::rbac::RULES.iter().chain(plait_operator::rbac::CLUSTER_RULES) {
        for resource in rule.resources {
            for verb in rule.verbs {
                assert!(
                    operator_may(&plane, verb, rule.group, resource, tenant).await,
                    "the operator may not {verb} {resource}"
                );
            }
        }
    }
    // ... and the election's, in its own namespace only ...
    for rule in plait_operator::rbac::ELECTION_RULES {
        for resource in rule.resources {
            for verb in rule.verbs {
                assert!(
                    operator_may(&plane, verb, rule.group, resource, NAMESPACE).await,
                    "the operator may not {verb} {resource} in {NAMESPACE}"
                );
            }
        }
    }
    assert!(!operator_may(&plane, "update", "coordination.k8s.io", "leases", tenant).await);
    assert!(!operator_may(&plane, "delete", "coordination.k8s.io", "leases", NAMESPACE).await);
    // ... and nothing it does not make.
    for (verb, group, resource) in [
        ("update", "plait.dev", "plaitclusters"),
        ("delete", "plait.dev", "plaitclusters"),
        ("update", "plait.dev", "plaitbackups/finalizers"),
        ("delete", "apps", "statefulsets"),
        ("update", "apps", "statefulsets"),
        ("delete", "policy", "poddisruptionbudgets"),
        ("get", "", "pods"),
        ("watch", "", "pods"),
        ("create", "", "events"),
        ("delete", "", "secrets"),
        ("update", "", "secrets"),
        ("list", "", "secrets"),
        ("watch", "", "secrets"),
        ("create", "", "pods"),
        ("delete", "", "pods"),
        ("delete", "", "persistentvolumeclaims"),
        ("list", "", "nodes"),
        ("create", "rbac.authorization.k8s.io", "rolebindings"),
        ("delete", "apiextensions.k8s.io", "customresourcedefinitions"),
    ] {
        assert!(
            !operator_may(&plane, verb, group, resource, tenant).await,
            "the operator may {verb} {resource}"
        );
    }

    // The pod the Deployment would create, dry-run: Pod Security admission judges it.
    let deployment = only(&install, "Deployment");
    let pods = Api::<Pod>::namespaced(admin.clone(), NAMESPACE);
    let dry_run = PostParams { dry_run: true, ..PostParams::default() };
    let mut pod: Pod = serde_json::from_value(json!({
        "metadata": { "name": "operator-admission-check" },
        "spec": deployment["spec"]["template"]["spec"],
    }))
    .unwrap();
    pods.create(&dry_run, &pod).await.expect("the operator's pod meets the restricted standard");
    let container = &mut pod.spec.as_mut().unwrap().containers[0];
    container.security_context.as_mut().unwrap().allow_privilege_escalation = Some(true);
    let refused = pods.create(&dry_run, &pod).await.expect_err("privilege escalation admitted");
    assert!(refused.to_string().contains("PodSecurity"), "{refused}");

    plait_tests::kube::create_namespace(&admin, tenant).await.unwrap();
    let mut examples = Vec::new();
    for file in
        ["s3-credentials-secret.yaml", "plaitcluster.yaml", "plaitbackup.yaml", "plaitcluster-restore.yaml"]
    {
        let document = documents(&read(&format!("manifests/examples/{file}"))).remove(0);
        apply(&admin, &document, tenant).await.unwrap_or_else(|e| panic!("{file}: {e}"));
        examples.push(document);
    }

    let mut misspelled = examples[1].clone();
    misspelled["metadata"]["name"] = json!("misspelled");
    misspelled["spec"]["backup"]["fullEvry"] = json!(3);
    let refused = apply(&admin, &misspelled, tenant).await.expect_err("an unknown field accepted");
    assert!(refused.to_string().contains("fullEvry"), "{refused}");
    let mut wrong = examples[2].clone();
    wrong["metadata"]["name"] = json!("wrong-destination");
    wrong["spec"]["destination"] = json!("ftp://backups/demo");
    let refused = apply(&admin, &wrong, tenant).await.expect_err("an ftp:// destination accepted");
    assert!(refused.to_string().contains("destination"), "{refused}");
}

/// What of the kind run can be checked here: the script parses (`bash -n`) and uses no
/// bash-4-only construct (macOS ships bash 3.2), and its kind cluster has the three
/// workers the drain step needs.
#[test]
fn kind_script_parses_and_suits_bash_3_2() {
    let script = repo_root().join("tests/kind/e2e.sh");
    let out = Command::new("bash").arg("-n").arg(&script).output().expect("bash runs");
    assert!(out.status.success(), "bash -n tests/kind/e2e.sh: {}", stderr(&out));
    let text = read("tests/kind/e2e.sh");
    for construct in ["declare -A", "local -A", "mapfile", "readarray", ",,}", "^^}", "&>>", "|&", "coproc"] {
        let found: Vec<&str> =
            text.lines().filter(|l| !l.trim_start().starts_with('#') && l.contains(construct)).collect();
        assert!(found.is_empty(), "{construct:?} needs bash 4: {found:?}");
    }
    let config = read("tests/kind/cluster.yaml");
    assert_eq!(config.matches("role: worker").count(), 3, "{config}");
    let code: Vec<&str> = text.lines().filter(|l| !l.trim_start().starts_with('#')).collect();
    assert!(code.iter().any(|l| l.contains("kind load image-archive")), "images are loaded as archives");
    assert!(
        !code.iter().any(|l| l.contains("kind load docker-image")),
        "fails under containerd's image store"
    );
}

/// The whole operator on a real Kubernetes (kind), as `tests/kind/e2e.sh` runs it (its
/// header lists every step). Needs docker, kind, kubectl and helm, which this test
/// suite does not install.
#[test]
#[ignore = "needs docker, kind, kubectl and helm: cargo test -p plait-tests --test it chart::kind_end_to_end -- --ignored (or tests/kind/e2e.sh)"]
fn kind_end_to_end() {
    let mut e2e = Command::new("bash");
    e2e.arg(repo_root().join("tests/kind/e2e.sh")).current_dir(repo_root());
    // The plaitctl this test binary was built with, so the script need not run cargo.
    if let Ok(plaitctl) = plait_tests::binary("plaitctl") {
        e2e.env("PLAITCTL", plaitctl);
    }
    let status = e2e.status().expect("tests/kind/e2e.sh runs");
    assert!(status.success(), "tests/kind/e2e.sh failed: {status}");
}
