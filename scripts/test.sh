#!/usr/bin/env bash
# The whole test suite: formatting, lints, every crate's tests, and the cross-process
# tests against real plaitd processes. This is the README's test command; .ci/run
# installs prerequisites and then calls exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."

export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

echo "== cargo fmt --check"
cargo fmt --all --check

echo "== cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

echo "== build binaries (the cross-process tests start plaitd and plaitctl)"
cargo build --workspace --bins --locked

echo "== cargo test"
cargo test --workspace --locked
