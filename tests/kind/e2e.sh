#!/usr/bin/env bash
# The operator end to end on a real Kubernetes: a kind cluster, the images built from
# this tree, the chart installed with helm, and an S3 server (moto) in the cluster for
# backups. It checks, in order:
#
#   1. a 3-replica PlaitCluster becomes Ready and takes writes through its client Service;
#   2. scaling 3 -> 5 -> 3 keeps every write, on every replica;
#   3. a deleted replica pod comes back Ready with the data;
#   4. an on-demand PlaitBackup completes;
#   5. a second cluster bootstrapped from that backup has the same state root, and
#      accepts writes with the first cluster's writer key.
#
# Needs docker, kind, kubectl, helm, cargo and curl. The kind cluster is deleted on exit
# unless KEEP_CLUSTER=1 (a kept cluster is reused by the next run).
#
#   tests/kind/e2e.sh
#   KEEP_CLUSTER=1 tests/kind/e2e.sh
#   PLAIT_E2E_KIND=1 cargo test -p plait-tests --test it chart::kind_end_to_end
#
# Settings: PLAIT_E2E_CLUSTER (kind cluster name, plait-e2e), PLAIT_E2E_TIMEOUT (seconds
# each wait may take, 600), PLAIT_E2E_MOTO_IMAGE (the S3 server's image), PLAITCTL (a
# built plaitctl; otherwise `cargo build -p plait-cli`).
set -euo pipefail
cd "$(dirname "$0")/../.."

kind_cluster="${PLAIT_E2E_CLUSTER:-plait-e2e}"
timeout_s="${PLAIT_E2E_TIMEOUT:-600}"
moto_image="${PLAIT_E2E_MOTO_IMAGE:-motoserver/moto:5.2.1}"
tag="e2e"
context="kind-$kind_cluster"
operator_namespace="plait-system"
namespace="plait-e2e"
cluster="demo"
restored="demo-restored"
bucket="plait-backups"
destination="s3://$bucket/e2e"
s3_endpoint="http://s3.$namespace.svc:5000"
# Local ports of the port-forwards; uncommon ones, so they rarely collide.
client_port=17070
admin_port=17071
client_token=""
s3_port=17071

log() { echo "e2e: $*" >&2; }
fail() { echo "e2e: FAILED: $*" >&2; exit 1; }

for tool in docker kind kubectl helm cargo curl; do
    command -v "$tool" >/dev/null 2>&1 || fail "$tool is required (helm: tests/kube/install-helm.sh)"
done

k() { kubectl --context "$context" "$@"; }
kn() { k --namespace "$namespace" "$@"; }

forward_pid=""
stop_forward() {
    if [[ -n "$forward_pid" ]]; then
        kill "$forward_pid" 2>/dev/null || true
        wait "$forward_pid" 2>/dev/null || true
        forward_pid=""
    fi
}

# Credentials taken from the clusters' Secrets (see `admin_pki`), removed on exit.
pki_dir="$(mktemp -d)"

# On failure: what the operator and the clusters looked like, before the cluster goes.
diagnose() {
    log "---- diagnostics"
    k get plaitclusters,plaitbackups,statefulsets,pods,pvc,services -A -o wide || true
    kn describe plaitclusters || true
    kn get events --sort-by=.lastTimestamp | tail -n 50 || true
    k --namespace "$operator_namespace" logs deployment/plait-operator --tail=300 || true
}

cleanup() {
    local status=$?
    stop_forward
    rm -rf "$pki_dir"
    [[ $status -eq 0 ]] || diagnose
    if [[ "${KEEP_CLUSTER:-0}" == "1" ]]; then
        log "keeping kind cluster $kind_cluster (kubectl --context $context)"
    else
        log "deleting kind cluster $kind_cluster"
        kind delete cluster --name "$kind_cluster" >/dev/null 2>&1 || true
    fi
    exit $status
}
trap cleanup EXIT

