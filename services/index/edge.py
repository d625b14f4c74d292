"""VectorIndex on Qdrant Edge (qdrant-edge-py 0.9): Qdrant's engine in-process, one shard per collection.

Layout under the root directory: `<collection>/` is an Edge shard (edge_config.json, wal/, segments/);
`.saekin-index.lock` is held (flock) by the process that owns the directory.
"""

from __future__ import annotations

import ctypes
import json
import logging
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import qdrant_edge as qe

from services.errors import Conflict, DataDirLocked, InvalidInput, NotFound
from services.index.base import IndexPoint, VectorIndex, check_collection_name, point_id
from services.index.edge_optimizer import CONFIG_FILE, VACUUMED, is_shard, vacuum_and_optimise
from services.index.query import (
    DENSE,
    HNSW_EF,
    HNSW_EF_CONSTRUCT,
    HNSW_M,
    QUANTIZED_OVERSAMPLING,
    SPARSE,
    AllOf,
    CollectionSchema,
    ConditionSpelling,
    Dbsf,
    FilterIndexes,
    FilterIndexKind,
    FusedSearch,
    IndexFilter,
    IndexHit,
    LegSearch,
    Rrf,
    Search,
    dense_list,
    document_condition,
    filter_condition,
    filter_index_kinds,
    metadata_path,
    render_condition,
    reported_metadata_indexes,
)
from services.vectors import SparseVector

try:  # POSIX only; elsewhere the shard's own WAL lock is the only guard
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None  # type: ignore[assignment]

LOCK_FILE = ".saekin-index.lock"
# Metadata paths per collection that get a payload index when a filter first uses them.
DEFAULT_FILTER_INDEX_LIMIT = 16
_CREATING_PREFIX = ".creating-"
# A background optimisation's copy of a shard, and the shard it replaced (until removed).
_OPTIMIZING_PREFIX = ".optimizing-"
_RETIRED_PREFIX = ".retired-"
# Written into the copy once it holds every write, just before the swap.
_COMPLETE_MARKER = ".saekin-complete"
# Present while the shard's sparse statistics count its live points only (no point deleted or
# overwritten since it was created or vacuumed): sparse searches may then take IDF from those
# statistics, 3x faster than counting the live points at every query (_LIVE_IDF). Shards without
# it (stale, or written by older code) count live points.
_EXACT_IDF_MARKER = ".saekin-exact-idf"
_REPO_ROOT = Path(__file__).resolve().parents[2]
# After a failed background optimisation, writes and searches do not start another for this long.
_RETRY_AFTER_FAILURE_S = 300.0

