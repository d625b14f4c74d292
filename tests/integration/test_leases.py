"""Leases on claimed stages, the reaper, and dispatch that survives a lost message, on SQLite and
PostgreSQL. A lease of 0 s stands for a worker that died right after claiming: it has expired
by the time anyone looks, so no test waits for time to pass."""

from __future__ import annotations

import threading
import time

import pytest
from sqlalchemy import select

from services.db import session_scope
from services.documents import lifecycle
from services.documents.lifecycle import Lease
from services.documents.models import Document, DocumentStage, DocumentStatus
from services.leases import Heartbeat, Reaper
from tests.conftest import prepare
from tests.conftest import submit_text as submit

TEXT = "제주도는 화산섬이다. 한라산은 제주도의 중앙에 있으며 높이는 1,947미터이다."


@pytest.fixture(params=["sqlite", "postgres"])
def rt(request, make_settings, tmp_path):
    from services.db import upgrade_database
    from services.runtime import Runtime

    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'leases.db'}"
        upgrade_database(url)
    else:
        url = request.getfixturevalue("own_postgres_url")
    runtime = Runtime(make_settings(database_url=url, chunk_tokens=48, chunk_overlap_tokens=8, stage_max_attempts=3))
    yield runtime
    runtime.close()


def doc(rt, item) -> Document:
    with session_scope(rt.session_factory) as session:
        found = session.get(Document, item.document_id)
        assert found is not None
        return found


def dead(owner: str) -> Lease:
    """The lease of a worker that died as soon as it claimed."""
    return Lease(owner, 0, 3)


def live(owner: str) -> Lease:
    return Lease(owner, 600, 3)


def test_a_live_prepare_lease_keeps_other_claimers_out_and_an_expired_one_is_taken_over(rt):
    item = submit(rt, TEXT)
    assert lifecycle.claim(rt.engine, item, live("task-a")) is not None
    # A second message for the document (the reaper's, or a broker's redelivery to another
    # worker) finds the lease live: nothing to do, no double processing.
    assert lifecycle.claim(rt.engine, item, live("task-b")) is None
    # The same task redelivered after its process died takes its lease back at once.
    assert lifecycle.claim(rt.engine, item, dead("task-a")) is not None
    # Expired: another worker takes the document over, and that counts an attempt.
    assert lifecycle.claim(rt.engine, item, live("task-c")) is not None
    d = doc(rt, item)
    assert (d.status, d.stage, d.lease_owner, d.attempts) == (
        DocumentStatus.processing,
        DocumentStage.extracting,
        "task-c",
        3,
    )
    # The first worker, only slow, cannot store its chunks over the new owner's.
    assert not lifecycle.store_chunks(rt.engine, item, rows=[], text="x", media_type="text/plain", lease=live("task-a"))


def test_a_document_out_of_attempts_fails_naming_the_stage_and_the_attempts(rt):
    item = submit(rt, TEXT)
    for owner in ("w1", "w2", "w3"):
        assert lifecycle.claim(rt.engine, item, dead(owner)) is not None
    # A fourth claim is refused and records why.
    assert lifecycle.claim(rt.engine, item, live("w4")) is None
    d = doc(rt, item)
    assert d.status == DocumentStatus.failed and d.lease_owner is None
    assert "3 attempts" in d.error and "prepare stage" in d.error


def test_the_reaper_requeues_an_expired_prepare_stage_and_fails_it_when_out_of_attempts(rt):
    dispatched, embeds = [], []
    reaper = Reaper(
        rt.engine,
        dispatch=dispatched.append,
        request_embedding=lambda: embeds.append(1),
        interval_s=60,
        redispatch_after_s=3600,
        max_attempts=3,
    )
    item = submit(rt, TEXT)
    assert reaper.run_once().empty  # queued a moment ago: its message is on its way
    assert lifecycle.claim(rt.engine, item, live("alive")) is not None
    assert reaper.run_once().empty  # a live lease is left alone
    lifecycle.claim(rt.engine, item, dead("alive"))  # the worker dies (its lease runs out)
    assert reaper.run_once().dispatch == [item] and dispatched == [item]
    d = doc(rt, item)
    assert (d.status, d.stage, d.lease_owner, d.attempts) == (DocumentStatus.queued, None, None, 2)
    assert lifecycle.claim(rt.engine, item, dead("next")) is not None  # the third attempt dies too
    assert reaper.run_once().failed == [item]
    d = doc(rt, item)
    assert d.status == DocumentStatus.failed and "3 attempts at the prepare stage" in d.error
    assert embeds == [] and dispatched == [item]


