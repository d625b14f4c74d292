"""What Saekin asks of a vector index, described once and for every engine.

The adapters (edge.py: Qdrant Edge; server.py: qdrant-client) render these descriptions into their
engine's request objects and nothing more; nothing here imports an engine. A query is validated
once, when VectorIndex.query builds its IndexQuery, and planned as a few searches that an engine
runs in one request (LegSearch, FusedSearch). What an engine cannot express (score-based fusion with
weights, convex combinations, each leg's ranks for `explain`) is done here, over the candidates
those searches return (IndexQuery.answer).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar, Final, Literal, TypeGuard, cast

import numpy as np

from services.errors import InvalidInput
from services.vectors import SparseVector

# The two named vectors of every point: cosine dense vectors, and sparse vectors whose term
# weights the engine multiplies by IDF (Qdrant's BM25 IDF; the client supplies the TF part).
DENSE: Final = "dense"
SPARSE: Final = "sparse"
Leg = Literal["dense", "sparse"]
LEGS: tuple[Leg, Leg] = (DENSE, SPARSE)

# Qdrant's default RRF constant (DEFAULT_RRF_K in the engine and in qdrant-client):
# a point at 0-based position p in one prefetch gets 1 / (p + RRF_K).
RRF_K = 2
MAX_RRF_K = 1_000_000

# Extra hits fetched beyond `limit` so that ties at the cut are broken the same way
# (by point id) in every engine instead of by each engine's internal order.
TIE_MARGIN = 16

# Scores closer than this (relative) count as tied: engines differ in float rounding.
TIE_REL_TOL = 1e-6

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


# --- the collection schema --------------------------------------------------------------------

PayloadType = Literal["keyword", "integer"]

# Payload fields every collection indexes: deletes and filters select by them.
PAYLOAD_INDEXES: tuple[tuple[str, PayloadType], ...] = (
    ("document_id", "keyword"),
    ("external_id", "keyword"),
    ("generation", "integer"),
)


# Compact collections' HNSW graphs (links per node, candidates while building) and the
# candidates a dense search explores by default (SAEKIN_INDEX_HNSW_EF). Recall@10 against exact
# search on 100,000 synthetic 1024-dim vectors (README): m 16 / ef_construct 100 (Qdrant's
# defaults) 0.88, 0.967, 0.991 at ef 256, 512, 1024; m 32 / ef_construct 200 0.979 and 0.995 at
# ef 256 and 512, for the same build time here and twice the graph's size on disk; int8 or float
# alike. With int8 quantization, `limit` x QUANTIZED_OVERSAMPLING candidates are rescored with
# the float originals: at 200,000 points, 1 instead of 2 cost recall@10 0.998 -> 0.997 and took
# hybrid p50 from 7.4 to 4.8 ms (each extra candidate is a 4 KB read of the memory-mapped originals);
# at 1,000,000 recall@10 is the same with 1 or 2 (0.971, 0.984, 0.989 at ef 512, 768, 1024).
# m 48 was measured at 1,000,000 too (README): 0.981 at ef 512 for 11.2 ms a hybrid query, the
# same recall for the same time as m 32 at ef 768, with a larger graph and slower writes.
HNSW_M = 32
HNSW_EF_CONSTRUCT = 200
HNSW_EF = 512
QUANTIZED_OVERSAMPLING = 1.0


@dataclass(frozen=True)
class CollectionSchema:
    """A collection: a cosine dense vector of `dim` dimensions, an IDF sparse vector, payload indexes.

    `compact`: the dense vectors are searched as int8 copies kept in RAM (a quarter of the float
    size) and the best candidates rescored with the float originals, which stay on disk
    (memory-mapped) with the HNSW graph, the sparse index and the payloads; the operating
    system's page cache keeps what searches read. Otherwise everything dense stays in RAM.
    """

    dim: int
    payload_indexes: tuple[tuple[str, PayloadType], ...] = PAYLOAD_INDEXES
    compact: bool = True

    def __post_init__(self) -> None:
        if isinstance(self.dim, bool) or not isinstance(self.dim, int) or self.dim < 1:
            raise InvalidInput("dim must be at least 1")


# --- payload indexes for metadata filters -------------------------------------------------------

# The payload index a metadata condition can use: MatchAny of strings -> keyword, of integers ->
# integer (lookup only), MatchValue of a boolean -> bool, a numeric range -> float (it indexes
# integers too), a datetime range -> datetime.
FilterIndexKind = Literal["keyword", "integer", "bool", "float", "datetime"]

# The kinds a collection's settings may declare for a metadata key (CollectionPatch.filter_indexes).
DECLARABLE_KINDS: tuple[FilterIndexKind, ...] = ("keyword", "integer", "float", "datetime", "bool")

# Indexes made on first use are for the `metadata."key"` paths only; the fixed ones are above.
METADATA_PREFIX = "metadata."

# Kinds whose index answers the other kind's condition wrongly (measured on Qdrant Edge 0.9:
# with a float index a datetime range matches nothing, with a datetime index a numeric range
# matches nothing). Every other pairing falls back to reading the payload, so it stays correct.
_CONFLICTING_KINDS: frozenset[frozenset[str]] = frozenset({frozenset({"float", "datetime"})})

# Which kind wins when one filter asks for several on one key: ranges gain most from an index.
_KIND_PRIORITY: tuple[FilterIndexKind, ...] = ("float", "datetime", "keyword", "integer", "bool")


def filter_index_kinds(condition: Condition | None) -> dict[str, set[FilterIndexKind]]:
    """The payload index kinds each metadata path of a condition tree could use."""
    wanted: dict[str, set[FilterIndexKind]] = {}

    def walk(c: Condition) -> None:
        if isinstance(c, (AllOf, AnyOf)):
            for part in c.conditions:
                walk(part)
            return
        if not c.key.startswith(METADATA_PREFIX):
            return
        kind: FilterIndexKind
        if isinstance(c, MatchAny):
            if not c.values:
                return
            kind = "keyword" if isinstance(c.values[0], str) else "integer"
        elif isinstance(c, MatchValue):
            kind = "bool" if isinstance(c.value, bool) else "integer"
        else:
            kind = "datetime" if c.datetime else "float"
        wanted.setdefault(c.key, set()).add(kind)

    if condition is not None:
        walk(condition)
    return wanted


@dataclass
class FilterIndexes:
    """The payload indexes of one collection's metadata paths, made when a filter first uses a
    path (at most `limit` of them), and dropped for good when a path turns out to be filtered
    in two conflicting ways (see _CONFLICTING_KINDS): correct answers come before fast ones."""

    limit: int
    indexed: dict[str, FilterIndexKind] = field(default_factory=dict)
    mixed: set[str] = field(default_factory=set)

    @classmethod
    def from_schema(
        cls, schema: Mapping[str, Any], kind_of: Callable[[Any], FilterIndexKind | None], limit: int
    ) -> FilterIndexes:
        """The metadata indexes an engine reports (payload path -> index info, the kind read by
        `kind_of`), as made in an earlier run; one of a kind Saekin does not plan (made by
        someone else) counts as mixed: left alone."""
        indexes = cls(limit=limit)
        for reported, info in schema.items():
            key = reported_metadata_key(reported)
            if key is None:
                continue
            path, kind = metadata_path(key), kind_of(info)
            if kind is None:
                indexes.mixed.add(path)
            else:
                indexes.indexed[path] = kind
        return indexes

    def plan(self, wanted: Mapping[str, set[FilterIndexKind]]) -> tuple[list[tuple[str, FilterIndexKind]], list[str]]:
        """(indexes to create, indexes to drop) before a filter asking for `wanted` runs; the
        plan is recorded as done, so call it under the lock that serialises index changes."""
        create: list[tuple[str, FilterIndexKind]] = []
        drop: list[str] = []
        for path, kinds in wanted.items():
            if path in self.mixed:
                continue
            current = self.indexed.get(path)
            if current is not None:
                if _conflicting({current, *kinds}):
                    drop.append(path)
                    del self.indexed[path]
                    self.mixed.add(path)
                continue
            if _conflicting(kinds):
                self.mixed.add(path)
                continue
            if len(self.indexed) >= self.limit:
                continue
            kind = next(k for k in _KIND_PRIORITY if k in kinds)
            self.indexed[path] = kind
            create.append((path, kind))
        return create, drop

    def declare(
        self, declared: Mapping[str, FilterIndexKind], undeclared: Iterable[str] = ()
    ) -> tuple[list[tuple[str, FilterIndexKind]], list[str]]:
        """(indexes to create, indexes to drop) so that the paths a collection's settings declare
        (path -> kind) have indexes of those kinds, and the `undeclared` paths (declared before,
        no more) none. Declared indexes take their places in `limit` before any made on first
        use (the API refuses more declarations than the limit), so they are made even where
        first use filled it; a later filter that would read one wrongly still drops it (plan).
        Recorded as done, like plan()."""
        create: list[tuple[str, FilterIndexKind]] = []
        drop: list[str] = []
        for path in undeclared:
            if path not in declared and self.indexed.pop(path, None) is not None:
                drop.append(path)
        for path, kind in declared.items():
            current = self.indexed.get(path)
            if current == kind:
                continue
            if current is not None:
                drop.append(path)  # another kind made on first use: replaced
            self.mixed.discard(path)  # asked for by name: made again
            self.indexed[path] = kind
            create.append((path, kind))
        return create, drop

    def needs_change(self, wanted: Mapping[str, set[FilterIndexKind]]) -> bool:
        """Whether plan() would do anything (a cheap check without the lock)."""
        for path, kinds in wanted.items():
            if path in self.mixed:
                continue
            current = self.indexed.get(path)
            if current is None:
                if len(self.indexed) < self.limit or _conflicting(kinds):
                    return True
            elif _conflicting({current, *kinds}):
                return True
        return False


def _conflicting(kinds: set[FilterIndexKind]) -> bool:
    return any(frozenset({a, b}) in _CONFLICTING_KINDS for a in kinds for b in kinds)


# --- filters ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class IndexFilter:
    """Conditions that all must hold; each list accepts any of its values (an empty list matches nothing)."""

    document_ids: list[str] | None = None
    external_ids: list[str] | None = None
    # metadata key -> accepted values; matched against payload key f"metadata.{key}"
    metadata: dict[str, list[Any]] | None = None
    # metadata key -> bounds its value must lie within
    ranges: dict[str, IndexRange] | None = None


@dataclass(frozen=True)
class IndexRange:
    """Bounds on a numeric or datetime metadata value; unset bounds are open. `datetime`: the
    bounds are RFC 3339 strings and the values date or datetime strings; else numbers."""

    gt: float | str | None = None
    gte: float | str | None = None
    lt: float | str | None = None
    lte: float | str | None = None
    datetime: bool = False


# A filter as engines see it: a small tree of conditions on payload paths.


@dataclass(frozen=True)
class MatchAny:
    """The field holds one of the values (all strings or all integers); no values: matches nothing."""

    key: str
    values: tuple[str, ...] | tuple[int, ...]

    def as_list(self) -> list[str] | list[int]:
        return cast("list[str] | list[int]", list(self.values))


@dataclass(frozen=True)
class MatchValue:
    """The field holds exactly this boolean or integer."""

    key: str
    value: bool | int


@dataclass(frozen=True)
class Range:
    """The field's number (or, with `datetime`, its RFC 3339 date) lies in the range (bounds that
    are None are open)."""

    key: str
    gte: float | str | None = None
    lte: float | str | None = None
    lt: float | str | None = None
    gt: float | str | None = None
    datetime: bool = False

    def bounds(self) -> dict[str, float | str]:
        return {
            k: v for k, v in (("gte", self.gte), ("lte", self.lte), ("lt", self.lt), ("gt", self.gt)) if v is not None
        }


@dataclass(frozen=True)
class AllOf:
    """Every condition holds."""

    conditions: tuple[Condition, ...]


@dataclass(frozen=True)
class AnyOf:
    """At least one condition holds."""

    conditions: tuple[Condition, ...]


Condition = MatchAny | MatchValue | Range | AllOf | AnyOf


@dataclass(frozen=True)
class ConditionSpelling:
    """How one engine writes each kind of condition (render_condition walks the tree)."""

    all_of: Callable[[list[Any]], Any]
    any_of: Callable[[list[Any]], Any]
    match_any: Callable[[str, list[str] | list[int]], Any]
    match_value: Callable[[str, bool | int], Any]
    range: Callable[[str, dict[str, float]], Any]  # bounds: gte, lte, lt, gt (only those given)
    datetime_range: Callable[[str, dict[str, str]], Any]  # the same, RFC 3339 strings


def render_condition(c: Condition, spelling: ConditionSpelling) -> Any:
    """A condition tree in one engine's objects."""
    if isinstance(c, (AllOf, AnyOf)):
        parts = [render_condition(x, spelling) for x in c.conditions]
        return spelling.all_of(parts) if isinstance(c, AllOf) else spelling.any_of(parts)
    if isinstance(c, MatchAny):
        return spelling.match_any(c.key, c.as_list())
    if isinstance(c, MatchValue):
        return spelling.match_value(c.key, c.value)
    if c.datetime:
        return spelling.datetime_range(c.key, {k: str(v) for k, v in c.bounds().items()})
    return spelling.range(c.key, {k: float(v) for k, v in c.bounds().items()})


