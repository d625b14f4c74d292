"""The soak's API process in qdrant-client local mode: `saekin serve` in production mode with the
embed worker inside it (bench/soak.py explains why: local mode lets one process open the index,
and the API searches what the embed worker writes). The embed worker is a real Celery worker on
the real broker (solo pool, the `embed` queue) running in a thread, with its reaper; the ingest
worker stays a process of its own."""

from __future__ import annotations

import argparse
import logging

import uvicorn
from celery.contrib.testing.worker import start_worker

from config.settings import get_settings
from services.api.app import create_app
from services.dispatch import EMBED_QUEUE
from services.runtime import Runtime
from workers import tasks
from workers.celery_app import create_celery


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = get_settings()
    rt = Runtime(settings)
    tasks.use_runtime(rt)  # the worker thread shares this process's local-mode index
    celery = create_celery(settings)
    celery.conf.saekin_queue = EMBED_QUEUE
    rt.encoder.warmup()
    with start_worker(
        celery,
        pool="solo",
        concurrency=1,
        perform_ping_check=False,
        loglevel="WARNING",
        queues=[EMBED_QUEUE],
        shutdown_timeout=60,
    ):
        reaper = tasks.start_reaper(celery)
        try:
            uvicorn.run(create_app(settings, runtime=rt), host="127.0.0.1", port=args.port)
        finally:
            reaper.close()
    rt.close()


if __name__ == "__main__":
    main()
