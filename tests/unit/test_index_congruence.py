"""The Edge adapter and the qdrant-client adapter (local mode) give the same answers to the same calls.

Real engines, no mocks. A Qdrant server joins the comparison when a Docker engine is reachable.
"""

from __future__ import annotations

import math
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from services.errors import Conflict, DataDirLocked, InvalidInput, NotFound, ServiceUnavailable
from services.index import (
    RRF_K,
    Convex,
    Dbsf,
    FusionSpec,
    IndexFilter,
    IndexHit,
    IndexPoint,
    Rrf,
    VectorIndex,
    open_index,
)
from services.index.edge import EdgeIndex
from services.index.server import ServerIndex
from services.vectors import SparseVector
from tests.conftest import docker_engine_available

REPO = Path(__file__).resolve().parents[2]
NS = uuid.UUID("6f1c1a52-8a0e-4d7b-9a43-5d0f0c3c8e11")
COLLECTION = "chunks-test"
DIM = 32
VOCAB = 200
N_DOCS = 30
CHUNKS = 10
LANGS = ["ko", "en", "ja"]


# --- data ---------------------------------------------------------------------------------------


def doc_id(d: int) -> str:
    return str(uuid.uuid5(NS, f"doc-{d}"))


def doc_metadata(d: int) -> dict:
    return {
        "lang": LANGS[d % 3],
        "year": 2020 + d % 4,
        "public": d % 2 == 0,
        "저자": f"작가{d % 5}",
        "rating": [1.5, 2.5][d % 2],
    }


def make_points(seed: int = 42) -> list[IndexPoint]:
    """30 documents x 10 chunks (generation 1), plus 3 generation-2 chunks for every 5th document."""
    rng = np.random.default_rng(seed)
    points = []
    for d in range(N_DOCS):
        generations = [1] * CHUNKS + ([2] * 3 if d % 5 == 0 else [])
        for c, gen in enumerate(generations):
            # Zipf-distributed term ids: low ids are common, high ids rare (IDF matters).
            terms = sorted({int(t) % VOCAB for t in rng.zipf(1.3, size=int(rng.integers(3, 9)))})
            values = rng.uniform(0.5, 3.0, size=len(terms)).round(4).tolist()  # random: no score ties
            points.append(
                IndexPoint(
                    id=str(uuid.uuid5(NS, f"{d}:{gen}:{c}")),
                    dense=rng.normal(size=DIM).astype(np.float32),
                    sparse=SparseVector(indices=terms, values=values),
                    payload={
                        "document_id": doc_id(d),
                        "external_id": f"ext-{d}",
                        "generation": gen,
                        "chunk_index": c,
                        "metadata": doc_metadata(d),
                    },
                )
            )
    return points


POINTS = make_points()


def random_queries(n: int, seed: int = 7) -> list[tuple[np.ndarray, SparseVector]]:
    rng = np.random.default_rng(seed)
    queries = []
    for _ in range(n):
        terms = sorted({int(t) % VOCAB for t in rng.zipf(1.3, size=3)})
        sparse = SparseVector(indices=terms, values=rng.uniform(0.5, 2.0, size=len(terms)).round(4).tolist())
        queries.append((rng.normal(size=DIM).astype(np.float32), sparse))
    return queries


# --- engines --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def qdrant_server_url() -> Iterator[str]:
    """A throwaway Qdrant server in Docker, or a skip."""
    if not docker_engine_available():
        pytest.skip("no Docker engine reachable: testcontainers cannot start a Qdrant server here")
    from testcontainers.core.container import DockerContainer
    from testcontainers.core.waiting_utils import wait_for_logs

    container = DockerContainer("qdrant/qdrant:v1.20.0").with_exposed_ports(6333)
    container.start()
    try:
        wait_for_logs(container, "Qdrant HTTP listening", timeout=60)
        yield f"http://{container.get_container_host_ip()}:{container.get_exposed_port(6333)}"
    finally:
        container.stop()


