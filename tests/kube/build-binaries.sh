#!/usr/bin/env bash
# Builds the Kubernetes control-plane binaries the operator tests run against:
# kube-apiserver and kube-controller-manager from the k8s.io/kubernetes Go module, and
# etcd from go.etcd.io/etcd, all through the Go module proxy with the machine's Go
# toolchain. The binaries are cached; a second run with the same versions does nothing.
#
#   tests/kube/build-binaries.sh            # builds into ~/.cache/plait-ci/kube-<version>/bin
#   PLAIT_KUBE_BIN=/some/dir tests/kube/build-binaries.sh
#
# Prints the directory holding the binaries on its last line.
set -euo pipefail

kube_version="${PLAIT_KUBE_VERSION:-1.36.3}"
etcd_version="${PLAIT_ETCD_VERSION:-3.6.8}"
out="${PLAIT_KUBE_BIN:-$HOME/.cache/plait-ci/kube-$kube_version-etcd-$etcd_version/bin}"

if [[ -x "$out/kube-apiserver" && -x "$out/kube-controller-manager" && -x "$out/etcd" ]]; then
    echo "$out"
    exit 0
fi
command -v go >/dev/null || { echo "build-binaries: Go is required" >&2; exit 1; }
mkdir -p "$out"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
export GOFLAGS="-mod=mod"
export CGO_ENABLED=0

# k8s.io/kubernetes replaces its staging modules (k8s.io/api, k8s.io/client-go, ...)
# with directories of its own repository, which a module that depends on it cannot see:
# point each of them at its published v0.x release instead.
echo "build-binaries: kube-apiserver and kube-controller-manager v$kube_version" >&2
mkdir -p "$work/kube" && cd "$work/kube"
go mod init plait.dev/kube-binaries >/dev/null 2>&1
go mod edit -require="k8s.io/kubernetes@v$kube_version"
staging_version="v0.${kube_version#1.}"
gomod="$(go mod download -json "k8s.io/kubernetes@v$kube_version" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')"
for module in $(sed -n 's#^\s*\(k8s\.io/[a-z0-9-]*\) => \./staging/.*#\1#p' "$gomod"); do
    go mod edit -replace="$module=$module@$staging_version"
done
go build -trimpath -ldflags="-s -w" -o "$out/kube-apiserver" k8s.io/kubernetes/cmd/kube-apiserver
go build -trimpath -ldflags="-s -w" -o "$out/kube-controller-manager" k8s.io/kubernetes/cmd/kube-controller-manager

# etcd's server module replaces its sibling modules the same way.
echo "build-binaries: etcd v$etcd_version" >&2
mkdir -p "$work/etcd" && cd "$work/etcd"
go mod init plait.dev/etcd-binary >/dev/null 2>&1
go mod edit -require="go.etcd.io/etcd/server/v3@v$etcd_version"
for module in api/v3 client/pkg/v3 client/v3 pkg/v3; do
    go mod edit -replace="go.etcd.io/etcd/$module=go.etcd.io/etcd/$module@v$etcd_version"
done
go build -trimpath -ldflags="-s -w" -o "$out/etcd" go.etcd.io/etcd/server/v3

echo "$out"
