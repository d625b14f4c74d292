"""VectorIndex on Qdrant Edge (qdrant-edge-py 0.9): Qdrant's engine in-process, one shard per collection.

Layout under the root directory: `<collection>/` is an Edge shard (edge_config.json, wal/, segments/);
`.saekin-index.lock` is held (flock) by the process that owns the directory.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import qdrant_edge as qe

from services.errors import Conflict, DataDirLocked, InvalidInput, NotFound
from services.index.base import IndexPoint, VectorIndex, check_collection_name, point_id
from services.index.query import (
    DENSE,
    SPARSE,
    AllOf,
    CollectionSchema,
    ConditionSpelling,
    Dbsf,
    FusedSearch,
    IndexFilter,
    IndexHit,
    LegSearch,
    Rrf,
    Search,
    dense_list,
    document_condition,
    filter_condition,
    render_condition,
)
from services.vectors import SparseVector

try:  # POSIX only; elsewhere the shard's own WAL lock is the only guard
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None  # type: ignore[assignment]

LOCK_FILE = ".saekin-index.lock"
_CONFIG_FILE = "edge_config.json"
_CREATING_PREFIX = ".creating-"

# Edge raises a bare Exception for everything; this text marks a shard whose WAL another
# process (or another EdgeShard in this process) holds.
_WAL_LOCKED = "WouldBlock"


def load_shard(path: Path) -> qe.EdgeShard:
    """Open an existing shard; DataDirLocked when another process holds its WAL."""
    try:
        return qe.EdgeShard.load(str(path))
    except Exception as exc:
        if _WAL_LOCKED in str(exc):
            raise DataDirLocked(
                f"data directory {path.parent} is in use by another Saekin process (shard {path.name} is locked)"
            ) from exc
        raise


class EdgeIndex(VectorIndex):
    """Collections as Qdrant Edge shards under one directory owned by this process."""

    def __init__(self, root: Path | str) -> None:
        self._root = Path(root)
        self._root.mkdir(parents=True, exist_ok=True)
        self._lock_fd = _lock_directory(self._root)
        self._guard = _RWLock()  # shared: use an open shard; exclusive: open, create, drop, close
        self._shards: dict[str, _Shard] = {}
        self._closed = False
        # Leftovers of a create that crashed before its rename; safe to remove, we own the dir.
        for leftover in self._root.glob(f"{_CREATING_PREFIX}*"):
            shutil.rmtree(leftover, ignore_errors=True)

    @property
    def root(self) -> Path:
        """The directory holding the shards."""
        return self._root

    # --- collections -------------------------------------------------------------------

    def ensure_collection(self, name: str, *, dim: int) -> None:
        """Create the shard and its payload indexes unless it exists; Conflict if its dim differs."""
        check_collection_name(name)
        schema = CollectionSchema(dim=dim)
        with self._guard.read():  # fast path, without stalling queries behind the exclusive lock
            self._check_open()
            shard = self._shards.get(name)
        if shard is None:
            with self._guard.write():
                self._check_open()
                if name not in self._shards and not self._on_disk(name):
                    self._create(name, schema)
                shard = self._open_locked(name)
        if shard.dim != dim:
            raise Conflict(f"collection {name!r} has dense dim {shard.dim}, not {dim}")

    def collection_exists(self, name: str) -> bool:
        """Whether the shard exists (open or on disk)."""
        check_collection_name(name)
        with self._guard.read():
            self._check_open()
            return name in self._shards or self._on_disk(name)

    def drop_collection(self, name: str) -> None:
        """Close the shard and delete its directory."""
        check_collection_name(name)
        with self._guard.write():
            self._check_open()
            shard = self._shards.pop(name, None)
            if shard is not None:
                shard.shard.close()
            shutil.rmtree(self._root / name, ignore_errors=True)

    # --- points ------------------------------------------------------------------------

    def upsert(self, name: str, points: Sequence[IndexPoint], *, batch_size: int = 128) -> None:
        """Upsert in batches, then flush so the points survive a crash of the process."""
        if batch_size < 1:
            raise InvalidInput("batch_size must be at least 1")
        with self._use(name) as shard:
            batches = [
                [_edge_point(p, shard.dim) for p in points[i : i + batch_size]]
                for i in range(0, len(points), batch_size)
            ]
            with shard.write_lock:
                for batch in batches:
                    shard.shard.update(qe.UpdateOperation.upsert_points(batch))
                shard.shard.flush()

    def delete_document(
        self, name: str, document_id: str, *, generation: int | None = None, below_generation: int | None = None
    ) -> None:
        """Delete by payload filter; a collection that does not exist has nothing to delete."""
        condition = document_condition(document_id, generation=generation, below_generation=below_generation)
        operation = qe.UpdateOperation.delete_points_by_filter(render_condition(condition, _EDGE_CONDITIONS))
        try:
            with self._use(name) as shard, shard.write_lock:
                shard.shard.update(operation)
                shard.shard.flush()
        except NotFound:
            return

    def _search(self, name: str, searches: Sequence[Search]) -> list[list[IndexHit]]:
        """The searches as Edge requests, one query or one batch."""
        with self._use(name) as shard:
            requests = [_edge_request(search, shard.dim) for search in searches]
            if len(requests) == 1:
                results = [shard.shard.query(requests[0])]
            else:
                results = shard.shard.query_batch(qe.QueryBatchRequest(requests))
        return [[IndexHit(id=str(p.id), score=float(p.score), payload=p.payload or {}) for p in r] for r in results]

    def count(self, name: str, filter: IndexFilter | None = None) -> int:
        """Exact count of the points matching the filter."""
        with self._use(name) as shard:
            return int(shard.shard.count(qe.CountRequest(exact=True, filter=_edge_filter(filter_condition(filter)))))

    def optimize(self, name: str) -> bool:
        """Merge segments, vacuum deletions and build HNSW; Edge never does this by itself.

        qdrant-edge 0.9 holds the GIL for the whole run (seconds per 10k points), freezing every
        thread of the process: run it from maintenance code, not while serving.
        """
        with self._use(name) as shard, shard.write_lock:
            changed = shard.shard.optimize()
            shard.shard.flush()
            return bool(changed)

    def close(self) -> None:
        """Flush and close every shard and release the directory lock; idempotent."""
        with self._guard.write():
            if self._closed:
                return
            self._closed = True
            try:
                for shard in self._shards.values():
                    try:
                        shard.shard.flush()
                    finally:
                        shard.shard.close()
            finally:
                self._shards.clear()
                _unlock_directory(self._lock_fd)

    # --- internals -----------------------------------------------------------------------

    @contextmanager
    def _use(self, name: str) -> Iterator[_Shard]:
        """Hold the shared lock around one operation on an open shard, opening it on first use."""
        check_collection_name(name)
        while True:
            with self._guard.read():
                self._check_open()
                shard = self._shards.get(name)
                if shard is not None:
                    yield shard
                    return
            with self._guard.write():
                self._check_open()
                self._open_locked(name)

    def _open_locked(self, name: str) -> _Shard:
        """Open a shard from disk (caller holds the exclusive lock)."""
        shard = self._shards.get(name)
        if shard is not None:
            return shard
        path = self._root / name
        if not self._on_disk(name):
            raise NotFound(f"collection {name!r} does not exist")
        config = json.loads((path / _CONFIG_FILE).read_text())
        dim = int(config["vectors"][DENSE]["size"])
        edge_shard = load_shard(path)
        try:
            # Also repairs a shard whose indexes were never created (older code, a manual copy).
            if _ensure_payload_indexes(edge_shard, CollectionSchema(dim=dim)):
                edge_shard.flush()
        except BaseException:
            edge_shard.close()  # else its WAL lock outlives the failure
            raise
        shard = _Shard(shard=edge_shard, dim=dim)
        self._shards[name] = shard
        return shard

    def _create(self, name: str, schema: CollectionSchema) -> None:
        """Create a shard in a scratch directory and rename it into place, so a crash leaves no half shard."""
        scratch = self._root / f"{_CREATING_PREFIX}{name}"
        shutil.rmtree(scratch, ignore_errors=True)
        config = qe.EdgeConfig(
            vectors={DENSE: qe.EdgeVectorParams(size=schema.dim, distance=qe.Distance.Cosine)},
            sparse_vectors={SPARSE: qe.EdgeSparseVectorParams(modifier=qe.Modifier.Idf)},
        )
        shard = qe.EdgeShard.create(str(scratch), config)
        try:
            _ensure_payload_indexes(shard, schema)
            shard.flush()
        finally:
            shard.close()
        target = self._root / name
        shutil.rmtree(target, ignore_errors=True)  # a directory without a config is no shard
        os.replace(scratch, target)

    def _on_disk(self, name: str) -> bool:
        return (self._root / name / _CONFIG_FILE).is_file()

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("the index is closed")


@dataclass
class _Shard:
    shard: qe.EdgeShard
    dim: int
    # Serializes updates and their flush; queries do not take it.
    write_lock: threading.Lock = field(default_factory=threading.Lock)


class _RWLock:
    """Many readers or one writer; waiting writers block new readers. Not reentrant."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._readers = 0
        self._writer = False
        self._waiting_writers = 0

    @contextmanager
    def read(self) -> Iterator[None]:
        with self._cond:
            while self._writer or self._waiting_writers:
                self._cond.wait()
            self._readers += 1
        try:
            yield
        finally:
            with self._cond:
                self._readers -= 1
                if not self._readers:
                    self._cond.notify_all()

    @contextmanager
    def write(self) -> Iterator[None]:
        with self._cond:
            self._waiting_writers += 1
            while self._writer or self._readers:
                self._cond.wait()
            self._waiting_writers -= 1
            self._writer = True
        try:
            yield
        finally:
            with self._cond:
                self._writer = False
                self._cond.notify_all()