def _loaded_pair(root: Path) -> tuple[VectorIndex, VectorIndex]:
    edge = EdgeIndex(root / "edge")
    local = ServerIndex.local(root / "local")
    for index in (edge, local):
        index.ensure_collection(COLLECTION, dim=DIM)
        index.upsert(COLLECTION, POINTS, batch_size=64)
    return edge, local


@pytest.fixture(scope="module")
def pair(tmp_path_factory) -> Iterator[tuple[VectorIndex, VectorIndex]]:
    """(Edge, qdrant-client local mode), each holding POINTS; shared, so tests must not write."""
    edge, local = _loaded_pair(tmp_path_factory.mktemp("pair"))
    yield edge, local
    edge.close()
    local.close()


@pytest.fixture
def fresh_pair(tmp_path: Path) -> Iterator[tuple[VectorIndex, VectorIndex]]:
    """Like pair, but private to one test, which may write."""
    edge, local = _loaded_pair(tmp_path)
    yield edge, local
    edge.close()
    local.close()


def assert_same_hits(a: list[IndexHit], b: list[IndexHit], *, rel: float = 1e-4) -> None:
    assert [h.id for h in a] == [h.id for h in b]
    for x, y in zip(a, b):
        assert x.score == pytest.approx(y.score, rel=rel, abs=1e-6)
        assert x.payload == y.payload


# --- collections ------------------------------------------------------------------------------------


def test_ensure_collection_is_idempotent_and_guards_dim(tmp_path: Path) -> None:
    with EdgeIndex(tmp_path / "edge") as edge, ServerIndex.local(tmp_path / "local") as local:
        for index in (edge, local):
            assert not index.collection_exists("c1")
            index.ensure_collection("c1", dim=8)
            index.ensure_collection("c1", dim=8)
            assert index.collection_exists("c1")
            assert index.count("c1") == 0
            with pytest.raises(Conflict):
                index.ensure_collection("c1", dim=16)
            index.drop_collection("c1")
            index.drop_collection("c1")  # dropping twice is fine
            assert not index.collection_exists("c1")
            with pytest.raises(InvalidInput):
                index.ensure_collection("../escape", dim=8)


def test_missing_collection(tmp_path: Path) -> None:
    with EdgeIndex(tmp_path / "edge") as edge, ServerIndex.local(tmp_path / "local") as local:
        for index in (edge, local):
            with pytest.raises(NotFound):
                index.query("nope", dense=[1.0, 0.0])
            with pytest.raises(NotFound):
                index.count("nope")
            with pytest.raises(NotFound):
                index.upsert("nope", POINTS[:1])
            index.delete_document("nope", doc_id(0))  # nothing to delete: no error


def test_edge_payload_indexes_exist(pair) -> None:
    edge, _ = pair
    with edge._use(COLLECTION) as shard:
        schema = shard.shard.info().payload_schema
    assert {"document_id", "external_id", "generation"} <= set(schema)


# --- queries ------------------------------------------------------------------------------------------


def test_counts_match(pair) -> None:
    edge, local = pair
    assert edge.count(COLLECTION) == local.count(COLLECTION) == len(POINTS)


def test_dense_query_matches(pair) -> None:
    edge, local = pair
    for dense, _ in random_queries(10):
        a = edge.query(COLLECTION, dense=dense, limit=10)
        b = local.query(COLLECTION, dense=dense, limit=10)
        assert len(a) == 10
        assert_same_hits(a, b)
        assert [h.score for h in a] == sorted((h.score for h in a), reverse=True)
    # A stored vector finds itself first, with cosine 1.
    target = POINTS[17]
    for index in pair:
        top = index.query(COLLECTION, dense=list(target.dense), limit=1)[0]
        assert top.id == target.id and top.score == pytest.approx(1.0, abs=1e-5)


