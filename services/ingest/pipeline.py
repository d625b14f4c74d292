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
import logging
import tempfile
import time
import uuid
from bisect import bisect_left
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from sqlalchemy import delete, func, insert, or_, select, tuple_, update

from services.documents.models import (
    Chunk,
    Collection,
    Document,
    DocumentSource,
    DocumentStage,
    DocumentStatus,
    chunk_point_id,
    collection_index_name,
    utcnow,
)
from services.documents.service import profile_mismatch
from services.errors import SaekinError
from services.index.base import IndexPoint, storable_metadata
from services.ingest.analyzer import term_spans
from services.ingest.chunker import chunk_sentences
from services.ingest.extract import TEXT_PLAIN, ExtractLimits, extract_file, extract_file_with_timeout
from services.ingest.normalize import normalize_text
from services.runtime import Runtime
from services.vectors import SparseVector

log = logging.getLogger(__name__)

SECTION_SEPARATOR = "\n\n"
# A stage is written for pollers to see only when it lasts long enough to be seen: extraction past
# this time, or a text long enough for Kiwi and the chunker to take about as long (Kiwi analyses
# 50,000-100,000 characters a second on one core).
STAGE_REPORT_AFTER_S = 1.0
STAGE_REPORT_MIN_CHARS = 50_000


@dataclass(frozen=True)
class WorkItem:
    document_id: uuid.UUID
    generation: int


# The stages run once per document: plain Core statements on the tables, no ORM objects or
# ORM statement layers, which cost more CPU here than the SQL itself.
_documents = Document.__table__
_sources = DocumentSource.__table__
_chunks = Chunk.__table__
_collections = Collection.__table__
# A generation whose chunk rows are written and whose embed stage has not finished.
_WAITING_FOR_EMBED = (_documents.c.status == DocumentStatus.processing, _documents.c.stage == DocumentStage.embedding)


def _update_generation(item: WorkItem, **values):
    """UPDATE of the document row while `item` is still its generation (no row otherwise)."""
    d = _documents.c
    return (
        update(_documents)
        .where(d.id == item.document_id, d.generation == item.generation)
        .values(updated_at=utcnow(), **values)
    )


def _set_state(rt: Runtime, item: WorkItem, **values) -> None:
    with rt.engine.begin() as conn:
        conn.execute(_update_generation(item, **values))


def mark_failed(rt: Runtime, item: WorkItem, reason: str) -> None:
    """Record why a generation failed; an older indexed generation stays searchable."""
    log.warning("document %s generation %s failed: %s", item.document_id, item.generation, reason)
    _set_state(
        rt,
        item,
        status=DocumentStatus.failed,
        error=reason[:2000],
        stage=None,
        embed_claim=None,
        embed_claimed_until=None,
    )


def prepare_document(rt: Runtime, item: WorkItem) -> int | None:
    """Run the CPU stage for one generation; the number of chunks written, or None if stale or failed.

    One connection, two short transactions: claim (status, and the uploaded bytes in the same
    statement), then write the chunk rows; nothing is held open while the text is analysed.
    """
    source = _sources.c
    uploaded = (
        select(source.data)
        .where(source.document_id == item.document_id, source.generation == item.generation)
        .scalar_subquery()
    )
    with rt.engine.connect() as conn:
        claimed = conn.execute(
            _update_generation(
                item, status=DocumentStatus.processing, stage=DocumentStage.extracting, error=None
            ).returning(_documents.c.filename, _documents.c.media_type, uploaded)
        ).first()
        if claimed is None or claimed[2] is None:  # deleted or replaced since it was queued
            conn.rollback()
            return None
        conn.commit()
        filename, media_type, data = claimed

        try:
            started = time.monotonic()
            detected_type, sections = _extract_sections(rt, data, filename=filename, media_type=media_type)
            if (
                time.monotonic() - started > STAGE_REPORT_AFTER_S
                or sum(len(sec.text) for sec in sections) > STAGE_REPORT_MIN_CHARS
            ):
                conn.execute(_update_generation(item, stage=DocumentStage.chunking))
                conn.commit()
            full_text, rows = _chunk_sections(rt, item, sections)
        except SaekinError as exc:
            mark_failed(rt, item, exc.message)
            return None

        written = conn.execute(
            _update_generation(
                item,
                chunk_count=len(rows),
                embedded_count=0,
                char_count=len(full_text),
                text_sha256=hashlib.sha256(full_text.encode()).hexdigest(),
                stage=DocumentStage.embedding,
                media_type=detected_type,
                embed_claim=None,
                embed_claimed_until=None,
            )
        )
        if written.rowcount == 0:  # deleted or replaced while we worked
            conn.rollback()
            return None
        # A redelivered task replaces what an interrupted one wrote for this generation.
        conn.execute(
            delete(_chunks).where(_chunks.c.document_id == item.document_id, _chunks.c.generation == item.generation)
        )
        if rows:
            conn.execute(insert(_chunks), rows)
        conn.commit()
    return len(rows)


