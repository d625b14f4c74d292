"""Handing stored documents to ingestion: Celery queues in production, a thread in embedded mode.

The documents service only stores; the API layer gives each new generation to a Dispatcher.
Task names are the contract with workers/tasks.py (services never import workers).
"""

from __future__ import annotations

import logging
import queue
import threading
from typing import Protocol

from services.ingest.pipeline import WorkItem, pending_work, process_now
from services.runtime import Runtime

log = logging.getLogger(__name__)

INGEST_TASK = "saekin.ingest"
EMBED_TASK = "saekin.embed"
INGEST_QUEUE = "ingest"
EMBED_QUEUE = "embed"


class Dispatcher(Protocol):
    def submit(self, item: WorkItem) -> None: ...
    def close(self) -> None: ...


class CeleryDispatcher:
    """Sends each generation to the `ingest` queue; the ingest worker forwards it to `embed`."""

    def __init__(self, broker_url: str) -> None:
        from celery import Celery

        self._celery = Celery("saekin-api", broker=broker_url)
        self._celery.conf.broker_connection_retry_on_startup = True

    def submit(self, item: WorkItem) -> None:
        self._celery.send_task(INGEST_TASK, args=[str(item.document_id), item.generation], queue=INGEST_QUEUE)

    def ping(self) -> None:
        """Raise if the broker cannot be reached."""
        with self._celery.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=2)

    def close(self) -> None:
        self._celery.close()


class InProcessDispatcher:
    """Embedded mode: one background thread runs both stages; uploads never wait for it."""

    # Documents taken together so one encode call sees many chunks (fills the model's batches).
    max_documents_per_round = 32

    def __init__(self, runtime: Runtime, *, resume: bool = True) -> None:
        self._rt = runtime
        self._queue: queue.Queue[WorkItem | None] = queue.Queue()
        self._pending = 0
        self._done = threading.Condition()
        self._thread = threading.Thread(target=self._run, name="saekin-ingest", daemon=True)
        self._thread.start()
        if resume:
            for item in pending_work(runtime):
                self.submit(item)

    def submit(self, item: WorkItem) -> None:
        with self._done:
            self._pending += 1
        self._queue.put(item)

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Block until every submitted document has been processed (tests, CLI)."""
        with self._done:
            return self._done.wait_for(lambda: self._pending == 0, timeout)

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            batch = [item]
            while len(batch) < self.max_documents_per_round:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    self._queue.put(None)
                    break
                batch.append(nxt)
            try:
                process_now(self._rt, batch)
            finally:
                with self._done:
                    self._pending -= len(batch)
                    self._done.notify_all()

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=30)