# --- rendering query.py's descriptions as Edge requests ---------------------------------------

# IDF over the live points: a match-all corpus (why: query.LegSearch).
_LIVE_IDF = qe.SearchParams(idf=qe.IdfParams(corpus=qe.Filter()))

_PAYLOAD_TYPES = {"keyword": qe.PayloadSchemaType.Keyword, "integer": qe.PayloadSchemaType.Integer}


def _ensure_payload_indexes(shard: qe.EdgeShard, schema: CollectionSchema) -> bool:
    """Create the missing payload indexes; True if any was created."""
    existing = shard.info().payload_schema
    missing = [(key, kind) for key, kind in schema.payload_indexes if key not in existing]
    for key, kind in missing:
        shard.update(qe.UpdateOperation.create_field_index(key, _PAYLOAD_TYPES[kind]))
    return bool(missing)


def _edge_request(search: Search, dim: int) -> qe.QueryRequest:
    if isinstance(search, LegSearch):
        return qe.QueryRequest(
            limit=search.limit,
            query=_nearest(search, dim),
            filter=_edge_filter(search.filter),
            params=_LIVE_IDF if search.leg == SPARSE else None,
            with_payload=search.with_payload,
        )
    return qe.QueryRequest(
        limit=search.limit,
        query=_edge_fusion(search),
        prefetches=[_prefetch(search.dense, dim), _prefetch(search.sparse, dim)],
        with_payload=search.with_payload,
    )


