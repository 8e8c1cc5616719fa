#!/usr/bin/env bash
# Coverage-guided fuzzing of Plait's decoders with libFuzzer, on stable Rust.
#
# Builds the targets in fuzz/ with the sanitizer-coverage flags cargo-fuzz would pass
# (no sanitizer, no nightly), then runs each for a bounded time starting from the
# committed corpus fuzz/corpus/<target>/. New inputs found go to a temporary directory,
# never into the committed corpus. Any crash, panic, timeout or out-of-memory fails the
# script and prints the path of the input that caused it. docs/fuzzing.md has the rest.
set -euo pipefail

usage() {
  cat <<'EOF'
Usage: scripts/fuzz.sh [COMMAND] [TARGET...]

Commands:
  run [TARGET...]   build, then fuzz each target for PLAIT_FUZZ_SECONDS (the default)
  build             only build the targets
  seed              regenerate the seed corpus in fuzz/corpus/ from the real encoders
  list              print the targets that `run` would fuzz
  -h, --help        this text

Targets: entry manifest snapshot proto catalog (catalog can be left out with
PLAIT_FUZZ_CATALOG=0).

Environment:
  PLAIT_FUZZ_SECONDS     seconds per target (default 20)
  PLAIT_FUZZ_RSS_MB      memory limit per target process, MiB (default 2048)
  PLAIT_FUZZ_TIMEOUT     seconds one input may take before it counts as a hang (default 10)
  PLAIT_FUZZ_CATALOG     0: leave the catalog target out (default 1)
  PLAIT_FUZZ_TARGET_DIR  cargo target directory for the instrumented build (default
                         fuzz/target; kept apart because the flags invalidate normal builds)
  PLAIT_FUZZ_ARTIFACTS   where crashing inputs are written (default fuzz/artifacts)
  PLAIT_FUZZ_KEEP        1: keep the run's logs and newly found inputs (printed path)
                         even when nothing failed; a failed run always keeps them

Examples:
  scripts/fuzz.sh                               # every default target, 20 s each
  PLAIT_FUZZ_SECONDS=600 scripts/fuzz.sh run entry
  fuzz/target/x86_64-unknown-linux-gnu/release/entry fuzz/artifacts/entry-crash-...  # replay
EOF
}

cd "$(dirname "$0")/.."
ROOT="$PWD"

SECONDS_PER_TARGET="${PLAIT_FUZZ_SECONDS:-20}"
RSS_MB="${PLAIT_FUZZ_RSS_MB:-2048}"
UNIT_TIMEOUT="${PLAIT_FUZZ_TIMEOUT:-10}"
TARGET_DIR="${PLAIT_FUZZ_TARGET_DIR:-$ROOT/fuzz/target}"
ARTIFACTS="${PLAIT_FUZZ_ARTIFACTS:-$ROOT/fuzz/artifacts}"

DEFAULT_TARGETS=(entry manifest snapshot proto)
# The catalog target (plait_core::catalog, the backup catalog decoder) sits behind the
# fuzz crate's `catalog` feature; on by default.
CATALOG_ENABLED="${PLAIT_FUZZ_CATALOG:-1}"
ALL_TARGETS=("${DEFAULT_TARGETS[@]}")
if [ "$CATALOG_ENABLED" = 1 ]; then
  ALL_TARGETS+=(catalog)
fi

# Largest input per target: a bit over the format's bound, so the fuzzer also tries
# inputs the decoder must refuse for their size.
max_len() {
  case "$1" in
    entry) echo 1153434 ;;    # ENTRY_BYTES_MAX (1 MiB) + 10%
    manifest) echo 36045 ;;   # MANIFEST_BYTES_MAX (32 KiB) + 10%
    snapshot) echo 1153434 ;; # one maximal entry frame and then some
    proto) echo 1153434 ;;    # messages that carry whole entries
    catalog) echo 262144 ;;
    *) echo "unknown target $1" >&2; return 1 ;;
  esac
}

# The flags cargo-fuzz passes for a build without a sanitizer: SanitizerCoverage's
# inline 8-bit counters, PC table and comparison tracing feed libFuzzer; `fuzzing` is the
# cfg fuzz-aware crates look for; debug assertions and overflow checks turn silent
# arithmetic bugs into crashes. These are stable rustc flags (-C passes, -C llvm-args).
FUZZ_RUSTFLAGS="--cfg fuzzing -Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 -Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table -Cllvm-args=-sanitizer-coverage-trace-compares -Cdebug-assertions -Coverflow-checks"

HOST="$(rustc -vV | sed -n 's/^host: //p')"
BIN_DIR="$TARGET_DIR/$HOST/release"

ensure_cxx() {
  # libfuzzer-sys compiles libFuzzer (C++) with the cc crate.
  if command -v c++ >/dev/null 2>&1 || command -v g++ >/dev/null 2>&1 || command -v clang++ >/dev/null 2>&1; then
    return
  fi
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "== installing a C++ compiler (g++) for libFuzzer"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq g++ >/dev/null
  else
    echo "a C++ compiler (c++, g++ or clang++) is needed to build libFuzzer; install one" >&2
    exit 1
  fi
}

