"""Ingestion capacity of the CPU stages in production mode (issue 5, benchmark 2).

Runs Saekin's production topology on this machine for real: a fresh PostgreSQL database
(created, migrated with services.db.upgrade_database, dropped at the end), Redis as the Celery
broker (a dedicated database number, flushed before and after), two Celery workers started as a
user starts them,

    python -m services.cli worker --queue ingest --concurrency N     (extract, normalize, Kiwi, chunk, DB)
    python -m services.cli worker --queue embed                      (model, Qdrant, publish)

and Qdrant in qdrant-client's local mode (SAEKIN_QDRANT_PATH; only the embed worker opens it).
The model is the SMALL twin of the profile, so the model costs little and what is measured is
the rest of the pipeline; the embed worker runs torch with `--embed-threads` (default 1) CPU
threads, because idle OpenMP threads spin and would bill the ingest workers' cores to the model.
The small twin's remaining CPU cost (about 3 ms a chunk on one core) is measured in the stage
breakdown and taken out: on a GPU machine the model does not run on these cores.

The AutoRAG pages (`--docs` of them) are stored through the documents service and handed to
the `ingest` queue with CeleryDispatcher, as the API does. The workers are warmed up first on a
few other documents (each ingest process loads Kiwi, about 3 s, once). Measured: wall time from
the first dispatch until every document is indexed (the database is polled), and the CPU
seconds (user + system, from /proc) that the worker processes and their children consumed
meanwhile. chunks_per_s_per_core = chunks / (worker CPU seconds - the model's CPU seconds): the
chunks one core takes through the non-model stages (extract, normalize, Kiwi, chunk, database,
Qdrant client, Celery) per second; chunks_per_s_per_core_incl_model keeps the model in.
cores_to_feed_one_gpu = `--gpu-chunks-per-s` (the embed rate of one GPU; 1,500 chunks/s when
no GPU figure exists) / chunks_per_s_per_core. Needs the stage breakdown (--stage-docs > 0).
Target (issue 5): >= 80 chunks/s per core.

The stages are also timed (`--stage-docs` pages, default 100) in this process on a sample,
after the workers have stopped: extraction, Kiwi, chunking, sparse vectors and the database
writes of the prepare stage; the model, Qdrant upsert and publication of the embed stage (CPU
milliseconds per chunk).

    .venv/bin/python bench/pipeline_capacity.py                 # all 720 pages
    .venv/bin/python bench/pipeline_capacity.py --docs 100      # quick check

Progress goes to stderr; stdout gets one JSON document:
{"chunks", "seconds", "cores", "chunks_per_s_per_core", "cores_to_feed_one_gpu",
 "gpu_chunks_per_s_assumed", "stages": {...}, ...}
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import sys
import time
import uuid
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import DEFAULT_CORPUS, emit, log, make_work_dir, resolve_model
from bench._service import (
    CLK_TCK,
    ServiceProcess,
    cpu_seconds,
    process_tree,
    service_env,
    tree_cpu_seconds,
    usable_cores,
    wait_until,
)

COLLECTION = "bench"
WARMUP_COLLECTION = "bench-warmup"
STAGES_COLLECTION = "bench-stages"
BENCH_APP = "saekin-bench"  # application_name of this process's own database connections
TEST_SUITE_REDIS_DB = 15  # tests/conftest.py flushes it


# --- PostgreSQL and Redis ---------------------------------------------------------------------


class Postgres:
    """A throwaway database on the server of `url`, created and dropped through `admin_db`."""

    def __init__(self, url: str, admin_db: str) -> None:
        from sqlalchemy.engine import make_url

        self.base = make_url(url)
        self.name = f"saekin_bench_pc_{os.getpid()}_{uuid.uuid4().hex[:6]}"
        self.admin_db = admin_db
        self.created = False

    def _connect(self):
        import psycopg

        u = self.base
        return psycopg.connect(
            host=u.host or "127.0.0.1",
            port=u.port or 5432,
            user=u.username,
            password=u.password,
            dbname=self.admin_db,
            autocommit=True,
        )

    def url(self, **query: str) -> str:
        return self.base.set(database=self.name, query=query).render_as_string(hide_password=False)

    def create(self) -> None:
        with self._connect() as conn:
            conn.execute(f'CREATE DATABASE "{self.name}"')
        self.created = True
        log(f"created database {self.name}")

    def drop(self) -> None:
        if not self.created:
            return
        with self._connect() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')
        self.created = False
        log(f"dropped database {self.name}")

    def backend_cpu(self) -> dict[int, float]:
        """CPU seconds so far of each server process serving the workers' connections to our database."""
        with self._connect() as conn:
            pids = [
                r[0]
                for r in conn.execute(
                    "SELECT pid FROM pg_stat_activity WHERE datname = %s AND application_name <> %s",
                    (self.name, BENCH_APP),
                )
            ]
        out = {}
        for pid in pids:
            cpu = cpu_seconds(pid)  # readable when the server runs on this machine and we may read /proc
            if cpu is not None:
                out[pid] = cpu
        return out


