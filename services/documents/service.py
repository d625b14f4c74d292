"""Documents and collections as clients see them: validation, lookups and listing.

Every write of documents and chunks is a step in services/documents/lifecycle.py."""

from __future__ import annotations

import base64
import json
import re
import unicodedata
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any, overload

from sqlalchemy import func, select, tuple_
from sqlalchemy.orm import Session

from services.documents.models import (
    Chunk,
    Collection,
    Document,
    DocumentStatus,
)
from services.errors import Conflict, InvalidInput, NotFound
from services.index.base import unstorable_number
from services.index.query import metadata_key_problem, unstorable_text

COLLECTION_NAME_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,62}$"
COLLECTION_NAME = re.compile(COLLECTION_NAME_PATTERN)
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
    """`metadata` if it is a JSON object of bounded size and depth whose top-level keys a filter
    can name, holding only values the databases and the index can store (it goes into every
    chunk's payload)."""
    if not isinstance(metadata, dict):
        raise InvalidInput("metadata must be a JSON object", code="invalid_metadata")
    for key in metadata:  # the keys a filter names: no '.' either (it would read as a nested path)
        if problem := metadata_key_problem(key) or ("must not contain '.'" if "." in key else None):
            raise InvalidInput(f"metadata key {key!r} {problem}", code="invalid_metadata")
    stack: list[tuple[Any, str, int]] = [(metadata, "metadata", 1)]
    while stack:  # iterative: nesting deep enough to overflow a recursive walk is refused, not crashed on
        value, where, depth = stack.pop()
        if isinstance(value, (dict, list)):
            if depth > MAX_METADATA_DEPTH:
                raise InvalidInput(
                    f"metadata is nested deeper than {MAX_METADATA_DEPTH} levels", code="invalid_metadata"
                )
            if isinstance(value, dict):
                for k in value:
                    if problem := unstorable_text(k):
                        raise InvalidInput(f"{where} key {k!r} {problem}", code="invalid_metadata")
            items = value.items() if isinstance(value, dict) else enumerate(value)
            stack.extend((v, f"{where}[{k!r}]", depth + 1) for k, v in items)
        elif isinstance(value, str):
            if problem := unstorable_text(value):
                raise InvalidInput(f"{where} {problem}", code="invalid_metadata")
        elif problem := unstorable_number(value):
            raise InvalidInput(f"{where} = {value!r}: {problem}", code="invalid_metadata")
    if len(json.dumps(metadata, ensure_ascii=False).encode()) > MAX_METADATA_BYTES:
        raise InvalidInput(f"metadata is larger than {MAX_METADATA_BYTES} bytes", code="invalid_metadata")
    return metadata


def clean_text(value: str | None, field: str) -> str | None:
    """`value` in NFC (the form text is indexed in: a macOS client sends 서울 decomposed), or
    InvalidInput naming `field` when no database could store it (NUL, a lone surrogate)."""
    if value is None:
        return None
    if problem := unstorable_text(value):
        raise InvalidInput(f"{field} {problem}", code="invalid_text")
    return unicodedata.normalize("NFC", value)


def get_collection(session: Session, *, name: str) -> Collection:
    """The collection called `name`, or NotFound."""
    collection = session.scalar(select(Collection).where(Collection.name == validate_collection_name(name)))
    if collection is None:
        raise _collection_not_found(name)
    return collection


@dataclass(frozen=True)
class SearchCollection:
    """What search needs of a collection: one row, a few columns."""

    id: uuid.UUID
    profile: str
    model_sha256: str | None
    search_defaults: dict[str, Any] | None
    index_name: str | None = None  # what searches address (None: derived from name and profile)
    model: str | None = None  # hub id or local path of the model that embedded it


def get_search_collection(session: Session, *, name: str) -> SearchCollection:
    """Id, profile, model weights hash and default search settings of the collection called
    `name`, or NotFound (a collection being deleted is not found)."""
    table = Collection.__table__
    row = session.execute(
        select(
            table.c.id,
            table.c.profile,
            table.c.model_sha256,
            table.c.search_defaults,
            table.c.deleting_at,
            table.c.index_name,
            table.c.model,
        ).where(table.c.name == validate_collection_name(name))
    ).first()
    if row is None or row.deleting_at is not None:
        raise _collection_not_found(name, deleting=row is not None)
    return SearchCollection(row.id, row.profile, row.model_sha256, row.search_defaults, row.index_name, row.model)


def set_search_defaults(session: Session, *, name: str, defaults: dict[str, Any] | None) -> Collection:
    """Replace the collection's default search settings (validated by the caller); None clears them."""
    collection = get_collection(session, name=name)
    collection.search_defaults = defaults
    session.flush()
    return collection


