"""Context for an LLM: one search, one SQL query for the hits' neighbourhoods, then assembly."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session

from services.context.assembly import ChunkText, Hit, Source, assemble
from services.context.schemas import Citation, ContextRequest, ContextResponse
from services.context.tokens import Resolved, TokenizerName
from services.documents.models import Chunk, Document, live_layout
from services.index.base import VectorIndex
from services.ingest.analyzer import KoreanAnalyzer
from services.search.schemas import SearchHit, SearchRequest
from services.search.service import PassageScorer, search_collections

if TYPE_CHECKING:
    from services.embedding.query_encoder import QueryEncoder
    from services.embedding.registry import ModelRegistry

_chunks, _documents = Chunk.__table__, Document.__table__
# Built once (compiling a statement per request cost more than running it): the chunks at the
# wanted (document, ordinal) pairs, of each document's searchable generation.
_NEIGHBOURHOODS = (
    select(
        _chunks.c.document_id,
        _chunks.c.ordinal,
        _chunks.c.char_start,
        _chunks.c.char_end,
        _chunks.c.text,
        _chunks.c.page,
        _chunks.c.heading,
        _chunks.c.sentence_starts,
        _chunks.c.token_count,
    )
    .join_from(_chunks, _documents, _chunks.c.document_id == _documents.c.id)
    .where(
        # Two plain INs (a row-value IN is not served by the document_id index on SQLite); the
        # few rows of other pairs they let through are dropped in Python.
        _chunks.c.document_id.in_(bindparam("documents", expanding=True)),
        _chunks.c.ordinal.in_(bindparam("ordinals", expanding=True)),
        _chunks.c.generation == _documents.c.indexed_generation,
        _chunks.c.layout == live_layout(),
    )
)


def build_context(
    session: Session,
    *,
    index: VectorIndex,
    analyzer: KoreanAnalyzer,
    counter_for: Callable[[TokenizerName], Resolved],
    collection_names: Sequence[str],
    request: ContextRequest,
    models: ModelRegistry | None = None,
    query_encoder: QueryEncoder | None = None,
    profile: str | None = None,
    model_sha256: str | None = None,
    reranker: PassageScorer | None = None,
) -> ContextResponse:
    """Cited passages for `request` from `collection_names` (searched as one) within its budget;
    the models as in :func:`search_collections`."""
    started = time.perf_counter()
    # The request's validated values as they are: a dump and a second validation would not always
    # round-trip (a date range's bound is written back in another form).
    fields = {name: getattr(request, name) for name in SearchRequest.model_fields}
    search_request = SearchRequest.model_construct(**{**fields, "highlight": False, "explain": False})
    found = search_collections(
        session,
        index=index,
        analyzer=analyzer,
        models=models,
        query_encoder=query_encoder,
        profile=profile,
        collection_names=collection_names,
        request=search_request,
        model_sha256=model_sha256,
        reranker=reranker,
    )
    resolved = counter_for(request.tokenizer)
    notes = [n for n in (found.note, resolved.note) if n]

    def answer(context: str = "", tokens: int = 0, citations: list[Citation] | None = None) -> ContextResponse:
        return ContextResponse(
            context=context,
            token_count=tokens,
            tokenizer=resolved.tokenizer,
            citations=citations or [],
            mode=found.mode,
            took_ms=round((time.perf_counter() - started) * 1000, 2),
            note="; ".join(notes) or None,
        )

    if not found.results:
        if not found.note:
            notes.insert(0, "no passage matched the question (or the collection has no indexed documents)")
        return answer()

    chunks = _load_neighbourhoods(session, found.results, request.neighbors)
    sources = {
        str(h.document_id): Source(
            str(h.document_id), title=h.title, external_id=h.external_id, collection=h.collection
        )
        for h in reversed(found.results)
    }
    hits = [Hit(h.rank, h.score, str(h.document_id), h.ordinal) for h in found.results if h.ordinal is not None]
    assembly = assemble(
        hits,
        chunks,
        sources,
        counter=resolved.counter,
        max_tokens=request.max_tokens,
        neighbors=request.neighbors,
        fmt=request.format,
    )
    if not assembly.passages:
        notes.insert(
            0,
            f"max_tokens={request.max_tokens} is too small for the first sentence of the best passage with its source line",
        )
    citations = [
        Citation(
            n=p.n,
            document_id=uuid.UUID(p.source.document_id),
            external_id=p.source.external_id,
            title=p.source.title,
            collection=p.source.collection or "",
            pages=p.pages,
            heading=p.heading,
            char_start=p.char_start,
            char_end=p.char_end,
            score=p.score,
            rank=p.best_rank,
            text=p.text,
            trimmed=p.trimmed,
        )
        for p in assembly.passages
    ]
    return answer(assembly.context, assembly.token_count, citations)


def _load_neighbourhoods(
    session: Session, hits: Sequence[SearchHit], neighbors: int
) -> dict[tuple[str, int], ChunkText]:
    """The hits' chunks and up to `neighbors` chunks around each, of the searchable generation,
    in one SQL query."""
    wanted: set[tuple[uuid.UUID, int]] = set()
    for h in hits:
        if h.ordinal is not None:
            wanted.update((h.document_id, o) for o in range(max(0, h.ordinal - neighbors), h.ordinal + neighbors + 1))
    if not wanted:
        return {}
    rows = session.execute(
        _NEIGHBOURHOODS,
        {"documents": sorted({d for d, _ in wanted}), "ordinals": sorted({o for _, o in wanted})},
    )
    return {
        (str(r.document_id), r.ordinal): ChunkText(
            document_id=str(r.document_id),
            ordinal=r.ordinal,
            char_start=r.char_start,
            char_end=r.char_end,
            text=r.text,
            page=r.page,
            heading=r.heading,
            sentence_starts=r.sentence_starts,
            token_count=r.token_count,
        )
        for r in rows
        if (r.document_id, r.ordinal) in wanted
    }
