"""Every write of documents and chunks, as the named steps of a document's life.

    store ─▶ claim ─▶ (report_stage) ─▶ store_chunks ─▶ claim_embed_batch ─▶ publish
                 ╰──────────────── fail / fail_claim ◀───────────────╯         cancel (any time)

A generation (document id, generation number) is the unit of work: an upload stores a new one,
and every later step writes only while that generation is still the document's latest, so a
replaced or deleted document's late workers change nothing. `store` and `cancel` run inside the
caller's session (the request's transaction); the worker steps take the engine and each runs its
own short transaction on plain Core statements (ORM objects cost more CPU there than the SQL).
"""

from __future__ import annotations

import hashlib
import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Engine, Row, Table, delete, func, insert, or_, select, tuple_, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from services.collections.model import ModelRef
from services.documents.models import (
    Chunk,
    Collection,
    Document,
    DocumentSource,
    DocumentStage,
    DocumentStatus,
    collection_index_name,
    index_name,
    utcnow,
)
from services.documents.service import (
    get_document,
    model_mismatch,
    nfc,
    profile_mismatch,
    validate_collection_name,
    validate_metadata,
)
from services.errors import Conflict, InvalidInput
from services.index.base import VectorIndex

log = logging.getLogger(__name__)

_documents: Table = Document.__table__  # type: ignore[assignment]
_sources: Table = DocumentSource.__table__  # type: ignore[assignment]
_chunks: Table = Chunk.__table__  # type: ignore[assignment]
_collections: Table = Collection.__table__  # type: ignore[assignment]
# A generation whose chunk rows are written and whose embed stage has not finished.
_WAITING_FOR_EMBED = (_documents.c.status == DocumentStatus.processing, _documents.c.stage == DocumentStage.embedding)


@dataclass(frozen=True)
class WorkItem:
    """One generation of one document: what the stages and the queues pass around."""

    document_id: uuid.UUID
    generation: int


# --- store and cancel: in the request's session ----------------------------------------------


@dataclass(frozen=True)
class Upload:
    """One document as received: its bytes and what the client said about it."""

    data: bytes
    filename: str | None = None
    media_type: str | None = None  # known (JSON text) or detected at upload; None: the worker detects it
    external_id: str | None = None
    title: str | None = None
    metadata: dict[str, Any] | None = None

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()


@dataclass(frozen=True)
class Stored:
    document: Document
    created: bool  # False: the same content was already there, nothing to do
    generation: int

    @property
    def item(self) -> WorkItem:
        return WorkItem(self.document.id, self.generation)


def store(
    session: Session, *, collection_name: str, profile: str, upload: Upload, model: ModelRef | None = None
) -> Stored:
    """Store an upload: a new document, the existing one (same content), or a new generation (same external_id).

    With `model` (the service's embedding model), a new collection records it and an existing one
    embedded by other weights refuses the upload (Conflict).
    """
    if not upload.data:
        raise InvalidInput("the document is empty", code="empty_document")
    # Names are compared as NFC, the form the text is indexed in: a macOS client sends 서울 decomposed.
    upload = replace(
        upload, external_id=nfc(upload.external_id), title=nfc(upload.title), filename=nfc(upload.filename)
    )
    metadata = validate_metadata(upload.metadata or {})
    collection = _get_or_create_collection(session, name=collection_name, profile=profile, model=model)
    if collection.profile != profile:
        raise profile_mismatch(collection.name, collection.profile, profile)
    _check_model(collection, model)
    sha = upload.sha256

    if upload.external_id is not None:
        existing = session.scalar(
            select(Document).where(Document.collection_id == collection.id, Document.external_id == upload.external_id)
        )
    else:
        existing = session.scalar(
            select(Document)
            .where(Document.collection_id == collection.id, Document.sha256 == sha, Document.external_id.is_(None))
            .limit(1)
        )

    if (
        existing is not None
        and existing.sha256 == sha
        and existing.status != DocumentStatus.failed
        and _same_title(existing, upload)
        and (existing.metadata_ or {}) == metadata
    ):
        return Stored(existing, created=False, generation=existing.generation)

    if existing is not None:
        # A replacement (new content, title or metadata; or a retry of a failed document): the old
        # generation stays searchable until the new one is indexed. The generation is counted up in
        # SQL, which waits for a concurrent upload's row lock: each upload gets its own number.
        existing.generation = session.execute(
            update(Document)
            .where(Document.id == existing.id)
            .values(generation=Document.generation + 1)
            .returning(Document.generation)
        ).scalar_one()
        _reset_for_generation(existing, upload, sha, metadata)
        document = existing
    else:
        now = utcnow()
        document = Document(
            collection_id=collection.id,
            collection=collection,
            external_id=upload.external_id,
            generation=1,
            created_at=now,
        )
        _reset_for_generation(document, upload, sha, metadata, now=now)
        session.add(document)
    try:
        session.flush()
    except IntegrityError:
        raise Conflict(
            f"document with external_id {upload.external_id!r} is being uploaded concurrently; retry",
            code="concurrent_upload",
        ) from None

    source = session.get(DocumentSource, document.id)
    if source is None:
        session.add(
            DocumentSource(
                document_id=document.id, generation=document.generation, data=upload.data, size=len(upload.data)
            )
        )
    else:
        source.generation, source.data, source.size = document.generation, upload.data, len(upload.data)
    session.flush()
    return Stored(document, created=True, generation=document.generation)


