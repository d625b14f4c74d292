"""Search: encode the question, one Qdrant query per collection (dense, sparse or fused), one SQL
query for the hits' passages and documents, then optionally a cross-encoder rerank."""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
from pydantic import TypeAdapter
from sqlalchemy import Row, bindparam, select
from sqlalchemy.orm import Session

from services.documents.models import Chunk, Document, collection_index_name
from services.documents.service import (
    SearchCollection,
    get_search_collection,
    model_mismatch,
    nfc,
    profile_mismatch,
)
from services.errors import Conflict, ServiceUnavailable
from services.index import IndexFilter, IndexHit, IndexRange, VectorIndex
from services.ingest.analyzer import KoreanAnalyzer
from services.observability.metrics import SEARCH_STAGE_SECONDS, SEARCHES, StageTimes
from services.search.schemas import (
    DEFAULT_FUSION,
    DEFAULT_MODE,
    Explain,
    Fusion,
    FusionObject,
    LegScore,
    RangeFilter,
    RerankOptions,
    SearchDefaults,
    SearchHit,
    SearchRequest,
    SearchResponse,
    SearchSettings,
    fusion_spec,
)
from services.vectors import SparseVector

if TYPE_CHECKING:  # a sparse-only caller (the CLI) never imports torch
    from services.embedding.query_encoder import QueryEncoder
    from services.embedding.registry import ModelRegistry

# Hits of a replaced generation are dropped after the index query; ask the index for a few extra to fill top_k.
OVERFETCH = 10
# ...and when even those are not enough, once more this many times as deep.
DEEPER = 10


class PassageScorer(Protocol):
    """A reranker: one relevance score per passage for the question (higher is better), in order.
    `highlights` are the question's term spans in each passage, for passages longer than it reads."""

    def rerank(
        self, query: str, passages: Sequence[str], highlights: Sequence[Sequence[tuple[int, int]]] | None = None
    ) -> list[float]: ...


def resolve_settings(request: SearchRequest, defaults: SearchDefaults | None) -> SearchSettings:
    """The request's settings, else the collection's defaults, else the service's."""
    defaults = defaults or SearchDefaults()
    mode = request.mode or defaults.mode or DEFAULT_MODE
    fusion = request.fusion or defaults.fusion or DEFAULT_FUSION
    rerank = request.rerank if request.rerank is not None else defaults.rerank
    options = rerank if isinstance(rerank, RerankOptions) else RerankOptions(enabled=bool(rerank))
    return SearchSettings(
        mode=mode,
        fusion=_fusion_object(fusion) if mode == "hybrid" else None,
        rerank=options if options.enabled else None,
    )


def _fusion_object(fusion: Fusion) -> FusionObject:
    """A method name as the object it stands for, so a response says exactly what ran."""
    if not isinstance(fusion, str):
        return fusion
    return TypeAdapter(FusionObject).validate_python(fusion_spec(fusion).to_dict())


def search(
    session: Session,
    *,
    index: VectorIndex,
    analyzer: KoreanAnalyzer,
    collection_name: str,
    request: SearchRequest,
    models: ModelRegistry | None = None,
    query_encoder: QueryEncoder | None = None,
    profile: str | None = None,
    model_sha256: str | None = None,
    reranker: PassageScorer | None = None,
) -> SearchResponse:
    """Ranked passages of `collection_name` for `request`, with their documents' metadata.

    The question is encoded by the model the collection records, from `models` (the services);
    callers without a registry pass one `query_encoder` instead, with its `profile` and weights
    hash `model_sha256`. Either may be left out for sparse searches only; `reranker` is None where
    no reranker is configured.
    """
    return search_collections(
        session,
        index=index,
        analyzer=analyzer,
        models=models,
        query_encoder=query_encoder,
        profile=profile,
        collection_names=[collection_name],
        request=request,
        model_sha256=model_sha256,
        reranker=reranker,
    )


@dataclass(frozen=True)
class _Target:
    name: str
    collection_id: uuid.UUID
    index_name: str


