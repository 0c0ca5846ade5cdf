#!/usr/bin/env bash
# Router throughput and added latency, side by side in one run, with the same fixed
# backends behind every path: direct, Switchyard (Wasm pipeline: prefix-affinity +
# least-load), the SGLang gateway (cache_aware) and vLLM's router (cache_aware), and
# nginx as a bare reverse proxy: the floor, what one extra loopback hop costs here.
#
# 1. closed loop (`wrk`, 4 then 64 connections) against nginx answering a fixed chat
#    completion: p50, p99, requests/s;
# 2. open loop at a fixed rate (`router_latency load`) against the same nginx: added
#    p50 and p99;
# 3. streaming first-byte lag (`router_latency load --stream`) against
#    `router_latency backend`, whose first SSE event carries the time it was written.
# Each phase interleaves the targets within every round; results in docs/router-latency.md.
#
# Usage: bench/router-throughput.sh [--duration 5] [--rounds 3] [--rate 2000]
#            [--stream-rate 500] [--profile DIR]
#   --profile DIR: `perf record -g` Switchyard during its 64-connection runs, the data in
#   DIR/perf-ROUND.data and the last round's top functions in DIR/perf.txt (needs perf;
#   the router runs with SWITCHYARD_PERF_MAP=1 so Wasm frames have names).
#   SWITCHYARD=PATH: run that switchyard binary instead of this tree's `dist` build (to
#   profile or compare an older build in the same conditions).
#   SWITCHYARD_BASELINE=PATH: also run that binary as a sixth path, "switchyard
#   (baseline)", interleaved with the others: a change's effect measured in the same run.
# Needs: wrk, nginx, pip install sglang-router vllm-router (installed here if missing).
# Everything binds 127.0.0.1 on free ports; all processes are stopped on exit.
set -euo pipefail

DURATION=5
ROUNDS=3
RATE=2000
STREAM_RATE=500
PROFILE=""
while [ $# -gt 0 ]; do
    case "$1" in
        --duration) DURATION="$2"; shift 2 ;;
        --rounds) ROUNDS="$2"; shift 2 ;;
        --rate) RATE="$2"; shift 2 ;;
        --stream-rate) STREAM_RATE="$2"; shift 2 ;;
        --profile) PROFILE="$(mkdir -p "$2" && cd "$2" && pwd)"; shift 2 ;;
        *) echo "unknown argument $1" >&2; exit 2 ;;
    esac
done

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
. "$ROOT/bench/lib.sh"
bench_scratch

need_peer_routers
command -v wrk >/dev/null && command -v nginx >/dev/null || {
    echo "needs wrk and nginx (apt-get install wrk nginx-light)" >&2
    exit 1
}

# The load generator and stamping backend: a release build. The router: the `dist`
# profile, the build to deploy (fat LTO; its first build takes about 18 min on 2 cores).
BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release"
cargo build --quiet --release -p switchyard --example router_latency
if [ -z "${SWITCHYARD:-}" ]; then
    cargo build --quiet --profile dist -p switchyard --bin switchyard
    SWITCHYARD="${CARGO_TARGET_DIR:-$ROOT/target}/dist/switchyard"
fi


load() { cut -d' ' -f1 /proc/loadavg; }

# PID: wait (up to 120 s) until the process is nearly idle, i.e. Switchyard has finished
# compiling its policies' optimized code in the background (one core busy for seconds).
settle() {
    local before after
    for _ in $(seq 120); do
        before="$(awk '{print $14 + $15}' "/proc/$1/stat")"
        sleep 1
        after="$(awk '{print $14 + $15}' "/proc/$1/stat")"
        [ $((after - before)) -lt 5 ] && return 0
    done
}

# --- the backends ---