def test_the_reaper_frees_an_expired_embed_lease_and_fails_the_document_when_out_of_attempts(rt):
    embeds: list[int] = []
    reaper = Reaper(
        rt.engine,
        dispatch=lambda item: None,
        request_embedding=lambda: embeds.append(1),
        interval_s=60,
        redispatch_after_s=3600,
        max_attempts=2,
    )
    item = submit(rt, TEXT)
    assert prepare(rt, item)
    assert doc(rt, item).attempts == 0  # the embed stage counts its own
    assert lifecycle.claim_embed_batch(rt.engine, lease=Lease("gpu-a", 0, 2)).items == [item]
    assert lifecycle.claim_embed_batch(rt.engine, lease=live("gpu-b")).items == [item]  # expired: taken over
    assert lifecycle.claim_embed_batch(rt.engine, lease=live("gpu-c")).items == []  # live
    lifecycle.renew(rt.engine, Lease("gpu-b", 0, 2), [item])  # gpu-b dies: its lease runs out
    reaped = reaper.run_once()
    assert reaped.failed == [item] and not reaped.embed_waiting
    d = doc(rt, item)
    assert d.status == DocumentStatus.failed
    assert "2 attempts" in d.error and "embed stage" in d.error


def test_an_expired_embed_lease_is_freed_and_an_embed_task_requested(rt):
    embeds: list[int] = []
    reaper = Reaper(
        rt.engine,
        dispatch=lambda item: None,
        request_embedding=lambda: embeds.append(1),
        interval_s=60,
        redispatch_after_s=3600,
        max_attempts=3,
    )
    item = submit(rt, TEXT)
    prepare(rt, item)
    lifecycle.claim_embed_batch(rt.engine, lease=dead("gpu-a"))
    assert reaper.run_once().embed_waiting and embeds == [1]
    assert doc(rt, item).lease_owner is None
    assert lifecycle.claim_embed_batch(rt.engine, lease=live("gpu-b")).items == [item]


def test_documents_whose_message_was_lost_are_dispatched_again(rt):
    dispatched, embeds = [], []
    reaper = Reaper(
        rt.engine,
        dispatch=dispatched.append,
        request_embedding=lambda: embeds.append(1),
        interval_s=60,
        redispatch_after_s=0.001,
        max_attempts=3,
    )
    queued = submit(rt, TEXT)
    waiting = submit(rt, "두 번째 문서는 임베딩을 기다린다.")
    prepare(rt, waiting)
    time.sleep(0.01)
    reaped = reaper.run_once()
    assert dispatched == [queued] and embeds == [1] and reaped.dispatch == [queued]


def test_the_heartbeat_renews_the_lease_while_the_stage_works(rt):
    item = submit(rt, TEXT)
    lease = Lease("slow-worker", 1.5, 3)
    lifecycle.claim(rt.engine, item, lease)
    first = doc(rt, item).lease_until
    with Heartbeat(rt.engine, lease, [item]) as beat:
        deadline = time.monotonic() + 30
        while doc(rt, item).lease_until == first and time.monotonic() < deadline:
            time.sleep(0.1)
    assert doc(rt, item).lease_until > first and not beat.lost
    # Taken over meanwhile: the heartbeat notices that it holds nothing any more.
    lifecycle.claim(rt.engine, item, dead("slow-worker"))
    lifecycle.claim(rt.engine, item, live("other"))
    with Heartbeat(rt.engine, Lease("slow-worker", 0.3, 3), [item]) as beat:
        deadline = time.monotonic() + 30
        while not beat.lost and time.monotonic() < deadline:
            time.sleep(0.05)
    assert beat.lost and doc(rt, item).lease_owner == "other"


