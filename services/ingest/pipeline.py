"""A document's way to the index, in two stages that Celery runs on different queues.

prepare (CPU, `ingest` queue): extract → normalize → split sentences + morphemes (one Kiwi
pass) → chunk by model tokens → sparse vectors → chunk rows.
embed (GPU, `embed` queue): chunk rows → dense vectors → Qdrant points → publish the generation.

Both stages are idempotent per (document, generation): rows and point ids are deterministic,
so a redelivered task overwrites what a killed one left. Every write of the document and chunk
rows is a step of services/documents/lifecycle.py; this module does the work between them.
"""

from __future__ import annotations

import logging
import tempfile
import time
import uuid
from bisect import bisect_left
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Engine

from services.collections.model import RecordedModel
from services.documents import lifecycle
from services.documents.lifecycle import EmbedBatch, Lease, WorkItem
from services.documents.models import DocumentStage, chunk_point_id
from services.embedding.registry import CollectionEncoders
from services.errors import SaekinError
from services.index.base import IndexPoint, VectorIndex, storable_metadata
from services.ingest.analyzer import KoreanAnalyzer, term_spans
from services.ingest.chunker import chunk_sentences
from services.ingest.extract import TEXT_PLAIN, ExtractLimits, extract_file, extract_file_with_timeout
from services.ingest.normalize import normalize_text
from services.ingest.policy import ChunkPolicies, ChunkPolicy
from services.leases import Heartbeat
from services.observability.metrics import INGEST_CHUNKS, INGEST_STAGE_SECONDS, timed

log = logging.getLogger(__name__)

SECTION_SEPARATOR = "\n\n"
# A stage is written for pollers to see only when it lasts long enough to be seen: extraction past
# this time, or a text long enough for Kiwi and the chunker to take about as long (Kiwi analyses
# 50,000-100,000 characters a second on one core).
STAGE_REPORT_AFTER_S = 1.0
STAGE_REPORT_MIN_CHARS = 50_000


def prepare_document(
    item: WorkItem,
    *,
    engine: Engine,
    analyzer: KoreanAnalyzer,
    chunking: ChunkPolicies,
    extract_limits: ExtractLimits,
    lease: Lease,
) -> int | None:
    """Run the CPU stage for one generation under `lease` (renewed while it works); the number of
    chunks written, or None if there was nothing to do (stale, taken by a live worker) or it failed."""
    claimed = lifecycle.claim(engine, item, lease)
    if claimed is None:  # deleted, replaced, done or held by a live worker since it was queued
        return None
    with Heartbeat(engine, lease, [item]):
        return _prepare_claimed(
            item,
            claimed,
            engine=engine,
            analyzer=analyzer,
            chunking=chunking,
            extract_limits=extract_limits,
            lease=lease,
        )


def _prepare_claimed(
    item: WorkItem,
    claimed: lifecycle.Claimed,
    *,
    engine: Engine,
    analyzer: KoreanAnalyzer,
    chunking: ChunkPolicies,
    extract_limits: ExtractLimits,
    lease: Lease,
) -> int | None:
    started = time.monotonic()
    try:
        with timed(INGEST_STAGE_SECONDS, "extract"):
            media_type, sections, found_title = _extract_sections(claimed, extract_limits)
        extracted_s = time.monotonic() - started
        if extracted_s > STAGE_REPORT_AFTER_S or sum(len(sec.text) for sec in sections) > STAGE_REPORT_MIN_CHARS:
            lifecycle.report_stage(engine, item, DocumentStage.chunking, duration_s=extracted_s)
        with timed(INGEST_STAGE_SECONDS, "chunk"):
            text, rows = _chunk_sections(
                item, sections, analyzer=analyzer, chunking=chunking(claimed.model), layout=claimed.chunk_layout
            )
    except SaekinError as exc:
        lifecycle.fail(engine, item, exc.message, duration_s=time.monotonic() - started)
        return None
    # The title inside the document (HWP summary, HWPX/DOCX metadata, PDF info, HTML <title>)
    # replaces the file name when the client gave no title (the upload stored the file name).
    title = found_title if found_title and claimed.title in (None, claimed.filename) else None
    with timed(INGEST_STAGE_SECONDS, "store"):
        stored = lifecycle.store_chunks(
            engine,
            item,
            rows=rows,
            text=text,
            media_type=media_type,
            title=title,
            lease=lease,
            duration_s=time.monotonic() - started,
        )
    if not stored:
        return None  # deleted, replaced or taken over while we worked
    INGEST_CHUNKS.labels("prepare").inc(len(rows))
    return len(rows)


