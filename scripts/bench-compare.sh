#!/usr/bin/env bash
# Measures a change side by side: runs the same plait-bench figures with two builds,
# interleaved (before, after, before, after, ...), so both see the same machine in the
# same run. Each directory holds a release `plait-bench` and `plaitd` built from the
# revision to compare, for example:
#
#   git worktree add /tmp/before <rev>
#   (cd /tmp/before && cargo build --release -p plait-tests --bin plait-bench -p plait-replica --bin plaitd)
#   mkdir -p /tmp/before-bin && cp /tmp/before/target/release/{plait-bench,plaitd} /tmp/before-bin/
#   cargo build --release -p plait-tests --bin plait-bench -p plait-replica --bin plaitd
#   scripts/bench-compare.sh /tmp/before-bin target/release ingest unary
#
# usage: scripts/bench-compare.sh BEFORE_DIR AFTER_DIR [FIGURE ...]   (default: ingest unary)
#   PLAIT_COMPARE_ROUNDS  how many before/after pairs per figure (default 2)
set -euo pipefail

if [ $# -lt 2 ] || [ "${1:-}" = "-h" ] || [ "${1:-}" = "--help" ]; then
  sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'
  exit 2
fi
before="$(cd "$1" && pwd)"
after="$(cd "$2" && pwd)"
shift 2
figures=("$@")
[ ${#figures[@]} -gt 0 ] || figures=(ingest unary)
rounds="${PLAIT_COMPARE_ROUNDS:-2}"
for dir in "$before" "$after"; do
  for bin in plait-bench plaitd; do
    [ -x "$dir/$bin" ] || { echo "bench-compare: $dir/$bin is missing" >&2; exit 1; }
  done
done

for figure in "${figures[@]}"; do
  for round in $(seq 1 "$rounds"); do
    for side in before after; do
      dir="$before"
      [ "$side" = after ] && dir="$after"
      echo "== $figure, round $round, $side ($dir)"
      PLAIT_BIN_DIR="$dir" "$dir/plait-bench" "$figure"
    done
  done
done
