"""Uploads and dispatch: a lost message is sent again, a broker that is down loses nothing, and a
full ingestion backlog holds uploads back with 429 and Retry-After (SQLite and PostgreSQL)."""

from __future__ import annotations

import socket

import pytest
import redis

from services.documents.lifecycle import WorkItem
from tests.conftest import unique_collection
from tests.redis_server import RedisServer


class Recording:
    """A dispatcher that only records what it was given (no ingestion runs)."""

    def __init__(self) -> None:
        self.sent: list[WorkItem] = []

    def submit(self, item: WorkItem) -> None:
        self.sent.append(item)

    def close(self) -> None:
        pass


@pytest.fixture
def recorded(make_settings, database_url):
    from fastapi.testclient import TestClient

    from services.api.app import create_app
    from services.runtime import Runtime

    def start(**overrides):
        settings = make_settings(database_url=database_url, **overrides)
        rt = Runtime(settings)
        dispatcher = Recording()
        client = TestClient(create_app(settings, runtime=rt, dispatcher=dispatcher, warm_up=False))
        client.__enter__()
        started.append((client, rt))
        return client, dispatcher

    started: list = []
    yield start
    for client, rt in started:
        client.__exit__(None, None, None)
        rt.close()


def upload(client, collection: str, text: str):
    return client.post(f"/v1/collections/{collection}/documents", json={"text": text})


def test_uploading_a_stale_queued_document_again_dispatches_it_again(recorded):
    col = unique_collection()
    client, dispatcher = recorded(redispatch_after_s=3600)
    first = upload(client, col, "배달되지 않은 문서이다.")
    assert first.status_code == 202 and len(dispatcher.sent) == 1
    # Queued a moment ago: its message is on its way, the same upload sends nothing.
    again = upload(client, col, "배달되지 않은 문서이다.")
    assert again.status_code == 200 and again.json()["id"] == first.json()["id"] and len(dispatcher.sent) == 1

    client, dispatcher = recorded(redispatch_after_s=1)
    # Queued longer than SAEKIN_REDISPATCH_AFTER_S (backdated here): the message may be lost.
    _backdate(client, first.json()["id"])
    again = upload(client, col, "배달되지 않은 문서이다.")
    assert again.status_code == 200 and again.json()["status"] == "queued"
    assert [str(i.document_id) for i in dispatcher.sent] == [first.json()["id"]]
    # Its wait restarts: uploading it once more at once sends nothing more.
    upload(client, col, "배달되지 않은 문서이다.")
    assert len(dispatcher.sent) == 1


def _backdate(client, document_id: str) -> None:
    import uuid
    from datetime import timedelta

    from sqlalchemy import update

    from services.db import session_scope
    from services.documents.models import Document, utcnow

    with session_scope(client.app.state.runtime.session_factory) as session:
        session.execute(
            update(Document)
            .where(Document.id == uuid.UUID(document_id))
            .values(updated_at=utcnow() - timedelta(seconds=120))
        )


def test_uploads_answer_429_with_retry_after_above_the_backlog_limit(recorded):
    from services.db import session_scope
    from services.documents.service import count_in_flight

    col = unique_collection()
    client, _ = recorded()
    with session_scope(client.app.state.runtime.session_factory) as session:
        before = count_in_flight(session)  # the session's database is shared with other tests
    client, dispatcher = recorded(max_in_flight_documents=before + 2)
    assert upload(client, col, "첫 번째 문서.").status_code == 202
    assert upload(client, col, "두 번째 문서.").status_code == 202
    refused = upload(client, col, "세 번째 문서.")
    assert refused.status_code == 429
    assert int(refused.headers["retry-after"]) > 0
    assert refused.json()["error"]["code"] == "too_many_requests"
    assert f"{before + 2} documents are waiting" in refused.json()["error"]["message"]
    assert len(dispatcher.sent) == 2  # nothing was stored for the refused one
    listed = client.get(f"/v1/collections/{col}/documents").json()["items"]
    assert len(listed) == 2


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.postgres
def test_an_upload_while_the_broker_is_down_is_stored_and_dispatched_once_it_is_back(
    make_settings, own_postgres_url, tmp_path
):
    """Before: 500, and the document stayed queued for ever (nothing would ever send it)."""
    from fastapi.testclient import TestClient

    from services.api.app import create_app
    from services.leases import Reaper
    from services.runtime import Runtime
    from workers.celery_app import create_celery
    from workers.tasks import request_embedding

    port = _free_port()
    broker_url = f"redis://127.0.0.1:{port}/0"
    settings = make_settings(
        database_url=own_postgres_url, broker_url=broker_url, qdrant_path=tmp_path / "qdrant", redispatch_after_s=1
    )
    rt = Runtime(settings)
    col = unique_collection("down")
    try:
        with TestClient(create_app(settings, runtime=rt, warm_up=False)) as client:
            r = upload(client, col, "브로커가 멈춘 동안 올린 문서이다.")
            assert r.status_code == 202, r.text
            assert client.get(f"/v1/collections/{col}/documents/{r.json()['id']}").json()["status"] == "queued"
        with RedisServer(port, tmp_path / "redis"):
            app = create_celery(settings)
            reaper = Reaper.from_settings(
                rt.engine,
                settings,
                dispatch=lambda item: app.send_task(
                    "saekin.ingest", args=[str(item.document_id), item.generation], queue="ingest"
                ),
                request_embedding=lambda: request_embedding(app),
            )
            _backdate(client, r.json()["id"])
            assert [str(i.document_id) for i in reaper.run_once().dispatch] == [r.json()["id"]]
            assert redis.Redis.from_url(broker_url).llen("ingest") == 1  # the message is on the queue now
            app.close()
    finally:
        rt.close()
