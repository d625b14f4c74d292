"""Request and response bodies of the documents API."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from services.documents.models import DocumentStage, DocumentStatus
from services.index.query import METADATA_KEY_PATTERN, STORABLE_TEXT_PATTERN

# What a metadata value may be, as JSON Schema (validate_metadata checks it): text without NUL,
# 64-bit integers, finite numbers, booleans, null, and lists or objects of those, nested.
_SCALAR = [
    {"type": "string", "pattern": STORABLE_TEXT_PATTERN},
    {"type": "integer", "minimum": -(2**63), "maximum": 2**63 - 1},
    {"type": "number", "minimum": -1e308, "maximum": 1e308},
    {"type": "boolean"},
    {"type": "null"},
]
METADATA_VALUE_SCHEMA: dict[str, Any] = {
    "anyOf": [
        *_SCALAR,
        {"type": "array", "items": {"anyOf": _SCALAR}},
        {
            "type": "object",
            "propertyNames": {"pattern": STORABLE_TEXT_PATTERN},
            "additionalProperties": {"anyOf": _SCALAR},
        },
    ]
}


class TextDocumentIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    text: str = Field(
        ..., min_length=1, description="The document's text (UTF-8).", json_schema_extra={"pattern": r"\S"}
    )
    external_id: str | None = Field(
        None,
        min_length=1,
        max_length=256,
        description="Your id; unique per collection. A known id with new content replaces that document.",
        json_schema_extra={"pattern": STORABLE_TEXT_PATTERN},
    )
    title: str | None = Field(None, max_length=512, json_schema_extra={"pattern": STORABLE_TEXT_PATTERN})
    metadata: dict[str, Any] = Field(
        default_factory=dict,
        description="Returned with every hit; filterable in search. Keys: 1-64 characters without '.', '\"' or "
        "a backslash; no NUL anywhere; integers within 64 bits, finite numbers.",
        json_schema_extra={
            "propertyNames": {"pattern": METADATA_KEY_PATTERN},
            "additionalProperties": METADATA_VALUE_SCHEMA,
        },
    )


class DocumentOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    collection: str
    external_id: str | None
    title: str | None
    filename: str | None
    media_type: str | None
    sha256: str
    metadata: dict[str, Any]
    status: DocumentStatus
    stage: DocumentStage | None
    error: str | None
    chunk_count: int
    embedded_count: int
    char_count: int | None
    generation: int
    indexed_generation: int | None
    created_at: datetime
    updated_at: datetime
    indexed_at: datetime | None

    @classmethod
    def of(cls, document) -> DocumentOut:
        return cls(
            id=document.id,
            collection=document.collection.name,
            external_id=document.external_id,
            title=document.title,
            filename=document.filename,
            media_type=document.media_type,
            sha256=document.sha256,
            metadata=document.metadata_ or {},
            status=document.status,
            stage=document.stage,
            error=document.error,
            chunk_count=document.chunk_count,
            embedded_count=document.embedded_count,
            char_count=document.char_count,
            generation=document.generation,
            indexed_generation=document.indexed_generation,
            created_at=document.created_at,
            updated_at=document.updated_at,
            indexed_at=document.indexed_at,
        )


class DocumentPage(BaseModel):
    items: list[DocumentOut]
    next_cursor: str | None = Field(None, description="Pass as `cursor` to get the next page; null on the last page.")


class ChunkOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID = Field(
        ..., description="The chunk's id, equal to its point id in the index (`chunk_id` in search hits)."
    )
    ordinal: int = Field(..., description="The chunk's position in its document (0-based).")
    text: str
    page: int | None = Field(..., description="The page it starts on (PDF), else null.")
    heading: str | None = Field(..., description="The section heading it falls under, where known.")
    token_count: int = Field(..., description="Its length in the embedding model's tokens.")
    char_start: int = Field(..., description="Where it starts in the document's text.")
    char_end: int


class ChunkPage(BaseModel):
    document_id: uuid.UUID
    generation: int = Field(
        ..., description="The generation listed: the indexed one (what search shows), else the one being processed."
    )
    items: list[ChunkOut]
    next_cursor: str | None = Field(None, description="Pass as `cursor` to get the next page; null on the last page.")
