"""Request and response bodies of the search API, and a collection's default search settings."""

from __future__ import annotations

import math
import uuid
from datetime import UTC, date, datetime
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from services.documents.service import COLLECTION_NAME_PATTERN
from services.index.query import (
    FILTER_KEY_PATTERN,
    MAX_RRF_K,
    QUERY_TEXT_PATTERN,
    RRF_K,
    STORABLE_TEXT_PATTERN,
    Convex,
    Dbsf,
    FusionSpec,
    Rrf,
    metadata_key_problem,
    unstorable_text,
)

# Text that can be stored (no NUL), as its JSON Schema says; the validators below give the messages.
StorableText = Annotated[str, WithJsonSchema({"type": "string", "pattern": STORABLE_TEXT_PATTERN})]
MetadataValue = StorableText | int | float | bool
Mode = Literal["dense", "sparse", "hybrid"]
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
    # isoformat, not strftime: it writes years before 1000 with four digits (0478-...), as RFC 3339 wants.
    return parsed.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def _range_of(bound: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": dict.fromkeys(("gt", "gte", "lt", "lte"), bound),
        "additionalProperties": False,
        "minProperties": 1,
        "not": {"anyOf": [{"required": ["gt", "gte"]}, {"required": ["lt", "lte"]}]},
    }


# RangeFilter as JSON Schema: at least one bound, at most one on each side, all numbers or all dates.
_RANGE_SCHEMA: dict[str, Any] = {
    "oneOf": [
        _range_of({"type": "number"}),
        _range_of({"anyOf": [{"type": "string", "format": "date"}, {"type": "string", "format": "date-time"}]}),
    ]
}


class SearchFilter(BaseModel):
    model_config = ConfigDict(extra="forbid")

    document_ids: list[uuid.UUID] | None = Field(None, max_length=1000)
    external_ids: list[StorableText] | None = Field(None, max_length=1000)
    metadata: (
        dict[str, MetadataValue | list[MetadataValue] | Annotated[RangeFilter, WithJsonSchema(_RANGE_SCHEMA)]] | None
    ) = Field(
        None,
        json_schema_extra={"propertyNames": {"pattern": FILTER_KEY_PATTERN}},
        description='key → value, list of accepted values, or a range `{"gte": 2020, "lt": 2025}` '
        "(numbers, or ISO 8601 dates as strings); all keys must match.",
    )

    @field_validator("external_ids")
    @classmethod
    def _storable_ids(cls, value: list[str] | None) -> list[str] | None:
        for position, external_id in enumerate(value or ()):
            if problem := unstorable_text(external_id):
                raise ValueError(f"external_ids[{position}] {problem}")
        return value

    @field_validator("metadata", mode="before")
    @classmethod
    def _ranges(cls, value: Any) -> Any:
        # An object value is a range: validated here so that a bad one gets its own message, not
        # the failures of every other member of the union.
        if not isinstance(value, dict):
            return value
        out = {}
        for key, item in value.items():
            if isinstance(key, str) and (problem := metadata_key_problem(key)):
                raise ValueError(f"metadata key {key!r} {problem}")
            for one in item if isinstance(item, list) else [item]:
                if isinstance(one, str) and (problem := unstorable_text(one)):
                    raise ValueError(f"value of metadata key {key!r} {problem}")
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


# --- fusion: a method name for its defaults, or an object ---------------------------------------


class LegWeights(BaseModel):
    model_config = ConfigDict(extra="forbid")

    dense: float = Field(1.0, gt=0, allow_inf_nan=False)
    sparse: float = Field(1.0, gt=0, allow_inf_nan=False)


class RrfFusion(BaseModel):
    """Reciprocal rank fusion in Qdrant: a point at 0-based position p of a leg with weight w gains
    1 / ((p + 1) / w + k - 1)."""

    model_config = ConfigDict(extra="forbid")

    method: Literal["rrf"]
    k: int = Field(RRF_K, ge=1, le=MAX_RRF_K)
    weights: LegWeights = Field(default_factory=LegWeights)

    def spec(self) -> FusionSpec:
        return Rrf(k=self.k, dense_weight=self.weights.dense, sparse_weight=self.weights.sparse)


class DbsfFusion(BaseModel):
    """Distribution-based score fusion: each leg's scores mapped so that mean ± 3 std → 0..1, summed
    with the legs' weights (unweighted: in Qdrant; weighted: over the prefetched candidates)."""

    model_config = ConfigDict(extra="forbid")

    method: Literal["dbsf"]
    weights: LegWeights = Field(default_factory=LegWeights)

    def spec(self) -> FusionSpec:
        return Dbsf(dense_weight=self.weights.dense, sparse_weight=self.weights.sparse)


class ConvexFusion(BaseModel):
    """alpha × dense + (1 − alpha) × sparse, each leg's scores min-max normalised over its candidates."""

    model_config = ConfigDict(extra="forbid")

    method: Literal["convex"]
    alpha: float = Field(..., ge=0, le=1, allow_inf_nan=False, description="The dense leg's weight.")

    def spec(self) -> FusionSpec:
        return Convex(alpha=self.alpha)


FusionObject = Annotated[RrfFusion | DbsfFusion | ConvexFusion, Field(discriminator="method")]
Fusion = Literal["rrf", "dbsf", "convex"] | FusionObject

