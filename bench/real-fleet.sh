#!/usr/bin/env bash
# Routing on real engines (issue 12): N llama.cpp `llama-server`s (the tests' tiny model,
# two slots each, no host-memory prompt cache) behind each router in turn, a FRESH fleet
# per router, the same grouped-chat workload (`switchyard bench --workload grouped-chat`:
# a common head, G groups with their own document, C conversations per group, T turns).
#
# Routers, one after the other:
#   round-robin   Switchyard, pipeline {placer: round-robin}
#   sglang        SGLang's gateway (PyPI sglang-router), --policy cache_aware
#   sy-old        Switchyard, the old quickstart pipeline (prefix-affinity 0.6 + least-load 0.4)
#   sy-default    Switchyard, a config naming no pipeline: whatever the default is
#   sy-custom     Switchyard with the pipeline in $SY_PIPELINE (YAML flow), to try variants
#   oracle        no router: the bench pins group g to server g mod N (`--oracle`)
#
# Prints one Markdown table: the engines' own hit rate (llamacpp:prompt_tokens_cached_total
# over cached plus llamacpp:prompt_tokens_total, summed over the fleet, scraped after the
# run), the hit rate the responses' `usage` reports, TTFT p50/p90, requests/s, then the
# ratios issue 12 asks for: Switchyard's default vs the oracle's hit rate, its TTFT p50
# vs round-robin's and vs SGLang's. Figures and the command: docs/simulator.md.
#
# --sim runs the same rounds against `switchyard sim --fleet` backends configured like the
# real fleet (slot cache, same slots and context, latency calibrated on llama-server,
# the engines sharing --host-cores cores as the one-thread servers share this machine's):
# the calibration of docs/simulator.md. SIM_LATENCY='{...}' overrides the latency model.
#
# Usage: bench/real-fleet.sh [--sim] [--servers 4] [--groups 8] [--conversations 4]
#            [--turns 4] [--concurrency 8] [--doc-len 600:1500] [--output-len 32]
#            [--routers "round-robin sglang sy-old sy-default oracle"] [--rounds 1]
#            [--json FILE] [--keep] [--debug] [--host-cores 2]
# --rounds K runs every router K times, interleaved (router order within each round), a
# fresh fleet each time; the table gives each router's median over its rounds, and the
# ratios are those of the medians. One run of this machine's fleet moves hit rates by
# about +-0.06, so a claim needs rounds.
# --debug uses the dev build of `switchyard` (dependencies optimised, our code not) instead
# of building the release one.
# Not part of CI: the real fleet takes several minutes. Everything binds 127.0.0.1 on free
# ports; every process it starts is stopped on exit.
set -euo pipefail

SIM="" DEBUG="" ROUNDS=1 SERVERS=4 GROUPS_N=8 CONVERSATIONS=4 TURNS=4 CONCURRENCY=8 DOC_LEN="600:1500"
OUTPUT_LEN=32 HEAD_LEN=60 QUESTION_LEN=40 SLOTS=2 CTX_PER_SLOT=4096 KEEP="" JSON_OUT=""
HOST_CORES="$(nproc)"
ROUTERS="round-robin sglang sy-old sy-default oracle"
while [ $# -gt 0 ]; do
    case "$1" in
        --sim) SIM=1; shift ;;
        --debug) DEBUG=1; shift ;;
        --servers) SERVERS="$2"; shift 2 ;;
        --groups) GROUPS_N="$2"; shift 2 ;;
        --conversations) CONVERSATIONS="$2"; shift 2 ;;
        --turns) TURNS="$2"; shift 2 ;;
        --concurrency) CONCURRENCY="$2"; shift 2 ;;
        --doc-len) DOC_LEN="$2"; shift 2 ;;
        --output-len) OUTPUT_LEN="$2"; shift 2 ;;
        --routers) ROUTERS="$2"; shift 2 ;;
        --rounds) ROUNDS="$2"; shift 2 ;;
        --json) JSON_OUT="$2"; shift 2 ;;
        --keep) KEEP=1; shift ;;
        --host-cores) HOST_CORES="$2"; shift 2 ;;
        *) echo "unknown argument: $1" >&2; exit 2 ;;
    esac
