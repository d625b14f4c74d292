"""Fusion methods on hand-made vectors, where the fused order is worked out by hand; their
validation; and how each is planned (inside the engine, or over each leg's candidates).

Both engines answer every query (Qdrant Edge and qdrant-client's local mode)."""

from __future__ import annotations

import math
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from services.errors import InvalidInput
from services.index import Convex, Dbsf, FusionSpec, IndexPoint, LegScore, Rrf, VectorIndex, fusion_spec
from services.index.edge import EdgeIndex
from services.index.query import FusedSearch, IndexQuery, LegSearch
from services.index.server import ServerIndex, _server_fusion
from services.vectors import SparseVector

NS = uuid.UUID("0b7a4e4c-2f6e-4d55-8a59-3f1c3b8a9d20")
TERM, OTHER = 7, 8
QUERY_DENSE = [1.0, 0.0, 0.0, 0.0]
QUERY_SPARSE = SparseVector([TERM], [1.0])
NAMES = ["p1", "p2", "p3", "p4", "p5"]
IDS = {n: str(uuid.uuid5(NS, n)) for n in NAMES}

# Dense: cosine to the query, so the dense leg ranks p1 > p2 > p3 > p4 > p5.
COSINE = {"p1": 0.99, "p2": 0.9, "p3": 0.8, "p4": 0.7, "p5": 0.6}
# Sparse: only p2, p4, p5 hold the query's term, all with the same IDF, so the sparse leg ranks
# p5 (3.0) > p4 (2.5) > p2 (2.0) and its scores are these weights times that IDF.
TERM_WEIGHT = {"p2": 2.0, "p4": 2.5, "p5": 3.0}


def at_cosine(c: float) -> list[float]:
    return [c, math.sqrt(1 - c * c), 0.0, 0.0]


POINTS = [
    IndexPoint(
        id=IDS[n],
        dense=at_cosine(COSINE[n]),
        sparse=SparseVector([TERM], [TERM_WEIGHT[n]]) if n in TERM_WEIGHT else SparseVector([OTHER], [1.0]),
        payload={"name": n},
    )
    for n in NAMES
]
# Qdrant's IDF for a term in 3 of 5 points: ln(1 + (5 - 3 + 0.5) / (3 + 0.5)).
IDF = math.log(1 + 2.5 / 3.5)


@pytest.fixture(scope="module")
def engines(tmp_path_factory) -> Iterator[tuple[VectorIndex, VectorIndex]]:
    root = tmp_path_factory.mktemp("fusion")
    edge, local = EdgeIndex(root / "edge"), ServerIndex.local(root / "local")
    for index in (edge, local):
        index.ensure_collection("f", dim=4)
        index.upsert("f", POINTS)
    yield edge, local
    edge.close()
    local.close()


def fused(index: VectorIndex, fusion: Any, **kwargs: Any) -> list[tuple[str, float]]:
    hits = index.query("f", dense=QUERY_DENSE, sparse=QUERY_SPARSE, limit=5, fusion=fusion, **kwargs)
    return [(h.payload["name"], h.score) for h in hits]


def assert_fused(engines, fusion: Any, expected: dict[str, float]) -> None:
    """Both engines return the points in the order of `expected` (best first) with its scores."""
    for index in engines:
        got = fused(index, fusion)
        assert [n for n, _ in got] == list(expected), type(index).__name__
        for name, score in got:
            assert score == pytest.approx(expected[name], rel=1e-4)


# --- each method, by hand -------------------------------------------------------------------------


def test_rrf_k60(engines) -> None:
    # 1 / (60 + position); dense positions p1..p5 = 0..4, sparse p5, p4, p2 = 0, 1, 2.
    expected = {
        "p2": 1 / 61 + 1 / 62,  # .032523
        "p5": 1 / 64 + 1 / 60,  # .032292
        "p4": 1 / 63 + 1 / 61,  # .032266
        "p1": 1 / 60,
        "p3": 1 / 62,
    }
    assert_fused(engines, Rrf(k=60), expected)
    assert_fused(engines, {"method": "rrf", "k": 60}, expected)