@dataclass(frozen=True)
class _Section:
    text: str
    page: int | None
    heading: str | None


def _extract_sections(
    rt: Runtime, data: bytes, *, filename: str | None, media_type: str | None
) -> tuple[str, list[_Section]]:
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
    sections = [
        _Section(text, sec.page, sec.heading and normalize_text(sec.heading).strip())
        for sec in extracted.sections
        if (text := normalize_text(sec.text)).strip()
    ]
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
        chunks = chunk_sentences(
            section.text,
            spans,
            rt.tokenizer,
            max_tokens=rt.chunk_tokens,
            overlap_tokens=min(s.chunk_overlap_tokens, rt.chunk_tokens // 2),
            first_ordinal=len(rows),
        )
        terms = sorted((t for sent in sentences for t in sent.terms), key=lambda t: t.start)
        starts = [t.start for t in terms]
        for chunk in chunks:
            # Terms that start in the chunk; one cut by the chunk's end (a bigram across the split of
            # a long sentence) still counts here, or it would be in no chunk's sparse vector.
            window = terms[bisect_left(starts, chunk.char_start) : bisect_left(starts, chunk.char_end)]
            chunk_terms = [t for t in window if t.end <= chunk.char_end]
            sparse = rt.analyzer.document_vector(
                window, k1=s.bm25_k1, b=s.bm25_b, avg_doc_len=s.effective_bm25_avg_terms
            )
            rows.append(
                dict(
                    id=chunk_point_id(item.document_id, item.generation, chunk.ordinal),
                    document_id=item.document_id,
                    generation=item.generation,
                    ordinal=chunk.ordinal,
                    text=chunk.text,
                    char_start=offset + chunk.char_start,
                    char_end=offset + chunk.char_end,
                    page=section.page,
                    heading=(section.heading or None) and section.heading[:512],
                    token_count=chunk.token_count,
                    sparse=sparse.to_dict(),
                    term_spans=term_spans(chunk_terms, offset=chunk.char_start),
                )
            )
        offset += len(section.text) + len(SECTION_SEPARATOR)
    full_text = SECTION_SEPARATOR.join(sec.text for sec in sections)
    return full_text, rows


def embed_documents(rt: Runtime, items: Sequence[WorkItem]) -> None:
    """Run the GPU stage for several prepared generations at once (one encode call fills the GPU)."""
    if not items:
        return
    d, c, coll = _documents.c, _chunks.c, _collections.c
    wanted = {item.document_id: item.generation for item in items}
    with rt.engine.connect() as conn:
        documents = {
            row.id: row
            for row in conn.execute(
                select(d.id, d.generation, d.external_id, d["metadata"], coll.name.label("collection"), coll.profile)
                .join_from(_documents, _collections, d.collection_id == coll.id)
                .where(d.id.in_(wanted), d.stage == DocumentStage.embedding)
            )
            if wanted[row.id] == row.generation
        }
        if not documents:
            return
        for doc in documents.values():  # queued by a service running another profile than this worker
            if doc.profile != rt.settings.embedding_profile:
                raise profile_mismatch(doc.collection, doc.profile, rt.settings.embedding_profile)
        chunks = [
            row
            for row in conn.execute(
                select(c.id, c.document_id, c.generation, c.ordinal, c.page, c.text, c.sparse)
                .where(c.document_id.in_(documents))
                .order_by(c.document_id, c.ordinal)
            )
            if row.generation == documents[row.document_id].generation
        ]

    live = [item for item in items if item.document_id in documents]
    names = {doc_id: collection_index_name(doc.collection, doc.profile) for doc_id, doc in documents.items()}
    vectors = rt.encoder.encode_documents([chunk.text for chunk in chunks]) if chunks else []
    points: dict[str, list[IndexPoint]] = {}  # per Qdrant collection: one upsert (one flush) for the batch
    for chunk, vector in zip(chunks, vectors):
        document = documents[chunk.document_id]
        points.setdefault(names[chunk.document_id], []).append(
            IndexPoint(
                id=str(chunk.id),
                dense=vector,
                sparse=SparseVector.from_dict(chunk.sparse),
                payload={
                    "document_id": str(document.id),
                    "external_id": document.external_id,
                    "generation": chunk.generation,
                    "ordinal": chunk.ordinal,
                    "page": chunk.page,
                    "metadata": storable_metadata(document.metadata or {}),
                },
            )
        )
    for name in set(names.values()):
        rt.index.ensure_collection(name, dim=rt.encoder.dim)
        if points.get(name):
            rt.index.upsert(name, points[name])
    _publish(rt, live, names)


def embed_each_on_failure(rt: Runtime, items: Sequence[WorkItem]) -> list[tuple[WorkItem, Exception]]:
    """:func:`embed_documents` for the batch; if that fails, each document on its own, so that a
    document the index or the model cannot take fails alone instead of failing the batch.

    Returns the documents that failed on their own, with their errors (the caller marks them
    failed). Raises when the batch is one document or every document fails: then the fault is
    likely the service's (database, index, model), and the caller retries or fails them all.
    """
    try:
        embed_documents(rt, items)
        return []
    except Exception as exc:
        if len(items) <= 1:
            raise
        log.warning("embedding a batch of %d documents failed (%r); embedding them one by one", len(items), exc)
    failures: list[tuple[WorkItem, Exception]] = []
    for item in items:
        try:
            embed_documents(rt, [item])
        except Exception as exc:
            log.exception("embedding failed for %s", item)
            failures.append((item, exc))
    if len(failures) == len(items):
        raise failures[0][1]
    return failures


def _publish(rt: Runtime, items: Sequence[WorkItem], names: dict[uuid.UUID, str]) -> None:
    """Make each item the searchable generation and drop earlier generations' rows and points."""
    d, c = _documents.c, _chunks.c
    now = utcnow()
    with rt.engine.begin() as conn:
        # One statement for the batch; a generation deleted or replaced meanwhile matches no row.
        published = set(
            conn.scalars(
                update(_documents)
                .where(tuple_(d.id, d.generation).in_([(i.document_id, i.generation) for i in items]))
                .values(
                    status=DocumentStatus.indexed,
                    stage=DocumentStage.done,
                    error=None,
                    indexed_generation=d.generation,
                    indexed_title=d.title,
                    indexed_metadata=d["metadata"],
                    indexed_at=now,
                    updated_at=now,
                    embed_claim=None,
                    embed_claimed_until=None,
                    embedded_count=select(func.count())
                    .where(c.document_id == d.id, c.generation == d.generation)
                    .scalar_subquery(),
                )
                .returning(d.id)
            )
        )
        # Points to delete, each (item, {"below_generation" | "generation": n} or {} for all). Only
        # what is certainly dead: another worker may be writing a newer generation meanwhile.
        stale: list[tuple[WorkItem, dict[str, int]]] = []
        for item in items:
            if item.document_id in published and item.generation > 1:  # only replacements and retries
                conn.execute(
                    delete(_chunks).where(
                        c.document_id == item.document_id,  # have older rows and points
                        c.generation < item.generation,
                    )
                )
                stale.append((item, {"below_generation": item.generation}))
        gone = [item for item in items if item.document_id not in published]
        if gone:
            # Deleted or replaced while we embedded: our points must not linger.
            indexed = dict(
                conn.execute(select(d.id, d.indexed_generation).where(d.id.in_([i.document_id for i in gone]))).all()
            )
            for item in gone:
                if item.document_id not in indexed:  # deleted: whatever is left of it goes
                    stale.append((item, {}))
                elif indexed[item.document_id] != item.generation:  # replaced (unless another worker published it)
                    conn.execute(
                        delete(_chunks).where(c.document_id == item.document_id, c.generation == item.generation)
                    )
                    stale.append((item, {"generation": item.generation}))
    for item, which in stale:
        rt.index.delete_document(names[item.document_id], str(item.document_id), **which)


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
        failures = embed_each_on_failure(rt, prepared)
    except Exception as exc:
        log.exception("embedding failed for %s", prepared)
        failures = [(item, exc) for item in prepared]
    for item, exc in failures:
        mark_failed(rt, item, f"internal error while embedding: {exc!r}")


@dataclass(frozen=True)
class EmbedBatch:
    items: list[WorkItem]
    more_waiting: bool  # the limits left claimable generations behind


def embedding_batch(
    rt: Runtime, *, claim: str, lease_s: float, max_chunks: int = 2048, max_documents: int = 64
) -> EmbedBatch:
    """The oldest generations waiting for the embed stage, up to `max_chunks` chunks, claimed for `claim`.

    One embed task takes many documents so that small ones fill the GPU's batches as well as
    one large one; a document larger than `max_chunks` goes alone. The claim keeps other embed
    workers (one per GPU) from taking the same documents while the lease lasts. `claim` is the
    Celery task id: a task redelivered after its worker died, or retried after an error, has
    the same id and takes its batch back at once; the documents of a claim that nobody comes
    back for are free again when the lease ends.
    """
    d = _documents.c
    now = utcnow()
    claimable = (*_WAITING_FOR_EMBED, or_(d.embed_claim.is_(None), d.embed_claim == claim, d.embed_claimed_until < now))
    with rt.engine.begin() as conn:
        # FOR UPDATE SKIP LOCKED (PostgreSQL): rows another worker is claiming right now are not ours.
        rows = conn.execute(
            select(d.id, d.generation, d.chunk_count)
            .where(*claimable)
            .order_by(d.updated_at)
            .limit(max_documents + 1)
            .with_for_update(skip_locked=True)
        ).all()
        items: list[WorkItem] = []
        total = 0
        for doc_id, generation, chunk_count in rows[:max_documents]:
            if items and total + chunk_count > max_chunks:
                break
            items.append(WorkItem(doc_id, generation))
            total += chunk_count
        if items:
            # updated_at stays: claiming is bookkeeping, and a retried task finds its batch first.
            conn.execute(
                update(_documents)
                .where(tuple_(d.id, d.generation).in_([(i.document_id, i.generation) for i in items]))
                .values(
                    embed_claim=claim, embed_claimed_until=now + timedelta(seconds=lease_s), updated_at=d.updated_at
                )
            )
    return EmbedBatch(items, more_waiting=len(rows) > len(items))


def mark_claim_failed(rt: Runtime, claim: str, reason: str) -> int:
    """Fail every generation still waiting in the batch `claim` took (its task gave up); how many.

    Without this they would wait, claimed, until the lease ends and a later task takes them
    (only to fail the same way, if the batch itself is the cause). The task only gives up when
    every document failed on its own too (embed_each_on_failure); process_now does the same.
    """
    d = _documents.c
    log.warning("embed batch %s failed: %s", claim, reason)
    with rt.engine.begin() as conn:
        return conn.execute(
            update(_documents)
            .where(d.embed_claim == claim, *_WAITING_FOR_EMBED)
            .values(
                status=DocumentStatus.failed,
                error=reason[:2000],
                stage=None,
                embed_claim=None,
                embed_claimed_until=None,
                updated_at=utcnow(),
            )
        ).rowcount


def pending_work(rt: Runtime) -> list[WorkItem]:
    """Generations that were queued or in progress when the process stopped (embedded recovery)."""
    d = _documents.c
    with rt.engine.connect() as conn:
        rows = conn.execute(
            select(d.id, d.generation)
            .where(d.status.in_([DocumentStatus.queued, DocumentStatus.processing]))
            .order_by(d.created_at)
        )
        return [WorkItem(doc_id, gen) for doc_id, gen in rows]