def test_sparse_query_matches(pair) -> None:
    edge, local = pair
    for _, sparse in random_queries(10):
        a = edge.query(COLLECTION, sparse=sparse, limit=10)
        b = local.query(COLLECTION, sparse=sparse, limit=10)
        assert a
        assert_same_hits(a, b)


FUSIONS: list[FusionSpec | str] = [
    "rrf",
    "dbsf",
    Rrf(k=60),
    Rrf(k=2, dense_weight=0.25),
    Rrf(k=60, sparse_weight=3.0),
    Dbsf(dense_weight=0.25),
    Dbsf(dense_weight=2.0, sparse_weight=0.5),
    Convex(alpha=0.1),
    Convex(alpha=0.5),
]


@pytest.mark.parametrize("fusion", FUSIONS, ids=str)
def test_hybrid_query_matches(pair, fusion: FusionSpec | str) -> None:
    edge, local = pair
    for dense, sparse in random_queries(10):
        a = edge.query(COLLECTION, dense=dense, sparse=sparse, limit=10, fusion=fusion, prefetch_limit=50)
        b = local.query(COLLECTION, dense=dense, sparse=sparse, limit=10, fusion=fusion, prefetch_limit=50)
        assert len(a) == 10
        assert_same_hits(a, b)
    # With explain: the same hits, and the same place in each leg, from both engines.
    for dense, sparse in random_queries(3, seed=5):
        a = edge.query(COLLECTION, dense=dense, sparse=sparse, fusion=fusion, prefetch_limit=30, explain=True)
        b = local.query(COLLECTION, dense=dense, sparse=sparse, fusion=fusion, prefetch_limit=30, explain=True)
        assert_same_hits(a, b)
        for x, y in zip(a, b):
            assert x.legs is not None and y.legs is not None
            for leg in ("dense", "sparse"):
                assert x.legs[leg].rank == y.legs[leg].rank
                expected = pytest.approx(y.legs[leg].score, rel=1e-4) if y.legs[leg].rank else None
                assert x.legs[leg].score == expected


def test_app_dbsf_equals_the_engines(pair) -> None:
    """DBSF with both weights 2 is fused in the application: exactly twice the engine's DBSF."""
    for index in pair:
        for dense, sparse in random_queries(5):
            engine = index.query(COLLECTION, dense=dense, sparse=sparse, fusion="dbsf", prefetch_limit=40)
            app = index.query(
                COLLECTION, dense=dense, sparse=sparse, fusion=Dbsf(dense_weight=2, sparse_weight=2), prefetch_limit=40
            )
            assert [h.id for h in app] == [h.id for h in engine]
            for x, y in zip(app, engine):
                assert x.score == pytest.approx(2 * y.score, rel=1e-5)
                assert x.payload == y.payload


def test_explain_ranks_are_the_legs_own_rankings(pair) -> None:
    dense, sparse = random_queries(1, seed=3)[0]
    for index in pair:
        legs = {
            "dense": index.query(COLLECTION, dense=dense, limit=40),
            "sparse": index.query(COLLECTION, sparse=sparse, limit=40),
        }
        for fusion in ("rrf", Convex(alpha=0.3)):
            hits = index.query(COLLECTION, dense=dense, sparse=sparse, fusion=fusion, prefetch_limit=40, explain=True)
            for hit in hits:
                assert hit.legs is not None
                for leg, ranking in legs.items():
                    place = next((i for i, h in enumerate(ranking, start=1) if h.id == hit.id), None)
                    assert hit.legs[leg].rank == place
                    assert hit.legs[leg].score == (ranking[place - 1].score if place else None)


def test_hits_without_payload_rank_the_same(pair) -> None:
    dense, sparse = random_queries(1)[0]
    for index in pair:
        full = index.query(COLLECTION, dense=dense, sparse=sparse, limit=10)
        bare = index.query(COLLECTION, dense=dense, sparse=sparse, limit=10, with_payload=False)
        assert all(h.payload for h in full) and all(h.payload == {} for h in bare)
        assert [(h.id, h.score) for h in bare] == [(h.id, h.score) for h in full]


