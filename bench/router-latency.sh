#!/usr/bin/env bash
# Router added latency, side by side in one run: the same fast backend called directly,
# through Switchyard (Wasm pipeline: prefix-affinity + least-load), through the SGLang
# gateway (cache_aware) and through vLLM's router (cache_aware). Open-loop fixed-rate
# non-streaming load from `host/examples/router_latency.rs`; results in docs/router-latency.md.
#
# Usage: bench/router-latency.sh [--rate 2000] [--warmup 2] [--duration 5] [--rounds 3]
# Needs: pip install sglang-router vllm-router (installed here if missing).
# Everything binds 127.0.0.1 on free ports; all processes are stopped on exit.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
. "$ROOT/bench/lib.sh"
bench_scratch

need_peer_routers

# The router as deployed (the `dist` profile); the load generator and backend, release.
cargo build --quiet --release -p switchyard --example router_latency
cargo build --quiet --profile dist -p switchyard --bin switchyard
BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release"
DIST="${CARGO_TARGET_DIR:-$ROOT/target}/dist"


# The fast backend prints its address on its first line.
"$BIN/examples/router_latency" backend > "$WORK/backend.out" &
PIDS+=($!)
for _ in $(seq 100); do grep -q listening "$WORK/backend.out" && break; sleep 0.1; done
BACKEND="$(sed -n 's/^listening on //p' "$WORK/backend.out")"
wait_ok "$BACKEND/health"

SY_PORT="$(free_port)"
cat > "$WORK/switchyard.yaml" <<YAML
listen: 127.0.0.1:$SY_PORT
backends:
  - {name: fast, url: "$BACKEND", models: [m], engine: openai, health_path: /health}
$(quickstart_pipeline_yaml)
YAML
RUST_LOG=warn "$DIST/switchyard" serve --config "$WORK/switchyard.yaml" > "$WORK/switchyard.log" 2>&1 &
PIDS+=($!)
wait_ok "http://127.0.0.1:$SY_PORT/ready"

SG_PORT="$(free_port)"
sglang-router launch --host 127.0.0.1 --port "$SG_PORT" --worker-urls "$BACKEND" \
    --policy cache_aware --prometheus-host 127.0.0.1 --prometheus-port "$(free_port)" \
    --log-level error > "$WORK/sglang.log" 2>&1 &
PIDS+=($!)
VL_PORT="$(free_port)"
vllm-router --host 127.0.0.1 --port "$VL_PORT" --worker-urls "$BACKEND" \
    --policy cache_aware --prometheus-host 127.0.0.1 --prometheus-port "$(free_port)" \
    --log-level error > "$WORK/vllm.log" 2>&1 &
PIDS+=($!)
wait_ok "http://127.0.0.1:$SG_PORT/health" || { tail "$WORK/sglang.log"; exit 1; }
wait_ok "http://127.0.0.1:$VL_PORT/health" || { tail "$WORK/vllm.log"; exit 1; }

echo "machine: $(nproc) cores, $(uname -srm), load $(cut -d' ' -f1-3 /proc/loadavg); $(date -u +%FT%TZ)"
"$BIN/examples/router_latency" load "$@" \
    "direct=$BACKEND" \
    "switchyard (wasm pipeline)=http://127.0.0.1:$SY_PORT" \
    "sglang-router (cache_aware)=http://127.0.0.1:$SG_PORT" \
    "vllm-router (cache_aware)=http://127.0.0.1:$VL_PORT"
