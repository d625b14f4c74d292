"""The engine-independent helpers behind both adapters."""

from __future__ import annotations

import uuid

import pytest

from services.errors import InvalidInput
from services.index.base import check_collection_name, point_id
from services.index.query import IndexHit, metadata_groups, metadata_path, order_hits, query_mode
from services.vectors import SparseVector


def hit(pid: str, score: float) -> IndexHit:
    return IndexHit(id=pid, score=score, payload={})


def test_order_hits_breaks_ties_by_id_whatever_the_engine_order() -> None:
    engine_a = [hit("c", 0.5), hit("a", 0.5), hit("z", 0.9), hit("b", 0.5 + 1e-9), hit("d", 0.1)]
    engine_b = [hit("z", 0.9), hit("b", 0.5), hit("c", 0.5 - 1e-9), hit("a", 0.5), hit("d", 0.1)]
    expected = ["z", "a", "b", "c", "d"]
    assert [h.id for h in order_hits(engine_a, 10)] == expected
    assert [h.id for h in order_hits(engine_b, 10)] == expected
    assert [h.id for h in order_hits(engine_a, 2)] == ["z", "a"]


def test_order_hits_keeps_real_score_order() -> None:
    hits = [hit("a", 0.30), hit("b", 0.31), hit("c", 0.29)]
    assert [h.id for h in order_hits(hits, 3)] == ["b", "a", "c"]


def test_metadata_path_is_quoted() -> None:
    assert metadata_path("저자") == 'metadata."저자"'
    assert metadata_path("a.b c") == 'metadata."a.b c"'
    # A quoted path has no escapes: '"' and a backslash cannot be spelt.
    for bad in ("", 'a"b', "a\\b", "k\x00", "\ud800", "x" * 65):
        with pytest.raises(InvalidInput):
            metadata_path(bad)


def test_metadata_groups_split_by_type() -> None:
    assert metadata_groups(["x", 1, True, 2.5, False]) == (["x"], [1], [True, False], [2.5])
    with pytest.raises(InvalidInput):
        metadata_groups([None])


def test_point_id_is_canonical_uuid() -> None:
    u = uuid.uuid4()
    assert point_id(str(u).upper()) == str(u)
    with pytest.raises(InvalidInput):
        point_id("chunk-1")


@pytest.mark.parametrize("name", ["../x", ".hidden", "a/b", "", "x" * 200])
def test_unsafe_collection_names_rejected(name: str) -> None:
    with pytest.raises(InvalidInput):
        check_collection_name(name)


def test_query_mode() -> None:
    assert query_mode([1.0], None) == (True, False)
    assert query_mode([1.0], SparseVector()) == (True, False)
    assert query_mode(None, SparseVector([1], [1.0])) == (False, True)
    with pytest.raises(InvalidInput):
        query_mode(None, SparseVector())
