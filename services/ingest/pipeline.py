"""A document's way to the index, in two stages that Celery runs on different queues.

prepare (CPU, `ingest` queue): extract → normalize → split sentences + morphemes (one Kiwi
pass) → chunk by model tokens → sparse vectors → chunk rows.
embed (GPU, `embed` queue): chunk rows → dense vectors → Qdrant points → publish the generation.

Both stages are idempotent per (document, generation): rows and point ids are deterministic,
so a redelivered task overwrites what a killed one left. Status goes through the document
rows (models), never through the documents service, so arrows keep pointing one way.
"""
from __future__ import annotations

import hashlib
from bisect import bisect_left
import logging
import tempfile
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import delete, insert, select, update
from sqlalchemy.orm import Session

from services.db import session_scope
from services.documents.models import (
    Chunk, Document, DocumentSource, DocumentStage, DocumentStatus, chunk_point_id, index_name, utcnow,
)
from services.errors import SaekinError
from services.index.base import IndexPoint
from services.ingest.analyzer import stem_spans
from services.ingest.chunker import chunk_sentences
from services.ingest.extract import TEXT_PLAIN, ExtractLimits, extract_file, extract_file_with_timeout
from services.ingest.normalize import normalize_text
from services.runtime import Runtime
from services.vectors import SparseVector

log = logging.getLogger(__name__)

SECTION_SEPARATOR = "\n\n"
STAGE_REPORT_AFTER_S = 1.0


@dataclass(frozen=True)
class WorkItem:
    document_id: uuid.UUID
    generation: int


def _current(session: Session, item: WorkItem) -> Document | None:
    """The document if `item` is still its latest generation (not deleted, not replaced)."""
    document = session.get(Document, item.document_id)
    if document is None or document.generation != item.generation:
        return None
    return document


def _update_generation(item: WorkItem, **values):
    """UPDATE of the document row while `item` is still its generation (no row otherwise)."""
    return (update(Document).where(Document.id == item.document_id, Document.generation == item.generation)
            .values(updated_at=utcnow(), **values)
            .execution_options(synchronize_session=False))  # plain SQL: no ORM objects to keep in sync


def _set_state(rt: Runtime, item: WorkItem, **values) -> None:
    with session_scope(rt.session_factory) as session:
        session.execute(_update_generation(item, **values))


def mark_failed(rt: Runtime, item: WorkItem, reason: str) -> None:
    """Record why a generation failed; an older indexed generation stays searchable."""
    log.warning("document %s generation %s failed: %s", item.document_id, item.generation, reason)
    _set_state(rt, item, status=DocumentStatus.failed, error=reason[:2000], stage=None)


def prepare_document(rt: Runtime, item: WorkItem) -> int | None:
    """Run the CPU stage for one generation; the number of chunks written, or None if stale or failed.

    Two transactions of plain SQL statements (claim, then write): this runs for every document,
    and ORM objects cost more CPU here than Kiwi's analysis of a short page.
    """
    with session_scope(rt.session_factory) as session:
        claimed = session.execute(
            _update_generation(item, status=DocumentStatus.processing, stage=DocumentStage.extracting, error=None)
            .returning(Document.filename, Document.media_type)).first()
        data = session.scalar(select(DocumentSource.data).where(
            DocumentSource.document_id == item.document_id, DocumentSource.generation == item.generation))
        if claimed is None or data is None:  # deleted or replaced since it was queued
            session.rollback()
            return None
        filename, media_type = claimed

    try:
        started = time.monotonic()
        detected_type, sections = _extract_sections(rt, data, filename=filename, media_type=media_type)
        if time.monotonic() - started > STAGE_REPORT_AFTER_S:
            # Worth a transaction only when someone polling could have seen `extracting`.
            _set_state(rt, item, stage=DocumentStage.chunking)
        full_text, rows = _chunk_sections(rt, item, sections)
    except SaekinError as exc:
        mark_failed(rt, item, exc.message)
        return None

    with session_scope(rt.session_factory) as session:
        written = session.execute(_update_generation(
            item, chunk_count=len(rows), embedded_count=0, char_count=len(full_text),
            text_sha256=hashlib.sha256(full_text.encode()).hexdigest(),
            stage=DocumentStage.embedding, media_type=detected_type))
        if written.rowcount == 0:  # deleted or replaced while we worked
            session.rollback()
            return None
        # A redelivered task replaces what an interrupted one wrote for this generation.
        session.execute(delete(Chunk).where(Chunk.document_id == item.document_id, Chunk.generation == item.generation))
        session.execute(insert(Chunk), rows)
    return len(rows)