def test_empty_sparse_counts_as_absent(pair) -> None:
    dense, _ = random_queries(1)[0]
    for index in pair:
        assert index.query(COLLECTION, dense=dense, sparse=SparseVector()) == index.query(COLLECTION, dense=dense)
        with pytest.raises(InvalidInput):
            index.query(COLLECTION, sparse=SparseVector())


def test_idf_ranks_rarer_term_higher(tmp_path: Path) -> None:
    """Same stored weight, but the term in 1 of 10 points outscores the term in all 10."""
    common, rare = 1, 2
    points = [
        IndexPoint(
            id=str(uuid.uuid5(NS, f"idf-{i}")),
            dense=[1.0, float(i), 0.0],
            sparse=SparseVector([common, rare], [1.0, 1.0]) if i == 0 else SparseVector([common], [1.0]),
            payload={"document_id": "d", "generation": 1},
        )
        for i in range(10)
    ]
    # A point without a sparse vector is not part of the IDF corpus (N stays 10).
    points.append(
        IndexPoint(
            id=str(uuid.uuid5(NS, "idf-none")),
            dense=[0.0, 0.0, 1.0],
            sparse=SparseVector(),
            payload={"document_id": "e", "generation": 1},
        )
    )
    with EdgeIndex(tmp_path / "edge") as edge, ServerIndex.local(tmp_path / "local") as local:
        results = []
        for index in (edge, local):
            index.ensure_collection("idf", dim=3)
            index.upsert("idf", points)
            rare_hit = index.query("idf", sparse=SparseVector([rare], [1.0]), limit=1)[0]
            common_hit = index.query("idf", sparse=SparseVector([common], [1.0]), limit=1)[0]
            # Qdrant's IDF: ln(1 + (N - n + 0.5) / (n + 0.5)), N points with the vector, n with the term.
            assert rare_hit.score == pytest.approx(math.log(1 + (10 - 1 + 0.5) / (1 + 0.5)), rel=1e-5)
            assert common_hit.score == pytest.approx(math.log(1 + (10 - 10 + 0.5) / (10 + 0.5)), rel=1e-5)
            assert rare_hit.score > common_hit.score
            # Asked for both terms, the point with the rare one comes first by a wide margin.
            both = index.query("idf", sparse=SparseVector([common, rare], [1.0, 1.0]), limit=3)
            assert both[0].id == points[0].id and both[0].score > 5 * both[1].score
            results.append(both)
        assert_same_hits(*results, rel=1e-5)


def test_idf_follows_deletes_and_overwrites_at_once(tmp_path: Path) -> None:
    """IDF counts live points only: no stale statistics after a document is replaced."""
    term = 3
    points = [
        IndexPoint(
            id=str(uuid.UUID(int=i + 1)),
            dense=[1.0, float(i)],
            sparse=SparseVector([term], [1.0]),
            payload={"document_id": f"d{i % 2}", "generation": 1},
        )
        for i in range(20)
    ]
    with EdgeIndex(tmp_path / "edge") as edge, ServerIndex.local(tmp_path / "local") as local:
        for index in (edge, local):
            index.ensure_collection("idf", dim=2)
            index.upsert("idf", points)
            index.upsert("idf", points[:5])  # overwrites are not extra documents
            index.delete_document("idf", "d1")  # 10 points left, all with the term
            hit = index.query("idf", sparse=SparseVector([term], [1.0]), limit=1)[0]
            assert hit.score == pytest.approx(math.log(1 + 0.5 / 10.5), rel=1e-5)
            fused = index.query("idf", dense=[1.0, 0.0], sparse=SparseVector([term], [1.0]), limit=3, fusion="dbsf")
            assert len(fused) == 3