# Runs "$@" until it succeeds, for at most timeout_s seconds.
eventually() {
    local what="$1"
    shift
    local deadline=$((SECONDS + timeout_s))
    until "$@" >/dev/null 2>&1; do
        ((SECONDS < deadline)) || fail "timed out after ${timeout_s}s: $what"
        sleep 2
    done
}

# A PlaitCluster has caught up with its spec: the status is for the current generation,
# it has `replicas` replicas, all of them ready, and the Ready condition is True.
cluster_settled() {
    local name="$1" replicas="$2" got
    got="$(kn get "plaitcluster/$name" -o jsonpath='{.metadata.generation}/{.status.observedGeneration} {.status.replicas}/{.status.readyReplicas} {.status.conditions[?(@.type=="Ready")].status}')"
    local generations="${got%% *}" rest="${got#* }"
    [[ "${generations%/*}" == "${generations#*/}" && "$rest" == "$replicas/$replicas True" ]]
}
wait_cluster() {
    log "waiting for $1: $2 ready replicas"
    eventually "$1 with $2 ready replicas" cluster_settled "$1" "$2"
}

# Clusters are secured (TLS and tokens, the operator's default): credentials come from
# the Secrets the operator makes, into a scratch directory.
# (Removed by `cleanup`.)
secret_field() { kn get secret "$1" -o "jsonpath={.data.${2//./\\.}}" | base64 -d; }
# An admin certificate for a cluster, issued once from its CA, for what needs
# cluster-admin (checkpoints).
admin_pki() {
    local dir="$pki_dir/$1"
    if [[ ! -f "$dir/e2e-admin.crt" ]]; then
        mkdir -p "$dir"
        secret_field "$1-ca" ca.crt >"$dir/ca.crt"
        secret_field "$1-ca" ca.key >"$dir/ca.key"
        "$plaitctl" cert issue e2e-admin --ca-dir "$dir" --out "$dir" --group plait:admins \
            --client-only --days 1 >/dev/null
    fi
    echo "$dir"
}

# plaitctl inside a replica's pod (the plaitd image ships it), against that replica, with
# the cluster's application token.
in_replica() {
    local pod="$1"
    shift
    kn exec "$pod" -c plaitd -- plaitctl --addr 127.0.0.1:7070 --tls-ca /etc/plait/tls/ca.crt \
        --token "$(secret_field "${pod%-*}-client" token)" "$@"
}
replica_has() {
    local pod="$1" key="$2" value="$3"
    [[ "$(in_replica "$pod" get demo "$key" 2>/dev/null)" == "$value" ]]
}
# Every replica of a cluster holds every key written so far.
check_data() {
    local name="$1" replicas="$2" ordinal key
    for ((ordinal = 0; ordinal < replicas; ordinal++)); do
        for key in "${!written[@]}"; do
            eventually "$name-$ordinal has $key" replica_has "$name-$ordinal" "$key" "${written[$key]}"
        done
    done
    log "$name: all $replicas replicas hold all ${#written[@]} keys"
}

# Port-forwards local client_port to the client Service of a cluster and waits until
# plaitctl gets through.
forward_client() {
    stop_forward
    secret_field "$1-client" ca.crt >"$pki_dir/client-ca.crt"
    client_token="$(secret_field "$1-client" token)"
    kn port-forward "svc/$1" "$client_port:7070" >/dev/null 2>&1 &
    forward_pid=$!
    eventually "port-forward to svc/$1" client health
}
client() {
    PLAIT_TOKEN="$client_token" "$plaitctl" --addr "127.0.0.1:$client_port" \
        --tls-ca "$pki_dir/client-ca.crt" "$@"
}

# The state root of a log on one replica: a checkpoint, which takes cluster-admin, over a
# port-forward to the pod with an admin certificate.
state_root() {
    local dir pid root
    dir="$(admin_pki "${1%-*}")"
    kn port-forward "pod/$1" "$admin_port:7070" >/dev/null 2>&1 &
    pid=$!
    admin() {
        "$plaitctl" --addr "127.0.0.1:$admin_port" --tls-ca "$dir/ca.crt" \
            --cert "$dir/e2e-admin.crt" --key "$dir/e2e-admin.key" "$@"
    }
    eventually "port-forward to pod/$1" admin health
    root="$(admin --output json checkpoint demo | sed -n 's/.*"state_root": *"\([0-9a-f]*\)".*/\1/p')"
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    echo "$root"
}

