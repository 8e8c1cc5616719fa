#!/usr/bin/env bash
# Installs what the test suite needs beyond Rust, so that ./scripts/test.sh passes on a
# fresh machine by itself: rustfmt and clippy, moto's S3 server (PyPI), s3s-fs (an S3
# server that checks signatures, crates.io), the Kubernetes control-plane binaries and
# helm (built from the Go module proxy by tests/kube/). Everything built is cached
# outside the clone (~/.cache/plait-ci), so a second run only checks.
#
# scripts/test.sh sources this file; the PATH and PLAIT_KUBE_BIN it sets are then in
# the test run's environment. Run on its own, it installs and prints those settings:
#
#   ./scripts/test-prereqs.sh          # install, then print the exports to use
#   source scripts/test-prereqs.sh     # install and set them in this shell
set -euo pipefail

plait_prereqs_main() {
  local root
  root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

  if ! command -v cargo >/dev/null 2>&1; then
    echo "cargo is required (install Rust with rustup)" >&2
    return 1
  fi
  # rustfmt and clippy are part of the test command.
  if command -v rustup >/dev/null 2>&1; then
    rustup component add rustfmt clippy >/dev/null 2>&1 || true
  fi

  # The backup tests run against a real S3-compatible server: moto's, from PyPI.
  if ! command -v moto_server >/dev/null 2>&1; then
    echo "== installing moto_server (S3-compatible test server) from PyPI"
    python3 -m pip install --quiet --disable-pip-version-check 'moto[server]'
  fi
  # Console scripts land in the interpreter's scripts directory; pyenv shims may not
  # know a freshly installed one yet.
  PATH="$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))'):$PATH"
  export PATH
  command -v moto_server >/dev/null 2>&1 || {
    echo "moto_server is not on PATH after installing it" >&2
    return 1
  }

  # The wrong-credentials test needs an S3 server that checks signatures: s3s-fs, built
  # from crates.io once and kept outside the clone.
  local s3s_root="${HOME}/.cache/plait-ci/s3s-fs-0.14.1"
  if [ ! -x "${s3s_root}/bin/s3s-fs" ]; then
    echo "== installing s3s-fs (S3 server that checks credentials) from crates.io"
    cargo install --quiet --root "${s3s_root}" s3s-fs@0.14.1 --features binary
  fi
  PATH="${s3s_root}/bin:$PATH"
  export PATH

  # The Kubernetes tests run a real control plane (etcd, kube-apiserver,
  # kube-controller-manager) on loopback: built once from the Go module proxy and cached
  # outside the clone. The script prints the binaries' directory on its last line.
  echo "== Kubernetes control-plane binaries (built once, then cached)"
  PLAIT_KUBE_BIN="$("$root/tests/kube/build-binaries.sh" | tail -n 1)"
  [ -x "${PLAIT_KUBE_BIN}/kube-apiserver" ] || {
    echo "tests/kube/build-binaries.sh did not produce kube-apiserver" >&2
    return 1
  }
  export PLAIT_KUBE_BIN

  # The chart tests (tests/it/chart.rs) run helm: built once from the Go module proxy
  # and kept outside the clone. The script prints the directory holding it.
  local helm_bin
  helm_bin="$("$root/tests/kube/install-helm.sh" | tail -n 1)"
  PATH="${helm_bin}:$PATH"
  export PATH
  command -v helm >/dev/null 2>&1 || {
    echo "helm is not on PATH after installing it" >&2
    return 1
  }
}

if (return 0 2>/dev/null); then
  # Sourced: install, and leave the settings in the caller's environment.
  plait_prereqs_main
else
  plait_prereqs_main
  echo "== prerequisites are in place; to use them in this shell:"
  printf 'export PATH=%q\n' "$PATH"
  printf 'export PLAIT_KUBE_BIN=%q\n' "$PLAIT_KUBE_BIN"
fi
