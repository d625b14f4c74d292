"""Production mode with real worker processes: `saekin worker --queue ingest` and `--queue embed`
run as subprocesses on a redis-server of this module's own (a free port, no persistence, so the
test can kill it and start an empty one) and a PostgreSQL database of its own. Workers are
SIGKILLed in the middle of a document and started again, the broker is killed and restarted
empty, and in the end every document is `indexed` with exactly its chunk rows as points: no
duplicate, no orphan, nothing stuck.

Qdrant: qdrant-client's local mode lets one process open its path. Only the embed worker opens
the index: the test uploads through `intake` (database and broker only), and compares the points
with the chunk rows after stopping the embed worker, then starts it again. Where Docker exists,
the same tests run against a real Qdrant server through testcontainers (skipped otherwise).

Leases, the reaper and redispatch run on short settings (a 2 s lease, a reaper pass every 0.5 s,
a lost message sent again after 3 s), so a takeover takes seconds, not a minute.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from tests.conftest import REPO, _fresh_database, docker_engine_available, unique_collection
from tests.redis_server import RedisServer

SAEKIN = str(Path(sys.executable).with_name("saekin"))
SETTLE_TIMEOUT_S = 240  # generous: two shared cores; the tests wait for states, never for speed

# A stand-in for a package whose import is interrupted in one process (issue 17: a soft time limit
# fired during a child's first `import torch`, and that child failed every task it got). The first
# process that imports kiwipiepy claims the marker and fails every import of it; the others get
# the real package.
BROKEN_IMPORT_SHIM = """
import importlib, os, sys
_marker = os.environ["SAEKIN_TEST_BROKEN_IMPORT_MARKER"]
try:
    os.rename(_marker, f"{_marker}.{os.getpid()}")
    _broken = True
except FileNotFoundError:
    _broken = os.path.exists(f"{_marker}.{os.getpid()}")
if _broken:
    raise ImportError("kiwipiepy: import interrupted (simulated by the test)")
_here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _here]
del sys.modules["kiwipiepy"]
sys.modules["kiwipiepy"] = importlib.import_module("kiwipiepy")
"""


class Worker:
    """One `saekin worker` process group (a prefork worker is a main process and its pool)."""

    def __init__(self, queue: str, env: dict[str, str], cwd: Path, log: Path) -> None:
        self.queue, self.env, self.cwd, self.log = queue, env, cwd, log
        self.process: subprocess.Popen | None = None

    def start(self) -> Worker:
        args = [SAEKIN, "worker", "--queue", self.queue, "--loglevel", "INFO"]
        if self.queue == "ingest":
            args += ["--concurrency", "1"]
        offset = self.log.stat().st_size if self.log.exists() else 0
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                args, cwd=self.cwd, env=self.env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        deadline = time.monotonic() + SETTLE_TIMEOUT_S
        while " ready." not in self.log.read_text(errors="replace")[offset:]:
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{self.queue} worker did not start:\n{self.log.read_text()[-4000:]}")
            time.sleep(0.2)
        return self

    def kill(self) -> None:
        """SIGKILL the whole group: no warm shutdown, no message acknowledged or given back."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.kill()