def filter_condition(flt: IndexFilter | None) -> AllOf | None:
    """An IndexFilter as a condition tree: every given field must match one of its values."""
    if flt is None:
        return None
    must: list[Condition] = []
    if flt.document_ids is not None:
        must.append(MatchAny("document_id", tuple(str(v) for v in flt.document_ids)))
    if flt.external_ids is not None:
        must.append(MatchAny("external_id", tuple(str(v) for v in flt.external_ids)))
    for key, values in (flt.metadata or {}).items():
        must.append(_any_of(metadata_path(key), values))
    for key, r in (flt.ranges or {}).items():
        must.append(Range(metadata_path(key), gt=r.gt, gte=r.gte, lt=r.lt, lte=r.lte, datetime=r.datetime))
    return AllOf(tuple(must)) if must else None


def document_condition(
    document_id: str, *, generation: int | None = None, below_generation: int | None = None
) -> AllOf:
    """A document's points: all of them, those of one generation, or those of the generations below one."""
    must: list[Condition] = [MatchAny("document_id", (document_id,))]
    if generation is not None:
        must.append(MatchValue("generation", int(generation)))
    if below_generation is not None:
        must.append(Range("generation", lt=int(below_generation)))
    return AllOf(tuple(must))


def _any_of(path: str, values: list[Any]) -> Condition:
    strs, ints, bools, floats = metadata_groups(values)
    conditions: list[Condition] = []
    if strs or not values:  # MatchAny([]) matches nothing, as an empty accepted list should
        conditions.append(MatchAny(path, tuple(strs)))
    if ints:
        conditions.append(MatchAny(path, tuple(ints)))
    conditions.extend(MatchValue(path, b) for b in bools)
    conditions.extend(Range(path, gte=f, lte=f) for f in floats)
    return conditions[0] if len(conditions) == 1 else AnyOf(tuple(conditions))


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


