"""Sparse IDF from the shard's own statistics while they are exact (Qdrant Edge).

Qdrant's sparse statistics keep counting deleted and overwritten points until a vacuum
(qdrant/qdrant#6735). A shard no point was deleted from may take IDF from them (3x faster than
counting live points at every query); a delete or an overwrite makes it count live points until
the next background optimisation vacuums. Either way a sparse search scores like a collection
that holds only the live points.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence

import numpy as np

from services.index import IndexPoint
from services.index.edge import _EXACT_IDF_MARKER, EdgeIndex
from services.vectors import SparseVector

NAME = "stats"
DIM = 8
DOCS = [f"d{k}" for k in range(6)]


def points(doc: str, n: int = 80, *, shift: int = 0, dim: int = DIM) -> list[IndexPoint]:
    """Points of one document; the document's terms overlap the others' so deleting it moves every IDF."""
    k = DOCS.index(doc) if doc in DOCS else 7
    rng = np.random.default_rng(k + shift)
    return [
        IndexPoint(
            id=str(uuid.uuid5(uuid.NAMESPACE_URL, f"{doc}/{i}")),
            dense=rng.standard_normal(dim).astype(np.float32),
            sparse=SparseVector([1 + (i + k) % 5, 10 + k, 20 + i % 3], [1.0 + i / 100 + shift, 0.5, 0.25 + k / 10]),
            payload={"document_id": doc, "generation": 1},
        )
        for i in range(n)
    ]


def answers(index: EdgeIndex) -> list[list[tuple[str, float]]]:
    queries = [
        SparseVector([1, 12], [1.0, 1.0]),
        SparseVector([3, 21, 10], [0.5, 1.0, 1.0]),
        SparseVector([5, 15], [1, 2]),
    ]
    return [[(h.id, h.score) for h in index.query(NAME, sparse=q, limit=15, with_payload=False)] for q in queries]


def same(got: list[list[tuple[str, float]]], expected: list[list[tuple[str, float]]]) -> bool:
    """The same hits in the same order with the same scores, up to float summation order."""
    return [[i for i, _ in q] for q in got] == [[i for i, _ in q] for q in expected] and all(
        np.allclose([s for _, s in a], [s for _, s in b], rtol=1e-6, atol=0) for a, b in zip(got, expected, strict=True)
    )


def build(index: EdgeIndex, docs: list[str], dim: int = DIM) -> None:
    index.ensure_collection(NAME, dim=dim)
    for doc in docs:
        index.upsert(NAME, points(doc))


def live_only(
    tmp_path, docs: list[str], extra: Sequence[IndexPoint] = (), dim: int = DIM
) -> list[list[tuple[str, float]]]:
    """The answers of a fresh collection holding just these documents' points."""
    with EdgeIndex(tmp_path / f"fresh-{uuid.uuid4().hex}") as fresh:
        build(fresh, docs, dim)
        if extra:
            fresh.upsert(NAME, list(extra))
        return answers(fresh)


def marker(root) -> bool:
    return (root / NAME / _EXACT_IDF_MARKER).is_file()


def optimise(index: EdgeIndex) -> None:
    thread = index.optimize_in_background(NAME)
    assert thread is not None
    thread.join()
    assert index.optimization_status(NAME)["last_error"] is None


def test_a_delete_switches_to_live_counts_and_a_background_optimisation_back(tmp_path):
    root = tmp_path / "edge"
    with EdgeIndex(root) as index:
        build(index, DOCS)
        assert marker(root) and index._shards[NAME].exact_idf  # new points only: exact
        assert same(answers(index), live_only(tmp_path, DOCS))

        index.delete_document(NAME, "d2")
        assert not marker(root) and not index._shards[NAME].exact_idf
        expected = live_only(tmp_path, [d for d in DOCS if d != "d2"])
        assert same(answers(index), expected)
        # The case is one the shard's statistics get wrong: they still count d2.
        index._shards[NAME].exact_idf = True
        assert not same(answers(index), expected)
        index._shards[NAME].exact_idf = False

        optimise(index)  # vacuums d2's points: exact again
        assert marker(root) and index._shards[NAME].exact_idf
        assert same(answers(index), expected)

    with EdgeIndex(root) as index:  # and so after a restart
        assert index._shards.get(NAME) is None
        assert same(answers(index), expected) and index._shards[NAME].exact_idf


