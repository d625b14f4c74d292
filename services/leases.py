"""Keeping claimed stages alive, and taking back what dead workers and lost messages left behind.

A worker that claims a stage holds a lease on the document (services/documents/lifecycle.py);
:class:`Heartbeat` renews it from a thread while the stage works, so a long extraction or a long
embed batch keeps it however long it takes, and a killed worker's lease simply runs out.
:class:`Reaper` runs :func:`lifecycle.reap` every few seconds and hands what it found back to the
dispatcher: in production a thread in every worker process (several reapers at once are safe:
each change re-checks its condition in its own UPDATE), in the embedded service a thread beside
the ingestion threads, which first takes back everything the last process left.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from types import TracebackType

from sqlalchemy import Engine

from services.documents import lifecycle
from services.documents.lifecycle import Lease, Reaped, WorkItem

log = logging.getLogger(__name__)


class Heartbeat:
    """Renews `lease` on `items` every third of its length while the `with` block runs."""

    def __init__(self, engine: Engine, lease: Lease, items: Sequence[WorkItem]) -> None:
        self._engine, self._lease, self._items = engine, lease, list(items)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"saekin-heartbeat-{lease.owner[:12]}", daemon=True)
        self.lost = False  # a renewal found fewer documents than it holds: taken over, replaced or deleted

    def __enter__(self) -> Heartbeat:
        if self._items:
            self._thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self._lease.seconds / 3):
            try:
                held = lifecycle.renew(self._engine, self._lease, self._items)
            except Exception:  # the database is briefly unreachable: the next beat tries again
                log.warning("lease renewal for %s failed", self._lease.owner, exc_info=True)
                continue
            if held < len(self._items) and not self.lost:
                self.lost = True
                log.warning("lease %s: %d of %d documents taken from it", self._lease.owner, held, len(self._items))


class Reaper:
    """Runs :func:`lifecycle.reap` now and then every `interval_s` in a thread, and hands its finds over:
    `dispatch` for documents to send to the prepare stage, `request_embedding` when documents wait
    for the embed stage with nobody on them. `backlog`: how many messages wait in the prepare
    stage's queue (None: unknown); queued documents are sent again only when none do, so a queue
    whose workers are down does not fill with copies."""

    def __init__(
        self,
        engine: Engine,
        *,
        dispatch: Callable[[WorkItem], object],
        request_embedding: Callable[[], object],
        interval_s: float,
        redispatch_after_s: float,
        max_attempts: int,
        backlog: Callable[[], int | None] = lambda: None,
    ) -> None:
        self._engine = engine
        self._dispatch, self._request_embedding = dispatch, request_embedding
        self._backlog = backlog
        self.interval_s, self.redispatch_after_s, self.max_attempts = interval_s, redispatch_after_s, max_attempts
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @classmethod
    def from_settings(cls, engine: Engine, settings, **handlers) -> Reaper:
        return cls(
            engine,
            interval_s=settings.reaper_interval_s,
            redispatch_after_s=settings.redispatch_after_s,
            max_attempts=settings.stage_max_attempts,
            **handlers,
        )

    def run_once(self, *, everything: bool = False) -> Reaped:
        """One pass; `everything` at an embedded service's start (every lease is the stopped process's)."""
        reaped = lifecycle.reap(
            self._engine,
            redispatch_after_s=self.redispatch_after_s,
            max_attempts=self.max_attempts,
            everything=everything,
            lost_queued=not self._backlog(),
        )
        if reaped.dispatch or reaped.failed:
            log.info(
                "reaper: %d documents dispatched again, %d failed out of attempts, embed stage waiting: %s",
                len(reaped.dispatch),
                len(reaped.failed),
                reaped.embed_waiting,
            )
        for item in reaped.dispatch:
            try:
                self._dispatch(item)
            except Exception:  # the broker is down: the document stays queued, and the next pass tries again
                log.warning("reaper could not dispatch %s; it will try again", item, exc_info=True)
                break
        if reaped.embed_waiting:
            try:
                self._request_embedding()
            except Exception:
                log.warning("reaper could not request an embed task; it will try again", exc_info=True)
        return reaped

    def start(self) -> Reaper:
        self._thread = threading.Thread(target=self._run, name="saekin-reaper", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.run_once()
            except Exception:  # the database is briefly unreachable: the next pass tries again
                log.warning("reaper pass failed", exc_info=True)

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