log = logging.getLogger(__name__)

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

    def __init__(
        self,
        root: Path | str,
        *,
        filter_index_limit: int = DEFAULT_FILTER_INDEX_LIMIT,
        optimize_after: int | None = None,
        compact: bool = True,
        hnsw_ef: int = HNSW_EF,
    ) -> None:
        """`optimize_after`: once this many points (and at least a quarter of the points the
        last optimisation saw) were written to a collection, optimise it in the background
        (optimize_in_background); None: only when asked. `compact`: new collections keep int8
        dense vectors in RAM and the rest on disk (query.CollectionSchema); existing ones keep
        the storage they were created with. `hnsw_ef`: candidates a dense search explores in
        an HNSW graph (more: better recall, slower)."""
        self._root = Path(root)
        self._compact = compact
        self._dense_search = _dense_search(hnsw_ef)
        self._filter_index_limit = filter_index_limit
        self._optimize_after = optimize_after
        self._root.mkdir(parents=True, exist_ok=True)
        self._lock_fd = _lock_directory(self._root)
        self._guard = _RWLock()  # shared: use an open shard; exclusive: open, create, drop, close
        self._shards: dict[str, _Shard] = {}
        self._closed = False
        # Leftovers of a create that crashed before its rename, and of background optimisations
        # that a crash interrupted; safe to settle, we own the directory.
        for leftover in self._root.glob(f"{_CREATING_PREFIX}*"):
            shutil.rmtree(leftover, ignore_errors=True)
        _settle_swaps(self._root)

    @property
    def root(self) -> Path:
        """The directory holding the shards."""
        return self._root

    # --- collections -------------------------------------------------------------------

    def ensure_collection(self, name: str, *, dim: int) -> None:
        """Create the shard and its payload indexes unless it exists; Conflict if its dim differs."""
        check_collection_name(name)
        schema = CollectionSchema(dim=dim, compact=self._compact)
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
            self._close_shard(name)
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
                if shard.tracks_staleness and _any_exist(shard.shard, [p.id for b in batches for p in b]):
                    self._mark_idf_stale(name, shard)
                for batch in batches:
                    shard.apply(qe.UpdateOperation.upsert_points(batch))
                shard.shard.flush()
                shard.pending += len(points)
                due = self._optimize_after is not None and shard.optimization_due(self._optimize_after)
        if due:
            self.optimize_in_background(name)

    def delete_document(
        self, name: str, document_id: str, *, generation: int | None = None, below_generation: int | None = None
    ) -> None:
        """Delete by payload filter; a collection that does not exist has nothing to delete."""
        condition = document_condition(document_id, generation=generation, below_generation=below_generation)
        selector = render_condition(condition, _EDGE_CONDITIONS)
        operation = qe.UpdateOperation.delete_points_by_filter(selector)
        try:
            with self._use(name) as shard, shard.write_lock:
                deleted = int(shard.shard.count(qe.CountRequest(exact=True, filter=selector)))
                if deleted:
                    self._mark_idf_stale(name, shard)
                    shard.pending += deleted  # the next background optimisation vacuums them
                shard.apply(operation)
                shard.shard.flush()
        except NotFound:
            return

    def _search(self, name: str, searches: Sequence[Search]) -> list[list[IndexHit]]:
        """The searches as Edge requests, one query or one batch."""
        with self._use(name) as shard:
            exact = shard.exact_idf
            results = self._run(shard, searches, _ENGINE_IDF if exact else _LIVE_IDF)
            if exact and not shard.exact_idf:  # a delete came in meanwhile (searches take no lock)
                results = self._run(shard, searches, _LIVE_IDF)
            # A collection left unoptimised by an earlier run is optimised once it is searched.
            due = self._optimize_after is not None and shard.optimization_due(self._optimize_after)
        if due:
            self.optimize_in_background(name)
        return [[IndexHit(id=str(p.id), score=float(p.score), payload=p.payload or {}) for p in r] for r in results]

    def _run(self, shard: _Shard, searches: Sequence[Search], sparse: qe.SearchParams) -> list[Any]:
        requests = [_edge_request(search, shard.dim, self._dense_search, sparse) for search in searches]
        if len(requests) == 1:
            return [shard.shard.query(requests[0])]
        return list(shard.shard.query_batch(qe.QueryBatchRequest(requests)))

    def _index_filter(self, name: str, condition: AllOf) -> None:
        """Create (or drop) payload indexes of the metadata paths a filter uses, as
        FilterIndexes plans; with an index a filtered query stops reading every payload."""
        wanted = filter_index_kinds(condition)
        if not wanted:
            return
        with self._use(name) as shard:
            if not shard.filter_indexes.needs_change(wanted):
                return
            with shard.write_lock:
                _change_filter_indexes(shard, *shard.filter_indexes.plan(wanted))

    def declare_filter_indexes(
        self, name: str, declared: Mapping[str, FilterIndexKind], *, undeclared: Iterable[str] = ()
    ) -> None:
        """Make the declared metadata indexes now (and drop the undeclared ones), as
        FilterIndexes.declare plans; Edge builds an index over the stored points at once."""
        paths = {metadata_path(key): kind for key, kind in declared.items()}
        gone = [metadata_path(key) for key in undeclared]
        with self._use(name) as shard, shard.write_lock:
            _change_filter_indexes(shard, *shard.filter_indexes.declare(paths, gone))

    def metadata_indexes(self, name: str) -> dict[str, FilterIndexKind]:
        """The shard's metadata payload indexes, as its info reports them."""
        with self._use(name) as shard:
            schema = shard.shard.info().payload_schema
        return reported_metadata_indexes(schema, _edge_kind)

    def count(self, name: str, filter: IndexFilter | None = None) -> int:
        """Exact count of the points matching the filter."""
        with self._use(name) as shard:
            return int(shard.shard.count(qe.CountRequest(exact=True, filter=_edge_filter(filter_condition(filter)))))

    def dense_vectors(self, name: str, ids: Sequence[str]) -> dict[str, list[float]]:
        """The dense vectors of the points that exist among `ids`."""
        with self._use(name) as shard:
            records = shard.shard.retrieve([point_id(i) for i in ids], with_payload=False, with_vector=[DENSE])
        vectors: dict[str, list[float]] = {}
        for record in records:
            found: Any = record.vector  # {name: vector} for named vectors
            if isinstance(found, dict) and DENSE in found:
                vectors[str(record.id)] = list(found[DENSE])
        return vectors

    def optimize(self, name: str) -> bool:
        """Merge segments, vacuum every deletion and build HNSW; Edge never does this by itself.

        qdrant-edge 0.9 holds the GIL for the whole run (seconds per 10k points), freezing every
        thread of the process: run it from maintenance code, not while serving. The shard is
        closed meanwhile (a background optimisation of it is abandoned) and its sparse
        statistics count live points only after it.
        """
        check_collection_name(name)
        with self._guard.write():
            self._check_open()
            if not self._close_shard(name) and not self._on_disk(name):
                raise NotFound(f"collection {name!r} does not exist")
            path = self._root / name
            changed = vacuum_and_optimise(path)
            _write_marker(path / _EXACT_IDF_MARKER)
            self._open_locked(name)
            return changed

    def optimize_in_background(self, name: str) -> threading.Thread | None:
        """Optimise the collection without stopping searches or writes; the thread doing it, or
        None when one is already running.

        The shard is copied (writes wait meanwhile, searches go on), a child process optimises
        the copy (qdrant-edge holds the GIL while it optimises, so not in this process), the
        writes made meanwhile are applied to the copy, and the copy replaces the shard (searches
        wait for the last writes, two renames and a load). A crash at any moment leaves the
        shard or its optimised copy with every write (_settle_swaps picks the right one).
        """
        with self._use(name) as shard, shard.write_lock:
            if shard.optimization is not None or shard.retired:
                return None
            thread = threading.Thread(
                target=self._optimize_copy, args=(name, shard), name=f"optimize-{name}", daemon=True
            )
            shard.optimization = _Optimization(thread=thread)
        thread.start()
        return thread

    def snapshot(self, destination: Path, *, while_paused: Callable[[], None] | None = None) -> list[str]:
        """Copy every collection's shard to `destination/<name>` (a backup); the names copied.

        Writes to all collections wait from before `while_paused` (run with them paused: the
        database's backup) until the last copy is made, so the copies are of one moment, after
        the database's; searches go on. The copy of a flushed shard under its write lock is
        what a background optimisation starts from too.
        """
        names = sorted(p.name for p in self._root.iterdir() if not p.name.startswith(".") and is_shard(p))
        for name in names:  # opened first: opening needs the exclusive lock
            with self._use(name):
                pass
        destination.mkdir(parents=True, exist_ok=True)
        with self._guard.read():
            self._check_open()
            shards = [(name, self._shards[name]) for name in names if name in self._shards]
            with ExitStack() as paused:
                for _, shard in shards:
                    paused.enter_context(shard.write_lock)
                for _, shard in shards:
                    shard.shard.flush()
                if while_paused is not None:
                    while_paused()
                for name, _ in shards:
                    shutil.copytree(
                        self._root / name, destination / name, ignore=shutil.ignore_patterns(_COMPLETE_MARKER)
                    )
        return [name for name, _ in shards]

    def optimization_status(self, name: str) -> dict[str, Any]:
        """The collection's background optimisation: running or not, points written since the last
        one, the last one's duration and error."""
        with self._use(name) as shard:
            return {
                "running": shard.optimization is not None,
                "pending_points": shard.pending,
                "last_seconds": shard.last_optimization_s,
                "last_error": shard.last_optimization_error,
            }

    def close(self) -> None:
        """Flush and close every shard and release the directory lock; idempotent. A background
        optimisation is abandoned (its child killed, its copy removed at the next start)."""
        with self._guard.write():
            if self._closed:
                return
            self._closed = True
            try:
                for shard in self._shards.values():
                    shard.retire()
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
        config = json.loads((path / CONFIG_FILE).read_text())
        dim = int(config["vectors"][DENSE]["size"])
        edge_shard = load_shard(path)
        try:
            # Also repairs a shard whose indexes were never created (older code, a manual copy).
            if _ensure_payload_indexes(edge_shard, CollectionSchema(dim=dim)):
                edge_shard.flush()
        except BaseException:
            edge_shard.close()  # else its WAL lock outlives the failure
            raise
        shard = _Shard(shard=edge_shard, dim=dim, filter_indexes=_filter_indexes(edge_shard, self._filter_index_limit))
        info = edge_shard.info()
        shard.pending = _unoptimised_points(info)
        shard.optimised_points = max(0, info.points_count - shard.pending)
        shard.exact_idf = (path / _EXACT_IDF_MARKER).is_file()
        self._shards[name] = shard
        return shard

    def _optimize_copy(self, name: str, shard: _Shard) -> None:
        """The background optimisation (optimize_in_background) of one shard, in its own thread."""
        path = self._root / name
        copy = self._root / f"{_OPTIMIZING_PREFIX}{name}"
        started = time.perf_counter()
        optimised: qe.EdgeShard | None = None
        swapped = swapping = False
        try:
            # 1. A consistent copy: writes wait while it is made, searches go on.
            with self._guard.read(), shard.write_lock:
                if shard.retired:
                    return
                shard.shard.flush()
                shutil.rmtree(copy, ignore_errors=True)
                shutil.copytree(path, copy, ignore=shutil.ignore_patterns(_COMPLETE_MARKER))
                shard.replay = []
                shard.stale_in_replay = False
                copied_pending, copied_points = shard.pending, shard.shard.info().points_count
            _step("copied")
            # 2. A child process optimises the copy.
            vacuumed = self._run_optimiser(shard, copy)
            _step("optimised")
            # 3. The writes made meanwhile, applied to the copy: writes wait, searches go on.
            with self._guard.read(), shard.write_lock:
                if shard.retired:
                    return
                optimised = load_shard(copy)
                replayed = _replay(shard.replay or [], optimised, 0)
            _step("caught-up")
            # 4. The swap: searches and writes wait for the last writes, two renames and a load.
            with self._guard.write():
                if self._closed or self._shards.get(name) is not shard:
                    return
                _replay(shard.replay or [], optimised, replayed)
                optimised.flush()
                optimised.close()
                optimised = None
                if vacuumed and not shard.stale_in_replay:
                    _write_marker(copy / _EXACT_IDF_MARKER)
                else:
                    (copy / _EXACT_IDF_MARKER).unlink(missing_ok=True)
                _write_marker(copy / _COMPLETE_MARKER)
                _step("marked")
                swapping = True
                shard.retire()
                shard.shard.close()
                del self._shards[name]  # reopened from disk below, or on next use after a failure
                retired = self._root / f"{_RETIRED_PREFIX}{name}"
                os.replace(path, retired)
                _step("moved-aside")
                os.replace(copy, path)
                _fsync_directory(self._root)
                swapped = True
                _step("swapped")
                (path / _COMPLETE_MARKER).unlink()
                fresh = self._open_locked(name)
                fresh.filter_indexes = shard.filter_indexes
                fresh.pending = max(0, shard.pending - copied_pending)
                fresh.optimised_points = copied_points
                fresh.last_optimization_s = time.perf_counter() - started
            shutil.rmtree(retired, ignore_errors=True)
            _release_freed_memory()
            log.info("collection %s optimised in the background in %.1fs", name, time.perf_counter() - started)
        except Exception as exc:
            if shard.retired and not swapping:  # closed or dropped meanwhile: its child was killed on purpose
                log.info("background optimisation of collection %s abandoned", name)
                return
            log.exception("background optimisation of collection %s failed", name)
            shard.last_optimization_error = str(exc)[:500]
            shard.retry_after = time.monotonic() + _RETRY_AFTER_FAILURE_S
            if optimised is not None:
                optimised.close()
                optimised = None
            with self._guard.write():
                if not self._closed and name not in self._shards:  # failed mid-swap: settle as a restart would
                    _settle_swap(self._root, name)
        finally:
            if optimised is not None:
                optimised.close()
            shard.replay = None
            shard.optimization = None
            if not swapped:
                shutil.rmtree(copy, ignore_errors=True)

    def _run_optimiser(self, shard: _Shard, copy: Path) -> bool:
        """Run edge_optimizer on the copy in a child process and wait for it (without the GIL);
        whether it reports every deleted point vacuumed (edge_optimizer.VACUUMED)."""
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(_REPO_ROOT), env.get("PYTHONPATH")]))
        process = subprocess.Popen(
            [sys.executable, "-m", "services.index.edge_optimizer", str(copy), str(os.getpid())],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        assert shard.optimization is not None
        shard.optimization.process = process
        if shard.retired:  # retired while it started: retire() may have missed it
            process.kill()
        out, err = process.communicate()
        if process.returncode != 0:
            raise RuntimeError(
                f"the optimiser process exited with status {process.returncode}: {err.decode(errors='replace')[-1000:]}"
            )
        return VACUUMED in out.decode(errors="replace").split()

    def _mark_idf_stale(self, name: str, shard: _Shard) -> None:
        """Before a delete or an overwrite (caller holds the write lock): the sparse statistics will
        count a point that is gone, so searches count live points until a vacuum. The marker goes
        first, so a crash after it leaves the shard stale, never wrongly exact."""
        if shard.exact_idf:
            (self._root / name / _EXACT_IDF_MARKER).unlink(missing_ok=True)
            _fsync_directory(self._root / name)
            shard.exact_idf = False
        if shard.replay is not None:
            shard.stale_in_replay = True

    def _create(self, name: str, schema: CollectionSchema) -> None:
        """Create a shard in a scratch directory and rename it into place, so a crash leaves no half shard."""
        scratch = self._root / f"{_CREATING_PREFIX}{name}"
        shutil.rmtree(scratch, ignore_errors=True)
        shard = qe.EdgeShard.create(str(scratch), _edge_config(schema))
        try:
            _ensure_payload_indexes(shard, schema)
            shard.flush()
        finally:
            shard.close()
        _write_marker(scratch / _EXACT_IDF_MARKER)
        target = self._root / name
        shutil.rmtree(target, ignore_errors=True)  # a directory without a config is no shard
        os.replace(scratch, target)

    def _close_shard(self, name: str) -> bool:
        """Retire and close the open shard (caller holds the exclusive lock); whether one was open."""
        shard = self._shards.pop(name, None)
        if shard is None:
            return False
        shard.retire()
        shard.shard.close()
        return True

    def _on_disk(self, name: str) -> bool:
        return is_shard(self._root / name)

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("the index is closed")


@dataclass
class _Optimization:
    thread: threading.Thread
    process: subprocess.Popen[bytes] | None = None


@dataclass
class _Shard:
    shard: qe.EdgeShard
    dim: int
    filter_indexes: FilterIndexes
    # Serializes updates and their flush; queries do not take it.
    write_lock: threading.Lock = field(default_factory=threading.Lock)
    # Points written since the last optimisation, and how many that one saw.
    pending: int = 0
    optimised_points: int = 0
    # While a copy is optimised in the background: the updates made since the copy.
    replay: list[qe.UpdateOperation] | None = None
    optimization: _Optimization | None = None
    last_optimization_s: float | None = None
    last_optimization_error: str | None = None
    retry_after: float = 0.0  # no automatic optimisation before this (time.monotonic) after a failure
    # Its sparse statistics count live points only (_EXACT_IDF_MARKER), and whether a point was
    # deleted or overwritten while a background optimisation ran (the copy then is not exact).
    exact_idf: bool = False
    stale_in_replay: bool = False
    # Closed, dropped or swapped out: a background optimisation of it must stop.
    retired: bool = False

    def apply(self, operation: qe.UpdateOperation) -> None:
        """Apply an update (caller holds write_lock), and keep it for the optimised copy if one is made."""
        self.shard.update(operation)
        if self.replay is not None:
            self.replay.append(operation)

    @property
    def tracks_staleness(self) -> bool:
        """Whether an overwrite must be looked for: it would end exactness, now or in the copy."""
        return self.exact_idf or self.replay is not None

    def optimization_due(self, minimum: int) -> bool:
        return (
            self.optimization is None
            and self.pending >= max(minimum, self.optimised_points // 4)
            and time.monotonic() >= self.retry_after
        )

    def retire(self) -> None:
        self.retired = True
        optimization = self.optimization
        if optimization is not None and optimization.process is not None:
            optimization.process.kill()


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
# IDF from the sparse index's statistics: right only while they count no deleted point.
_ENGINE_IDF = qe.SearchParams()

_PAYLOAD_TYPES = {"keyword": qe.PayloadSchemaType.Keyword, "integer": qe.PayloadSchemaType.Integer}


def _ensure_payload_indexes(shard: qe.EdgeShard, schema: CollectionSchema) -> bool:
    """Create the missing payload indexes; True if any was created."""
    existing = shard.info().payload_schema
    missing = [(key, kind) for key, kind in schema.payload_indexes if key not in existing]
    for key, kind in missing:
        shard.update(qe.UpdateOperation.create_field_index(key, _PAYLOAD_TYPES[kind]))
    return bool(missing)


# Integer indexes answer lookups only: with range on, a range condition reads the index, which
# holds no float values, and misses them (measured on Edge 0.9); a float index serves ranges.
_FILTER_INDEX_PARAMS: dict[FilterIndexKind, Callable[[], Any]] = {
    "keyword": lambda: qe.PayloadSchemaType.Keyword,
    "integer": lambda: qe.IntegerIndexParams(lookup=True, range=False),
    "bool": lambda: qe.PayloadSchemaType.Bool,
    "float": lambda: qe.PayloadSchemaType.Float,
    "datetime": lambda: qe.PayloadSchemaType.Datetime,
}
_FILTER_INDEX_KINDS: dict[Any, FilterIndexKind] = {
    qe.PayloadSchemaType.Keyword: "keyword",
    qe.PayloadSchemaType.Integer: "integer",
    qe.PayloadSchemaType.Bool: "bool",
    qe.PayloadSchemaType.Float: "float",
    qe.PayloadSchemaType.Datetime: "datetime",
}


def _filter_indexes(shard: qe.EdgeShard, limit: int) -> FilterIndexes:
    """The metadata indexes a shard already has (made on first use in an earlier run)."""
    return FilterIndexes.from_schema(shard.info().payload_schema, _edge_kind, limit)


def _edge_kind(info: Any) -> FilterIndexKind | None:
    return _FILTER_INDEX_KINDS.get(info.data_type)


def _edge_config(schema: CollectionSchema) -> qe.EdgeConfig:
    """A new shard's configuration (CollectionSchema says what `compact` keeps where)."""
    if not schema.compact:
        return qe.EdgeConfig(
            vectors={DENSE: qe.EdgeVectorParams(size=schema.dim, distance=qe.Distance.Cosine)},
            sparse_vectors={SPARSE: qe.EdgeSparseVectorParams(modifier=qe.Modifier.Idf)},
        )
    # Quantized copies and HNSW graphs exist in optimised segments only: new points are searched
    # exactly (float) until the next optimisation, in the background or by `saekin optimize`.
    dense = qe.EdgeVectorParams(
        size=schema.dim,
        distance=qe.Distance.Cosine,
        memory=qe.Memory.Cold,
        quantization_config=qe.ScalarQuantizationConfig(
            type=qe.ScalarType.Int8, quantile=0.99, memory=qe.Memory.Pinned
        ),
        hnsw_config=qe.HnswIndexConfig(
            m=HNSW_M, ef_construct=HNSW_EF_CONSTRUCT, full_scan_threshold=10_000, memory=qe.Memory.Cold
        ),
    )
    return qe.EdgeConfig(
        vectors={DENSE: dense},
        sparse_vectors={SPARSE: qe.EdgeSparseVectorParams(modifier=qe.Modifier.Idf, memory=qe.Memory.Cold)},
        payload_memory=qe.Memory.Cold,
    )


def _dense_search(hnsw_ef: int, oversampling: float = QUANTIZED_OVERSAMPLING) -> qe.SearchParams:
    """The dense leg's search parameters; collections without quantization ignore its part."""
    return qe.SearchParams(
        hnsw_ef=hnsw_ef, quantization=qe.QuantizationSearchParams(rescore=True, oversampling=oversampling)
    )


def _leg_params(search: LegSearch, dense: qe.SearchParams, sparse: qe.SearchParams) -> qe.SearchParams:
    return sparse if search.leg == SPARSE else dense


def _change_filter_indexes(shard: _Shard, create: list[tuple[str, FilterIndexKind]], drop: list[str]) -> None:
    """Apply what FilterIndexes planned to the shard (caller holds its write lock) and flush."""
    for path in drop:
        shard.apply(qe.UpdateOperation.delete_field_index(path))
    for path, kind in create:
        shard.apply(qe.UpdateOperation.create_field_index(path, _FILTER_INDEX_PARAMS[kind]()))
    if create or drop:
        shard.shard.flush()


def _edge_request(search: Search, dim: int, dense: qe.SearchParams, sparse: qe.SearchParams) -> qe.QueryRequest:
    if isinstance(search, LegSearch):
        return qe.QueryRequest(
            limit=search.limit,
            query=_nearest(search, dim),
            filter=_edge_filter(search.filter),
            params=_leg_params(search, dense, sparse),
            with_payload=search.with_payload,
        )
    return qe.QueryRequest(
        limit=search.limit,
        query=_edge_fusion(search),
        prefetches=[_prefetch(search.dense, dim, dense, sparse), _prefetch(search.sparse, dim, dense, sparse)],
        with_payload=search.with_payload,
    )


def _prefetch(search: LegSearch, dim: int, dense: qe.SearchParams, sparse: qe.SearchParams) -> qe.Prefetch:
    return qe.Prefetch(
        limit=search.limit,
        query=_nearest(search, dim),
        filter=_edge_filter(search.filter),
        params=_leg_params(search, dense, sparse),
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


def _step(name: str) -> None:
    """Called after each step of a background optimisation: the crash tests kill the process here."""


def _replay(operations: list[qe.UpdateOperation], shard: qe.EdgeShard, start: int) -> int:
    """Apply operations[start:] to the shard; how many operations are applied in all."""
    for operation in operations[start:]:
        shard.update(operation)
    return len(operations)


def _any_exist(shard: qe.EdgeShard, ids: list[Any]) -> bool:
    """Whether any of the point ids is stored (an upsert of it overwrites)."""
    return bool(ids) and bool(shard.retrieve(ids, with_payload=False, with_vector=False))


def _unoptimised_points(info: Any) -> int:
    """Points not yet in an indexed segment (an estimate, from the shard's counts).

    qdrant-edge 0.9's indexed_vectors_count adds the stored sparse vectors (about one a point) to
    the dense vectors of indexed segments: 11,000 points in a plain segment count 11,000, the same
    optimised plus 300 new ones 22,300."""
    return max(0, 2 * info.points_count - info.indexed_vectors_count)


def _settle_swaps(root: Path) -> None:
    """Finish or undo the swaps of background optimisations that a crash interrupted.

    A copy marked complete holds every write (the last ones were applied while writes waited),
    so it replaces a shard it was about to replace; an unmarked copy is discarded, and a shard
    moved aside is put back if nothing complete replaced it.
    """
    names = {p.name[len(prefix) :] for prefix in (_RETIRED_PREFIX, _OPTIMIZING_PREFIX) for p in root.glob(f"{prefix}*")}
    for name in names:
        _settle_swap(root, name)


def _settle_swap(root: Path, name: str) -> None:
    """_settle_swaps for one collection."""
    target, copy, retired = root / name, root / f"{_OPTIMIZING_PREFIX}{name}", root / f"{_RETIRED_PREFIX}{name}"
    if retired.is_dir() and not is_shard(target):
        shutil.rmtree(target, ignore_errors=True)
        os.replace(copy if (copy / _COMPLETE_MARKER).is_file() else retired, target)
        _fsync_directory(root)
    (target / _COMPLETE_MARKER).unlink(missing_ok=True)
    shutil.rmtree(retired, ignore_errors=True)
    shutil.rmtree(copy, ignore_errors=True)


def _release_freed_memory() -> None:
    """Hand the heap the replaced shard freed back to the OS: glibc keeps freed memory in its
    arenas, so without this the serving process stays at the size of its largest moment (the
    unoptimised segments' vectors in RAM before the swap)."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


def _write_marker(path: Path) -> None:
    with open(path, "w") as f:
        f.flush()
        os.fsync(f.fileno())
    _fsync_directory(path.parent)


def _fsync_directory(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


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
