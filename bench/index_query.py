"""Benchmark the vector-index adapters: upsert time and hybrid (RRF) query latency, as JSON.

.venv/bin/python bench/index_query.py --n 10000 --dim 1024
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from services.index import IndexFilter, IndexPoint, VectorIndex
from services.index.edge import EdgeIndex
from services.index.server import ServerIndex
from services.vectors import SparseVector

COLLECTION = "bench"
VOCAB = 50_000


def make_points(n: int, dim: int, seed: int) -> list[IndexPoint]:
    """n chunks of 10 per document: random unit dense vectors, ~40 Zipf-distributed morpheme ids."""
    rng = np.random.default_rng(seed)
    term_ids = rng.integers(0, 2**32, size=VOCAB, dtype=np.uint64)  # stand-ins for 32-bit morpheme hashes
    dense = rng.normal(size=(n, dim)).astype(np.float32)
    dense /= np.linalg.norm(dense, axis=1, keepdims=True)
    points = []
    for i in range(n):
        ranks = np.unique(rng.zipf(1.2, size=40) % VOCAB)
        points.append(
            IndexPoint(
                id=str(uuid.UUID(int=i + 1)),
                dense=dense[i],
                sparse=SparseVector(term_ids[ranks].tolist(), rng.uniform(0.5, 3.0, size=len(ranks)).tolist()),
                payload={
                    "document_id": f"doc-{i // 10}",
                    "external_id": f"ext-{i // 10}",
                    "generation": 1,
                    "metadata": {"lang": ["ko", "en"][i % 2]},
                },
            )
        )
    return points


def make_queries(count: int, dim: int, seed: int) -> list[tuple[list[float], SparseVector]]:
    rng = np.random.default_rng(seed)
    term_ids = np.random.default_rng(0).integers(0, 2**32, size=VOCAB, dtype=np.uint64)  # same ids as the data
    queries = []
    for _ in range(count):
        ranks = np.unique(rng.zipf(1.2, size=6) % VOCAB)
        queries.append((rng.normal(size=dim).tolist(), SparseVector(term_ids[ranks].tolist(), [1.0] * len(ranks))))
    return queries


def percentiles(samples: list[float]) -> dict[str, float]:
    ms = np.array(samples) * 1000
    return {"p50_ms": round(float(np.percentile(ms, 50)), 3), "p95_ms": round(float(np.percentile(ms, 95)), 3)}


def run(index: VectorIndex, points: list[IndexPoint], queries, dim: int) -> dict:
    index.ensure_collection(COLLECTION, dim=dim)
    start = time.perf_counter()
    index.upsert(COLLECTION, points, batch_size=128)
    upsert_s = time.perf_counter() - start
    broad = IndexFilter(metadata={"lang": ["ko"]})  # half of the points
    narrow = IndexFilter(external_ids=[f"ext-{i}" for i in range(0, 200, 10)])  # 20 documents
    result: dict = {"upsert_s": round(upsert_s, 3)}
    variants: tuple[tuple[str, dict], ...] = (
        ("hybrid_rrf", {}),
        ("hybrid_rrf_metadata_filter", {"filter": broad}),
        ("hybrid_rrf_20_documents", {"filter": narrow}),
    )
    for label, kwargs in variants:
        index.query(COLLECTION, dense=queries[0][0], sparse=queries[0][1], **kwargs)  # warm-up
        samples = []
        for dense, sparse in queries:
            t = time.perf_counter()
            index.query(COLLECTION, dense=dense, sparse=sparse, limit=10, **kwargs)
            samples.append(time.perf_counter() - t)
        result[label] = percentiles(samples)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10_000, help="points to index")
    parser.add_argument("--dim", type=int, default=1024, help="dense dimensions")
    parser.add_argument("--queries", type=int, default=100, help="hybrid queries timed per adapter and variant")
    parser.add_argument("--adapters", default="edge,local", help="comma-separated: edge, local")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    points = make_points(args.n, args.dim, args.seed)
    queries = make_queries(args.queries, args.dim, args.seed + 1)
    report: dict = {
        "n": args.n,
        "dim": args.dim,
        "queries": args.queries,
        "machine": platform.machine(),
        "python": platform.python_version(),
        "adapters": {},
    }
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.adapters.split(","):
            factory = {
                "edge": lambda: EdgeIndex(Path(tmp) / "edge"),
                "local": lambda: ServerIndex.local(Path(tmp) / "local"),
            }[name]
            with factory() as index:
                report["adapters"][name] = run(index, points, queries, args.dim)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