def test_rrf_weighted(engines) -> None:
    # Weight w: 1 / ((position + 1) / w + k - 1). Sparse at 0.25, k = 2: p5 1/5, p4 1/9, p2 1/13;
    # dense at 1: 1/2, 1/3, 1/4, 1/5, 1/6. The weak sparse leg no longer lifts p5 above p1.
    expected = {
        "p1": 1 / 2,
        "p2": 1 / 3 + 1 / 13,  # .410
        "p5": 1 / 6 + 1 / 5,  # .367
        "p4": 1 / 5 + 1 / 9,  # .311
        "p3": 1 / 4,
    }
    assert_fused(engines, Rrf(sparse_weight=0.25), expected)
    # Unweighted, p5 wins: 1/6 + 1/2.
    assert [n for n, _ in fused(engines[0], "rrf")] == ["p5", "p2", "p4", "p1", "p3"]


def _dbsf(scores: dict[str, float]) -> dict[str, float]:
    mean = sum(scores.values()) / len(scores)
    std = math.sqrt(sum((s - mean) ** 2 for s in scores.values()) / (len(scores) - 1))
    return {n: (s - (mean - 3 * std)) / (6 * std) for n, s in scores.items()}


def test_dbsf_unweighted_and_weighted(engines) -> None:
    # Dense: mean .798, sample std .15498: p1 .7065, p2 .6097, p3 .5022, p4 .3946, p5 .2871.
    # Sparse (in IDF units 2, 2.5, 3): mean 2.5, std .5: p2 .3333, p4 .5, p5 .6667.
    dense = _dbsf(COSINE)
    sparse = _dbsf({n: w * IDF for n, w in TERM_WEIGHT.items()})
    assert dense["p1"] == pytest.approx(0.7065, abs=1e-4) and sparse["p5"] == pytest.approx(2 / 3)

    def total(n: str, wd: float, ws: float) -> float:
        return wd * dense[n] + ws * sparse.get(n, 0.0)

    # Unweighted (inside the engine): p5 .9538, p2 .9430, p4 .8946, p1 .7065, p3 .5022.
    order = ["p5", "p2", "p4", "p1", "p3"]
    assert_fused(engines, Dbsf(), {n: total(n, 1, 1) for n in order})
    assert_fused(engines, "dbsf", {n: total(n, 1, 1) for n in order})
    # Dense at 0.25 (in the application): p5 .7385, p4 .5987, p2 .4858, p1 .1766, p3 .1256.
    order = ["p5", "p4", "p2", "p1", "p3"]
    assert_fused(engines, Dbsf(dense_weight=0.25), {n: total(n, 0.25, 1) for n in order})


def test_convex(engines) -> None:
    # Min-max over each leg: dense (c - .6) / .39 -> p1 1, p2 .7692, p3 .5128, p4 .2564, p5 0;
    # sparse p5 1, p4 .5, p2 0 (p1 and p3 are not sparse candidates: 0).
    dense = {n: (c - 0.6) / 0.39 for n, c in COSINE.items()}
    sparse = {"p5": 1.0, "p4": 0.5, "p2": 0.0}

    def expected(alpha: float, order: list[str]) -> dict[str, float]:
        return {n: alpha * dense[n] + (1 - alpha) * sparse.get(n, 0.0) for n in order}

    # alpha .2: p5 .8, p4 .4513, p1 .2, p2 .1538, p3 .1026
    assert_fused(engines, Convex(alpha=0.2), expected(0.2, ["p5", "p4", "p1", "p2", "p3"]))
    # alpha .8: p1 .8, p2 .6154, p3 .4103, p4 .3051, p5 .2
    assert_fused(engines, {"method": "convex", "alpha": 0.8}, expected(0.8, ["p1", "p2", "p3", "p4", "p5"]))
    # alpha 0: the sparse leg's order, then the dense-only candidates at 0, by id.
    assert [n for n, _ in fused(engines[1], Convex(alpha=0))][:3] == ["p5", "p4", "p2"]


