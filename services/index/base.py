"""The vector-index interface: collections of points with a dense and a sparse named vector.

What a query, a filter and a collection are is described once, engine-neutrally, in query.py;
an adapter renders those descriptions into its engine's requests and runs them.
"""

from __future__ import annotations

import re
import uuid
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Self

import numpy as np

from services.errors import InvalidInput
from services.index.query import (
    AllOf,
    FilterIndexKind,
    FusionSpec,
    IndexFilter,
    IndexHit,
    IndexQuery,
    Search,
    dense_list,
    filter_condition,
    fusion_spec,
    query_mode,
    unstorable_number,
)
from services.vectors import SparseVector

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


@dataclass(frozen=True)
class IndexPoint:
    """One chunk as stored in the index; `id` is a UUID string (deterministic per chunk)."""

    id: str
    dense: Sequence[float] | np.ndarray
    sparse: SparseVector
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

    def query(
        self,
        name: str,
        *,
        dense: Sequence[float] | np.ndarray | None = None,
        sparse: SparseVector | None = None,
        limit: int = 10,
        filter: IndexFilter | None = None,
        fusion: FusionSpec | str | Mapping[str, Any] = "rrf",
        prefetch_limit: int = 100,
        with_payload: bool = True,
        explain: bool = False,
    ) -> list[IndexHit]:
        """Dense, sparse, or both fused (each leg's best `prefetch_limit` candidates, then fusion).

        ``fusion`` is an Rrf, Dbsf or Convex (query.py says how each scores), a method name for its
        defaults ('rrf' is Qdrant's RRF with k = 2) or a mapping (see query.fusion_spec).
        ``with_payload=False`` leaves every hit's payload empty: search reads what it shows from
        the database, and converting payloads cost a tenth of a sparse search. ``explain=True``
        gives every hit `legs`: its rank and score among each leg's candidates (None where a leg
        did not find it), from the same request to the engine.
        """
        has_dense, has_sparse = query_mode(dense, sparse)
        plan = IndexQuery(
            dense=dense_list(dense) if has_dense and dense is not None else None,
            sparse=sparse if has_sparse else None,
            limit=limit,
            filter=filter_condition(filter),
            fusion=fusion_spec(fusion),
            prefetch_limit=prefetch_limit,
            with_payload=with_payload,
            explain=explain,
        )
        check_collection_name(name)
        if plan.filter is not None:
            self._index_filter(name, plan.filter)
        return plan.answer(self._search(name, plan.searches))

    def declare_filter_indexes(  # noqa: B027 (engines without payload indexes do nothing)
        self, name: str, declared: Mapping[str, FilterIndexKind], *, undeclared: Iterable[str] = ()
    ) -> None:
        """Make payload indexes for the metadata keys a collection's settings declare (key ->
        kind) now, replacing an index of another kind, and drop those of the `undeclared` keys
        (declared before, no more). NotFound when the collection does not exist."""

    def metadata_indexes(self, name: str) -> dict[str, FilterIndexKind]:
        """The payload indexes of the collection's metadata keys, key -> kind (what the engine
        reports; engines without payload indexes: none)."""
        return {}

    def _index_filter(self, name: str, condition: AllOf) -> None:  # noqa: B027 (optional hook)
        """Make payload indexes for the metadata paths the filter uses, where the engine needs
        them made (query.FilterIndexes says which); by default nothing."""

    @abstractmethod
    def _search(self, name: str, searches: Sequence[Search]) -> list[list[IndexHit]]:
        """Run the searches in one request to the engine; each one's hits, in the engine's order."""

    @abstractmethod
    def count(self, name: str, filter: IndexFilter | None = None) -> int:
        """Exact number of points matching the filter."""

    def dense_vectors(self, name: str, ids: Sequence[str]) -> dict[str, list[float]]:
        """The stored dense vectors of those of the points `ids` that exist, by id (a reindex that
        only recomputes sparse vectors copies them)."""
        raise NotImplementedError(f"{type(self).__name__} cannot read vectors back")

    def switch(self, *, alias: str, target: str) -> tuple[str, str | None]:
        """Make the searches of a collection read `target` from now on, atomically for the engine.

        Returns the name the database records for searches and writes to address, and the
        index that name pointed at until now when it was an alias (None otherwise). Engines
        without aliases (Qdrant Edge: one process owns it) answer (`target`, None): switching
        the name the database records is the switch.
        """
        return target, None

    @abstractmethod
    def close(self) -> None:
        """Release the engine (files, locks, connections); the object is unusable afterwards."""

    def __enter__(self) -> Self:
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
