"""Search: encode the question, one Qdrant query (dense, sparse or fused), one SQL query for metadata."""

from __future__ import annotations

import time
import uuid

from sqlalchemy import Row, bindparam, select
from sqlalchemy.orm import Session

from services.documents.models import Chunk, Document, collection_index_name
from services.documents.service import get_collection_key, nfc, profile_mismatch
from services.index.base import IndexFilter, IndexHit
from services.runtime import Runtime
from services.search.schemas import LegScore, SearchHit, SearchRequest, SearchResponse
from services.vectors import SparseVector

# Hits of a replaced generation are dropped after the index query; ask the index for a few extra to fill top_k.
OVERFETCH = 10
# ...and when even those are not enough, once more this many times as deep.
DEEPER = 10


def search(session: Session, *, rt: Runtime, collection_name: str, request: SearchRequest) -> SearchResponse:
    """Ranked passages of `collection_name` for `request`, with their documents' metadata."""
    started = time.perf_counter()
    collection_id, profile = get_collection_key(session, name=collection_name)
    if profile != rt.settings.embedding_profile and request.mode != "sparse":
        raise profile_mismatch(collection_name, profile, rt.settings.embedding_profile)
    name = collection_index_name(collection_name, profile)
    mode, note = request.mode, None

    # The model works on the question while this thread analyses it (sparse leg and highlights).
    dense_future = rt.query_encoder.submit(request.query) if mode != "sparse" else None
    terms = rt.analyzer.query_terms(request.query) if mode != "dense" or request.highlight else ()
    sparse = rt.analyzer.query_vector(terms) if mode != "dense" else SparseVector()
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

    if not rt.index.collection_exists(name):
        return SearchResponse(results=[], mode=mode, took_ms=_ms(started), note=note)
    flt = _index_filter(request)
    limit = request.top_k + OVERFETCH

    def ask_index(limit: int) -> list[IndexHit]:
        return rt.index.query(
            name,
            dense=dense,
            sparse=sparse if mode != "dense" else None,
            limit=limit,
            filter=flt,
            fusion=request.fusion,
            prefetch_limit=max(request.prefetch, limit),
            with_payload=False,
        )

    hits = ask_index(limit)
    legs = _explain(rt, name, dense, sparse, flt, limit, request) if request.explain and mode == "hybrid" else None

    # Rows for the first top_k hits; only when some are skipped (a document deleted meanwhile, or
    # an older or not yet published generation) are the next hits' rows loaded.
    passages = []
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
        rows = _load_passages(session, collection_id, [uuid.UUID(h.id) for h in batch])
        for hit in batch:
            row = rows.get(hit.id)
            if row is not None and row.generation == row.indexed_generation:
                passages.append((hit, row))
    highlights = (
        rt.analyzer.highlights_many([row.text for _, row in passages], terms, [row.term_spans for _, row in passages])
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
        )
        for rank, ((hit, row), spans) in enumerate(zip(passages, highlights), start=1)
    ]
    return SearchResponse(results=results, mode=mode, took_ms=_ms(started), note=note)


def _index_filter(request: SearchRequest) -> IndexFilter | None:
    f = request.filter
    if f is None:
        return None
    metadata = {k: v if isinstance(v, list) else [v] for k, v in (f.metadata or {}).items()} or None
    return IndexFilter(
        document_ids=[str(d) for d in f.document_ids] if f.document_ids is not None else None,
        external_ids=[nfc(e) for e in f.external_ids] if f.external_ids is not None else None,
        metadata=metadata,
    )


def _explain(
    rt: Runtime, name: str, dense, sparse: SparseVector, flt: IndexFilter | None, limit: int, request: SearchRequest
) -> dict[str, dict[str, LegScore]]:
    """Each leg's own ranking, for `explain`: the same prefetch the fused query used."""
    depth = max(request.prefetch, limit)
    legs = {
        "dense": rt.index.query(name, dense=dense, limit=depth, filter=flt, with_payload=False),
        "sparse": rt.index.query(name, sparse=sparse, limit=depth, filter=flt, with_payload=False),
    }
    return {leg: {h.id: LegScore(rank=i + 1, score=h.score) for i, h in enumerate(hits)} for leg, hits in legs.items()}


# Built once: what a hit shows of its chunk and document. Table columns, not ORM entities:
# building entities (and the joined collection) for twenty rows cost more than the query itself.
_chunks, _documents = Chunk.__table__, Document.__table__
_PASSAGES = (
    select(
        _chunks.c.id,
        _chunks.c.generation,
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


def _load_passages(session: Session, collection_id: uuid.UUID, ids: list[uuid.UUID]) -> dict[str, Row]:
    """Rows of all hits' chunks and documents in one SQL query, by chunk id."""
    if not ids:
        return {}
    return {str(row.id): row for row in session.execute(_PASSAGES, {"ids": ids, "collection_id": collection_id})}


def _ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 2)
