#!/usr/bin/env bash
# The whole test suite: prerequisites, formatting, lints, every crate's tests, the
# cross-process tests against real plaitd processes, and a short bounded fuzz run. This
# is the README's test command, and .ci/run calls exactly this, so it passes on a fresh
# machine by itself: scripts/test-prereqs.sh installs what the tests need beyond Rust.
#
#   ./scripts/test.sh                       # everything
#   PLAIT_FUZZ_SECONDS=60 ./scripts/test.sh # longer fuzzing per target (default 20 s)
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "${1:-}" = "-h" ] || [ "${1:-}" = "--help" ]; then
  sed -n '2,8p' "$0" | sed 's/^# \{0,1\}//'
  exit 0
fi

export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
# One full run gains nothing from incremental compilation, whose caches more than double
# what target/ takes on disk; a developer's own `cargo build` keeps it.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"

# Free space where the build and the tests write, shown at each stage, so a run on a
# nearly full disk says so before anything fails for it.
disk() {
  echo "   free space: $(df -h --output=avail . | tail -1 | tr -d ' ') in $(pwd), $(df -h --output=avail "${TMPDIR:-/tmp}" | tail -1 | tr -d ' ') in ${TMPDIR:-/tmp}"
}
disk

echo "== prerequisites (scripts/test-prereqs.sh)"
# shellcheck source=scripts/test-prereqs.sh
source ./scripts/test-prereqs.sh

echo "== cargo fmt --check"
cargo fmt --all --check
# fuzz/ is its own workspace, so `--all` above does not reach it.
cargo fmt --manifest-path fuzz/Cargo.toml --all --check

echo "== lock files are current (root and fuzz/ workspaces)"
# Both workspaces share the crates under crates/, so a dependency added there changes
# fuzz/Cargo.lock too; catch that here, in seconds, not after the test run.
cargo metadata --locked --format-version 1 >/dev/null
cargo metadata --manifest-path fuzz/Cargo.toml --locked --format-version 1 >/dev/null

echo "== cargo clippy"
disk
cargo clippy --workspace --all-targets --locked -- -D warnings

echo "== build binaries (the cross-process tests start plaitd and plaitctl)"
cargo build --workspace --bins --locked

echo "== cargo test"
disk
cargo test --workspace --locked

echo "== fuzz (scripts/fuzz.sh: every target for a bounded time from the committed corpus)"
disk
./scripts/fuzz.sh run
