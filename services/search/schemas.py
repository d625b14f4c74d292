"""Request and response bodies of the search API."""

from __future__ import annotations

import uuid
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

MetadataValue = str | int | float | bool


class SearchFilter(BaseModel):
    model_config = ConfigDict(extra="forbid")

    document_ids: list[uuid.UUID] | None = Field(None, max_length=1000)
    external_ids: list[str] | None = Field(None, max_length=1000)
    metadata: dict[str, MetadataValue | list[MetadataValue]] | None = Field(
        None, description="key → value or list of accepted values; all keys must match."
    )


class SearchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    query: str = Field(..., min_length=1, max_length=4000)
    top_k: int = Field(10, ge=1, le=100)
    mode: Literal["dense", "sparse", "hybrid"] = Field(
        "hybrid", description="dense: model only; sparse: Korean morpheme BM25; hybrid: both fused in one Qdrant query."
    )
    fusion: Literal["rrf", "dbsf"] = Field("rrf", description="How hybrid combines the two legs.")
    prefetch: int = Field(100, ge=1, le=1000, description="Candidates each leg contributes to hybrid fusion.")
    explain: bool = Field(False, description="Add each hit's rank and score in each leg.")
    highlight: bool = Field(True, description="Add the spans of query terms in each passage.")
    filter: SearchFilter | None = None

    @field_validator("query")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("query must contain some text")
        return value


class LegScore(BaseModel):
    rank: int | None
    score: float | None


class SearchHit(BaseModel):
    rank: int
    score: float
    chunk_id: uuid.UUID
    document_id: uuid.UUID
    external_id: str | None
    title: str | None
    text: str
    page: int | None
    heading: str | None
    char_start: int
    char_end: int
    metadata: dict[str, Any]
    highlights: list[tuple[int, int]] = Field(
        default_factory=list, description="[start, end) spans of query terms in `text`."
    )
    explain: dict[str, LegScore] | None = None


class SearchResponse(BaseModel):
    results: list[SearchHit]
    mode: Literal["dense", "sparse", "hybrid"]
    took_ms: float
    note: str | None = Field(
        None, description="Set when the service changed the mode, e.g. a query with no searchable terms."
    )