def rrf_expected(rankings: list[list[str]], k: int = RRF_K) -> dict[str, float]:
    """RRF by hand: each list adds 1 / (k + position), position counted from 0 (Qdrant's convention)."""
    scores: dict[str, float] = {}
    for ranking in rankings:
        for position, pid in enumerate(ranking):
            scores[pid] = scores.get(pid, 0.0) + 1.0 / (k + position)
    return scores


def test_rrf_fused_order_known_in_advance(tmp_path: Path) -> None:
    assert RRF_K == 2  # Qdrant's DEFAULT_RRF_K
    term, other = 7, 8
    ids = {name: str(uuid.uuid5(NS, name)) for name in ["p1", "p2", "p3", "p4", "p5"]}

    def at_cosine(c: float) -> list[float]:  # cosine c to the query [1, 0, 0, 0]
        return [c, math.sqrt(1 - c * c), 0.0, 0.0]

    # Dense order: p1 > p2 > p3 > p4 > p5. Sparse order (one query term, same IDF): p5 > p4 > p2.
    layout = {
        "p1": (0.99, SparseVector([other], [1.0])),
        "p2": (0.9, SparseVector([term], [2.0])),
        "p3": (0.8, SparseVector([other], [1.0])),
        "p4": (0.7, SparseVector([term], [2.5])),
        "p5": (0.6, SparseVector([term], [3.0])),
    }
    points = [IndexPoint(id=ids[n], dense=at_cosine(c), sparse=s, payload={"name": n}) for n, (c, s) in layout.items()]
    expected = rrf_expected([[ids[n] for n in ["p1", "p2", "p3", "p4", "p5"]], [ids[n] for n in ["p5", "p4", "p2"]]])
    # p5: 1/6 + 1/2, p2: 1/3 + 1/4, p4: 1/5 + 1/3, p1: 1/2, p3: 1/4
    expected_names = ["p5", "p2", "p4", "p1", "p3"]
    assert sorted(expected, key=lambda pid: expected[pid], reverse=True) == [ids[n] for n in expected_names]

    with EdgeIndex(tmp_path / "edge") as edge, ServerIndex.local(tmp_path / "local") as local:
        for index in (edge, local):
            index.ensure_collection("rrf", dim=4)
            index.upsert("rrf", points)
            hits = index.query("rrf", dense=[1.0, 0.0, 0.0, 0.0], sparse=SparseVector([term], [1.0]), limit=5)
            assert [h.payload["name"] for h in hits] == expected_names
            for h in hits:
                assert h.score == pytest.approx(expected[h.id], rel=1e-5)


# --- filters ------------------------------------------------------------------------------------------


FILTERS = [
    IndexFilter(document_ids=[doc_id(0), doc_id(3), doc_id(7)]),
    IndexFilter(external_ids=["ext-5", "ext-10"]),
    IndexFilter(metadata={"lang": ["ko"]}),
    IndexFilter(metadata={"year": [2021, 2023]}),
    IndexFilter(metadata={"public": [True]}),
    IndexFilter(metadata={"public": [False]}),
    IndexFilter(metadata={"저자": ["작가1", "작가3"]}),
    IndexFilter(metadata={"rating": [2.5]}),
    IndexFilter(metadata={"year": [2020, "2021"], "lang": ["ko", "en"]}),  # mixed types, two keys
    IndexFilter(document_ids=[doc_id(d) for d in range(15)], metadata={"lang": ["en"], "public": [True, False]}),
    IndexFilter(document_ids=[]),  # an empty accepted list matches nothing
    IndexFilter(metadata={"missing_key": ["x"]}),
]