def chunk_upload(
    item: WorkItem,
    upload: lifecycle.Claimed,
    *,
    analyzer: KoreanAnalyzer,
    chunking: ChunkPolicy,
    extract_limits: ExtractLimits,
    layout: int,
) -> list[dict[str, Any]]:
    """The chunk rows (column values) of a stored upload, extracted and chunked as the prepare
    stage does, under chunk `layout`: what a re-chunking reindex writes. SaekinError when the
    upload cannot be extracted."""
    _, sections, _ = _extract_sections(upload, extract_limits)
    return _chunk_sections(item, sections, analyzer=analyzer, chunking=chunking, layout=layout)[1]


@dataclass(frozen=True)
class _Section:
    text: str
    page: int | None
    heading: str | None
    table: bool = False


def _extract_sections(claimed: lifecycle.Claimed, limits: ExtractLimits) -> tuple[str, list[_Section], str | None]:
    """The media type, the document's non-empty sections (NFC-normalized) and the title the
    document carries, if any."""
    with tempfile.NamedTemporaryFile(suffix=Path(claimed.filename or "").suffix[:16]) as tmp:
        tmp.write(claimed.data)
        tmp.flush()
        # Plain text needs no sandbox; files of any other kind are parsed in a child process with a
        # time and memory limit, so a hostile file cannot hang or exhaust this worker.
        extract = extract_file if claimed.media_type == TEXT_PLAIN else extract_file_with_timeout
        extracted = extract(Path(tmp.name), media_type=claimed.media_type, filename=claimed.filename, limits=limits)
    sections = [
        _Section(text, sec.page, sec.heading and normalize_text(sec.heading).strip(), sec.table)
        for sec in extracted.sections
        if (text := normalize_text(sec.text)).strip()
    ]
    if not sections:
        raise SaekinError("no text: the document contains no text", code="no_text")
    title = normalize_text(extracted.title or "").strip()[:512] or None
    return extracted.media_type, sections, title


def _chunk_sections(
    item: WorkItem, sections: Sequence[_Section], *, analyzer: KoreanAnalyzer, chunking: ChunkPolicy, layout: int = 0
) -> tuple[str, list[dict[str, Any]]]:
    """The text (sections joined by blank lines) and the chunk rows (column values, of chunk
    `layout`) of all sections, offsets into that text; chunks never cross sections."""
    analyses = analyzer.analyze_many([sec.text for sec in sections])
    rows: list[dict[str, Any]] = []
    offset = 0
    for section, sentences in zip(sections, analyses):
        # A table is one section; when it is over the budget it is cut between rows, not sentences.
        spans = _line_spans(section.text) if section.table else [(sent.start, sent.end) for sent in sentences]
        sentence_starts = sorted({start for start, _ in spans})
        chunks = chunk_sentences(
            section.text,
            spans,
            chunking.tokenizer,
            max_tokens=chunking.max_tokens,
            overlap_tokens=chunking.overlap_tokens,
            first_ordinal=len(rows),
        )
        terms = sorted((t for sent in sentences for t in sent.terms), key=lambda t: t.start)
        starts = [t.start for t in terms]
        for chunk in chunks:
            # Terms that start in the chunk; one cut by the chunk's end (a bigram across the split of
            # a long sentence) still counts here, or it would be in no chunk's sparse vector.
            window = terms[bisect_left(starts, chunk.char_start) : bisect_left(starts, chunk.char_end)]
            chunk_terms = [t for t in window if t.end <= chunk.char_end]
            sparse = analyzer.document_vector(
                window, k1=chunking.bm25_k1, b=chunking.bm25_b, avg_doc_len=chunking.bm25_avg_terms
            )
            rows.append(
                dict(
                    id=chunk_point_id(item.document_id, item.generation, chunk.ordinal, layout),
                    document_id=item.document_id,
                    generation=item.generation,
                    layout=layout,
                    ordinal=chunk.ordinal,
                    text=chunk.text,
                    char_start=offset + chunk.char_start,
                    char_end=offset + chunk.char_end,
                    page=section.page,
                    heading=(section.heading or None) and section.heading[:512],
                    token_count=chunk.token_count,
                    sparse=sparse,
                    term_spans=term_spans(chunk_terms, offset=chunk.char_start),
                    # Where context assembly may trim a passage without a second Kiwi pass.
                    sentence_starts=[
                        start - chunk.char_start
                        for start in sentence_starts[
                            bisect_left(sentence_starts, chunk.char_start + 1) : bisect_left(
                                sentence_starts, chunk.char_end
                            )
                        ]
                    ],
                )
            )
        offset += len(section.text) + len(SECTION_SEPARATOR)
    text = SECTION_SEPARATOR.join(sec.text for sec in sections)
    return text, rows


