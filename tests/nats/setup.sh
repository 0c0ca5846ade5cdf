#!/usr/bin/env bash
# Installs `nats-server` (Debian's package, 2.9.x, JetStream included) for the replica
# e2e tests (tests/e2e/replicas.rs) when it is missing; run by `cargo xtask test`.
# Idempotent: with nats-server on PATH or in /usr/sbin it only prints where it is.
set -euo pipefail

find_server() {
    command -v nats-server 2>/dev/null || { [ -x /usr/sbin/nats-server ] && echo /usr/sbin/nats-server; }
}

if ! server=$(find_server); then
    echo "tests/nats/setup.sh: installing nats-server" >&2
    sudo=""
    [ "$(id -u)" = 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    $sudo apt-get install -y -qq nats-server >/dev/null
    # NB: the package starts a system service on 4222; the tests use their own ports.
    server=$(find_server)
fi
echo "$server"