def search_collections(
    session: Session,
    *,
    index: VectorIndex,
    analyzer: KoreanAnalyzer,
    collection_names: Sequence[str],
    request: SearchRequest,
    models: ModelRegistry | None = None,
    query_encoder: QueryEncoder | None = None,
    profile: str | None = None,
    model_sha256: str | None = None,
    reranker: PassageScorer | None = None,
) -> SearchResponse:
    """Ranked passages of several collections searched as one: the question is analysed and
    encoded once, each collection's index is asked for its candidates, and the hits are merged by
    score (ties: the order the collections were given, then chunk id), each naming its collection.

    One collection's default search settings apply where the request leaves them out; several
    collections use the request's settings, else the service's.

    With `models`, each collection is searched with the model it records; a dense or hybrid
    search of several collections needs them all embedded by one model (Conflict). Without, the
    collections must be of `profile` (Conflict naming the first that is not; one collection of
    another profile can still be searched in sparse mode), and with `model_sha256`, a dense or
    hybrid search of a collection embedded by other weights is refused too.
    """
    started = time.perf_counter()
    times = StageTimes()
    with times.stage("sql"):
        collections = {name: get_search_collection(session, name=name) for name in dict.fromkeys(collection_names)}
    one = next(iter(collections.values())) if len(collections) == 1 else None
    settings = resolve_settings(
        request, SearchDefaults.model_validate(one.search_defaults) if one and one.search_defaults else None
    )
    mode, note = settings.mode, None
    if models is not None:
        targets = [
            _Target(name, c.id, c.index_name or collection_index_name(name, c.profile))
            for name, c in collections.items()
        ]
        if mode != "sparse":
            query_encoder = _recorded_model_encoder(models, collections, load=request.vector is None)
    else:
        targets = [
            _target(name, collection, profile, model_sha256, mode, strict=len(collections) > 1)
            for name, collection in collections.items()
        ]
    if mode != "sparse" and query_encoder is None and request.vector is None:
        raise ServiceUnavailable(f"{mode} search needs the query model, which this process has not loaded")
    if settings.rerank is not None and reranker is None:
        if request.rerank:  # asked for in this request: say so; a collection default is skipped with a note
            raise ServiceUnavailable(
                "reranking is not configured: set SAEKIN_RERANK_PROFILE (or SAEKIN_RERANK_MODEL)",
                code="rerank_unavailable",
            )
        settings = settings.model_copy(update={"rerank": None})
        note = "reranking is not configured; results are not reranked"

    # The model works on the question while this thread analyses it (sparse leg and highlights),
    # unless the client sent the question's vector.
    encode_started = time.perf_counter()
    encodes = mode != "sparse" and request.vector is None
    dense_future = query_encoder.submit(request.query) if encodes and query_encoder is not None else None
    needs_terms = mode != "dense" or request.highlight or settings.rerank is not None
    with times.stage("analyse"):
        terms = analyzer.query_terms(request.query) if needs_terms else ()
        sparse = analyzer.query_vector(terms) if mode != "dense" else SparseVector()
    if mode != "dense" and not sparse:
        if mode == "sparse":
            return SearchResponse(
                results=[],
                mode=mode,
                settings=settings,
                took_ms=_ms(started),
                note="the query has no searchable terms (only particles or punctuation)",
            )
        mode, note = "dense", "the query has no searchable terms; dense search only"
        settings = settings.model_copy(update={"mode": mode, "fusion": None})
    # encode: from the question's submission until its vector is ready (it overlaps the analysis).
    dense = dense_future.result() if dense_future is not None else _client_vector(request, mode)
    if dense_future is not None:
        times.add("encode", time.perf_counter() - encode_started)

    # Reranking scores more candidates than it keeps.
    wanted = max(request.top_k, settings.rerank.depth) if settings.rerank is not None else request.top_k
    query = _IndexQuery(
        dense=dense,
        sparse=sparse if mode != "dense" else None,
        filter=_index_filter(request),
        fusion=fusion_spec(settings.fusion) if settings.fusion is not None else "rrf",
        prefetch=request.prefetch,
        explain=request.explain,
    )
    found: list[tuple[int, IndexHit, Row]] = []
    for position, target in enumerate(targets):
        if index.collection_exists(target.index_name):
            found.extend((position, hit, row) for hit, row in _collect(session, index, target, query, wanted, times))
    if len(targets) > 1:
        found.sort(key=lambda f: (-f[1].score, f[0], f[1].id))
    found = found[:wanted]

    need_highlights = request.highlight or settings.rerank is not None
    with times.stage("highlight"):
        highlights = (
            analyzer.highlights_many([row.text for _, _, row in found], terms, [row.term_spans for _, _, row in found])
            if need_highlights
            else [[] for _ in found]
        )
    candidates = [
        _Candidate(fused_rank, hit, row, targets[position].name, spans)
        for fused_rank, ((position, hit, row), spans) in enumerate(zip(found, highlights), start=1)
    ]
    if settings.rerank is not None and reranker is not None and candidates:
        with times.stage("rerank"):
            candidates = _rerank(reranker, request.query, candidates)
    results = [
        SearchHit(
            rank=rank,
            score=c.rerank_score if c.rerank_score is not None else c.hit.score,
            chunk_id=c.row.id,
            document_id=c.row.document_id,
            external_id=c.row.external_id,
            title=c.row.title,
            text=c.row.text,
            page=c.row.page,
            heading=c.row.heading,
            char_start=c.row.char_start,
            char_end=c.row.char_end,
            metadata=c.row.metadata or {},
            highlights=c.spans if request.highlight else [],
            explain=_explain(c, rank) if request.explain else None,
            collection=c.collection,
            ordinal=c.row.ordinal,
        )
        for rank, c in enumerate(candidates[: request.top_k], start=1)
    ]
    times.observe(SEARCH_STAGE_SECONDS)
    SEARCHES.labels(mode).inc()
    return SearchResponse(results=results, mode=mode, settings=settings, took_ms=_ms(started), note=note)