def test_convex_leg_with_equal_scores_counts_fully(tmp_path: Path) -> None:
    """A leg whose candidates all score the same gives each of them 1 (nothing to tell them apart)."""
    points = [
        IndexPoint(
            str(uuid.UUID(int=i + 1)), at_cosine(c), SparseVector([TERM], [1.0]) if i == 2 else SparseVector(), {}
        )
        for i, c in enumerate([0.9, 0.5, 0.1])
    ]
    with EdgeIndex(tmp_path / "edge") as edge, ServerIndex.local(tmp_path / "local") as local:
        for index in (edge, local):
            index.ensure_collection("c", dim=4)
            index.upsert("c", points)
            hits = index.query("c", dense=QUERY_DENSE, sparse=QUERY_SPARSE, fusion=Convex(alpha=0.4), limit=3)
            # dense min-max: 1, .5, 0; sparse: only point 3, alone: 1.
            assert [(h.id, round(h.score, 4)) for h in hits] == [
                (points[2].id, 0.6),
                (points[0].id, 0.4),
                (points[1].id, 0.2),
            ]


# --- explain ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("fusion", [Rrf(), Rrf(k=60, sparse_weight=0.5), Dbsf(), Dbsf(dense_weight=0.25), Convex()])
def test_explain_gives_each_legs_rank_and_score_without_changing_the_ranking(engines, fusion) -> None:
    for index in engines:
        plain = index.query("f", dense=QUERY_DENSE, sparse=QUERY_SPARSE, fusion=fusion, limit=5)
        explained = index.query("f", dense=QUERY_DENSE, sparse=QUERY_SPARSE, fusion=fusion, limit=5, explain=True)
        assert [(h.id, h.score) for h in explained] == [(h.id, h.score) for h in plain]
        assert all(h.legs is None for h in plain)
        by_name = {h.payload["name"]: h.legs for h in explained}
        assert by_name["p1"] is not None and by_name["p3"] is not None and by_name["p5"] is not None
        assert by_name["p1"]["dense"].rank == 1
        assert by_name["p1"]["dense"].score == pytest.approx(0.99, abs=1e-5)
        assert by_name["p1"]["sparse"] == LegScore(rank=None, score=None)
        assert by_name["p3"]["dense"].rank == 3 and by_name["p3"]["sparse"].rank is None
        assert by_name["p5"]["dense"].rank == 5
        assert by_name["p5"]["sparse"].rank == 1
        assert by_name["p5"]["sparse"].score == pytest.approx(3 * IDF, rel=1e-5)


def test_explain_with_one_leg(engines) -> None:
    for index in engines:
        hits = index.query("f", sparse=QUERY_SPARSE, limit=5, explain=True)
        assert [h.payload["name"] for h in hits] == ["p5", "p4", "p2"]
        assert [h.legs for h in hits] == [{"sparse": LegScore(rank=i, score=h.score)} for i, h in enumerate(hits, 1)]


# --- planning: inside the engine where it can fuse, else over each leg's candidates -----------------


def plan(fusion: Any, explain: bool = False) -> tuple:
    query = IndexQuery(
        dense=QUERY_DENSE,
        sparse=QUERY_SPARSE,
        limit=10,
        filter=None,
        fusion=fusion_spec(fusion),
        prefetch_limit=100,
        with_payload=False,
        explain=explain,
    )
    return query.searches


def test_plans() -> None:
    fusion: FusionSpec | str
    for fusion in ("rrf", Rrf(k=60, dense_weight=0.3), "dbsf"):
        (search,) = plan(fusion)
        assert isinstance(search, FusedSearch) and search.dense.limit == search.sparse.limit == 100
        fused_search, dense, sparse = plan(fusion, explain=True)  # the legs join the same request
        assert isinstance(fused_search, FusedSearch) and (dense.leg, sparse.leg) == ("dense", "sparse")
    for fusion in (Dbsf(dense_weight=0.25), Convex(alpha=0.3)):
        searches = plan(fusion)  # explain or not, the legs are all the engine is asked for
        assert searches == plan(fusion, explain=True)
        assert [type(s) for s in searches] == [LegSearch, LegSearch]
        assert [s.limit for s in searches] == [100, 100]


