"""The request being routed, the candidates it can go to, and the fleet they belong to.

Mirrors the Rust SDK's `Request`, `Candidate`, `Backend` and `Fleet`. The first three
are named tuples: cheap to make from the contract's values (which matters inside the
component, where every Python operation costs fuel), immutable like the Rust SDK's
borrowed values, and `_replace` gives variations in tests.
"""

from __future__ import annotations

import enum
import sys
from collections import namedtuple
from typing import Iterable, Optional, Sequence, Tuple

from .rng import Rng

Labels = Sequence[Tuple[str, str]]


def _find_label(labels: Labels, key: str) -> Optional[str]:
    for k, v in labels:
        if k == key:
            return v
    return None


class Role(enum.Enum):
    """What a backend is deployed to do in a prefill/decode split."""

    ANY = 0
    """Whole requests, or either leg of a split."""
    PREFILL = 1
    """Prompts only."""
    DECODE = 2
    """Generation only."""

    def can_prefill(self) -> bool:
        """Whether a backend in this role may run a request's prompt."""
        return self is not Role.DECODE

    def can_decode(self) -> bool:
        """Whether a backend in this role may generate a request's output."""
        return self is not Role.PREFILL


class PrefixGroup(namedtuple("PrefixGroup", ("key", "head_tokens"))):
    """Where a request's own prefix starts (the contract's `prefix-group`): `key` names
    the group (requests with the same key share every token up to the end of the KV
    block it keys, the first past the shared head), `head_tokens` the leading tokens most
    of the model's prompts also begin with, which say nothing about where it belongs."""

    __slots__ = ()


_TEST_PREFIX: list = [None]
"""What `Request.prefix_group` answers in native tests (`testing.set_prefix_group`)."""


REQUEST_FIELDS = (
    "id",
    "tenant",
    "model",
    "prompt_tokens",
    "max_tokens",
    "session",
    "labels",
    "slo_ttft_ms",
    "slo_tpot_ms",
)


class Request(
    namedtuple("Request", REQUEST_FIELDS, defaults=(0, "", "", 0, 0, None, (), None, None))
):
    """One request being routed.

    Fields: `id` (stable 64-bit hash of the request id; seed any randomness with it),
    `tenant`, `model`, `prompt_tokens`, `max_tokens` (requested output tokens),
    `session` (client session id, or None), `labels` (from configured request headers,
    e.g. `("data-class", "pii")`), `slo_ttft_ms` and `slo_tpot_ms` (objectives in
    milliseconds, or None).
    """

    __slots__ = ()

    def label(self, key: str) -> Optional[str]:
        """The value of request label `key`, if set."""
        return _find_label(self.labels, key)

    def rng(self) -> Rng:
        """A generator seeded from the request id: the same draws every time the request
        is replayed (the same sequence as the Rust SDK's `Request::rng`)."""
        return Rng(self.id)

    def prefix_group(self) -> Optional[PrefixGroup]:
        """Where the prompt's own prefix starts, past the head most prompts of the model
        share; None when the router does not key the model's prompts or the prompt is
        shorter than one KV block. Each call asks the host: call it once per decision
        (in `score_all` or `place`), not per candidate. In native tests it answers what
        `testing.set_prefix_group` set."""
        if sys.platform == "wasi":
            from wit_world.imports import host

            p = host.request_prefix()
            return None if p is None else PrefixGroup(p.key, p.head_tokens)
        return _TEST_PREFIX[0]


CANDIDATE_FIELDS = (
    "backend",
    "waiting",
    "running",
    "kv_usage",
    "cached_prefix_tokens",
    "in_flight_requests",
    "in_flight_prefill_tokens",
    "prefill_tokens_per_s",
    "decode_tokens_per_s",
    "metrics_age_ms",
)


