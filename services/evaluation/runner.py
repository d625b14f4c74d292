"""`saekin eval`: ingest a benchmark corpus through the real pipeline, query it through the real
search service with one or several search configurations, and score the document rankings with
standard IR metrics.

Ingestion and querying are separate steps: one ingestion serves every configuration of a sweep
(and the test suite reuses one between runs).
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
from services.search.schemas import (
    DEFAULT_FUSION,
    ConvexFusion,
    DbsfFusion,
    Fusion,
    LegWeights,
    Mode,
    RerankOptions,
    RrfFusion,
    SearchRequest,
)
from services.search.service import PassageScorer, search

if TYPE_CHECKING:
    from services.embedding.query_encoder import QueryEncoder

INGEST_BATCH = 32
# Ranked documents kept per query in the output: enough to see what came first instead.
SHOWN_PER_QUERY = 10


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


@dataclass(frozen=True)
class SearchConfig:
    """One way of searching: what a collection's default search settings can hold."""

    mode: Mode
    fusion: Fusion | None = None
    rerank: RerankOptions | None = None

    @property
    def name(self) -> str:
        name: str = self.mode
        if self.mode == "hybrid" and self.fusion is not None:
            name += "/" + fusion_name(self.fusion)
        if self.rerank is not None:
            name += f"+rerank@{self.rerank.depth}"
        return name

    def settings(self) -> dict[str, Any]:
        """The JSON a PATCH /v1/collections/{c} takes as `search_defaults` to make this the default."""
        out: dict[str, Any] = {"mode": self.mode}
        if self.mode == "hybrid" and self.fusion is not None:
            out["fusion"] = self.fusion if isinstance(self.fusion, str) else self.fusion.model_dump(mode="json")
        out["rerank"] = self.rerank.model_dump(mode="json") if self.rerank is not None else False
        return out


def fusion_name(fusion: Fusion) -> str:
    if isinstance(fusion, str):
        return fusion
    if isinstance(fusion, ConvexFusion):
        return f"convex(alpha={fusion.alpha:g})"
    weights = ""
    if (fusion.weights.dense, fusion.weights.sparse) != (1.0, 1.0):
        weights = f", dense={fusion.weights.dense:g}, sparse={fusion.weights.sparse:g}"
    if isinstance(fusion, RrfFusion):
        return f"rrf(k={fusion.k}{weights})"
    return f"dbsf({weights[2:]})"


def sweep_configs(*, rerank: bool) -> list[SearchConfig]:
    """What `saekin eval --sweep` compares: each leg alone, then hybrid with the usual fusions
    (the default among them), each also reranked when a reranker is configured."""
    fusions: list[Fusion] = [
        DEFAULT_FUSION,
        *(ConvexFusion(method="convex", alpha=a) for a in (0.1, 0.2, 0.3, 0.5, 0.7)),
        RrfFusion(method="rrf"),
        RrfFusion(method="rrf", k=60),
        RrfFusion(method="rrf", weights=LegWeights(dense=0.25)),
        DbsfFusion(method="dbsf"),
        DbsfFusion(method="dbsf", weights=LegWeights(dense=0.25)),
    ]
    configs = [SearchConfig("sparse"), SearchConfig("dense")]
    configs += [SearchConfig("hybrid", fusion) for fusion in fusions]
    if rerank:
        configs += [SearchConfig(c.mode, c.fusion, RerankOptions()) for c in list(configs)]
    return configs