done

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
. "$ROOT/bench/lib.sh"
bench_scratch


if [ -n "$DEBUG" ]; then
    cargo build --quiet -p switchyard --bin switchyard
    BIN="${CARGO_TARGET_DIR:-$ROOT/target}/debug/switchyard"
else
    cargo build --quiet --release -p switchyard --bin switchyard
    BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release/switchyard"
fi
eval "$(tests/llama/setup.sh)"   # LLAMA_SERVER, LLAMA_MODEL
case " $ROUTERS " in
    *" sglang "*) command -v sglang-router >/dev/null || python3 -m pip install --quiet sglang-router ;;
esac

MODEL=tiny
# Latency of the tiny model on one llama-server thread, per token of this workload's text,
# with the engines sharing the machine's cores (fitted in docs/simulator.md, "Shared
# cores"); used by --sim only.
SIM_LATENCY="${SIM_LATENCY:-}"
[ -n "$SIM_LATENCY" ] || SIM_LATENCY='{prefill_base_ms: 100.0, prefill_token_ms: 0.10, prefill_attention_ms: 0.0, decode_base_ms: 7.0, decode_seq_ms: 0.5, decode_context_ms: 0.0}'

# Starts the fleet; fills URLS (space-separated base URLs) and FLEET_PIDS.
start_fleet() {
    URLS=() FLEET_PIDS=()
    if [ -n "$SIM" ]; then
        local ports=() p
        for _ in $(seq "$SERVERS"); do ports+=("$(free_port)"); done
        {
            echo "model: $MODEL"
            echo "host_cores: $HOST_CORES"
            echo "profiles:"
            echo "  - { name: llamacpp-cpu, base: h100, latency: $SIM_LATENCY }"
            echo "backends:"
            for p in "${ports[@]}"; do
                echo "  - { profile: llamacpp-cpu, port: $p, max_num_batched_tokens: 2048, default_max_tokens: $OUTPUT_LEN, cache: { model: slots, slots: $SLOTS, ctx_per_slot: $CTX_PER_SLOT } }"
            done
        } > "$WORK/fleet.yaml"
        RUST_LOG=warn "$BIN" sim --fleet "$WORK/fleet.yaml" > "$WORK/sim.log" 2>&1 &
        FLEET_PIDS+=($!)
        for p in "${ports[@]}"; do URLS+=("http://127.0.0.1:$p"); done
    else
        local i port
        for i in $(seq "$SERVERS"); do
            port="$(free_port)"
            "$LLAMA_SERVER" -m "$LLAMA_MODEL" --host 127.0.0.1 --port "$port" --metrics \
                -np "$SLOTS" -c $((SLOTS * CTX_PER_SLOT)) --cache-ram 0 -t 1 --threads-http 64 \
                > "$WORK/llama-$i.log" 2>&1 &
            FLEET_PIDS+=($!)
            URLS+=("http://127.0.0.1:$port")
        done
    fi
    PIDS+=("${FLEET_PIDS[@]}")
    local u
    for u in "${URLS[@]}"; do wait_ok "$u/health"; done
}

stop() {
    local pid
    for pid in "$@"; do kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; done
}

