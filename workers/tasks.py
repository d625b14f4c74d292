"""Thin Celery tasks: ids in, domain code does the work, failures reach Celery's retry."""

from __future__ import annotations

import logging
import os
import uuid
from functools import lru_cache

import redis
from celery import Celery, Task, shared_task
from celery.signals import worker_process_shutdown

from config.settings import get_settings
from services.dispatch import EMBED_QUEUE, EMBED_TASK, INGEST_TASK
from services.documents import lifecycle
from services.documents.lifecycle import WorkItem
from services.ingest.pipeline import embed_each_on_failure, prepare_document
from services.runtime import Runtime

log = logging.getLogger(__name__)
_runtime: Runtime | None = None
_runtime_pid: int | None = None


def runtime() -> Runtime:
    """This worker process's resources, created after fork (never in the parent: CUDA forbids it)."""
    if _runtime is None or _runtime_pid != os.getpid():
        use_runtime(Runtime(get_settings()))
    assert _runtime is not None
    return _runtime


def use_runtime(rt: Runtime | None) -> None:
    """Make the tasks of this process use `rt` (tests share the API's runtime with a worker thread)."""
    global _runtime, _runtime_pid
    _runtime, _runtime_pid = rt, os.getpid()


@worker_process_shutdown.connect
def _close(**_) -> None:
    if _runtime is not None:
        _runtime.close()


class _RetryingTask(Task):
    autoretry_for = (Exception,)
    retry_backoff = True
    retry_backoff_max = 300
    max_retries = 5


class _IngestTask(_RetryingTask):
    def on_failure(self, exc, task_id, args, kwargs, einfo) -> None:
        # Retries exhausted: keep the reason on the document instead of leaving it `processing`.
        document_id, generation = args[0], args[1]
        lifecycle.fail(runtime().engine, WorkItem(uuid.UUID(document_id), int(generation)), f"internal error: {exc!r}")


# One waiting embed task is enough: it takes every document waiting when it starts. The ingest
# tasks of a burst of uploads queue one between them instead of one each, so the embed worker
# spends its time embedding, not receiving tasks that find their document in an earlier batch.
EMBED_REQUESTED_KEY = "saekin:embed:requested"
# If a queued request is lost (a purged queue), new uploads queue another after this long.
EMBED_REQUEST_TTL_S = 60


@lru_cache(maxsize=4)
def _request_flags(broker_url: str) -> redis.Redis | None:
    """The broker's Redis, where the flag lives; None for another broker (then every upload queues a task)."""
    if broker_url.startswith(("redis://", "rediss://", "unix://")):
        return redis.Redis.from_url(broker_url)
    return None


def request_embedding(app: Celery) -> bool:
    """Queue an embed task unless one is already waiting; whether one was queued."""
    flags = _request_flags(app.conf.broker_url)
    if flags is not None and not flags.set(EMBED_REQUESTED_KEY, 1, nx=True, ex=EMBED_REQUEST_TTL_S):
        return False
    try:
        app.send_task(EMBED_TASK, queue=EMBED_QUEUE)
    except BaseException:
        if flags is not None:
            flags.delete(EMBED_REQUESTED_KEY)  # nothing was queued: the next upload must try again
        raise
    return True


@shared_task(name=INGEST_TASK, base=_IngestTask, bind=True)
def ingest(self, document_id: str, generation: int) -> None:
    """CPU stage: extract, normalize, chunk, analyse; then ask the embed queue for a batch."""
    item = WorkItem(uuid.UUID(document_id), int(generation))
    # Committed before the request: a waiting embed task, or the one queued here, will see it.
    rt = runtime()
    prepared = prepare_document(
        item, engine=rt.engine, analyzer=rt.analyzer, chunking=rt.chunking, extract_limits=rt.extract_limits
    )
    if prepared is not None:
        request_embedding(self.app)


class _EmbedTask(_RetryingTask):
    def on_failure(self, exc, task_id, args, kwargs, einfo) -> None:
        # Retries exhausted: the documents this task claimed have no other task coming for them.
        lifecycle.fail_claim(runtime().engine, task_id, f"internal error while embedding: {exc!r}")


def embed_task_max_chunks(rt: Runtime) -> int:
    """SAEKIN_EMBED_TASK_MAX_CHUNKS, else by device: seconds of work on a GPU, minutes on CPU."""
    return rt.settings.embed_task_max_chunks or (2048 if rt.encoder.is_cuda else 128)


@shared_task(name=EMBED_TASK, base=_EmbedTask, bind=True)
def embed(self) -> None:
    """GPU stage: embed the waiting generations' chunks together, upsert their points, publish them."""
    rt = runtime()
    # Uploads finished from now on may be missed by the query below: they must queue a new task.
    if (flags := _request_flags(self.app.conf.broker_url)) is not None:
        flags.delete(EMBED_REQUESTED_KEY)
    # The task id names the claim: this task, redelivered or retried, takes its batch back.
    batch = lifecycle.claim_embed_batch(
        rt.engine,
        claim=self.request.id or str(uuid.uuid4()),
        lease_s=rt.settings.task_time_limit_s,
        max_chunks=embed_task_max_chunks(rt),
    )
    if batch.more_waiting:
        request_embedding(self.app)  # the next batch can start on another GPU meanwhile
    failures = embed_each_on_failure(
        batch.items, engine=rt.engine, encoder=rt.encoder, index=rt.index, profile=rt.profile
    )
    for item, exc in failures:
        lifecycle.fail(rt.engine, item, f"internal error while embedding: {exc!r}")


def warm_embed_worker() -> None:
    """Load the model once at worker start, so the first task does not pay for it."""
    runtime().encoder.warmup()
