"""Tables: collections, documents (with their uploaded source) and chunks."""

from __future__ import annotations

import enum
import uuid
from datetime import UTC, datetime

from sqlalchemy import (
    JSON,
    DateTime,
    Enum,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    Uuid,
    select,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column, relationship
from sqlalchemy.sql.selectable import ScalarSelect

from services.db import Base
from services.vectors import SparseVector

JsonType = JSON().with_variant(JSONB(), "postgresql")


def utcnow() -> datetime:
    return datetime.now(UTC)


class UtcDateTime(TypeDecorator):
    """A timestamp that always reads back as aware UTC: SQLite keeps no time zone and returns naive
    values, PostgreSQL's timestamptz aware ones; every timestamp here is written in UTC."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_result_value(self, value: datetime | None, dialect) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value


class SparseVectorJson(TypeDecorator):
    """A SparseVector stored as JSON {"indices": [...], "values": [...]}: the analyzer's vector goes
    into the chunk row and comes back out for the index as the same type, no dicts in between."""

    impl = JsonType
    cache_ok = True

    def process_bind_param(self, value: SparseVector | None, dialect) -> dict | None:
        return None if value is None else {"indices": list(value.indices), "values": list(value.values)}

    def process_result_value(self, value: dict | None, dialect) -> SparseVector:
        return SparseVector(value["indices"], value["values"]) if value else SparseVector()


class DocumentStatus(str, enum.Enum):
    queued = "queued"
    processing = "processing"
    indexed = "indexed"
    failed = "failed"


class DocumentStage(str, enum.Enum):
    """Where a document in `processing` is; the status endpoint shows it with the counts."""

    extracting = "extracting"
    chunking = "chunking"
    embedding = "embedding"
    done = "done"


def _enum(cls: type[enum.Enum]) -> Enum:
    return Enum(
        cls,
        native_enum=False,
        length=16,
        values_callable=lambda e: [m.value for m in e],
        validate_strings=True,
        create_constraint=False,
    )


class Collection(Base):
    __tablename__ = "collections"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    profile: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    # Search settings used where a request leaves them out (services/search/schemas.SearchDefaults).
    search_defaults: Mapped[dict | None] = mapped_column(JsonType)
    # The model that embeds the collection: hub id or local path as configured, and the sha256 of
    # its weights (None: not known, e.g. a collection created before revision 0006).
    model: Mapped[str | None] = mapped_column(String(1024))
    model_sha256: Mapped[str | None] = mapped_column(String(64))
    # Set while a DELETE of the collection runs in the background.
    deleting_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    # The index that searches and writes address (revision 0011; None before: the name derived
    # from name and profile). On Qdrant Edge the shard itself, so switching it here is how a
    # reindex goes live; on a Qdrant server an alias, switched there (services/collections/reindex.py).
    index_name: Mapped[str | None] = mapped_column(String(255))
    # Counts the index builds: each reindex writes a new physical index, physical_index_name(.., n).
    index_version: Mapped[int] = mapped_column(Integer, default=1, server_default="1")
    # services.ingest.analyzer.analyzer_version() of the chunks' sparse vectors (None: unknown, older).
    analyzer_version: Mapped[str | None] = mapped_column(String(64))
    # The running or last reindex: status, target model, progress counts (collections/reindex.py).
    reindex: Mapped[dict | None] = mapped_column(JsonType)
    # Which chunk rows searches read (revision 0013): a reindex that re-chunks writes the next
    # layout beside the live one and the switch moves this to it.
    chunk_layout: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # Metadata key -> payload index kind declared in the collection's settings (revision 0014):
    # made on the index when set and on every index a reindex builds (collections/service.py).
    filter_indexes: Mapped[dict | None] = mapped_column(JsonType)


class Document(Base):
    __tablename__ = "documents"
    __table_args__ = (
        UniqueConstraint("collection_id", "external_id", name="uq_documents_collection_external_id"),
        Index("ix_documents_collection_sha256", "collection_id", "sha256"),
        # Deduplication of uploads without an external_id, held by the database under concurrency.
        Index(
            "uq_documents_collection_sha256_no_external_id",
            "collection_id",
            "sha256",
            unique=True,
            postgresql_where=text("external_id IS NULL"),
            sqlite_where=text("external_id IS NULL"),
        ),
        Index("ix_documents_collection_status_created", "collection_id", "status", "created_at"),
        # Documents waiting for a stage, across collections: the embed worker's batch, restart recovery.
        Index("ix_documents_status_stage_updated", "status", "stage", "updated_at"),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    collection_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("collections.id", ondelete="CASCADE"))
    external_id: Mapped[str | None] = mapped_column(String(256))
    title: Mapped[str | None] = mapped_column(String(512))
    filename: Mapped[str | None] = mapped_column(String(512))
    media_type: Mapped[str | None] = mapped_column(String(128))
    # sha256 of the uploaded bytes (deduplication at upload) and of the normalized text (after extraction).
    sha256: Mapped[str] = mapped_column(String(64))
    text_sha256: Mapped[str | None] = mapped_column(String(64))
    metadata_: Mapped[dict] = mapped_column("metadata", JsonType, default=dict)
    status: Mapped[DocumentStatus] = mapped_column(_enum(DocumentStatus), default=DocumentStatus.queued)
    stage: Mapped[DocumentStage | None] = mapped_column(_enum(DocumentStage))
    error: Mapped[str | None] = mapped_column(Text)
    chunk_count: Mapped[int] = mapped_column(Integer, default=0)
    embedded_count: Mapped[int] = mapped_column(Integer, default=0)
    char_count: Mapped[int | None] = mapped_column(Integer)
    # A replacement bumps `generation`; searches show chunks of `indexed_generation` until the new one is indexed.
    generation: Mapped[int] = mapped_column(Integer, default=1)
    indexed_generation: Mapped[int | None] = mapped_column(Integer)
    # Title and metadata of indexed_generation, which search shows with its passages: title and
    # metadata above are the latest upload's, not yet searchable while it is processed (or failed).
    indexed_title: Mapped[str | None] = mapped_column(String(512))
    indexed_metadata: Mapped[dict | None] = mapped_column(JsonType)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow, onupdate=utcnow)
    indexed_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    # The lease of the stage that holds this generation (prepare: status processing, stage
    # extracting/chunking; embed: stage embedding): who works on it (a Celery task id, or an
    # embedded service's thread) and until when. The worker renews it while it works; once it has
    # expired, the reaper (services/leases.py) or another worker takes the document over.
    lease_owner: Mapped[str | None] = mapped_column(String(64))
    lease_until: Mapped[datetime | None] = mapped_column(UtcDateTime)
    # Claims of the current stage; at SAEKIN_STAGE_MAX_ATTEMPTS the document fails instead.
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")

    collection: Mapped[Collection] = relationship(lazy="joined")


class DocumentSource(Base):
    """The uploaded bytes of a document's latest generation, for workers on other hosts."""

    __tablename__ = "document_sources"

    document_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("documents.id", ondelete="CASCADE"), primary_key=True)
    generation: Mapped[int] = mapped_column(Integer)
    data: Mapped[bytes] = mapped_column(LargeBinary)
    size: Mapped[int] = mapped_column(Integer)


