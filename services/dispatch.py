"""Intake: store an upload, then hand its new generation to ingestion.

The documents service only stores (services/documents/lifecycle.py); a Dispatcher runs the
stages: Celery queues in production, a background thread in the embedded service, or inline in
the caller (the CLI and evaluation, which wait for the result anyway). Task names are the
contract with workers/tasks.py (services never import workers).
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import uuid
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from sqlalchemy.orm import Session, sessionmaker

from services.collections.model import ModelRef
from services.db import session_scope
from services.documents import lifecycle
from services.documents.lifecycle import Stored, Upload, WorkItem
from services.errors import ConcurrentWrite

log = logging.getLogger(__name__)

INGEST_TASK = "saekin.ingest"
EMBED_TASK = "saekin.embed"
INGEST_QUEUE = "ingest"
EMBED_QUEUE = "embed"

Process = Callable[[Sequence[WorkItem]], None]


class Dispatcher(Protocol):
    def submit(self, item: WorkItem) -> None: ...
    def close(self) -> None: ...


# Transactions tried per upload: one lost race for the collection and one for the document.
_STORE_ATTEMPTS = 3

# Dispatchers may also answer `queue_depths() -> dict[str, int]` (the queue depth metric).


def intake(
    upload: Upload,
    *,
    session_factory: sessionmaker[Session],
    collection_name: str,
    profile: str,
    dispatcher: Dispatcher,
    model: ModelRef | None = None,
    any_model: bool = False,
    redispatch_after_s: float | None = None,
) -> Stored:
    """Store `upload` in its own transaction and, once committed, dispatch its new generation.

    The same content uploaded again dispatches the stored generation again when it has waited
    `redispatch_after_s` without being taken (its message may have been lost). A broker that
    cannot take the message does not lose the upload: the document is stored, queued, and the
    reaper (services/leases.py) sends it once the broker is back, so the upload is accepted.
    `model` and `any_model` as in :func:`lifecycle.store`.
    Blocking (database, broker): the upload route calls it in a worker thread.
    """
    for attempt in range(1, _STORE_ATTEMPTS + 1):
        try:
            with session_scope(session_factory) as session:
                stored = lifecycle.store(
                    session,
                    collection_name=collection_name,
                    profile=profile,
                    upload=upload,
                    model=model,
                    any_model=any_model,
                )
                send = stored.created or (
                    redispatch_after_s is not None
                    and lifecycle.redispatch_if_stale(session, stored.item, redispatch_after_s=redispatch_after_s)
                )
            break
        except ConcurrentWrite:
            # A concurrent upload inserted the same document or collection first: the next
            # transaction sees its row and answers as for a repeated upload.
            if attempt == _STORE_ATTEMPTS:
                raise
    if send:
        try:
            dispatcher.submit(stored.item)
        except Exception as exc:  # the broker is down: the stored document is the outbox
            log.warning("document %s stays queued until the reaper can dispatch it: %r", stored.item.document_id, exc)
    return stored


class CeleryDispatcher:
    """Sends each generation to the `ingest` queue; the ingest worker forwards it to `embed`."""

    # With the broker down an upload waits this long for it, then is accepted all the same (queued,
    # for the reaper to send).
    publish_retry = {"max_retries": 2, "interval_start": 0.2, "interval_step": 0.3, "interval_max": 0.5}

    def __init__(self, broker_url: str) -> None:
        from celery import Celery

        self._celery = Celery("saekin-api", broker=broker_url)
        self._celery.conf.broker_connection_retry_on_startup = True
        self._celery.conf.broker_connection_timeout = 2
        self._broker_url = broker_url
        self._redis: Any = None  # the broker's Redis, opened by the first scrape of queue depths

    def submit(self, item: WorkItem) -> None:
        self._celery.send_task(
            INGEST_TASK,
            args=[str(item.document_id), item.generation],
            queue=INGEST_QUEUE,
            retry=True,
            retry_policy=self.publish_retry,
        )

    def ping(self) -> None:
        """Raise if the broker cannot be reached."""
        with self._celery.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=2)

    def queue_depths(self) -> dict[str, int]:
        """Tasks waiting in each queue: the length of its Redis list (Celery's Redis transport);
        empty for another broker."""
        if not self._broker_url.startswith(("redis://", "rediss://", "unix://")):
            return {}
        if self._redis is None:
            import redis

            self._redis = redis.Redis.from_url(self._broker_url, socket_timeout=2)
        pipe = self._redis.pipeline(transaction=False)
        for name in (INGEST_QUEUE, EMBED_QUEUE):
            pipe.llen(name)
        return dict(zip((INGEST_QUEUE, EMBED_QUEUE), pipe.execute()))

    def close(self) -> None:
        self._celery.close()
        if self._redis is not None:
            self._redis.close()


class InProcessDispatcher:
    """The embedded service: `prepare_threads` threads run the prepare stage of several documents at
    once (extraction of files in child processes, Kiwi in native threads), one thread the embed stage
    of whatever they have prepared (many documents per encode call). Uploads never wait for them.

    `prepare(item, owner=...)` and `embed(owner=...)` are the Runtime's; a document already waiting
    here is not queued twice (the reaper may hand back one that is only waiting its turn).
    """

    def __init__(self, prepare: Callable[..., bool], embed: Callable[..., bool], *, prepare_threads: int = 2) -> None:
        self._prepare, self._embed = prepare, embed
        self._queue: queue.Queue[WorkItem | None] = queue.Queue()
        self._waiting: set[WorkItem] = set()
        self._lock = threading.Lock()
        self._embed_wanted = threading.Event()
        self._closing = False
        owner = f"embedded-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self._threads = [
            threading.Thread(
                target=self._prepare_loop, args=(f"{owner}-p{i}",), name=f"saekin-prepare-{i}", daemon=True
            )
            for i in range(prepare_threads)
        ]
        self._threads.append(
            threading.Thread(target=self._embed_loop, args=(f"{owner}-e",), name="saekin-embed", daemon=True)
        )
        for thread in self._threads:
            thread.start()

    def submit(self, item: WorkItem) -> None:
        with self._lock:
            if item in self._waiting:
                return
            self._waiting.add(item)
        self._queue.put(item)

    def request_embedding(self) -> None:
        self._embed_wanted.set()

    def backlog(self) -> int:
        """Documents waiting for a prepare thread."""
        return self._queue.qsize()

    def queue_depths(self) -> dict[str, int]:
        """Generations waiting for a prepare thread (the queue depth metric)."""
        return {"inprocess": self.backlog()}

    def _prepare_loop(self, owner: str) -> None:
        while (item := self._queue.get()) is not None:
            with self._lock:
                self._waiting.discard(item)
            if self._prepare(item, owner=owner):
                self._embed_wanted.set()

    def _embed_loop(self, owner: str) -> None:
        while True:
            self._embed_wanted.wait()
            self._embed_wanted.clear()
            if self._closing:
                return
            while self._embed(owner=owner) and not self._closing:  # more waiting: the next batch
                pass

    def close(self) -> None:
        self._closing = True
        for _ in self._threads:
            self._queue.put(None)
        self._embed_wanted.set()
        for thread in self._threads:
            thread.join(timeout=30)


class InlineDispatcher:
    """Collects generations and runs both stages when the caller drains it (CLI, evaluation)."""

    def __init__(self, process: Process) -> None:
        self._process = process
        self.pending: list[WorkItem] = []

    def submit(self, item: WorkItem) -> None:
        self.pending.append(item)

    def queue_depths(self) -> dict[str, int]:
        return {"inline": len(self.pending)}

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