_UNSTORABLE_CHARACTER = re.compile("[\x00\ud800-\udfff]")


def unstorable_text(value: str) -> str | None:
    """Why no database or index here can hold the string `value` (None when they can): PostgreSQL
    refuses NUL (U+0000) in text and JSON, and a lone surrogate is not Unicode text at all (UTF-8
    cannot encode it), so one rule holds on SQLite, PostgreSQL and Qdrant alike."""
    found = _UNSTORABLE_CHARACTER.search(value)
    if found is None:
        return None
    if found.group() == "\x00":
        return "contains a NUL character (U+0000), which cannot be stored"
    return f"contains a lone surrogate (U+{ord(found.group()):04X}), which is not valid Unicode text"


# The same rules as JSON Schema patterns, for the OpenAPI document (generated clients and schemathesis
# then know them); validation stays with the functions here, whose messages name the problem.
STORABLE_TEXT_PATTERN = r"^[^\x00]*$"
QUERY_TEXT_PATTERN = r"^[^\x00]*[^\s\x00][^\x00]*$"  # and not blank
FILTER_KEY_PATTERN = r'^[^"\\\x00]{1,64}$'
METADATA_KEY_PATTERN = r'^[^."\\\x00]{1,64}$'


def metadata_key_problem(key: str) -> str | None:
    """Why `key` cannot be a filterable metadata key (None when it can): a Qdrant payload path
    quotes it as metadata."<key>" with no escapes, so neither '"' nor a backslash can be spelt."""
    if not key or len(key) > 64:
        return "must be 1-64 characters"
    if problem := unstorable_text(key):
        return problem
    if '"' in key or "\\" in key:
        return "must not contain '\"' or a backslash (a filter could not name it)"
    return None


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
    if problem := metadata_key_problem(key):
        raise InvalidInput(f"metadata key {key!r} {problem}", code="invalid_metadata")
    return f'metadata."{key}"'