def run_queries(
    dataset: EvalDataset,
    corpus: IngestedCorpus,
    config: SearchConfig,
    *,
    session_factory: sessionmaker[Session],
    index: VectorIndex,
    analyzer: KoreanAnalyzer,
    query_encoder: QueryEncoder | None,
    profile: str,
    ks: Sequence[int],
    reranker: PassageScorer | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Every judged question through the real search service with `config`; metrics over the
    document rankings, each question's ranking beside its relevant documents, and warnings."""
    depth = min(100, max(ks) * 5)  # chunks per query; several chunks may belong to one document
    if config.rerank is not None:
        depth = max(depth, config.rerank.depth)
    runs: dict[str, list[str]] = {}
    per_query: list[dict[str, Any]] = []
    warnings: list[str] = []
    latencies: list[float] = []
    judged = [qid for qid in dataset.queries if qid in dataset.qrels]
    for qid in tqdm(judged, desc=config.name, unit="q", disable=not progress):
        request = SearchRequest(
            query=dataset.queries[qid],
            top_k=min(depth, 100),
            mode=config.mode,
            fusion=config.fusion,
            rerank=config.rerank if config.rerank is not None else False,
            highlight=False,
        )
        t0 = time.perf_counter()
        with session_scope(session_factory) as session:
            response = search(
                session,
                index=index,
                analyzer=analyzer,
                query_encoder=query_encoder,
                profile=profile,
                collection_name=corpus.collection,
                request=request,
                reranker=reranker,
            )
        latencies.append((time.perf_counter() - t0) * 1000)
        ranked: list[tuple[str, float]] = []
        for hit in response.results:  # documents in the order of their first chunk
            if hit.external_id is not None and all(hit.external_id != doc for doc, _ in ranked):
                ranked.append((hit.external_id, hit.score))
        runs[qid] = dedupe_first(doc for doc, _ in ranked)
        if not ranked:
            warnings.append(f"query {qid}: returned nothing ({response.note or 'no hits'})")
        per_query.append(
            {
                "query_id": qid,
                "query": dataset.queries[qid],
                "relevant": sorted(dataset.qrels[qid]),
                "ranked": [{"document": doc, "score": round(score, 6)} for doc, score in ranked[:SHOWN_PER_QUERY]],
                "first_relevant_rank": next(
                    (i for i, (doc, _) in enumerate(ranked, start=1) if dataset.qrels[qid].get(doc, 0) > 0), None
                ),
            }
        )
    latencies.sort()
    return {
        "name": config.name,
        "settings": config.settings(),
        "n_judged_queries": len(judged),
        "metrics": evaluate(runs, dataset.qrels, ks),
        "timings": {
            "queries_s": round(sum(latencies) / 1000, 2),
            "query_p50_ms": round(statistics.median(latencies), 2) if latencies else None,
            "query_p95_ms": round(latencies[int(0.95 * (len(latencies) - 1))], 2) if latencies else None,
        },
        "warnings": warnings,
        "per_query": per_query,
    }


def dataset_warnings(dataset: EvalDataset) -> list[str]:
    """What the metrics leave out: judgements the loader dropped, questions without judgements."""
    unjudged = [qid for qid in dataset.queries if qid not in dataset.qrels]
    return list(dataset.warnings) + [f"query {qid}: no relevant documents judged (not scored)" for qid in unjudged]


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


def format_table(result: dict[str, Any], ks: Sequence[int]) -> str:
    """The metrics as a text table: one row per configuration, recall at each k, MRR and NDCG at the largest."""
    top = max(ks)
    columns = [f"recall@{k}" for k in ks] + [f"mrr@{top}", f"ndcg@{top}"]
    width = max(len(run["name"]) for run in result["runs"]) + 2
    lines = [
        f"{result['dataset']} · {result['model']} ({result['profile']}) · "
        f"{result['n_judged_queries']} of {result['n_queries']} queries judged",
        "configuration".ljust(width) + "".join(f"{c:>11}" for c in columns) + f"{'p50 ms':>9}",
    ]
    for run in result["runs"]:
        metrics = run["metrics"]
        lines.append(
            run["name"].ljust(width)
            + "".join(f"{metrics[c]:>11.4f}" for c in columns)
            + f"{run['timings']['query_p50_ms'] or 0:>9.1f}"
        )
    t = result["timings"]
    lines.append(f"load {t['load_s']} s, ingest {t['ingest_s']} s ({result['n_chunks']} chunks)")
    if result["warnings"]:
        lines.append(f"{len(result['warnings'])} warnings (see the JSON), e.g. {result['warnings'][0]}")
    return "\n".join(lines)


def best_run(result: dict[str, Any], metric: str) -> dict[str, Any]:
    """The run with the highest `metric` (the first such, in the sweep's order)."""
    return max(result["runs"], key=lambda run: run["metrics"][metric])