def _check_model(collection: Collection, model: ModelRef | None) -> None:
    """Refuse uploads into a collection being deleted, or embedded by other model weights; a
    collection that has no weights hash yet (created before they were recorded) takes this one's."""
    if collection.deleting_at is not None:
        raise Conflict(f"collection {collection.name!r} is being deleted", code="collection_deleting")
    if model is None or model.sha256 is None:
        return
    if collection.model_sha256 is None:
        collection.model, collection.model_sha256 = model.name, model.sha256
    elif collection.model_sha256 != model.sha256:
        raise model_mismatch(collection.name, collection.model_sha256, model.sha256)


def _get_or_create_collection(
    session: Session, *, name: str, profile: str, model: ModelRef | None = None
) -> Collection:
    """The collection called `name`, created with `profile` (and `model`) on first use."""
    validate_collection_name(name)
    collection = session.scalar(select(Collection).where(Collection.name == name))
    if collection is not None:
        return collection
    # Index names spell '-' as '_' (collection_index_name): a-b and a_b would share one index.
    twin = session.scalar(
        select(Collection.name).where(func.replace(Collection.name, "-", "_") == name.replace("-", "_"))
    )
    if twin is not None:
        raise Conflict(
            f"collection name {name!r} is too close to the existing collection {twin!r}: names that "
            "differ only in '-' and '_' are not allowed",
            code="collection_name_conflict",
        )
    try:
        with session.begin_nested():
            collection = Collection(
                name=name,
                profile=profile,
                model=model.name if model else None,
                model_sha256=model.sha256 if model else None,
            )
            session.add(collection)
    except IntegrityError:  # created concurrently by another request
        collection = session.scalars(select(Collection).where(Collection.name == name)).one()
    return collection


def _title(upload: Upload) -> str | None:
    return upload.title or upload.filename or None


def _same_title(existing: Document, upload: Upload) -> bool:
    """An upload without a title keeps the title the pipeline found in the same content."""
    return existing.title == _title(upload) or (not upload.title and existing.filename == upload.filename)


def _reset_for_generation(
    document: Document, upload: Upload, sha: str, metadata: dict, now: datetime | None = None
) -> None:
    document.sha256 = sha
    document.text_sha256 = None
    document.title = _title(upload)
    document.filename = upload.filename
    document.media_type = upload.media_type
    document.metadata_ = metadata
    document.status = DocumentStatus.queued
    document.stage = None
    document.error = None
    document.chunk_count = 0
    document.embedded_count = 0
    document.char_count = None
    document.updated_at = now or utcnow()


def cancel(session: Session, *, index: VectorIndex, collection_name: str, document_id: uuid.UUID) -> None:
    """Delete a document: its points from the index, then its rows (chunks and source cascade).

    A worker still busy with it finds no row to write to; publication then removes what it upserted.
    """
    document = get_document(session, collection_name=collection_name, document_id=document_id)
    name = index_name(document.collection)
    if index.collection_exists(name):
        index.delete_document(name, str(document.id))
    session.execute(delete(Document).where(Document.id == document.id))


