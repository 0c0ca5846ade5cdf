# Shared helpers of the bench/ scripts; source it: `. "$(dirname "$0")/lib.sh"`.

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