def test_default_rrf_is_rendered_as_before() -> None:
    """'rrf' (Rrf()) stays Qdrant's plain RRF request (any server version); k or weights need RrfQuery."""
    assert fusion_spec("rrf") == Rrf()
    from qdrant_client import models as qm

    assert _server_fusion(Rrf()) == qm.FusionQuery(fusion=qm.Fusion.RRF)
    assert _server_fusion(Dbsf()) == qm.FusionQuery(fusion=qm.Fusion.DBSF)
    assert _server_fusion(Rrf(k=60)) == qm.RrfQuery(rrf=qm.Rrf(k=60, weights=None))
    assert _server_fusion(Rrf(dense_weight=0.5)) == qm.RrfQuery(rrf=qm.Rrf(k=2, weights=[0.5, 1.0]))


# --- validation -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ({"method": "rrf", "k": 0}, "rrf k must be a whole number from 1"),
        ({"method": "rrf", "k": 2.5}, "rrf k must be a whole number"),
        ({"method": "rrf", "k": True}, "rrf k must be a whole number"),
        ({"method": "rrf", "k": 10**7}, "rrf k must be a whole number from 1 to 1000000"),
        ({"method": "rrf", "weights": {"dense": 0}}, "rrf dense weight must be a finite number above 0"),
        ({"method": "rrf", "weights": {"sparse": -1}}, "rrf sparse weight must be a finite number above 0"),
        ({"method": "dbsf", "weights": {"dense": float("nan")}}, "dbsf dense weight must be a finite number"),
        ({"method": "dbsf", "weights": {"sparse": float("inf")}}, "dbsf sparse weight must be a finite number"),
        ({"method": "dbsf", "weights": {"dense": "1"}}, "dbsf dense weight must be a finite number"),
        ({"method": "dbsf", "weights": {"bm25": 1}}, "fusion weights must be an object with 'dense' and/or 'sparse'"),
        ({"method": "dbsf", "weights": [1, 2]}, "fusion weights must be an object"),
        ({"method": "convex", "alpha": 1.5}, "convex alpha (the dense weight) must be a number from 0 to 1"),
        ({"method": "convex", "alpha": -0.1}, "convex alpha"),
        ({"method": "convex", "alpha": float("nan")}, "convex alpha"),
        ({"method": "convex", "k": 60}, "fusion 'convex' takes ['alpha'], not ['k']"),
        ({"method": "dbsf", "k": 60}, "fusion 'dbsf' takes ['weights'], not ['k']"),
        ({"method": "linear"}, "unknown fusion method 'linear'"),
        ({"k": 60}, "unknown fusion method None"),
        ("RRF", "unknown fusion 'RRF'; use one of 'rrf', 'dbsf', 'convex'"),
        (60, "fusion must be a method name or an object with 'method'"),
    ],
)
def test_fusion_spec_rejects_bad_input(value: Any, message: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        fusion_spec(value)
    assert message in str(caught.value)


def test_specs_validate_when_built_and_round_trip() -> None:
    with pytest.raises(InvalidInput):
        Rrf(k=-1)
    with pytest.raises(InvalidInput):
        Convex(alpha=2)
    for spec in (Rrf(), Rrf(k=60, dense_weight=0.25), Dbsf(), Dbsf(sparse_weight=4), Convex(alpha=0.1)):
        assert fusion_spec(spec.to_dict()) == spec
    assert fusion_spec("rrf") == Rrf(k=2) and fusion_spec("dbsf") == Dbsf() and fusion_spec("convex") == Convex()


def test_index_query_rejects_bad_fusion(engines) -> None:
    for index in engines:
        with pytest.raises(InvalidInput, match="rrf k"):
            index.query("f", dense=QUERY_DENSE, sparse=QUERY_SPARSE, fusion={"method": "rrf", "k": 0})