ANSWER='{"id":"c","object":"chat.completion","created":0,"model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"hi"},"finish_reason":"length"}],"usage":{"prompt_tokens":24,"completion_tokens":1,"total_tokens":25}}'
MODELS='{"object":"list","data":[{"id":"m","object":"model","created":0,"owned_by":"bench"}]}'
# DIR, HTTP_BODY: writes DIR/nginx.conf, one worker in the foreground with its files
# under DIR, keep-alive without limit, no access log, HTTP_BODY inside its `http` block.
nginx_conf() {
    mkdir -p "$1"
    cat > "$1/nginx.conf" <<NGINX
worker_processes 1;
daemon off;
pid $1/nginx.pid;
error_log $1/error.log error;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $1/body;
    proxy_temp_path $1/proxy;
    fastcgi_temp_path $1/fastcgi;
    uwsgi_temp_path $1/uwsgi;
    scgi_temp_path $1/scgi;
    keepalive_requests 100000000;
    keepalive_timeout 300s;
$2
}
NGINX
}

NGINX_PORT="$(free_port)"
nginx_conf "$WORK/nginx" "    default_type application/json;
    server {
        listen 127.0.0.1:$NGINX_PORT reuseport;
        location = /v1/chat/completions { return 200 '$ANSWER'; }
        location = /v1/models { return 200 '$MODELS'; }
        location = /health { return 200 'ok'; }
        location / { return 200 '{}'; }
    }"
nginx -p "$WORK/nginx" -c "$WORK/nginx/nginx.conf" &
PIDS+=($!)
NGINX="http://127.0.0.1:$NGINX_PORT"
wait_ok "$NGINX/health"

"$BIN/examples/router_latency" backend > "$WORK/stamping.out" &
PIDS+=($!)
for _ in $(seq 100); do grep -q listening "$WORK/stamping.out" && break; sleep 0.1; done
STAMPING="$(sed -n 's/^listening on //p' "$WORK/stamping.out")"
wait_ok "$STAMPING/health"

# --- the routers, in front of one backend: sets SY, SG, VL (URLs) and SY_PID ---

ROUTER_PIDS=()
start_routers() {
    local backend="$1" tag="$2" port
    port="$(free_port)"
    cat > "$WORK/switchyard-$tag.yaml" <<YAML
listen: 127.0.0.1:$port
backends:
  - {name: fast, url: "$backend", models: [m], engine: openai, health_path: /health}
$(quickstart_pipeline_yaml)
YAML
    # NB: the perf map only when profiling: the router reads the variable's presence,
    # so even an empty value turns it on (and the baseline path does not get it).
    env ${PROFILE:+SWITCHYARD_PERF_MAP=1} RUST_LOG=warn \
        "$SWITCHYARD" serve --config "$WORK/switchyard-$tag.yaml" > "$WORK/switchyard-$tag.log" 2>&1 &
    SY_PID=$!
    ROUTER_PIDS=($!)
    SY="http://127.0.0.1:$port"
    SYB=""
    if [ -n "${SWITCHYARD_BASELINE:-}" ]; then
        port="$(free_port)"
        sed "s/^listen: .*/listen: 127.0.0.1:$port/" "$WORK/switchyard-$tag.yaml" \
            > "$WORK/switchyard-baseline-$tag.yaml"
        RUST_LOG=warn "$SWITCHYARD_BASELINE" serve --config "$WORK/switchyard-baseline-$tag.yaml" \
            > "$WORK/switchyard-baseline-$tag.log" 2>&1 &
        local baseline_pid=$!
        ROUTER_PIDS+=("$baseline_pid")
        SYB="http://127.0.0.1:$port"
        wait_ok "$SYB/ready" || { tail "$WORK/switchyard-baseline-$tag.log"; exit 1; }
        settle "$baseline_pid"
    fi
    port="$(free_port)"
    sglang-router launch --host 127.0.0.1 --port "$port" --worker-urls "$backend" \
        --policy cache_aware --prometheus-host 127.0.0.1 --prometheus-port "$(free_port)" \
        --log-level error > "$WORK/sglang-$tag.log" 2>&1 &
    ROUTER_PIDS+=($!)
    SG="http://127.0.0.1:$port"
    port="$(free_port)"
    vllm-router --host 127.0.0.1 --port "$port" --worker-urls "$backend" \
        --policy cache_aware --prometheus-host 127.0.0.1 --prometheus-port "$(free_port)" \
        --log-level error > "$WORK/vllm-$tag.log" 2>&1 &
    ROUTER_PIDS+=($!)
    VL="http://127.0.0.1:$port"
    # The floor: nginx as a bare reverse proxy (keep-alive upstream, no buffering), what
    # one extra loopback hop costs here without any routing.
    port="$(free_port)"
    nginx_conf "$WORK/proxy-$tag" "    upstream backend { server ${backend#http://}; keepalive 256; }
    server {
        listen 127.0.0.1:$port reuseport;
        location / {
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection \"\";
            proxy_buffering off;
        }
    }"
    nginx -p "$WORK/proxy-$tag" -c "$WORK/proxy-$tag/nginx.conf" &
    ROUTER_PIDS+=($!)
    NX="http://127.0.0.1:$port"
    PIDS+=("${ROUTER_PIDS[@]}")
    wait_ok "$SY/ready" || { tail "$WORK/switchyard-$tag.log"; exit 1; }
    settle "$SY_PID"
    wait_ok "$SG/health" || { tail "$WORK/sglang-$tag.log"; exit 1; }
    wait_ok "$VL/health" || { tail "$WORK/vllm-$tag.log"; exit 1; }
    wait_ok "$NX/v1/models" || { tail "$WORK/proxy-$tag/error.log"; exit 1; }
}
stop_routers() {
    for pid in "${ROUTER_PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${ROUTER_PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
}

