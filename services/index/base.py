"""The vector-index interface: collections of points with a dense and a sparse named vector."""

from __future__ import annotations

import math
import re
import uuid
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from services.errors import InvalidInput
from services.vectors import SparseVector

DENSE = "dense"
SPARSE = "sparse"

# Qdrant's default RRF constant (DEFAULT_RRF_K in the engine and in qdrant-client):
# a point at 0-based position p in one prefetch gets 1 / (p + RRF_K).
RRF_K = 2

# Extra hits fetched beyond `limit` so that ties at the cut are broken the same way
# (by point id) in every engine instead of by each engine's internal order.
TIE_MARGIN = 16

# Scores closer than this (relative) count as tied: engines differ in float rounding.
TIE_REL_TOL = 1e-6

Fusion = Literal["rrf", "dbsf"]

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


@dataclass(frozen=True)
class IndexPoint:
    """One chunk as stored in the index; `id` is a UUID string (deterministic per chunk)."""

    id: str
    dense: Sequence[float] | np.ndarray
    sparse: SparseVector
    payload: dict[str, Any]


@dataclass(frozen=True)
class IndexFilter:
    """Conditions that all must hold; each list accepts any of its values (an empty list matches nothing)."""

    document_ids: list[str] | None = None
    external_ids: list[str] | None = None
    # metadata key -> accepted values; matched against payload key f"metadata.{key}"
    metadata: dict[str, list[Any]] | None = None
    # --- range filters (issue 16) ---
    # metadata key -> bounds the value must lie within (numbers, or RFC 3339 datetimes)
    ranges: dict[str, IndexRange] | None = None


@dataclass(frozen=True)
class IndexRange:
    """Bounds on a numeric or datetime payload value (issue 16); unset bounds are open.

    `datetime` True: the bounds are RFC 3339 strings and the payload values must be date or
    datetime strings; else they are numbers.
    """

    gt: float | str | None = None
    gte: float | str | None = None
    lt: float | str | None = None
    lte: float | str | None = None
    datetime: bool = False


@dataclass(frozen=True)
class IndexHit:
    """One search result."""

    id: str
    score: float
    payload: dict[str, Any]


class VectorIndex(ABC):
    """A store of collections, each with a cosine dense vector and an IDF sparse vector per point."""

    @abstractmethod
    def ensure_collection(self, name: str, *, dim: int) -> None:
        """Create the collection and its payload indexes unless it exists; Conflict if its dim differs."""

    @abstractmethod
    def collection_exists(self, name: str) -> bool:
        """Whether the collection exists."""

    @abstractmethod
    def drop_collection(self, name: str) -> None:
        """Delete the collection and all its points (no error if it does not exist)."""

    @abstractmethod
    def upsert(self, name: str, points: Sequence[IndexPoint], *, batch_size: int = 128) -> None:
        """Insert or overwrite points (same id overwrites), in batches."""

    @abstractmethod
    def delete_document(
        self, name: str, document_id: str, *, generation: int | None = None, below_generation: int | None = None
    ) -> None:
        """Delete a document's points: all of them, or only those of one payload generation, or
        those of the generations below one. Never more than asked: another worker may be writing
        a newer generation's points meanwhile."""

    @abstractmethod
    def query(
        self,
        name: str,
        *,
        dense: Sequence[float] | None = None,
        sparse: SparseVector | None = None,
        limit: int = 10,
        filter: IndexFilter | None = None,
        fusion: Fusion = "rrf",
        prefetch_limit: int = 100,
        with_payload: bool = True,
    ) -> list[IndexHit]:
        """Dense, sparse, or both fused in one request (prefetch from each vector, then RRF or DBSF).

        ``with_payload=False`` leaves every hit's payload empty: search reads what it shows from
        the database, and converting payloads cost a tenth of a sparse search.
        """

    @abstractmethod
    def count(self, name: str, filter: IndexFilter | None = None) -> int:
        """Exact number of points matching the filter."""

    @abstractmethod
    def close(self) -> None:
        """Release the engine (files, locks, connections); the object is unusable afterwards."""

    def __enter__(self) -> VectorIndex:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --- helpers shared by the adapters ------------------------------------------------------


def check_collection_name(name: str) -> str:
    """Reject names that are unsafe as directory names (Edge keeps one directory per collection)."""
    if not _NAME_RE.match(name) or ".." in name:
        raise InvalidInput(f"invalid collection name {name!r}: use letters, digits, '_', '-', '.'")
    return name


