"""Request and response bodies of the search API."""

from __future__ import annotations

import math
import uuid
from datetime import UTC, date, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

MetadataValue = str | int | float | bool
Bound = int | float | str


class RangeFilter(BaseModel):
    """Bounds on a numeric or date metadata value: `{"gte": 2020, "lt": 2025}`,
    `{"gte": "2024-01-01"}` (dates and datetimes as ISO 8601 strings; without a zone, UTC)."""

    model_config = ConfigDict(extra="forbid")

    gt: Bound | None = None
    gte: Bound | None = None
    lt: Bound | None = None
    lte: Bound | None = None

    @field_validator("gt", "gte", "lt", "lte", mode="before")
    @classmethod
    def _number_or_date(cls, value: Any) -> Any:
        if value is None:
            return None
        if isinstance(value, bool):
            raise ValueError("a range bound must be a number or an ISO 8601 date, not true/false")
        if isinstance(value, (int, float)):
            if not math.isfinite(value):
                raise ValueError("a range bound must be a finite number")
            return value
        if isinstance(value, str):
            return _rfc3339(value)
        raise ValueError("a range bound must be a number or an ISO 8601 date string")

    @model_validator(mode="after")
    def _consistent(self) -> RangeFilter:
        bounds = [b for b in (self.gt, self.gte, self.lt, self.lte) if b is not None]
        if not bounds:
            raise ValueError("a range needs at least one of gt, gte, lt, lte")
        if (self.gt is not None and self.gte is not None) or (self.lt is not None and self.lte is not None):
            raise ValueError("give at most one lower bound (gt or gte) and one upper bound (lt or lte)")
        if len({isinstance(b, str) for b in bounds}) > 1:
            raise ValueError("range bounds must all be numbers or all be ISO 8601 dates")
        return self

    @property
    def is_datetime(self) -> bool:
        return any(isinstance(b, str) for b in (self.gt, self.gte, self.lt, self.lte))


def _rfc3339(value: str) -> str:
    """An ISO 8601 date or datetime as an RFC 3339 UTC string; ValueError for anything else."""
    text = value.strip()
    try:
        if len(text) == 10:
            parsed = datetime.combine(date.fromisoformat(text), datetime.min.time())
        else:
            parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(
            f"{value!r} is neither a number nor an ISO 8601 date: a range applies to numbers "
            "(2020) or dates ('2024-03-01', '2024-03-01T09:00:00+09:00')"
        ) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class SearchFilter(BaseModel):
    model_config = ConfigDict(extra="forbid")

    document_ids: list[uuid.UUID] | None = Field(None, max_length=1000)
    external_ids: list[str] | None = Field(None, max_length=1000)
    metadata: dict[str, MetadataValue | list[MetadataValue] | RangeFilter] | None = Field(
        None,
        description='key → value, list of accepted values, or a range `{"gte": 2020, "lt": 2025}` '
        "(numbers, or ISO 8601 dates as strings); all keys must match.",
    )

    @field_validator("metadata", mode="before")
    @classmethod
    def _ranges(cls, value: Any) -> Any:
        # An object value is a range: validated here so that a bad one gets its own message, not
        # the failures of every other member of the union.
        if not isinstance(value, dict):
            return value
        out = {}
        for key, item in value.items():
            if isinstance(item, dict):
                try:
                    item = RangeFilter.model_validate(item)
                except ValidationError as exc:
                    problems = "; ".join(
                        (f"{'.'.join(map(str, e['loc']))}: " if e["loc"] else "")
                        + str(e["msg"]).removeprefix("Value error, ")
                        for e in exc.errors()
                    )
                    raise ValueError(f"range on {key!r}: {problems}") from None
            out[key] = item
        return out


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


class MultiSearchRequest(SearchRequest):
    collections: list[str] = Field(
        ..., min_length=1, max_length=20, description="Collections of the service's profile, searched as one."
    )


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
    collection: str | None = Field(None, description="The collection the passage belongs to.")
    ordinal: int | None = Field(None, description="The chunk's position in its document (0-based).")


class SearchResponse(BaseModel):
    results: list[SearchHit]
    mode: Literal["dense", "sparse", "hybrid"]
    took_ms: float
    note: str | None = Field(
        None, description="Set when the service changed the mode, e.g. a query with no searchable terms."
    )
