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
from services.index.base import (
    DENSE,
    RRF_K,
    SPARSE,
    TIE_MARGIN,
    Fusion,
    IndexFilter,
    IndexHit,
    IndexPoint,
    VectorIndex,
    check_collection_name,
    check_query_args,
    dense_list,
    metadata_groups,
    metadata_path,
    order_hits,
    point_id,
    query_mode,
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
        if dim < 1:
            raise InvalidInput("dim must be at least 1")
        with self._guard.read():  # fast path, without stalling queries behind the exclusive lock
            self._check_open()
            shard = self._shards.get(name)
        if shard is None:
            with self._guard.write():
                self._check_open()
                if name not in self._shards and not self._on_disk(name):
                    self._create(name, dim)
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
        must: list[Any] = [qe.FieldCondition("document_id", match=qe.MatchAny([document_id]))]
        if generation is not None:
            must.append(qe.FieldCondition("generation", match=qe.MatchValue(int(generation))))
        if below_generation is not None:
            must.append(qe.FieldCondition("generation", range=qe.RangeFloat(lt=float(below_generation))))
        operation = qe.UpdateOperation.delete_points_by_filter(qe.Filter(must=must))
        try:
            with self._use(name) as shard, shard.write_lock:
                shard.shard.update(operation)
                shard.shard.flush()
        except NotFound:
            return

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
        """Dense, sparse, or one fused request with a prefetch per vector."""
        check_query_args(limit, prefetch_limit, fusion)
        has_dense, has_sparse = query_mode(dense, sparse)
        fetch = limit + TIE_MARGIN
        flt = _edge_filter(filter)
        with self._use(name) as shard:
            dense_q = sparse_q = None
            if has_dense:
                dense_q = qe.Query.Nearest(_checked_dense(dense, shard.dim), using=DENSE)
            if has_sparse:
                sparse_q = qe.Query.Nearest(qe.SparseVector(list(sparse.indices), list(sparse.values)), using=SPARSE)
            if dense_q is not None and sparse_q is not None:
                # A prefetch smaller than the final limit would starve the fusion.
                pre = max(prefetch_limit, fetch)
                fused = qe.Fusion.Rrf(k=RRF_K) if fusion == "rrf" else qe.Fusion.Dbsf()
                request = qe.QueryRequest(
                    limit=fetch,
                    query=fused,
                    prefetches=[
                        qe.Prefetch(limit=pre, query=dense_q, filter=flt),
                        qe.Prefetch(limit=pre, query=sparse_q, filter=flt, params=_LIVE_IDF),
                    ],
                    # No top-level filter: fusion only sees filtered prefetches; a third pass cost ~30%.
                    with_payload=with_payload,
                )
            else:
                request = qe.QueryRequest(
                    limit=fetch,
                    query=dense_q if dense_q is not None else sparse_q,
                    filter=flt,
                    params=_LIVE_IDF if sparse_q is not None else None,
                    with_payload=with_payload,
                )
            points = shard.shard.query(request)
        hits = [IndexHit(id=str(p.id), score=float(p.score), payload=p.payload or {}) for p in points]
        return order_hits(hits, limit)

    def count(self, name: str, filter: IndexFilter | None = None) -> int:
        """Exact count of the points matching the filter."""
        with self._use(name) as shard:
            return int(shard.shard.count(qe.CountRequest(exact=True, filter=_edge_filter(filter))))

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
        edge_shard = load_shard(path)
        try:
            # Also repairs a shard whose indexes were never created (older code, a manual copy).
            if _ensure_payload_indexes(edge_shard):
                edge_shard.flush()
        except BaseException:
            edge_shard.close()  # else its WAL lock outlives the failure
            raise
        shard = _Shard(shard=edge_shard, dim=int(config["vectors"][DENSE]["size"]))
        self._shards[name] = shard
        return shard

    def _create(self, name: str, dim: int) -> None:
        """Create a shard in a scratch directory and rename it into place, so a crash leaves no half shard."""
        scratch = self._root / f"{_CREATING_PREFIX}{name}"
        shutil.rmtree(scratch, ignore_errors=True)
        config = qe.EdgeConfig(
            vectors={DENSE: qe.EdgeVectorParams(size=dim, distance=qe.Distance.Cosine)},
            sparse_vectors={SPARSE: qe.EdgeSparseVectorParams(modifier=qe.Modifier.Idf)},
        )
        shard = qe.EdgeShard.create(str(scratch), config)
        try:
            _ensure_payload_indexes(shard)
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


# IDF over the live points (a match-all corpus). The default, collection-wide statistics come
# from the sparse index, which keeps counting deleted and overwritten points until a vacuum
# (qdrant/qdrant#6735), so replacing a document would skew every score until then.
_LIVE_IDF = qe.SearchParams(idf=qe.IdfParams(corpus=qe.Filter()))

_PAYLOAD_INDEXES = {
    "document_id": qe.PayloadSchemaType.Keyword,
    "external_id": qe.PayloadSchemaType.Keyword,
    "generation": qe.PayloadSchemaType.Integer,
}


def _ensure_payload_indexes(shard: qe.EdgeShard) -> bool:
    """Create the missing payload indexes; True if any was created."""
    existing = shard.info().payload_schema
    missing = [(key, schema) for key, schema in _PAYLOAD_INDEXES.items() if key not in existing]
    for key, schema in missing:
        shard.update(qe.UpdateOperation.create_field_index(key, schema))
    return bool(missing)


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
    values = dense_list(vector)
    if len(values) != dim:
        raise InvalidInput(f"dense vector has {len(values)} dims, the collection {dim}")
    return values


def _edge_point(point: IndexPoint, dim: int) -> qe.Point:
    vector: dict[str, Any] = {DENSE: _checked_dense(point.dense, dim)}
    if point.sparse:  # an empty sparse vector is left out, as in the server adapter
        vector[SPARSE] = qe.SparseVector(list(point.sparse.indices), list(point.sparse.values))
    return qe.Point(point_id(point.id), vector, point.payload)


def _edge_filter(flt: IndexFilter | None) -> qe.Filter | None:
    """IndexFilter -> Edge Filter: every given field must match one of its values."""
    if flt is None:
        return None
    must: list[Any] = []
    if flt.document_ids is not None:
        must.append(qe.FieldCondition("document_id", match=qe.MatchAny([str(v) for v in flt.document_ids])))
    if flt.external_ids is not None:
        must.append(qe.FieldCondition("external_id", match=qe.MatchAny([str(v) for v in flt.external_ids])))
    for key, values in (flt.metadata or {}).items():
        must.append(_any_of(metadata_path(key), values))
    # --- range filters (issue 16) ---
    for key, bounds in (flt.ranges or {}).items():
        limits: dict[str, Any] = dict(gt=bounds.gt, gte=bounds.gte, lt=bounds.lt, lte=bounds.lte)
        condition = qe.RangeDateTime(**limits) if bounds.datetime else qe.RangeFloat(**limits)
        must.append(qe.FieldCondition(metadata_path(key), range=condition))
    return qe.Filter(must=must) if must else None


def _any_of(path: str, values: list[Any]) -> Any:
    strs, ints, bools, floats = metadata_groups(values)
    conditions: list[Any] = []
    if strs or not values:  # MatchAny([]) matches nothing, as an empty accepted list should
        conditions.append(qe.FieldCondition(path, match=qe.MatchAny(strs)))
    if ints:
        conditions.append(qe.FieldCondition(path, match=qe.MatchAny(ints)))
    for b in bools:
        # qdrant-edge 0.9 turns a Python bool into the integer 1/0, which never matches a JSON
        # boolean; numpy.bool_ is not an int subclass and arrives as a real bool.
        conditions.append(qe.FieldCondition(path, match=qe.MatchValue(np.bool_(b))))
    for f in floats:
        conditions.append(qe.FieldCondition(path, range=qe.RangeFloat(gte=f, lte=f)))
    return conditions[0] if len(conditions) == 1 else qe.Filter(should=conditions)