def _collection_not_found(name: str, *, deleting: bool = False) -> NotFound:
    if deleting:
        return NotFound(f"collection {name!r} is being deleted", code="collection_not_found")
    return NotFound(f"collection {name!r} does not exist", code="collection_not_found")


def collection_not_found(name: str) -> NotFound:
    """The 404 of a collection that does not exist, also answered for one an API key may not see."""
    return _collection_not_found(name)


def profile_mismatch(name: str, collection_profile: str, service_profile: str) -> Conflict:
    """A collection's vectors come from one model: another profile's would be wrong without a word."""
    return Conflict(
        f"collection {name!r} was indexed with profile {collection_profile!r}, "
        f"but this service runs {service_profile!r}",
        code="profile_mismatch",
    )


def model_mismatch(name: str, collection_model: str, service_model: str) -> Conflict:
    """Same profile, other weights: vectors of two models must not be mixed in one collection."""
    return Conflict(
        f"collection {name!r} was embedded by model weights sha256 {collection_model[:12]}…, "
        f"but this service runs weights sha256 {service_model[:12]}…: use the model the collection "
        "was built with, or a new collection",
        code="model_mismatch",
    )


@overload
def nfc(value: str) -> str: ...
@overload
def nfc(value: None) -> None: ...
@overload
def nfc(value: str | None) -> str | None: ...
def nfc(value: str | None) -> str | None:
    return unicodedata.normalize("NFC", value) if value is not None else None


def count_in_flight(session: Session) -> int:
    """Documents queued or processing, in every collection: the ingestion backlog uploads are held to."""
    return (
        session.scalar(
            select(func.count()).where(Document.status.in_([DocumentStatus.queued, DocumentStatus.processing]))
        )
        or 0
    )


def get_document(session: Session, *, collection_name: str, document_id: uuid.UUID) -> Document:
    """The document `document_id` in `collection_name`, or NotFound."""
    collection = get_collection(session, name=collection_name)
    document = session.get(Document, document_id)
    if document is None or document.collection_id != collection.id:
        raise NotFound(f"document {document_id} not found in collection {collection_name!r}", code="document_not_found")
    return document


def get_document_by_external_id(session: Session, *, collection_name: str, external_id: str) -> Document:
    """The document with the client's `external_id` in `collection_name`, or NotFound."""
    collection = get_collection(session, name=collection_name)
    document = session.scalar(
        select(Document).where(
            Document.collection_id == collection.id, Document.external_id == clean_text(external_id, "external_id")
        )
    )
    if document is None:
        raise NotFound(
            f"no document with external_id {external_id!r} in collection {collection_name!r}",
            code="document_not_found",
        )
    return document


def list_documents(
    session: Session,
    *,
    collection_name: str,
    status: DocumentStatus | None = None,
    external_id: str | None = None,
    cursor: str | None = None,
    limit: int = 50,
) -> tuple[list[Document], str | None]:
    """A page of documents, newest first, and the cursor of the next page."""
    collection = get_collection(session, name=collection_name)
    query = select(Document).where(Document.collection_id == collection.id)
    if status is not None:
        query = query.where(Document.status == status)
    if external_id is not None:
        query = query.where(Document.external_id == clean_text(external_id, "external_id"))
    if cursor:
        created_at, last_id = _decode_cursor(cursor)
        query = query.where(tuple_(Document.created_at, Document.id) < tuple_(created_at, last_id))
    rows = list(session.scalars(query.order_by(Document.created_at.desc(), Document.id.desc()).limit(limit + 1)))
    next_cursor = _encode_cursor(rows[limit - 1]) if len(rows) > limit else None
    return rows[:limit], next_cursor


def list_chunks(
    session: Session,
    *,
    collection_name: str,
    document_id: uuid.UUID,
    cursor: str | None = None,
    limit: int = 100,
) -> tuple[Document, int, list[Chunk], str | None]:
    """A page of a document's chunks in document order: those of the indexed generation (what
    search shows), else of the generation being processed; with that generation and the next cursor."""
    document = get_document(session, collection_name=collection_name, document_id=document_id)
    generation = document.indexed_generation or document.generation
    query = select(Chunk).where(
        Chunk.document_id == document.id,
        Chunk.generation == generation,
        Chunk.layout == document.collection.chunk_layout,
    )
    if cursor:
        if not cursor.isdigit() or len(cursor) > 9:
            raise InvalidInput("invalid cursor", code="invalid_cursor")
        query = query.where(Chunk.ordinal > int(cursor))
    rows = list(session.scalars(query.order_by(Chunk.ordinal).limit(limit + 1)))
    next_cursor = str(rows[limit - 1].ordinal) if len(rows) > limit else None
    return document, generation, rows[:limit], next_cursor


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
