"""Search: encode the question, one Qdrant query (dense, sparse or fused), one SQL query for metadata."""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sqlalchemy import Row, bindparam, select
from sqlalchemy.orm import Session

from services.documents.models import Chunk, Document, collection_index_name
from services.documents.service import get_collection_key, model_mismatch, nfc, profile_mismatch
from services.errors import ServiceUnavailable
from services.index.base import IndexFilter, IndexHit, IndexRange, VectorIndex
from services.ingest.analyzer import KoreanAnalyzer
from services.search.schemas import LegScore, RangeFilter, SearchHit, SearchRequest, SearchResponse
from services.vectors import SparseVector

if TYPE_CHECKING:  # a sparse-only caller (the CLI) never imports torch
    from services.embedding.encoder import QueryEncoder

# Hits of a replaced generation are dropped after the index query; ask the index for a few extra to fill top_k.
OVERFETCH = 10
# ...and when even those are not enough, once more this many times as deep.
DEEPER = 10


def search(
    session: Session,
    *,
    index: VectorIndex,
    analyzer: KoreanAnalyzer,
    query_encoder: QueryEncoder | None,
    profile: str,
    collection_name: str,
    request: SearchRequest,
    model_sha256: str | None = None,
) -> SearchResponse:
    """Ranked passages of `collection_name` for `request`, with their documents' metadata.

    `profile` is the query encoder's; `query_encoder` may be None for sparse searches only.
    """
    return search_collections(
        session,
        index=index,
        analyzer=analyzer,
        query_encoder=query_encoder,
        profile=profile,
        collection_names=[collection_name],
        request=request,
        model_sha256=model_sha256,
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
    query_encoder: QueryEncoder | None,
    profile: str,
    collection_names: Sequence[str],
    request: SearchRequest,
    model_sha256: str | None = None,
) -> SearchResponse:
    """Ranked passages of several collections searched as one: the question is analysed and
    encoded once, each collection's index is asked for top_k, and the hits are merged by score
    (ties: the order the collections were given, then chunk id), each naming its collection.

    Several collections must all be of the service's `profile` (Conflict naming the first that
    is not); one collection of another profile can still be searched in sparse mode. With
    `model_sha256` (the service's weights), a dense or hybrid search of a collection embedded by
    other weights is refused too.
    """
    started = time.perf_counter()
    targets = [
        _target(session, name, profile, model_sha256, request.mode, strict=len(collection_names) > 1)
        for name in dict.fromkeys(collection_names)
    ]
    mode, note = request.mode, None
    if mode != "sparse" and query_encoder is None:
        raise ServiceUnavailable(f"{mode} search needs the query model, which this process has not loaded")

    # The model works on the question while this thread analyses it (sparse leg and highlights).
    dense_future = query_encoder.submit(request.query) if query_encoder is not None and mode != "sparse" else None
    terms = analyzer.query_terms(request.query) if mode != "dense" or request.highlight else ()
    sparse = analyzer.query_vector(terms) if mode != "dense" else SparseVector()
    if mode != "dense" and not sparse:
        if mode == "sparse":
            return SearchResponse(
                results=[],
                mode=mode,
                took_ms=_ms(started),
                note="the query has no searchable terms (only particles or punctuation)",
            )
        mode, note = "dense", "the query has no searchable terms; dense search only"
    dense = dense_future.result() if dense_future is not None else None

    flt = _index_filter(request)
    found: list[tuple[int, IndexHit, Row]] = []
    legs: dict[str, dict[str, LegScore]] | None = (
        {"dense": {}, "sparse": {}} if request.explain and mode == "hybrid" else None
    )
    for position, target in enumerate(targets):
        if not index.collection_exists(target.index_name):
            continue
        collected = _collect(session, index, target, dense, sparse if mode != "dense" else None, flt, request)
        found.extend((position, hit, row) for hit, row in collected)
        if legs is not None:
            limit = request.top_k + OVERFETCH
            for leg, ranks in _explain(index, target.index_name, dense, sparse, flt, limit, request).items():
                legs[leg].update(ranks)
    if len(targets) > 1:
        found.sort(key=lambda f: (-f[1].score, f[0], f[1].id))
    passages = [(hit, row, targets[position].name) for position, hit, row in found[: request.top_k]]
    highlights = (
        analyzer.highlights_many(
            [row.text for _, row, _ in passages], terms, [row.stem_spans for _, row, _ in passages]
        )
        if request.highlight
        else [[] for _ in passages]
    )
    results = [
        SearchHit(
            rank=rank,
            score=hit.score,
            chunk_id=row.id,
            document_id=row.document_id,
            external_id=row.external_id,
            title=row.title,
            text=row.text,
            page=row.page,
            heading=row.heading,
            char_start=row.char_start,
            char_end=row.char_end,
            metadata=row.metadata or {},
            highlights=spans,
            explain={leg: ranks.get(hit.id, LegScore(rank=None, score=None)) for leg, ranks in legs.items()}
            if legs is not None
            else None,
            collection=collection,
            ordinal=row.ordinal,
        )
        for rank, ((hit, row, collection), spans) in enumerate(zip(passages, highlights), start=1)
    ]
    return SearchResponse(results=results, mode=mode, took_ms=_ms(started), note=note)