def _prefetch(search: LegSearch, dim: int) -> qe.Prefetch:
    return qe.Prefetch(
        limit=search.limit,
        query=_nearest(search, dim),
        filter=_edge_filter(search.filter),
        params=_LIVE_IDF if search.leg == SPARSE else None,
    )


def _nearest(search: LegSearch, dim: int) -> qe.Query:
    if isinstance(search.vector, SparseVector):
        return qe.Query.Nearest(_edge_sparse(search.vector), using=SPARSE)
    return qe.Query.Nearest(_check_dim(search.vector, dim), using=DENSE)


def _edge_fusion(search: FusedSearch) -> Any:  # the stub types Fusion, not its nested Rrf and Dbsf classes
    fusion: Rrf | Dbsf = search.fusion
    if isinstance(fusion, Dbsf):
        return qe.Fusion.Dbsf()
    return qe.Fusion.Rrf(k=fusion.k, weights=fusion.weights if fusion.weighted else None)


def _edge_match_value(key: str, value: bool | int) -> qe.FieldCondition:
    # qdrant-edge 0.9 turns a Python bool into the integer 1/0, which never matches a JSON
    # boolean; numpy.bool_ is not an int subclass and arrives as a real bool.
    match: Any = np.bool_(value) if isinstance(value, bool) else value
    return qe.FieldCondition(key, match=qe.MatchValue(match))


_EDGE_CONDITIONS = ConditionSpelling(
    all_of=lambda parts: qe.Filter(must=parts),
    any_of=lambda parts: qe.Filter(should=parts),
    match_any=lambda key, values: qe.FieldCondition(key, match=qe.MatchAny(values)),
    match_value=_edge_match_value,
    range=lambda key, bounds: qe.FieldCondition(key, range=qe.RangeFloat(**bounds)),
    datetime_range=lambda key, bounds: qe.FieldCondition(key, range=qe.RangeDateTime(**bounds)),
)


def _edge_filter(condition: AllOf | None) -> qe.Filter | None:
    return render_condition(condition, _EDGE_CONDITIONS) if condition is not None else None


def _lock_directory(root: Path) -> int | None:
    """Take an exclusive, non-blocking flock on the directory's lock file."""
    if fcntl is None:  # pragma: no cover
        return None
    fd = os.open(root / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        os.close(fd)
        raise DataDirLocked(f"data directory {root} is in use by another Saekin process") from exc
    return fd


def _unlock_directory(fd: int | None) -> None:
    if fd is not None and fcntl is not None:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def _checked_dense(vector: Sequence[float] | np.ndarray, dim: int) -> list[float]:
    return _check_dim(dense_list(vector), dim)


def _check_dim(values: list[float], dim: int) -> list[float]:
    if len(values) != dim:
        raise InvalidInput(f"dense vector has {len(values)} dims, the collection {dim}")
    return values


def _edge_point(point: IndexPoint, dim: int) -> qe.Point:
    vector: dict[str, Any] = {DENSE: _checked_dense(point.dense, dim)}
    if point.sparse:  # an empty sparse vector is left out, as in the server adapter
        vector[SPARSE] = _edge_sparse(point.sparse)
    return qe.Point(point_id(point.id), vector, point.payload)


def _edge_sparse(vector: SparseVector) -> qe.SparseVector:
    return qe.SparseVector(list(vector.indices), list(vector.values))