def reported_metadata_indexes(
    schema: Mapping[str, Any], kind_of: Callable[[Any], FilterIndexKind | None]
) -> dict[str, FilterIndexKind]:
    """Metadata key -> index kind of an engine's payload schema (path -> index info), the kind read
    from each info by `kind_of`; paths outside metadata and kinds Saekin does not make are left out."""
    out: dict[str, FilterIndexKind] = {}
    for path, info in schema.items():
        key, kind = reported_metadata_key(path), kind_of(info)
        if key is not None and kind is not None:
            out[key] = kind
    return out


def reported_metadata_key(path: str) -> str | None:
    """The metadata key of a payload path as an engine reports it (it quotes a key only where it
    has to); None for a path outside metadata."""
    if not path.startswith(METADATA_PREFIX):
        return None
    rest = path[len(METADATA_PREFIX) :]
    return rest[1:-1] if rest.startswith('"') and rest.endswith('"') else rest


# --- fusion -------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class _LegWeights:
    """Each leg's weight in a fusion: a finite number above 0 (1 and 1: unweighted)."""

    dense_weight: float = 1.0
    sparse_weight: float = 1.0
    method: ClassVar[str]

    def __post_init__(self) -> None:
        for leg in LEGS:
            w = getattr(self, f"{leg}_weight")
            if isinstance(w, bool) or not isinstance(w, (int, float)) or not math.isfinite(w) or w <= 0:
                raise InvalidInput(f"{self.method} {leg} weight must be a finite number above 0, not {w!r}")
            object.__setattr__(self, f"{leg}_weight", float(w))

    @property
    def weighted(self) -> bool:
        """Whether the legs are weighted (not both 1)."""
        return (self.dense_weight, self.sparse_weight) != (1.0, 1.0)

    @property
    def weights(self) -> list[float]:
        """The weights in the order of the engine's prefetches: dense, sparse."""
        return [self.dense_weight, self.sparse_weight]

    def to_dict(self) -> dict[str, Any]:
        """The JSON form that fusion_spec reads."""
        return {"method": self.method, "weights": dict(zip(LEGS, self.weights, strict=True))}