def test_a_delete_of_nothing_and_new_points_keep_it_exact(tmp_path):
    root = tmp_path / "edge"
    with EdgeIndex(root) as index:
        build(index, DOCS[:3])
        index.delete_document(NAME, "d1", generation=99)
        index.upsert(NAME, points("d3"))
        assert marker(root) and index._shards[NAME].exact_idf
        assert same(answers(index), live_only(tmp_path, DOCS[:4]))


def test_an_overwrite_switches_to_live_counts(tmp_path):
    root = tmp_path / "edge"
    with EdgeIndex(root) as index:
        build(index, DOCS)
        index.upsert(NAME, points("d4", 40, shift=1))  # the same ids, new vectors
        assert not marker(root)
        expected = live_only(tmp_path, [d for d in DOCS if d != "d4"], [*points("d4", 40, shift=1), *points("d4")[40:]])
        assert same(answers(index), expected)
        optimise(index)
        assert marker(root) and same(answers(index), expected)


def test_a_delete_while_the_copy_is_optimised_leaves_the_swapped_shard_counting_live(tmp_path, monkeypatch):
    root = tmp_path / "edge"
    with EdgeIndex(root) as index:
        build(index, DOCS)
        real_run = EdgeIndex._run_optimiser

        def run_after_a_delete(self, shard, copy):
            self.delete_document(NAME, "d5")  # replayed onto the vacuumed copy
            return real_run(self, shard, copy)

        monkeypatch.setattr(EdgeIndex, "_run_optimiser", run_after_a_delete)
        optimise(index)
        assert not marker(root) and not index._shards[NAME].exact_idf
        assert same(answers(index), live_only(tmp_path, DOCS[:5]))


def test_a_shard_without_the_marker_counts_live_points(tmp_path):
    root = tmp_path / "edge"
    with EdgeIndex(root) as index:
        build(index, DOCS)
        expected = answers(index)
    (root / NAME / _EXACT_IDF_MARKER).unlink()  # as a shard written before the marker existed
    with EdgeIndex(root) as index:
        assert same(answers(index), expected)
        assert not index._shards[NAME].exact_idf


def test_statistics_of_an_optimised_segment_and_the_new_one_add_up(tmp_path):
    dim = 256  # 11,000 points of 256 floats pass Qdrant's indexing threshold (10 MB): an indexed segment
    big = [p for doc in ("d0", "d1") for p in points(doc, 5_500, dim=dim)]
    late = points("d2", dim=dim)
    with EdgeIndex(tmp_path / "edge") as index:
        index.ensure_collection(NAME, dim=dim)
        index.upsert(NAME, big)
        optimise(index)
        index.upsert(NAME, late)  # into a new appendable segment
        assert index._shards[NAME].shard.info().segments_count == 2 and index._shards[NAME].exact_idf
        assert same(answers(index), live_only(tmp_path, [], [*big, *late], dim))
        # A delete from the indexed segment, whose statistics keep counting it (a plain segment's
        # are rebuilt from its live points when it is loaded).
        index.delete_document(NAME, "d1")
        expected = live_only(tmp_path, [], [*big[:5_500], *late], dim)
        assert same(answers(index), expected)
        index._shards[NAME].exact_idf = True
        assert not same(answers(index), expected)


def test_saekin_optimize_vacuums_too(tmp_path):
    root = tmp_path / "edge"
    with EdgeIndex(root) as index:
        build(index, DOCS)
        config = (root / NAME / "edge_config.json").read_text()
        index.delete_document(NAME, "d0")
        assert not marker(root)
        index.optimize(NAME)
        assert marker(root) and index._shards[NAME].exact_idf
        assert same(answers(index), live_only(tmp_path, DOCS[1:]))
        assert (root / NAME / "edge_config.json").read_text() == config  # its own settings are back
