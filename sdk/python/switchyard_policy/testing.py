"""Unit-test a policy natively with pytest, no Wasm involved.

Build inputs with `request`, `candidate`, `backend` and `fleet`, then call the policy
through `score`, `exclude` or `place`: they configure it from a JSON string, hand it the
candidates the way the component does (packed into the contract's rows and decoded
again, so `f32` figures are rounded as the host sends them), and check its output the
way the router does (one score per candidate, each in [0, 1]; only candidates' backends
in exclusions and placements)::

    from switchyard_policy import testing
    from app import LeastWaiting

    def test_prefers_the_idle_backend():
        busy = testing.candidate(1, waiting=3)
        scores = testing.score(LeastWaiting, "", testing.request(100),
                               [testing.candidate(0), busy], testing.fleet(2))
        assert scores == [1.0, 0.25]

`run_case` runs a case file of `switchyard policy run --input` natively, so a test can
compare the native decision with the component's.
"""

from __future__ import annotations

import json
import math
import random
import struct
from typing import Any, List, Optional, Sequence, Tuple, Type

from . import _export, log
from ._policy import Filter, Placement, Placer, Reject, Scorer, Single, Split
from ._types import _TEST_PREFIX, Backend, Candidate, Fleet, PrefixGroup, Request, Role


def set_prefix_group(group: Optional[PrefixGroup]) -> None:
    """Sets what `Request.prefix_group` answers, as the router's KV index would for the
    request being decided."""
    _TEST_PREFIX[0] = group


def request(prompt_tokens: int, **fields: Any) -> Request:
    """A request for model `model` from tenant `default` with this prompt length and
    128 output tokens; `fields` override any other field."""
    values = dict(id=1, tenant="default", model="model", prompt_tokens=prompt_tokens, max_tokens=128)
    values.update(fields)
    return Request(**values)


def candidate(index: int, **fields: Any) -> Candidate:
    """An idle candidate for backend `index` with nothing cached; `fields` override."""
    return Candidate(backend=index, **fields)


def backend(index: int, **fields: Any) -> Backend:
    """A backend named `b<index>`, vendor `nvidia`, accelerator `h100`; `fields` override."""
    values = dict(name=f"b{index}", vendor="nvidia", accelerator="h100")
    values.update(fields)
    return Backend(**values)


def fleet(n: int) -> Fleet:
    """A fleet of `n` backends built by `backend`."""
    return Fleet(generation=1, backends=[backend(i) for i in range(n)])


def take_logs() -> List[str]:
    """Takes the lines the policy logged so far, as `"Level: message"`."""
    out = list(log._RECORDED)
    log._RECORDED.clear()
    return out


def json_blocks(markdown: str) -> List[str]:
    """The fenced ```` ```json ```` blocks of a markdown document, so a test can check
    that the example configs in a README are accepted."""
    blocks = []
    rest = markdown
    while True:
        start = rest.find("```json\n")
        if start < 0:
            break
        body = rest[start + len("```json\n") :]
        end = body.find("```")
        if end < 0:
            break
        blocks.append(body[:end])
        rest = body[end + 3 :]
    return blocks


def as_sent(candidates: Sequence[Candidate]) -> List[Candidate]:
    """`candidates` as the component receives them: packed into the contract's rows and
    decoded again (`f32` figures rounded, every field an integer or a float)."""
    rows: List[int] = []
    for c in candidates:
        packed = _export.ROW.pack(*(_field(c, i) for i in range(_export.WORDS)))
        rows.extend(_WORDS.unpack(packed))
    return _export.candidates_from_rows(rows)


_WORDS = struct.Struct(f"<{_export.WORDS}I")


def _field(c: Candidate, i: int) -> Any:
    v = c[i]
    return float(v) if i in (3, 7, 8) else int(v)


def _configured(cls: type, config: str):
    policy = cls.configure(config)
    assert isinstance(policy, cls), f"{cls.__name__}.configure returned {policy!r}"
    return policy


def _assert_candidate(candidates: Sequence[Candidate], backend: int, what: str) -> None:
    assert any(c.backend == backend for c in candidates), (
        f"{what} names backend {backend} which is not a candidate"
    )


def score(
    cls: Type[Scorer], config: str, req: Request, candidates: Sequence[Candidate], fleet: Fleet
) -> List[float]:
    """Configures scorer `cls` with `config` and scores `candidates`, checking the result
    as the router would; returns plain floats."""
    policy = _configured(cls, config)
    random.seed(req.id)
    scores = [float(s) for s in policy.score_all(req, as_sent(candidates), fleet)]
    assert len(scores) == len(candidates), (
        f"{len(scores)} scores for {len(candidates)} candidates: one score per candidate"
    )
    for s in scores:
        assert not math.isnan(s) and 0.0 <= s <= 1.0, f"scores in [0, 1]: {scores}"
    return scores


def exclude(
    cls: Type[Filter], config: str, req: Request, candidates: Sequence[Candidate], fleet: Fleet
) -> List[Tuple[int, str]]:
    """Configures filter `cls` with `config`; returns the excluded backends with reasons."""
    policy = _configured(cls, config)
    random.seed(req.id)
    out = list(policy.exclude(req, as_sent(candidates), fleet))
    for b, reason in out:
        assert isinstance(reason, str), f"exclusion reason {reason!r} is not a string"
        _assert_candidate(candidates, b, "an exclusion")
    return out


def place(
    cls: Type[Placer], config: str, req: Request, candidates: Sequence[Candidate], fleet: Fleet
) -> Placement:
    """Configures placer `cls` with `config` and places the request."""
    assert candidates, "a placer always gets at least one candidate"
    policy = _configured(cls, config)
    random.seed(req.id)
    p = policy.place(req, as_sent(candidates), fleet)
    if isinstance(p, Single):
        _assert_candidate(candidates, p.backend, "the placement")
    elif isinstance(p, Split):
        _assert_candidate(candidates, p.prefill, "the prefill leg")
        _assert_candidate(candidates, p.decode, "the decode leg")
    elif isinstance(p, Reject):
        assert 400 <= p.status <= 599, f"rejection status {p.status}"
    else:
        raise AssertionError(f"place returned {p!r}, not Single, Split or Reject")
    return p


def run_case(cls: type, case: str) -> Any:
    """Runs policy `cls` natively on a case (the JSON text of a `switchyard policy run
    --input` file: `config`, `fleet`, `request`, `candidates`). Returns the scores, the
    exclusions as `[backend, reason]` lists, or the placement."""
    data = json.loads(case)
    config = data.get("config")
    config = "" if config is None else json.dumps(config)
    f = Fleet(
        generation=1,
        backends=[
            Backend(
                **{
                    **{k: v for k, v in b.items() if k != "role"},
                    "labels": [tuple(kv) for kv in b.get("labels", [])],
                    "role": Role[b.get("role", "any").upper()],
                }
            )
            for b in data["fleet"]
        ],
    )
    r = data["request"]
    req = Request(**{**r, "labels": [tuple(kv) for kv in r.get("labels", [])]})
    cands = [Candidate(**c) for c in data["candidates"]]
    if issubclass(cls, Scorer):
        return score(cls, config, req, cands, f)
    if issubclass(cls, Filter):
        return [[b, reason] for b, reason in exclude(cls, config, req, cands, f)]
    return place(cls, config, req, cands, f)
