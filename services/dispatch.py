"""Intake: store an upload, then hand its new generation to ingestion.

The documents service only stores (services/documents/lifecycle.py); a Dispatcher runs the
stages: Celery queues in production, a background thread in the embedded service, or inline in
the caller (the CLI and evaluation, which wait for the result anyway). Task names are the
contract with workers/tasks.py (services never import workers).
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Sequence
from typing import Protocol

from sqlalchemy.orm import Session, sessionmaker

from services.collections.model import ModelRef
from services.db import session_scope
from services.documents import lifecycle
from services.documents.lifecycle import Stored, Upload, WorkItem

log = logging.getLogger(__name__)

INGEST_TASK = "saekin.ingest"
EMBED_TASK = "saekin.embed"
INGEST_QUEUE = "ingest"
EMBED_QUEUE = "embed"

Process = Callable[[Sequence[WorkItem]], None]


class Dispatcher(Protocol):
    def submit(self, item: WorkItem) -> None: ...
    def close(self) -> None: ...


def intake(
    upload: Upload,
    *,
    session_factory: sessionmaker[Session],
    collection_name: str,
    profile: str,
    dispatcher: Dispatcher,
    model: ModelRef | None = None,
) -> Stored:
    """Store `upload` in its own transaction and, once committed, dispatch its new generation.

    Blocking (database, broker): the upload route calls it in a worker thread.
    """
    with session_scope(session_factory) as session:
        stored = lifecycle.store(session, collection_name=collection_name, profile=profile, upload=upload, model=model)
    if stored.created:
        dispatcher.submit(stored.item)
    return stored


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
    """The embedded service: one background thread runs both stages; uploads never wait for it."""

    # Documents taken together so one encode call sees many chunks (fills the model's batches).
    max_documents_per_round = 32

    def __init__(self, process: Process, *, resume: Sequence[WorkItem] = ()) -> None:
        self._process = process
        self._queue: queue.Queue[WorkItem | None] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="saekin-ingest", daemon=True)
        self._thread.start()
        for item in resume:  # generations left queued or in progress by the last process
            self.submit(item)

    def submit(self, item: WorkItem) -> None:
        self._queue.put(item)

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
            self._process(batch)

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=30)


class InlineDispatcher:
    """Collects generations and runs both stages when the caller drains it (CLI, evaluation)."""

    def __init__(self, process: Process) -> None:
        self._process = process
        self.pending: list[WorkItem] = []

    def submit(self, item: WorkItem) -> None:
        self.pending.append(item)

    def drain(self, *, batch: int = 32, progress: Callable[[int], object] = lambda n: None) -> list[WorkItem]:
        """Process everything submitted, `batch` generations at a time (one encode call each);
        `progress` is told how many finished after each batch. Returns the processed items."""
        done, self.pending = self.pending, []
        for i in range(0, len(done), batch):
            self._process(done[i : i + batch])
            progress(len(done[i : i + batch]))
        return done

    def close(self) -> None:
        self.pending = []
