"""Write Switchyard routing policies in Python.

A policy is one of three kinds, each a base class:

- `Filter`: removes backends that must not serve a request (`check` returns `Allow` or
  `Exclude(reason)`).
- `Scorer`: rates each candidate backend in [0, 1] (`score` returns a `Score`); the
  router sums weighted scores.
- `Placer`: takes the whole decision (`place` returns `Single`, `Split` or `Reject`).

Subclass one in your app module and build it with componentize-py; the last policy class
the module defines is exported as the component's world (or name it yourself:
`WitWorld = switchyard_policy.export(MyPolicy)`), and the contract's row decoding stays
hidden:

    from switchyard_policy import Scorer, Score

    class LeastWaiting(Scorer):
        def score(self, req, candidate, fleet):
            return Score.ratio(1, 1 + candidate.waiting)

    componentize-py -d wit -w scorer componentize app -o least_waiting.wasm

Config: the tenant's JSON config reaches the class as keyword arguments (override the
`configure` classmethod for anything else). Helpers: `normalize` turns raw figures into
scores, `Candidate.load` and `Candidate.prefill_seconds` estimate a backend's queue,
`Request.rng` gives randomness that replays with the request. Unit-test a policy
natively with `switchyard_policy.testing` and pytest, no Wasm involved.
"""

from . import log, normalize
from ._export import export
from ._policy import (
    Allow,
    Exclude,
    Filter,
    Placement,
    Placer,
    Reject,
    Score,
    Scorer,
    Single,
    Split,
    Verdict,
)
from ._types import Backend, Candidate, Fleet, PrefixGroup, Request, Role
from .config import ConfigError, from_json
from .rng import Rng

__version__ = "0.1.0"

__all__ = [
    "Allow",
    "Backend",
    "Candidate",
    "ConfigError",
    "Exclude",
    "Filter",
    "Fleet",
    "Placement",
    "Placer",
    "PrefixGroup",
    "Reject",
    "Request",
    "Rng",
    "Role",
    "Score",
    "Scorer",
    "Single",
    "Split",
    "Verdict",
    "export",
    "from_json",
    "log",
    "normalize",
]
