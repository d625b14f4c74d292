"""Payload indexes made when a filter first uses a metadata key or declared in a collection's
settings (issue 20, item 2).

An indexed filter must return exactly the hits of the same filter without an index, for every
kind of condition, including a key filtered in ways one index kind would answer wrongly.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from services.errors import NotFound
from services.index import IndexFilter, IndexPoint, IndexRange
from services.index.edge import EdgeIndex
from services.index.query import FilterIndexes, filter_condition, filter_index_kinds, metadata_path
from services.index.server import ServerIndex
from services.vectors import SparseVector

NAME = "filtered"
DIM = 8
N = 400

# One value per point for each key; "mixed" holds numbers and dates, "any" every JSON type.
DATES = ["2020-01-05", "2021-06-30T12:00:00Z", "2022-02-28", "2023-12-31T23:59:59+09:00"]
MIXED: list[object] = [1, 2.5, 7, "2021-03-01", "2022-01-01T00:00:00Z"]
ANY: list[object] = ["a", 1, 2, 2.5, True, False, "b"]


def payload(i: int) -> dict:
    return {
        "document_id": f"d{i % 40}",
        "metadata": {
            "lang": ["ko", "en", "ja"][i % 3],
            "year": 2018 + i % 7,
            "score": round((i * 37 % 100) / 10, 1),
            "public": i % 2 == 0,
            "date": DATES[i % 4],
            "분류": f"분류{i % 5}",
            "a.b": f"v{i % 2}",
            "mixed": MIXED[i % len(MIXED)],
            "any": ANY[i % len(ANY)],
        },
    }


def points() -> list[IndexPoint]:
    rng = np.random.default_rng(3)
    return [
        IndexPoint(
            id=str(uuid.UUID(int=i + 1)),
            dense=rng.standard_normal(DIM).astype(np.float32),
            sparse=SparseVector([1, 2 + i % 5], [1.0, 0.5 + i / 1000]),  # no two points tie
            payload=payload(i),
        )
        for i in range(N)
    ]


FILTERS: list[IndexFilter] = [
    IndexFilter(metadata={"lang": ["ko"]}),
    IndexFilter(metadata={"year": [2019, 2021]}),
    IndexFilter(metadata={"public": [True]}),
    IndexFilter(metadata={"분류": ["분류2", "분류4"], "a.b": ["v1"]}),
    IndexFilter(ranges={"score": IndexRange(gte=2.5, lt=7)}),
    IndexFilter(ranges={"year": IndexRange(gt=2020)}),
    IndexFilter(ranges={"date": IndexRange(gte="2021-01-01T00:00:00Z", datetime=True)}),
    IndexFilter(metadata={"lang": ["en"]}, ranges={"year": IndexRange(lte=2022), "score": IndexRange(gt=1)}),
    # The same key as a number range, then as a date range: a float index would miss the dates.
    IndexFilter(ranges={"mixed": IndexRange(gte=1, lte=10)}),
    IndexFilter(ranges={"mixed": IndexRange(gte="2021-01-01T00:00:00Z", datetime=True)}),
    IndexFilter(metadata={"any": ["a", 1, 2.5, True]}),
    IndexFilter(ranges={"any": IndexRange(gte=1, lte=2)}),
]

QUERY_SPARSE = SparseVector([2, 3, 4, 5, 6], [1.0, 1.1, 1.2, 1.3, 1.4])


def answers(index: EdgeIndex) -> list[list[str]]:
    """Every filter's hits (ids in order) for a sparse and a hybrid query, and its count."""
    rng = np.random.default_rng(11)
    dense = rng.standard_normal(DIM).astype(np.float32)
    out = []
    for flt in FILTERS:
        out.append([h.id for h in index.query(NAME, sparse=QUERY_SPARSE, limit=N, filter=flt, with_payload=False)])
        out.append([h.id for h in index.query(NAME, dense=dense, sparse=QUERY_SPARSE, limit=20, filter=flt)])
        out.append([str(index.count(NAME, flt))])
    return out


@pytest.fixture(scope="module")
def unindexed(tmp_path_factory) -> tuple[Path, list[list[str]]]:
    """A shard written once and the answers it gives with no metadata index at all."""
    root = tmp_path_factory.mktemp("filter-indexes")
    with EdgeIndex(root / "baseline", filter_index_limit=0) as index:
        index.ensure_collection(NAME, dim=DIM)
        index.upsert(NAME, points())
        baseline = answers(index)
        assert not [k for k in index._shards[NAME].shard.info().payload_schema if k.startswith("metadata")]
    return root, baseline


