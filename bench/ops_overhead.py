"""What operating features cost per request: a scrape of GET /metrics (documents by status over
many collections, read at scrape time) and the access check of a database API key.

In process (Starlette's TestClient, SQLite, no model): documents are stored, not indexed, so the
metrics' grouped query has rows to count. Prints one JSON object.

    python bench/ops_overhead.py --collections 50 --documents 40 --requests 300
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from _common import emit, log

from config.settings import Settings


def timed(client, method: str, url: str, n: int, **kw) -> float:
    """Median milliseconds of `n` requests (after 5 warm-up ones)."""
    for _ in range(5):
        client.request(method, url, **kw)
    samples = []
    for _ in range(n):
        started = time.perf_counter()
        r = client.request(method, url, **kw)
        samples.append((time.perf_counter() - started) * 1000)
        assert r.status_code == 200, r.text
    return round(statistics.median(samples), 3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--collections", type=int, default=50)
    parser.add_argument("--documents", type=int, default=40, help="per collection")
    parser.add_argument("--requests", type=int, default=300)
    args = parser.parse_args()

    from fastapi.testclient import TestClient

    from services.api.app import create_app
    from services.auth.keys import create_key
    from services.auth.models import Scope
    from services.db import session_scope, upgrade_database
    from services.documents import lifecycle

    tmp = Path(tempfile.mkdtemp(prefix="saekin-ops-bench-"))
    url = f"sqlite:///{tmp / 'ops.db'}"
    upgrade_database(url)
    results: dict = {"collections": args.collections, "documents": args.collections * args.documents}
    for keys in (False, True):
        settings = Settings(_env_file=None, data_dir=tmp / "data", database_url=url, log_level="WARNING")
        app = create_app(settings, dispatcher=_NoDispatch(), warm_up=False)
        with TestClient(app) as client:
            rt = app.state.runtime
            headers = {}
            if not keys:
                log("storing documents")
                for c in range(args.collections):
                    with session_scope(rt.session_factory) as session:
                        for d in range(args.documents):
                            upload = lifecycle.Upload(data=f"문서 {c}-{d}".encode(), media_type="text/plain")
                            lifecycle.store(session, collection_name=f"c{c:03d}", profile=rt.profile, upload=upload)
            else:
                with session_scope(rt.session_factory) as session:
                    plain = create_key(session, name="bench", scope=Scope.admin, collections=["*"]).plain
                headers = {"Authorization": f"Bearer {plain}"}
            label = "database_key" if keys else "no_keys"
            log(label)
            results[f"metrics_scrape_ms_{label}"] = timed(
                client, "GET", "/metrics", args.requests // 3, headers=headers
            )
            results[f"list_documents_ms_{label}"] = timed(
                client, "GET", "/v1/collections/c000/documents?limit=1", args.requests, headers=headers
            )
    results["key_check_overhead_ms"] = round(
        results["list_documents_ms_database_key"] - results["list_documents_ms_no_keys"], 3
    )
    emit(results)


class _NoDispatch:
    """Stores only: the benchmark measures requests, not ingestion."""

    def submit(self, item) -> None:
        pass

    def close(self) -> None:
        pass


if __name__ == "__main__":
    main()