def test_the_embedded_dispatcher_prepares_several_documents_at_once():
    from services.dispatch import InProcessDispatcher

    both_inside = threading.Barrier(2, timeout=30)
    prepared: list[object] = []

    def slow_prepare(item, *, owner: str) -> bool:
        both_inside.wait()  # returns only when two prepares run at the same time
        prepared.append(item)
        return False

    dispatcher = InProcessDispatcher(slow_prepare, lambda *, owner: False, prepare_threads=2)
    try:
        dispatcher.submit("a")
        dispatcher.submit("b")
        dispatcher.submit("b")  # already waiting: not queued twice
        deadline = time.monotonic() + 30
        while len(prepared) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        dispatcher.close()
    assert sorted(prepared) == ["a", "b"]


def test_stage_counts_and_leases_reset_with_a_new_generation(rt):
    item = submit(rt, TEXT, external_id="e1")
    lifecycle.claim(rt.engine, item, dead("w1"))
    lifecycle.claim(rt.engine, item, dead("w2"))
    replacement = submit(rt, TEXT + " 개정판.", external_id="e1")
    with session_scope(rt.session_factory) as session:
        d = session.scalar(select(Document).where(Document.id == replacement.document_id))
        assert (d.generation, d.attempts, d.lease_owner, d.status) == (2, 0, None, DocumentStatus.queued)


def test_the_embedded_service_takes_back_what_the_last_process_left_at_start(make_settings, tmp_path):
    """The embedded service owns its data directory alone: at start every lease is the stopped
    process's, however long it had to run, and every queued document's message was in its memory."""
    from fastapi.testclient import TestClient

    from services.api.app import create_app
    from services.db import upgrade_database
    from services.runtime import Runtime
    from tests.conftest import wait_for_status

    url = f"sqlite:///{tmp_path / 'embedded.db'}"
    upgrade_database(url)
    settings = make_settings(database_url=url, chunk_tokens=48, chunk_overlap_tokens=8)
    rt = Runtime(settings)
    try:
        queued = submit(rt, TEXT, collection="left")
        preparing = submit(rt, "두 번째 문서는 준비 중에 멈췄다.", collection="left")
        lifecycle.claim(rt.engine, preparing, live("stopped-process-thread"))
        embedding = submit(rt, "세 번째 문서는 임베딩 중에 멈췄다.", collection="left")
        prepare(rt, embedding)
        lifecycle.claim_embed_batch(rt.engine, lease=live("stopped-process-embed"))
        with TestClient(create_app(settings, runtime=rt, warm_up=False)) as client:
            for item in (queued, preparing, embedding):
                body = wait_for_status(client, "left", str(item.document_id))
                assert body["status"] == "indexed", body
    finally:
        rt.close()


def test_a_redelivered_ingest_task_does_nothing_while_another_holds_the_lease(rt):
    """Celery's side of the lease: acks_late redelivers a task whose worker vanished; the message
    finds the document held by a live lease (the reaper gave it to another worker) and returns
    without touching it. The same task id (its pool process died) takes its own lease back."""
    from workers import tasks

    item = submit(rt, TEXT)
    lifecycle.claim(rt.engine, item, live("task-now-owning-it"))
    tasks.use_runtime(rt)
    try:
        tasks.ingest.apply(args=[str(item.document_id), item.generation], task_id="redelivered-task").get()
        d = doc(rt, item)
        assert (d.lease_owner, d.attempts, d.status, d.chunk_count) == (
            "task-now-owning-it",
            1,
            DocumentStatus.processing,
            0,
        )
        tasks.ingest.apply(args=[str(item.document_id), item.generation], task_id="task-now-owning-it").get()
    finally:
        tasks.use_runtime(None)
    d = doc(rt, item)
    assert d.stage == DocumentStage.embedding and d.chunk_count > 0 and d.lease_owner is None