class Cluster:
    def __init__(self, tmp: Path, database_url: str, qdrant: dict[str, str], twin: Path) -> None:
        from config.settings import Settings
        from services.db import make_engine, make_session_factory
        from services.dispatch import CeleryDispatcher

        self.tmp = tmp
        self.redis = RedisServer(directory=tmp / "redis").start()
        self.marker = tmp / "broken-import-marker"
        self.marker.write_text("the first process importing kiwipiepy takes this")
        shim = tmp / "shim" / "kiwipiepy"
        shim.mkdir(parents=True)
        (shim / "__init__.py").write_text(BROKEN_IMPORT_SHIM)
        self.qdrant = qdrant
        env = {k: v for k, v in os.environ.items() if not k.startswith("SAEKIN_")}
        env.update(
            SAEKIN_DATABASE_URL=database_url,
            SAEKIN_BROKER_URL=self.redis.url,
            SAEKIN_EMBEDDING_MODEL=str(twin),
            SAEKIN_CHUNK_TOKENS="160",
            SAEKIN_CHUNK_OVERLAP_TOKENS="16",
            SAEKIN_EMBED_TASK_MAX_CHUNKS="24",
            SAEKIN_STAGE_LEASE_S="2",
            SAEKIN_REAPER_INTERVAL_S="0.5",
            SAEKIN_REDISPATCH_AFTER_S="3",
            SAEKIN_STAGE_MAX_ATTEMPTS="5",
            SAEKIN_TASK_TIME_LIMIT_S="120",
            SAEKIN_TEST_BROKEN_IMPORT_MARKER=str(self.marker),
            PYTHONPATH=os.pathsep.join([str(shim.parent), str(REPO)]),
            **qdrant,
        )
        (tmp / "run").mkdir()  # the workers' working directory: no .env of a checkout is read
        self.ingest = Worker("ingest", env, tmp / "run", tmp / "ingest.log")
        self.embed = Worker("embed", env, tmp / "run", tmp / "embed.log")
        where: dict[str, Any] = {k.removeprefix("SAEKIN_").lower(): v for k, v in qdrant.items()}
        self.settings = Settings(
            _env_file=None,
            database_url=database_url,
            broker_url=self.redis.url,
            embedding_model=str(twin),
            redispatch_after_s=3,
            **where,
        )
        self.engine = make_engine(database_url)
        self.session_factory = make_session_factory(self.engine)
        self.dispatcher = CeleryDispatcher(self.redis.url)

    def upload(self, collection: str, text: str) -> uuid.UUID:
        from services.dispatch import intake
        from services.documents.lifecycle import Upload

        stored = intake(
            Upload(data=text.encode(), media_type="text/plain"),
            session_factory=self.session_factory,
            collection_name=collection,
            profile=self.settings.embedding_profile,
            dispatcher=self.dispatcher,
            redispatch_after_s=self.settings.redispatch_after_s,
        )
        return stored.document.id

    def documents(self, collection: str) -> list:
        from services.documents.models import Collection, Document

        with self.session_factory() as session:
            return list(session.scalars(select(Document).join(Collection).where(Collection.name == collection)))

    def wait_until(self, predicate, what: str) -> None:
        deadline = time.monotonic() + SETTLE_TIMEOUT_S
        while not predicate():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting until {what}\n{self.logs()}")
            time.sleep(0.1)

    def logs(self) -> str:
        return "\n".join(
            f"--- {w.queue}\n{w.log.read_text(errors='replace')[-3000:]}"
            for w in (self.ingest, self.embed)
            if w.log.exists()
        )

    def settled(self, collection: str) -> bool:
        return all(d.status.value in ("indexed", "failed") for d in self.documents(collection))

    def wait_indexed(self, collection: str) -> None:
        self.wait_until(lambda: self.settled(collection), f"every document of {collection} is indexed or failed")
        docs = self.documents(collection)
        assert [(d.status.value, d.error) for d in docs] == [("indexed", None)] * len(docs)

    def check_index(self) -> None:
        """Every document indexed, and the chunk rows exactly the index's points, in every collection
        (the embed worker is stopped for this: local mode serves one process)."""
        from services.documents.models import Chunk, Collection, Document, DocumentStatus, index_name

        with self.session_factory() as session:
            docs = list(session.scalars(select(Document)))
            assert docs and {d.status for d in docs} == {DocumentStatus.indexed}
            expected: dict[str, list[str]] = {}
            for coll in session.scalars(select(Collection)):
                rows = session.scalars(select(Chunk.id).join(Document).where(Document.collection_id == coll.id)).all()
                expected[index_name(coll)] = [str(r) for r in rows]
            assert sum(d.chunk_count for d in docs) == sum(len(v) for v in expected.values())
        self.embed.stop()
        for name, chunk_ids in expected.items():
            point_ids = self.point_ids(name)
            assert len(point_ids) == len(set(point_ids))  # no duplicates
            assert sorted(point_ids) == sorted(chunk_ids), name  # no orphan, nothing missing

    def point_ids(self, name: str) -> list[str]:
        from qdrant_client import QdrantClient

        if "SAEKIN_QDRANT_PATH" in self.qdrant:
            client = QdrantClient(path=self.qdrant["SAEKIN_QDRANT_PATH"])
        else:
            client = QdrantClient(url=self.qdrant["SAEKIN_QDRANT_URL"])
        try:
            ids: list[str] = []
            offset = None
            while True:
                points, offset = client.scroll(name, limit=1000, offset=offset, with_payload=False)
                ids += [str(p.id) for p in points]
                if offset is None:
                    return ids
        finally:
            client.close()

    def close(self) -> None:
        self.ingest.stop()
        self.embed.stop()
        self.dispatcher.close()
        self.engine.dispose()
        self.redis.kill()


