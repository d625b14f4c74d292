"""Response bodies of the collections API."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field, field_validator

from services.index.query import metadata_key_problem
from services.search.schemas import SearchDefaults


class DocumentCounts(BaseModel):
    queued: int = 0
    processing: int = 0
    indexed: int = 0
    failed: int = 0
    total: int = 0


class CollectionOut(BaseModel):
    name: str
    status: Literal["ready", "deleting"]
    profile: str = Field(..., description="The embedding profile the collection was created with.")
    model: str | None = Field(..., description="Hub id or local path of the model that embeds it.")
    model_sha256: str | None = Field(..., description="sha256 of that model's weights; null when unknown.")
    created_at: datetime
    documents: DocumentCounts = Field(..., description="Documents by status.")
    chunk_count: int = Field(..., description="Searchable chunks (of the indexed generation of each document).")
    search_defaults: SearchDefaults = Field(
        ..., description="What a search of this collection uses where the request leaves it out (PATCH to change)."
    )
    analyzer_version: str | None = Field(
        None, description="Analyzer that made the sparse vectors; null: older than recorded versions."
    )
    analyzer_current: bool = Field(
        True, description="False: this service analyses with another version (saekin reindex --sparse-only)."
    )
    filter_indexes: dict[str, FilterIndexType] = Field(
        default_factory=dict,
        description="Metadata keys with a declared payload index, and its kind (PATCH to change); "
        "keys a filter uses get one on first use too, up to the same limit.",
    )
    index_name: str | None = Field(None, description="The Qdrant collection (or alias) searches read.")
    reindex: ReindexStatus | None = Field(None, description="The running or last reindex.")


class ReindexStatus(BaseModel):
    """The running or last reindex of a collection (`saekin reindex`)."""

    status: Literal["building", "switching", "done", "failed"] = Field(
        ..., description="building: searches still read the old index; done: they read the new one."
    )
    profile: str
    model: str | None = Field(None, description="The model the new index is embedded with.")
    model_sha256: str | None = None
    sparse_only: bool = Field(False, description="Dense vectors kept, sparse vectors recomputed.")
    recompute_sparse: bool = Field(False, description="Sparse vectors recomputed with this analyzer.")
    rechunk: bool = Field(False, description="Documents chunked again with the new model's token budget.")
    target_index: str = Field(..., description="The Qdrant collection being written.")
    started_at: datetime
    updated_at: datetime | None = None
    finished_at: datetime | None = None
    documents_total: int = Field(0, description="Indexed documents when the reindex began.")
    documents_done: int = 0
    chunks_done: int = 0
    documents_replayed: int = Field(0, description="Documents published during the reindex, copied again.")
    error: str | None = None


class ReindexRequest(BaseModel):
    """What to rebuild a collection's index with (`saekin reindex` takes the same)."""

    profile: str | None = Field(None, description="Embedding profile of the new model (default: the service's).")
    model: str | None = Field(
        None, description="Hub id or a directory on the server (default: the profile's, or the service's model)."
    )
    sparse_only: bool = Field(False, description="Keep the dense vectors; recompute the sparse ones.")
    rechunk: bool | None = Field(
        None,
        description="Chunk the documents again from their stored uploads with the new model's tokenizer and budget "
        "(null: when the new model's budget is smaller than the longest chunk; false: never).",
    )


# The payload index kinds a collection may declare for a metadata key (query.DECLARABLE_KINDS):
# keyword for strings, integer for exact whole numbers, float for number ranges (it holds
# integers too), datetime for date ranges, bool for true/false.
FilterIndexType = Literal["keyword", "integer", "float", "datetime", "bool"]


class CollectionPatch(BaseModel):
    """What to change; fields left out keep their value."""

    search_defaults: SearchDefaults | None = None
    filter_indexes: dict[str, FilterIndexType] | None = Field(
        None,
        description="Metadata key -> payload index kind (keyword, integer, float, datetime, bool) to make on "
        "the collection's index now and on every index a reindex builds; replaces the declared set ({} "
        "removes it). At most SAEKIN_INDEX_FILTER_INDEX_LIMIT keys, the limit of indexes made on a "
        "filter's first use, which the declared ones take first.",
    )

    @field_validator("filter_indexes")
    @classmethod
    def _filterable_keys(cls, value: dict[str, FilterIndexType] | None) -> dict[str, FilterIndexType] | None:
        for key in value or {}:
            if problem := metadata_key_problem(key):
                raise ValueError(f"metadata key {key!r} {problem}")
        return value


class CollectionList(BaseModel):
    items: list[CollectionOut]


class DeletionAccepted(BaseModel):
    name: str
    status: Literal["deleting"] = "deleting"
    message: str
