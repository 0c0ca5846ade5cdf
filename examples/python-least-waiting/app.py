"""Prefer the backend with the fewest waiting requests: a Switchyard scorer in Python.

See README.md for building it with componentize-py; `tests/guests/least-waiting` is the
same policy in Rust.
"""

from switchyard_policy import Score, Scorer


class LeastWaiting(Scorer):
    def score(self, req, candidate, fleet):
        return Score.ratio(1, 1 + candidate.waiting)