# --- the worker steps: each its own transaction on the engine ---------------------------------


def _update_generation(item: WorkItem, **values: Any):
    """UPDATE of the document row while `item` is still its generation (no row otherwise)."""
    d = _documents.c
    return (
        update(_documents)
        .where(d.id == item.document_id, d.generation == item.generation)
        .values(updated_at=utcnow(), **values)
    )


@dataclass(frozen=True)
class Claimed:
    """What the prepare stage reads of a claimed generation: the upload as stored."""

    filename: str | None
    media_type: str | None
    data: bytes
    title: str | None  # as stored at upload: the client's, or the file name


def claim(engine: Engine, item: WorkItem) -> Claimed | None:
    """queued → processing (extracting), returning the uploaded bytes in the same statement;
    None when the generation was deleted or replaced since it was queued."""
    source = _sources.c
    uploaded = (
        select(source.data)
        .where(source.document_id == item.document_id, source.generation == item.generation)
        .scalar_subquery()
    )
    with engine.begin() as conn:
        row = conn.execute(
            _update_generation(
                item, status=DocumentStatus.processing, stage=DocumentStage.extracting, error=None
            ).returning(_documents.c.filename, _documents.c.media_type, uploaded, _documents.c.title)
        ).first()
        if row is None or row[2] is None:
            conn.rollback()
            return None
    return Claimed(filename=row[0], media_type=row[1], data=row[2], title=row[3])


def report_stage(engine: Engine, item: WorkItem, stage: DocumentStage) -> None:
    """Show pollers where a long-running generation is."""
    with engine.begin() as conn:
        conn.execute(_update_generation(item, stage=stage))


def store_chunks(
    engine: Engine,
    item: WorkItem,
    *,
    rows: Sequence[dict[str, Any]],
    text: str,
    media_type: str,
    title: str | None = None,
) -> bool:
    """The chunk rows of a prepared generation, which then waits for the embed stage; False when
    the generation was deleted or replaced meanwhile (nothing is written). `title`: the one found
    in the document, to replace a stored title that was only the file name."""
    with engine.begin() as conn:
        written = conn.execute(
            _update_generation(
                item,
                **({"title": title} if title else {}),
                chunk_count=len(rows),
                embedded_count=0,
                char_count=len(text),
                text_sha256=hashlib.sha256(text.encode()).hexdigest(),
                stage=DocumentStage.embedding,
                media_type=media_type,
                embed_claim=None,
                embed_claimed_until=None,
            )
        )
        if written.rowcount == 0:
            conn.rollback()
            return False
        # A redelivered task replaces what an interrupted one wrote for this generation.
        conn.execute(
            delete(_chunks).where(_chunks.c.document_id == item.document_id, _chunks.c.generation == item.generation)
        )
        if rows:
            conn.execute(insert(_chunks), list(rows))
    return True


def fail(engine: Engine, item: WorkItem, reason: str) -> None:
    """Record why a generation failed; an older indexed generation stays searchable."""
    log.warning("document %s generation %s failed: %s", item.document_id, item.generation, reason)
    with engine.begin() as conn:
        conn.execute(
            _update_generation(
                item,
                status=DocumentStatus.failed,
                error=reason[:2000],
                stage=None,
                embed_claim=None,
                embed_claimed_until=None,
            )
        )


@dataclass(frozen=True)
class EmbedBatch:
    items: list[WorkItem]
    more_waiting: bool  # the limits left claimable generations behind