@dataclass(frozen=True, kw_only=True)
class Rrf(_LegWeights):
    """Reciprocal rank fusion, computed by the engine as Qdrant defines it: a point at 0-based
    position p of a leg with weight w gains 1 / ((p + 1) / w + k - 1), which is 1 / (p + k) at w = 1."""

    k: int = RRF_K
    method: ClassVar[str] = "rrf"

    def __post_init__(self) -> None:
        if isinstance(self.k, bool) or not isinstance(self.k, int) or not 1 <= self.k <= MAX_RRF_K:
            raise InvalidInput(f"rrf k must be a whole number from 1 to {MAX_RRF_K}, not {self.k!r}")
        super().__post_init__()

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "k": self.k}


@dataclass(frozen=True, kw_only=True)
class Dbsf(_LegWeights):
    """Distribution-based score fusion (Qdrant's DBSF): each leg's scores mapped linearly so that
    mean - 3 std -> 0 and mean + 3 std -> 1 (sample std over the leg's candidates; a single
    candidate, or all equal, 0.5), then summed, each leg times its weight. Qdrant's Query API
    has no weights for DBSF."""

    method: ClassVar[str] = "dbsf"


@dataclass(frozen=True, kw_only=True)
class Convex:
    """A convex combination of scores: each leg's scores min-max normalised over its candidates
    (all equal: 1), fused as alpha * dense + (1 - alpha) * sparse; a candidate absent from a leg
    gets 0 in that leg."""

    alpha: float = 0.2
    method: ClassVar[str] = "convex"

    def __post_init__(self) -> None:
        a = self.alpha
        if isinstance(a, bool) or not isinstance(a, (int, float)) or not 0.0 <= a <= 1.0:  # NaN fails too
            raise InvalidInput(f"convex alpha (the dense weight) must be a number from 0 to 1, not {a!r}")
        object.__setattr__(self, "alpha", float(a))

    def to_dict(self) -> dict[str, Any]:
        """The JSON form that fusion_spec reads."""
        return {"method": self.method, "alpha": self.alpha}