# --- 1. closed loop with wrk ---

cat > "$WORK/chat.lua" <<'LUA'
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"model":"m","max_tokens":1,"messages":[{"role":"user","content":"Say hello to the router, please, in one word."}]}'
LUA

echo "machine: $(nproc) cores, $(uname -srm), load $(cut -d' ' -f1-3 /proc/loadavg); $(date -u +%FT%TZ)"
start_routers "$NGINX" nginx
NAMES=("direct" "switchyard (wasm pipeline)" "sglang-router (cache_aware)" "vllm-router (cache_aware)" "nginx proxy_pass (floor)")
URLS=("$NGINX" "$SY" "$SG" "$VL" "$NX")
if [ -n "$SYB" ]; then NAMES+=("switchyard (baseline)"); URLS+=("$SYB"); fi
# Warm every path's connection pools before measuring.
for url in "${URLS[@]}"; do wrk -t 2 -c 64 -d 1 -s "$WORK/chat.lua" "$url/v1/chat/completions" > /dev/null; done

PERF_PID=""
RESULTS="$WORK/wrk.tsv"
for round in $(seq "$ROUNDS"); do
    for conns in 4 64; do
        for i in "${!NAMES[@]}"; do
            echo "round $round/$ROUNDS: ${NAMES[$i]}, $conns connections" >&2
            if [ -n "$PROFILE" ] && [ "$conns" = 64 ] && [ "$i" = 1 ]; then
                perf record -F 2000 -g -p "$SY_PID" -o "$PROFILE/perf-$round.data" \
                    2> /dev/null > /dev/null &
                PERF_PID=$!
            fi
            wrk -t 2 -c "$conns" -d "$DURATION" --latency -s "$WORK/chat.lua" \
                "${URLS[$i]}/v1/chat/completions" > "$WORK/wrk.out"
            if [ -n "$PERF_PID" ]; then
                kill -INT "$PERF_PID"; wait "$PERF_PID" || true; PERF_PID=""
            fi
            # name, connections, round, load, req/s, p50, p99 (as wrk prints them), errors
            awk -v name="${NAMES[$i]}" -v c="$conns" -v r="$round" -v l="$(load)" '
                /Requests\/sec/ { rps = $2 }
                $1 == "50%" { p50 = $2 }
                $1 == "99%" { p99 = $2 }
                /Non-2xx/ { err += $NF }
                /Socket errors/ { gsub(",", ""); err += $4 + $6 + $8 + $10 }
                END { printf "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%d\n", name, c, r, l, rps, p50, p99, err }
            ' "$WORK/wrk.out" >> "$RESULTS"
        done
    done