def _line_spans(text: str) -> list[tuple[int, int]]:
    """(start, end) of each line of text, the chunker's cut points for a table's rows."""
    spans = []
    start = 0
    for line in text.split("\n"):
        spans.append((start, start + len(line)))
        start += len(line) + 1
    return spans


# How often a generation is written again when a reindex switched its collection to a new index
# between the write of its points and their publication (a switch takes seconds; more is a bug).
MOVED_RETRIES = 3


def embed_documents(
    items: Sequence[WorkItem], *, engine: Engine, models: CollectionEncoders, index: VectorIndex
) -> None:
    """Run the GPU stage for several prepared generations at once (one encode call fills the GPU),
    each document embedded by the model its collection records (`models`)."""
    for _ in range(MOVED_RETRIES):
        items = _embed_once(items, engine=engine, models=models, index=index)
        if not items:
            return
    raise RuntimeError(f"the index of {len(items)} documents kept switching while they were embedded")


def _embed_once(
    items: Sequence[WorkItem], *, engine: Engine, models: CollectionEncoders, index: VectorIndex
) -> list[WorkItem]:
    """One pass of the embed stage; the generations to write again (their collection's index moved)."""
    if not items:
        return []
    batch = lifecycle.read_for_embedding(engine, items)
    if not batch.documents:
        return []
    started = time.monotonic()
    encoders = {doc_id: models.encoder(_recorded(doc)) for doc_id, doc in batch.documents.items()}
    vectors: list[Any] = [None] * len(batch.chunks)
    with timed(INGEST_STAGE_SECONDS, "embed"):
        # One encode call per model (almost always one: two only while a collection changes model).
        for encoder in {id(e): e for e in encoders.values()}.values():
            positions = [i for i, chunk in enumerate(batch.chunks) if encoders[chunk.document_id] is encoder]
            if positions:
                encoded = encoder.encode_documents([batch.chunks[i].text for i in positions])
                for i, vector in zip(positions, encoded):
                    vectors[i] = vector
    # Where to write is read after encoding, which can take minutes: a reindex may have switched
    # the collection to a new index meanwhile (and be about to drop the old one).
    addresses = lifecycle.index_addresses(engine, list(batch.documents))
    names = {doc_id: name for doc_id, (name, _) in addresses.items()}
    points: dict[str, list[IndexPoint]] = {}  # per Qdrant collection: one upsert (one flush) for the batch
    for chunk, vector in zip(batch.chunks, vectors):
        document = batch.documents[chunk.document_id]
        points.setdefault(names[chunk.document_id], []).append(
            IndexPoint(
                id=str(chunk.id),
                dense=vector,
                sparse=chunk.sparse,
                payload=chunk_payload(chunk, external_id=document.external_id, metadata=document.metadata),
            )
        )
    dims = {names[doc_id]: encoder.dim for doc_id, encoder in encoders.items() if doc_id in names}
    with timed(INGEST_STAGE_SECONDS, "upsert"):
        for name, dim in dims.items():
            index.ensure_collection(name, dim=dim)
            if points.get(name):
                index.upsert(name, points[name])
    versions = {doc_id: version for doc_id, (_, version) in addresses.items()}
    with timed(INGEST_STAGE_SECONDS, "publish"):
        moved = _publish(
            [item for item in items if item.document_id in names],
            names,
            engine=engine,
            index=index,
            versions=versions,
            duration_s=time.monotonic() - started,
        )
    INGEST_CHUNKS.labels("embed").inc(len(batch.chunks))
    return moved


def _recorded(document: Any) -> RecordedModel:
    return RecordedModel(document.collection, document.profile, document.model, document.model_sha256)


def chunk_payload(chunk: Any, *, external_id: str | None, metadata: dict | None) -> dict[str, Any]:
    """A chunk's point payload (what filters match on): `chunk` has document_id, generation,
    ordinal and page; metadata is its document's, as published with that generation."""
    return {
        "document_id": str(chunk.document_id),
        "external_id": external_id,
        "generation": chunk.generation,
        "ordinal": chunk.ordinal,
        "page": chunk.page,
        "metadata": storable_metadata(metadata or {}),
    }


