# Shared helpers of the bench/ scripts; source it: `. "$ROOT/bench/lib.sh"`.

# Sets up $WORK, a scratch directory, and $PIDS, the processes the script starts: on exit
# every process in PIDS is stopped and WORK removed (kept, and said, when KEEP is set).
bench_scratch() {
    WORK="$(mktemp -d)"
    PIDS=()
    trap bench_cleanup EXIT
}
bench_cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    if [ -n "${KEEP:-}" ]; then echo "configs, logs and results kept in $WORK" >&2; else rm -rf "$WORK"; fi
}

# The default tenant's pipeline the router benches measure (a Wasm pipeline of two
# shipped scorers), as a config's `tenants:` section.
quickstart_pipeline_yaml() {
    cat <<'YAML'
tenants:
  default:
    pipeline:
      scorers:
        - {policy: prefix-affinity, weight: 0.6}
        - {policy: least-load, weight: 0.4}
YAML
}

# The peer routers from PyPI, installed when missing.
need_peer_routers() {
    command -v sglang-router >/dev/null && command -v vllm-router >/dev/null ||
        python3 -m pip install --quiet sglang-router vllm-router
}

# A loopback port free at the time of the call.
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# URL: poll until it answers 2xx (60 s).
wait_ok() {
    for _ in $(seq 600); do
        curl -fsS -o /dev/null "$1" 2>/dev/null && return 0
        sleep 0.1
    done
    echo "never ready: $1" >&2
    return 1
}
