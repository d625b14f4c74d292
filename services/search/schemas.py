"""Request and response bodies of the search API, and a collection's default search settings."""

from __future__ import annotations

import uuid
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from services.index.query import MAX_RRF_K, RRF_K, Convex, Dbsf, FusionSpec, Rrf

MetadataValue = str | int | float | bool
Mode = Literal["dense", "sparse", "hybrid"]


class SearchFilter(BaseModel):
    model_config = ConfigDict(extra="forbid")

    document_ids: list[uuid.UUID] | None = Field(None, max_length=1000)
    external_ids: list[str] | None = Field(None, max_length=1000)
    metadata: dict[str, MetadataValue | list[MetadataValue]] | None = Field(
        None, description="key → value or list of accepted values; all keys must match."
    )


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


class SearchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    query: str = Field(..., min_length=1, max_length=4000)
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

    @field_validator("query")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("query must contain some text")
        return value


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
