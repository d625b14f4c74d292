"""Every write of documents and chunks, as the named steps of a document's life.

    store ─▶ claim ─▶ (report_stage) ─▶ store_chunks ─▶ claim_embed_batch ─▶ publish
                 ╰──────────────── fail / fail_claim ◀───────────────╯         cancel (any time)
    renew (a claimed stage's heartbeat) · reap (expired leases, lost messages) · redispatch_if_stale

A generation (document id, generation number) is the unit of work: an upload stores a new one,
and every later step writes only while that generation is still the document's latest, so a
replaced or deleted document's late workers change nothing. `store` and `cancel` run inside the
caller's session (the request's transaction); the worker steps take the engine and each runs its
own short transaction on plain Core statements (ORM objects cost more CPU there than the SQL).

Both claimed stages hold a lease (lease_owner, lease_until): a claim takes it, the worker renews it
while it works, and a claim of a stage whose lease has expired takes the document over, counting
one more attempt. A message delivered twice (a broker redelivering an unacked task, or the reaper's
second message for a document whose first was only slow) finds the lease live and does nothing.
"""

from __future__ import annotations

import hashlib
import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    Connection,
    Engine,
    Row,
    Table,
    and_,
    bindparam,
    delete,
    func,
    insert,
    or_,
    select,
    tuple_,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from services.collections.model import ModelRef, RecordedModel
from services.documents.models import (
    Chunk,
    Collection,
    Document,
    DocumentSource,
    DocumentStage,
    DocumentStatus,
    collection_index_name,
    index_name,
    live_layout,
    utcnow,
)
from services.documents.service import (
    clean_text,
    get_document,
    model_mismatch,
    profile_mismatch,
    validate_collection_name,
    validate_metadata,
)
from services.errors import ConcurrentWrite, Conflict, InvalidInput
from services.index.base import VectorIndex
from services.ingest.analyzer import analyzer_version
from services.observability.metrics import INGEST_DOCUMENTS

log = logging.getLogger(__name__)
# One line per state change of a document generation (services/observability/logs.py formats the fields).
events = logging.getLogger("saekin.documents")

_documents: Table = Document.__table__  # type: ignore[assignment]
_sources: Table = DocumentSource.__table__  # type: ignore[assignment]
_chunks: Table = Chunk.__table__  # type: ignore[assignment]
_collections: Table = Collection.__table__  # type: ignore[assignment]
# A generation whose chunk rows are written and whose embed stage has not finished.
_WAITING_FOR_EMBED = (_documents.c.status == DocumentStatus.processing, _documents.c.stage == DocumentStage.embedding)
# The document's collection name, for the event lines of the worker steps (which know only ids).
_COLLECTION_NAME = select(_collections.c.name).where(_collections.c.id == _documents.c.collection_id).scalar_subquery()


def _event(
    document_id: uuid.UUID,
    generation: int,
    collection: str | None,
    status: str,
    stage: str | None = None,
    *,
    duration_s: float | None = None,
    chunks: int | None = None,
    reason: str | None = None,
) -> None:
    """Log one state change: document id, collection, status and stage, the previous stage's
    duration where the caller measured it, chunk count, failure reason."""
    if status in (DocumentStatus.indexed, DocumentStatus.failed):
        INGEST_DOCUMENTS.labels(status).inc()
    level = logging.WARNING if status == DocumentStatus.failed else logging.INFO
    if not events.isEnabledFor(level):
        return
    events.log(
        level,
        "document %s %s%s",
        document_id,
        status,
        f" ({stage})" if stage else "",
        extra={
            "document_id": str(document_id),
            "generation": generation,
            "collection": collection,
            "status": str(status),
            "stage": stage,
            "duration_s": None if duration_s is None else round(duration_s, 3),
            "chunks": chunks,
            "reason": reason and reason[:500],
        },
    )


@dataclass(frozen=True)
class WorkItem:
    """One generation of one document: what the stages and the queues pass around."""

    document_id: uuid.UUID
    generation: int