def claim_embed_batch(
    engine: Engine, *, claim: str, lease_s: float, max_chunks: int = 2048, max_documents: int = 64
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
    claimable = (
        *_WAITING_FOR_EMBED,
        or_(d.embed_claim.is_(None), d.embed_claim == claim, d.embed_claimed_until < now),
    )
    with engine.begin() as conn:
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


def fail_claim(engine: Engine, claim: str, reason: str) -> int:
    """Fail every generation still waiting in the batch `claim` took (its task gave up); how many.

    Without this they would wait, claimed, until the lease ends and a later task takes them
    (only to fail the same way, if the batch itself is the cause). The task only gives up when
    every document failed on its own too (pipeline.embed_each_on_failure).
    """
    d = _documents.c
    log.warning("embed batch %s failed: %s", claim, reason)
    with engine.begin() as conn:
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


@dataclass(frozen=True)
class EmbedInput:
    """What the embed stage reads of the generations waiting for it."""

    documents: dict[uuid.UUID, Row]  # id → (id, generation, external_id, metadata, collection, profile, index_name)
    chunks: list[Row]  # (id, document_id, generation, ordinal, page, text, sparse), in document order

    def index_name(self, document_id: uuid.UUID) -> str:
        doc = self.documents[document_id]
        return collection_index_name(doc.collection, doc.profile)


def read_for_embedding(engine: Engine, items: Sequence[WorkItem], *, profile: str) -> EmbedInput:
    """The documents of `items` still waiting at that generation, and their chunk rows.

    Conflict when one belongs to a collection of another profile than this worker's model.
    """
    d, c, coll = _documents.c, _chunks.c, _collections.c
    wanted = {item.document_id: item.generation for item in items}
    with engine.connect() as conn:
        documents = {
            row.id: row
            for row in conn.execute(
                select(d.id, d.generation, d.external_id, d["metadata"], coll.name.label("collection"), coll.profile)
                .join_from(_documents, _collections, d.collection_id == coll.id)
                .where(d.id.in_(wanted), d.stage == DocumentStage.embedding)
            )
            if wanted[row.id] == row.generation
        }
        for doc in documents.values():  # queued by a service running another profile than this worker
            if doc.profile != profile:
                raise profile_mismatch(doc.collection, doc.profile, profile)
        chunks = (
            [
                row
                for row in conn.execute(
                    select(c.id, c.document_id, c.generation, c.ordinal, c.page, c.text, c.sparse)
                    .where(c.document_id.in_(documents))
                    .order_by(c.document_id, c.ordinal)
                )
                if row.generation == documents[row.document_id].generation
            ]
            if documents
            else []
        )
    return EmbedInput(documents, chunks)


@dataclass(frozen=True)
class StalePoints:
    """Points of a document that publication made dead: all of them, one generation's, or those below one."""

    index_name: str
    document_id: uuid.UUID
    generation: int | None = None
    below_generation: int | None = None


def publish(engine: Engine, items: Sequence[WorkItem], index_names: dict[uuid.UUID, str]) -> list[StalePoints]:
    """Make each item the searchable generation and drop earlier generations' chunk rows; the
    points the caller must now delete from the index.

    Only what is certainly dead: older generations below the published one, or a late worker's
    own generation, so a newer generation another worker is writing keeps its points.
    """
    if not items:
        return []
    d, c = _documents.c, _chunks.c
    now = utcnow()
    stale: list[StalePoints] = []
    with engine.begin() as conn:
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
        for item in items:
            # Only replacements and retries have older rows and points.
            if item.document_id in published and item.generation > 1:
                conn.execute(delete(_chunks).where(c.document_id == item.document_id, c.generation < item.generation))
                stale.append(
                    StalePoints(index_names[item.document_id], item.document_id, below_generation=item.generation)
                )
        gone = [item for item in items if item.document_id not in published]
        if gone:
            # Deleted or replaced while we embedded: our points must not linger.
            indexed = dict(
                conn.execute(select(d.id, d.indexed_generation).where(d.id.in_([i.document_id for i in gone]))).all()
            )
            for item in gone:
                if item.document_id not in indexed:  # deleted: whatever is left of it goes
                    stale.append(StalePoints(index_names[item.document_id], item.document_id))
                elif indexed[item.document_id] != item.generation:  # replaced (unless another worker published it)
                    conn.execute(
                        delete(_chunks).where(c.document_id == item.document_id, c.generation == item.generation)
                    )
                    stale.append(
                        StalePoints(index_names[item.document_id], item.document_id, generation=item.generation)
                    )
    return stale


def pending(engine: Engine) -> list[WorkItem]:
    """Generations that were queued or in progress when the process stopped (embedded recovery)."""
    d = _documents.c
    with engine.connect() as conn:
        rows = conn.execute(
            select(d.id, d.generation)
            .where(d.status.in_([DocumentStatus.queued, DocumentStatus.processing]))
            .order_by(d.created_at)
        )
        return [WorkItem(doc_id, gen) for doc_id, gen in rows]