done

python3 - "$RESULTS" <<'PY'
import statistics, sys
from collections import defaultdict

def us(v):
    for unit, f in (("us", 1), ("ms", 1e3), ("s", 1e6)):
        if v.endswith(unit):
            return float(v[: -len(unit)]) * f
    raise ValueError(v)

rows = defaultdict(list)  # (name, conns) -> [(round, load, rps, p50, p99, errors)]
order = []
for line in open(sys.argv[1]):
    name, c, r, l, rps, p50, p99, err = line.rstrip("\n").split("\t")
    if name not in order:
        order.append(name)
    rows[name, int(c)].append((int(r), float(l), float(rps), us(p50), us(p99), int(err)))
med = statistics.median
print("| path | conns | req/s | p50 (us) | p99 (us) | added p50 (us) | req/s vs sglang | added p50 vs sglang | errors | load |")
print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
for c in (4, 64):
    direct, sglang = rows[order[0], c], rows[order[2], c]
    for name in order:
        rs = rows[name, c]
        # Ratios per round (the same round's SGLang figures), then the median over rounds.
        added = [x[3] - d[3] for x, d in zip(rs, direct)]
        sg_added = [s[3] - d[3] for s, d in zip(sglang, direct)]
        rps_ratio = med(x[2] / s[2] for x, s in zip(rs, sglang))
        added_ratio = med(a / s for a, s in zip(added, sg_added)) if name != order[0] else 0
        print(f"| {name} | {c} | {med(x[2] for x in rs):.0f} | {med(x[3] for x in rs):.0f} "
              f"| {med(x[4] for x in rs):.0f} | {med(added):.0f} | {rps_ratio:.2f}x "
              f"| {added_ratio:.2f}x | {sum(x[5] for x in rs)} | {med(x[1] for x in rs):.2f} |")
PY

if [ -n "$PROFILE" ]; then
    perf report -i "$PROFILE/perf-$ROUNDS.data" --no-children --sort dso,symbol --stdio \
        -g none --percent-limit 0.4 2> /dev/null | grep -v '^$' > "$PROFILE/perf.txt" || true
    echo "profile of the last round: $PROFILE/perf.txt" >&2
fi

# --- 2. open loop at a fixed rate, same routers ---

echo
echo "open loop, $RATE req/s; load $(load) at the start"
"$BIN/examples/router_latency" load --rate "$RATE" --warmup 1 --duration "$DURATION" \
    --rounds "$ROUNDS" \
    "direct=$NGINX" "${NAMES[1]}=$SY" "${NAMES[2]}=$SG" "${NAMES[3]}=$VL" "${NAMES[4]}=$NX" ${SYB:+"${NAMES[5]}=$SYB"}
stop_routers

# --- 3. streaming first-byte lag, routers in front of the stamping backend ---

start_routers "$STAMPING" stamping
echo
echo "streaming first-byte lag (backend's first SSE byte to the client's), $STREAM_RATE req/s; load $(load) at the start"
"$BIN/examples/router_latency" load --stream --rate "$STREAM_RATE" --warmup 1 \
    --duration "$DURATION" --rounds "$ROUNDS" \
    "direct=$STAMPING" "${NAMES[1]}=$SY" "${NAMES[2]}=$SG" "${NAMES[3]}=$VL" "${NAMES[4]}=$NX" ${SYB:+"${NAMES[5]}=$SYB"}
echo "load at the end $(cut -d' ' -f1-3 /proc/loadavg); $(date -u +%FT%TZ)"