def _publish(
    items: Sequence[WorkItem],
    names: dict[uuid.UUID, str],
    *,
    engine: Engine,
    index: VectorIndex,
    versions: dict[uuid.UUID, int] | None = None,
    duration_s: float | None = None,
) -> list[WorkItem]:
    """Make the generations searchable, then delete the points that publication made dead; the
    generations whose collection switched index meanwhile (to be written again). `duration_s`:
    how long embedding took (for the document event lines)."""
    publication = lifecycle.publish(engine, items, names, index_versions=versions, duration_s=duration_s)
    for stale in publication.stale:
        index.delete_document(
            stale.index_name,
            str(stale.document_id),
            generation=stale.generation,
            below_generation=stale.below_generation,
        )
    return publication.moved


def embed_each_on_failure(
    items: Sequence[WorkItem], *, engine: Engine, models: CollectionEncoders, index: VectorIndex
) -> list[tuple[WorkItem, Exception]]:
    """:func:`embed_documents` for the batch; if that fails, each document on its own, so that a
    document the index or the model cannot take fails alone instead of failing the batch.

    Returns the documents that failed on their own, with their errors (the caller marks them
    failed). Raises when the batch is one document or every document fails: then the fault is
    likely the service's (database, index, model), and the caller retries or fails them all.
    """
    stage = dict(engine=engine, models=models, index=index)
    try:
        embed_documents(items, **stage)  # type: ignore[arg-type]
        return []
    except Exception as exc:
        if len(items) <= 1:
            raise
        log.warning("embedding a batch of %d documents failed (%r); embedding them one by one", len(items), exc)
    failures: list[tuple[WorkItem, Exception]] = []
    for item in items:
        try:
            embed_documents([item], **stage)  # type: ignore[arg-type]
        except Exception as exc:
            log.exception("embedding failed for %s", item)
            failures.append((item, exc))
    if len(failures) == len(items):
        raise failures[0][1]
    return failures


def embed_claimed(
    batch: EmbedBatch, *, engine: Engine, models: CollectionEncoders, index: VectorIndex, lease: Lease
) -> None:
    """The embed stage for a batch claimed under `lease` (renewed while it works); a document that
    fails on its own is marked failed, a failure of the whole batch is raised."""
    with Heartbeat(engine, lease, batch.items):
        failures = embed_each_on_failure(batch.items, engine=engine, models=models, index=index)
    for item, exc in failures:
        lifecycle.fail(engine, item, f"internal error while embedding: {exc!r}")


def prepare_or_fail(
    item: WorkItem,
    *,
    engine: Engine,
    analyzer: KoreanAnalyzer,
    chunking: ChunkPolicies,
    extract_limits: ExtractLimits,
    lease: Lease,
) -> bool:
    """:func:`prepare_document` in this process, an unexpected error recorded as the document's
    failure instead of raised; whether chunks were written."""
    try:
        return (
            prepare_document(
                item, engine=engine, analyzer=analyzer, chunking=chunking, extract_limits=extract_limits, lease=lease
            )
            is not None
        )
    except Exception as exc:  # an unexpected bug must not stop the queue; its reason is kept
        log.exception("prepare failed for %s", item)
        lifecycle.fail(engine, item, f"internal error while preparing: {exc!r}")
        return False


def process_now(
    items: Sequence[WorkItem],
    *,
    engine: Engine,
    analyzer: KoreanAnalyzer,
    chunking: ChunkPolicies,
    extract_limits: ExtractLimits,
    models: CollectionEncoders,
    index: VectorIndex,
    lease: Lease,
) -> None:
    """Both stages in this process (the CLI, evaluation); failures are recorded, never raised."""
    stage = dict(engine=engine, analyzer=analyzer, chunking=chunking, extract_limits=extract_limits, lease=lease)
    prepared = [item for item in items if prepare_or_fail(item, **stage)]  # type: ignore[arg-type]
    if not prepared:
        return
    failures: list[tuple[WorkItem, Exception]]
    try:
        failures = embed_each_on_failure(prepared, engine=engine, models=models, index=index)
    except Exception as exc:
        log.exception("embedding failed for %s", prepared)
        failures = [(item, exc) for item in prepared]
    for item, error in failures:
        lifecycle.fail(engine, item, f"internal error while embedding: {error!r}")