# ---- the kind cluster, images and tools
if kind get clusters 2>/dev/null | grep -qx "$kind_cluster"; then
    log "reusing kind cluster $kind_cluster"
else
    log "creating kind cluster $kind_cluster"
    kind create cluster --name "$kind_cluster" --wait 180s
fi

log "building images plait/plaitd:$tag and plait/plait-operator:$tag"
docker build --target plaitd -t "plait/plaitd:$tag" .
docker build --target operator -t "plait/plait-operator:$tag" .
kind load docker-image --name "$kind_cluster" "plait/plaitd:$tag" "plait/plait-operator:$tag"

if [[ -n "${PLAITCTL:-}" ]]; then
    plaitctl="$PLAITCTL"
else
    log "building plaitctl"
    cargo build --quiet --locked -p plait-cli
    plaitctl="${CARGO_TARGET_DIR:-target}/debug/plaitctl"
fi
[[ -x "$plaitctl" ]] || fail "no plaitctl at $plaitctl"

# ---- the operator, with the chart. Its namespace enforces the restricted Pod Security
# Standard, which the chart's defaults must meet.
k create namespace "$operator_namespace" --dry-run=client -o yaml | k apply -f - >/dev/null
k label --overwrite namespace "$operator_namespace" pod-security.kubernetes.io/enforce=restricted >/dev/null
log "installing the chart"
helm --kube-context "$context" upgrade --install plait-operator charts/plait-operator \
    --namespace "$operator_namespace" \
    --set-string operator.image.tag="$tag" \
    --set-string replicaImage.tag="$tag" \
    --wait --timeout "${timeout_s}s"

# ---- a clean namespace for the clusters, with an S3 server and its bucket. It warns
# (not enforces) on the restricted standard: the S3 server is only a test fixture.
k delete namespace "$namespace" --ignore-not-found --wait --timeout="${timeout_s}s" >/dev/null
k create namespace "$namespace" >/dev/null
k label namespace "$namespace" pod-security.kubernetes.io/warn=restricted >/dev/null
log "starting the S3 server ($moto_image)"
kn apply -f - >/dev/null <<EOF
apiVersion: apps/v1
kind: Deployment
metadata:
  name: s3
spec:
  replicas: 1
  selector:
    matchLabels: {app: s3}
  template:
    metadata:
      labels: {app: s3}
    spec:
      containers:
        - name: moto
          image: $moto_image
          ports:
            - containerPort: 5000
          readinessProbe:
            tcpSocket: {port: 5000}
            periodSeconds: 2
---
apiVersion: v1
kind: Service
metadata:
  name: s3
spec:
  selector: {app: s3}
  ports:
    - port: 5000
      targetPort: 5000
---
apiVersion: v1
kind: Secret
metadata:
  name: s3-credentials
stringData:
  AWS_ACCESS_KEY_ID: e2e
  AWS_SECRET_ACCESS_KEY: e2e-secret
EOF
kn rollout status deployment/s3 --timeout="${timeout_s}s"
kn port-forward svc/s3 "$s3_port:5000" >/dev/null 2>&1 &
forward_pid=$!
# moto creates a bucket from a plain PUT, no signature needed.
eventually "creating bucket $bucket" curl -fsS -X PUT "http://127.0.0.1:$s3_port/$bucket"
stop_forward

s3_spec="
      endpoint: $s3_endpoint
      region: us-east-1
      allowHttp: true
      credentialsSecret: s3-credentials"

# ---- 1. a cluster, and writes through its client Service
log "creating PlaitCluster $cluster (3 replicas)"
kn apply -f - >/dev/null <<EOF
apiVersion: plait.dev/v1alpha1
kind: PlaitCluster
metadata:
  name: $cluster