def _client_vector(request: SearchRequest, mode: str) -> np.ndarray | None:
    """The question's vector as the client sent it, of unit length like the encoder's."""
    if request.vector is None or mode == "sparse":
        return None
    vector = np.asarray(request.vector, dtype=np.float32)
    return vector / np.linalg.norm(vector)


def _recorded_model_encoder(
    models: ModelRegistry, collections: dict[str, SearchCollection], *, load: bool = True
) -> QueryEncoder | None:
    """The query encoder of the model the collections record (None without `load`: the client sent
    the vector); Conflict when they record different ones (one question vector cannot be compared
    with two models' vectors)."""
    from services.collections.model import RecordedModel

    recorded = [RecordedModel(name, c.profile, c.model, c.model_sha256) for name, c in collections.items()]
    first = models.identity(recorded[0])
    for other in recorded[1:]:
        if models.identity(other) != first:
            raise Conflict(
                f"collections {recorded[0].collection!r} and {other.collection!r} were embedded by different "
                "models, so one question vector cannot search both: search them one at a time, or in sparse mode",
                code="model_mismatch",
            )
    return models.query_encoder(recorded[0]) if load else None


def _target(
    name: str, collection: SearchCollection, profile: str | None, model_sha256: str | None, mode: str, *, strict: bool
) -> _Target:
    """The collection as a search target; Conflict when its vectors are not the service's (another
    profile, or other weights)."""
    if profile is not None and collection.profile != profile and (strict or mode != "sparse"):
        raise profile_mismatch(name, collection.profile, profile)
    if mode != "sparse" and model_sha256 and collection.model_sha256 and collection.model_sha256 != model_sha256:
        raise model_mismatch(name, collection.model_sha256, model_sha256)
    return _Target(name, collection.id, collection.index_name or collection_index_name(name, collection.profile))


@dataclass(frozen=True)
class _IndexQuery:
    """What every collection's index is asked, built once per search."""

    dense: Any
    sparse: SparseVector | None
    filter: IndexFilter | None
    fusion: Any
    prefetch: int
    explain: bool


def _collect(
    session: Session, index: VectorIndex, target: _Target, query: _IndexQuery, wanted: int, times: StageTimes
) -> list[tuple[IndexHit, Row]]:
    """The first `wanted` hits of one collection whose rows are of the searchable generation."""
    limit = wanted + OVERFETCH

    def ask_index(limit: int) -> list[IndexHit]:
        with times.stage("index_query"):
            return index.query(
                target.index_name,
                dense=query.dense,
                sparse=query.sparse,
                limit=limit,
                filter=query.filter,
                fusion=query.fusion,
                prefetch_limit=max(query.prefetch, limit),
                with_payload=False,
                explain=query.explain,
            )

    hits = ask_index(limit)
    # Rows for the first hits; only when some are skipped (a document deleted meanwhile, or an
    # older or not yet published generation) are the next hits' rows loaded.
    passages: list[tuple[IndexHit, Row]] = []
    position = 0
    seen: set[str] = set()
    asked_deeper = False
    while len(passages) < wanted:
        if position == len(hits):
            # Every hit read and not enough found: a large document being replaced can put more
            # unpublished chunks in the way than OVERFETCH. Unless the index had no more, ask once
            # more, much deeper.
            if asked_deeper or len(hits) < limit:
                break
            asked_deeper, limit = True, limit * DEEPER
            hits, position = [h for h in ask_index(limit) if h.id not in seen], 0
            continue
        batch = hits[position : position + wanted - len(passages)]
        position += len(batch)
        seen.update(h.id for h in batch)
        with times.stage("sql"):
            rows = load_passages(session, target.collection_id, [uuid.UUID(h.id) for h in batch])
        for hit in batch:
            row = rows.get(hit.id)
            if row is not None and row.generation == row.indexed_generation:
                passages.append((hit, row))
    return passages


