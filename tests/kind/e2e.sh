#!/usr/bin/env bash
# The operator end to end on a real Kubernetes: a kind cluster with one control plane and
# three workers (tests/kind/cluster.yaml), the images built from this tree, the chart
# installed with helm, and an S3 server (moto) in the cluster for backups. It checks, in
# order:
#
#   1. a 3-replica PlaitCluster becomes Ready and takes writes through its client Service;
#   2. scaling 3 -> 5 -> 3 keeps every write, on every replica;
#   3. a deleted replica pod comes back Ready with the data;
#   4. an on-demand PlaitBackup completes;
#   5. a second cluster bootstrapped from that backup has the same state root, accepts
#      writes with the first cluster's writer key through its own client Service, and
#      the first cluster does not see them (after a restore they are separate clusters);
#   6. with the operator stopped, the cluster keeps serving and a scale to 4 made
#      meanwhile is not acted on; once the operator is back it is (4 ready replicas, every
#      write on each, a new write), and the cluster scales back to 3 while the leading
#      operator pod is killed (the standby takes the Lease and finishes);
#   7. the cluster's PodDisruptionBudget (named after the cluster, maxUnavailable 1) lets
#      `kubectl drain` of a worker running one of its replicas succeed, writes go on while
#      that replica is away, a drain of a second replica is refused meanwhile, and the
#      only replica of a 1-replica cluster is refused too; uncordoned, every cluster is
#      Ready again with all its replicas and data;
#   8. a new spec.image (a second tag of the replica image) replaces the replicas one at
#      a time, highest ordinal first (checked on every poll of the pods), and every write
#      survives the roll;
#   9. `helm upgrade` of the operator to a new image (and a new default replica image)
#      restarts the operator but no replica pod and rolls no cluster, and the new operator
#      still reconciles (plait.dev/paused on and off).
#
# Needs bash (3.2 is enough), docker, kind, kubectl, helm, curl, and cargo unless PLAITCTL
# is set. The kind cluster is deleted on exit unless KEEP_CLUSTER=1 (a kept cluster is
# reused by the next run, which first deletes the namespace of the clusters, applies the
# CRDs of this tree and uncordons every node; a kept cluster without three workers is
# made again).
#
#   tests/kind/e2e.sh
#   KEEP_CLUSTER=1 tests/kind/e2e.sh
#   cargo test -p plait-tests --test it chart::kind_end_to_end -- --ignored
#
# Settings: PLAIT_E2E_CLUSTER (kind cluster name, plait-e2e), PLAIT_E2E_TIMEOUT (seconds
# each wait may take, 600), PLAIT_E2E_MOTO_IMAGE (the S3 server's image),
# PLAIT_E2E_NODE_IMAGE (kind's node image, for another Kubernetes version; kind's
# default when empty), PLAITCTL (a built plaitctl; otherwise `cargo build -p plait-cli`).
set -euo pipefail
cd "$(dirname "$0")/../.."

kind_cluster="${PLAIT_E2E_CLUSTER:-plait-e2e}"
timeout_s="${PLAIT_E2E_TIMEOUT:-600}"
moto_image="${PLAIT_E2E_MOTO_IMAGE:-motoserver/moto:5.2.1}"
node_image="${PLAIT_E2E_NODE_IMAGE:-}"
workers_wanted=3
plaitd_repo="plait/plaitd"
operator_repo="plait/plait-operator"
tag="e2e"
# A second tag of the same images, for the image roll (8) and the chart upgrade (9).
tag2="e2e-2"
context="kind-$kind_cluster"
operator_namespace="plait-system"
# The chart names its objects after the release when the release name holds the chart's.
operator_release="plait-operator"
operator_deployment="plait-operator"
operator_selector="app.kubernetes.io/name=plait-operator,app.kubernetes.io/instance=$operator_release"
namespace="plait-e2e"
cluster="demo"
restored="demo-restored"
solo="solo"
bucket="plait-backups"
destination="s3://$bucket/e2e"
s3_endpoint="http://s3.$namespace.svc:5000"
# Local ports of the port-forwards (one runs at a time); uncommon ones, so they rarely
# collide.
client_port=17070
admin_port=17071
s3_port=17072
# How long a new port-forward may take to listen.
forward_timeout_s=60

# fd 3 is the script's stderr, kept so that messages from inside a check whose output
# `eventually` discards are still seen.
exec 3>&2
log() { echo "e2e: $*" >&3; }
fail() {
    echo "e2e: FAILED: $*" >&3
    exit 1
}

tools=(docker kind kubectl helm curl)
[[ -n "${PLAITCTL:-}" ]] || tools+=(cargo)
for tool in "${tools[@]}"; do
    command -v "$tool" >/dev/null 2>&1 || fail "$tool is required (helm: tests/kube/install-helm.sh)"
done

k() { kubectl --context "$context" "$@"; }
kn() { k --namespace "$namespace" "$@"; }