spec:
  replicas: 3
  storage:
    size: 1Gi
  backup:
    destination: $destination
    s3:$s3_spec
EOF
kn wait --for=condition=Ready "plaitcluster/$cluster" --timeout="${timeout_s}s"
wait_cluster "$cluster" 3

declare -A written=()
forward_client "$cluster"
client log create demo --type kv >/dev/null
for i in 1 2 3 4 5; do
    # --replicas 3: acknowledged only once all three replicas hold it.
    client put --replicas 3 demo "key-$i" "value-$i" >/dev/null
    written["key-$i"]="value-$i"
done
[[ "$(client get demo key-3)" == "value-3" ]] || fail "read back through svc/$cluster"
stop_forward
check_data "$cluster" 3

# ---- 2. scale out and back in; the scale subresource is what `kubectl scale` uses
log "scaling $cluster to 5"
kn scale "plaitcluster/$cluster" --replicas=5
wait_cluster "$cluster" 5
check_data "$cluster" 5
log "scaling $cluster back to 3"
kn scale "plaitcluster/$cluster" --replicas=3
wait_cluster "$cluster" 3
check_data "$cluster" 3
[[ "$(kn get statefulset "$cluster" -o jsonpath='{.spec.replicas}')" == "3" ]] || fail "StatefulSet not scaled to 3"

forward_client "$cluster"
client put --replicas 3 demo after-scaling yes >/dev/null
written[after-scaling]=yes
stop_forward

# ---- 3. a lost pod comes back with its data
old_uid="$(kn get pod "$cluster-1" -o jsonpath='{.metadata.uid}')"
log "deleting pod $cluster-1"
kn delete pod "$cluster-1" --wait=true >/dev/null
pod_replaced() {
    local uid
    uid="$(kn get pod "$cluster-1" -o jsonpath='{.metadata.uid}')"
    [[ -n "$uid" && "$uid" != "$old_uid" ]]
}
eventually "pod $cluster-1 recreated" pod_replaced
kn wait --for=condition=Ready "pod/$cluster-1" --timeout="${timeout_s}s"
wait_cluster "$cluster" 3
check_data "$cluster" 3

# ---- 4. an on-demand backup
log "backing up $cluster"
kn apply -f - >/dev/null <<EOF
apiVersion: plait.dev/v1alpha1
kind: PlaitBackup
metadata:
  name: $cluster-e2e
spec:
  cluster: $cluster
  kind: Full
EOF
kn wait --for=jsonpath='{.status.phase}'=Completed "plaitbackup/$cluster-e2e" --timeout="${timeout_s}s"
log "backup: $(kn get plaitbackup "$cluster-e2e" -o jsonpath='{.status.location} {.status.sizeBytes} bytes')"

# ---- 5. a new cluster from the backup, signing with the first cluster's writer key
log "creating PlaitCluster $restored from $destination"
kn apply -f - >/dev/null <<EOF
apiVersion: plait.dev/v1alpha1
kind: PlaitCluster
metadata:
  name: $restored
spec:
  replicas: 3
  storage:
    size: 1Gi
  writerKeySecret: $cluster-writer-key
  bootstrap:
    from: $destination
    s3:$s3_spec
EOF
kn wait --for=condition=Ready "plaitcluster/$restored" --timeout="${timeout_s}s"
wait_cluster "$restored" 3
check_data "$restored" 3

want="$(state_root "$cluster-0")"
[[ ${#want} -eq 64 ]] || fail "no state root from $cluster-0: '$want'"
for ordinal in 0 1 2; do
    got="$(state_root "$restored-$ordinal")"
    [[ "$got" == "$want" ]] || fail "$restored-$ordinal has state root $got, $cluster-0 has $want"
done
log "state roots match: $want"

forward_client "$restored"
client put demo after-restore yes >/dev/null
[[ "$(client get demo after-restore)" == "yes" ]] || fail "write to the restored cluster"
stop_forward

log "PASSED"
