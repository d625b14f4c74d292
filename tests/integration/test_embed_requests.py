"""Embed requests on the real Redis broker: a burst of uploads queues one embed task, and that
task takes every document waiting when it starts (no worker runs here: tasks run in-process).
Another broker than Redis has no flag: every upload queues a task, as before."""

from __future__ import annotations

import pytest
import redis
from sqlalchemy import select

from services.db import session_scope
from services.dispatch import EMBED_QUEUE
from services.documents.models import Document, DocumentStatus
from tests.conftest import prepare
from tests.conftest import submit_text as submit


@pytest.fixture
def broker(redis_url):
    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    yield client
    client.flushdb()


@pytest.fixture
def worker_env(make_settings, redis_url, broker, tmp_path):
    """A Celery app on the real broker and the tasks' runtime (SQLite, qdrant-client local mode)."""
    from services.db import upgrade_database
    from services.runtime import Runtime
    from workers import tasks
    from workers.celery_app import create_celery

    url = f"sqlite:///{tmp_path / 'requests.db'}"
    upgrade_database(url)
    settings = make_settings(
        database_url=url,
        broker_url=redis_url,
        qdrant_path=tmp_path / "qdrant",
        chunk_tokens=48,
        chunk_overlap_tokens=8,
        embed_task_max_chunks=1,
    )
    app = create_celery(settings)
    rt = Runtime(settings)
    tasks.use_runtime(rt)
    yield app, rt
    tasks.use_runtime(None)
    rt.close()


def queued_embed_tasks(broker) -> int:
    return broker.llen(EMBED_QUEUE)


def run_next_embed_task(app, broker, task_id: str) -> None:
    """What an embed worker does: take the next message off the queue and run the task (here, in-process)."""
    assert broker.rpop(EMBED_QUEUE) is not None, "no embed task was queued"
    app.tasks["saekin.embed"].apply(task_id=task_id).get(propagate=True)


@pytest.mark.redis
def test_a_burst_of_uploads_queues_one_embed_task(worker_env, broker):
    from workers.tasks import request_embedding

    app, _ = worker_env
    assert request_embedding(app) is True
    assert [request_embedding(app) for _ in range(20)] == [False] * 20
    assert queued_embed_tasks(broker) == 1
    # The request expires, so one that was lost (a purged queue) cannot block embedding for long.
    assert 0 < broker.ttl("saekin:embed:requested") <= 60


@pytest.mark.redis
def test_a_failed_request_does_not_block_the_next_one(worker_env, broker, monkeypatch):
    from workers.tasks import request_embedding

    app, _ = worker_env

    def broker_unreachable(*args, **kwargs):
        raise ConnectionError("broker unreachable")

    with monkeypatch.context() as patch:
        patch.setattr(app, "send_task", broker_unreachable)
        with pytest.raises(ConnectionError):
            request_embedding(app)
    assert request_embedding(app) is True
    assert queued_embed_tasks(broker) == 1


@pytest.mark.redis
def test_the_embed_task_takes_what_waits_and_asks_again_while_more_waits(worker_env, broker):
    from workers.tasks import request_embedding

    app, rt = worker_env
    items = [submit(rt, f"{i}번 문서는 임베딩 요청을 기다린다.") for i in range(3)]
    for item in items:
        prepare(rt, item)
    assert request_embedding(app)  # the three ingest tasks queue one embed task between them
    assert not request_embedding(app) and not request_embedding(app)

    # SAEKIN_EMBED_TASK_MAX_CHUNKS=1: each task takes one document and, seeing more waiting,
    # queues the next task itself (on several GPUs another worker starts it meanwhile).
    for task_id in ("first", "second"):
        run_next_embed_task(app, broker, task_id)
        assert queued_embed_tasks(broker) == 1
    run_next_embed_task(app, broker, "third")
    assert queued_embed_tasks(broker) == 0
    with session_scope(rt.session_factory) as session:
        assert {d.status for d in session.scalars(select(Document))} == {DocumentStatus.indexed}
    # The started tasks took the request away: the next upload queues a new one.
    assert request_embedding(app) is True


def test_without_a_redis_broker_every_upload_queues_a_task(make_settings, tmp_path):
    from kombu import Connection

    from workers.celery_app import create_celery
    from workers.tasks import request_embedding

    settings = make_settings(
        database_url=f"sqlite:///{tmp_path / 'memory.db'}", broker_url="memory://", qdrant_path=tmp_path / "qdrant"
    )
    app = create_celery(settings)
    assert [request_embedding(app) for _ in range(3)] == [True] * 3
    with Connection("memory://") as conn:
        assert conn.SimpleQueue(EMBED_QUEUE).qsize() == 3


def test_an_embed_task_on_cpu_takes_fewer_chunks_unless_told(make_settings, tmp_path):
    from services.runtime import Runtime
    from workers.tasks import embed_task_max_chunks

    for overrides, expected in (({}, 128), ({"embed_task_max_chunks": 500}, 500)):
        rt = Runtime(make_settings(embedding_device="cpu", data_dir=tmp_path / str(expected), **overrides))
        try:
            assert embed_task_max_chunks(rt) == expected
        finally:
            rt.close()