def matches(point: IndexPoint, flt: IndexFilter) -> bool:
    """The filter's meaning, in Python."""
    p = point.payload
    if flt.document_ids is not None and p["document_id"] not in flt.document_ids:
        return False
    if flt.external_ids is not None and p["external_id"] not in flt.external_ids:
        return False
    for key, values in (flt.metadata or {}).items():
        if key not in p["metadata"]:
            return False
        value = p["metadata"][key]
        # JSON equality: True is not 1, 2021 is not "2021"
        if not any(type(v) is type(value) and v == value for v in values):
            return False
    return True


@pytest.mark.parametrize("flt", FILTERS, ids=lambda f: repr(f)[12:60])
def test_filters_match(pair, flt: IndexFilter) -> None:
    edge, local = pair
    expected = {p.id for p in POINTS if matches(p, flt)}
    assert edge.count(COLLECTION, flt) == local.count(COLLECTION, flt) == len(expected)
    dense, sparse = random_queries(1, seed=11)[0]
    for kwargs in (
        dict(dense=dense),
        dict(sparse=sparse),
        dict(dense=dense, sparse=sparse),
        dict(dense=dense, sparse=sparse, fusion="dbsf"),
        dict(dense=dense, sparse=sparse, fusion=Rrf(k=60, dense_weight=0.5)),
        dict(dense=dense, sparse=sparse, fusion=Dbsf(dense_weight=0.25)),
        dict(dense=dense, sparse=sparse, fusion=Convex(alpha=0.2)),
    ):
        a = edge.query(COLLECTION, limit=20, filter=flt, **kwargs)
        b = local.query(COLLECTION, limit=20, filter=flt, **kwargs)
        assert_same_hits(a, b)
        assert {h.id for h in a} <= expected
        if "sparse" not in kwargs:  # dense scores every point: the full filtered set up to the limit
            assert len(a) == min(20, len(expected))


def test_bad_metadata_filter_rejected(pair) -> None:
    for index in pair:
        with pytest.raises(InvalidInput):
            index.count(COLLECTION, IndexFilter(metadata={'a"b': ["x"]}))
        with pytest.raises(InvalidInput):
            index.count(COLLECTION, IndexFilter(metadata={"lang": [["nested"]]}))


# --- writes -------------------------------------------------------------------------------------------


def test_delete_document(fresh_pair) -> None:
    edge, local = pair = fresh_pair
    # Documents 5 and 10 have generation-2 chunks besides their generation-1 ones.
    gone, regenerated, abandoned = doc_id(3), doc_id(5), doc_id(10)
    for index in pair:
        index.delete_document(COLLECTION, gone)
        index.delete_document(COLLECTION, regenerated, below_generation=2)
        index.delete_document(COLLECTION, abandoned, generation=2)
    for index in pair:
        assert index.count(COLLECTION, IndexFilter(document_ids=[gone])) == 0
        for doc, count, generation in ((regenerated, 3, 2), (abandoned, CHUNKS, 1)):
            assert index.count(COLLECTION, IndexFilter(document_ids=[doc])) == count
            kept = index.query(COLLECTION, dense=[1.0] * DIM, limit=50, filter=IndexFilter(document_ids=[doc]))
            assert {h.payload["generation"] for h in kept} == {generation}
        assert index.count(COLLECTION) == len(POINTS) - CHUNKS - CHUNKS - 3
    # Deleting again, or a document that never existed, changes nothing.
    for index in pair:
        index.delete_document(COLLECTION, gone)
        index.delete_document(COLLECTION, regenerated, below_generation=2)
        index.delete_document(COLLECTION, str(uuid.uuid4()), generation=1)
    assert edge.count(COLLECTION) == local.count(COLLECTION) == len(POINTS) - 2 * CHUNKS - 3
    for dense, sparse in random_queries(3):
        assert_same_hits(
            edge.query(COLLECTION, dense=dense, sparse=sparse), local.query(COLLECTION, dense=dense, sparse=sparse)
        )


