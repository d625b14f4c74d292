"""Documents: store uploads, deduplicate, replace, list, delete. Dispatching work is the caller's job."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import unicodedata
import uuid
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, select, tuple_, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from services.documents.models import (
    Collection,
    Document,
    DocumentSource,
    DocumentStatus,
    index_name,
    utcnow,
)
from services.errors import Conflict, InvalidInput, NotFound
from services.index.base import unstorable_number

COLLECTION_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")
MAX_METADATA_BYTES = 16 * 1024
MAX_METADATA_DEPTH = 32


def validate_collection_name(name: str) -> str:
    """`name` if it is a valid collection name, else InvalidInput saying what is allowed."""
    if not COLLECTION_NAME.fullmatch(name):
        raise InvalidInput(
            f"invalid collection name {name!r}: use 1-63 lower-case letters, digits, '-' or '_', starting with a letter or digit",
            code="invalid_collection_name",
        )
    return name


def validate_metadata(metadata: Any) -> dict[str, Any]:
    """`metadata` if it is a JSON object of bounded size and depth with plain keys, holding only
    values the index can store (it goes into every chunk's payload)."""
    if not isinstance(metadata, dict):
        raise InvalidInput("metadata must be a JSON object", code="invalid_metadata")
    stack: list[tuple[Any, str, int]] = [(metadata, "metadata", 1)]
    while stack:  # iterative: nesting deep enough to overflow a recursive walk is refused, not crashed on
        value, where, depth = stack.pop()
        if isinstance(value, (dict, list)):
            if depth > MAX_METADATA_DEPTH:
                raise InvalidInput(
                    f"metadata is nested deeper than {MAX_METADATA_DEPTH} levels", code="invalid_metadata"
                )
            items = value.items() if isinstance(value, dict) else enumerate(value)
            stack.extend((v, f"{where}[{k!r}]", depth + 1) for k, v in items)
        elif problem := unstorable_number(value):
            raise InvalidInput(f"{where} = {value!r}: {problem}", code="invalid_metadata")
    if len(json.dumps(metadata, ensure_ascii=False).encode()) > MAX_METADATA_BYTES:
        raise InvalidInput(f"metadata is larger than {MAX_METADATA_BYTES} bytes", code="invalid_metadata")
    for key in metadata:
        if not key or "." in key or len(key) > 64:
            raise InvalidInput(f"metadata key {key!r} must be 1-64 characters without '.'", code="invalid_metadata")
    return metadata


def get_collection(session: Session, *, name: str) -> Collection:
    """The collection called `name`, or NotFound."""
    collection = session.scalar(select(Collection).where(Collection.name == validate_collection_name(name)))
    if collection is None:
        raise _collection_not_found(name)
    return collection


def get_collection_key(session: Session, *, name: str) -> tuple[uuid.UUID, str]:
    """Id and profile of the collection called `name`, or NotFound (two columns: the search path)."""
    table = Collection.__table__
    row = session.execute(
        select(table.c.id, table.c.profile).where(table.c.name == validate_collection_name(name))
    ).first()
    if row is None:
        raise _collection_not_found(name)
    return row.id, row.profile


def _collection_not_found(name: str) -> NotFound:
    return NotFound(f"collection {name!r} does not exist", code="collection_not_found")


def profile_mismatch(name: str, collection_profile: str, service_profile: str) -> Conflict:
    """A collection's vectors come from one model: another profile's would be wrong without a word."""
    return Conflict(
        f"collection {name!r} was indexed with profile {collection_profile!r}, "
        f"but this service runs {service_profile!r}",
        code="profile_mismatch",
    )


def get_or_create_collection(session: Session, *, name: str, profile: str) -> Collection:
    """The collection called `name`, created with `profile` on first use."""
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
            collection = Collection(name=name, profile=profile)
            session.add(collection)
    except IntegrityError:  # created concurrently by another request
        collection = session.scalars(select(Collection).where(Collection.name == name)).one()
    return collection


@dataclass(frozen=True)
class Upload:
    """One document as received: its bytes and what the client said about it."""

    data: bytes
    filename: str | None = None
    media_type: str | None = None
    external_id: str | None = None
    title: str | None = None
    metadata: dict[str, Any] | None = None

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()


@dataclass(frozen=True)
class SubmitResult:
    document: Document
    created: bool  # False: the same content was already there, nothing to do
    generation: int


def submit_document(session: Session, *, collection_name: str, profile: str, upload: Upload) -> SubmitResult:
    """Store an upload: new document, existing one (same content), or a new generation (same external_id)."""
    if not upload.data:
        raise InvalidInput("the document is empty", code="empty_document")
    # Names are compared as NFC, the form the text is indexed in: a macOS client sends 서울 decomposed.
    upload = replace(
        upload, external_id=nfc(upload.external_id), title=nfc(upload.title), filename=nfc(upload.filename)
    )
    metadata = validate_metadata(upload.metadata or {})
    collection = get_or_create_collection(session, name=collection_name, profile=profile)
    if collection.profile != profile:
        raise profile_mismatch(collection.name, collection.profile, profile)
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
        return SubmitResult(existing, created=False, generation=existing.generation)

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
    return SubmitResult(document, created=True, generation=document.generation)


def nfc(value: str | None) -> str | None:
    return unicodedata.normalize("NFC", value) if value is not None else None


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


def get_document(session: Session, *, collection_name: str, document_id: uuid.UUID) -> Document:
    """The document `document_id` in `collection_name`, or NotFound."""
    collection = get_collection(session, name=collection_name)
    document = session.get(Document, document_id)
    if document is None or document.collection_id != collection.id:
        raise NotFound(f"document {document_id} not found in collection {collection_name!r}", code="document_not_found")
    return document


def list_documents(
    session: Session,
    *,
    collection_name: str,
    status: DocumentStatus | None = None,
    cursor: str | None = None,
    limit: int = 50,
) -> tuple[list[Document], str | None]:
    """A page of documents, newest first, and the cursor of the next page."""
    collection = get_collection(session, name=collection_name)
    query = select(Document).where(Document.collection_id == collection.id)
    if status is not None:
        query = query.where(Document.status == status)
    if cursor:
        created_at, last_id = _decode_cursor(cursor)
        query = query.where(tuple_(Document.created_at, Document.id) < tuple_(created_at, last_id))
    rows = list(session.scalars(query.order_by(Document.created_at.desc(), Document.id.desc()).limit(limit + 1)))
    next_cursor = _encode_cursor(rows[limit - 1]) if len(rows) > limit else None
    return rows[:limit], next_cursor


def _encode_cursor(document: Document) -> str:
    raw = f"{document.created_at.isoformat()}|{document.id}"
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def _decode_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        created, doc_id = raw.split("|")
        return datetime.fromisoformat(created), uuid.UUID(doc_id)
    except (ValueError, UnicodeDecodeError):
        raise InvalidInput("invalid cursor", code="invalid_cursor") from None


def delete_document(session: Session, *, index, collection_name: str, document_id: uuid.UUID) -> None:
    """Remove a document's points from the index, then its rows (chunks and source cascade)."""
    document = get_document(session, collection_name=collection_name, document_id=document_id)
    name = index_name(document.collection)
    if index.collection_exists(name):
        index.delete_document(name, str(document.id))
    session.execute(delete(Document).where(Document.id == document.id))
