"""The three policy base classes and the values they return."""

from __future__ import annotations

from typing import List, Optional, Sequence, Tuple, Type, TypeVar

from ._types import Candidate, Fleet, Request
from .config import ConfigError, from_json

P = TypeVar("P", bound="Policy")


_new = float.__new__


class Score(float):
    """A score in [0, 1]; higher is better. Construction clamps, and NaN becomes 0, so a
    value built with it is always one the host accepts. A `float`, so it is returned
    as is."""

    __slots__ = ()

    ZERO: "Score"
    """The worst score."""
    ONE: "Score"
    """The best score."""

    def __new__(cls, value: float = 0.0) -> "Score":
        v = float(value)
        # NB: NaN fails both comparisons and becomes 0.
        return _new(cls, v if 0.0 <= v <= 1.0 else (1.0 if v > 1.0 else 0.0))

    @staticmethod
    def new(value: float) -> "Score":
        """`value` clamped to [0, 1]; NaN becomes 0."""
        return Score(value)

    @staticmethod
    def ratio(part: float, whole: float) -> "Score":
        """`part / whole` as a score; 0 when `whole` is 0."""
        # NB: the hot helper of most scorers, so it makes the float itself.
        if whole == 0:
            return _ZERO
        v = part / whole
        if v >= 1.0:
            return _ONE
        return _new(Score, v) if v > 0.0 else _ZERO

    def inverted(self) -> "Score":
        """`1 - self`."""
        return Score(1.0 - self)

    def get(self) -> float:
        """The value, in [0, 1], as a plain float."""
        return float(self)

    def __repr__(self) -> str:
        return f"Score({float(self)!r})"


Score.ZERO = _ZERO = Score(0.0)
Score.ONE = _ONE = Score(1.0)


class Verdict:
    """A filter's verdict on one candidate: [`Allow`] or [`Exclude`]`(reason)`."""

    __slots__ = ()


class _Allow(Verdict):
    __slots__ = ()

    def __repr__(self) -> str:
        return "Allow"


Allow = _Allow()
"""The backend may serve the request."""


class Exclude(Verdict):
    """The backend must not serve the request, for this reason."""

    __slots__ = ("reason",)

    def __init__(self, reason: str):
        self.reason = reason

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Exclude) and other.reason == self.reason

    def __repr__(self) -> str:
        return f"Exclude({self.reason!r})"


class Placement:
    """Where a placer sends a request: [`Single`], [`Split`] or [`Reject`]."""

    __slots__ = ()

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and all(
            getattr(self, f) == getattr(other, f) for f in self.__slots__
        )

    def __repr__(self) -> str:
        fields = ", ".join(f"{f}={getattr(self, f)!r}" for f in self.__slots__)
        return f"{type(self).__name__}({fields})"


class Single(Placement):
    """One backend serves the whole request."""

    __slots__ = ("backend",)

    def __init__(self, backend: int):
        self.backend = backend


class Split(Placement):
    """The prompt runs on `prefill`, generation on `decode`."""

    __slots__ = ("prefill", "decode")

    def __init__(self, prefill: int, decode: int):
        self.prefill = prefill
        self.decode = decode


class Reject(Placement):
    """Refuse the request with this HTTP status (400..=599) and message."""

    __slots__ = ("status", "message")

    def __init__(self, status: int, message: str):
        self.status = status
        self.message = message


class Policy:
    """What every policy kind shares: building it from its JSON config.

    The default `configure` parses the config (an empty one reads as `{}`) and passes a
    JSON object's keys as keyword arguments to the class, so a policy takes its config
    as `__init__` parameters with defaults. Override it for anything else; raise
    `ConfigError` to reject a config.
    """

    #: The world a subclass targets; set by `Filter`, `Scorer` and `Placer`.
    WORLD: str = ""

    @classmethod
    def configure(cls: Type[P], config: str) -> P:
        """Builds the policy from its JSON config (empty when none is set)."""
        value = from_json(config)
        if not isinstance(value, dict):
            raise ConfigError(f"invalid policy config: expected a JSON object, got {config!r}")
        try:
            return cls(**value)
        except TypeError as e:
            raise ConfigError(f"invalid policy config: {e}") from None

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if cls.__module__ != __name__:  # an author's policy, not Filter, Scorer, Placer
            from . import _export

            _export.register(cls)


class Filter(Policy):
    """Removes backends that must not serve a request."""

    WORLD = "filter"

    def check(self, req: Request, candidate: Candidate, fleet: Fleet) -> Verdict:
        """Judges one candidate: `Allow`, or `Exclude(reason)`."""
        raise NotImplementedError(f"{type(self).__name__} implements neither check nor exclude")

    def exclude(
        self, req: Request, candidates: Sequence[Candidate], fleet: Fleet
    ) -> List[Tuple[int, str]]:
        """Judges every candidate; returns the excluded ones as `(backend, reason)`.
        Override it when the verdict depends on the candidates as a group."""
        out = []
        for c in candidates:
            verdict = self.check(req, c, fleet)
            if isinstance(verdict, Exclude):
                out.append((c.backend, verdict.reason))
        return out


class Scorer(Policy):
    """Rates each candidate in [0, 1]."""

    WORLD = "scorer"

    def score(self, req: Request, candidate: Candidate, fleet: Fleet) -> float:
        """Rates one candidate: a `Score` (or a float in [0, 1])."""
        raise NotImplementedError(f"{type(self).__name__} implements neither score nor score_all")

    def score_all(
        self, req: Request, candidates: Sequence[Candidate], fleet: Fleet
    ) -> List[float]:
        """Rates every candidate, in order. Override it when a score depends on the
        others (normalising against the best, say)."""
        score = self.score
        return [score(req, c, fleet) for c in candidates]


class Placer(Policy):
    """Takes the whole routing decision."""

    WORLD = "placer"

    def place(self, req: Request, candidates: Sequence[Candidate], fleet: Fleet) -> Placement:
        """Chooses where the request goes; `candidates` is never empty."""
        raise NotImplementedError(f"{type(self).__name__} does not implement place")


def kind_of(cls: type) -> Optional[str]:
    """The world `cls` targets, or None for a class that is not a policy."""
    for base in (Filter, Scorer, Placer):
        if isinstance(cls, type) and issubclass(cls, base):
            return base.WORLD
    return None