@dataclass(frozen=True)
class _Section:
    text: str
    page: int | None
    heading: str | None


def _extract_sections(rt: Runtime, data: bytes, *, filename: str | None,
                      media_type: str | None) -> tuple[str, list[_Section]]:
    """The detected media type and the document's non-empty sections, NFC-normalized."""
    s = rt.settings
    limits = ExtractLimits(time_limit_s=s.extract_time_limit_s)
    with tempfile.NamedTemporaryFile(suffix=Path(filename or "").suffix[:16]) as tmp:
        tmp.write(data)
        tmp.flush()
        # Text sent as JSON needs no sandbox; files of any other kind are parsed in a child process
        # with a time and memory limit, so a hostile file cannot hang or exhaust this worker.
        extract = extract_file if media_type == TEXT_PLAIN else extract_file_with_timeout
        extracted = extract(Path(tmp.name), media_type=media_type, filename=filename, limits=limits)
    sections = [_Section(text, sec.page, sec.heading) for sec in extracted.sections
                if (text := normalize_text(sec.text)).strip()]
    if not sections:
        raise SaekinError("the document contains no text", code="no_text")
    return extracted.media_type, sections


def _chunk_sections(rt: Runtime, item: WorkItem, sections: Sequence[_Section]) -> tuple[str, list[dict]]:
    """Chunk rows (column values) of all sections, offsets into the sections joined by blank lines; chunks never cross sections."""
    s = rt.settings
    analyses = rt.analyzer.analyze_many([sec.text for sec in sections])
    rows: list[dict] = []
    offset = 0
    for section, sentences in zip(sections, analyses):
        spans = [(sent.start, sent.end) for sent in sentences]
        chunks = chunk_sentences(section.text, spans, rt.tokenizer, max_tokens=s.effective_chunk_tokens,
                                 overlap_tokens=min(s.chunk_overlap_tokens, s.effective_chunk_tokens // 2),
                                 first_ordinal=len(rows))
        terms = sorted((t for sent in sentences for t in sent.terms), key=lambda t: t.start)
        starts = [t.start for t in terms]
        for chunk in chunks:
            window = terms[bisect_left(starts, chunk.char_start):bisect_left(starts, chunk.char_end)]
            chunk_terms = [t for t in window if t.end <= chunk.char_end]
            sparse = rt.analyzer.document_vector(chunk_terms, k1=s.bm25_k1, b=s.bm25_b,
                                                 avg_doc_len=s.effective_bm25_avg_terms)
            rows.append(dict(
                id=chunk_point_id(item.document_id, item.generation, chunk.ordinal),
                document_id=item.document_id, generation=item.generation, ordinal=chunk.ordinal,
                text=chunk.text, char_start=offset + chunk.char_start, char_end=offset + chunk.char_end,
                page=section.page, heading=(section.heading or None) and section.heading[:512],
                token_count=chunk.token_count, sparse=sparse.to_dict(),
                stem_spans=stem_spans(chunk_terms, offset=chunk.char_start)))
        offset += len(section.text) + len(SECTION_SEPARATOR)
    full_text = SECTION_SEPARATOR.join(sec.text for sec in sections)
    return full_text, rows


def embed_documents(rt: Runtime, items: Sequence[WorkItem]) -> None:
    """Run the GPU stage for several prepared generations at once (one encode call fills the GPU)."""
    with session_scope(rt.session_factory) as session:
        live = [item for item in items if (doc := _current(session, item)) is not None
                and doc.stage == DocumentStage.embedding]
        if not live:
            return
        ids = [item.document_id for item in live]
        documents = {d.id: d for d in session.scalars(select(Document).where(Document.id.in_(ids)))}
        chunks = list(session.scalars(
            select(Chunk).where(Chunk.document_id.in_(ids)).order_by(Chunk.document_id, Chunk.ordinal)))
        chunks = [c for c in chunks if c.generation == documents[c.document_id].generation]
        session.expunge_all()

    vectors = rt.encoder.encode_documents([c.text for c in chunks]) if chunks else []
    points: dict[str, list[IndexPoint]] = {}  # per Qdrant collection: one upsert (one flush) for the batch
    embedded: dict[uuid.UUID, int] = {item.document_id: 0 for item in live}
    for chunk, vector in zip(chunks, vectors):
        document = documents[chunk.document_id]
        points.setdefault(index_name(document.collection), []).append(IndexPoint(
            id=str(chunk.id), dense=vector, sparse=SparseVector.from_dict(chunk.sparse),
            payload={
                "document_id": str(document.id), "external_id": document.external_id,
                "generation": chunk.generation, "ordinal": chunk.ordinal, "page": chunk.page,
                "metadata": document.metadata_ or {},
            }))
        embedded[chunk.document_id] += 1
    for name in {index_name(documents[item.document_id].collection) for item in live}:
        rt.index.ensure_collection(name, dim=rt.encoder.dim)
        if points.get(name):
            rt.index.upsert(name, points[name])
    _publish(rt, live, {item.document_id: index_name(documents[item.document_id].collection) for item in live},
             embedded)


def _publish(rt: Runtime, items: Sequence[WorkItem], names: dict[uuid.UUID, str], embedded: dict[uuid.UUID, int]) -> None:
    """Make each item the searchable generation and drop earlier generations' rows and points."""
    stale: list[tuple[WorkItem, int | None]] = []  # (item, generation to keep) whose points need cleaning
    with session_scope(rt.session_factory) as session:
        for item in items:
            document = _current(session, item)
            if document is None:
                # Deleted or replaced while we embedded: our points must not linger.
                stale.append((item, _live_generation(session, item)))
                continue
            document.status, document.stage, document.error = DocumentStatus.indexed, DocumentStage.done, None
            document.embedded_count = embedded[item.document_id]
            document.indexed_generation = item.generation
            document.indexed_at = utcnow()
            if item.generation > 1:  # only replacements and retries can have older rows and points
                session.execute(delete(Chunk).where(Chunk.document_id == item.document_id,
                                                    Chunk.generation != item.generation))
                stale.append((item, item.generation))
    for item, keep in stale:
        rt.index.delete_document(names[item.document_id], str(item.document_id), keep_generation=keep)


def _live_generation(session: Session, item: WorkItem) -> int | None:
    document = session.get(Document, item.document_id)
    return document.indexed_generation if document is not None else -1


def process_now(rt: Runtime, items: Sequence[WorkItem]) -> None:
    """Both stages in this process (embedded mode and the CLI); failures are recorded, never raised."""
    prepared = []
    for item in items:
        try:
            if prepare_document(rt, item) is not None:
                prepared.append(item)
        except Exception as exc:  # an unexpected bug must not stop the queue; its reason is kept
            log.exception("prepare failed for %s", item)
            mark_failed(rt, item, f"internal error while preparing: {exc!r}")
    if not prepared:
        return
    try:
        embed_documents(rt, prepared)
    except Exception as exc:
        log.exception("embedding failed for %s", prepared)
        for item in prepared:
            mark_failed(rt, item, f"internal error while embedding: {exc!r}")


def embedding_batch(rt: Runtime, first: WorkItem, *, max_chunks: int = 2048, max_documents: int = 64) -> list[WorkItem]:
    """`first` plus other generations waiting for the embed stage, up to `max_chunks` chunks.

    The embed worker takes them together so many small documents fill the GPU's batches as well
    as one large one. Their own embed tasks then find them published and do nothing; if this
    worker dies, those tasks are still queued (acks_late), so nothing is lost.
    Empty when `first` no longer waits (an earlier batch took it, or it was replaced or deleted):
    most tasks of a busy queue end here after one indexed query.
    """
    waiting = (Document.status == DocumentStatus.processing, Document.stage == DocumentStage.embedding)
    with session_scope(rt.session_factory) as session:
        total = session.scalar(select(Document.chunk_count).where(
            Document.id == first.document_id, Document.generation == first.generation, *waiting))
        if total is None:
            return []
        batch = [first]
        rows = session.execute(
            select(Document.id, Document.generation, Document.chunk_count)
            .where(*waiting, Document.id != first.document_id)
            .order_by(Document.updated_at).limit(max_documents - 1))
        for doc_id, generation, chunk_count in rows:
            if total + chunk_count > max_chunks:
                break
            batch.append(WorkItem(doc_id, generation))
            total += chunk_count
    return batch


def pending_work(rt: Runtime) -> list[WorkItem]:
    """Generations that were queued or in progress when the process stopped (embedded recovery)."""
    with session_scope(rt.session_factory) as session:
        rows = session.execute(select(Document.id, Document.generation).where(
            Document.status.in_([DocumentStatus.queued, DocumentStatus.processing])).order_by(Document.created_at))
        return [WorkItem(doc_id, gen) for doc_id, gen in rows]
