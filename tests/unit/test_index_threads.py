"""Both adapters take concurrent queries from a thread pool while one thread ingests."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from services.index import IndexFilter, IndexPoint, VectorIndex
from services.index.edge import EdgeIndex
from services.index.server import ServerIndex
from services.vectors import SparseVector

DIM = 16
BATCHES = 12
BATCH = 40

ADAPTERS: dict[str, Callable[[Path], VectorIndex]] = {
    "edge": lambda root: EdgeIndex(root / "edge"),
    "local": lambda root: ServerIndex.local(root / "local"),
}


def batch(b: int, rng: np.random.Generator) -> list[IndexPoint]:
    return [
        IndexPoint(
            id=str(uuid.UUID(int=b * BATCH + i + 1)),
            dense=rng.normal(size=DIM),
            sparse=SparseVector(sorted(rng.choice(50, size=4, replace=False).tolist()), [1.0, 2.0, 0.5, 1.5]),
            payload={"document_id": f"doc-{b}", "generation": 1, "metadata": {"batch": b}},
        )
        for i in range(BATCH)
    ]


@pytest.mark.parametrize("adapter", list(ADAPTERS))
def test_queries_during_ingestion(tmp_path: Path, adapter: str) -> None:
    index = ADAPTERS[adapter](tmp_path)
    index.ensure_collection("c", dim=DIM)
    index.upsert("c", batch(0, np.random.default_rng(0)))
    done = threading.Event()
    errors: list[BaseException] = []

    def ingest() -> None:
        rng = np.random.default_rng(1)
        try:
            for b in range(1, BATCHES):
                index.upsert("c", batch(b, rng), batch_size=16)
                if b % 3 == 0:
                    index.delete_document("c", f"doc-{b - 1}")
                if b == BATCHES // 2:  # a collection created while others are being queried
                    index.ensure_collection("other", dim=DIM)
        except BaseException as exc:
            errors.append(exc)
        finally:
            done.set()

    def search(seed: int) -> int:
        rng = np.random.default_rng(seed)
        rounds = 0
        while not done.is_set() or rounds < 3:
            dense = rng.normal(size=DIM)
            sparse = SparseVector([1, 2, 3], [1.0, 1.0, 1.0])
            hits = index.query(
                "c", dense=dense, sparse=sparse, limit=5, filter=IndexFilter(metadata={"batch": list(range(20))})
            )
            assert all(h.payload["generation"] == 1 for h in hits)
            index.count("c")
            index.collection_exists("other")
            rounds += 1
        return rounds

    writer = threading.Thread(target=ingest)
    with ThreadPoolExecutor(max_workers=4) as pool:
        futures = [pool.submit(search, seed) for seed in range(4)]
        writer.start()
        writer.join()
        rounds = [f.result() for f in futures]  # re-raises a reader's exception
    assert not errors, errors
    assert all(r >= 3 for r in rounds)
    deleted = len([b for b in range(1, BATCHES) if b % 3 == 0])
    assert index.count("c") == (BATCHES - deleted) * BATCH
    assert index.collection_exists("other")
    index.close()


def test_edge_first_use_from_many_threads(tmp_path: Path) -> None:
    """Shards reopened lazily: many threads touching a closed-over shard at once open it once."""
    root = tmp_path / "edge"
    with EdgeIndex(root) as edge:
        edge.ensure_collection("c", dim=DIM)
        edge.upsert("c", batch(0, np.random.default_rng(0)))
    with EdgeIndex(root) as edge:
        with ThreadPoolExecutor(max_workers=8) as pool:
            counts = list(pool.map(lambda _: edge.count("c"), range(32)))
        assert counts == [BATCH] * 32