build() {
  ensure_cxx
  local args=() features=()
  for t in "${ALL_TARGETS[@]}"; do args+=(--bin "$t"); done
  if [ "$CATALOG_ENABLED" = 1 ]; then features=(--features catalog); fi
  echo "== building fuzz targets (${ALL_TARGETS[*]}) into $TARGET_DIR"
  local start=$SECONDS
  # --target keeps the flags off build scripts and proc macros, as cargo-fuzz does.
  env -u CARGO_ENCODED_RUSTFLAGS -u CARGO_BUILD_RUSTFLAGS \
    RUSTFLAGS="$FUZZ_RUSTFLAGS" CARGO_TARGET_DIR="$TARGET_DIR" \
    cargo build --manifest-path fuzz/Cargo.toml --locked --release --target "$HOST" \
    "${features[@]}" "${args[@]}"
  echo "== fuzz build took $((SECONDS - start)) s"
}

seed() {
  echo "== regenerating the seed corpus in fuzz/corpus/"
  # A plain build (no coverage flags, no libFuzzer): the generator is an ordinary binary.
  env -u CARGO_ENCODED_RUSTFLAGS -u RUSTFLAGS CARGO_TARGET_DIR="$TARGET_DIR/seed" \
    cargo run --manifest-path fuzz/Cargo.toml --locked --no-default-features --bin seed -- "$ROOT/fuzz/corpus"
}

# One line of libFuzzer's final output, or "?" when it is not there.
final_stat() {
  local value
  value="$(sed -n "s/^stat::$1: *//p" "$2" | tail -n 1)"
  echo "${value:-?}"
}

run() {
  local targets=("$@")
  if [ ${#targets[@]} -eq 0 ]; then targets=("${ALL_TARGETS[@]}"); fi
  for t in "${targets[@]}"; do
    if [ ! -d "fuzz/corpus/$t" ]; then
      echo "unknown target $t (no fuzz/corpus/$t); targets: ${ALL_TARGETS[*]}" >&2
      exit 2
    fi
    if [ "$t" = catalog ] && [ "$CATALOG_ENABLED" != 1 ]; then
      echo "the catalog target needs PLAIT_FUZZ_CATALOG=1 (and plait_core::catalog)" >&2
      exit 2
    fi
  done
  build
  mkdir -p "$ARTIFACTS"
  local work
  work="$(mktemp -d "${TMPDIR:-/tmp}/plait-fuzz.XXXXXX")"
  local failed=() summary=()
  for t in "${targets[@]}"; do
    local log="$work/$t.log" new="$work/new-corpus-$t"
    mkdir -p "$new"
    echo "== fuzzing $t for ${SECONDS_PER_TARGET} s (corpus fuzz/corpus/$t, new inputs in $new)"
    local rc=0
    # The first corpus directory is where libFuzzer writes what it finds; the committed
    # corpus after it is only read.
    "$BIN_DIR/$t" "$new" "fuzz/corpus/$t" \
      -max_total_time="$SECONDS_PER_TARGET" \
      -max_len="$(max_len "$t")" \
      -rss_limit_mb="$RSS_MB" \
      -timeout="$UNIT_TIMEOUT" \
      -print_final_stats=1 \
      -artifact_prefix="$ARTIFACTS/$t-" \
      >"$log" 2>&1 || rc=$?
    local runs secs
    runs="$(sed -n 's/^Done \([0-9]*\) runs in \([0-9]*\) second.*/\1/p' "$log" | tail -n 1)"
    secs="$(sed -n 's/^Done \([0-9]*\) runs in \([0-9]*\) second.*/\2/p' "$log" | tail -n 1)"
    runs="${runs:-$(final_stat number_of_executed_units "$log")}"
    summary+=("$(printf '%-9s %12s runs  %6s s  %9s exec/s  %6s new units  peak rss %s MiB' \
      "$t" "$runs" "${secs:-?}" "$(final_stat average_exec_per_sec "$log")" \
      "$(final_stat new_units_added "$log")" "$(final_stat peak_rss_mb "$log")")")
    if [ "$rc" -ne 0 ]; then
      failed+=("$t")
      echo "!! $t failed (exit $rc); the end of libFuzzer's output:" >&2
      tail -n 60 "$log" >&2
      local artifact
      artifact="$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$log" | tail -n 1)"
      echo "!! crashing input: ${artifact:-none written (see $log)}" >&2
      echo "!! replay it with: $BIN_DIR/$t ${artifact:-<input>}" >&2
    fi
  done
  echo "== fuzz summary (${SECONDS_PER_TARGET} s per target)"
  printf '%s\n' "${summary[@]}"
  if [ ${#failed[@]} -ne 0 ]; then
    echo "fuzzing found failures in: ${failed[*]}" >&2
    exit 1
  fi
  if [ "${PLAIT_FUZZ_KEEP:-0}" = 1 ]; then
    echo "== kept the logs and new inputs in $work"
  else
    rm -rf "$work"
  fi
}

command="${1:-run}"
case "$command" in
  -h | --help | help) usage ;;
  build) build ;;
  seed) seed ;;
  list) printf '%s\n' "${ALL_TARGETS[@]}" ;;
  run)
    if [ $# -gt 0 ]; then shift; fi
    run "$@"
    ;;
  *)
    if [ -d "fuzz/corpus/$command" ]; then
      run "$@"
    else
      usage >&2
      exit 2
    fi
    ;;
esac