@dataclass(frozen=True)
class Lease:
    """Who claims a stage (a Celery task id, or an embedded service's thread), for how long each
    renewal lasts, and how many claims of one stage a document gets before it fails."""

    owner: str
    seconds: float
    max_attempts: int

    def until(self, now: datetime) -> datetime:
        return now + timedelta(seconds=self.seconds)


# The prepare stage's steps, in the order a document shows them.
_PREPARING = (DocumentStage.extracting, DocumentStage.chunking)


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
    session: Session,
    *,
    collection_name: str,
    profile: str,
    upload: Upload,
    model: ModelRef | None = None,
    any_model: bool = False,
) -> Stored:
    """Store an upload: a new document, the existing one (same content), or a new generation (same external_id).

    With `model` (the service's embedding model), a new collection records it and an existing one
    embedded by another profile or other weights refuses the upload (Conflict), unless `any_model`:
    the embed stage embeds each collection with the model it records (ModelRegistry).
    """
    if not upload.data:
        raise InvalidInput("the document is empty", code="empty_document")
    # Names are compared as NFC, the form the text is indexed in: a macOS client sends 서울 decomposed.
    upload = replace(
        upload,
        external_id=clean_text(upload.external_id, "external_id"),
        title=clean_text(upload.title, "title"),
        filename=clean_text(upload.filename, "filename"),
    )
    metadata = validate_metadata(upload.metadata or {})
    collection = _get_or_create_collection(session, name=collection_name, profile=profile, model=model)
    # Another model's collection is embedded by its recorded model, when the workers serve it.
    elsewhere = any_model and collection.model is not None and (model is None or collection.model != model.name)
    if collection.profile != profile and not elsewhere:
        raise profile_mismatch(collection.name, collection.profile, profile)
    _check_model(collection, model, other_recorded_model=elsewhere)
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
        # The same external_id, or the same content without one, was inserted by a concurrent
        # upload (the unique constraints): intake retries the transaction, which finds that row.
        what = f"external_id {upload.external_id!r}" if upload.external_id is not None else "this content"
        raise ConcurrentWrite(
            f"a document with {what} is being uploaded concurrently; retry", code="concurrent_upload"
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
    _event(document.id, document.generation, collection.name, DocumentStatus.queued.value)
    return Stored(document, created=True, generation=document.generation)


def _check_model(collection: Collection, model: ModelRef | None, *, other_recorded_model: bool = False) -> None:
    """Refuse uploads into a collection being deleted, or embedded by other model weights (unless
    it records another model, which embeds it); a collection that has no weights hash yet
    (created before they were recorded) takes this one's."""
    if collection.deleting_at is not None:
        raise Conflict(f"collection {collection.name!r} is being deleted", code="collection_deleting")
    if model is None or model.sha256 is None:
        return
    if collection.model_sha256 is None:
        collection.model, collection.model_sha256 = model.name, model.sha256
    elif collection.model_sha256 != model.sha256 and not other_recorded_model:
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
    if twin == name:  # committed by a concurrent upload since the first look
        return session.scalars(select(Collection).where(Collection.name == name)).one()
    if twin is not None:
        raise Conflict(
            f"collection name {name!r} is too close to the existing collection {twin!r}: names that "
            "differ only in '-' and '_' are not allowed",
            code="collection_name_conflict",
        )
    collection = Collection(
        name=name,
        profile=profile,
        model=model.name if model else None,
        model_sha256=model.sha256 if model else None,
        index_name=collection_index_name(name, profile),
        index_version=1,
        analyzer_version=analyzer_version(),
    )
    session.add(collection)
    try:
        session.flush()
    except IntegrityError:  # created concurrently: intake retries the transaction, which finds it
        raise ConcurrentWrite(f"collection {name!r} is being created concurrently; retry") from None
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
    document.attempts = 0
    document.lease_owner = None
    document.lease_until = None
    document.updated_at = now or utcnow()


def cancel(session: Session, *, index: VectorIndex, collection_name: str, document_id: uuid.UUID) -> None:
    """Delete a document: its points from the index, then its rows (chunks and source cascade).

    A worker still busy with it finds no row to write to; publication then removes what it upserted.
    """
    document = get_document(session, collection_name=collection_name, document_id=document_id)
    # A reindex being built copies only documents that exist; this one may be copied already.
    for name in (index_name(document.collection), reindex_target(document.collection)):
        if name is not None and index.collection_exists(name):
            index.delete_document(name, str(document.id))
    session.execute(delete(Document).where(Document.id == document.id))
    _event(document.id, document.generation, collection_name, "deleted")


def reindex_target(collection: Collection) -> str | None:
    """The index a running reindex of `collection` is building, if any."""
    state = collection.reindex or {}
    return state.get("target_index") if state.get("status") in REINDEX_RUNNING else None


# Reindex states while the new index is written (services/collections/reindex.py).
REINDEX_RUNNING = ("building", "switching")


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
    model: RecordedModel  # the model the collection records: its tokenizer and budget chunk the text
    chunk_layout: int = 0  # the collection's live chunk layout, which the rows are written under


def _abandoned(stage: str, attempts: int) -> str:
    return (
        f"gave up after {attempts} attempts at the {stage} stage: each time, the worker holding it stopped "
        "renewing its lease before finishing (killed, out of memory, or its task was retried)"
    )


def claim(engine: Engine, item: WorkItem, lease: Lease) -> Claimed | None:
    """queued → processing (extracting) under `lease`, returning the uploaded bytes in the same
    statement; None when there is nothing to do for this claimer.

    The prepare stage can be claimed while queued, or while processing if its lease has expired
    (a dead worker's) or belongs to `lease.owner` already (a task redelivered after its process
    died). A generation deleted, replaced, taken by a live worker or done gives None; one that
    has used its attempts fails instead.
    """
    d, source = _documents.c, _sources.c
    now = utcnow()
    uploaded = (
        select(source.data)
        .where(source.document_id == item.document_id, source.generation == item.generation)
        .scalar_subquery()
    )
    claimable = or_(
        d.status == DocumentStatus.queued,
        and_(
            d.status == DocumentStatus.processing,
            d.stage.in_(_PREPARING),
            or_(d.lease_owner.is_(None), d.lease_owner == lease.owner, d.lease_until < now),
        ),
    )
    with engine.begin() as conn:
        row = conn.execute(
            update(_documents)
            .where(
                d.id == item.document_id, d.generation == item.generation, claimable, d.attempts < lease.max_attempts
            )
            .values(
                status=DocumentStatus.processing,
                stage=DocumentStage.extracting,
                error=None,
                lease_owner=lease.owner,
                lease_until=lease.until(now),
                attempts=d.attempts + 1,
                updated_at=now,
            )
            .returning(d.filename, d.media_type, uploaded, d.title, _COLLECTION_NAME)
        ).first()
        if row is None:
            attempts = conn.scalar(
                select(d.attempts).where(d.id == item.document_id, d.generation == item.generation, claimable)
            )
            if attempts is not None:  # claimable but out of attempts
                conn.execute(
                    _update_generation(
                        item,
                        status=DocumentStatus.failed,
                        error=_abandoned("prepare", attempts),
                        stage=None,
                        lease_owner=None,
                        lease_until=None,
                    )
                )
                _event(
                    item.document_id,
                    item.generation,
                    None,
                    DocumentStatus.failed.value,
                    reason=_abandoned("prepare", attempts),
                )
            return None
        if row[2] is None:
            conn.rollback()
            return None
    _event(item.document_id, item.generation, row[4], DocumentStatus.processing.value, DocumentStage.extracting.value)
    coll = _collections.c
    with engine.connect() as conn:
        collection = conn.execute(
            select(coll.name, coll.profile, coll.model, coll.model_sha256, coll.chunk_layout)
            .join_from(_documents, _collections, d.collection_id == coll.id)
            .where(d.id == item.document_id)
        ).one()
    return Claimed(
        filename=row[0],
        media_type=row[1],
        data=row[2],
        title=row[3],
        model=RecordedModel(collection.name, collection.profile, collection.model, collection.model_sha256),
        chunk_layout=collection.chunk_layout,
    )


def renew(engine: Engine, lease: Lease, items: Sequence[WorkItem]) -> int:
    """Extend `lease` on those of `items` it still holds (a working stage's heartbeat); how many.

    Fewer than asked means a document was taken over, replaced or deleted meanwhile."""
    if not items:
        return 0
    d = _documents.c
    with engine.begin() as conn:
        return conn.execute(
            update(_documents)
            .where(
                tuple_(d.id, d.generation).in_([(i.document_id, i.generation) for i in items]),
                d.lease_owner == lease.owner,
                d.status == DocumentStatus.processing,
            )
            # updated_at stays: the embed stage takes the oldest waiting documents first.
            .values(lease_until=lease.until(utcnow()), updated_at=d.updated_at)
        ).rowcount


def report_stage(engine: Engine, item: WorkItem, stage: DocumentStage, *, duration_s: float | None = None) -> None:
    """Show pollers where a long-running generation is; `duration_s`: how long the previous stage took."""
    with engine.begin() as conn:
        collection = conn.execute(_update_generation(item, stage=stage).returning(_COLLECTION_NAME)).scalar()
    _event(
        item.document_id,
        item.generation,
        collection,
        DocumentStatus.processing.value,
        stage.value,
        duration_s=duration_s,
    )


def store_chunks(
    engine: Engine,
    item: WorkItem,
    *,
    rows: Sequence[dict[str, Any]],
    text: str,
    media_type: str,
    title: str | None = None,
    lease: Lease | None = None,
    duration_s: float | None = None,
) -> bool:
    """The chunk rows of a prepared generation, which then waits for the embed stage; False when
    the generation was deleted or replaced meanwhile, or `lease` was taken over by another worker
    (nothing is written). `title`: the one found in the document, to replace a stored title that
    was only the file name; `duration_s`: how long preparing took (for the event line)."""
    held = (_documents.c.lease_owner == lease.owner,) if lease is not None else ()
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
                lease_owner=None,
                lease_until=None,
                attempts=0,  # the embed stage counts its own
            )
            .where(*held)
            .returning(_COLLECTION_NAME)
        ).first()
        if written is None:
            conn.rollback()
            return False
        # A redelivered task replaces what an interrupted one wrote for this generation.
        conn.execute(
            delete(_chunks).where(_chunks.c.document_id == item.document_id, _chunks.c.generation == item.generation)
        )
        if rows:
            conn.execute(insert(_chunks), list(rows))
    _event(
        item.document_id,
        item.generation,
        written[0],
        DocumentStatus.processing.value,
        DocumentStage.embedding.value,
        duration_s=duration_s,
        chunks=len(rows),
    )
    return True