def _target(session: Session, name: str, profile: str, model_sha256: str | None, mode: str, *, strict: bool) -> _Target:
    """The collection `name` as a search target; Conflict when its vectors are not the service's."""
    collection_id, collection_profile, collection_model = get_collection_key(session, name=name)
    if collection_profile != profile and (strict or mode != "sparse"):
        raise profile_mismatch(name, collection_profile, profile)
    if mode != "sparse" and model_sha256 and collection_model and collection_model != model_sha256:
        raise model_mismatch(name, collection_model, model_sha256)
    return _Target(name, collection_id, collection_index_name(name, collection_profile))


def _collect(
    session: Session,
    index: VectorIndex,
    target: _Target,
    dense,
    sparse: SparseVector | None,
    flt: IndexFilter | None,
    request: SearchRequest,
) -> list[tuple[IndexHit, Row]]:
    """The first top_k hits of one collection whose rows are of the searchable generation."""
    limit = request.top_k + OVERFETCH

    def ask_index(limit: int) -> list[IndexHit]:
        return index.query(
            target.index_name,
            dense=dense,
            sparse=sparse,
            limit=limit,
            filter=flt,
            fusion=request.fusion,
            prefetch_limit=max(request.prefetch, limit),
            with_payload=False,
        )

    hits = ask_index(limit)
    # Rows for the first top_k hits; only when some are skipped (a document deleted meanwhile, or
    # an older or not yet published generation) are the next hits' rows loaded.
    passages: list[tuple[IndexHit, Row]] = []
    position = 0
    seen: set[str] = set()
    asked_deeper = False
    while len(passages) < request.top_k:
        if position == len(hits):
            # Every hit read and top_k not reached: a large document being replaced can put more
            # unpublished chunks in the way than OVERFETCH. Unless the index had no more, ask once
            # more, much deeper.
            if asked_deeper or len(hits) < limit:
                break
            asked_deeper, limit = True, limit * DEEPER
            hits, position = [h for h in ask_index(limit) if h.id not in seen], 0
            continue
        batch = hits[position : position + request.top_k - len(passages)]
        position += len(batch)
        seen.update(h.id for h in batch)
        rows = _load_passages(session, target.collection_id, [uuid.UUID(h.id) for h in batch])
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


def _explain(
    index: VectorIndex,
    name: str,
    dense,
    sparse: SparseVector,
    flt: IndexFilter | None,
    limit: int,
    request: SearchRequest,
) -> dict[str, dict[str, LegScore]]:
    """Each leg's own ranking, for `explain`: the same prefetch the fused query used."""
    depth = max(request.prefetch, limit)
    legs = {
        "dense": index.query(name, dense=dense, limit=depth, filter=flt, with_payload=False),
        "sparse": index.query(name, sparse=sparse, limit=depth, filter=flt, with_payload=False),
    }
    return {leg: {h.id: LegScore(rank=i + 1, score=h.score) for i, h in enumerate(hits)} for leg, hits in legs.items()}


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
        _chunks.c.stem_spans,
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


def _load_passages(session: Session, collection_id: uuid.UUID, ids: list[uuid.UUID]) -> dict[str, Row]:
    """Rows of all hits' chunks and documents in one SQL query, by chunk id."""
    if not ids:
        return {}
    return {str(row.id): row for row in session.execute(_PASSAGES, {"ids": ids, "collection_id": collection_id})}


def _ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 2)