def redis_db(url: str, db: int):
    import redis

    return redis.Redis.from_url(f"{url.rstrip('/')}/{db}")


# --- stage breakdown (in this process) -------------------------------------------------------


class _Clock:
    """CPU and wall seconds spent inside wrapped callables, per stage name."""

    def __init__(self) -> None:
        self.cpu: dict[str, float] = {}
        self.wall: dict[str, float] = {}

    def wrap(self, name: str, fn):
        def timed(*args, **kwargs):
            c0, w0 = time.process_time(), time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.cpu[name] = self.cpu.get(name, 0.0) + time.process_time() - c0
                self.wall[name] = self.wall.get(name, 0.0) + time.perf_counter() - w0

        return timed


def stage_breakdown(settings, pages: list[tuple[str, str]], *, torch_threads: int) -> dict:
    """Time the prepare and embed stages' parts in this process on `pages` (workers stopped by now).

    Wraps the functions the pipeline calls (no copy of the pipeline): extraction, Kiwi
    (analyze_many), the chunker, sparse vectors; the rest of prepare_document is the database.
    Embed: the model, the Qdrant upsert, publication (database + the delete of older points).
    """
    import torch

    from services.db import session_scope
    from services.documents import lifecycle
    from services.documents.lifecycle import WorkItem
    from services.embedding.registry import OneModel
    from services.ingest import pipeline
    from services.runtime import Runtime

    torch.set_num_threads(torch_threads)  # as in the embed worker
    rt = Runtime(settings)
    clock = _Clock()
    saved = {
        "_extract_sections": pipeline._extract_sections,
        "chunk_sentences": pipeline.chunk_sentences,
        "_publish": pipeline._publish,
    }
    try:
        items = []
        with session_scope(rt.session_factory) as session:
            for doc_id, text in pages:
                result = lifecycle.store(
                    session,
                    collection_name=STAGES_COLLECTION,
                    profile=settings.embedding_profile,
                    upload=lifecycle.Upload(
                        data=text.encode("utf-8"),
                        media_type="text/plain",
                        filename=f"{doc_id}.txt",
                        external_id=doc_id,
                        title=doc_id,
                    ),
                )
                items.append(WorkItem(result.document.id, result.generation))
        analyzer, _ = rt.analyzer, rt.tokenizer  # loaded before timing (Kiwi: ~3 s once per process)
        encoder, index = rt.encoder, rt.index
        encoder.warmup()
        # Instance attributes shadow the methods for this run (the runtime is closed afterwards).
        analyzer.analyze_many = clock.wrap("kiwi", analyzer.analyze_many)  # type: ignore[method-assign]
        analyzer.document_vector = clock.wrap("sparse_vectors", analyzer.document_vector)  # type: ignore[method-assign]
        pipeline._extract_sections = clock.wrap("extract", pipeline._extract_sections)
        pipeline.chunk_sentences = clock.wrap("chunk", pipeline.chunk_sentences)
        encoder.encode_documents = clock.wrap("embed_model", encoder.encode_documents)  # type: ignore[method-assign]
        index.upsert = clock.wrap("qdrant_upsert", index.upsert)  # type: ignore[method-assign]
        pipeline._publish = clock.wrap("publish", pipeline._publish)
        prepare = clock.wrap("prepare_total", pipeline.prepare_document)
        stage = dict(
            engine=rt.engine,
            analyzer=analyzer,
            chunking=rt.chunking_for,
            extract_limits=rt.extract_limits,
            lease=rt.lease("bench"),
        )
        chunks = sum(prepare(item, **stage) or 0 for item in items)
        clock.wrap("embed_total", pipeline.embed_documents)(
            items, engine=rt.engine, models=OneModel(encoder, rt.profile), index=index
        )
    finally:
        for name, fn in saved.items():
            setattr(pipeline, name, fn)
        rt.close()

    def part(name: str) -> dict:
        return {
            "cpu_ms_per_chunk": round(clock.cpu.get(name, 0.0) * 1000 / chunks, 3),
            "wall_ms_per_chunk": round(clock.wall.get(name, 0.0) * 1000 / chunks, 3),
        }

    named = ("extract", "kiwi", "chunk", "sparse_vectors")
    out = {"documents": len(items), "chunks": chunks}
    out.update({n: part(n) for n in named})
    # What prepare_document spends outside the parts above: SQL (status updates, chunk rows), Python glue.
    rest_cpu = clock.cpu.get("prepare_total", 0.0) - sum(clock.cpu.get(n, 0.0) for n in named)
    rest_wall = clock.wall.get("prepare_total", 0.0) - sum(clock.wall.get(n, 0.0) for n in named)
    out["prepare_database_and_rest"] = {
        "cpu_ms_per_chunk": round(rest_cpu * 1000 / chunks, 3),
        "wall_ms_per_chunk": round(rest_wall * 1000 / chunks, 3),
    }
    out["prepare_total"] = part("prepare_total")
    for n in ("embed_model", "qdrant_upsert", "publish"):
        out[n] = part(n)
    embed_named = ("embed_model", "qdrant_upsert", "publish")
    out["embed_database_and_rest"] = {
        "cpu_ms_per_chunk": round(
            (clock.cpu.get("embed_total", 0.0) - sum(clock.cpu.get(n, 0.0) for n in embed_named)) * 1000 / chunks, 3
        ),
        "wall_ms_per_chunk": round(
            (clock.wall.get("embed_total", 0.0) - sum(clock.wall.get(n, 0.0) for n in embed_named)) * 1000 / chunks, 3
        ),
    }
    out["embed_total"] = part("embed_total")
    total_cpu = clock.cpu.get("prepare_total", 0.0) + clock.cpu.get("embed_total", 0.0)
    out["chunks_per_cpu_s_in_process"] = round(chunks / total_cpu, 1) if total_cpu else None
    return out


