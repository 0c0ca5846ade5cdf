"""Deterministic randomness for policies: seed from the request id so a decision can be
replayed. The same generator (SplitMix64) and the same draws as the Rust SDK's `Rng`."""

from __future__ import annotations

import math
from typing import Sequence

_MASK = (1 << 64) - 1


class Rng:
    """A small pseudo-random generator (SplitMix64). Not cryptographic; the same seed
    always yields the same sequence."""

    __slots__ = ("_state",)

    def __init__(self, seed: int):
        self._state = seed & _MASK

    def next_u64(self) -> int:
        """The next 64 random bits."""
        self._state = (self._state + 0x9E3779B97F4A7C15) & _MASK
        z = self._state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK
        return z ^ (z >> 31)

    def next_f64(self) -> float:
        """A uniform value in [0, 1)."""
        return (self.next_u64() >> 11) / float(1 << 53)

    def below(self, n: int) -> int:
        """A uniform index in `range(n)`; 0 when `n` is 0."""
        if n <= 0:
            return 0
        return (self.next_u64() * n) >> 64

    def weighted(self, weights: Sequence[float]) -> int:
        """An index drawn with probability proportional to `weights[i]`. Negative, NaN or
        infinite weights count as 0; with no positive weight the draw is uniform."""

        def usable(w: float) -> float:
            return w if math.isfinite(w) and w > 0 else 0.0

        total = sum(usable(w) for w in weights)
        if total <= 0:
            return self.below(len(weights))
        target = self.next_f64() * total
        for i, w in enumerate(weights):
            w = usable(w)
            if target < w:
                return i
            target -= w
        for i in range(len(weights) - 1, -1, -1):
            if usable(weights[i]) > 0:
                return i
        return 0
