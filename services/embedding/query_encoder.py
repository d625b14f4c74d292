"""Query micro-batching for the API process: questions that wait while the model works share
the next forward pass of the `Encoder` (short ones packed without padding), and each caller
gets its own vector."""

from __future__ import annotations

import queue
import threading
import time
from concurrent.futures import Future
from typing import TYPE_CHECKING, Protocol

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from collections.abc import Sequence


class QueryEmbedder(Protocol):
    """What `QueryEncoder` needs of its model: `Encoder.encode_queries`."""

    def encode_queries(self, texts: Sequence[str]) -> np.ndarray: ...


_Request = tuple[str, "Future[np.ndarray]"]


class QueryEncoder:
    """Thread-safe query encoding with micro-batching.

    A worker thread takes every waiting question (at most `max_batch`; with `max_wait_ms` > 0 it
    first waits that long for more), encodes them in one forward pass and hands each caller its
    own vector. Questions that arrive while a forward pass runs are batched into the next one, so
    under load batches form without any wait, and an idle service answers at once.
    """

    def __init__(self, encoder: QueryEmbedder, *, max_wait_ms: float = 0.0, max_batch: int = 32) -> None:
        if max_wait_ms < 0 or max_batch < 1:
            raise ValueError("max_wait_ms must be >= 0 and max_batch >= 1")
        self.encoder = encoder
        self.max_wait_s = max_wait_ms / 1000.0
        self.max_batch = int(max_batch)
        self._queue: queue.Queue[_Request | None] = queue.Queue()  # None: stop
        self._closed = False
        self._close_lock = threading.Lock()
        self.batches_run = 0  # forward passes so far (observability and tests)
        self._thread = threading.Thread(target=self._run, name="saekin-query-encoder", daemon=True)
        self._thread.start()

    def encode(self, text: str) -> np.ndarray:
        """The float32 (dim,) embedding of one question."""
        return self.submit(text).result()

    def submit(self, text: str) -> Future[np.ndarray]:
        """Start encoding one question; the future's result is its float32 (dim,) embedding.

        Lets a caller do its other work (the sparse analysis) while the model runs.
        """
        if not isinstance(text, str):
            raise TypeError("encode takes one string")
        fut: Future[np.ndarray] = Future()
        with self._close_lock:
            if self._closed:
                raise RuntimeError("QueryEncoder is closed")
            self._queue.put((text, fut))
        return fut

    def close(self) -> None:
        """Stop the worker thread; waiting callers are answered first, later calls raise."""
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
            self._queue.put(None)
        self._thread.join()

    def __enter__(self) -> QueryEncoder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _collect(self, first: _Request) -> tuple[list[_Request], bool]:
        """`first` and the questions waiting (or arriving within max_wait_ms) after it; True
        when close() was called meanwhile."""
        batch = [first]
        deadline = time.monotonic() + self.max_wait_s
        while len(batch) < self.max_batch:
            remaining = deadline - time.monotonic()
            try:
                item = self._queue.get(timeout=remaining) if remaining > 0 else self._queue.get_nowait()
            except queue.Empty:
                break
            if item is None:
                return batch, True
            batch.append(item)
        return batch, False

    def _run(self) -> None:
        stopping = False
        while not stopping:
            item = self._queue.get()
            if item is None:
                break
            batch, stopping = self._collect(item)
            live = [(t, f) for t, f in batch if f.set_running_or_notify_cancel()]
            if not live:
                continue
            try:
                vectors = self.encoder.encode_queries([t for t, _ in live])
            except BaseException as exc:
                for _, f in live:
                    f.set_exception(exc)
                continue
            self.batches_run += 1
            for row, (_, f) in enumerate(live):
                f.set_result(vectors[row].copy())