class Candidate(namedtuple("Candidate", CANDIDATE_FIELDS, defaults=(0,) * 10)):
    """One backend able to serve the request, with its live figures.

    Fields, in the contract's row order: `backend` (its index in the fleet), `waiting`
    and `running` (the engine's queue and batch), `kv_usage` (fraction of the KV cache
    in use, [0, 1]), `cached_prefix_tokens` (tokens of this prompt already cached
    there), `in_flight_requests` and `in_flight_prefill_tokens` (the router's own
    requests to it), `prefill_tokens_per_s` and `decode_tokens_per_s` (effective
    speeds, 0 when unknown), `metrics_age_ms` (age of the scraped figures).
    """

    __slots__ = ()

    def uncached_tokens(self, req: Request) -> int:
        """Prompt tokens this backend would have to compute for `req` (not cached)."""
        return max(0, req.prompt_tokens - self.cached_prefix_tokens)

    def load(self) -> int:
        """Requests on this backend: the larger of the engine's scraped queue
        (`waiting + running`) and the router's own in-flight count."""
        return max(self.waiting + self.running, self.in_flight_requests)

    def prefill_seconds(self, tokens: int) -> Optional[float]:
        """Seconds until `tokens` more prompt tokens would be prefilled here, behind the
        router's in-flight prefill tokens; None when the speed is unknown."""
        if self.prefill_tokens_per_s <= 0:
            return None
        return (self.in_flight_prefill_tokens + tokens) / self.prefill_tokens_per_s


BACKEND_FIELDS = (
    "name",
    "vendor",
    "accelerator",
    "region",
    "labels",
    "role",
    "cost_per_hour",
    "prefill_tokens_per_s",
    "decode_tokens_per_s",
    "kv_capacity_tokens",
    "kv_link_gbytes_per_s",
    "kv_bytes_per_token",
)


class Backend(
    namedtuple(
        "Backend", BACKEND_FIELDS, defaults=("", "", "", "", (), Role.ANY, 0.0, 0.0, 0.0, 0, 0.0, 0)
    )
):
    """Static facts about one backend.

    Fields: `name` (unique, from the operator's config), `vendor` and `accelerator`
    (lowercase, e.g. `nvidia`, `h100`), `region` (empty when not configured), `labels`
    (operator labels, unique keys), `role` (a `Role`), `cost_per_hour` (0 when not
    configured), `prefill_tokens_per_s` and `decode_tokens_per_s` (declared speeds, 0
    when unknown), `kv_capacity_tokens`, `kv_link_gbytes_per_s`, `kv_bytes_per_token`
    (0 when unknown).
    """

    __slots__ = ()

    def label(self, key: str) -> Optional[str]:
        """The value of label `key`, if set."""
        return _find_label(self.labels, key)

    def matches(self, selector: Iterable[Tuple[str, str]]) -> bool:
        """Whether every `(key, value)` of `selector` is set to that value here; an
        empty selector matches every backend, a value of `*` any value."""
        for key, value in selector:
            have = self.label(key)
            if have is None or (value != "*" and have != value):
                return False
        return True


class Fleet:
    """Every backend the router knows; a candidate's `backend` indexes `backends`."""

    __slots__ = ("generation", "backends")

    def __init__(self, generation: int = 0, backends: Sequence[Backend] = ()):
        self.generation = generation
        """Increases on every change."""
        self.backends = list(backends)

    def backend(self, id: int) -> Backend:
        """The backend with this index (raises IndexError for one not in the fleet, which
        the host never sends)."""
        return self.backends[id]

    def get(self, id: int) -> Optional[Backend]:
        """The backend with this index, or None."""
        return self.backends[id] if 0 <= id < len(self.backends) else None

    def find(self, name: str) -> Optional[int]:
        """The index of the backend called `name`."""
        for i, b in enumerate(self.backends):
            if b.name == name:
                return i
        return None

    def can_decode(self, id: int) -> bool:
        """Whether backend `id` may generate (role `any` or `decode`); False if unknown."""
        b = self.get(id)
        return b is not None and b.role.can_decode()

    def can_prefill(self, id: int) -> bool:
        """Whether backend `id` may run a prompt (role `any` or `prefill`); False if unknown."""
        b = self.get(id)
        return b is not None and b.role.can_prefill()

    def __repr__(self) -> str:
        return f"Fleet(generation={self.generation!r}, backends={self.backends!r})"