FusionSpec = Rrf | Dbsf | Convex
_METHODS: dict[str, type[Rrf] | type[Dbsf] | type[Convex]] = {"rrf": Rrf, "dbsf": Dbsf, "convex": Convex}


def fusion_spec(value: FusionSpec | str | Mapping[str, Any]) -> FusionSpec:
    """A fusion specification from itself, a method name ('rrf', 'dbsf', 'convex': their defaults)
    or a mapping such as {"method": "rrf", "k": 60, "weights": {"dense": 0.5, "sparse": 1}} or
    {"method": "convex", "alpha": 0.2}; InvalidInput for anything else."""
    if isinstance(value, (Rrf, Dbsf, Convex)):
        return value
    if isinstance(value, str):
        if value not in _METHODS:
            raise InvalidInput(f"unknown fusion {value!r}; use one of {', '.join(map(repr, _METHODS))}")
        return _METHODS[value]()
    if not isinstance(value, Mapping):
        raise InvalidInput(f"fusion must be a method name or an object with 'method', not {value!r}")
    options = dict(value)
    method = options.pop("method", None)
    if not isinstance(method, str) or method not in _METHODS:
        raise InvalidInput(f"unknown fusion method {method!r}; use one of {', '.join(map(repr, _METHODS))}")
    allowed = {"rrf": {"k", "weights"}, "dbsf": {"weights"}, "convex": {"alpha"}}[method]
    if unknown := sorted(set(options) - allowed):
        raise InvalidInput(f"fusion {method!r} takes {sorted(allowed)}, not {unknown}")
    kwargs: dict[str, Any] = {k: v for k, v in options.items() if k != "weights"}
    if "weights" in options:
        weights = options["weights"]
        if not isinstance(weights, Mapping) or not set(weights) <= set(LEGS):
            raise InvalidInput(f"fusion weights must be an object with 'dense' and/or 'sparse', not {weights!r}")
        kwargs.update({f"{leg}_weight": w for leg, w in weights.items()})
    return _METHODS[method](**kwargs)


def in_engine(fusion: FusionSpec) -> TypeGuard[Rrf | Dbsf]:
    """Whether the engine's Query API can fuse (prefetch + fusion); otherwise the application fuses
    each leg's candidates. Qdrant's DBSF takes no weights, and min-max normalisation needs each
    leg's minimum and maximum, which a formula over one point's prefetch scores cannot see."""
    return isinstance(fusion, Rrf) or (isinstance(fusion, Dbsf) and not fusion.weighted)


# --- hits ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LegScore:
    """A hit's place in one leg's candidates: 1-based rank and score, None where the leg lacks it."""

    rank: int | None
    score: float | None


