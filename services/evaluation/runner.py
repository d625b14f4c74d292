"""`saekin eval`: ingest a benchmark corpus through the real pipeline, query it through the real
search service, and score the document rankings with standard IR metrics."""

from __future__ import annotations

import statistics
import time
import uuid
from collections.abc import Sequence

from sqlalchemy import delete, select
from tqdm import tqdm

from services.db import session_scope
from services.documents import service as documents
from services.documents.models import Collection, Document, DocumentStatus, index_name
from services.evaluation.datasets import EvalDataset
from services.evaluation.metrics import dedupe_first, evaluate
from services.ingest.pipeline import WorkItem, process_now
from services.runtime import Runtime
from services.search.schemas import SearchRequest
from services.search.service import search

INGEST_BATCH = 32


def run_eval(
    rt: Runtime, dataset: EvalDataset, *, mode: str, ks: Sequence[int], keep: bool = False, progress: bool = True
) -> dict:
    """Metrics and timings of `mode` search on `dataset`, in a fresh collection."""
    collection = f"eval-{uuid.uuid4().hex[:12]}"
    started = time.perf_counter()
    items = _ingest(rt, dataset, collection, progress=progress)
    ingest_s = time.perf_counter() - started
    with session_scope(rt.session_factory) as session:
        failed = session.scalars(
            select(Document.external_id).where(
                Document.id.in_([i.document_id for i in items]), Document.status == DocumentStatus.failed
            )
        ).all()
        chunks = (
            sum(session.scalars(select(Document.chunk_count).where(Document.id.in_([i.document_id for i in items]))))
            if items
            else 0
        )

    depth = min(100, max(ks) * 5)  # chunks per query; several chunks may belong to one document
    runs: dict[str, list[str]] = {}
    latencies: list[float] = []
    for qid, query in tqdm(dataset.queries.items(), desc="query", unit="q", disable=not progress):
        t0 = time.perf_counter()
        with session_scope(rt.session_factory) as session:
            response = search(
                session,
                rt=rt,
                collection_name=collection,
                request=SearchRequest(query=query, top_k=depth, mode=mode, highlight=False),
            )
        latencies.append((time.perf_counter() - t0) * 1000)
        runs[qid] = dedupe_first(hit.external_id for hit in response.results)

    if not keep:
        _drop(rt, collection)
    latencies.sort()
    return {
        "dataset": dataset.name,
        "mode": mode,
        "model": rt.settings.model_name_or_path,
        "profile": rt.settings.embedding_profile,
        "n_queries": len(dataset.queries),
        "n_documents": len(dataset.corpus),
        "n_chunks": chunks,
        "failed_documents": list(failed),
        "metrics": evaluate(runs, dataset.qrels, ks),
        "timings": {
            "ingest_s": round(ingest_s, 2),
            "ingest_chunks_per_s": round(chunks / ingest_s, 1) if ingest_s else None,
            "query_p50_ms": round(statistics.median(latencies), 2) if latencies else None,
            "query_p95_ms": round(latencies[int(0.95 * (len(latencies) - 1))], 2) if latencies else None,
            "query_mean_ms": round(statistics.fmean(latencies), 2) if latencies else None,
        },
    }


def _ingest(rt: Runtime, dataset: EvalDataset, collection: str, *, progress: bool) -> list[WorkItem]:
    items: list[WorkItem] = []
    with session_scope(rt.session_factory) as session:
        for doc_id, text in dataset.corpus.items():
            result = documents.submit_document(
                session,
                collection_name=collection,
                profile=rt.settings.embedding_profile,
                upload=documents.Upload(
                    data=text.encode("utf-8"), media_type="text/plain", external_id=doc_id, title=doc_id
                ),
            )
            items.append(WorkItem(result.document.id, result.generation))
    with tqdm(total=len(items), desc="ingest", unit="doc", disable=not progress) as bar:
        for i in range(0, len(items), INGEST_BATCH):
            batch = items[i : i + INGEST_BATCH]
            process_now(rt, batch)
            bar.update(len(batch))
    return items


def _drop(rt: Runtime, collection: str) -> None:
    with session_scope(rt.session_factory) as session:
        row = session.scalar(select(Collection).where(Collection.name == collection))
        if row is None:
            return
        name = index_name(row)
        session.execute(delete(Document).where(Document.collection_id == row.id))
        session.execute(delete(Collection).where(Collection.id == row.id))
    if rt.index.collection_exists(name):
        rt.index.drop_collection(name)


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
