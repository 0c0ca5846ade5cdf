"""Test policy in Python (built with componentize-py by the host's tests): tries what a
policy must not get and logs what it saw, one line each: a file, a directory listing,
both clocks around a 2.5 s sleep, the environment, `os.urandom`, Python's `random`, a
TCP connection. Scores each candidate with `random.random()`, so decisions show whether
randomness replays with the request.

Config `{"raise": true}` makes `score_all` raise, to check how the exception is
reported.
"""

import os
import random
import socket
import time

from switchyard_policy import Scorer, log


class Probe(Scorer):
    def __init__(self, **config):
        self.fail = bool(config.get("raise"))

    def score_all(self, req, candidates, fleet):
        if self.fail:
            raise RuntimeError(f"asked to fail on request {req.id}")
        seen = []
        try:
            with open("/etc/passwd") as f:
                seen.append("file: read " + f.read(16))
        except OSError as e:
            seen.append(f"file: {type(e).__name__}")
        try:
            seen.append(f"listdir: {os.listdir('/')}")
        except OSError as e:
            seen.append(f"listdir: {type(e).__name__}")
        seen.append(f"time: {time.time()}")
        seen.append(f"monotonic: {time.monotonic_ns()}")
        time.sleep(2.5)
        seen.append(f"after sleep: {time.time()} {time.monotonic_ns()}")
        seen.append(f"environ: {dict(os.environ)}")
        seen.append(f"urandom: {os.urandom(8).hex()}")
        try:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.connect(("127.0.0.1", 9))
            seen.append("socket: connected")
        except OSError as e:
            seen.append(f"socket: {type(e).__name__}")
        for line in seen:
            log.info(line)
        leaked = any(l.startswith("file: read") or l == "socket: connected" for l in seen)
        return [1.0 if leaked else random.random() for _ in candidates]
