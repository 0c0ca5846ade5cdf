"""The Python SDK natively: values, helpers, the testing harness and the component glue
(with stand-ins for the objects componentize-py passes)."""

import json
import math
import pathlib
import sys
import types

import pytest

from switchyard_policy import (
    Allow,
    Backend,
    Candidate,
    ConfigError,
    Exclude,
    Filter,
    Fleet,
    Placer,
    PrefixGroup,
    Reject,
    Request,
    Rng,
    Role,
    Score,
    Scorer,
    Single,
    Split,
    from_json,
    log,
    normalize,
    testing,
)
import switchyard_policy
from switchyard_policy import _export

REPO = pathlib.Path(__file__).resolve().parents[3]


# --- values ---------------------------------------------------------------------------


def test_score_clamps_and_nan_is_zero():
    assert Score(1.5) == 1.0 and Score(-2) == 0.0 and Score(float("nan")) == 0.0
    assert Score.ratio(1, 4) == 0.25 and Score.ratio(3, 0) == Score.ZERO
    assert Score.ratio(5, 4) is Score.ONE and Score.ratio(-1, 4) is Score.ZERO
    assert Score(0.25).inverted() == 0.75
    assert isinstance(Score.ratio(1, 3), float) and type(Score(0.5).get()) is float


def test_candidate_estimates_mirror_the_rust_sdk():
    c = Candidate(waiting=3, running=4, in_flight_requests=5)
    assert c.load() == 7
    assert c._replace(in_flight_requests=9).load() == 9
    q = Candidate(in_flight_prefill_tokens=1000, prefill_tokens_per_s=2000.0)
    assert q.prefill_seconds(3000) == 2.0
    assert Candidate().prefill_seconds(10) is None
    assert Candidate(cached_prefix_tokens=100).uncached_tokens(testing.request(64)) == 0


def test_labels_roles_and_fleet_lookups():
    req = testing.request(10, labels=[("data-class", "pii")])
    assert req.label("data-class") == "pii" and req.label("x") is None
    b = Backend(name="b0", labels=[("tier", "gold"), ("zone", "a")])
    assert b.matches([]) and b.matches([("tier", "gold")]) and b.matches([("zone", "*")])
    assert not b.matches([("tier", "silver")]) and not b.matches([("gpu", "*")])
    fleet = Fleet(1, [b, Backend(name="p", role=Role.PREFILL), Backend(name="d", role=Role.DECODE)])
    assert fleet.find("p") == 1 and fleet.find("nope") is None and fleet.get(7) is None
    assert [fleet.can_decode(i) for i in (0, 1, 2, 9)] == [True, False, True, False]
    assert [fleet.can_prefill(i) for i in (0, 1, 2, 9)] == [True, True, False, False]


def test_rng_is_the_rust_sdks_splitmix64():
    # SplitMix64's reference first output from state 0, as the Rust SDK's `Rng::new(0)`.
    assert Rng(0).next_u64() == 0xE220A8397B1DCDAF
    a, b = Rng(7), Rng(7)
    assert [a.next_u64() for _ in range(4)] == [b.next_u64() for _ in range(4)]
    assert Rng(7).next_u64() != Rng(8).next_u64()
    r = Rng(1)
    assert all(0.0 <= r.next_f64() < 1.0 for _ in range(1000))
    seen = [0] * 3
    for _ in range(10000):
        seen[r.weighted([1.0, 0.0, 3.0])] += 1
    assert seen[1] == 0 and 0.72 < seen[2] / 10000 < 0.78
    assert testing.request(1, id=42).rng().next_u64() == Rng(42).next_u64()


def test_normalize_matches_the_rust_helpers():
    assert normalize.min_max([2.0, 4.0, 3.0]) == [0.0, 1.0, 0.5]
    assert normalize.min_max([5.0, 5.0]) == [1.0, 1.0]
    assert normalize.min_max_inverted([1.0, 3.0]) == [1.0, 0.0]
    assert normalize.relative_to_min([2.0, 4.0, 8.0]) == [1.0, 0.5, 0.25]
    assert normalize.relative_to_min([0.0, 3.0, math.nan, math.inf]) == [1.0, 0.0, 0.0, 0.0]
    assert normalize.relative_to_min_or([None, 4.0, 2.0], Score(0.5)) == [0.5, 0.5, 1.0]
    assert normalize.decay(0.0, 10.0) == 1.0 and abs(normalize.decay(10.0, 10.0) - 0.5) < 1e-9