# --- the run ---------------------------------------------------------------------------------


def _submit(rt, settings, collection: str, pages: list[tuple[str, str]]) -> list:
    """Store each page as the API does (one transaction per upload); the work items."""
    from services.db import session_scope
    from services.documents import lifecycle
    from services.documents.lifecycle import WorkItem

    items = []
    for doc_id, text in pages:
        with session_scope(rt.session_factory) as session:
            result = lifecycle.store(
                session,
                collection_name=collection,
                profile=settings.embedding_profile,
                upload=lifecycle.Upload(
                    data=text.encode("utf-8"),
                    media_type="text/plain",
                    filename=f"{doc_id}.txt",
                    external_id=doc_id,
                    title=doc_id,
                ),
            )
            items.append(WorkItem(result.document.id, result.generation))
    return items


def _progress(rt, ids) -> tuple[int, int, int]:
    """(indexed, failed, prepared) among the documents `ids`; prepared: past the ingest stage."""
    from sqlalchemy import func, select

    from services.db import session_scope
    from services.documents.models import Document, DocumentStage, DocumentStatus

    with session_scope(rt.session_factory) as session:
        rows = dict(
            session.execute(
                select(Document.status, func.count()).where(Document.id.in_(ids)).group_by(Document.status)
            ).all()
        )
        embedding = session.scalar(
            select(func.count())
            .select_from(Document)
            .where(
                Document.id.in_(ids),
                Document.status == DocumentStatus.processing,
                Document.stage == DocumentStage.embedding,
            )
        )
    indexed, failed = rows.get(DocumentStatus.indexed, 0), rows.get(DocumentStatus.failed, 0)
    return indexed, failed, indexed + failed + (embedding or 0)


def _wait_indexed(
    rt, items, *, timeout: float, workers: list[ServiceProcess], label: str, on_poll=None
) -> tuple[int, int, float]:
    """Poll until every document is indexed or failed: (indexed, failed, seconds until all were prepared)."""
    from tqdm import tqdm

    ids = [i.document_id for i in items]
    started = time.perf_counter()
    deadline = time.monotonic() + timeout
    prepared_s = None
    with tqdm(total=len(ids), desc=label, unit="doc", file=sys.stderr) as bar:
        while True:
            for w in workers:
                w.check_alive()
            if on_poll is not None:
                on_poll()
            indexed, failed, prepared = _progress(rt, ids)
            if prepared_s is None and prepared >= len(ids):
                prepared_s = time.perf_counter() - started
            bar.update(indexed + failed - bar.n)
            if indexed + failed >= len(ids):
                return indexed, failed, prepared_s if prepared_s is not None else time.perf_counter() - started
            if time.monotonic() > deadline:
                raise TimeoutError(f"{label}: {indexed + failed} of {len(ids)} documents done after {timeout:.0f}s")
            time.sleep(0.25)


