"""Metrics computed when Prometheus scrapes: documents by status per collection (one grouped SQL
query on an indexed column pair) and the depth of each ingestion queue."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import Engine, func, select

from services.documents.models import Collection, Document

log = logging.getLogger(__name__)


class DocumentsCollector(Collector):
    """saekin_documents{collection, status}: the number of documents, read from the database at scrape time."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "saekin_documents",
            "Documents by collection and status (queued, processing, indexed, failed).",
            labels=["collection", "status"],
        )
        query = (
            select(Collection.name, Document.status, func.count())
            .join(Document, Document.collection_id == Collection.id)
            .group_by(Collection.name, Document.status)
        )
        try:
            with self.engine.connect() as conn:
                for name, status, count in conn.execute(query):
                    family.add_metric([name, getattr(status, "value", str(status))], count)
        except Exception:  # a scrape must not fail because the database is down; /readyz says so
            log.warning("documents metric: the database could not be read", exc_info=True)
        yield family


class QueueCollector(Collector):
    """saekin_queue_depth{queue}: tasks waiting in each ingestion queue, asked at scrape time."""

    def __init__(self, depths: Callable[[], Mapping[str, int]]) -> None:
        self.depths = depths

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "saekin_queue_depth",
            "Tasks waiting per queue: the Celery queues' Redis lists in production (ingest, embed), the "
            "in-process queue in the embedded service.",
            labels=["queue"],
        )
        try:
            for queue, depth in self.depths().items():
                family.add_metric([queue], depth)
        except Exception:
            log.warning("queue depth metric: the broker could not be read", exc_info=True)
        yield family
