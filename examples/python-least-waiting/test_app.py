"""Native unit tests: `python -m pytest` in this directory, no Wasm involved."""

import pathlib

from switchyard_policy import testing

from app import LeastWaiting


def test_the_idle_backend_scores_highest():
    cands = [testing.candidate(0, waiting=3), testing.candidate(1), testing.candidate(2, waiting=1)]
    scores = testing.score(LeastWaiting, "", testing.request(100), cands, testing.fleet(3))
    assert scores == [0.25, 1.0, 0.5]


def test_the_example_case_decides_as_the_component_does():
    case = pathlib.Path(__file__).parents[1] / "policy-case.json"
    # Waiting 2, 0 and 5 (`switchyard policy run` prints the same, as f32).
    assert testing.run_case(LeastWaiting, case.read_text()) == [1 / 3, 1.0, 1 / 6]