def _ping_workers(broker_url: str, names: list[str], timeout: float, workers: list[ServiceProcess]) -> None:
    from celery import Celery

    app = Celery(BENCH_APP, broker=broker_url)
    app.conf.broker_connection_retry_on_startup = True
    try:

        def all_up() -> bool:
            replies = app.control.ping(timeout=1.0) or []
            up = {name for reply in replies for name in reply}
            return all(n in up for n in names)

        def check() -> None:
            for w in workers:
                w.check_alive()

        wait_until(all_up, timeout=timeout, interval=0.5, what=f"workers {names}", check=check)
    finally:
        app.close()


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--docs", type=int, default=None, help="AutoRAG pages to ingest (default: all 720)")
    ap.add_argument("--concurrency", type=int, default=None, help="ingest worker processes (default: usable cores)")
    ap.add_argument(
        "--gpu-chunks-per-s",
        type=float,
        default=1500.0,
        help="chunks/s one GPU embeds (benchmark 1's figure; default 1,500 as issue 5 says)",
    )
    ap.add_argument("--profile", default="bge-m3-ko")
    ap.add_argument("--model", default=None, help="model directory (default: the profile's SMALL twin under ./.twins/)")
    ap.add_argument(
        "--corpus", type=Path, default=DEFAULT_CORPUS, help="AutoRAG folder (qa*.parquet, *corpus*.parquet)"
    )
    ap.add_argument(
        "--pg-url",
        default="postgresql+psycopg://root@127.0.0.1:5432/test",
        help="a PostgreSQL server; its database is used only to create and drop the bench's own",
    )
    ap.add_argument("--redis-url", default="redis://127.0.0.1:6379", help="Redis server (no database number)")
    ap.add_argument("--redis-db", type=int, default=14, help="Redis database for the broker; FLUSHED before and after")
    ap.add_argument(
        "--embed-threads",
        type=int,
        default=1,
        help="torch CPU threads of the embed worker (OMP_NUM_THREADS; default 1: the model stands in "
        "for a GPU, and idle OpenMP threads would otherwise spin on cores the ingest workers need)",
    )
    ap.add_argument(
        "--warmup-docs", type=int, default=None, help="documents to warm the workers up (default 4 x concurrency)"
    )
    ap.add_argument(
        "--stage-docs",
        type=int,
        default=100,
        help="pages for the in-process stage breakdown, which also measures the model's CPU cost",
    )
    ap.add_argument("--timeout", type=float, default=1800, help="seconds to wait for the corpus to be indexed")
    ap.add_argument(
        "--work-dir", type=Path, default=None, help="where to put Qdrant's local files and logs (default: temp)"
    )
    ap.add_argument("--keep", action="store_true", help="keep the database, Redis keys and work dir")
    args = ap.parse_args()
    if args.stage_docs < 1:
        ap.error("--stage-docs must be at least 1: the model's own CPU cost is measured there")
    if args.redis_db == TEST_SUITE_REDIS_DB:
        ap.error(f"Redis database {TEST_SUITE_REDIS_DB} belongs to the test suite (it is flushed here); choose another")
    cores = usable_cores()
    concurrency = args.concurrency or cores
    warmup_docs = args.warmup_docs if args.warmup_docs is not None else 4 * concurrency

    from sqlalchemy.engine import make_url

    from config.settings import Settings
    from services.db import upgrade_database
    from services.dispatch import CeleryDispatcher
    from services.evaluation.datasets import load_dataset
    from services.runtime import Runtime

    model = resolve_model(args.profile, args.model, small=True)
    corpus = list(load_dataset(args.corpus).corpus.items())
    pages = corpus[: args.docs] if args.docs else corpus
    warm_pages = corpus[::-1][:warmup_docs]
    stage_pages = corpus[: args.stage_docs]
    log(
        f"{len(pages)} pages, {len(warm_pages)} warm-up pages; model {model}; {cores} usable cores, "
        f"ingest concurrency {concurrency}"
    )

    work_dir = make_work_dir("saekin-bench-pc-", args.work_dir)
    pg = Postgres(args.pg_url, make_url(args.pg_url).database or "postgres")
    broker_url = f"{args.redis_url.rstrip('/')}/{args.redis_db}"
    redis = redis_db(args.redis_url, args.redis_db)
    workers: list[ServiceProcess] = []
    rt = None
    result: dict = {}
    try:
        redis.flushdb()
        pg.create()
        upgrade_database(pg.url())
        values = {
            "SAEKIN_DATABASE_URL": pg.url(),
            "SAEKIN_BROKER_URL": broker_url,
            "SAEKIN_QDRANT_PATH": str(work_dir / "qdrant"),
            "SAEKIN_EMBEDDING_MODEL": model,
            "SAEKIN_EMBEDDING_PROFILE": args.profile,
            "SAEKIN_DATA_DIR": str(work_dir / "data"),
        }
        settings = Settings(
            _env_file=None, **{k.removeprefix("SAEKIN_").lower(): v for k, v in values.items()}, qdrant_url=None
        )
        # This process only stores documents and polls their status: it never opens Qdrant.
        rt = Runtime(settings.model_copy(update={"database_url": pg.url(application_name=BENCH_APP)}))
        env = service_env(values)
        ingest = ServiceProcess(
            "ingest worker",
            ["worker", "--queue", "ingest", "--concurrency", str(concurrency)],
            env=env,
            log_path=work_dir / "ingest-worker.log",
            cwd=work_dir,
        )
        workers.append(ingest)
        embed_env = {**env, "OMP_NUM_THREADS": str(args.embed_threads), "MKL_NUM_THREADS": str(args.embed_threads)}
        embed = ServiceProcess(
            "embed worker",
            ["worker", "--queue", "embed"],
            env=embed_env,
            log_path=work_dir / "embed-worker.log",
            cwd=work_dir,
        )
        workers.append(embed)
        host = socket.gethostname()
        _ping_workers(broker_url, [f"ingest@{host}", f"embed@{host}"], timeout=300, workers=workers)
        log(
            f"workers up: ingest pid {ingest.pid} with {len(process_tree(ingest.pid)) - 1} pool processes, "
            f"embed pid {embed.pid}"
        )

        dispatcher = CeleryDispatcher(broker_url)
        try:
            # Warm-up: every ingest process loads Kiwi and the tokenizer once, the embed worker its model.
            if warm_pages:
                warm = _submit(rt, settings, WARMUP_COLLECTION, warm_pages)
                for item in warm:
                    dispatcher.submit(item)
                _wait_indexed(rt, warm, timeout=args.timeout, workers=workers, label="warm-up")
                pool = process_tree(ingest.pid)[1:]
                log(
                    "ingest pool after warm-up (pid: CPU s): "
                    + ", ".join(f"{p}: {cpu_seconds(p) or 0:.1f}" for p in pool)
                )

            t_upload = time.perf_counter()
            items = _submit(rt, settings, COLLECTION, pages)
            upload_s = time.perf_counter() - t_upload
            log(f"stored {len(items)} documents in {upload_s:.1f}s; dispatching")

            pg_seen: dict[int, float] = {}
            pg_base = pg.backend_cpu()

            def poll_postgres() -> None:
                pg_seen.update(pg.backend_cpu())

            cpu0 = {"ingest": tree_cpu_seconds(ingest.pid), "embed": tree_cpu_seconds(embed.pid)}
            ingest_main0 = cpu_seconds(ingest.pid) or 0.0  # Celery's consumer: the broker and the pool's pipes
            t0 = time.perf_counter()
            for item in items:
                dispatcher.submit(item)
            indexed, failed, prepared_s = _wait_indexed(
                rt, items, timeout=args.timeout, workers=workers, label="ingest", on_poll=poll_postgres
            )
            seconds = time.perf_counter() - t0
            cpu1 = {"ingest": tree_cpu_seconds(ingest.pid), "embed": tree_cpu_seconds(embed.pid)}
            ingest_main_cpu = (cpu_seconds(ingest.pid) or 0.0) - ingest_main0
            poll_postgres()
        finally:
            dispatcher.close()

        from sqlalchemy import func, select

        from services.db import session_scope
        from services.documents.models import Collection, Document, DocumentStatus, index_name

        with session_scope(rt.session_factory) as session:
            ids = [i.document_id for i in items]
            chunks = int(
                session.execute(
                    select(func.coalesce(func.sum(Document.chunk_count), 0)).where(
                        Document.id.in_(ids), Document.status == DocumentStatus.indexed
                    )
                ).scalar_one()
            )
            errors = session.execute(
                select(Document.external_id, Document.error)
                .where(Document.id.in_(ids), Document.status == DocumentStatus.failed)
                .limit(5)
            ).all()
            collection = session.scalars(select(Collection).where(Collection.name == COLLECTION)).one()
            qdrant_collection = index_name(collection)
        for external_id, error in errors:
            log(f"failed: {external_id}: {error}")

        for w in workers:
            code = w.stop()
            log(f"{w.name} stopped (exit code {code})")
        workers.clear()

        # The embed worker has released Qdrant's local storage: count what it wrote.
        from services.index.server import ServerIndex

        index = ServerIndex.local(work_dir / "qdrant")
        try:
            qdrant_points = index.count(qdrant_collection)
        finally:
            index.close()

        cpu = {k: cpu1[k] - cpu0[k] for k in cpu0}
        worker_cpu = sum(cpu.values())
        pg_cpu = sum(v - pg_base.get(pid, 0.0) for pid, v in pg_seen.items())
        log(
            f"{chunks} chunks of {indexed} documents in {seconds:.1f}s; worker CPU {worker_cpu:.1f}s "
            f"(ingest {cpu['ingest']:.1f}, embed {cpu['embed']:.1f}); PostgreSQL backends {pg_cpu:.1f}s"
        )

        log(f"stage breakdown in this process on {len(stage_pages)} pages")
        stages = stage_breakdown(settings, stage_pages, torch_threads=args.embed_threads)
        model_cpu = stages["embed_model"]["cpu_ms_per_chunk"] * chunks / 1000
        non_model_cpu = worker_cpu - model_cpu if worker_cpu > model_cpu else None
        per_core = chunks / non_model_cpu if non_model_cpu else None
        result = {
            "chunks": chunks,
            "seconds": round(seconds, 2),
            "cores": cores,
            "chunks_per_s_per_core": round(per_core, 1) if per_core else None,
            "cores_to_feed_one_gpu": round(args.gpu_chunks_per_s / per_core, 1) if per_core else None,
            "gpu_chunks_per_s_assumed": args.gpu_chunks_per_s,
            "stages": stages,
            "documents": len(items),
            "indexed": indexed,
            "failed": failed,
            "qdrant_points": qdrant_points,
            "chunks_per_s": round(chunks / seconds, 1),
            # When every document had passed the ingest (CPU) stage; the rest of `seconds` is the embed queue.
            "prepared_s": round(prepared_s, 2) if prepared_s is not None else None,
            "worker_cpu_s": round(worker_cpu, 2),
            "worker_cpu_s_by_queue": {k: round(v, 2) for k, v in cpu.items()},
            "ingest_consumer_cpu_s": round(ingest_main_cpu, 2),
            "cpu_utilisation": round(worker_cpu / (seconds * cores), 3),
            "postgres_cpu_s": round(pg_cpu, 2),
            "chunks_per_s_per_core_incl_postgres": round(chunks / (non_model_cpu + pg_cpu), 1)
            if non_model_cpu
            else None,
            # The small twin's own CPU time, estimated from the stage breakdown, taken out of the worker CPU.
            "model_cpu_s_estimate": round(model_cpu, 2),
            "chunks_per_s_per_core_incl_model": round(chunks / worker_cpu, 1) if worker_cpu else None,
            "ingest_concurrency": concurrency,
            "upload_s": round(upload_s, 2),
            "model": model,
            "embed_threads": args.embed_threads,
            "chunks_per_document": round(chunks / indexed, 2) if indexed else None,
            "target_chunks_per_s_per_core": 80,
            "cpu_clock_ticks_per_s": CLK_TCK,
        }
    finally:
        for w in workers:
            log(f"stopping {w.name}; last log lines:\n{w.tail(15)}")
            w.stop()
        if rt is not None:
            rt.close()
        if args.keep:
            log(f"kept database {pg.name}, Redis db {args.redis_db} and {work_dir}")
        else:
            try:
                pg.drop()
            finally:
                redis.flushdb()
                shutil.rmtree(work_dir, ignore_errors=True)
    emit(result)


if __name__ == "__main__":
    main()
