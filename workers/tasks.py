"""Thin Celery tasks: ids in, domain code does the work, failures reach Celery's retry."""
from __future__ import annotations

import logging
import os
import uuid

from celery import Task, shared_task
from celery.signals import worker_process_shutdown

from config.settings import get_settings
from services.dispatch import EMBED_QUEUE, EMBED_TASK, INGEST_TASK
from services.ingest.pipeline import (
    WorkItem, embed_documents, embedding_batch, mark_claim_failed, mark_failed, prepare_document,
)
from services.runtime import Runtime

log = logging.getLogger(__name__)
_runtime: Runtime | None = None
_runtime_pid: int | None = None


def runtime() -> Runtime:
    """This worker process's resources, created after fork (never in the parent: CUDA forbids it)."""
    if _runtime is None or _runtime_pid != os.getpid():
        use_runtime(Runtime(get_settings()))
    return _runtime


def use_runtime(rt: Runtime | None) -> None:
    """Make the tasks of this process use `rt` (tests share the API's runtime with a worker thread)."""
    global _runtime, _runtime_pid
    _runtime, _runtime_pid = rt, os.getpid()


@worker_process_shutdown.connect
def _close(**_) -> None:
    if _runtime is not None:
        _runtime.close()


class _PipelineTask(Task):
    autoretry_for = (Exception,)
    retry_backoff = True
    retry_backoff_max = 300
    max_retries = 5

    def on_failure(self, exc, task_id, args, kwargs, einfo) -> None:
        # Retries exhausted: keep the reason on the document instead of leaving it `processing`.
        document_id, generation = args[0], args[1]
        mark_failed(runtime(), WorkItem(uuid.UUID(document_id), int(generation)), f"internal error: {exc!r}")


@shared_task(name=INGEST_TASK, base=_PipelineTask, bind=True)
def ingest(self, document_id: str, generation: int) -> None:
    """CPU stage: extract, normalize, chunk, analyse; then hand the generation to the embed queue."""
    item = WorkItem(uuid.UUID(document_id), int(generation))
    if prepare_document(runtime(), item) is not None:
        self.app.send_task(EMBED_TASK, args=[document_id, generation], queue=EMBED_QUEUE)


class _EmbedTask(_PipelineTask):
    def on_failure(self, exc, task_id, args, kwargs, einfo) -> None:
        super().on_failure(exc, task_id, args, kwargs, einfo)
        # The rest of the batch this task claimed has no task of its own left.
        mark_claim_failed(runtime(), task_id, f"internal error while embedding: {exc!r}")


@shared_task(name=EMBED_TASK, base=_EmbedTask, bind=True)
def embed(self, document_id: str, generation: int) -> None:
    """GPU stage: embed the generation's chunks (with other waiting ones), upsert their points, publish them."""
    rt = runtime()
    # The task id names the claim: this task, redelivered or retried, takes its batch back.
    batch = embedding_batch(rt, WorkItem(uuid.UUID(document_id), int(generation)),
                            claim=self.request.id or str(uuid.uuid4()), lease_s=rt.settings.task_time_limit_s)
    embed_documents(rt, batch)


def warm_embed_worker() -> None:
    """Load the model once at worker start, so the first task does not pay for it."""
    runtime().encoder.warmup()