# Sum of one metric over the fleet.
fleet_metric() {
    local u total=0 v
    for u in "${URLS[@]}"; do
        v="$(curl -fsS "$u/metrics" | awk -v m="$1" '$1 == m || index($1, m "{") == 1 { print $2 }' | head -1)"
        total="$(python3 -c "print($total + ${v:-0})")"
    done
    echo "$total"
}

# Writes a Switchyard config over URLS with tenants.default given as $1 (YAML, indented).
switchyard_config() {
    local port="$1" pipeline="$2" i=0 u
    {
        echo "listen: 127.0.0.1:$port"
        echo "backends:"
        for u in "${URLS[@]}"; do
            i=$((i + 1))
            echo "  - {name: llama-$i, url: \"$u\", models: [$MODEL], engine: llamacpp}"
        done
        echo "tenants:"
        echo "  default:"
        echo "$pipeline"
    } > "$WORK/switchyard.yaml"
}

# Starts the router named $1 over the fleet; sets ROUTER_URL and ROUTER_PID (both empty
# for the oracle).
ROUTER_PID="" ROUTER_URL=""
start_router() {
    local port u
    port="$(free_port)"
    ROUTER_PID="" ROUTER_URL=""
    case "$1" in
        oracle) return ;;
        sglang)
            local args=()
            for u in "${URLS[@]}"; do args+=("$u"); done
            sglang-router launch --host 127.0.0.1 --port "$port" --worker-urls "${args[@]}" \
                --policy cache_aware --prometheus-host 127.0.0.1 \
                --prometheus-port "$(free_port)" --log-level warn > "$WORK/sglang.log" 2>&1 &
            ROUTER_PID=$!
            ;;
        round-robin)
            switchyard_config "$port" "    pipeline: {placer: {policy: round-robin}}" ;;
        sy-old)
            switchyard_config "$port" "    pipeline: {scorers: [{policy: prefix-affinity, weight: 0.6}, {policy: least-load, weight: 0.4}]}" ;;
        sy-default)
            # NB: no pipeline: the router's default decides.
            switchyard_config "$port" "    {}" ;;
        sy-custom)
            switchyard_config "$port" "    pipeline: ${SY_PIPELINE:?sy-custom needs SY_PIPELINE}" ;;
        *) echo "unknown router $1" >&2; exit 2 ;;
    esac
    if [ -z "$ROUTER_PID" ]; then
        RUST_LOG=warn "$BIN" serve --config "$WORK/switchyard.yaml" > "$WORK/$1.log" 2>&1 &
        ROUTER_PID=$!
    fi
    PIDS+=("$ROUTER_PID")
    local ready=/ready
    [ "$1" = sglang ] && ready=/health
    wait_ok "http://127.0.0.1:$port$ready" || { tail "$WORK/$1.log" "$WORK/sglang.log" 2>/dev/null; exit 1; }
    # Let a Switchyard router scrape /props and /metrics once before the first request.
    sleep 1
    ROUTER_URL="http://127.0.0.1:$port"
}

BENCH_ARGS=(--workload grouped-chat --model "$MODEL" --groups "$GROUPS_N"
    --conversations "$CONVERSATIONS" --turns "$TURNS" --head-len "$HEAD_LEN"
    --doc-len-min "${DOC_LEN%%:*}" --doc-len-max "${DOC_LEN##*:}"
    --question-len "$QUESTION_LEN" --output-len "$OUTPUT_LEN"
    --concurrency "$CONCURRENCY" --json)

echo "machine: $(nproc) cores, $(uname -srm), load $(cut -d' ' -f1-3 /proc/loadavg); $(date -u +%FT%TZ)"
echo "fleet: $SERVERS x $([ -n "$SIM" ] && echo "switchyard sim (slot cache, $HOST_CORES shared cores)" || echo "llama-server -t 1"), $SLOTS slots x $CTX_PER_SLOT tokens each, no host prompt cache"
echo "rounds: $ROUNDS, interleaved; each router on a fresh fleet"
echo "workload: grouped-chat, $GROUPS_N groups x $CONVERSATIONS conversations x $TURNS turns, head $HEAD_LEN, documents $DOC_LEN, questions $QUESTION_LEN, answers $OUTPUT_LEN tokens, $CONCURRENCY sessions in flight"
: > "$WORK/results.jsonl"
for round in $(seq "$ROUNDS"); do
for router in $ROUTERS; do
    start_fleet
    start_router "$router"
    if [ "$router" = oracle ]; then
        targets=(--oracle)
        for u in "${URLS[@]}"; do targets+=(--url "$u"); done
    else
        targets=(--url "$ROUTER_URL")
    fi
    "$BIN" bench "${targets[@]}" "${BENCH_ARGS[@]}" > "$WORK/$router.json"
    cached="$(fleet_metric llamacpp:prompt_tokens_cached_total)"
    computed="$(fleet_metric llamacpp:prompt_tokens_total)"
    python3 - "$router" "$round" "$cached" "$computed" "$WORK/$router.json" >> "$WORK/results.jsonl" <<'PY'