def test_config_reads_json_and_empty_is_an_empty_object():
    assert from_json("") == {} and from_json("  \n") == {}
    assert from_json('{"a": 1}') == {"a": 1}
    with pytest.raises(ConfigError, match="invalid policy config"):
        from_json("{nope")


# --- policies through the harness -------------------------------------------------------


class Waiting(Scorer):
    """Scores by waiting requests, halving at `half`."""

    def __init__(self, half=4.0):
        self.half = half

    def score(self, req, c, fleet):
        log.info(f"scoring {c.backend}")
        return normalize.decay(c.waiting, self.half)


class EuOnly(Filter):
    def check(self, req, c, fleet):
        return Allow if fleet.backend(c.backend).region == "eu" else Exclude("not in the eu")


class Idlest(Placer):
    def place(self, req, candidates, fleet):
        if req.max_tokens > 4096:
            return Reject(429, "too long")
        best = min(candidates, key=lambda c: c.load())
        return Single(best.backend)


def test_scorer_config_comes_from_json_as_keyword_arguments():
    cands = [testing.candidate(0), testing.candidate(1, waiting=4)]
    assert testing.score(Waiting, "", testing.request(100), cands, testing.fleet(2)) == [1.0, 0.5]
    assert testing.score(Waiting, '{"half": 12}', testing.request(100), cands, testing.fleet(2)) == [
        1.0,
        0.75,
    ]
    assert testing.take_logs() == ["Info: scoring 0", "Info: scoring 1"] * 2
    with pytest.raises(ConfigError, match="unexpected keyword argument 'nope'"):
        Waiting.configure('{"nope": 1}')
    with pytest.raises(ConfigError, match="expected a JSON object"):
        Waiting.configure("[1]")


def test_filters_and_placers_through_the_harness():
    fleet = testing.fleet(3)
    fleet.backends[1] = fleet.backends[1]._replace(region="eu")
    cands = [testing.candidate(i) for i in range(3)]
    assert testing.exclude(EuOnly, "", testing.request(8), cands, fleet) == [
        (0, "not in the eu"),
        (2, "not in the eu"),
    ]
    busy = [testing.candidate(0, waiting=3), testing.candidate(1)]
    assert testing.place(Idlest, "", testing.request(8), busy, fleet) == Single(1)
    assert testing.place(Idlest, "", testing.request(8, max_tokens=9000), busy, fleet) == Reject(
        429, "too long"
    )


def test_the_harness_fails_like_the_router_would():
    class OutOfRange(Scorer):
        def score(self, req, c, fleet):
            return 1.5

    class Short(Scorer):
        def score_all(self, req, cands, fleet):
            return [0.5]

    class Stranger(Placer):
        def place(self, req, cands, fleet):
            return Split(0, 7)

    cands = [testing.candidate(0), testing.candidate(1)]
    with pytest.raises(AssertionError, match=r"scores in \[0, 1\]"):
        testing.score(OutOfRange, "", testing.request(1), cands, testing.fleet(2))
    with pytest.raises(AssertionError, match="1 scores for 2 candidates"):
        testing.score(Short, "", testing.request(1), cands, testing.fleet(2))
    with pytest.raises(AssertionError, match="backend 7 which is not a candidate"):
        testing.place(Stranger, "", testing.request(1), cands, testing.fleet(8))


def test_candidates_arrive_as_the_host_sends_them():
    (c,) = testing.as_sent([testing.candidate(3, kv_usage=0.1, waiting=2)])
    assert c.backend == 3 and c.waiting == 2
    assert c.kv_usage == pytest.approx(0.1) and c.kv_usage != 0.1, "rounded to f32"


