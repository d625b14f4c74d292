"""VectorIndex on qdrant-client: a Qdrant server in production, local mode (`path=`) in tests."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
from qdrant_client import QdrantClient
from qdrant_client import models as qm
from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse

from services.errors import Conflict, DataDirLocked, InvalidInput, NotFound, ServiceUnavailable
from services.index.base import (
    DENSE,
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

# IDF over the live points, as in the Edge adapter: the server's default statistics keep counting
# deleted and overwritten points until a vacuum (qdrant/qdrant#6735). Needs Qdrant >= 1.20.
_LIVE_IDF = qm.SearchParams(idf=qm.IdfCorpusParams(corpus=qm.Filter()))

_PAYLOAD_INDEXES = {
    "document_id": qm.PayloadSchemaType.KEYWORD,
    "external_id": qm.PayloadSchemaType.KEYWORD,
    "generation": qm.PayloadSchemaType.INTEGER,
}


class ServerIndex(VectorIndex):
    """Collections in a Qdrant server (or in qdrant-client's local mode) through qdrant-client."""

    def __init__(self, client: QdrantClient, *, local: bool = False) -> None:
        self._client = client
        self._local = local
        # Local mode is plain Python over dicts and numpy arrays: one call at a time. The remote
        # client (httpx) is thread-safe, so there the lock is a no-op.
        self._lock: contextlib.AbstractContextManager[Any] = threading.RLock() if local else contextlib.nullcontext()

    @classmethod
    def connect(cls, url: str, *, api_key: str | None = None, timeout: int = 30) -> ServerIndex:
        """A client for a Qdrant server; nothing is contacted until the first call."""
        # check_compatibility would call the server here and only warn on failure.
        client = QdrantClient(url=url, api_key=api_key, timeout=timeout, check_compatibility=False)
        return cls(client)

    @classmethod
    def local(cls, path: Path | str) -> ServerIndex:
        """qdrant-client local mode under path (brute force; tests only)."""
        Path(path).mkdir(parents=True, exist_ok=True)
        try:
            client = QdrantClient(path=str(path), force_disable_check_same_thread=True)
        except RuntimeError as exc:
            if "already accessed" in str(exc):
                raise DataDirLocked(f"data directory {path} is in use by another Saekin process") from exc
            raise
        return cls(client, local=True)

    # --- collections -------------------------------------------------------------------

    def ensure_collection(self, name: str, *, dim: int) -> None:
        """Create the collection and payload indexes unless it exists; Conflict if its dim differs."""
        check_collection_name(name)
        if dim < 1:
            raise InvalidInput("dim must be at least 1")
        with self._calls(name):
            if not self._client.collection_exists(name):
                try:
                    self._client.create_collection(
                        name,
                        vectors_config={DENSE: qm.VectorParams(size=dim, distance=qm.Distance.COSINE)},
                        sparse_vectors_config={SPARSE: qm.SparseVectorParams(modifier=qm.Modifier.IDF)},
                    )
                except UnexpectedResponse as exc:
                    if exc.status_code != 409:  # another worker created it meanwhile
                        raise
            info = self._client.get_collection(name)
            vectors = info.config.params.vectors
            if not isinstance(vectors, dict) or DENSE not in vectors:
                raise Conflict(f"collection {name!r} has no named vector {DENSE!r}")
            if vectors[DENSE].size != dim:
                raise Conflict(f"collection {name!r} has dense dim {vectors[DENSE].size}, not {dim}")
            if not self._local:  # local mode ignores payload indexes (and warns)
                for key, schema in _PAYLOAD_INDEXES.items():
                    if key not in (info.payload_schema or {}):
                        self._client.create_payload_index(name, key, schema, wait=True)

    def collection_exists(self, name: str) -> bool:
        """Whether the collection exists."""
        check_collection_name(name)
        with self._calls(name):
            return bool(self._client.collection_exists(name))

    def drop_collection(self, name: str) -> None:
        """Delete the collection (no error if it does not exist)."""
        check_collection_name(name)
        with self._calls(name):
            self._client.delete_collection(name)

    # --- points ------------------------------------------------------------------------

    def upsert(self, name: str, points: Sequence[IndexPoint], *, batch_size: int = 128) -> None:
        """Upsert in batches, each acknowledged (wait=True) before the next."""
        if batch_size < 1:
            raise InvalidInput("batch_size must be at least 1")
        check_collection_name(name)
        structs = [_point_struct(p) for p in points]
        with self._calls(name):
            self._require(name)
            for i in range(0, len(structs), batch_size):
                self._client.upsert(name, points=structs[i : i + batch_size], wait=True)

    def delete_document(
        self, name: str, document_id: str, *, generation: int | None = None, below_generation: int | None = None
    ) -> None:
        """Delete by payload filter; a collection that does not exist has nothing to delete."""
        check_collection_name(name)
        must = [qm.FieldCondition(key="document_id", match=qm.MatchAny(any=[document_id]))]
        if generation is not None:
            must.append(qm.FieldCondition(key="generation", match=qm.MatchValue(value=int(generation))))
        if below_generation is not None:
            must.append(qm.FieldCondition(key="generation", range=qm.Range(lt=int(below_generation))))
        selector = qm.FilterSelector(filter=qm.Filter(must=must))
        with self._calls(name):
            if self._local and not self._client.collection_exists(name):
                return
            try:
                self._client.delete(name, points_selector=selector, wait=True)
            except UnexpectedResponse as exc:
                if exc.status_code != 404:
                    raise

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
        """Dense, sparse, or one fused Query API request with a prefetch per vector."""
        check_collection_name(name)
        check_query_args(limit, prefetch_limit, fusion)
        has_dense, has_sparse = query_mode(dense, sparse)
        fetch = limit + TIE_MARGIN
        flt = _filter(filter)
        dense_q = dense_list(dense) if has_dense else None
        sparse_q = qm.SparseVector(indices=list(sparse.indices), values=list(sparse.values)) if has_sparse else None
        if dense_q is not None and sparse_q is not None:
            pre = max(prefetch_limit, fetch)  # a prefetch smaller than the limit would starve the fusion
            # Plain FusionQuery(RRF) means k = RRF_K (the engine default); RrfQuery needs a newer server.
            fused = qm.FusionQuery(fusion=qm.Fusion.RRF if fusion == "rrf" else qm.Fusion.DBSF)
            # No top-level filter: fusion only sees filtered prefetches (as in the Edge adapter).
            kwargs: dict[str, Any] = dict(
                query=fused,
                prefetch=[
                    qm.Prefetch(query=dense_q, using=DENSE, limit=pre, filter=flt),
                    qm.Prefetch(query=sparse_q, using=SPARSE, limit=pre, filter=flt, params=_LIVE_IDF),
                ],
            )
        elif dense_q is not None:
            kwargs = dict(query=dense_q, using=DENSE, query_filter=flt)
        else:
            kwargs = dict(query=sparse_q, using=SPARSE, query_filter=flt, search_params=_LIVE_IDF)
        with self._calls(name):
            self._require(name)
            response = self._client.query_points(
                name, limit=fetch, with_payload=with_payload, with_vectors=False, **kwargs
            )
        hits = [IndexHit(id=str(p.id), score=float(p.score), payload=p.payload or {}) for p in response.points]
        return order_hits(hits, limit)

    def count(self, name: str, filter: IndexFilter | None = None) -> int:
        """Exact count of the points matching the filter."""
        check_collection_name(name)
        with self._calls(name):
            self._require(name)
            return int(self._client.count(name, count_filter=_filter(filter), exact=True).count)

    def close(self) -> None:
        """Close the client (local mode: release its storage lock)."""
        with self._lock:
            self._client.close()

    # --- internals -----------------------------------------------------------------------

    @contextlib.contextmanager
    def _calls(self, name: str) -> Iterator[None]:
        """Serialize local mode and turn transport and HTTP errors into domain errors."""
        try:
            with self._lock:
                yield
        except ResponseHandlingException as exc:  # connect/read errors, timeouts
            raise ServiceUnavailable(f"Qdrant server unreachable: {exc.source!r}") from exc
        except httpx.TransportError as exc:
            raise ServiceUnavailable(f"Qdrant server unreachable: {exc!r}") from exc
        except UnexpectedResponse as exc:
            status = exc.status_code or 0
            if status == 404:
                raise NotFound(f"collection {name!r} does not exist") from exc
            if status in (400, 422):
                raise InvalidInput(f"Qdrant rejected the request: {exc.content[:500]!r}") from exc
            raise ServiceUnavailable(f"Qdrant server error {status}: {exc.content[:500]!r}") from exc

    def _require(self, name: str) -> None:
        # A server answers 404 by itself; local mode raises a bare ValueError instead.
        if self._local and not self._client.collection_exists(name):
            raise NotFound(f"collection {name!r} does not exist")


def _point_struct(point: IndexPoint) -> qm.PointStruct:
    vector: dict[str, Any] = {DENSE: dense_list(point.dense)}
    if point.sparse:  # an empty sparse vector is left out, as in the Edge adapter
        vector[SPARSE] = qm.SparseVector(indices=list(point.sparse.indices), values=list(point.sparse.values))
    return qm.PointStruct(id=point_id(point.id), vector=vector, payload=point.payload)


def _filter(flt: IndexFilter | None) -> qm.Filter | None:
    """IndexFilter -> qdrant-client Filter: every given field must match one of its values."""
    if flt is None:
        return None
    must: list[Any] = []
    if flt.document_ids is not None:
        must.append(qm.FieldCondition(key="document_id", match=qm.MatchAny(any=[str(v) for v in flt.document_ids])))
    if flt.external_ids is not None:
        must.append(qm.FieldCondition(key="external_id", match=qm.MatchAny(any=[str(v) for v in flt.external_ids])))
    for key, values in (flt.metadata or {}).items():
        must.append(_any_of(metadata_path(key), values))
    # --- range filters (issue 16) ---
    for key, bounds in (flt.ranges or {}).items():
        kind = qm.DatetimeRange if bounds.datetime else qm.Range
        must.append(
            qm.FieldCondition(
                key=metadata_path(key), range=kind(gt=bounds.gt, gte=bounds.gte, lt=bounds.lt, lte=bounds.lte)
            )
        )
    return qm.Filter(must=must) if must else None


def _any_of(path: str, values: list[Any]) -> Any:
    strs, ints, bools, floats = metadata_groups(values)
    conditions: list[Any] = []
    if strs or not values:  # MatchAny([]) matches nothing, as an empty accepted list should
        conditions.append(qm.FieldCondition(key=path, match=qm.MatchAny(any=strs)))
    if ints:
        conditions.append(qm.FieldCondition(key=path, match=qm.MatchAny(any=ints)))
    for b in bools:
        conditions.append(qm.FieldCondition(key=path, match=qm.MatchValue(value=b)))
    for f in floats:
        conditions.append(qm.FieldCondition(key=path, range=qm.Range(gte=f, lte=f)))
    return conditions[0] if len(conditions) == 1 else qm.Filter(should=conditions)
