#!/usr/bin/env python3
"""Propagation delay between two Switchyard replicas (bench/replicas.sh runs it).

- admin: sets the default tenant's pipeline through replica A; from A's 200 to the moment
  B's `GET /admin/tenants` shows that pipeline version.
- kv: sends a new prompt through A (approximate mode); from A's answer to the moment B's
  `POST /admin/kv/lookup` reports the serving backend holding it.

Prints p50/p99 (ms) of each over --samples samples, B polled back to back.
"""

import argparse
import http.client
import json
import statistics
import time
import urllib.parse


class Api:
    def __init__(self, base, token=None):
        u = urllib.parse.urlparse(base)
        self.conn = http.client.HTTPConnection(u.hostname, u.port)
        self.headers = {"content-type": "application/json"}
        if token:
            self.headers["authorization"] = f"Bearer {token}"

    def call(self, method, path, body=None):
        data = None if body is None else json.dumps(body)
        self.conn.request(method, path, body=data, headers=self.headers)
        r = self.conn.getresponse()
        payload = r.read()
        return r.status, (json.loads(payload) if payload else None), r.getheader("x-switchyard-backend")


def wait(check, what, timeout=10.0):
    deadline = time.perf_counter() + timeout
    while not check():
        if time.perf_counter() > deadline:
            raise SystemExit(f"timed out waiting for {what}")


def pct(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))]


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--samples", type=int, default=200)
    p.add_argument("--token", required=True)
    p.add_argument("--a", required=True, help="replica A's client URL")
    p.add_argument("--a-admin", required=True)
    p.add_argument("--b-admin", required=True)
    args = p.parse_args()
    a_admin, b_admin = Api(args.a_admin, args.token), Api(args.b_admin, args.token)
    client = Api(args.a)

    admin = []
    for i in range(args.samples):
        spec = {"scorers": [{"policy": "least-load", "weight": round(0.1 + (i % 9) * 0.1, 1)}]}
        status, info, _ = a_admin.call("PUT", "/admin/tenants/default/pipeline", spec)
        assert status == 200, (status, info)
        t0 = time.perf_counter()
        version = info["version"]

        def seen():
            _, tenants, _ = b_admin.call("GET", "/admin/tenants")
            return any(t["tenant"] == "default" and t["version"] == version for t in tenants)

        wait(seen, f"pipeline version {version} on B")
        admin.append((time.perf_counter() - t0) * 1e3)

    # Back to affinity, so requests record what they were served by.
    a_admin.call("PUT", "/admin/tenants/default/pipeline",
                 {"scorers": [{"policy": "prefix-affinity", "weight": 0.6}, {"policy": "least-load", "weight": 0.4}]})
    kv = []
    for i in range(args.samples):
        content = f"sample {i} " + "a shared system prompt of some length " * 20
        body = {"model": "m", "max_tokens": 1, "messages": [{"role": "user", "content": content}]}
        status, _, backend = client.call("POST", "/v1/chat/completions", body)
        assert status == 200, status
        t0 = time.perf_counter()
        lookup = {"model": "m", "messages": [{"role": "user", "content": content}]}

        def recorded():
            _, report, _ = b_admin.call("POST", "/admin/kv/lookup", lookup)
            return any(b["name"] == backend and b["cached_tokens"] > 0 for b in report["backends"])

        wait(recorded, f"KV record {i} on B")
        kv.append((time.perf_counter() - t0) * 1e3)

    print(f"\n| propagation A -> B ({args.samples} samples) | p50 | p99 | max |")
    print("|---|---|---|---|")
    for name, xs in [("admin change (pipeline set, from A's 200)", admin),
                     ("approximate KV record (from A's answer)", kv)]:
        print(f"| {name} | {statistics.median(xs):.1f} ms | {pct(xs, 0.99):.1f} ms | {max(xs):.1f} ms |")


if __name__ == "__main__":
    main()