import json, sys
name, rnd, cached, computed, path = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4]), sys.argv[5]
r = json.load(open(path))
r["router"] = name
r["round"] = rnd
r["engine_hit_rate"] = cached / (cached + computed) if cached + computed else 0.0
print(json.dumps(r))
PY
    [ -n "$ROUTER_PID" ] && stop "$ROUTER_PID"
    stop "${FLEET_PIDS[@]}"
    echo "done: $router, round $round/$ROUNDS" >&2
done
done
[ -z "$JSON_OUT" ] || cp "$WORK/results.jsonl" "$JSON_OUT"

python3 - "$WORK/results.jsonl" <<'PY'
import json, statistics, sys
runs = {}
for line in open(sys.argv[1]):
    r = json.loads(line)
    runs.setdefault(r["router"], []).append(r)
med = statistics.median
# Each router's median over its rounds, metric by metric.
rows = {
    name: {
        "engine_hit_rate": med(r["engine_hit_rate"] for r in rs),
        "prefix_cache_hit_rate": med(r["prefix_cache_hit_rate"] for r in rs),
        "ttft_ms": {q: med(r["ttft_ms"][q] for r in rs) for q in ("p50", "p90")},
        "requests_per_s": med(r["requests_per_s"] for r in rs),
        "errors": sum(r["errors"] for r in rs),
        "hit_range": (min(r["engine_hit_rate"] for r in rs), max(r["engine_hit_rate"] for r in rs)),
        "p50_range": (min(r["ttft_ms"]["p50"] for r in rs), max(r["ttft_ms"]["p50"] for r in rs)),
        "rounds": len(rs),
    }
    for name, rs in runs.items()
}
print("| router | rounds | engine hit rate | (range) | usage hit rate | TTFT p50 ms | (range) | TTFT p90 ms | req/s | errors |")
print("|---|---|---|---|---|---|---|---|---|---|")
for name, r in rows.items():
    lo, hi = r["hit_range"]
    plo, phi = r["p50_range"]
    print(f"| {name} | {r['rounds']} | {r['engine_hit_rate']:.3f} | {lo:.3f}-{hi:.3f} | "
          f"{r['prefix_cache_hit_rate']:.3f} | {r['ttft_ms']['p50']:.0f} | {plo:.0f}-{phi:.0f} | "
          f"{r['ttft_ms']['p90']:.0f} | {r['requests_per_s']:.2f} | {r['errors']} |")
d, o = rows.get("sy-default"), rows.get("oracle")
rr, sg = rows.get("round-robin"), rows.get("sglang")
if d:
    print()
    if o:
        print(f"sy-default hit rate / oracle: {d['engine_hit_rate'] / max(o['engine_hit_rate'], 1e-9):.2f} (goal >= 0.90)")
    if rr:
        print(f"round-robin TTFT p50 / sy-default: {rr['ttft_ms']['p50'] / d['ttft_ms']['p50']:.2f}x (goal >= 3)")
    if sg:
        print(f"sglang TTFT p50 / sy-default: {sg['ttft_ms']['p50'] / d['ttft_ms']['p50']:.2f}x, "
              f"hit rate {sg['engine_hit_rate']:.3f} vs {d['engine_hit_rate']:.3f} (goal: sy-default better on both)")
PY
