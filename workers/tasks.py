"""Thin Celery tasks: ids in, domain code does the work, failures reach Celery's retry."""

from __future__ import annotations

import importlib
import logging
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache

import redis
from celery import Celery, Task, current_app, shared_task
from celery.signals import task_prerun, worker_process_init, worker_process_shutdown, worker_shutdown

from config.settings import get_settings
from services.db import make_engine
from services.dispatch import EMBED_QUEUE, EMBED_TASK, INGEST_QUEUE, INGEST_TASK
from services.documents import lifecycle
from services.documents.lifecycle import WorkItem
from services.ingest.pipeline import embed_claimed, prepare_document
from services.leases import Reaper
from services.observability.metrics import mark_process_dead
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
def _close(pid: int | None = None, **_) -> None:
    if _runtime is not None:
        _runtime.close()
    mark_process_dead(pid or os.getpid())  # its live gauges (models loaded) leave the worker's metrics


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
    """CPU stage: extract, normalize, chunk, analyse; then ask the embed queue for a batch.

    The task id owns the document's lease: this task redelivered (its process died) takes it back
    at once, and any other message for the document finds the lease live and does nothing."""
    item = WorkItem(uuid.UUID(document_id), int(generation))
    rt = runtime()
    with _exit_if_broken():
        prepared = prepare_document(
            item,
            engine=rt.engine,
            analyzer=rt.analyzer,
            chunking=rt.chunking_for,
            extract_limits=rt.extract_limits,
            lease=rt.lease(self.request.id or str(uuid.uuid4())),
        )
    # Committed before the request: a waiting embed task, or the one queued here, will see it.
    if prepared is not None:
        request_embedding(self.app)


class _EmbedTask(_RetryingTask):
    def on_failure(self, exc, task_id, args, kwargs, einfo) -> None:
        # Retries exhausted: the documents this task claimed have no other task coming for them.
        lifecycle.fail_claim(runtime().engine, task_id, f"internal error while embedding: {exc!r}")


def embed_task_max_chunks(rt: Runtime) -> int:
    """SAEKIN_EMBED_TASK_MAX_CHUNKS, else by device: seconds of work on a GPU, minutes on CPU."""
    return rt.embed_batch_chunks


@shared_task(name=EMBED_TASK, base=_EmbedTask, bind=True)
def embed(self) -> None:
    """GPU stage: embed the waiting generations' chunks together, upsert their points, publish them."""
    rt = runtime()
    # Uploads finished from now on may be missed by the query below: they must queue a new task.
    if (flags := _request_flags(self.app.conf.broker_url)) is not None:
        flags.delete(EMBED_REQUESTED_KEY)
    # The task id owns the lease: this task, redelivered or retried, takes its batch back.
    lease = rt.lease(self.request.id or str(uuid.uuid4()))
    batch = lifecycle.claim_embed_batch(rt.engine, lease=lease, max_chunks=embed_task_max_chunks(rt))
    if batch.more_waiting:
        request_embedding(self.app)  # the next batch can start on another GPU meanwhile
    if batch.items:
        with _exit_if_broken():
            embed_claimed(batch, engine=rt.engine, models=rt.models, index=rt.index, lease=lease)


def warm_embed_worker() -> None:
    """Load the model once at worker start, so the first task does not pay for it. A worker that
    cannot load it is no worker: it exits, for its supervisor to restart (and to be seen)."""
    try:
        runtime().encoder.warmup()
    except BaseException:
        log.critical("the embed worker could not load its model; exiting", exc_info=True)
        os._exit(WORKER_SETUP_FAILED)


# --- a pool process that cannot work is replaced, not kept ---------------------------------------

# Exit status of a worker process whose set-up failed (EX_SOFTWARE).
WORKER_SETUP_FAILED = 70
# What a process of each queue imports before its first task. An import interrupted half-way (a
# soft time limit firing during the first task's `import torch`) leaves a process that fails every
# later task; done here, outside any task, a failure replaces the process instead.
SETUP_IMPORTS = {
    INGEST_QUEUE: ("services.ingest.pipeline", "services.ingest.extract", "kiwipiepy", "tokenizers", "transformers"),
    EMBED_QUEUE: ("torch", "sentence_transformers", "services.embedding.encoder"),
}
_in_pool_child = False


def check_process_setup(queue: str | None) -> None:
    """Import what a worker process of `queue` needs (both queues when unknown); raises if it cannot."""
    for name in SETUP_IMPORTS.get(queue or "", ()) if queue else (m for ms in SETUP_IMPORTS.values() for m in ms):
        importlib.import_module(name)


_setup_failure: BaseException | None = None


@worker_process_init.connect
def _check_pool_child(**_) -> None:
    """A prefork pool child checks that it can set itself up. One that cannot exits when its first
    task arrives (before running it): the pool starts another and the broker redelivers the task.
    It does not exit here: a pool whose process exits while the worker starts stops the worker."""
    global _in_pool_child, _setup_failure
    _in_pool_child = True
    try:
        check_process_setup(current_app.conf.get("saekin_queue"))
    except BaseException as exc:
        _setup_failure = exc
        log.critical("worker process %d failed its set-up; it will be replaced", os.getpid(), exc_info=True)


@task_prerun.connect
def _leave_if_broken(**_) -> None:
    if _setup_failure is not None:
        log.critical("worker process %d failed its set-up: exiting so that the pool replaces it", os.getpid())
        os._exit(WORKER_SETUP_FAILED)


@contextmanager
def _exit_if_broken() -> Iterator[None]:
    """An ImportError inside a task means this process's modules are broken (a half-done import):
    a pool child exits, so that the pool replaces it and the broker redelivers the task (acks_late,
    reject_on_worker_lost) to a sound one. In the solo pool the error goes to Celery's retry."""
    try:
        yield
    except ImportError:
        if not _in_pool_child:
            raise
        log.critical("worker process %d cannot import what its task needs; exiting", os.getpid(), exc_info=True)
        os._exit(WORKER_SETUP_FAILED)


# --- the reaper, in every worker's main process ------------------------------------------------

_reaper: Reaper | None = None


def start_reaper(app: Celery) -> Reaper:
    """Run the reaper in this worker's main process: documents of dead workers and lost messages are
    dispatched again (several workers' reapers at once are safe). Its engine keeps no connection
    open between passes, so that pool processes forked later inherit none."""
    global _reaper
    settings = get_settings()
    engine = make_engine(settings.sqlalchemy_url, pooled=False)

    def dispatch(item: WorkItem) -> None:
        app.send_task(INGEST_TASK, args=[str(item.document_id), item.generation], queue=INGEST_QUEUE)

    def backlog() -> int | None:
        flags = _request_flags(app.conf.broker_url)
        return None if flags is None else int(flags.llen(INGEST_QUEUE))

    _reaper = Reaper.from_settings(
        engine, settings, dispatch=dispatch, request_embedding=lambda: request_embedding(app), backlog=backlog
    ).start()
    return _reaper


@worker_shutdown.connect
def _stop_reaper(**_) -> None:
    if _reaper is not None:
        _reaper.close()