class Chunk(Base):
    __tablename__ = "chunks"
    __table_args__ = (
        UniqueConstraint(
            "document_id", "generation", "layout", "ordinal", name="uq_chunks_document_generation_layout_ordinal"
        ),
    )

    # Equal to the Qdrant point id: uuid5(document id, generation, ordinal), so retries overwrite.
    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    document_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("documents.id", ondelete="CASCADE"), index=True)
    generation: Mapped[int] = mapped_column(Integer)
    ordinal: Mapped[int] = mapped_column(Integer)
    # The chunking these rows belong to (Collection.chunk_layout; a re-chunking reindex writes the next).
    layout: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    text: Mapped[str] = mapped_column(Text)
    char_start: Mapped[int] = mapped_column(Integer)
    char_end: Mapped[int] = mapped_column(Integer)
    page: Mapped[int | None] = mapped_column(Integer)
    heading: Mapped[str | None] = mapped_column(String(512))
    token_count: Mapped[int] = mapped_column(Integer)
    # Morpheme BM25 term weights, computed on the CPU ingest stage and upserted by the embed stage.
    sparse: Mapped[SparseVector] = mapped_column(SparseVectorJson, default=SparseVector)
    # Where the chunk's content morphemes are, for highlights without a Kiwi pass at search time
    # (services.ingest.analyzer.term_spans): {"<term id>": [start, end, start, end, ...]}, ids as in
    # `sparse`, offsets into `text`. Chunks ingested earlier hold a list of [term id, start, end] of
    # verb/adjective stems only (revisions 0003-0005, as stem_spans) or NULL (before 0003); search
    # highlights those by analyzing a few words around the candidate places.
    term_spans: Mapped[dict | list | None] = mapped_column(JsonType)
    # Offsets (relative to char_start) of the sentences that start inside the chunk, after its
    # first character: where context assembly may cut. NULL for chunks ingested before revision 0007.
    sentence_starts: Mapped[list | None] = mapped_column(JsonType)


def live_layout() -> ScalarSelect[int]:
    """SQL for the chunk layout searches read of a `documents` row (its collection's chunk_layout),
    to compare `chunks.layout` with."""
    coll = Collection.__table__.c
    # Correlated with the enclosing statement's documents, however deep this sits in it.
    return (
        select(coll.chunk_layout)
        .where(coll.id == Document.__table__.c.collection_id)
        .correlate_except(Collection.__table__)
        .scalar_subquery()
    )


def chunk_point_id(document_id: uuid.UUID, generation: int, ordinal: int, layout: int = 0) -> uuid.UUID:
    """The deterministic id shared by a chunk row and its Qdrant point."""
    return uuid.uuid5(document_id, f"{generation}:{ordinal}" + (f":{layout}" if layout else ""))


def index_name(collection: Collection) -> str:
    """The index name that searches and writes of `collection` address (an alias on a Qdrant server
    after a reindex); the derived one for a row that has none."""
    return collection.index_name or collection_index_name(collection.name, collection.profile)


def collection_index_name(name: str, profile: str) -> str:
    """The first index of a collection, from its name and profile columns."""
    return f"saekin_{name.replace('-', '_')}_{profile.replace('-', '_')}"


def physical_index_name(name: str, profile: str, version: int) -> str:
    """The Qdrant collection (Edge shard) of a collection's `version`-th index build. Later builds
    carry '-v<n>': the derived names never hold '-', so no collection's first index can clash."""
    base = collection_index_name(name, profile)
    return base if version <= 1 else f"{base}-v{version}"


def index_alias(name: str) -> str:
    """The alias a Qdrant server's searches address once a collection has been reindexed ('-': no
    physical name starts so)."""
    return f"saekin-{name}"