def fail(engine: Engine, item: WorkItem, reason: str, *, duration_s: float | None = None) -> None:
    """Record why a generation failed; an older indexed generation stays searchable."""
    with engine.begin() as conn:
        row = conn.execute(
            _update_generation(
                item,
                status=DocumentStatus.failed,
                error=reason[:2000],
                stage=None,
                lease_owner=None,
                lease_until=None,
            ).returning(_COLLECTION_NAME)
        ).first()
    if row is None:  # deleted or replaced meanwhile: nothing changed, but the reason is worth a line
        log.warning(
            "document %s generation %s failed (no longer current): %s", item.document_id, item.generation, reason
        )
        return
    _event(item.document_id, item.generation, row[0], DocumentStatus.failed.value, duration_s=duration_s, reason=reason)


@dataclass(frozen=True)
class EmbedBatch:
    items: list[WorkItem]
    more_waiting: bool  # the limits left claimable generations behind


def claim_embed_batch(engine: Engine, *, lease: Lease, max_chunks: int = 2048, max_documents: int = 64) -> EmbedBatch:
    """The oldest generations waiting for the embed stage, up to `max_chunks` chunks, claimed under `lease`.

    One embed task takes many documents so that small ones fill the GPU's batches as well as
    one large one; a document larger than `max_chunks` goes alone. The lease keeps other embed
    workers (one per GPU) from taking the same documents while its owner renews it. The owner is
    the Celery task id: a task redelivered after its worker died, or retried after an error, has
    the same id and takes its batch back at once; the documents of a lease that nobody renews are
    free again when it expires. Each claim counts an attempt; a document out of attempts is left
    for the reaper, which fails it.
    """
    d = _documents.c
    now = utcnow()
    claimable = (
        *_WAITING_FOR_EMBED,
        or_(d.lease_owner.is_(None), d.lease_owner == lease.owner, d.lease_until < now),
        d.attempts < lease.max_attempts,
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
                    lease_owner=lease.owner,
                    lease_until=lease.until(now),
                    attempts=d.attempts + 1,
                    updated_at=d.updated_at,
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
        failed = conn.execute(
            update(_documents)
            .where(d.lease_owner == claim, *_WAITING_FOR_EMBED)
            .values(
                status=DocumentStatus.failed,
                error=reason[:2000],
                stage=None,
                lease_owner=None,
                lease_until=None,
                updated_at=utcnow(),
            )
            .returning(d.id, d.generation, _COLLECTION_NAME)
        ).all()
    for document_id, generation, collection in failed:
        _event(document_id, generation, collection, DocumentStatus.failed.value, reason=reason)
    return len(failed)


@dataclass(frozen=True)
class EmbedInput:
    """What the embed stage reads of the generations waiting for it."""

    documents: dict[
        uuid.UUID, Row
    ]  # id → (id, generation, external_id, metadata, collection, profile, model, model_sha256)
    chunks: list[Row]  # (id, document_id, generation, ordinal, page, text, sparse), in document order


def read_for_embedding(engine: Engine, items: Sequence[WorkItem]) -> EmbedInput:
    """The documents of `items` still waiting at that generation (with the model their collection
    records), and their chunk rows of the collection's live chunk layout. A generation chunked
    under a layout a reindex has since replaced is sent back to the prepare stage instead."""
    d, c, coll = _documents.c, _chunks.c, _collections.c
    wanted = {item.document_id: item.generation for item in items}
    with engine.connect() as conn:
        documents = {
            row.id: row
            for row in conn.execute(
                select(
                    d.id,
                    d.generation,
                    d.external_id,
                    d["metadata"],
                    coll.name.label("collection"),
                    coll.profile,
                    coll.model,
                    coll.model_sha256,
                    coll.chunk_layout,
                )
                .join_from(_documents, _collections, d.collection_id == coll.id)
                .where(d.id.in_(wanted), d.stage == DocumentStage.embedding)
            )
            if wanted[row.id] == row.generation
        }
        rows = (
            conn.execute(
                select(c.id, c.document_id, c.generation, c.layout, c.ordinal, c.page, c.text, c.sparse)
                .where(c.document_id.in_(documents))
                .order_by(c.document_id, c.ordinal)
            ).all()
            if documents
            else []
        )
    chunks: list[Row] = []
    live: set[uuid.UUID] = set()  # documents with rows of their collection's live layout
    other_layout: set[uuid.UUID] = set()
    for row in rows:
        document = documents[row.document_id]
        if row.generation != document.generation:
            continue
        if row.layout == document.chunk_layout:
            chunks.append(row)
            live.add(row.document_id)
        else:
            other_layout.add(row.document_id)
    rechunk = [WorkItem(i, documents[i].generation) for i in other_layout - live]
    if rechunk:
        requeue_for_prepare(engine, rechunk)
    for item in rechunk:
        del documents[item.document_id]
    return EmbedInput(documents, chunks)


def requeue_for_prepare(engine: Engine, items: Sequence[WorkItem]) -> None:
    """Send generations that wait for the embed stage back to the prepare stage: they were chunked
    under a layout that a re-chunking reindex replaced meanwhile. Queued with an old `updated_at`,
    so the reaper's next pass dispatches them."""
    d = _documents.c
    long_ago = utcnow() - timedelta(days=1)
    with engine.begin() as conn:
        for item in items:
            if conn.execute(
                update(_documents)
                .where(d.id == item.document_id, d.generation == item.generation, *_WAITING_FOR_EMBED)
                .values(
                    status=DocumentStatus.queued,
                    stage=None,
                    lease_owner=None,
                    lease_until=None,
                    attempts=0,
                    updated_at=long_ago,
                )
            ).rowcount:
                log.info(
                    "document %s generation %s: to be chunked again (its collection's chunk layout changed)",
                    item.document_id,
                    item.generation,
                )


def index_addresses(engine: Engine, document_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, tuple[str, int]]:
    """For each document that still exists: the index its collection's writes address now, and
    that index's build number (what :func:`publish` checks)."""
    d, coll = _documents.c, _collections.c
    with engine.connect() as conn:
        rows = conn.execute(
            select(d.id, coll.name, coll.profile, coll.index_name, coll.index_version)
            .join_from(_documents, _collections, d.collection_id == coll.id)
            .where(d.id.in_(document_ids))
        ).all()
    return {
        row.id: (row.index_name or collection_index_name(row.name, row.profile), int(row.index_version)) for row in rows
    }


@dataclass(frozen=True)
class StalePoints:
    """Points of a document that publication made dead: all of them, one generation's, or those below one."""

    index_name: str
    document_id: uuid.UUID
    generation: int | None = None
    below_generation: int | None = None


@dataclass(frozen=True)
class Publication:
    """What :func:`publish` did: the points that are now dead, and the generations it left waiting
    because their collection switched to a new index (a reindex) after their points were written."""

    stale: list[StalePoints]
    moved: list[WorkItem]


def publish(
    engine: Engine,
    items: Sequence[WorkItem],
    index_names: dict[uuid.UUID, str],
    *,
    index_versions: dict[uuid.UUID, int] | None = None,
    duration_s: float | None = None,
) -> Publication:
    """Make each item the searchable generation and drop earlier generations' chunk rows; the
    points the caller must now delete from the index. `duration_s`: how long embedding the batch
    took (for the event lines).

    Only what is certainly dead: older generations below the published one, or a late worker's
    own generation, so a newer generation another worker is writing keeps its points.

    With `index_versions` (the collection's index build each document's points were written to),
    a generation whose collection has switched to a newer build since is not published but left
    waiting (`moved`): its points went to the index the switch retired, and the caller writes
    them again. A reindex's switch and publication exclude each other on the collection row.
    """
    if not items:
        return Publication([], [])
    d, c, coll = _documents.c, _chunks.c, _collections.c
    now = utcnow()
    stale: list[StalePoints] = []
    moved: list[WorkItem] = []
    by_version: dict[int | None, list[WorkItem]] = {}
    for item in items:
        by_version.setdefault((index_versions or {}).get(item.document_id), []).append(item)
    with engine.begin() as conn:
        if index_versions:
            # PostgreSQL: wait for a switch in progress (it holds the row), and keep the next one
            # out until this commits. SQLite has one writer at a time anyway (no FOR SHARE there).
            conn.execute(
                select(coll.id)
                .where(coll.id.in_(select(d.collection_id).where(d.id.in_([i.document_id for i in items]))))
                .with_for_update(read=True)
            )
        published_rows: list[Any] = []
        for version, group in by_version.items():
            # One statement per index build (usually one); a generation deleted or replaced
            # meanwhile matches no row, nor one whose collection switched to another build.
            fence = (
                (d.collection_id.in_(select(coll.id).where(coll.index_version == version)),)
                if version is not None
                else ()
            )
            published_rows += conn.execute(
                update(_documents)
                .where(tuple_(d.id, d.generation).in_([(i.document_id, i.generation) for i in group]), *fence)
                .values(
                    status=DocumentStatus.indexed,
                    stage=DocumentStage.done,
                    error=None,
                    indexed_generation=d.generation,
                    indexed_title=d.title,
                    indexed_metadata=d["metadata"],
                    indexed_at=now,
                    updated_at=now,
                    lease_owner=None,
                    lease_until=None,
                    embedded_count=select(func.count())
                    .where(c.document_id == d.id, c.generation == d.generation, c.layout == live_layout())
                    .scalar_subquery(),
                )
                .returning(d.id, d.generation, d.embedded_count, _COLLECTION_NAME)
            ).all()
        published = {row[0] for row in published_rows}
        unpublished = [item for item in items if item.document_id not in published]
        if unpublished and index_versions:
            # Still the latest generation, waiting: refused by the fence alone.
            latest = set(
                conn.execute(
                    select(d.id, d.generation).where(
                        tuple_(d.id, d.generation).in_([(i.document_id, i.generation) for i in unpublished]),
                        *_WAITING_FOR_EMBED,
                    )
                ).all()
            )
            moved = [item for item in unpublished if (item.document_id, item.generation) in latest]
        for item in items:
            # Only replacements and retries have older rows and points.
            if item.document_id in published and item.generation > 1:
                conn.execute(delete(_chunks).where(c.document_id == item.document_id, c.generation < item.generation))
                stale.append(
                    StalePoints(index_names[item.document_id], item.document_id, below_generation=item.generation)
                )
        gone = [item for item in unpublished if item not in moved]
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
    for document_id, generation, chunks, collection in published_rows:
        _event(
            document_id,
            generation,
            collection,
            DocumentStatus.indexed.value,
            DocumentStage.done.value,
            duration_s=duration_s,
            chunks=chunks,
        )
    return Publication(stale, moved)


def store_chunk_analysis(conn: Connection, rows: Sequence[dict[str, Any]]) -> None:
    """New sparse vectors and term spans of existing chunk rows ({"id", "sparse", "term_spans"}),
    in the caller's transaction: a reindex recomputing them after an analyzer change."""
    if rows:
        conn.execute(
            update(_chunks).where(_chunks.c.id == bindparam("chunk_id")),
            [{"chunk_id": r["id"], "sparse": r["sparse"], "term_spans": r["term_spans"]} for r in rows],
        )


@dataclass(frozen=True)
class Reaped:
    """What one pass of the reaper found."""

    dispatch: list[WorkItem]  # queued again (an expired prepare lease) or still queued after a lost message
    embed_waiting: bool  # documents wait for the embed stage with no live lease: ask for an embed task
    failed: list[WorkItem]  # out of attempts

    @property
    def empty(self) -> bool:
        return not (self.dispatch or self.embed_waiting or self.failed)


def reap(
    engine: Engine,
    *,
    redispatch_after_s: float,
    max_attempts: int,
    everything: bool = False,
    lost_queued: bool = True,
) -> Reaped:
    """One pass of the reaper: take back what dead workers and lost messages left behind.

    - a prepare stage whose lease expired: queued again (to dispatch now), or failed when out of attempts;
    - an embed stage whose lease expired: freed for the next embed task, or failed when out of attempts;
    - a document queued, or waiting for the embed stage unclaimed, for `redispatch_after_s`: its
      message may have been lost (a broker restarted without persistence, an upload while the
      broker was down), so it is dispatched again (a second message finds the document taken and
      does nothing).

    `everything`: at the start of the embedded service, which owns its data directory alone, every
    lease belongs to the process that stopped and every queued document's message was in its memory.
    `lost_queued=False`: the queue still holds messages, so a queued document's may be among them:
    it is not sent again yet (a worker that is down for long would otherwise find a copy per pass).
    Each change re-checks its condition in its own UPDATE, so reapers in several workers at once
    (and a worker renewing its lease at that moment) never undo each other.
    """
    d = _documents.c
    now = utcnow()
    stale = now - timedelta(seconds=redispatch_after_s)
    if everything:
        abandoned = or_(d.lease_owner.is_not(None), d.stage.in_(_PREPARING))
    else:
        # A prepare stage without an owner was claimed before leases existed (revision 0009).
        abandoned = or_(
            and_(d.lease_owner.is_not(None), d.lease_until < now),
            and_(d.lease_owner.is_(None), d.stage.in_(_PREPARING), d.updated_at < stale),
        )
    dispatch: list[WorkItem] = []
    failed: list[WorkItem] = []
    embed_waiting = False
    with engine.begin() as conn:
        held = conn.execute(
            select(d.id, d.generation, d.stage, d.attempts).where(d.status == DocumentStatus.processing, abandoned)
        ).all()
        for doc_id, generation, stage, attempts in held:
            item = WorkItem(doc_id, generation)
            same = (
                d.id == doc_id,
                d.generation == generation,
                d.status == DocumentStatus.processing,
                d.stage == stage,
                abandoned,
            )
            if attempts >= max_attempts:
                name = "embed" if stage == DocumentStage.embedding else "prepare"
                values: dict[str, Any] = dict(
                    status=DocumentStatus.failed, error=_abandoned(name, attempts), stage=None, updated_at=now
                )
            elif stage == DocumentStage.embedding:
                values = dict(updated_at=d.updated_at)  # keeps its place in the embed queue
            else:
                values = dict(status=DocumentStatus.queued, stage=None, updated_at=now)
            if conn.execute(
                update(_documents).where(*same).values(lease_owner=None, lease_until=None, **values)
            ).rowcount:
                if attempts >= max_attempts:
                    log.warning("document %s generation %s: %s", doc_id, generation, values["error"])
                    failed.append(item)
                elif stage == DocumentStage.embedding:
                    embed_waiting = True
                else:
                    dispatch.append(item)
        lost = (
            (d.status == DocumentStatus.queued, d.updated_at < stale)
            if not everything
            else (d.status == DocumentStatus.queued,)
        )
        # Sent again now: updated_at restarts the wait, so the next pass does not send it again.
        if lost_queued or everything:
            for doc_id, generation in conn.execute(
                update(_documents).where(*lost).values(updated_at=now).returning(d.id, d.generation)
            ):
                dispatch.append(WorkItem(doc_id, generation))
        unclaimed = (*_WAITING_FOR_EMBED, d.lease_owner.is_(None))
        if not embed_waiting:
            embed_waiting = (
                conn.scalar(select(d.id).where(*unclaimed, *(() if everything else (d.updated_at < stale,))).limit(1))
                is not None
            )
    return Reaped(dispatch=dispatch, embed_waiting=embed_waiting, failed=failed)


def redispatch_if_stale(session: Session, item: WorkItem, *, redispatch_after_s: float) -> bool:
    """Whether `item`, uploaded again unchanged, must be dispatched again: still queued after
    `redispatch_after_s` (its message may be lost), or its prepare lease has expired (queued
    again here). Restarts its wait, so that concurrent re-uploads send one message."""
    d = _documents.c
    now = utcnow()
    stale = now - timedelta(seconds=redispatch_after_s)
    waiting = or_(
        and_(d.status == DocumentStatus.queued, d.updated_at < stale),
        and_(d.status == DocumentStatus.processing, d.stage.in_(_PREPARING), d.lease_until < now),
    )
    return (
        session.execute(
            update(_documents)
            .where(d.id == item.document_id, d.generation == item.generation, waiting)
            .values(status=DocumentStatus.queued, stage=None, lease_owner=None, lease_until=None, updated_at=now)
            .returning(d.id)
            .execution_options(synchronize_session=False)
        ).first()
        is not None
    )
