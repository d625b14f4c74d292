"""Optimising a Qdrant Edge collection while it serves (issue 20, item 1).

Searches answer during the optimisation with the answers they gave before it, writes made while
it runs are all there after the swap, and a process killed at any step reopens to a consistent
index holding every write it acknowledged.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import numpy as np
import pytest

from services.index import IndexFilter, IndexPoint
from services.index.edge import EdgeIndex
from services.vectors import SparseVector

REPO = Path(__file__).resolve().parents[2]
NAME = "growing"
DIM = 8
BATCH = 100


def make_points(start: int, n: int, doc: str) -> list[IndexPoint]:
    rng = np.random.default_rng(start)
    return [
        IndexPoint(
            id=str(uuid.UUID(int=i + 1)),
            dense=rng.standard_normal(DIM).astype(np.float32),
            sparse=SparseVector([2 + i % 7, 10 + i % 11], [0.25 + (i % 997) / 500 + i / 1e6, 1 + i / 1e5]),  # no ties
            payload={"document_id": doc, "generation": 1, "metadata": {"part": i % 3}},
        )
        for i in range(start, start + n)
    ]


FIXED = make_points(0, 600, "fixed")  # written before, searched during and after
FIXED_ONLY = IndexFilter(document_ids=["fixed"])


def fixed_answers(index: EdgeIndex) -> list[list[tuple[str, float]]]:
    rng = np.random.default_rng(5)
    out = []
    for q in range(6):
        dense = rng.standard_normal(DIM).astype(np.float32)
        sparse = SparseVector([2 + q, 10 + q], [1.0, 0.5])
        for kwargs in ({"dense": dense}, {"sparse": sparse}, {"dense": dense, "sparse": sparse, "fusion": "rrf"}):
            hits = index.query(NAME, limit=10, filter=FIXED_ONLY, with_payload=False, **kwargs)
            out.append([(h.id, round(h.score, 5)) for h in hits])
    return out


def write_fixed(index: EdgeIndex) -> None:
    index.ensure_collection(NAME, dim=DIM)
    for i in range(0, len(FIXED), BATCH):  # one upsert per batch: several segments' worth of writes
        index.upsert(NAME, FIXED[i : i + BATCH])


def shard_dirs(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir() if p.is_dir())


def test_searches_answer_and_writes_survive_during_a_background_optimisation(tmp_path, monkeypatch):
    root = tmp_path / "edge"
    with EdgeIndex(root) as index:
        write_fixed(index)
        index.delete_document(NAME, "fixed", generation=99)  # a delete that removes nothing
        before = fixed_answers(index)

        # Run searches and writes while the child process optimises the copy (deterministically:
        # the optimiser starts only after they are done).
        during: list[list[list[tuple[str, float]]]] = []
        late = make_points(10_000, 250, "late")
        real_run = EdgeIndex._run_optimiser

        def run_after_traffic(self, shard, copy):
            during.append(fixed_answers(index))
            index.upsert(NAME, late[:150])
            index.delete_document(NAME, "late", generation=1)  # delete those ...
            index.upsert(NAME, late[150:])  # ... and write others: the replay keeps the order
            index.query(NAME, sparse=SparseVector([1], [1.0]), filter=IndexFilter(metadata={"part": [1]}))
            real_run(self, shard, copy)
            during.append(fixed_answers(index))  # the child has finished, nothing swapped yet

        monkeypatch.setattr(EdgeIndex, "_run_optimiser", run_after_traffic)
        thread = index.optimize_in_background(NAME)
        assert thread is not None
        assert index.optimize_in_background(NAME) is None  # one at a time
        thread.join()
        status = index.optimization_status(NAME)
        assert status["last_error"] is None and status["last_seconds"] is not None
        assert not status["running"]

        # Before the writes the answers are those from before the optimisation; after them (IDF
        # counts every live point, so the writes change sparse scores) those of the swapped-in
        # shard holding the same points.
        after = fixed_answers(index)
        assert during == [before, after]
        assert index.count(NAME, IndexFilter(document_ids=["late"])) == 100
        assert index.count(NAME) == 700
        # The filter index made during the optimisation came along.
        schema = index._shards[NAME].shard.info().payload_schema
        assert str(schema["metadata.part"].data_type).endswith("Integer")
        assert shard_dirs(root) == [NAME]  # no copy or retired shard left behind
        # Writes after the swap go to the optimised shard.
        index.upsert(NAME, make_points(20_000, 10, "after"))
        assert index.count(NAME, IndexFilter(document_ids=["after"])) == 10

    with EdgeIndex(root) as index:  # and all of it is on disk
        assert index.count(NAME) == 710
        index.delete_document(NAME, "after")
        assert fixed_answers(index) == after


def test_optimisation_starts_by_itself_after_enough_writes(tmp_path):
    with EdgeIndex(tmp_path / "edge", optimize_after=300) as index:
        write_fixed(index)  # 600 points: crosses 300 once (the second starts only after 1/4 more)
        for _ in range(100):
            optimization = index._shards[NAME].optimization
            if optimization is None:
                break
            optimization.thread.join()
        status = index.optimization_status(NAME)
        assert status["last_seconds"] is not None and status["last_error"] is None
        assert index.count(NAME) == len(FIXED)


def test_a_reopened_collection_knows_its_unoptimised_points(tmp_path):
    """So one left unoptimised by an earlier run is optimised once it is used, not after as many again."""
    dim = 256  # 11,000 points of 256 floats pass Qdrant's indexing threshold (10 MB): an indexed segment
    rng = np.random.default_rng(0)

    def points(start: int, n: int) -> list[IndexPoint]:
        return [
            IndexPoint(
                id=str(uuid.UUID(int=i + 1)),
                dense=rng.standard_normal(dim).astype(np.float32),
                sparse=SparseVector([i % 50, 100 + i % 7], [1.0, 0.5]),
                payload={"document_id": "d", "generation": 1},
            )
            for i in range(start, start + n)
        ]

    root = tmp_path / "edge"
    with EdgeIndex(root) as index:
        index.ensure_collection(NAME, dim=dim)
        index.upsert(NAME, points(0, 11_000))
    with EdgeIndex(root) as index:
        assert index.optimization_status(NAME)["pending_points"] == 11_000
        thread = index.optimize_in_background(NAME)
        assert thread is not None
        thread.join()
        index.upsert(NAME, points(11_000, 300))
    with EdgeIndex(root, optimize_after=10_000) as index:
        assert index.optimization_status(NAME)["pending_points"] == 300
        assert not index._shards[NAME].optimization_due(10_000)


def test_a_failed_optimiser_leaves_the_shard_as_it_was(tmp_path, monkeypatch):
    root = tmp_path / "edge"
    with EdgeIndex(root) as index:
        write_fixed(index)
        before = fixed_answers(index)
        monkeypatch.setattr("services.index.edge.sys.executable", "/bin/false")
        thread = index.optimize_in_background(NAME)
        assert thread is not None
        thread.join()
        assert "exited with status 1" in (index.optimization_status(NAME)["last_error"] or "")
        assert not index._shards[NAME].optimization_due(1)  # no retry at every write after a failure
        assert fixed_answers(index) == before
        assert shard_dirs(root) == [NAME]


# Each step after which the serving process may die; "child" kills it while the child optimises.
STEPS = ["copied", "child", "optimised", "caught-up", "marked", "moved-aside", "swapped"]

CRASH_SCRIPT = textwrap.dedent(
    """
    import os, signal, sys, time
    sys.path.insert(0, {repo!r})
    from services.index import edge
    from services.index.edge import EdgeIndex
    from tests.unit.test_edge_background_optimize import NAME, make_points, write_fixed

    root, step = sys.argv[1], sys.argv[2]
    index = EdgeIndex(root)
    write_fixed(index)
    real_run = EdgeIndex._run_optimiser

    def after(name):
        if name == "copied":  # a write after the copy, acknowledged: it must survive
            index.upsert(NAME, make_points(10_000, 50, "late"))
        if name == step:
            os.kill(os.getpid(), signal.SIGKILL)

    def run_with_writes(self, shard, copy):
        if step == "child":
            # Die while the child optimises: the child must die too (PDEATHSIG).
            threading_run = __import__("threading").Thread(target=real_run, args=(self, shard, copy), daemon=True)
            threading_run.start()
            while shard.optimization.process is None:
                time.sleep(0.01)
            print(shard.optimization.process.pid, flush=True)
            os.kill(os.getpid(), signal.SIGKILL)
        real_run(self, shard, copy)

    EdgeIndex._run_optimiser = run_with_writes
    edge._step = after
    index.optimize_in_background(NAME).join()
    sys.exit(5)  # not reached: the step kills the process
    """
)


@pytest.fixture(scope="module")
def expected(tmp_path_factory) -> list[list[tuple[str, float]]]:
    """The answers of a shard holding what the crash script writes (the fixed points and 50 late ones)."""
    with EdgeIndex(tmp_path_factory.mktemp("expected")) as index:
        write_fixed(index)
        index.upsert(NAME, make_points(10_000, 50, "late"))
        return fixed_answers(index)


@pytest.mark.parametrize("step", STEPS)
def test_a_kill_at_any_step_reopens_consistent(tmp_path, step, expected):
    root = tmp_path / "edge"
    script = tmp_path / "crash.py"
    script.write_text(CRASH_SCRIPT.format(repo=str(REPO)))
    result = subprocess.run([sys.executable, str(script), str(root), step], capture_output=True, text=True, cwd=REPO)
    assert result.returncode == -9, result.stderr[-3000:]
    if step == "child":
        child = int(result.stdout.split()[0])
        waited = subprocess.run(
            ["sh", "-c", f"for i in $(seq 100); do kill -0 {child} 2>/dev/null || exit 0; sleep 0.1; done; exit 1"]
        )
        assert waited.returncode == 0, "the optimiser outlived its parent"
    with EdgeIndex(root) as index:
        assert shard_dirs(root) == [NAME]
        assert fixed_answers(index) == expected
        assert index.count(NAME, IndexFilter(document_ids=["late"])) == 50
        assert index.count(NAME) == len(FIXED) + 50
        thread = index.optimize_in_background(NAME)  # and it can be optimised again
        assert thread is not None
        thread.join()
        assert index.optimization_status(NAME)["last_error"] is None
        assert fixed_answers(index) == expected