def metadata_schema(index: EdgeIndex) -> dict[str, str]:
    schema = index._shards[NAME].shard.info().payload_schema
    return {k: str(info.data_type).rsplit(".", 1)[-1] for k, info in schema.items() if k.startswith("metadata")}


def test_indexed_filters_return_the_same_hits(unindexed):
    root, baseline = unindexed
    with EdgeIndex(root / "indexed") as index:
        index.ensure_collection(NAME, dim=DIM)
        index.upsert(NAME, points())
        assert answers(index) == baseline
        schema = metadata_schema(index)
        # Indexes of the right kinds were made on first use ...
        assert schema["metadata.lang"] == "Keyword"
        assert schema["metadata.year"] == "Integer"  # first used in a lookup; ranges read payloads
        assert schema["metadata.public"] == "Bool"
        assert schema["metadata.score"] == "Float"
        assert schema["metadata.date"] == "Datetime"
        assert schema["metadata.분류"] == "Keyword"
        assert schema['metadata."a.b"'] == "Keyword"
        # ... except on the key filtered both as numbers and as dates, where the float index
        # made by the first filter was dropped when the second came.
        assert "metadata.mixed" not in schema
        # Asked again, with every index in place, the answers still agree.
        assert answers(index) == baseline
        # After an optimisation (indexed, non-appendable segments), too.
        index.optimize(NAME)
        assert answers(index) == baseline


def test_indexes_survive_a_restart_and_are_not_made_twice(unindexed):
    root, baseline = unindexed
    with EdgeIndex(root / "restart") as index:
        index.ensure_collection(NAME, dim=DIM)
        index.upsert(NAME, points())
        answers(index)
        before = metadata_schema(index)
    with EdgeIndex(root / "restart") as index:
        index.count(NAME)  # opens the shard, which reads the indexes it already has
        known = index._shards[NAME].filter_indexes
        assert known.indexed[metadata_path("lang")] == "keyword"
        assert known.indexed[metadata_path("a.b")] == "keyword"
        assert known.indexed[metadata_path("분류")] == "keyword"
        assert not known.needs_change(filter_index_kinds(filter_condition(FILTERS[0])))
        assert answers(index) == baseline
        assert metadata_schema(index) == before


def test_limit_caps_the_indexes_made(unindexed):
    root, baseline = unindexed
    with EdgeIndex(root / "limited", filter_index_limit=2) as index:
        index.ensure_collection(NAME, dim=DIM)
        index.upsert(NAME, points())
        assert answers(index) == baseline
        assert len(metadata_schema(index)) == 2


def test_plan_picks_kinds_and_gives_up_on_conflicts():
    indexes = FilterIndexes(limit=3)
    year, date, lang = metadata_path("year"), metadata_path("date"), metadata_path("lang")
    assert indexes.plan({year: {"integer"}}) == ([(year, "integer")], [])
    # An integer index is correct for a range too (the range reads payloads): kept.
    assert indexes.plan({year: {"float"}}) == ([], [])
    assert indexes.plan({date: {"float", "keyword"}}) == ([(date, "float")], [])
    assert indexes.plan({date: {"datetime"}}) == ([], [date])
    assert indexes.plan({date: {"float"}}) == ([], [])  # given up for good
    assert indexes.plan({lang: {"datetime", "float"}}) == ([], [])
    assert lang in indexes.mixed
    assert indexes.plan({metadata_path("x"): {"keyword"}}) == ([(metadata_path("x"), "keyword")], [])
    assert indexes.plan({metadata_path("z"): {"bool"}}) == ([(metadata_path("z"), "bool")], [])
    assert indexes.plan({metadata_path("y"): {"keyword"}}) == ([], [])  # limit 3 reached
    assert not indexes.needs_change({metadata_path("y"): {"keyword"}})


def test_fixed_fields_are_not_planned():
    flt = IndexFilter(document_ids=["d1"], external_ids=["e"], metadata={"k": ["v"]})
    assert filter_index_kinds(filter_condition(flt)) == {metadata_path("k"): {"keyword"}}


# --- payload indexes declared in a collection's settings --------------------------------------

DECLARED = {
    "lang": "keyword",
    "year": "integer",
    "score": "float",
    "date": "datetime",
    "public": "bool",
    "a.b": "keyword",
}