def test_a_case_file_runs_natively():
    case = (REPO / "examples" / "policy-case.json").read_text()
    assert testing.run_case(Waiting, case) == [
        pytest.approx(1 / (1 + 2 / 4)),
        1.0,
        pytest.approx(1 / (1 + 5 / 4)),
    ]


def test_json_blocks_skips_other_languages_and_unclosed_fences():
    md = "```sh\nls\n```\n```json\n{}\n```\ntext\n```json\n[1]\n```\n```json\n{"
    assert testing.json_blocks(md) == ["{}\n", "[1]\n"]


# --- the component glue, with stand-ins for componentize-py's objects --------------------


def _rows(cands):
    return [w for c in testing.as_sent(cands) for w in _words(c)]


def _words(c):
    import struct

    return struct.unpack("<10I", _export.ROW.pack(*(float(v) if i in (3, 7, 8) else int(v) for i, v in enumerate(c))))


def test_rows_decode_in_contract_order_and_a_partial_row_is_ignored():
    rows = []
    for i in range(2):
        rows += [10 + i, 20 + i, 30 + i, _f32(i / 10), 40 + i, 50 + i, 60 + i, _f32(1 + i / 10), _f32(2 + i / 10), 70 + i]
    cands = _export.candidates_from_rows(rows)
    assert len(cands) == 2 and cands[0].backend == 10
    assert cands[1][:3] == (11, 21, 31) and cands[1].metrics_age_ms == 71
    assert cands[1].kv_usage == pytest.approx(0.1) and cands[1].decode_tokens_per_s == pytest.approx(2.1)
    assert len(_export.candidates_from_rows(rows + [7, 7, 7])) == 2
    assert _export.candidates_from_rows([]) == []


def _f32(x):
    import struct

    return struct.unpack("<I", struct.pack("<f", x))[0]


def test_the_exported_world_configures_decodes_scores_and_reseeds_random(monkeypatch):
    import random

    err = type("Err", (Exception,), {})
    monkeypatch.setitem(sys.modules, "componentize_py_types", types.SimpleNamespace(Err=err))

    class Drawn(Scorer):
        def score(self, req, c, fleet):
            return random.random()

    world = switchyard_policy.export(Drawn)()
    world.configure("")
    role = types.SimpleNamespace(_value_=1)
    wit_backend = types.SimpleNamespace(
        name="b0", vendor="amd", accelerator="mi300x", region="eu", labels=[("t", "g")], role=role,
        cost_per_hour=1.0, prefill_tokens_per_s=0.0, decode_tokens_per_s=0.0,
        kv_capacity_tokens=0, kv_link_gbytes_per_s=0.0, kv_bytes_per_token=0,
    )
    world.set_fleet(types.SimpleNamespace(generation=3, backends=[wit_backend]))
    assert _export._fleet.backend(0).role is Role.PREFILL and _export._fleet.generation == 3
    wit_req = types.SimpleNamespace(
        id=42, tenant="t", model="m", prompt_tokens=10, max_tokens=5, session=None,
        labels=[], slo_ttft_ms=0, slo_tpot_ms=250,
    )
    req = _export.request_from_wit(wit_req)
    assert req.slo_ttft_ms is None and req.slo_tpot_ms == 250
    rows = types.SimpleNamespace(rows=_rows([testing.candidate(0), testing.candidate(0)]))
    first = world.score(wit_req, rows)
    assert world.score(wit_req, rows) == first, "random reseeded from the request id"
    random.seed(42)
    assert first == [random.random(), random.random()]

    class Picky(Scorer):
        def __init__(self, limit):
            self.limit = limit

    with pytest.raises(err, match="missing 1 required positional argument"):
        _export.export(Picky)().configure("{}")


def test_prefix_group_answers_what_the_test_set():
    req = testing.request(1024)
    assert req.prefix_group() is None
    testing.set_prefix_group(PrefixGroup(key=7, head_tokens=64))
    try:
        assert req.prefix_group() == PrefixGroup(7, 64)
        assert req.prefix_group().head_tokens == 64
    finally:
        testing.set_prefix_group(None)
    assert req.prefix_group() is None
