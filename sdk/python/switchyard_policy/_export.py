"""Glue between the component's exports and a policy class. Not part of the public API.

Inside a component (componentize-py, `sys.platform == "wasi"`), defining a subclass of
`Filter`, `Scorer` or `Placer` sets `WitWorld` in the module that defines it: the class
componentize-py exports for the world. The last policy class defined in the app module
is the one exported. The contract's types stay in here: the packed candidate rows are
decoded into `Candidate`s, the records into `Request` and `Fleet`, and the results back.

NB: a component instance is single-threaded and holds one policy, so the configured
policy and the fleet are module state for the life of the instance.
"""

from __future__ import annotations

import array
import functools
import random
import struct
import sys
import traceback
from typing import Any, Callable, List, Optional

from ._policy import Policy, Reject, Single, Split, kind_of
from ._types import Backend, Candidate, Fleet, Request, Role
from .config import ConfigError

#: The contract's row layout: ten 32-bit words per candidate, `f` words hold f32 bits.
ROW = struct.Struct("<IIIfIIIffI")
WORDS = 10

_policy: Optional[Policy] = None
_fleet = Fleet()


def register(cls: type) -> None:
    """Called for every policy subclass; in a component, exports it from its module."""
    if sys.platform != "wasi" or kind_of(cls) is None:
        return
    module = sys.modules.get(cls.__module__)
    if module is not None:
        module.WitWorld = export(cls)


#: Makes a named tuple from a tuple of every field in order, skipping the argument
#: handling of its constructor.
_new = tuple.__new__
_make = functools.partial(_new, Candidate)


def candidates_from_rows(rows: Any) -> List[Candidate]:
    """The contract's packed rows (ten u32 words per candidate) as candidates; a
    trailing partial row (never sent) is ignored."""
    whole = len(rows) - len(rows) % WORDS
    packed = array.array("I", rows[:whole] if whole != len(rows) else rows).tobytes()
    return list(map(_make, ROW.iter_unpack(packed)))


def request_from_wit(r: Any) -> Request:
    return _new(
        Request,
        (
            r.id,
            r.tenant,
            r.model,
            r.prompt_tokens,
            r.max_tokens,
            r.session,
            r.labels,
            r.slo_ttft_ms or None,
            r.slo_tpot_ms or None,
        ),
    )


#: Roles by the contract's enum value (`_value_`: `Enum.value` is a Python-level
#: property, slow inside the component).
_ROLES = (Role.ANY, Role.PREFILL, Role.DECODE)


def fleet_from_wit(f: Any) -> Fleet:
    return Fleet(
        f.generation,
        [
            _new(
                Backend,
                (
                    b.name,
                    b.vendor,
                    b.accelerator,
                    b.region,
                    b.labels,
                    _ROLES[b.role._value_],
                    b.cost_per_hour,
                    b.prefill_tokens_per_s,
                    b.decode_tokens_per_s,
                    b.kv_capacity_tokens,
                    b.kv_link_gbytes_per_s,
                    b.kv_bytes_per_token,
                ),
            )
            for b in f.backends
        ],
    )


def _report(e: BaseException) -> None:
    """Writes one line naming the exception and where the policy raised it, which the
    host quotes in the fault (`policy raised ValueError: boom at app.py:9 in score`);
    then the traceback."""
    frames = traceback.extract_tb(e.__traceback__)
    where = ""
    if frames:
        last = frames[-1]
        where = f" at {last.filename.rsplit('/', 1)[-1]}:{last.lineno} in {last.name}"
    sys.stderr.write(f"policy raised {type(e).__name__}: {e}{where}\n")
    traceback.print_exception(type(e), e, e.__traceback__, file=sys.stderr)
    sys.stderr.flush()


def _guarded(call: Callable[..., Any]) -> Callable[..., Any]:
    """`call`, reporting an exception it raises (then re-raising it, which traps)."""

    @functools.wraps(call)
    def guarded(*args: Any) -> Any:
        try:
            return call(*args)
        except Exception as e:
            _report(e)
            raise

    return guarded


def _begin(request: Any, candidates: Any):
    req = request_from_wit(request)
    # NB: Python's own `random` module is seeded from the request too, so a policy
    # that uses it decides the same way every time the request is replayed.
    random.seed(req.id)
    return _policy, req, candidates_from_rows(candidates.rows)


def export(cls: type) -> type:
    """The `WitWorld` class componentize-py exports for policy class `cls`."""
    kind = kind_of(cls)

    class WitWorld:
        def configure(self, config: str) -> None:
            global _policy
            from componentize_py_types import Err

            try:
                _policy = cls.configure(config)
            except ConfigError as e:
                raise Err(str(e)) from None

        @_guarded
        def set_fleet(self, fleet: Any) -> None:
            global _fleet
            _fleet = fleet_from_wit(fleet)

    if kind == "scorer":

        def score(self, request: Any, candidates: Any) -> List[float]:
            policy, req, cands = _begin(request, candidates)
            return list(map(float, policy.score_all(req, cands, _fleet)))

        WitWorld.score = _guarded(score)
    elif kind == "filter":

        def exclude(self, request: Any, candidates: Any) -> list:
            from wit_world.imports import types

            policy, req, cands = _begin(request, candidates)
            return [types.Exclusion(b, reason) for b, reason in policy.exclude(req, cands, _fleet)]

        WitWorld.exclude = _guarded(exclude)
    else:

        def place(self, request: Any, candidates: Any) -> Any:
            from wit_world.imports import types

            policy, req, cands = _begin(request, candidates)
            p = policy.place(req, cands, _fleet)
            if isinstance(p, Single):
                return types.Placement_Single(p.backend)
            if isinstance(p, Split):
                return types.Placement_Split(types.Split(p.prefill, p.decode))
            if isinstance(p, Reject):
                return types.Placement_Reject(types.Rejection(p.status, p.message))
            raise TypeError(f"place returned {p!r}, not Single, Split or Reject")

        WitWorld.place = _guarded(place)
    WitWorld.__qualname__ = WitWorld.__name__ = "WitWorld"
    return WitWorld

