"""The Celery application factory: explicit configuration, explicit task modules, queues by hardware.

Queues: `ingest` (CPU: extract, normalize, Kiwi, chunk) and `embed` (GPU: the model). Run one
embed worker process per GPU with the solo pool (CUDA does not survive fork), e.g.
`saekin worker --queue embed`; scale ingest workers by CPU cores.
"""

from __future__ import annotations

from celery import Celery
from kombu import Queue

from config.settings import Settings, get_settings
from services.dispatch import EMBED_QUEUE, INGEST_QUEUE


def create_celery(settings: Settings | None = None) -> Celery:
    settings = settings or get_settings()
    if not settings.broker_url:
        raise RuntimeError(
            "SAEKIN_BROKER_URL is not set: workers are for production mode (embedded mode ingests in-process)"
        )
    app = Celery("saekin", broker=settings.broker_url, include=["workers.tasks"])
    app.conf.update(
        task_queues=[Queue(INGEST_QUEUE), Queue(EMBED_QUEUE)],
        task_default_queue=INGEST_QUEUE,
        # A task whose pool process died is redelivered at once (acks_late, reject_on_worker_lost)
        # and takes its own lease back; one whose whole worker died waits for the visibility
        # timeout, long after the reaper has handed its document to another worker; it then finds
        # the lease live or the stage done, and does nothing (services/documents/lifecycle.py).
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        # A pool process is replaced after this many tasks; one that fails its set-up exits at once
        # (workers/tasks.py), so a broken process cannot fail task after task.
        worker_max_tasks_per_child=settings.worker_max_tasks_per_child or None,
        task_time_limit=settings.task_time_limit_s,
        task_soft_time_limit=max(settings.task_time_limit_s - 30, 10),
        # Redelivery of unacked tasks happens after this; it must exceed the longest task.
        broker_transport_options={"visibility_timeout": settings.task_time_limit_s * 2},
        broker_connection_retry_on_startup=True,
        task_ignore_result=True,
        task_serializer="json",
        accept_content=["json"],
        worker_hijack_root_logger=False,
    )
    return app