def test_reupsert_is_idempotent_and_overwrites(fresh_pair) -> None:
    edge, local = pair = fresh_pair
    changed = [IndexPoint(p.id, p.dense, p.sparse, {**p.payload, "chunk_index": -1}) for p in POINTS[:40]]
    for index in pair:
        index.upsert(COLLECTION, POINTS, batch_size=100)
        assert index.count(COLLECTION) == len(POINTS)
        index.upsert(COLLECTION, changed)
        assert index.count(COLLECTION) == len(POINTS)
        hit = index.query(COLLECTION, dense=list(POINTS[0].dense), limit=1)[0]
        assert hit.id == POINTS[0].id and hit.payload["chunk_index"] == -1
    # Overwritten points leave no trace in the sparse statistics of either engine.
    for dense, sparse in random_queries(3):
        assert_same_hits(edge.query(COLLECTION, sparse=sparse), local.query(COLLECTION, sparse=sparse))
        assert_same_hits(
            edge.query(COLLECTION, dense=dense, sparse=sparse), local.query(COLLECTION, dense=dense, sparse=sparse)
        )


def test_upsert_validates_input(pair) -> None:
    for index in pair:
        with pytest.raises(InvalidInput):
            index.upsert(COLLECTION, [IndexPoint("not-a-uuid", [0.0] * DIM, SparseVector(), {})])
    edge, _ = pair
    with pytest.raises(InvalidInput):
        edge.upsert(COLLECTION, [IndexPoint(str(uuid.uuid4()), [1.0] * (DIM + 1), SparseVector(), {})])


# --- Edge: persistence, durability, locking ---------------------------------------------------------


def test_edge_persists_across_reopen(tmp_path: Path) -> None:
    root = tmp_path / "edge"
    queries = random_queries(3)
    with EdgeIndex(root) as edge:
        edge.ensure_collection(COLLECTION, dim=DIM)
        edge.upsert(COLLECTION, POINTS)
        edge.delete_document(COLLECTION, doc_id(0), below_generation=2)
        before = [edge.query(COLLECTION, dense=d, sparse=s) for d, s in queries]
        count = edge.count(COLLECTION)
    with EdgeIndex(root) as edge:
        assert edge.collection_exists(COLLECTION)
        assert edge.count(COLLECTION) == count == len(POINTS) - CHUNKS
        for (d, s), hits in zip(queries, before):
            assert_same_hits(edge.query(COLLECTION, dense=d, sparse=s), hits, rel=1e-6)
        edge.ensure_collection(COLLECTION, dim=DIM)  # reopening an existing shard is a no-op
        assert edge.count(COLLECTION) == count


def _run_python(code: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code, *args], cwd=REPO, capture_output=True, text=True, timeout=120)


def test_edge_survives_a_crash_without_close(tmp_path: Path) -> None:
    """A process that dies right after upsert() returns (no close) loses nothing."""
    root = tmp_path / "edge"
    code = """
import os, sys, uuid
from services.index import IndexPoint
from services.index.edge import EdgeIndex
from services.vectors import SparseVector
index = EdgeIndex(sys.argv[1])
index.ensure_collection("c", dim=4)
index.upsert("c", [IndexPoint(str(uuid.UUID(int=i + 1)), [1.0, i, 0.0, 0.0], SparseVector([i], [1.0]),
                              {"document_id": "d"}) for i in range(300)])
os._exit(0)
"""
    result = _run_python(code, str(root))
    assert result.returncode == 0, result.stderr
    with EdgeIndex(root) as edge:
        assert edge.count("c") == 300


