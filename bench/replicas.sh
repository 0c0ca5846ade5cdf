#!/usr/bin/env bash
# Replicas (docs/replicas.md): on one machine, a 3-node NATS JetStream cluster, two
# Switchyard replicas A and B with `cluster:` and one router without, all in front of the
# same two fast backends. Measures, in one run:
# - how long an admin change (a pipeline set through A, acknowledged) takes to be served
#   by B, and how long an approximate-mode KV record (a prompt answered through A) takes
#   to be in B's index: p50/p99 over N samples (bench/replica-propagation.py);
# - the request path's added latency with `cluster` on (replica A) and off (the lone
#   router), interleaved against the backend called directly (router_latency load).
#
# Usage: bench/replicas.sh [--samples 200] [-- ROUTER_LATENCY_LOAD_ARGS...]
# e.g. bench/replicas.sh --samples 200 -- --rate 500 --warmup 1 --duration 5 --rounds 3
# Needs nats-server (tests/nats/setup.sh installs it). PROFILE=debug uses a debug build.
# Everything binds 127.0.0.1 on free ports; all processes are stopped on exit.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
SAMPLES=200
if [ "${1:-}" = "--samples" ]; then SAMPLES="$2"; shift 2; fi
[ "${1:-}" = "--" ] && shift
LOAD_ARGS=("$@")
[ ${#LOAD_ARGS[@]} -gt 0 ] || LOAD_ARGS=(--rate 500 --warmup 1 --duration 5 --rounds 3)

. "$ROOT/bench/lib.sh"
bench_scratch

NATS="$(bash "$ROOT/tests/nats/setup.sh")"
PROFILE="${PROFILE:-release}"
FLAG=(--release); [ "$PROFILE" = debug ] && FLAG=()
cargo build --quiet "${FLAG[@]}" -p switchyard --bin switchyard --example router_latency
BIN="${CARGO_TARGET_DIR:-$ROOT/target}/$PROFILE"


backend() {
    "$BIN/examples/router_latency" backend > "$WORK/$1.out" &
    PIDS+=($!)
}
url_of() {
    for _ in $(seq 100); do grep -q listening "$WORK/$1.out" && break; sleep 0.1; done
    sed -n 's/^listening on //p' "$WORK/$1.out"
}
backend b1
backend b2
B1="$(url_of b1)"
B2="$(url_of b2)"
wait_ok "$B1/health"
wait_ok "$B2/health"

CP=() RP=() MP=()
for i in 1 2 3; do CP+=("$(free_port)"); RP+=("$(free_port)"); MP+=("$(free_port)"); done
ROUTES="nats://127.0.0.1:${RP[0]},nats://127.0.0.1:${RP[1]},nats://127.0.0.1:${RP[2]}"
for i in 0 1 2; do
    "$NATS" -a 127.0.0.1 -p "${CP[$i]}" -m "${MP[$i]}" -n "n$i" -js -sd "$WORK/nats-$i" --cluster_name sy \
        --cluster "nats://127.0.0.1:${RP[$i]}" --routes "$ROUTES" > "$WORK/nats-$i.log" 2>&1 &
    PIDS+=($!)
done
URLS="[nats://127.0.0.1:${CP[0]}, nats://127.0.0.1:${CP[1]}, nats://127.0.0.1:${CP[2]}]"

TOKEN=bench-admin-token-0123456789
router() { # name, extra yaml
    local port admin
    port="$(free_port)"; admin="$(free_port)"
    cat > "$WORK/$1.yaml" <<YAML
listen: 127.0.0.1:$port
admin: {listen: 127.0.0.1:$admin, token: $TOKEN}
state_dir: $WORK/state-$1
backends:
  - {name: b1, url: "$B1", models: [m], engine: openai, health_path: /health}
  - {name: b2, url: "$B2", models: [m], engine: openai, health_path: /health}
$(quickstart_pipeline_yaml)
$2
YAML
    RUST_LOG=warn "$BIN/switchyard" serve --config "$WORK/$1.yaml" > "$WORK/$1.log" 2>&1 &
    PIDS+=($!)
    echo "$port $admin" > "$WORK/$1.ports"
}
CLUSTER="cluster: {nats: $URLS, name: bench}"
# NB: JetStream needs its leader before the first replica can create the buckets.
for i in 0 1 2; do wait_ok "http://127.0.0.1:${MP[$i]}/healthz"; done
router a "$CLUSTER"
router b "$CLUSTER"
router solo ""
read -r A_PORT A_ADMIN < "$WORK/a.ports"
read -r B_PORT B_ADMIN < "$WORK/b.ports"
read -r S_PORT _ < "$WORK/solo.ports"
for p in "$A_PORT" "$B_PORT" "$S_PORT"; do
    wait_ok "http://127.0.0.1:$p/ready" || { tail "$WORK"/*.log; exit 1; }
done

echo "machine: $(nproc) cores, $(uname -srm), load $(cut -d' ' -f1-3 /proc/loadavg); $(date -u +%FT%TZ); $PROFILE build"
python3 "$ROOT/bench/replica-propagation.py" --samples "$SAMPLES" --token "$TOKEN" \
    --a "http://127.0.0.1:$A_PORT" --a-admin "http://127.0.0.1:$A_ADMIN" \
    --b-admin "http://127.0.0.1:$B_ADMIN"
"$BIN/examples/router_latency" load "${LOAD_ARGS[@]}" \
    "direct=$B1" \
    "switchyard, cluster off=http://127.0.0.1:$S_PORT" \
    "switchyard, cluster on (replica A)=http://127.0.0.1:$A_PORT"