# Scratch space: credentials from the clusters' Secrets, image archives, the
# port-forward's log. Removed on exit.
work_dir="$(mktemp -d)"
pki_dir="$work_dir/pki"
forward_log="$work_dir/port-forward.log"

# ---- port-forwards. One at a time: kubectl itself runs in the background (not a shell
# function, whose subshell `kill` would stop while kubectl goes on holding the port), its
# pid in forward_pid, stopped by stop_forward and on exit.
forward_pid=""
forward_target=""
forward_port=""
forward_remote=""

# Whether something accepts TCP connections on 127.0.0.1:$1.
port_open() { (: <>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# The forward is running and its local port accepts connections. Starts kubectl when it
# is not running (it exits when its pod goes away or a connection to the pod fails).
forward_up() {
    if [[ -n "$forward_pid" ]] && ! kill -0 "$forward_pid" 2>/dev/null; then
        wait "$forward_pid" 2>/dev/null || true
        forward_pid=""
        # Kept for the failure message; said at once when the forward had been up (one
        # that never started is reported by start_forward).
        mv -f "$forward_log" "$forward_log.exited"
        if grep -q "^Forwarding from" "$forward_log.exited"; then
            log "port-forward to $forward_target exited ($(tail -n 1 "$forward_log.exited")); starting it again"
        fi
    fi
    if [[ -z "$forward_pid" ]]; then
        kubectl --context "$context" --namespace "$namespace" port-forward "$forward_target" \
            "$forward_port:$forward_remote" >"$forward_log" 2>&1 3>&- &
        forward_pid=$!
    fi
    grep -q "^Forwarding from 127.0.0.1:$forward_port " "$forward_log" && port_open "$forward_port"
}

# Forwards local port $2 to port $3 of $1 (svc/NAME or pod/NAME in the clusters'
# namespace), and waits until the local port accepts connections.
start_forward() {
    stop_forward
    forward_target="$1"
    forward_port="$2"
    forward_remote="$3"
    rm -f "$forward_log.exited"
    local deadline=$((SECONDS + forward_timeout_s))
    until forward_up; do
        ((SECONDS < deadline)) || fail "port-forward to $forward_target: 127.0.0.1:$forward_port not listening after ${forward_timeout_s}s: $(cat "$forward_log.exited" "$forward_log" 2>/dev/null | tail -n 5 | tr '\n' ' ')"
        sleep 0.5
    done
}

# Runs "$@" through the forward, starting kubectl again first if it has exited.
forwarded() { forward_up && "$@"; }

stop_forward() {
    if [[ -n "$forward_pid" ]]; then
        kill "$forward_pid" 2>/dev/null || true
        wait "$forward_pid" 2>/dev/null || true
        forward_pid=""
    fi
}

# Nodes this run cordoned; uncordoned on exit when the kind cluster is kept.
cordoned=""

# On failure: what the operator and the clusters looked like, before the cluster goes.
diagnose() {
    log "---- diagnostics"
    k get nodes -o wide || true
    k get plaitclusters,plaitbackups,statefulsets,pods,pvc,services,pdb -A -o wide || true
    kn describe plaitclusters || true
    kn get events --sort-by=.lastTimestamp | tail -n 50 || true
    # Every operator pod: the leader, and the standby that may have taken over.
    k --namespace "$operator_namespace" get "lease/$operator_deployment" -o wide || true
    k --namespace "$operator_namespace" logs -l "$operator_selector" --prefix --tail=300 || true
    if [[ -s "$forward_log" ]]; then
        log "last port-forward ($forward_target):"
        tail -n 20 "$forward_log" >&2 || true
    fi
}

cleanup() {
    local status=$? node
    stop_forward
    [[ $status -eq 0 ]] || diagnose
    rm -rf "$work_dir"
    if [[ "${KEEP_CLUSTER:-0}" == "1" ]]; then
        for node in $cordoned; do
            k uncordon "$node" >/dev/null 2>&1 || true
        done
        log "keeping kind cluster $kind_cluster (kubectl --context $context)"
    else
        log "deleting kind cluster $kind_cluster"
        kind delete cluster --name "$kind_cluster" >/dev/null 2>&1 || true
    fi
    exit $status
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---- waiting. Every wait polls with a deadline; no sleep stands in for a condition.

# Runs "$@" until it succeeds or $1 seconds have passed; returns whether it succeeded.
within() {
    local seconds="$1" deadline
    shift
    deadline=$((SECONDS + seconds))
    until "$@" >/dev/null 2>&1; do
        ((SECONDS < deadline)) || return 1
        sleep 2
    done
}

# Runs "$@" until it succeeds, for at most timeout_s seconds.
eventually() {
    local what="$1"
    shift
    within "$timeout_s" "$@" || fail "timed out after ${timeout_s}s: $what"
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

# Condition $2 of PlaitCluster $1 has status $3.
condition_is() {
    [[ "$(kn get "plaitcluster/$1" -o jsonpath="{.status.conditions[?(@.type==\"$2\")].status}")" == "$3" ]]
}

# The labels the operator gives a cluster's replica pods (plan::selector_labels).
replica_selector() { echo "app.kubernetes.io/name=plaitd,app.kubernetes.io/instance=$1"; }
# "name=uid" of each replica pod of cluster $1, sorted.
pod_uids() {
    kn get pods -l "$(replica_selector "$1")" \
        -o jsonpath='{range .items[*]}{.metadata.name}={.metadata.uid}{"\n"}{end}' | sort
}
pod_uid() { kn get pod "$1" -o jsonpath='{.metadata.uid}'; }
# Pod $1 does not exist.
pod_gone() {
    local pod
    pod="$(kn get pod "$1" --ignore-not-found -o name)" && [[ -z "$pod" ]]
}
# Cluster $1 has no pods left.
no_pods() {
    local pods
    pods="$(kn get pods -l "$(replica_selector "$1")" -o name)" && [[ -z "$pods" ]]
}
# Pod $1 exists, is not on a node, and the scheduler found no node for it.
pod_unschedulable() {
    [[ "$(kn get pod "$1" -o jsonpath='{.spec.nodeName}|{.status.conditions[?(@.type=="PodScheduled")].reason}')" == "|Unschedulable" ]]
}
# PodDisruptionBudget $1 allows $2 disruptions of $3 expected pods.
pdb_allows() {
    [[ "$(kn get "pdb/$1" -o jsonpath='{.status.disruptionsAllowed}/{.status.expectedPods}')" == "$2/$3" ]]
}
# The operator made PodDisruptionBudget $1 for PlaitCluster $1, selecting its replicas,
# with maxUnavailable $2.
check_pdb() {
    local got
    got="$(kn get "pdb/$1" -o jsonpath='{.metadata.ownerReferences[0].kind}/{.metadata.ownerReferences[0].name} {.spec.selector.matchLabels.app\.kubernetes\.io/instance} {.spec.maxUnavailable}')"
    [[ "$got" == "PlaitCluster/$1 $1 $2" ]] || fail "pdb/$1: want owner PlaitCluster/$1, selector instance $1, maxUnavailable $2; got '$got'"
}
operator_gone() {
    local pods
    pods="$(k --namespace "$operator_namespace" get pods -l "$operator_selector" -o name)" && [[ -z "$pods" ]]
}

# ---- credentials and plaitctl. Clusters are secured (TLS and tokens, the operator's
# default): credentials come from the Secrets the operator makes, into the scratch
# directory.
secret_field() { kn get secret "$1" -o "go-template={{index .data \"$2\"}}" | base64 --decode; }
# The application token of cluster $1 (Secret <cluster>-client), read once.
client_token_of() {
    local file="$work_dir/$1.token"
    [[ -s "$file" ]] || secret_field "$1-client" token >"$file"
    cat "$file"
}
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
    local pod="$1" token
    shift
    token="$(client_token_of "${pod%-*}")"
    kn exec "$pod" -c plaitd -- plaitctl --addr 127.0.0.1:7070 --tls-ca /etc/plait/tls/ca.crt \
        --token "$token" "$@"
}
replica_has() {
    local pod="$1" key="$2" value="$3"
    [[ "$(in_replica "$pod" get demo "$key" 2>/dev/null)" == "$value" ]]
}
# The replica answers that $2 is not set (and the run fails at once if it holds it).
replica_lacks() {
    local out
    if out="$(in_replica "$1" get demo "$2" 2>&1)"; then
        fail "$1 holds $2 ('$out'), which was written to another cluster"
    fi
    [[ "$out" == *"is not set"* ]]
}

# The writes made to $cluster, in order (two lists: bash 3.2 has no associative arrays).
written_keys=()
written_values=()
remember() {
    written_keys+=("$1")
    written_values+=("$2")
}
# Every replica of cluster $1 ($2 replicas) holds the first $3 writes (default: all).
check_data() {
    local name="$1" replicas="$2" count="${3:-${#written_keys[@]}}" ordinal i
    for ((ordinal = 0; ordinal < replicas; ordinal++)); do
        for ((i = 0; i < count; i++)); do
            eventually "$name-$ordinal has ${written_keys[i]}" \
                replica_has "$name-$ordinal" "${written_keys[i]}" "${written_values[i]}"
        done
    done
    log "$name: all $replicas replicas hold all $count keys"
}

# Port-forwards local client_port to the client Service of a cluster and waits until
# plaitctl gets through.
client_ca=""
client_token=""
forward_client() {
    client_ca="$work_dir/$1-client-ca.crt"
    secret_field "$1-client" ca.crt >"$client_ca"
    client_token="$(client_token_of "$1")"
    start_forward "svc/$1" "$client_port" 7070
    eventually "plaitctl health through svc/$1" forwarded client health
}
client() {
    PLAIT_TOKEN="$client_token" "$plaitctl" --addr "127.0.0.1:$client_port" \
        --tls-ca "$client_ca" "$@"
}
# Through the client forward: writes $1=$2, acknowledged by $3 replicas, and reads it
# back.
put_checked() {
    client put --replicas "$3" demo "$1" "$2" >/dev/null
    [[ "$(client get demo "$1")" == "$2" ]] || fail "read back $1 through $forward_target"
}

# Sets `root` to the state root of log demo on replica pod $1: a checkpoint, which takes
# cluster-admin, over a port-forward to the pod's admin port with an admin certificate. (A variable,
# not output: in a command substitution the forward would belong to a subshell.)
admin_ctl() {
    local dir="$1"
    shift
    "$plaitctl" --addr "127.0.0.1:$admin_port" --tls-ca "$dir/ca.crt" \
        --cert "$dir/e2e-admin.crt" --key "$dir/e2e-admin.key" "$@"
}
root=""
state_root() {
    local dir
    dir="$(admin_pki "${1%-*}")"
    # The admin port: the API port refuses cluster-admin calls.
    start_forward "pod/$1" "$admin_port" 7072
    eventually "plaitctl health through the port-forward to pod/$1" forwarded admin_ctl "$dir" health
    root="$(admin_ctl "$dir" --output json checkpoint demo | sed -n 's/.*"state_root": *"\([0-9a-f]*\)".*/\1/p')"
    stop_forward
}

# One line per replica pod of cluster $1: name|image of the plaitd container|Ready
# status|deletion timestamp.
pods_of() {
    kn get pods -l "$(replica_selector "$1")" \
        -o jsonpath='{range .items[*]}{.metadata.name}|{.spec.containers[?(@.name=="plaitd")].image}|{.status.conditions[?(@.type=="Ready")].status}|{.metadata.deletionTimestamp}{"\n"}{end}'
}

# Waits until every one of the $2 replica pods of cluster $1 runs image $3 and is Ready,
# polling the pods about once a second. On every poll: the pods on the new image are the
# highest ordinals (a suffix: nothing skipped ahead), and at most one replica is away
# (missing, terminating or not Ready). At the end, the order in which the pods were
# seen on the new image must be highest ordinal first. (Pods first seen on it in the
# same poll count highest first: two replacements inside one poll would have had two
# replicas away at once, each for longer than a poll, which the check above sees.)
roll_to() {
    local name="$1" replicas="$2" image="$3"
    local deadline=$((SECONDS + timeout_s)) order="" expected="" snapshot o pod pod_image ready deleting away updated
    local -a is_new is_up seen
    for ((o = replicas - 1; o >= 0; o--)); do
        seen[o]=0
        expected="$expected $o"
    done
    while :; do
        ((SECONDS < deadline)) || fail "timed out after ${timeout_s}s: rolling $name to $image (seen on it so far:${order:- none})"
        if ! snapshot="$(pods_of "$name")"; then
            sleep 1
            continue
        fi
        for ((o = 0; o < replicas; o++)); do
            is_new[o]=0
            is_up[o]=0
        done
        while IFS='|' read -r pod pod_image ready deleting; do
            o="${pod##*-}"
            case "$o" in
                '' | *[!0-9]*) continue ;;
            esac
            if ((o >= replicas)); then
                continue
            fi
            if [[ "$pod_image" == "$image" ]]; then
                is_new[o]=1
            fi
            if [[ "$ready" == "True" && -z "$deleting" ]]; then
                is_up[o]=1
            fi
        done <<<"$snapshot"
        for ((o = 0; o + 1 < replicas; o++)); do
            if ((is_new[o] == 1 && is_new[o + 1] == 0)); then
                fail "$name-$o runs $image while $name-$((o + 1)) does not: not highest ordinal first. Pods: $(echo "$snapshot" | tr '\n' ' ')"
            fi
        done
        away=0
        updated=0
        for ((o = 0; o < replicas; o++)); do
            if ((is_up[o] == 0)); then
                away=$((away + 1))
            fi
            if ((is_new[o] == 1 && is_up[o] == 1)); then
                updated=$((updated + 1))
            fi
        done
        ((away <= 1)) || fail "$away replicas of $name away at once during the roll, not one at a time. Pods: $(echo "$snapshot" | tr '\n' ' ')"
        for ((o = replicas - 1; o >= 0; o--)); do
            if ((is_new[o] == 1 && seen[o] == 0)); then
                seen[o]=1
                order="$order $o"
                log "$name-$o runs $image"
            fi
        done
        if ((updated == replicas)); then
            break
        fi
        sleep 1
    done
    [[ "$order" == "$expected" ]] || fail "$name's replicas took $image in the order$order, not$expected"
    log "$name rolled to $image one replica at a time, in the order$order"
}

helm_install() {
    helm --kube-context "$context" upgrade --install "$operator_release" charts/plait-operator \
        --namespace "$operator_namespace" \
        --set-string operator.image.tag="$1" \
        --set-string replicaImage.tag="$2" \
        --wait --timeout "${timeout_s}s"
}

# `kind load docker-image` fails with Docker's containerd image store; an archive that
# `docker save` writes loads with either store.
load_image() {
    local archive
    archive="$work_dir/$(printf '%s' "$1" | tr '/:' '__').tar"
    log "loading $1 into $kind_cluster"
    docker save -o "$archive" "$1"
    kind load image-archive "$archive" --name "$kind_cluster"
    rm -f "$archive"
}

create_kind_cluster() {
    local -a args
    args=(--name "$kind_cluster" --config tests/kind/cluster.yaml --wait 180s)
    if [[ -n "$node_image" ]]; then
        args+=(--image "$node_image")
    fi
    log "creating kind cluster $kind_cluster (1 control plane, $workers_wanted workers)"
    kind create cluster "${args[@]}"
}

# ---- the kind cluster, images and tools
clusters="$(kind get clusters 2>/dev/null || true)"
if grep -qx "$kind_cluster" <<<"$clusters"; then
    workers="$(k get nodes -l '!node-role.kubernetes.io/control-plane' -o name | wc -l | tr -d ' ')"
    if ((workers >= workers_wanted)); then
        log "reusing kind cluster $kind_cluster"
    else
        log "kind cluster $kind_cluster has $workers workers, not $workers_wanted: making it again"
        kind delete cluster --name "$kind_cluster"
        create_kind_cluster
    fi
else
    create_kind_cluster
fi
k wait --for=condition=Ready nodes --all --timeout="${timeout_s}s" >/dev/null
# A kept cluster may have a node a failed run left cordoned.
for node in $(k get nodes -o jsonpath='{.items[*].metadata.name}'); do
    k uncordon "$node" >/dev/null
done

log "building images $plaitd_repo:$tag and $operator_repo:$tag (and tag $tag2 of both)"
docker build --target plaitd -t "$plaitd_repo:$tag" .
docker build --target operator -t "$operator_repo:$tag" .
docker tag "$plaitd_repo:$tag" "$plaitd_repo:$tag2"
docker tag "$operator_repo:$tag" "$operator_repo:$tag2"
for image in "$plaitd_repo:$tag" "$plaitd_repo:$tag2" "$operator_repo:$tag" "$operator_repo:$tag2"; do
    load_image "$image"
done

if [[ -n "${PLAITCTL:-}" ]]; then
    plaitctl="$PLAITCTL"
else
    log "building plaitctl"
    cargo build --quiet --locked -p plait-cli
    plaitctl="${CARGO_TARGET_DIR:-target}/debug/plaitctl"
fi
[[ -x "$plaitctl" ]] || fail "no plaitctl at $plaitctl"

# ---- a kept cluster's PlaitClusters from an earlier run go first, with their namespace,
# while that run's operator (if any) is still there to see them go.
log "deleting namespace $namespace if an earlier run left it"
k delete namespace "$namespace" --ignore-not-found --wait --timeout="${timeout_s}s" >/dev/null

# ---- the CRDs of this tree, server-side, so that they replace a kept cluster's stale
# ones whoever applied those. They carry the release's ownership metadata so that the
# chart (which has them in templates/, crds.create) adopts them instead of refusing
# objects it does not own.
crds=(crd/plaitclusters.plait.dev crd/plaitbackups.plait.dev)
log "applying manifests/crds.yaml"
k apply --server-side --force-conflicts -f manifests/crds.yaml >/dev/null
k label --overwrite "${crds[@]}" app.kubernetes.io/managed-by=Helm >/dev/null
k annotate --overwrite "${crds[@]}" meta.helm.sh/release-name="$operator_release" \
    meta.helm.sh/release-namespace="$operator_namespace" >/dev/null
k wait --for=condition=Established "${crds[@]}" --timeout=60s >/dev/null

# ---- the operator, with the chart. Its namespace enforces the restricted Pod Security
# Standard, which the chart's defaults must meet.
k create namespace "$operator_namespace" --dry-run=client -o yaml | k apply -f - >/dev/null
k label --overwrite namespace "$operator_namespace" pod-security.kubernetes.io/enforce=restricted >/dev/null
log "installing the chart"
helm_install "$tag" "$tag"
k --namespace "$operator_namespace" rollout status "deployment/$operator_deployment" --timeout="${timeout_s}s"
policy="$(k get crd plaitclusters.plait.dev -o jsonpath='{.metadata.annotations.helm\.sh/resource-policy}')"
[[ "$policy" == "keep" ]] || fail "the chart's CRDs should carry helm.sh/resource-policy: keep, not '$policy'"

# ---- a clean namespace for the clusters, with an S3 server and its bucket. It warns
# (not enforces) on the restricted standard: the S3 server is only a test fixture. The
# server runs on the control plane, so draining a worker never takes it away.
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
      nodeSelector:
        node-role.kubernetes.io/control-plane: ""
      tolerations:
        - key: node-role.kubernetes.io/control-plane
          operator: Exists
          effect: NoSchedule
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
start_forward svc/s3 "$s3_port" 5000
# moto creates a bucket from a plain PUT, no signature needed.
eventually "creating bucket $bucket" forwarded curl -fsS -X PUT "http://127.0.0.1:$s3_port/$bucket"
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

forward_client "$cluster"
client log create demo --type kv >/dev/null
for i in 1 2 3 4 5; do
    # --replicas 3: acknowledged only once all three replicas hold it.
    client put --replicas 3 demo "key-$i" "value-$i" >/dev/null
    remember "key-$i" "value-$i"
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
put_checked after-scaling yes 3
remember after-scaling yes
stop_forward

# ---- 3. a lost pod comes back with its data
old_uid="$(pod_uid "$cluster-1")"
log "deleting pod $cluster-1"
kn delete pod "$cluster-1" --wait=true >/dev/null
pod_replaced() {
    local uid
    uid="$(pod_uid "$cluster-1")"
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
# The restored cluster holds these first writes; later ones go to one cluster or the other.
backed_up=${#written_keys[@]}

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
check_data "$restored" 3 "$backed_up"

state_root "$cluster-0"
want="$root"
[[ ${#want} -eq 64 ]] || fail "no state root from $cluster-0: '$want'"
for ordinal in 0 1 2; do
    state_root "$restored-$ordinal"
    [[ "$root" == "$want" ]] || fail "$restored-$ordinal has state root $root, $cluster-0 has $want"
done
log "state roots match: $want"

# A write through the restored cluster's own client Service (its CA, its token), held by
# all three of its replicas, and by none of the source cluster's.
forward_client "$restored"
put_checked after-restore yes 3
stop_forward
# What only the restored cluster holds.
check_restored() {
    local ordinal
    check_data "$restored" 3 "$backed_up"
    for ordinal in 0 1 2; do
        eventually "$restored-$ordinal has after-restore" replica_has "$restored-$ordinal" after-restore yes
    done
}
check_restored
for ordinal in 0 1 2; do
    eventually "$cluster-$ordinal answers that after-restore is not set" replica_lacks "$cluster-$ordinal" after-restore
done
log "the write to $restored is on its replicas and not on $cluster's"

# ---- 6. the operator goes away and comes back. The data path needs no operator; a spec
# change made meanwhile waits for it.
log "stopping the operator"
k --namespace "$operator_namespace" scale "deployment/$operator_deployment" --replicas=0 >/dev/null
eventually "the operator's pods gone" operator_gone
kn wait --for=condition=Ready pod -l "$(replica_selector "$cluster")" --timeout=60s >/dev/null
forward_client "$cluster"
put_checked while-operator-down yes 3
remember while-operator-down yes
stop_forward
log "scaling $cluster to 4 while the operator is down"
kn scale "plaitcluster/$cluster" --replicas=4
[[ "$(kn get statefulset "$cluster" -o jsonpath='{.spec.replicas}')" == "3" ]] || fail "the StatefulSet changed with no operator running"
generations="$(kn get "plaitcluster/$cluster" -o jsonpath='{.metadata.generation} {.status.observedGeneration}')"
[[ "${generations% *}" != "${generations#* }" ]] || fail "$cluster's status is for generation ${generations#* } with no operator running"
log "starting the operator again"
k --namespace "$operator_namespace" scale "deployment/$operator_deployment" --replicas=2 >/dev/null
k --namespace "$operator_namespace" rollout status "deployment/$operator_deployment" --timeout="${timeout_s}s"
wait_cluster "$cluster" 4
check_data "$cluster" 4
forward_client "$cluster"
put_checked after-operator-restart yes 4
remember after-operator-restart yes
stop_forward
# The leading operator (the Lease's holder) is killed as the scale-down starts; the
# standby takes the Lease once it expires and finishes the scale-down.
leader="$(k --namespace "$operator_namespace" get "lease/$operator_deployment" -o jsonpath='{.spec.holderIdentity}')"
[[ -n "$leader" ]] || fail "no operator holds the Lease $operator_namespace/$operator_deployment"
log "scaling $cluster back to 3, killing the leading operator $leader"
kn scale "plaitcluster/$cluster" --replicas=3
k --namespace "$operator_namespace" delete pod "$leader" --grace-period=0 --force >/dev/null 2>&1
wait_cluster "$cluster" 3
successor="$(k --namespace "$operator_namespace" get "lease/$operator_deployment" -o jsonpath='{.spec.holderIdentity}')"
[[ -n "$successor" && "$successor" != "$leader" ]] || fail "the Lease is held by '$successor' after $leader was killed"
log "$successor took over from $leader and finished the scale-down"
check_data "$cluster" 3
# The drains below pick replicas by their pods: the removed one must be gone.
eventually "pod $cluster-3 gone" pod_gone "$cluster-3"

# ---- 7. node drains against the PodDisruptionBudget
check_pdb "$cluster" 1
check_pdb "$restored" 1
eventually "pdb/$cluster allows 1 disruption of 3 pods" pdb_allows "$cluster" 1 3
eventually "pdb/$restored allows 1 disruption of 3 pods" pdb_allows "$restored" 1 3

# "instance pod node" of every replica pod. The node to drain runs a replica of $cluster
# and no two replicas of any cluster (otherwise the PDB would rightly hold the drain).
placement="$(kn get pods -l app.kubernetes.io/name=plaitd -o jsonpath='{range .items[*]}{.metadata.labels.app\.kubernetes\.io/instance} {.metadata.name} {.spec.nodeName}{"\n"}{end}')"
drain_node="$(echo "$placement" | awk -v c="$cluster" '
    $3 != "" { count[$1 " " $3]++; if ($1 == c) hosts[$3] = 1 }
    END {
        for (k in count) if (count[k] > 1) { split(k, f, " "); crowded[f[2]] = 1 }
        for (n in hosts) if (!(n in crowded)) { print n; exit }
    }')"
[[ -n "$drain_node" ]] || fail "no node runs a replica of $cluster and at most one of each cluster: $(echo "$placement" | tr '\n' ';')"
drained_pod="$(echo "$placement" | awk -v c="$cluster" -v n="$drain_node" '$1 == c && $3 == n { print $2; exit }')"
log "draining $drain_node, which runs $drained_pod"
cordoned="$cordoned $drain_node"
k drain "$drain_node" --ignore-daemonsets --delete-emptydir-data --timeout="${timeout_s}s"
on_node="$(kn get pods -l "$(replica_selector "$cluster")" --field-selector "spec.nodeName=$drain_node" -o name)"
[[ -z "$on_node" ]] || fail "$drain_node is drained but still runs $on_node"

# The cluster serves writes with that replica away: the two others acknowledge.
forward_client "$cluster"
put_checked during-drain yes 2
remember during-drain yes
stop_forward

# With one replica away the budget is spent: draining a second replica is refused. Kind's
# volumes are bound to their node, so the drained replica waits, unschedulable, for its
# cordoned node; with storage that lets it start elsewhere, it may be back already, and
# this check is skipped.
if within 60 pod_unschedulable "$drained_pod"; then
    eventually "pdb/$cluster allows no disruption" pdb_allows "$cluster" 0 3
    blocked_pod="$(echo "$placement" | awk -v c="$cluster" -v n="$drain_node" '$1 == c && $3 != n { print $2; exit }')"
    blocked_node="$(kn get pod "$blocked_pod" -o jsonpath='{.spec.nodeName}')"
    blocked_uid="$(pod_uid "$blocked_pod")"
    log "draining $blocked_pod's node $blocked_node too, which the budget must refuse"
    cordoned="$cordoned $blocked_node"
    if out="$(k drain "$blocked_node" --pod-selector "$(replica_selector "$cluster")" --ignore-daemonsets \
        --delete-emptydir-data --timeout=30s 2>&1)"; then
        fail "draining $blocked_node evicted a second replica of $cluster: $out"
    fi
    [[ "$out" == *"disruption budget"* ]] || fail "draining $blocked_node failed, but not for the PodDisruptionBudget: $out"
    [[ "$(pod_uid "$blocked_pod")" == "$blocked_uid" ]] || fail "$blocked_pod was evicted"
    k uncordon "$blocked_node" >/dev/null
    log "the budget kept $blocked_pod"
else
    log "$drained_pod did not wait for $drain_node (its volume is not bound there): skipping the second drain"
fi
k uncordon "$drain_node" >/dev/null
wait_cluster "$cluster" 3
wait_cluster "$restored" 3
check_data "$cluster" 3
check_restored
eventually "pdb/$cluster allows 1 disruption of 3 pods again" pdb_allows "$cluster" 1 3

# A 1-replica cluster's budget allows no disruption at all: its node cannot be drained.
log "creating PlaitCluster $solo (1 replica)"
kn apply -f - >/dev/null <<EOF
apiVersion: plait.dev/v1alpha1
kind: PlaitCluster
metadata:
  name: $solo
spec:
  replicas: 1
  storage:
    size: 1Gi
EOF
kn wait --for=condition=Ready "plaitcluster/$solo" --timeout="${timeout_s}s"
wait_cluster "$solo" 1
check_pdb "$solo" 0
eventually "pdb/$solo allows no disruption of its 1 pod" pdb_allows "$solo" 0 1
solo_node="$(kn get pod "$solo-0" -o jsonpath='{.spec.nodeName}')"
solo_uid="$(pod_uid "$solo-0")"
log "draining $solo-0's node $solo_node, which the budget must refuse"
cordoned="$cordoned $solo_node"
if out="$(k drain "$solo_node" --pod-selector "$(replica_selector "$solo")" --ignore-daemonsets \
    --delete-emptydir-data --timeout=30s 2>&1)"; then
    fail "draining $solo_node evicted the only replica of $solo: $out"
fi
[[ "$out" == *"disruption budget"* ]] || fail "draining $solo_node failed, but not for the PodDisruptionBudget: $out"
[[ "$(pod_uid "$solo-0")" == "$solo_uid" ]] || fail "$solo-0 was evicted"
k uncordon "$solo_node" >/dev/null
log "the budget kept $solo-0; deleting $solo"
kn delete "plaitcluster/$solo" --wait=true >/dev/null
eventually "$solo's pods gone" no_pods "$solo"

# ---- 8. a new image, rolled one replica at a time, highest ordinal first
old_image="$(kn get "plaitcluster/$cluster" -o jsonpath='{.status.image}')"
[[ "$old_image" == "$plaitd_repo:$tag" ]] || fail "$cluster's status.image is '$old_image', not the chart's replicaImage $plaitd_repo:$tag"
new_image="$plaitd_repo:$tag2"
uids_before="$(pod_uids "$cluster")"
log "rolling $cluster to $new_image"
kn patch "plaitcluster/$cluster" --type merge -p "{\"spec\":{\"image\":\"$new_image\"}}" >/dev/null
roll_to "$cluster" 3 "$new_image"
wait_cluster "$cluster" 3
[[ "$(kn get "plaitcluster/$cluster" -o jsonpath='{.status.image}')" == "$new_image" ]] || fail "$cluster's status.image is not $new_image after the roll"
uids_after="$(pod_uids "$cluster")"
for line in $uids_before; do
    case "$uids_after" in
        *"$line"*) fail "${line%%=*} was not replaced by the roll" ;;
    esac
done
check_data "$cluster" 3
forward_client "$cluster"
put_checked after-roll yes 3
remember after-roll yes
stop_forward

# ---- 9. a chart upgrade: a new operator image, and a new default replica image, which
# must move no existing cluster (each keeps the image in its status)
restored_image="$(kn get "plaitcluster/$restored" -o jsonpath='{.status.image}')"
[[ "$restored_image" == "$plaitd_repo:$tag" ]] || fail "$restored's status.image is '$restored_image', not $plaitd_repo:$tag"
uids_before="$(pod_uids "$cluster"; pod_uids "$restored")"
sets_before="$(kn get statefulsets "$cluster" "$restored" -o jsonpath='{range .items[*]}{.metadata.name}={.metadata.generation} {end}')"
log "upgrading the chart: operator $operator_repo:$tag2, default replica image $plaitd_repo:$tag2"
helm_install "$tag2" "$tag2"
k --namespace "$operator_namespace" rollout status "deployment/$operator_deployment" --timeout="${timeout_s}s"
deployed="$(k --namespace "$operator_namespace" get "deployment/$operator_deployment" -o jsonpath='{.spec.template.spec.containers[?(@.name=="operator")].image} {.spec.template.spec.containers[?(@.name=="operator")].env[?(@.name=="PLAIT_OPERATOR_REPLICA_IMAGE")].value}')"
[[ "$deployed" == "$operator_repo:$tag2 $plaitd_repo:$tag2" ]] || fail "after the upgrade the operator runs (image, replica image) '$deployed'"
# The new operator acts on both clusters: pausing and resuming each shows in its status,
# and resuming is a full reconcile.
for name in "$cluster" "$restored"; do
    kn annotate "plaitcluster/$name" plait.dev/paused=true --overwrite >/dev/null
    eventually "$name paused by the upgraded operator" condition_is "$name" Paused True
    kn annotate "plaitcluster/$name" plait.dev/paused- >/dev/null
    eventually "$name resumed by the upgraded operator" condition_is "$name" Paused False
done
wait_cluster "$cluster" 3
wait_cluster "$restored" 3
[[ "$(pod_uids "$cluster"; pod_uids "$restored")" == "$uids_before" ]] || fail "the chart upgrade restarted replica pods"
sets_after="$(kn get statefulsets "$cluster" "$restored" -o jsonpath='{range .items[*]}{.metadata.name}={.metadata.generation} {end}')"
[[ "$sets_after" == "$sets_before" ]] || fail "the chart upgrade changed the StatefulSets: $sets_before -> $sets_after"
[[ "$(kn get "plaitcluster/$restored" -o jsonpath='{.status.image}')" == "$plaitd_repo:$tag" ]] || fail "the chart upgrade moved $restored's image"
log "the chart upgrade restarted no replica and rolled no cluster"
forward_client "$cluster"
put_checked after-upgrade yes 3
remember after-upgrade yes
stop_forward
check_data "$cluster" 3
check_restored

log "PASSED"
