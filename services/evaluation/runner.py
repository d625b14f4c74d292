"""`saekin eval`: ingest a benchmark corpus through the real pipeline, query it through the real
search service, and score the document rankings with standard IR metrics.

Ingestion and querying are separate steps, so one ingestion can serve several search
configurations (and the test suite can reuse one).
"""

from __future__ import annotations

import statistics
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session, sessionmaker
from tqdm import tqdm

from services.db import session_scope
from services.dispatch import InlineDispatcher, Process, intake
from services.documents.lifecycle import Upload
from services.documents.models import Collection, Document, DocumentStatus, index_name
from services.evaluation.datasets import EvalDataset
from services.evaluation.metrics import dedupe_first, evaluate
from services.index.base import VectorIndex
from services.ingest.analyzer import KoreanAnalyzer
from services.search.schemas import SearchRequest
from services.search.service import search

if TYPE_CHECKING:
    from services.embedding.query_encoder import QueryEncoder

INGEST_BATCH = 32


@dataclass(frozen=True)
class IngestedCorpus:
    """A dataset's corpus indexed in a collection of its own, one document per corpus entry."""

    collection: str
    n_documents: int
    n_chunks: int
    failed_documents: list[str]
    ingest_s: float


def ingest_corpus(
    dataset: EvalDataset,
    *,
    session_factory: sessionmaker[Session],
    process: Process,
    profile: str,
    collection: str | None = None,
    progress: bool = True,
) -> IngestedCorpus:
    """Store every corpus entry (`external_id` = its doc id) and run both ingestion stages on them."""
    collection = collection or f"eval-{uuid.uuid4().hex[:12]}"
    started = time.perf_counter()
    dispatcher = InlineDispatcher(process)
    for doc_id, text in dataset.corpus.items():
        upload = Upload(data=text.encode("utf-8"), media_type="text/plain", external_id=doc_id, title=doc_id)
        intake(
            upload, session_factory=session_factory, collection_name=collection, profile=profile, dispatcher=dispatcher
        )
    with tqdm(total=len(dataset.corpus), desc="ingest", unit="doc", disable=not progress) as bar:
        items = dispatcher.drain(batch=INGEST_BATCH, progress=bar.update)
    ids = [item.document_id for item in items]
    with session_scope(session_factory) as session:
        failed = session.scalars(
            select(Document.external_id).where(Document.id.in_(ids), Document.status == DocumentStatus.failed)
        ).all()
        chunks = sum(session.scalars(select(Document.chunk_count).where(Document.id.in_(ids)))) if ids else 0
    return IngestedCorpus(
        collection=collection,
        n_documents=len(dataset.corpus),
        n_chunks=chunks,
        failed_documents=[f for f in failed if f is not None],
        ingest_s=time.perf_counter() - started,
    )


def run_queries(
    dataset: EvalDataset,
    corpus: IngestedCorpus,
    *,
    session_factory: sessionmaker[Session],
    index: VectorIndex,
    analyzer: KoreanAnalyzer,
    query_encoder: QueryEncoder | None,
    profile: str,
    mode: str,
    ks: Sequence[int],
    progress: bool = True,
) -> dict[str, Any]:
    """Every question through the real search service; metrics over the document rankings."""
    depth = min(100, max(ks) * 5)  # chunks per query; several chunks may belong to one document
    runs: dict[str, list[str]] = {}
    latencies: list[float] = []
    for qid, query in tqdm(dataset.queries.items(), desc="query", unit="q", disable=not progress):
        t0 = time.perf_counter()
        with session_scope(session_factory) as session:
            response = search(
                session,
                index=index,
                analyzer=analyzer,
                query_encoder=query_encoder,
                profile=profile,
                collection_name=corpus.collection,
                request=SearchRequest(query=query, top_k=depth, mode=mode, highlight=False),
            )
        latencies.append((time.perf_counter() - t0) * 1000)
        runs[qid] = dedupe_first(hit.external_id for hit in response.results if hit.external_id is not None)
    latencies.sort()
    return {
        "dataset": dataset.name,
        "mode": mode,
        "n_queries": len(dataset.queries),
        "n_documents": corpus.n_documents,
        "n_chunks": corpus.n_chunks,
        "failed_documents": corpus.failed_documents,
        "metrics": evaluate(runs, dataset.qrels, ks),
        "timings": {
            "ingest_s": round(corpus.ingest_s, 2),
            "ingest_chunks_per_s": round(corpus.n_chunks / corpus.ingest_s, 1) if corpus.ingest_s else None,
            "query_p50_ms": round(statistics.median(latencies), 2) if latencies else None,
            "query_p95_ms": round(latencies[int(0.95 * (len(latencies) - 1))], 2) if latencies else None,
            "query_mean_ms": round(statistics.fmean(latencies), 2) if latencies else None,
        },
    }


def drop_corpus(corpus: IngestedCorpus, *, session_factory: sessionmaker[Session], index: VectorIndex) -> None:
    """Delete the evaluation collection: its rows and its index."""
    with session_scope(session_factory) as session:
        row = session.scalar(select(Collection).where(Collection.name == corpus.collection))
        if row is None:
            return
        name = index_name(row)
        session.execute(delete(Document).where(Document.collection_id == row.id))
        session.execute(delete(Collection).where(Collection.id == row.id))
    if index.collection_exists(name):
        index.drop_collection(name)


def format_table(result: dict, ks: Sequence[int]) -> str:
    """The metrics as a text table: one row per metric, one column per k."""
    names = ["recall", "precision", "f1", "mrr", "map", "ndcg"]
    lines = [
        f"{result['dataset']} · {result['mode']} · {result['model']} · {result['n_queries']} queries",
        "metric     " + "".join(f"{'@' + str(k):>9}" for k in ks),
    ]
    for name in names:
        lines.append(f"{name:<11}" + "".join(f"{result['metrics'][f'{name}@{k}']:>9.4f}" for k in ks))
    t = result["timings"]
    lines.append(f"ingest {t['ingest_s']} s ({result['n_chunks']} chunks), query p50 {t['query_p50_ms']} ms")
    return "\n".join(lines)
