#!/usr/bin/env bash
# Builds the cargo-fuzz targets and runs each for a bounded time; exits non-zero when a
# target crashes (panic, abort, out-of-memory, timeout). Installs cargo-fuzz if missing.
#
#   fuzz/run.sh [seconds per target, default 60] [target ...]   (default: every target)
#
# New inputs go to a scratch corpus; the committed seeds (corpus/<target>/) are read
# only. A crash leaves its input in fuzz/artifacts/<target>/: turn it into a regression
# test in the host crate (see docs/fuzzing.md). Executions per target are printed at the end.
set -euo pipefail
cd "$(dirname "$0")"

secs="${1:-60}"
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    targets=(kv_event openai_request config)
fi

version=0.13.1
if ! cargo fuzz --version 2>/dev/null | grep -q " $version"; then
    cargo install cargo-fuzz --locked --version "$version"
fi

# cargo fuzz passes unstable flags to cargo and rustc; this is a stable toolchain.
export RUSTC_BOOTSTRAP=1
# Release code with debug assertions and overflow checks; no sanitizer: the targets are
# safe Rust, and ASan triples the build of wasmtime on two cores. Panics, aborts,
# allocation failures, out-of-memory (-rss_limit_mb) and timeouts are still caught.
flags=(-O --debug-assertions --sanitizer none)

start=$(date +%s)
cargo fuzz build "${flags[@]}"
echo "fuzz build: $(( $(date +%s) - start )) s"

status=0
for target in "${targets[@]}"; do
    scratch=$(mktemp -d)
    log=$(mktemp)
    echo "== $target: ${secs}s"
    if ! cargo fuzz run "${flags[@]}" "$target" "$scratch" "corpus/$target" -- \
        -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -max_len=65536 \
        -print_final_stats=1 >"$log" 2>&1; then
        status=1
        tail -n 40 "$log"
        echo "== $target: CRASH (input in fuzz/artifacts/$target/)"
    fi
    execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo "?")
    echo "== $target: $execs executions"
    rm -rf "$scratch" "$log"
done
exit "$status"