def _index_filter(request: SearchRequest) -> IndexFilter | None:
    f = request.filter
    if f is None:
        return None
    given = f.metadata or {}
    metadata = {k: v if isinstance(v, list) else [v] for k, v in given.items() if not isinstance(v, RangeFilter)}
    ranges = {
        k: IndexRange(gt=v.gt, gte=v.gte, lt=v.lt, lte=v.lte, datetime=v.is_datetime)
        for k, v in given.items()
        if isinstance(v, RangeFilter)
    }
    return IndexFilter(
        document_ids=[str(d) for d in f.document_ids] if f.document_ids is not None else None,
        external_ids=[nfc(e) for e in f.external_ids] if f.external_ids is not None else None,
        metadata=metadata or None,
        ranges=ranges or None,
    )


@dataclass(frozen=True)
class _Candidate:
    fused_rank: int  # 1-based, among the published hits of the index queries
    hit: IndexHit
    row: Row
    collection: str
    spans: list[tuple[int, int]]
    rerank_score: float | None = None


def _rerank(reranker: PassageScorer, query: str, candidates: list[_Candidate]) -> list[_Candidate]:
    """The candidates by the reranker's score (ties keep the fused order)."""
    scores = reranker.rerank(query, [c.row.text for c in candidates], [c.spans for c in candidates])
    rescored = [replace(c, rerank_score=float(score)) for c, score in zip(candidates, scores, strict=True)]
    return sorted(rescored, key=lambda c: (-(c.rerank_score or 0.0), c.fused_rank))


def _explain(c: _Candidate, rank: int) -> Explain:
    """Where the hit stood in each leg, after fusion, and after reranking where it ran."""
    legs = c.hit.legs or {}

    def leg(name: str) -> LegScore | None:
        found = legs.get(name)
        return LegScore(rank=found.rank, score=found.score) if found is not None else None

    return Explain(
        dense=leg("dense"),
        sparse=leg("sparse"),
        fused=LegScore(rank=c.fused_rank, score=c.hit.score),
        rerank=LegScore(rank=rank, score=c.rerank_score) if c.rerank_score is not None else None,
    )


# Built once: what a hit shows of its chunk and document. Table columns, not ORM entities:
# building entities (and the joined collection) for twenty rows cost more than the query itself.
_chunks, _documents = Chunk.__table__, Document.__table__
_PASSAGES = (
    select(
        _chunks.c.id,
        _chunks.c.generation,
        _chunks.c.ordinal,
        _chunks.c.text,
        _chunks.c.page,
        _chunks.c.heading,
        _chunks.c.char_start,
        _chunks.c.char_end,
        _chunks.c.term_spans,
        _chunks.c.document_id,
        _documents.c.external_id,
        _documents.c.indexed_title.label("title"),
        _documents.c.indexed_metadata.label("metadata"),
        _documents.c.indexed_generation,
    )
    .join_from(_chunks, _documents, _chunks.c.document_id == _documents.c.id)
    .where(
        _chunks.c.id.in_(bindparam("ids", expanding=True)),
        # The index holds one collection's points; checked here too, so no other collection's
        # text can ever be shown.
        _documents.c.collection_id == bindparam("collection_id"),
    )
)


def load_passages(session: Session, collection_id: uuid.UUID, ids: list[uuid.UUID]) -> dict[str, Row]:
    """Rows of all hits' chunks and documents in one SQL query, by chunk id."""
    if not ids:
        return {}
    return {str(row.id): row for row in session.execute(_PASSAGES, {"ids": ids, "collection_id": collection_id})}


def _ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 2)
