"""Compact collections (issue 20, item 3): int8 dense vectors in RAM, searched in an HNSW graph and
rescored with the float originals, which stay on disk with the graph.

On a small fixed set, the quantized index returns the exact search's top hits; collections made
before (full precision in RAM) keep working as they are.
"""

from __future__ import annotations

import json
import uuid

import numpy as np
import pytest

from services.index import IndexPoint
from services.index.edge import EdgeIndex
from services.vectors import SparseVector

NAME = "compact"
DIM = 1024  # large enough for the default indexing threshold (10 MB per segment) at 3,000 points
N = 3000
QUERIES = 25


def vectors(n: int, seed: int) -> np.ndarray:
    """Unit vectors of a low intrinsic dimension, as text embeddings are."""
    rng = np.random.default_rng(seed)
    basis = np.random.default_rng(99).standard_normal((32, DIM)).astype(np.float32)
    x = rng.standard_normal((n, 32)).astype(np.float32) @ basis
    x += 0.25 * np.sqrt(32) * rng.standard_normal((n, DIM)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


DATA = vectors(N, 1)
QUERY = vectors(QUERIES, 2)


def points() -> list[IndexPoint]:
    return [
        IndexPoint(
            id=str(uuid.UUID(int=i + 1)),
            dense=DATA[i],
            sparse=SparseVector([i % 50], [1.0]),
            payload={"document_id": f"d{i // 10}"},
        )
        for i in range(N)
    ]


def exact_top(k: int) -> list[list[str]]:
    scores = QUERY @ DATA.T
    return [[str(uuid.UUID(int=int(i) + 1)) for i in np.argsort(-row)[:k]] for row in scores]


@pytest.fixture(scope="module")
def compact(tmp_path_factory):
    root = tmp_path_factory.mktemp("compact")
    index = EdgeIndex(root)  # compact is the default
    index.ensure_collection(NAME, dim=DIM)
    index.upsert(NAME, points(), batch_size=256)
    assert index.optimize(NAME)
    yield index, root
    index.close()


def test_optimised_segments_are_quantized_and_on_disk(compact):
    _, root = compact
    config = json.loads((root / NAME / "edge_config.json").read_text())
    assert "int8" in json.dumps(config).lower()
    files = {p.name for p in (root / NAME / "segments").rglob("*")}
    assert "quantized.data" in files  # the int8 copies
    assert "graph.bin" in files or "links_compressed.bin" in files  # an HNSW graph


def test_quantized_search_returns_the_exact_top_hits(compact):
    index, _ = compact
    exact = exact_top(10)
    found = [[h.id for h in index.query(NAME, dense=q, limit=10, with_payload=False)] for q in QUERY]
    assert [f[0] for f in found] == [e[0] for e in exact]  # the best hit, every time
    recall = np.mean([len(set(f) & set(e)) / 10 for f, e in zip(found, exact)])
    assert recall >= 0.99
    # Scores are the float originals' (rescoring), not the int8 approximations.
    hit = index.query(NAME, dense=QUERY[0], limit=1)[0]
    assert hit.score == pytest.approx(float(QUERY[0] @ DATA[uuid.UUID(hit.id).int - 1]), abs=1e-5)


def test_collections_made_before_keep_their_storage(tmp_path):
    with EdgeIndex(tmp_path, compact=False) as index:
        index.ensure_collection("old", dim=8)
        index.upsert("old", [IndexPoint(str(uuid.UUID(int=1)), np.ones(8), SparseVector([1], [1.0]), {})])
    before = (tmp_path / "old" / "edge_config.json").read_text()
    assert "int8" not in before.lower()
    with EdgeIndex(tmp_path) as index:  # compact by default now
        assert index.count("old") == 1
        assert [h.id for h in index.query("old", dense=np.ones(8), limit=1)] == [str(uuid.UUID(int=1))]
        index.ensure_collection("new", dim=8)
    assert (tmp_path / "old" / "edge_config.json").read_text() == before
    assert "int8" in (tmp_path / "new" / "edge_config.json").read_text().lower()