def test_declared_indexes_are_made_at_once_beyond_first_use_and_answer_the_same(unindexed):
    root, baseline = unindexed
    with EdgeIndex(root / "declared", filter_index_limit=2) as index:
        index.ensure_collection(NAME, dim=DIM)
        index.upsert(NAME, points())
        index.declare_filter_indexes(NAME, {"분류": "keyword"})
        assert index.metadata_indexes(NAME) == {"분류": "keyword"}
        assert answers(index) == baseline  # first use fills the limit of 2
        first_use = index.metadata_indexes(NAME)
        assert len(first_use) == 2
        # Declared ones are made whatever first use left: the API keeps them within the limit.
        index.declare_filter_indexes(NAME, DECLARED, undeclared=["분류"])
        assert index.metadata_indexes(NAME) == {**DECLARED, **{k: v for k, v in first_use.items() if k != "분류"}}
        assert answers(index) == baseline
        index.optimize(NAME)
        assert answers(index) == baseline
    with EdgeIndex(root / "declared", filter_index_limit=2) as index:  # kept on disk, known after a restart
        before = index.metadata_indexes(NAME)
        assert before.items() >= DECLARED.items()
        index.declare_filter_indexes(NAME, DECLARED)  # nothing to do
        assert index.metadata_indexes(NAME) == before
        index.declare_filter_indexes(NAME, {"year": "float"}, undeclared=DECLARED)
        assert {k: v for k, v in index.metadata_indexes(NAME).items() if k in DECLARED} == {"year": "float"}
        assert answers(index) == baseline
        with pytest.raises(NotFound):
            index.declare_filter_indexes("missing", DECLARED)


def test_local_mode_accepts_declarations_without_payload_indexes(tmp_path):
    with ServerIndex.local(tmp_path / "local") as index:
        index.ensure_collection(NAME, dim=DIM)
        index.upsert(NAME, points()[:50])
        flt = IndexFilter(metadata={"lang": ["ko"]}, ranges={"score": IndexRange(gt=1)})
        before = [h.id for h in index.query(NAME, sparse=QUERY_SPARSE, limit=50, filter=flt)]
        index.declare_filter_indexes(NAME, DECLARED)
        assert index.metadata_indexes(NAME) == {}  # local mode has none
        assert [h.id for h in index.query(NAME, sparse=QUERY_SPARSE, limit=50, filter=flt)] == before
        with pytest.raises(NotFound):
            index.declare_filter_indexes("missing", DECLARED)


@pytest.mark.filterwarnings("ignore:Payload indexes have no effect")
def test_server_adapter_asks_for_the_declared_kinds():
    from qdrant_client import QdrantClient
    from qdrant_client import models as qm

    # A server's calls, recorded on an in-memory client (which keeps no payload indexes itself).
    index = ServerIndex(QdrantClient(location=":memory:"), local=False)
    index.ensure_collection(NAME, dim=DIM)
    calls: list[tuple[str, str, object]] = []
    client: Any = index._client
    client.create_payload_index = lambda name, path, schema, wait: calls.append(("create", path, schema))
    client.delete_payload_index = lambda name, path, wait: calls.append(("delete", path, None))
    index.declare_filter_indexes(NAME, {"lang": "keyword", "score": "float", "date": "datetime", "a.b": "bool"})
    assert calls == [
        ("create", 'metadata."lang"', qm.PayloadSchemaType.KEYWORD),
        ("create", 'metadata."score"', qm.PayloadSchemaType.FLOAT),
        ("create", 'metadata."date"', qm.PayloadSchemaType.DATETIME),
        ("create", 'metadata."a.b"', qm.PayloadSchemaType.BOOL),
    ]
    calls.clear()
    index.declare_filter_indexes(NAME, {"lang": "keyword", "score": "integer"}, undeclared=["date", "a.b", "lang"])
    assert calls[:2] == [("delete", 'metadata."date"', None), ("delete", 'metadata."a.b"', None)]
    assert calls[2][:2] == ("delete", 'metadata."score"')
    assert calls[3][:2] == ("create", 'metadata."score"') and calls[3][2].lookup and not calls[3][2].range
    index.close()


def test_declare_plans_around_first_use():
    indexes = FilterIndexes(limit=2)
    year, date, lang = metadata_path("year"), metadata_path("date"), metadata_path("lang")
    assert indexes.plan({year: {"integer"}, date: {"float"}}) == ([(year, "integer"), (date, "float")], [])
    assert indexes.declare({date: "datetime", lang: "keyword"}) == ([(date, "datetime"), (lang, "keyword")], [date])
    assert indexes.declare({date: "datetime", lang: "keyword"}) == ([], [])
    # A filter the declared kind would answer wrongly still drops it (correct before fast) ...
    assert indexes.plan({date: {"float"}}) == ([], [date])
    # ... until it is declared again.
    assert indexes.declare({date: "datetime"}, undeclared=[lang]) == ([(date, "datetime")], [lang])
    assert indexes.indexed == {year: "integer", date: "datetime"}