@pytest.fixture(scope="module", params=["local", "server"])
def cluster(request, tmp_path_factory, postgres_server_url, small_twin) -> Iterator[Cluster]:
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed: these tests start (and kill) a broker of their own")
    tmp = tmp_path_factory.mktemp(f"workers-{request.param}")
    container = None
    if request.param == "local":
        qdrant = {"SAEKIN_QDRANT_PATH": str(tmp / "qdrant")}
    else:
        if not docker_engine_available():
            pytest.skip("no Docker engine: the Qdrant-server run of these tests needs testcontainers")
        from testcontainers.qdrant import QdrantContainer

        container = QdrantContainer("qdrant/qdrant:v1.15.1").start()
        qdrant = {"SAEKIN_QDRANT_URL": f"http://{container.get_container_host_ip()}:{container.exposed_rest_port}"}
    with _fresh_database(postgres_server_url) as database_url:
        cluster = Cluster(tmp, database_url, qdrant, small_twin)
        try:
            cluster.ingest.start()
            cluster.embed.start()
            yield cluster
        finally:
            cluster.close()
            if container is not None:
                container.stop()


def korean_text(n: int, sentences: int) -> str:
    """A document of `sentences` varied Korean sentences (long enough to be caught mid-stage)."""
    places = ["서울", "부산", "제주", "광주", "대전", "강릉", "전주", "춘천"]
    return " ".join(
        f"{n}번 문서의 {i}번째 조항에 따르면 {places[(n + i) % 8]}의 주민은 {i % 12 + 1}월마다 "
        f"지역 계획을 검토하고 그 결과를 {places[i % 8]} 시청에 제출해야 한다."
        for i in range(sentences)
    )


def test_a_pool_process_that_fails_its_setup_is_replaced(cluster):
    """The first ingest pool process cannot import kiwipiepy (the shim above): it exits when its
    first task comes, the pool replaces it and the task is redelivered to a sound process. Before,
    it stayed, and failed every task it took."""
    col = unique_collection("setup")
    cluster.upload(col, korean_text(99, 10))
    cluster.wait_until(lambda: cluster.settled(col), "the document is indexed")
    assert [d.status.value for d in cluster.documents(col)] == ["indexed"]
    claimed = list(cluster.marker.parent.glob(f"{cluster.marker.name}.*"))
    assert len(claimed) == 1 and not cluster.marker.exists()
    broken_pid = claimed[0].name.rsplit(".", 1)[1]
    log = cluster.ingest.log.read_text(errors="replace")
    assert f"worker process {broken_pid} failed its set-up: exiting so that the pool replaces it" in log


def test_killed_workers_lose_nothing(cluster):
    """An ingest worker SIGKILLed while it prepares a document and an embed worker SIGKILLed while
    it embeds a batch: after their restart every document is indexed."""
    from services.documents.models import DocumentStage

    col = unique_collection("kill")
    ids = [cluster.upload(col, korean_text(n, 400 if n < 2 else 30)) for n in range(8)]

    def preparing() -> bool:
        return any(
            d.stage in (DocumentStage.extracting, DocumentStage.chunking) and d.lease_owner
            for d in cluster.documents(col)
        )

    cluster.wait_until(preparing, "the ingest worker holds a document in the prepare stage")
    cluster.ingest.kill()
    held = [d.id for d in cluster.documents(col) if d.stage in (DocumentStage.extracting, DocumentStage.chunking)]
    assert held  # it died in the middle of preparing these
    cluster.ingest.start()

    def embedding() -> bool:
        return any(d.stage == DocumentStage.embedding and d.lease_owner for d in cluster.documents(col))

    cluster.wait_until(embedding, "the embed worker holds a batch")
    cluster.embed.kill()
    cluster.embed.start()

    cluster.wait_indexed(col)
    docs = {d.id: d for d in cluster.documents(col)}
    assert set(docs) == set(ids)


def test_a_broker_restarted_without_persistence_loses_no_queued_document(cluster):
    """Messages waiting behind a long document are lost with the broker; documents uploaded while it
    is down are accepted all the same. The reaper sends every one of them again."""
    import redis

    col = unique_collection("broker")
    ids = [cluster.upload(col, korean_text(n, 400 if n == 0 else 20)) for n in range(6)]
    assert redis.Redis.from_url(cluster.redis.url).llen("ingest") > 0  # waiting in the broker
    cluster.redis.kill()  # and gone
    ids += [cluster.upload(col, korean_text(n, 20)) for n in range(6, 9)]  # the broker is down
    cluster.redis.start()  # empty; the workers reconnect
    cluster.wait_indexed(col)
    assert {d.id for d in cluster.documents(col)} == set(ids)


def test_every_point_is_a_chunk_row_and_every_chunk_row_a_point(cluster):
    """After all of the above: the index holds exactly the chunk rows of the indexed documents, each
    once (the embed worker is stopped to read the local-mode index)."""
    cluster.check_index()