@dataclass(frozen=True)
class IndexHit:
    """One search result; `legs` (with explain) says where each leg of the query ranked it."""

    id: str
    score: float
    payload: dict[str, Any]
    legs: dict[str, LegScore] | None = None


def order_hits(hits: Sequence[IndexHit], limit: int) -> list[IndexHit]:
    """Sort by score, break (near-)ties by id, cut to limit: the same order from every engine."""
    by_score = sorted(hits, key=lambda h: -h.score)
    ordered: list[IndexHit] = []
    run: list[IndexHit] = []
    for hit in by_score:
        if run and not _tied(run[-1].score, hit.score):
            ordered.extend(sorted(run, key=lambda h: h.id))
            run = []
        run.append(hit)
    ordered.extend(sorted(run, key=lambda h: h.id))
    return ordered[:limit]


def _tied(a: float, b: float) -> bool:
    return abs(a - b) <= TIE_REL_TOL * max(abs(a), abs(b), 1e-12)


def dbsf_normalized(hits: Sequence[IndexHit]) -> dict[str, float]:
    """Qdrant's DBSF normalisation of one leg's candidates, by id."""
    if len(hits) == 1:
        return {hits[0].id: 0.5}
    scores = np.array([h.score for h in hits], dtype=np.float64)
    if not len(scores):
        return {}
    std = float(scores.std(ddof=1))
    if std == 0:
        return {h.id: 0.5 for h in hits}
    low = float(scores.mean()) - 3 * std
    return {h.id: (h.score - low) / (6 * std) for h in hits}


def minmax_normalized(hits: Sequence[IndexHit]) -> dict[str, float]:
    """One leg's candidates' scores mapped linearly onto 0..1 (all equal: 1), by id."""
    if not hits:
        return {}
    low, high = min(h.score for h in hits), max(h.score for h in hits)
    if high == low:
        return {h.id: 1.0 for h in hits}
    return {h.id: (h.score - low) / (high - low) for h in hits}


def fuse_in_app(fusion: Dbsf | Convex, dense: Sequence[IndexHit], sparse: Sequence[IndexHit]) -> list[IndexHit]:
    """The union of both legs' candidates with their fused scores (unordered)."""
    if isinstance(fusion, Dbsf):
        parts = [(fusion.dense_weight, dbsf_normalized(dense)), (fusion.sparse_weight, dbsf_normalized(sparse))]
    else:
        parts = [(fusion.alpha, minmax_normalized(dense)), (1.0 - fusion.alpha, minmax_normalized(sparse))]
    payloads = {h.id: h.payload for h in (*sparse, *dense)}
    return [
        IndexHit(id=pid, score=sum(w * norm.get(pid, 0.0) for w, norm in parts), payload=payload)
        for pid, payload in payloads.items()
    ]


# --- queries ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LegSearch:
    """The points nearest one vector: cosine for dense; for sparse, the dot product with IDF over the
    live points. Qdrant's own statistics come from the sparse index, which keeps counting deleted
    and overwritten points until a vacuum (qdrant/qdrant#6735), so the engines count live points
    at query time, except an Edge shard no point was deleted from or overwritten in since its
    last vacuum (edge._EXACT_IDF_MARKER), whose statistics give the same IDF three times faster."""

    leg: Leg
    vector: list[float] | SparseVector
    limit: int
    filter: AllOf | None
    with_payload: bool


@dataclass(frozen=True)
class FusedSearch:
    """Both legs prefetched, then fused by the engine. The filter sits on the prefetches only:
    fusion sees nothing else, and a third, top-level filter pass cost about 30% in Edge."""

    fusion: Rrf | Dbsf
    dense: LegSearch
    sparse: LegSearch
    limit: int
    with_payload: bool


Search = LegSearch | FusedSearch


def dense_list(vector: Sequence[float] | np.ndarray) -> list[float]:
    """A dense vector as a plain list of floats (both engines want lists)."""
    return np.asarray(vector, dtype=np.float32).ravel().tolist()


