"""IndexFilter.ranges (issue 16): numeric and datetime bounds give the same points in both adapters."""

from __future__ import annotations

import uuid

import numpy as np
import pytest

from services.index import IndexFilter, IndexPoint, IndexRange
from services.index.edge import EdgeIndex
from services.index.server import ServerIndex
from services.vectors import SparseVector

YEARS = [2018, 2019, 2020, 2021.5, 2022, 2024]
DATES = ["2018-01-01", "2019-06-30T12:00:00Z", "2020-02-29", "2021-12-31T23:59:59+09:00", "2022-07-01", "2024-01-01"]


@pytest.fixture(params=["edge", "local"])
def index(request, tmp_path):
    idx = EdgeIndex(tmp_path / "edge") if request.param == "edge" else ServerIndex.local(tmp_path / "local")
    idx.ensure_collection("r", dim=4)
    rng = np.random.default_rng(0)
    points = [
        IndexPoint(
            id=str(uuid.UUID(int=i + 1)),
            dense=rng.standard_normal(4),
            sparse=SparseVector([1], [1.0]),
            payload={"document_id": f"d{i}", "metadata": {"year": year, "date": date, "kind": "law"}},
        )
        for i, (year, date) in enumerate(zip(YEARS, DATES))
    ]
    idx.upsert("r", points)
    yield idx
    idx.close()


def matching(index, **ranges: IndexRange) -> set[int]:
    hits = index.query("r", sparse=SparseVector([1], [1.0]), limit=50, filter=IndexFilter(ranges=ranges))
    return {uuid.UUID(h.id).int - 1 for h in hits}


def test_numeric_ranges(index):
    assert matching(index, year=IndexRange(gte=2020, lt=2024)) == {2, 3, 4}
    assert matching(index, year=IndexRange(gt=2020)) == {3, 4, 5}
    assert matching(index, year=IndexRange(lte=2019)) == {0, 1}
    assert matching(index, year=IndexRange(gt=2021.5, lte=2022)) == {4}


def test_datetime_ranges(index):
    assert matching(index, date=IndexRange(gte="2020-01-01T00:00:00Z", datetime=True)) == {2, 3, 4, 5}
    # 2021-12-31T23:59:59+09:00 is 14:59:59 UTC
    assert matching(index, date=IndexRange(lt="2021-12-31T15:00:00Z", gt="2020-03-01T00:00:00Z", datetime=True)) == {3}


def test_ranges_combine_with_other_conditions(index):
    flt = IndexFilter(
        metadata={"kind": ["law"]},
        ranges={"year": IndexRange(lt=2020), "date": IndexRange(gte="2019-01-01T00:00:00Z", datetime=True)},
    )
    hits = index.query("r", sparse=SparseVector([1], [1.0]), limit=50, filter=flt)
    assert {uuid.UUID(h.id).int - 1 for h in hits} == {1}
