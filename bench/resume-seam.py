#!/usr/bin/env python3
"""The seam of a resumed stream, measured: two backends behind a release `switchyard`, a
streamed chat completion through the router with the real `openai` client, the serving
backend SIGKILLed after `--kill-after` tokens, the stream read to its end; repeated
`--rounds` times (the killed backend is restarted between rounds).

Per round it records the seam the router measured (`stream_legs[1].seam_ms` of the
decision: the old backend's last token to the new one's first) and, as the reference the
goal is stated against, the new backend's own time to first token for the continuation
(the prompt plus the text so far, sent to it directly, prompt cache off where the engine
has one). Goal (issue 15): seam <= that prefill + 50 ms.

    bench/resume-seam.py [--engine llama|sim|both] [--rounds 20] [--tokens 200] [--kill-after 30]

`llama` runs two real `llama-server`s with the tests' tiny model (`tests/llama/setup.sh`
builds them); `sim` runs two `switchyard sim` processes (H100 profile, real time). Prints a
table and one JSON line per engine. Everything binds 127.0.0.1; every process is stopped
on exit. Results: docs/operations.md ("Resuming streams").
"""

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import openai

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "bench-admin-token"
MODEL = "m"
PROMPT = "Tell me a long story about a router."


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_ok(url: str, headers: dict | None = None) -> bool:
    try:
        req = urllib.request.Request(url, headers=headers or {})
        with urllib.request.urlopen(req, timeout=1) as r:
            return 200 <= r.status < 300
    except Exception:
        return False


def wait_until(what: str, check, secs: float = 60) -> None:
    end = time.monotonic() + secs
    while time.monotonic() < end:
        if check():
            return
        time.sleep(0.05)
    sys.exit(f"never ready: {what}")


class Backend:
    """One engine process on a fixed port, restartable."""

    def __init__(self, name: str, argv, log_dir: Path):
        self.name, self.port = name, free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.argv = [a.replace("{port}", str(self.port)) for a in argv]
        self.log = open(log_dir / f"{name}.log", "ab")
        self.proc = None

    def start(self) -> None:
        self.proc = subprocess.Popen(self.argv, stdout=self.log, stderr=self.log)
        wait_until(self.name, lambda: http_ok(f"{self.url}/health"))

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()


def engines(kind: str, switchyard: str, log_dir: Path):
    """Two backends of `kind` and the router's engine name for them."""
    if kind == "llama":
        out = subprocess.run(
            [str(ROOT / "tests/llama/setup.sh")], check=True, capture_output=True, text=True
        ).stdout
        paths = dict(line.split("=", 1) for line in out.split())
        argv = [paths["LLAMA_SERVER"], "-m", paths["LLAMA_MODEL"], "--metrics", "-np", "2",
                "-c", "4096", "-t", "1", "--host", "127.0.0.1", "--port", "{port}"]
        return [Backend(n, argv, log_dir) for n in ("llama-a", "llama-b")], "llamacpp"
    backends = []
    for n in ("sim-a", "sim-b"):
        argv = [switchyard, "sim", "--profile", "h100", "--name", n, "--model", MODEL,
                "--port", "{port}"]
        backends.append(Backend(n, argv, log_dir))
    return backends, "vllm"


def router(backends, engine: str, switchyard: str, work: Path):
    port, admin = free_port(), free_port()
    lines = [
        f"listen: 127.0.0.1:{port}",
        f"admin: {{listen: 127.0.0.1:{admin}, token: {TOKEN}}}",
        "pool: {health_interval_ms: 100, scrape_interval_ms: 100, unhealthy_after: 1}",
        "backends:",
    ]
    for b in backends:
        lines.append(f"  - {{name: {b.name}, url: \"{b.url}\", models: [{MODEL}], engine: {engine}}}")
    config = work / f"switchyard-{engine}.yaml"
    config.write_text("\n".join(lines) + "\n")
    log = open(work / f"switchyard-{engine}.log", "ab")
    env = dict(os.environ, RUST_LOG="warn")
    proc = subprocess.Popen([switchyard, "serve", "--config", str(config)],
                            stdout=log, stderr=log, env=env)
    url, admin_url = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{admin}"
    wait_until("switchyard", lambda: http_ok(f"{url}/ready"))
    return proc, url, admin_url


def admin_get(admin_url: str, path: str):
    req = urllib.request.Request(admin_url + path, headers={"authorization": f"Bearer {TOKEN}"})
    with urllib.request.urlopen(req, timeout=5) as r:
        return json.load(r)


def healthy(admin_url: str, name: str) -> bool:
    try:
        return admin_get(admin_url, f"/admin/backends/{name}").get("healthy") is True
    except Exception:
        return False