# The default, chosen by measurement (bench/fusion_quality.py; README, "Hybrid fusion"): with a
# dense leg much weaker than the Kiwi sparse leg (USE-multilingual-v3 on AutoRAG), only a dense
# weight this small stays within 0.01 recall@1 of sparse alone. A collection's own evaluation
# (`saekin eval --sweep`) is how a user moves it.
DEFAULT_FUSION: FusionObject = ConvexFusion(method="convex", alpha=0.05)
DEFAULT_MODE: Mode = "hybrid"
DEFAULT_RERANK_DEPTH = 50


def fusion_spec(fusion: Fusion) -> FusionSpec:
    """The index layer's description of a request's fusion (a bare name means that method's defaults)."""
    if isinstance(fusion, str):
        return {"rrf": Rrf, "dbsf": Dbsf, "convex": Convex}[fusion]()
    return fusion.spec()


class RerankOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    depth: int = Field(
        DEFAULT_RERANK_DEPTH, ge=1, le=200, description="Fused candidates the reranker scores before top_k are kept."
    )


Rerank = bool | RerankOptions


class SearchDefaults(BaseModel):
    """A collection's search settings, used where a request leaves them out (PATCH them any time:
    they change how the stored vectors are searched, never the vectors)."""

    model_config = ConfigDict(extra="forbid")

    mode: Mode | None = None
    fusion: Fusion | None = None
    rerank: Rerank | None = None


# bge-m3's 1,024 with room for larger models; a longer vector is a 422.
MAX_QUERY_VECTOR_DIM = 8192
# Not all zeros (no direction to search by): said in the schema too, so clients' validators know.
QueryVector = Annotated[
    list[float],
    Field(min_length=1, max_length=MAX_QUERY_VECTOR_DIM, json_schema_extra={"not": {"items": {"const": 0}}}),
]


class SearchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    query: str = Field(..., min_length=1, max_length=4000, json_schema_extra={"pattern": QUERY_TEXT_PATTERN})
    top_k: int = Field(10, ge=1, le=100)
    mode: Mode | None = Field(
        None,
        description="dense: model only; sparse: Korean morpheme BM25; hybrid: both fused. "
        "Empty: the collection's default, else hybrid.",
    )
    fusion: Fusion | None = Field(
        None,
        description="How hybrid combines the legs: 'rrf', 'dbsf', 'convex' or an object such as "
        '{"method": "convex", "alpha": 0.2}. Empty: the collection\'s default, else convex with alpha 0.05.',
    )
    rerank: Rerank | None = Field(
        None,
        description='Re-score the fused candidates with the cross-encoder (true, or {"depth": 50}). '
        "Empty: the collection's default, else off. Needs SAEKIN_RERANK_PROFILE or SAEKIN_RERANK_MODEL.",
    )
    prefetch: int = Field(100, ge=1, le=1000, description="Candidates each leg contributes to hybrid fusion.")
    explain: bool = Field(False, description="Add each hit's rank and score in each leg, and the fused score.")
    highlight: bool = Field(True, description="Add the spans of query terms in each passage.")
    filter: SearchFilter | None = None
    vector: QueryVector | None = Field(
        None,
        description="The question's dense embedding by the collection's model (from POST /v1/embeddings, or "
        "your own copy of the model), used instead of encoding `query`; `query` still drives the sparse leg "
        "and highlights. Its length must be the collection's dimension.",
    )

    @field_validator("vector")
    @classmethod
    def _usable_vector(cls, value: list[float] | None) -> list[float] | None:
        if value is None:
            return None
        if not all(math.isfinite(x) for x in value):
            raise ValueError("vector must hold finite numbers only")
        if not any(value):
            raise ValueError("vector must not be all zeros (it has no direction to search by)")
        return value

    @field_validator("query")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("query must contain some text")
        return value

    @field_validator("query")
    @classmethod
    def _storable_query(cls, value: str) -> str:
        if problem := unstorable_text(value):
            raise ValueError(f"the query {problem}")
        return value


# A collection's name in a body, with the pattern in the schema (services/documents/service.py).
CollectionNameField = Annotated[str, StringConstraints(pattern=COLLECTION_NAME_PATTERN, max_length=63)]


class MultiSearchRequest(SearchRequest):
    collections: list[CollectionNameField] = Field(
        ..., min_length=1, max_length=20, description="Collections of the service's profile, searched as one."
    )


class LegScore(BaseModel):
    rank: int | None
    score: float | None


class Explain(BaseModel):
    """Where a hit stood in each leg (null: not among that leg's candidates, or the leg did not run)
    and in the final ranking."""

    dense: LegScore | None
    sparse: LegScore | None
    fused: LegScore
    rerank: LegScore | None = None


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
    explain: Explain | None = None
    collection: str | None = Field(None, description="The collection the passage belongs to.")
    ordinal: int | None = Field(None, description="The chunk's position in its document (0-based).")


class SearchSettings(BaseModel):
    """The settings a search ran with, after request, collection defaults and global defaults."""

    mode: Mode
    fusion: FusionObject | None = Field(None, description="Set in hybrid mode.")
    rerank: RerankOptions | None = Field(None, description="Set when reranking ran.")


class SearchResponse(BaseModel):
    results: list[SearchHit]
    mode: Mode
    settings: SearchSettings | None = None
    took_ms: float
    note: str | None = Field(
        None, description="Set when the service changed the mode, e.g. a query with no searchable terms."
    )