def query_mode(dense: Sequence[float] | np.ndarray | None, sparse: SparseVector | None) -> tuple[bool, bool]:
    """Which vectors a query uses; an empty sparse vector counts as absent."""
    has_dense = dense is not None and len(dense) > 0
    has_sparse = sparse is not None and bool(sparse)
    if not (has_dense or has_sparse):
        raise InvalidInput("a query needs a dense vector or a non-empty sparse vector")
    return has_dense, has_sparse


@dataclass(frozen=True)
class IndexQuery:
    """One validated query (VectorIndex.query builds it from its arguments): its searches, which
    the engine runs in one request, and how their results become the answer."""

    dense: list[float] | None
    sparse: SparseVector | None
    limit: int
    filter: AllOf | None
    fusion: FusionSpec
    prefetch_limit: int
    with_payload: bool
    explain: bool
    searches: tuple[Search, ...] = field(init=False)

    def __post_init__(self) -> None:
        if self.limit < 1:
            raise InvalidInput("limit must be at least 1")
        if self.prefetch_limit < 1:
            raise InvalidInput("prefetch_limit must be at least 1")
        if not self.dense and not self.sparse:
            raise InvalidInput("a query needs a dense vector or a non-empty sparse vector")
        object.__setattr__(self, "searches", self._plan())

    @property
    def hybrid(self) -> bool:
        return self.dense is not None and self.sparse is not None

    def _leg(self, leg: Leg, limit: int, with_payload: bool) -> LegSearch:
        vector = self.dense if leg == DENSE else self.sparse
        assert vector is not None
        return LegSearch(leg=leg, vector=vector, limit=limit, filter=self.filter, with_payload=with_payload)

    def _plan(self) -> tuple[Search, ...]:
        fetch = self.limit + TIE_MARGIN
        if not self.hybrid:
            return (self._leg(DENSE if self.dense is not None else SPARSE, fetch, self.with_payload),)
        depth = max(self.prefetch_limit, fetch)  # a prefetch smaller than the final limit would starve the fusion
        if in_engine(self.fusion):
            fused = FusedSearch(
                fusion=self.fusion,
                dense=self._leg(DENSE, depth, False),
                sparse=self._leg(SPARSE, depth, False),
                limit=fetch,
                with_payload=self.with_payload,
            )
            # With explain, each leg again in the same request: one round trip, and the fused
            # ranking is the engine's own, the same with or without explain.
            return (fused, fused.dense, fused.sparse) if self.explain else (fused,)
        # Fused in the application over each leg's candidates (see in_engine).
        return (self._leg(DENSE, depth, self.with_payload), self._leg(SPARSE, depth, self.with_payload))

    def answer(self, results: Sequence[Sequence[IndexHit]]) -> list[IndexHit]:
        """The hits, best first, from what the engine returned for each of `searches`."""
        if len(results) != len(self.searches):
            raise ValueError(f"{len(self.searches)} searches, {len(results)} results")
        ranked = [order_hits(r, len(r)) for r in results]  # ties in the engine's order broken by id
        first = self.searches[0]
        legs: dict[str, list[IndexHit]] = {}
        if isinstance(first, FusedSearch):
            hits = ranked[0]
            if self.explain:
                legs = dict(zip(LEGS, ranked[1:], strict=True))
        elif self.hybrid:
            assert isinstance(self.fusion, (Dbsf, Convex))
            legs = dict(zip(LEGS, ranked, strict=True))
            hits = order_hits(fuse_in_app(self.fusion, legs[DENSE], legs[SPARSE]), self.limit)
        else:
            hits = ranked[0]
            legs = {first.leg: hits}
        hits = hits[: self.limit]
        if not self.explain:
            return hits
        places = {
            leg: {h.id: LegScore(rank=i, score=h.score) for i, h in enumerate(leg_hits, start=1)}
            for leg, leg_hits in legs.items()
        }
        missing = LegScore(rank=None, score=None)
        return [replace(h, legs={leg: place.get(h.id, missing) for leg, place in places.items()}) for h in hits]