def test_edge_data_dir_is_locked_against_another_process(tmp_path: Path) -> None:
    root = tmp_path / "edge"
    probe = """
import sys
from pathlib import Path
from services.errors import DataDirLocked
from services.index.edge import EdgeIndex, load_shard
try:
    if sys.argv[2] == "dir":
        EdgeIndex(sys.argv[1]).close()
    else:
        load_shard(Path(sys.argv[1]) / "c").close()
    print("OPENED")
except DataDirLocked as exc:
    print("LOCKED", exc.code, exc)
"""
    edge = EdgeIndex(root)
    edge.ensure_collection("c", dim=4)
    try:
        for how in ("dir", "shard"):  # our directory lock, and Edge's own WAL lock on the shard
            result = _run_python(probe, str(root), how)
            assert result.returncode == 0, result.stderr
            assert result.stdout.startswith("LOCKED data_dir_locked"), result.stdout
            assert "in use by another Saekin process" in result.stdout
        with pytest.raises(DataDirLocked):  # a second owner in this process is refused too
            EdgeIndex(root)
    finally:
        edge.close()
    result = _run_python(probe, str(root), "dir")
    assert result.stdout.startswith("OPENED"), result.stdout + result.stderr


def test_closed_index_refuses_work(tmp_path: Path) -> None:
    edge = EdgeIndex(tmp_path / "edge")
    edge.close()
    edge.close()  # idempotent
    with pytest.raises(RuntimeError):
        edge.collection_exists("c")


# --- the factory and the server adapter's errors ------------------------------------------------------


@pytest.mark.filterwarnings("ignore:Api key is used with an insecure connection")
def test_open_index_picks_the_adapter(tmp_path: Path) -> None:
    from config.settings import Settings

    with open_index(Settings(_env_file=None, data_dir=tmp_path / "data")) as index:
        assert isinstance(index, EdgeIndex)
        assert index.root == tmp_path / "data" / "qdrant" and index.root.is_dir()
    with open_index(Settings(_env_file=None, data_dir=tmp_path / "data", qdrant_path=tmp_path / "qlocal")) as index:
        assert isinstance(index, ServerIndex)
        index.ensure_collection("c", dim=4)
    assert (tmp_path / "qlocal").is_dir()
    with open_index(Settings(_env_file=None, qdrant_url="http://127.0.0.1:1", qdrant_api_key="k")) as index:
        assert isinstance(index, ServerIndex)  # nothing contacted yet


def test_unreachable_server_is_service_unavailable() -> None:
    with ServerIndex.connect("http://127.0.0.1:1", timeout=2) as index:
        with pytest.raises(ServiceUnavailable):
            index.collection_exists("c")
        with pytest.raises(ServiceUnavailable):
            index.query("c", dense=[1.0, 0.0])


def test_local_mode_path_is_locked(tmp_path: Path) -> None:
    with ServerIndex.local(tmp_path / "q"), pytest.raises(DataDirLocked):
        ServerIndex.local(tmp_path / "q")


# --- a real Qdrant server (Docker only) ------------------------------------------------------------------


def test_server_matches_edge(qdrant_server_url: str, tmp_path: Path) -> None:
    """Edge against the real server: the same engine, so the same answers."""
    name = f"congruence-{uuid.uuid4().hex[:8]}"
    with EdgeIndex(tmp_path / "edge") as edge, ServerIndex.connect(qdrant_server_url) as server:
        for index in (edge, server):
            index.ensure_collection(name, dim=DIM)
            index.ensure_collection(name, dim=DIM)
            index.upsert(name, POINTS, batch_size=64)
            index.delete_document(name, doc_id(5), below_generation=2)
        assert edge.count(name) == server.count(name)
        for dense, sparse in random_queries(5):
            for kwargs in (
                dict(dense=dense),
                dict(sparse=sparse),
                dict(dense=dense, sparse=sparse),
                dict(dense=dense, sparse=sparse, fusion="dbsf"),
                dict(dense=dense, sparse=sparse, fusion=Rrf(k=60, dense_weight=0.5)),
                dict(dense=dense, sparse=sparse, fusion=Convex(alpha=0.2)),
            ):
                for flt in (None, FILTERS[2], FILTERS[4]):
                    assert_same_hits(edge.query(name, filter=flt, **kwargs), server.query(name, filter=flt, **kwargs))
        server.drop_collection(name)
