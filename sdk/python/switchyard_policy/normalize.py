"""Helpers to turn raw figures into scores in [0, 1]; the same as the Rust SDK's."""

from __future__ import annotations

import math
from typing import List, Optional, Sequence, Tuple

from ._policy import Score


def _bounds(values: Sequence[float]) -> Tuple[float, float]:
    lo, hi = math.inf, -math.inf
    for v in values:
        if math.isfinite(v):
            lo = min(lo, v)
            hi = max(hi, v)
    return lo, hi


def min_max(values: Sequence[float]) -> List[Score]:
    """Scales `values` so the smallest maps to 0 and the largest to 1; when all are
    equal, every score is 1."""
    lo, hi = _bounds(values)
    if not hi > lo:
        return [Score.ONE for _ in values]
    return [Score((v - lo) / (hi - lo)) for v in values]


def min_max_inverted(values: Sequence[float]) -> List[Score]:
    """Like `min_max` but lower is better: the smallest scores 1, the largest 0."""
    return [s.inverted() for s in min_max(values)]


def decay(value: float, half: float) -> Score:
    """`1 / (1 + value / half)`: 1 at 0, 0.5 at `half`, towards 0 as `value` grows."""
    if half <= 0:
        return Score.ONE if value <= 0 else Score.ZERO
    return Score(1.0 / (1.0 + max(value, 0.0) / half))


def _relative(value: float, lo: float) -> Score:
    if not math.isfinite(value):
        return Score.ZERO
    if value <= 0:
        return Score.ONE
    return Score(max(lo, 0.0) / value)


def relative_to_min(values: Sequence[float]) -> List[Score]:
    """`min / value` for lower-is-better figures (a time, a price): the smallest scores
    1, one twice as large 0.5. A value of 0 or less scores 1; NaN or infinity 0."""
    lo, _ = _bounds(values)
    return [_relative(v, lo) for v in values]


def relative_to_min_or(values: Sequence[Optional[float]], unknown: Score) -> List[Score]:
    """`relative_to_min` over the known values; each None scores `unknown`."""
    lo, _ = _bounds([v for v in values if v is not None])
    return [unknown if v is None else _relative(v, lo) for v in values]
