"""Prometheus metrics of the API, the ingestion stages, search and the models.

The metric objects are the library's usual module-level ones; recording is a few nanoseconds
and needs no set-up. Which registry the scrape reads is decided at scrape time (`render`):

- one process (the embedded service, `saekin serve` with one worker): the default registry;
- several processes writing into PROMETHEUS_MULTIPROC_DIR (`saekin serve --workers N`, the
  Celery worker's pool processes): prometheus-client's multiprocess mode, whose collector
  sums the processes' files. The environment variable must be set before prometheus_client is
  first imported; `saekin worker` does that itself (see :func:`serve_worker_metrics`).

Values computed at scrape time from the database or the broker (documents by status, queue
depth) are custom collectors registered on the app's own registry (services/api/metrics_route.py).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client import values as _values

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

# Latency buckets from 1 ms to 60 s: search stages sit at the bottom, uploads and reranking higher up.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
# Ingestion stages run from milliseconds (a short text) to many minutes (a 500-page PDF on CPU).
STAGE_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 900.0, 1800.0)

HTTP_REQUEST_SECONDS = Histogram(
    "saekin_http_request_duration_seconds",
    "HTTP request latency by route template (e.g. /v1/collections/{collection}/search), method and status.",
    ["method", "route", "status"],
    buckets=LATENCY_BUCKETS,
)
SEARCH_STAGE_SECONDS = Histogram(
    "saekin_search_stage_seconds",
    "Time per search stage: encode (waiting for the query vector), analyse (morphemes), index_query "
    "(Qdrant), sql (passages), highlight, rerank.",
    ["stage"],
    buckets=LATENCY_BUCKETS,
)
SEARCHES = Counter("saekin_searches_total", "Searches answered, by mode.", ["mode"])
INGEST_STAGE_SECONDS = Histogram(
    "saekin_ingest_stage_seconds",
    "Time per ingestion stage: extract, chunk (Kiwi, chunker, sparse vectors), store (chunk rows), "
    "embed (the model), upsert (Qdrant), publish.",
    ["stage"],
    buckets=STAGE_BUCKETS,
)
INGEST_CHUNKS = Counter(
    "saekin_ingest_chunks_total", "Chunks through an ingestion stage; rate() is chunks per second.", ["stage"]
)
INGEST_DOCUMENTS = Counter(
    "saekin_ingest_documents_total", "Document generations that finished ingestion, by outcome.", ["outcome"]
)
EMBEDDING_TOKENS = Counter(
    "saekin_embedding_tokens_total",
    "Tokens through the embedding model (padding excluded), by kind (document, query); rate() is tokens per second.",
    ["kind"],
)
EMBEDDING_SECONDS = Counter(
    "saekin_embedding_seconds_total", "Seconds of embedding model forward passes, by kind.", ["kind"]
)
MODEL_LOADED = Gauge(
    "saekin_model_loaded",
    "1 when a model is loaded in a live process: embedding, reranker, analyzer (Kiwi).",
    ["model"],
    multiprocess_mode="livemax",
)


def multiprocess_dir() -> str | None:
    return os.environ.get(MULTIPROC_ENV) or None


@contextmanager
def timed(histogram: Histogram, stage: str) -> Iterator[None]:
    """Observe the time of the block in `histogram` under `stage` (also when it raises)."""
    started = time.perf_counter()
    try:
        yield
    finally:
        histogram.labels(stage).observe(time.perf_counter() - started)


class StageTimes:
    """Seconds per stage of one operation, summed over repeated stages, observed once at the end
    (a search asks the index and the database several times when hits are skipped)."""

    __slots__ = ("seconds",)

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.add(name, time.perf_counter() - started)

    def add(self, name: str, seconds: float) -> None:
        self.seconds[name] = self.seconds.get(name, 0.0) + seconds

    def observe(self, histogram: Histogram) -> None:
        for name, seconds in self.seconds.items():
            histogram.labels(name).observe(seconds)


def process_registry() -> CollectorRegistry:
    """The registry holding this process's metrics, or, in multiprocess mode, a collector of every
    process writing into PROMETHEUS_MULTIPROC_DIR."""
    if multiprocess_dir() is None:
        from prometheus_client import REGISTRY

        return REGISTRY
    from prometheus_client import multiprocess

    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
    return registry


def render(*registries: CollectorRegistry) -> bytes:
    """The text exposition of the process metrics and of `registries` (scrape-time collectors)."""
    return b"".join(generate_latest(r) for r in (process_registry(), *registries))


def use_multiprocess_dir(path: str) -> None:
    """Record this process's metrics (and its children's) as files under `path`.

    Called before any metric is recorded; prometheus-client chooses its value class when it is
    imported, so it is chosen again here in case it was imported before the directory was known.
    """
    os.environ[MULTIPROC_ENV] = path
    _values.ValueClass = _values.get_value_class()


def mark_process_dead(pid: int) -> None:
    """Drop a finished pool process's live gauges (multiprocess mode)."""
    if multiprocess_dir() is not None:
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid)


def serve_worker_metrics(port: int, addr: str = "0.0.0.0") -> None:
    """A worker's /metrics on `port`: the Celery main process serves what its pool processes record."""
    from prometheus_client import start_http_server

    start_http_server(port, addr=addr, registry=process_registry())
