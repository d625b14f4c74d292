"""Production mode in one process: the API only enqueues; a Celery worker thread on the real Redis
broker and PostgreSQL does the work. Qdrant runs in qdrant-client local mode shared by the worker
thread (no Qdrant server binary exists here; local mode serves one process). Worker processes
killed for real, and a broker restarted empty, are in tests/e2e/test_worker_processes.py."""

from __future__ import annotations

import pytest
import redis

from tests.conftest import embed, prepare, unique_collection, wait_for_status


@pytest.fixture
def production(make_settings, own_postgres_url, redis_url, tmp_path):
    from celery.contrib.testing.worker import start_worker
    from fastapi.testclient import TestClient

    import workers.tasks as tasks
    from services.api.app import create_app
    from services.dispatch import EMBED_QUEUE, INGEST_QUEUE
    from services.runtime import Runtime
    from workers.celery_app import create_celery

    redis.Redis.from_url(redis_url).flushdb()
    settings = make_settings(database_url=own_postgres_url, broker_url=redis_url, qdrant_path=tmp_path / "qdrant")
    assert settings.mode == "production"
    rt = Runtime(settings)
    tasks.use_runtime(rt)  # the worker thread shares this process's local-mode Qdrant client
    celery = create_celery(settings)
    celery.conf.task_default_queue = INGEST_QUEUE
    app = create_app(settings, runtime=rt, warm_up=False)
    with (
        start_worker(
            celery,
            pool="solo",
            concurrency=1,
            perform_ping_check=False,
            loglevel="WARNING",
            queues=[INGEST_QUEUE, EMBED_QUEUE],
            shutdown_timeout=30,
        ),
        TestClient(app) as client,
    ):
        client.runtime = rt
        yield client, celery
    tasks.use_runtime(None)
    rt.close()


def test_upload_goes_through_celery_and_is_searchable(production):
    client, _ = production
    col = unique_collection("prod")
    r = client.post(
        f"/v1/collections/{col}/documents",
        json={
            "text": "제주도는 화산섬이다. 한라산은 제주도의 중앙에 있으며 높이는 1,947미터이다.",
            "external_id": "jeju",
            "metadata": {"island": True},
        },
    )
    assert r.status_code == 202
    doc = wait_for_status(client, col, r.json()["id"], timeout=120)
    assert doc["status"] == "indexed", doc
    hits = client.post(f"/v1/collections/{col}/search", json={"query": "한라산 높이"}).json()["results"]
    assert hits[0]["external_id"] == "jeju" and hits[0]["metadata"] == {"island": True}
    assert client.get("/readyz").json()["checks"]["broker"] == "ok"
    metrics = client.get("/metrics").text
    assert 'saekin_queue_depth{queue="ingest"}' in metrics and 'saekin_queue_depth{queue="embed"}' in metrics


def test_queue_depth_is_the_length_of_each_celery_queue(redis_url):
    import uuid

    from services.dispatch import CeleryDispatcher
    from services.documents.lifecycle import WorkItem

    redis.Redis.from_url(redis_url).flushdb()
    dispatcher = CeleryDispatcher(redis_url)
    try:
        assert dispatcher.queue_depths() == {"ingest": 0, "embed": 0}
        for _ in range(3):  # no worker consumes them
            dispatcher.submit(WorkItem(uuid.uuid4(), 1))
        assert dispatcher.queue_depths() == {"ingest": 3, "embed": 0}
    finally:
        dispatcher.close()
        redis.Redis.from_url(redis_url).flushdb()


def test_a_redelivered_task_after_a_crash_leaves_no_duplicates(production):
    """What a worker killed in the middle of embedding leaves (simulated here: half the points
    written by hand, the document not published), and the redelivered task that follows: the rerun
    overwrites the same deterministic ids."""
    from sqlalchemy import select

    from services.db import session_scope
    from services.dispatch import EMBED_QUEUE, EMBED_TASK
    from services.documents import lifecycle
    from services.documents.lifecycle import WorkItem
    from services.documents.models import Chunk, Collection, index_name
    from services.index.base import IndexPoint

    client, celery = production
    rt = client.runtime
    col = unique_collection("crash")
    text = " ".join(f"{i}번 조항은 시행령의 세부 내용을 정한다." for i in range(200))
    with session_scope(rt.session_factory) as session:
        result = lifecycle.store(
            session,
            collection_name=col,
            profile=rt.settings.embedding_profile,
            upload=lifecycle.Upload(data=text.encode(), media_type="text/plain"),
        )
        item = WorkItem(result.document.id, result.generation)
        collection = session.scalar(select(Collection).where(Collection.name == col))
        name = index_name(collection)
    assert prepare(rt, item) > 2

    # The crashed worker got half the points into Qdrant before it died.
    with session_scope(rt.session_factory) as session:
        chunks = list(
            session.scalars(select(Chunk).where(Chunk.document_id == item.document_id).order_by(Chunk.ordinal))
        )
    half = chunks[: len(chunks) // 2]
    vectors = rt.encoder.encode_documents([c.text for c in half])
    rt.index.ensure_collection(name, dim=rt.encoder.dim)
    rt.index.upsert(
        name,
        [
            IndexPoint(
                id=str(c.id),
                dense=v,
                sparse=c.sparse,
                payload={"document_id": str(item.document_id), "generation": item.generation},
            )
            for c, v in zip(half, vectors)
        ],
    )
    assert rt.index.count(name) == len(half)

    # Redelivery: the real worker runs the embed task again.
    celery.send_task(EMBED_TASK, queue=EMBED_QUEUE)
    doc = wait_for_status(client, col, str(item.document_id), timeout=120)
    assert doc["status"] == "indexed"
    assert rt.index.count(name) == len(chunks) == doc["chunk_count"]
    # And once more, as a second redelivery would: still no duplicates.
    embed(rt, [item])
    assert rt.index.count(name) == len(chunks)


def test_celery_is_configured_for_long_gpu_tasks(make_settings, redis_url):
    from workers.celery_app import create_celery

    settings = make_settings(
        database_url="postgresql+psycopg://x@127.0.0.1/x",
        broker_url=redis_url,
        qdrant_url="http://127.0.0.1:6333",
        task_time_limit_s=1800,
    )
    conf = create_celery(settings).conf
    assert conf.task_acks_late and conf.worker_prefetch_multiplier == 1
    assert conf.broker_transport_options["visibility_timeout"] > conf.task_time_limit