def one_round(client, by_name, tokens: int, kill_after: int):
    """Streams one chat completion, killing its backend mid-stream; returns the killed
    backend, the text before the kill, and the finish reason."""
    raw = client.chat.completions.with_raw_response.create(
        model=MODEL, max_tokens=tokens, temperature=0, seed=42, stream=True,
        messages=[{"role": "user", "content": PROMPT}], extra_body={"ignore_eos": True},
    )
    serving = raw.headers.get("x-switchyard-backend")
    pieces, finish, killed = [], None, None
    for chunk in raw.parse():
        if not chunk.choices:
            continue
        choice = chunk.choices[0]
        if choice.delta.content:
            pieces.append(choice.delta.content)
        if choice.finish_reason:
            finish = choice.finish_reason
        if killed is None and len(pieces) == kill_after:
            by_name[serving].kill()
            killed, before = serving, "".join(pieces)
    if killed is None:
        sys.exit(f"the stream ended after {len(pieces)} tokens, before the kill")
    return killed, before, finish, len(pieces)


def direct_ttft_ms(backend: Backend, engine: str, text_so_far: str) -> float:
    """The backend's own time to first token for the continuation the router sends."""
    body = {
        "model": MODEL, "max_tokens": 1, "temperature": 0, "stream": True,
        "messages": [{"role": "user", "content": PROMPT},
                     {"role": "assistant", "content": text_so_far}],
        "continue_final_message": True, "add_generation_prompt": False,
    }
    if engine == "llamacpp":
        body["cache_prompt"] = False
    req = urllib.request.Request(
        f"{backend.url}/v1/chat/completions", data=json.dumps(body).encode(),
        headers={"content-type": "application/json"},
    )
    start = time.perf_counter()
    with urllib.request.urlopen(req, timeout=30) as r:
        for line in r:
            if line.startswith(b"data:") and b"[DONE]" not in line:
                return (time.perf_counter() - start) * 1000.0
    return float("nan")


def quantile(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))]


def run(kind: str, args, switchyard: str, work: Path):
    backends, engine = engines(kind, switchyard, work)
    by_name = {b.name: b for b in backends}
    proc = None
    try:
        for b in backends:
            b.start()
        proc, url, admin_url = router(backends, engine, switchyard, work)
        for b in backends:
            wait_until(f"{b.name} healthy", lambda b=b: healthy(admin_url, b.name))
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
        refs, complete = [], 0
        for _ in range(args.rounds):
            killed, before, finish, got = one_round(client, by_name, args.tokens, args.kill_after)
            complete += finish is not None and got >= args.tokens - 2
            survivor = next(b for b in backends if b.name != killed)
            refs.append(direct_ttft_ms(survivor, engine, before))
            by_name[killed].start()
            wait_until(f"{killed} healthy", lambda: healthy(admin_url, killed))
        decisions = admin_get(admin_url, f"/admin/decisions?limit={args.rounds}")
        json.dump(decisions, open(work / f"decisions-{kind}.json", "w"))
        seams = [d["stream_legs"][1]["seam_ms"] for d in decisions
                 if len(d.get("stream_legs") or []) > 1]
    finally:
        if proc:
            proc.kill()
            proc.wait()
        for b in backends:
            b.kill()
    if len(seams) != args.rounds:
        sys.exit(f"{kind}: {len(seams)} resumed streams recorded, {args.rounds} expected; "
                 f"decisions: {json.dumps(decisions)[:3000]}")
    over = [s - r for s, r in zip(reversed(seams), refs)]
    return {
        "engine": kind, "rounds": args.rounds, "complete_streams": complete,
        "seam_p50_ms": statistics.median(seams), "seam_p99_ms": quantile(seams, 0.99),
        "seam_max_ms": max(seams),
        "direct_ttft_p50_ms": statistics.median(refs), "direct_ttft_p99_ms": quantile(refs, 0.99),
        "seam_minus_ttft_p50_ms": statistics.median(over),
        "seam_minus_ttft_max_ms": max(over),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--engine", choices=["llama", "sim", "both"], default="both")
    p.add_argument("--rounds", type=int, default=20)
    p.add_argument("--tokens", type=int, default=200)
    p.add_argument("--kill-after", type=int, default=30)
    args = p.parse_args()
    subprocess.run(["cargo", "build", "--quiet", "--release", "-p", "switchyard", "--bin",
                    "switchyard"], cwd=ROOT, check=True)
    target = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
    switchyard = str(target / "release" / "switchyard")
    kinds = ["llama", "sim"] if args.engine == "both" else [args.engine]
    with tempfile.TemporaryDirectory() as work:
        results = [run(k, args, switchyard, Path(work)) for k in kinds]
    for r in results:
        print(f"{r['engine']:>6}: seam p50 {r['seam_p50_ms']:.1f} ms, p99 {r['seam_p99_ms']:.1f} ms "
              f"(max {r['seam_max_ms']:.1f}); direct TTFT of the continuation p50 "
              f"{r['direct_ttft_p50_ms']:.1f} ms, p99 {r['direct_ttft_p99_ms']:.1f} ms; "
              f"seam - TTFT p50 {r['seam_minus_ttft_p50_ms']:.1f} ms, max "
              f"{r['seam_minus_ttft_max_ms']:.1f} ms; {r['complete_streams']}/{r['rounds']} complete")
    for r in results:
        print(json.dumps(r))


if __name__ == "__main__":
    main()
