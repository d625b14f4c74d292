"""VectorIndex on qdrant-client: a Qdrant server in production, local mode (`path=`) in tests."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import httpx
from qdrant_client import QdrantClient
from qdrant_client import models as qm
from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse

from services.errors import Conflict, DataDirLocked, InvalidInput, NotFound, ServiceUnavailable
from services.index.base import IndexPoint, VectorIndex, check_collection_name, point_id
from services.index.query import (
    DENSE,
    HNSW_EF,
    HNSW_EF_CONSTRUCT,
    HNSW_M,
    QUANTIZED_OVERSAMPLING,
    RRF_K,
    SPARSE,
    AllOf,
    CollectionSchema,
    ConditionSpelling,
    Dbsf,
    FilterIndexes,
    FilterIndexKind,
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


class ServerIndex(VectorIndex):
    """Collections in a Qdrant server (or in qdrant-client's local mode) through qdrant-client."""

    def __init__(
        self,
        client: QdrantClient,
        *,
        local: bool = False,
        filter_index_limit: int = 16,
        compact: bool = True,
        hnsw_ef: int = HNSW_EF,
    ) -> None:
        self._client = client
        self._dense_search = _dense_search(hnsw_ef)
        self._compact = compact  # new collections: int8 dense vectors in RAM, the rest on disk
        self._local = local
        self._filter_index_limit = filter_index_limit
        self._filter_indexes: dict[str, FilterIndexes] = {}  # per collection, read from the server once
        self._filter_indexes_lock = threading.Lock()
        # Local mode is plain Python over dicts and numpy arrays: one call at a time. The remote
        # client (httpx) is thread-safe, so there the lock is a no-op.
        self._lock: contextlib.AbstractContextManager[Any] = threading.RLock() if local else contextlib.nullcontext()

    @classmethod
    def connect(
        cls,
        url: str,
        *,
        api_key: str | None = None,
        timeout: int = 30,
        filter_index_limit: int = 16,
        compact: bool = True,
        hnsw_ef: int = HNSW_EF,
    ) -> ServerIndex:
        """A client for a Qdrant server; nothing is contacted until the first call."""
        # check_compatibility would call the server here and only warn on failure.
        client = QdrantClient(url=url, api_key=api_key, timeout=timeout, check_compatibility=False)
        return cls(client, filter_index_limit=filter_index_limit, compact=compact, hnsw_ef=hnsw_ef)

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
        schema = CollectionSchema(dim=dim, compact=self._compact)
        with self._calls(name):
            if not self._client.collection_exists(name):
                try:
                    self._client.create_collection(name, **_collection_config(schema))
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
                for key, kind in schema.payload_indexes:
                    if key not in (info.payload_schema or {}):
                        self._client.create_payload_index(name, key, _PAYLOAD_TYPES[kind], wait=True)

    def collection_exists(self, name: str) -> bool:
        """Whether the collection, or an alias of that name, exists."""
        check_collection_name(name)
        with self._calls(name):
            return bool(self._client.collection_exists(name)) or self._alias_target(name) is not None

    def drop_collection(self, name: str) -> None:
        """Delete the collection (no error if it does not exist)."""
        check_collection_name(name)
        with self._filter_indexes_lock:
            self._filter_indexes.pop(name, None)
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
        condition = document_condition(document_id, generation=generation, below_generation=below_generation)
        selector = qm.FilterSelector(filter=render_condition(condition, _SERVER_CONDITIONS))
        with self._calls(name):
            if self._local and not self._client.collection_exists(name):
                return
            try:
                self._client.delete(name, points_selector=selector, wait=True)
            except UnexpectedResponse as exc:
                if exc.status_code != 404:
                    raise

    def _search(self, name: str, searches: Sequence[Search]) -> list[list[IndexHit]]:
        """The searches as Query API requests: one query_points call, or one batch."""
        requests = [_server_request(search, self._dense_search) for search in searches]
        with self._calls(name):
            self._require(name)
            if len(requests) == 1:
                r = requests[0]
                responses = [
                    self._client.query_points(
                        name,
                        query=r.query,
                        prefetch=r.prefetch,
                        using=r.using,
                        query_filter=r.filter,
                        search_params=r.params,
                        limit=searches[0].limit,
                        with_payload=searches[0].with_payload,
                        with_vectors=False,
                    )
                ]
            else:
                responses = self._client.query_batch_points(name, requests=requests)
        return [
            [IndexHit(id=str(p.id), score=float(p.score), payload=p.payload or {}) for p in response.points]
            for response in responses
        ]

    def declare_filter_indexes(
        self, name: str, declared: Mapping[str, FilterIndexKind], *, undeclared: Iterable[str] = ()
    ) -> None:
        """Make the declared metadata indexes (and drop the undeclared ones), as
        FilterIndexes.declare plans, waiting for the server to build them; local mode has no
        payload indexes, so there it only checks that the collection exists."""
        paths = {metadata_path(key): kind for key, kind in declared.items()}
        gone = [metadata_path(key) for key in undeclared]
        with self._calls(name):
            self._require(name)
        if self._local:
            return
        with self._filter_indexes_lock, self._calls(name):
            self._change_filter_indexes(name, *self._known_filter_indexes(name).declare(paths, gone), built=True)

    def metadata_indexes(self, name: str) -> dict[str, FilterIndexKind]:
        """The collection's metadata payload indexes, as the server reports them."""
        with self._calls(name):
            schema = self._client.get_collection(name).payload_schema or {}
        return reported_metadata_indexes(schema, _server_kind)

    def _change_filter_indexes(
        self, name: str, create: list[tuple[str, FilterIndexKind]], drop: list[str], *, built: bool
    ) -> None:
        """Apply what FilterIndexes planned (caller is inside _calls); drops are waited for, and
        creations too when `built` (else the server builds them in the background)."""
        for path in drop:
            self._client.delete_payload_index(name, path, wait=True)
        for path, kind in create:
            self._client.create_payload_index(name, path, _FILTER_INDEX_SCHEMAS[kind], wait=built)

    def _known_filter_indexes(self, name: str) -> FilterIndexes:
        """The collection's FilterIndexes, read from the server on first use (caller holds
        _filter_indexes_lock and is inside _calls)."""
        indexes = self._filter_indexes.get(name)
        if indexes is None:
            indexes = self._filter_indexes[name] = _filter_indexes(
                self._client.get_collection(name).payload_schema or {}, self._filter_index_limit
            )
        return indexes

    def _index_filter(self, name: str, condition: AllOf) -> None:
        """Create (or drop) payload indexes of the metadata paths a filter uses, as FilterIndexes
        plans; the server builds them in the background (local mode has no payload indexes)."""
        wanted = filter_index_kinds(condition)
        if self._local or not wanted:
            return
        with self._filter_indexes_lock:
            indexes = self._filter_indexes.get(name)
            if indexes is not None and not indexes.needs_change(wanted):
                return
            with self._calls(name):
                self._change_filter_indexes(name, *self._known_filter_indexes(name).plan(wanted), built=False)

    def count(self, name: str, filter: IndexFilter | None = None) -> int:
        """Exact count of the points matching the filter."""
        check_collection_name(name)
        with self._calls(name):
            self._require(name)
            return int(
                self._client.count(name, count_filter=_server_filter(filter_condition(filter)), exact=True).count
            )

    def dense_vectors(self, name: str, ids: Sequence[str]) -> dict[str, list[float]]:
        """The dense vectors of the points that exist among `ids`."""
        check_collection_name(name)
        with self._calls(name):
            self._require(name)
            records = self._client.retrieve(name, [point_id(i) for i in ids], with_payload=False, with_vectors=[DENSE])
        return {
            str(r.id): list(r.vector[DENSE])  # type: ignore[arg-type]
            for r in records
            if isinstance(r.vector, dict) and DENSE in r.vector
        }

    def switch(self, *, alias: str, target: str) -> tuple[str, str | None]:
        """Point the alias at `target` in one alias update, which Qdrant applies atomically:
        searches through the alias read the old collection or the new one, never neither."""
        check_collection_name(alias)
        check_collection_name(target)
        with self._calls(target):
            previous = self._alias_target(alias)
            operations: list[qm.AliasOperations] = []
            if previous is not None:
                operations.append(qm.DeleteAliasOperation(delete_alias=qm.DeleteAlias(alias_name=alias)))
            operations.append(
                qm.CreateAliasOperation(create_alias=qm.CreateAlias(collection_name=target, alias_name=alias))
            )
            self._client.update_collection_aliases(change_aliases_operations=operations)
        return alias, previous

    def _alias_target(self, alias: str) -> str | None:
        for found in self._client.get_aliases().aliases:
            if found.alias_name == alias:
                return found.collection_name
        return None

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
        vector[SPARSE] = _server_sparse(point.sparse)
    return qm.PointStruct(id=point_id(point.id), vector=vector, payload=point.payload)


# --- rendering query.py's descriptions as Query API requests -----------------------------------

# IDF over the live points: a match-all corpus (why: query.LegSearch). Needs Qdrant >= 1.20.
_LIVE_IDF = qm.SearchParams(idf=qm.IdfCorpusParams(corpus=qm.Filter()))

_PAYLOAD_TYPES = {"keyword": qm.PayloadSchemaType.KEYWORD, "integer": qm.PayloadSchemaType.INTEGER}


# Integer indexes for lookups only (a range over one would miss float values; see edge.py).
_FILTER_INDEX_SCHEMAS: dict[FilterIndexKind, qm.PayloadSchemaType | qm.IntegerIndexParams] = {
    "keyword": qm.PayloadSchemaType.KEYWORD,
    "integer": qm.IntegerIndexParams(type=qm.IntegerIndexType.INTEGER, lookup=True, range=False),
    "bool": qm.PayloadSchemaType.BOOL,
    "float": qm.PayloadSchemaType.FLOAT,
    "datetime": qm.PayloadSchemaType.DATETIME,
}


def _filter_indexes(schema: dict[str, qm.PayloadIndexInfo], limit: int) -> FilterIndexes:
    """The metadata indexes a collection already has (the server quotes keys only where needed)."""
    return FilterIndexes.from_schema(schema, _server_kind, limit)


def _server_kind(info: qm.PayloadIndexInfo) -> FilterIndexKind | None:
    return _SERVER_KINDS.get(_data_type(info))


def _data_type(info: qm.PayloadIndexInfo) -> str:
    return str(info.data_type.value if hasattr(info.data_type, "value") else info.data_type)


_SERVER_KINDS: dict[str, FilterIndexKind] = {
    "keyword": "keyword",
    "integer": "integer",
    "bool": "bool",
    "float": "float",
    "datetime": "datetime",
}


def _collection_config(schema: CollectionSchema) -> dict[str, Any]:
    """create_collection's arguments for a new collection (CollectionSchema says what `compact` keeps where)."""
    if not schema.compact:
        return {
            "vectors_config": {DENSE: qm.VectorParams(size=schema.dim, distance=qm.Distance.COSINE)},
            "sparse_vectors_config": {SPARSE: qm.SparseVectorParams(modifier=qm.Modifier.IDF)},
        }
    return {
        "vectors_config": {DENSE: qm.VectorParams(size=schema.dim, distance=qm.Distance.COSINE, on_disk=True)},
        "sparse_vectors_config": {
            SPARSE: qm.SparseVectorParams(modifier=qm.Modifier.IDF, index=qm.SparseIndexParams(on_disk=True))
        },
        "quantization_config": qm.ScalarQuantization(
            scalar=qm.ScalarQuantizationConfig(type=qm.ScalarType.INT8, quantile=0.99, always_ram=True)
        ),
        "hnsw_config": qm.HnswConfigDiff(on_disk=True, m=HNSW_M, ef_construct=HNSW_EF_CONSTRUCT),
        "on_disk_payload": True,
    }


def _dense_search(hnsw_ef: int) -> qm.SearchParams:
    """The dense leg's search parameters; collections without quantization ignore its part."""
    return qm.SearchParams(
        hnsw_ef=hnsw_ef, quantization=qm.QuantizationSearchParams(rescore=True, oversampling=QUANTIZED_OVERSAMPLING)
    )


def _leg_params(search: LegSearch, dense: qm.SearchParams) -> qm.SearchParams:
    return _LIVE_IDF if search.leg == SPARSE else dense


def _server_request(search: Search, dense: qm.SearchParams) -> qm.QueryRequest:
    if isinstance(search, LegSearch):
        return qm.QueryRequest(
            query=_nearest(search),
            using=search.leg,
            filter=_server_filter(search.filter),
            params=_leg_params(search, dense),
            limit=search.limit,
            with_payload=search.with_payload,
        )
    return qm.QueryRequest(
        query=_server_fusion(search.fusion),
        prefetch=[_prefetch(search.dense, dense), _prefetch(search.sparse, dense)],
        limit=search.limit,
        with_payload=search.with_payload,
    )


def _prefetch(search: LegSearch, dense: qm.SearchParams) -> qm.Prefetch:
    return qm.Prefetch(
        query=_nearest(search),
        using=search.leg,
        limit=search.limit,
        filter=_server_filter(search.filter),
        params=_leg_params(search, dense),
    )


def _nearest(search: LegSearch) -> list[float] | qm.SparseVector:
    if isinstance(search.vector, SparseVector):
        return _server_sparse(search.vector)
    return search.vector


def _server_fusion(fusion: Rrf | Dbsf) -> qm.FusionQuery | qm.RrfQuery:
    if isinstance(fusion, Dbsf):
        return qm.FusionQuery(fusion=qm.Fusion.DBSF)
    if fusion.k == RRF_K and not fusion.weighted:
        return qm.FusionQuery(fusion=qm.Fusion.RRF)  # Qdrant's plain RRF: any server version
    weights = fusion.weights if fusion.weighted else None
    return qm.RrfQuery(rrf=qm.Rrf(k=fusion.k, weights=weights))  # k needs Qdrant >= 1.16, weights 1.17


_SERVER_CONDITIONS = ConditionSpelling(
    all_of=lambda parts: qm.Filter(must=parts),
    any_of=lambda parts: qm.Filter(should=parts),
    match_any=lambda key, values: qm.FieldCondition(key=key, match=qm.MatchAny(any=values)),
    match_value=lambda key, value: qm.FieldCondition(key=key, match=qm.MatchValue(value=value)),
    range=lambda key, bounds: qm.FieldCondition(key=key, range=qm.Range(**bounds)),
    datetime_range=lambda key, bounds: qm.FieldCondition(key=key, range=qm.DatetimeRange(**bounds)),
)


def _server_filter(condition: AllOf | None) -> qm.Filter | None:
    return render_condition(condition, _SERVER_CONDITIONS) if condition is not None else None


def _server_sparse(vector: SparseVector) -> qm.SparseVector:
    return qm.SparseVector(indices=list(vector.indices), values=list(vector.values))