def point_id(value: str) -> str:
    """A point id in canonical UUID form; both engines accept UUIDs (and return them lowercased)."""
    try:
        return str(uuid.UUID(str(value)))
    except ValueError:
        raise InvalidInput(f"point id {value!r} is not a UUID") from None


def dense_list(vector: Sequence[float] | np.ndarray) -> list[float]:
    """A dense vector as a plain list of floats (both engines want lists)."""
    return np.asarray(vector, dtype=np.float32).ravel().tolist()


def query_mode(dense: Sequence[float] | None, sparse: SparseVector | None) -> tuple[bool, bool]:
    """Which vectors a query uses; an empty sparse vector counts as absent."""
    has_dense = dense is not None and len(dense) > 0
    has_sparse = sparse is not None and bool(sparse)
    if not (has_dense or has_sparse):
        raise InvalidInput("a query needs a dense vector or a non-empty sparse vector")
    return has_dense, has_sparse


def check_query_args(limit: int, prefetch_limit: int, fusion: str) -> None:
    """Validate the scalar query arguments."""
    if limit < 1:
        raise InvalidInput("limit must be at least 1")
    if prefetch_limit < 1:
        raise InvalidInput("prefetch_limit must be at least 1")
    if fusion not in ("rrf", "dbsf"):
        raise InvalidInput(f"unknown fusion {fusion!r}; use 'rrf' or 'dbsf'")


INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


def unstorable_number(value: Any) -> str | None:
    """Why a payload cannot hold `value` (None when it can): Qdrant stores 64-bit integers and
    finite floats, and a JSON document cannot carry NaN or infinity either."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, np.integer)) and not INT64_MIN <= int(value) <= INT64_MAX:
        return "integers must fit in 64 bits"
    if isinstance(value, (float, np.floating)) and not math.isfinite(value):
        return "numbers must be finite (no NaN or infinity)"
    return None


def storable_metadata(value: Any) -> Any:
    """`value` with integers beyond 64 bits turned into floats. Uploads cannot hold such integers
    (see unstorable_number), but PostgreSQL's JSONB prints a large float without its exponent
    (1e20 comes back as 100000000000000000000), so one read back from the database can."""
    if isinstance(value, dict):
        return {k: storable_metadata(v) for k, v in value.items()}
    if isinstance(value, list):
        return [storable_metadata(v) for v in value]
    if isinstance(value, int) and unstorable_number(value):
        return float(value)
    return value


def metadata_groups(values: list[Any]) -> tuple[list[str], list[int], list[bool], list[float]]:
    """Split accepted metadata values by type: each type needs its own kind of condition."""
    strs: list[str] = []
    ints: list[int] = []
    bools: list[bool] = []
    floats: list[float] = []
    for v in values:
        if problem := unstorable_number(v):
            raise InvalidInput(f"metadata filter value {v!r}: {problem}")
        if isinstance(v, bool):  # before int: bool is an int subclass
            bools.append(v)
        elif isinstance(v, (int, np.integer)):
            ints.append(int(v))
        elif isinstance(v, (float, np.floating)):
            floats.append(float(v))
        elif isinstance(v, str):
            strs.append(v)
        else:
            raise InvalidInput(f"unsupported metadata filter value {v!r}: use str, int, float or bool")
    return strs, ints, bools, floats


def metadata_path(key: str) -> str:
    """The payload path of a metadata key, quoted so that dots, spaces and Hangul are literal."""
    if not key or '"' in key:
        raise InvalidInput(f"invalid metadata key {key!r}")
    return f'metadata."{key}"'


def order_hits(hits: list[IndexHit], limit: int) -> list[IndexHit]:
    """Sort by score, break (near-)ties by id, cut to limit: the same order from every engine."""
    hits = sorted(hits, key=lambda h: -h.score)
    ordered: list[IndexHit] = []
    run: list[IndexHit] = []
    for hit in hits:
        if run and not _tied(run[-1].score, hit.score):
            ordered.extend(sorted(run, key=lambda h: h.id))
            run = []
        run.append(hit)
    ordered.extend(sorted(run, key=lambda h: h.id))
    return ordered[:limit]


def _tied(a: float, b: float) -> bool:
    return abs(a - b) <= TIE_REL_TOL * max(abs(a), abs(b), 1e-12)
