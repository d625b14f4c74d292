"""A large document beside small ones (issue 18, item 9): the per-chunk rate of the prepare stage on
one large text, and how long a one-line upload waits while the large one is prepared.

1. In this process: one document of `--chars` characters (the AutoRAG pages joined, repeated as
   needed) through `prepare_document` (extraction, NFC, Kiwi, chunking, sparse vectors, the chunk
   rows), timed in wall seconds and in this process's CPU seconds (Kiwi's threads included), so the
   rate per core does not depend on what else the machine is doing.
2. Through the embedded service (`saekin serve`, the small twin, SQLite, Qdrant Edge): the large
   document is uploaded, then `--small` one-line documents right after it; each one's seconds from
   upload to `indexed`, and the large one's.

    .venv/bin/python bench/large_document.py                    # 1.44M characters, as in the issue
    .venv/bin/python bench/large_document.py --chars 300000

stdout: {"chars", "chunks", "prepare_wall_s", "prepare_cpu_s", "chunks_per_cpu_s",
         "served": {"large_indexed_s", "small_indexed_s": [...], "prepare_threads"}}
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import DEFAULT_CORPUS, emit, load_pages, log, make_work_dir, resolve_model
from bench._service import ServiceProcess, free_port, service_env, wait_until


def large_text(pages: list[str], chars: int) -> str:
    parts: list[str] = []
    total = 0
    while total < chars:
        for page in pages:
            parts.append(page)
            total += len(page) + 2
            if total >= chars:
                break
    return "\n\n".join(parts)[:chars]


def prepare_in_process(text: str, model: str, work_dir: Path) -> dict:
    from config.settings import Settings
    from services.db import session_scope, upgrade_database
    from services.documents import lifecycle
    from services.ingest.pipeline import prepare_document
    from services.runtime import Runtime

    settings = Settings(_env_file=None, data_dir=work_dir / "data", embedding_model=model)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    upgrade_database(settings.sqlalchemy_url)
    rt = Runtime(settings)
    try:
        rt.analyzer, rt.chunking  # loaded before the clock starts  # noqa: B018
        upload = lifecycle.Upload(data=text.encode(), media_type="text/plain", external_id="large")
        with session_scope(rt.session_factory) as session:
            item = lifecycle.store(session, collection_name="large", profile=rt.profile, upload=upload).item
        cpu0, wall0 = time.process_time(), time.perf_counter()
        chunks = prepare_document(
            item,
            engine=rt.engine,
            analyzer=rt.analyzer,
            chunking=rt.chunking_for,
            extract_limits=rt.extract_limits,
            lease=rt.lease("bench"),
        )
        cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    finally:
        rt.close()
    chunks = chunks or 0
    return dict(
        chunks=chunks,
        prepare_wall_s=round(wall, 2),
        prepare_cpu_s=round(cpu, 2),
        chunks_per_cpu_s=round(chunks / cpu, 1) if cpu else None,
    )


def served(text: str, model: str, work_dir: Path, small: int) -> dict:
    import httpx

    port = free_port()
    env = service_env({"SAEKIN_DATA_DIR": str(work_dir / "served"), "SAEKIN_EMBEDDING_MODEL": model})
    server = ServiceProcess(
        "api", ["serve", "--host", "127.0.0.1", "--port", str(port)], env=env, log_path=work_dir / "server.log"
    )
    base = f"http://127.0.0.1:{port}"
    try:
        with httpx.Client(base_url=base, timeout=120) as client:

            def ready() -> bool:
                try:
                    return client.get("/readyz").status_code == 200
                except httpx.TransportError:
                    return False

            wait_until(ready, timeout=300, what="the service to be ready", check=server.check_alive)
            uploaded: dict[str, float] = {}
            r = client.post("/v1/collections/mixed/documents", json={"text": text, "external_id": "large"})
            r.raise_for_status()
            uploaded[r.json()["id"]] = time.perf_counter()
            large_id = r.json()["id"]
            for i in range(small):
                r = client.post(
                    "/v1/collections/mixed/documents",
                    json={
                        "text": f"{i}번째 짧은 문서: 탄소중립 기본법은 기후위기에 대응하기 위한 법률이다.",
                        "external_id": f"s{i}",
                    },
                )
                r.raise_for_status()
                uploaded[r.json()["id"]] = time.perf_counter()
            done: dict[str, float] = {}
            deadline = time.monotonic() + 1800
            while len(done) < len(uploaded) and time.monotonic() < deadline:
                for doc_id in uploaded.keys() - done.keys():
                    status = client.get(f"/v1/collections/mixed/documents/{doc_id}").json()["status"]
                    if status in ("indexed", "failed"):
                        done[doc_id] = time.perf_counter() - uploaded[doc_id]
                        log(f"{doc_id[:8]} {status} after {done[doc_id]:.1f}s")
                time.sleep(0.2)
    finally:
        server.stop()
    return dict(
        large_indexed_s=round(done.get(large_id, float("nan")), 1),
        small_indexed_s=[round(v, 1) for k, v in done.items() if k != large_id],
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--chars", type=int, default=1_440_000, help="characters of the large document")
    ap.add_argument("--small", type=int, default=3, help="one-line documents uploaded right after it")
    ap.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    ap.add_argument("--model", default=None, help="model directory (default: the small bge-m3-ko twin)")
    ap.add_argument("--skip-served", action="store_true", help="only the in-process prepare stage")
    args = ap.parse_args()

    model = resolve_model("bge-m3-ko", args.model, small=True)
    text = large_text(load_pages(args.corpus), args.chars)
    work_dir = make_work_dir("saekin-large-", None)
    log(f"{len(text):,} characters; prepare stage in process")
    result: dict = dict(chars=len(text), **prepare_in_process(text, model, work_dir))
    log(f"{result['chunks']} chunks, {result['chunks_per_cpu_s']} chunks per CPU second")
    if not args.skip_served:
        result["served"] = served(text, model, work_dir, args.small)
    emit(result)


if __name__ == "__main__":
    main()
