"""Soak test of production mode under load and chaos (issue 17), bounded in time, loopback only.

Production topology on this machine, each piece started as an operator starts it:

- a redis-server of its own (a free port, no persistence), the Celery broker;
- a PostgreSQL database of its own (created, migrated, dropped at the end);
- `saekin worker --queue ingest` (real prefork worker process);
- the embed stage and the API. With `--qdrant-url` (a Qdrant server): `saekin serve` and
  `saekin worker --queue embed` as separate processes. Without (qdrant-client local mode, the only
  Qdrant here): local mode lets one process open its path, and the API must search the index the
  embed worker writes, so the embed worker runs inside the API process (bench/_soak_api.py: a
  solo Celery worker thread on the `embed` queue beside `uvicorn`), and the chaos kills the ingest
  worker only.

Load: `--uploaders` threads upload Korean documents (each one different) and honour 429's
Retry-After; `--searchers` threads search (hybrid). Chaos: every `--kill-every` seconds a worker
is SIGKILLed (its whole process group) and started again (ingest, or ingest and embed in turn
with a Qdrant server); once, at half time, the broker is SIGKILLed and started again empty.
Then the load stops, the pipeline is given `--drain-timeout` seconds to finish, the processes
are stopped, and every document is checked against the database and the index.

    .venv/bin/python bench/soak.py                     # 300 s
    .venv/bin/python bench/soak.py --duration 60       # a quick look

stdout, one JSON object: requests (by status), 5xx, uploads accepted / held back (429),
documents uploaded / indexed / failed / lost (accepted but not in the database) / stuck (not
indexed or failed after the drain), duplicates (point ids twice, or points of no chunk row),
chunk rows vs points, kills, broker restarts, search latency.
"""

from __future__ import annotations

import argparse
import getpass
import os
import random
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import emit, log, make_work_dir, resolve_model
from bench._service import ServiceProcess, free_port, percentiles, service_env

PLACES = ["서울", "부산", "제주", "광주", "대전", "강릉", "전주", "춘천", "울산", "세종"]
TOPICS = ["이행계획", "예산", "교통", "주택", "환경", "교육", "복지", "문화", "안전", "보건"]
QUERIES = [f"{p} {t}" for p in PLACES for t in TOPICS]


def korean_document(rng: random.Random, serial: str) -> str:
    n = rng.randint(8, 60)
    return " ".join(
        f"{serial} 문서 {i}항: {rng.choice(PLACES)}의 {rng.choice(TOPICS)} 계획은 {rng.randint(1, 12)}월마다 "
        f"검토되며 그 결과는 {rng.choice(PLACES)} 시청에 {rng.randint(2, 9)}부 제출해야 한다."
        for i in range(n)
    )


class Redis:
    """redis-server on its own port, without persistence (a restart starts empty)."""

    def __init__(self, port: int, directory: Path) -> None:
        self.port, self.directory = port, directory
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            cwd=self.directory,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        import redis

        deadline = time.monotonic() + 30
        while True:
            try:
                redis.Redis(port=self.port).ping()
                return
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def wait_ready(proc: ServiceProcess, marker: str, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while marker not in proc.tail(400):
        proc.check_alive()
        if time.monotonic() > deadline:
            raise RuntimeError(f"{proc.name} did not become ready:\n{proc.tail()}")
        time.sleep(0.2)


def kill_group(proc: ServiceProcess) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.proc.wait()
    proc.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--duration", type=float, default=300, help="seconds of load (default 300)")
    ap.add_argument("--uploaders", type=int, default=8)
    ap.add_argument("--searchers", type=int, default=8)
    ap.add_argument("--kill-every", type=float, default=60, help="seconds between worker SIGKILLs")
    ap.add_argument("--drain-timeout", type=float, default=300, help="seconds to finish the backlog after the load")
    ap.add_argument("--qdrant-url", help="a Qdrant server; default: qdrant-client local mode")
    ap.add_argument(
        "--postgres",
        default=f"postgresql+psycopg://{getpass.getuser()}@127.0.0.1:5432/test",
        help="a PostgreSQL server (any database on it); the soak creates and drops a database of its own",
    )
    ap.add_argument("--model", help="embedding model; default: the small bge-m3-ko twin")
    ap.add_argument("--max-in-flight", type=int, default=200, help="SAEKIN_MAX_IN_FLIGHT_DOCUMENTS")
    ap.add_argument("--lease-s", type=float, default=10, help="SAEKIN_STAGE_LEASE_S")
    ap.add_argument("--redispatch-after-s", type=float, default=20, help="SAEKIN_REDISPATCH_AFTER_S")
    ap.add_argument("--work-dir", type=Path)
    args = ap.parse_args()

    import httpx
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    from services.db import upgrade_database

    work = make_work_dir("saekin-soak-", args.work_dir)
    model = resolve_model("bge-m3-ko", args.model, small=True)
    db_name = f"saekin_soak_{uuid.uuid4().hex[:8]}"
    admin = create_engine(args.postgres, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{db_name}"'))
    database_url = make_url(args.postgres).set(database=db_name).render_as_string(hide_password=False)
    upgrade_database(database_url)
    redis_server = Redis(free_port(), work)
    redis_server.start()
    port = free_port()
    env = service_env(
        {
            "SAEKIN_DATABASE_URL": database_url,
            "SAEKIN_BROKER_URL": f"redis://127.0.0.1:{redis_server.port}/0",
            "SAEKIN_QDRANT_URL": args.qdrant_url,
            "SAEKIN_QDRANT_PATH": None if args.qdrant_url else str(work / "qdrant"),
            "SAEKIN_EMBEDDING_MODEL": model,
            "SAEKIN_MAX_IN_FLIGHT_DOCUMENTS": str(args.max_in_flight),
            "SAEKIN_STAGE_LEASE_S": str(args.lease_s),
            "SAEKIN_REDISPATCH_AFTER_S": str(args.redispatch_after_s),
            "SAEKIN_REAPER_INTERVAL_S": str(max(args.lease_s / 5, 0.5)),
            "SAEKIN_EMBED_TASK_MAX_CHUNKS": "64",
        }
    )
    procs: dict[str, ServiceProcess] = {}

    def start(name: str) -> ServiceProcess:
        if name == "ingest":
            cmd = ["worker", "--queue", "ingest", "--concurrency", "1", "--loglevel", "INFO"]
            proc = ServiceProcess(name, cmd, env=env, log_path=work / f"{name}-{time.time():.0f}.log", cwd=work)
            wait_ready(proc, " ready.")
        elif name == "embed":
            cmd = ["worker", "--queue", "embed", "--loglevel", "INFO"]
            proc = ServiceProcess(name, cmd, env=env, log_path=work / f"{name}-{time.time():.0f}.log", cwd=work)
            wait_ready(proc, " ready.")
        elif args.qdrant_url:
            cmd = ["serve", "--host", "127.0.0.1", "--port", str(port)]
            proc = ServiceProcess(name, cmd, env=env, log_path=work / f"{name}.log", cwd=work)
            wait_ready(proc, "Uvicorn running")
        else:  # the API with the embed worker inside (local mode: one process opens the index)
            proc = _python_module(name, ["bench._soak_api", "--port", str(port)], env, work / f"{name}.log", work)
            wait_ready(proc, "Uvicorn running")
        procs[name] = proc
        return proc

    start("api")
    start("ingest")
    if args.qdrant_url:
        start("embed")
    base = f"http://127.0.0.1:{port}"
    with httpx.Client(base_url=base, timeout=60) as client:
        deadline = time.monotonic() + 600
        while client.get("/readyz").status_code != 200:
            if time.monotonic() > deadline:
                raise RuntimeError("the API did not become ready")
            time.sleep(0.5)
    log(f"running: API {base}, broker port {redis_server.port}, database {db_name}, work dir {work}")

    codes: Counter[str] = Counter()
    accepted: dict[str, str] = {}  # document id -> collection
    search_ms: list[float] = []
    lock = threading.Lock()
    stop = threading.Event()
    collections = ["soak-a", "soak-b", "soak-c"]

    def uploader(n: int) -> None:
        rng = random.Random(n)
        with httpx.Client(base_url=base, timeout=120) as http:
            i = 0
            while not stop.is_set():
                i += 1
                col = rng.choice(collections)
                try:
                    r = http.post(
                        f"/v1/collections/{col}/documents",
                        json={"text": korean_document(rng, f"u{n}-{i}-{uuid.uuid4().hex[:6]}"), "metadata": {"n": n}},
                    )
                except httpx.HTTPError as exc:
                    with lock:
                        codes[f"upload:{type(exc).__name__}"] += 1
                    continue
                with lock:
                    codes[f"upload:{r.status_code}"] += 1
                    if r.status_code in (200, 202):
                        accepted[r.json()["id"]] = col
                if r.status_code == 429:
                    stop.wait(float(r.headers.get("retry-after", "1")))

    def searcher(n: int) -> None:
        rng = random.Random(1000 + n)
        with httpx.Client(base_url=base, timeout=120) as http:
            while not stop.is_set():
                t0 = time.perf_counter()
                try:
                    r = http.post(
                        f"/v1/collections/{rng.choice(collections)}/search",
                        json={"query": rng.choice(QUERIES), "top_k": 5},
                    )
                except httpx.HTTPError as exc:
                    with lock:
                        codes[f"search:{type(exc).__name__}"] += 1
                    continue
                with lock:
                    codes[f"search:{r.status_code}"] += 1
                    if r.status_code == 200:
                        search_ms.append((time.perf_counter() - t0) * 1000)

    threads = [threading.Thread(target=uploader, args=(n,), daemon=True) for n in range(args.uploaders)]
    threads += [threading.Thread(target=searcher, args=(n,), daemon=True) for n in range(args.searchers)]
    # Each collection exists before the searchers start (a search of an unknown collection is a 404).
    with httpx.Client(base_url=base, timeout=60) as http:
        for col in collections:
            r = http.post(f"/v1/collections/{col}/documents", json={"text": f"{col} 컬렉션의 첫 문서이다."})
            codes[f"upload:{r.status_code}"] += 1
            accepted[r.json()["id"]] = col
    t_start = time.monotonic()
    for t in threads:
        t.start()

    kills: list[dict] = []
    broker_restarts = 0
    victims = ["ingest", "embed"] if args.qdrant_url else ["ingest"]
    next_kill = t_start + args.kill_every
    broker_at = t_start + args.duration / 2
    while (now := time.monotonic()) < t_start + args.duration:
        if now >= broker_at and broker_restarts == 0:
            log("SIGKILL the broker; starting it again, empty")
            redis_server.kill()
            time.sleep(1)
            redis_server.start()
            broker_restarts += 1
        if now >= next_kill:
            victim = victims[len(kills) % len(victims)]
            log(f"SIGKILL the {victim} worker")
            kill_group(procs[victim])
            kills.append({"worker": victim, "at_s": round(now - t_start, 1)})
            start(victim)
            next_kill = time.monotonic() + args.kill_every
        time.sleep(0.2)
    stop.set()
    for t in threads:
        t.join(timeout=180)
    load_s = time.monotonic() - t_start
    log(f"load stopped after {load_s:.0f} s; draining")

    from services.documents.models import Chunk, Collection, Document, DocumentStatus, index_name

    engine = create_engine(database_url)

    def statuses() -> Counter:
        with engine.connect() as conn:
            return Counter(dict(conn.execute(text("SELECT status, count(*) FROM documents GROUP BY status")).all()))

    drain_deadline = time.monotonic() + args.drain_timeout
    while (s := statuses()) and (s.get("queued", 0) or s.get("processing", 0)) and time.monotonic() < drain_deadline:
        time.sleep(2)
    drain_s = round(time.monotonic() - (drain_deadline - args.drain_timeout), 1)
    for proc in list(procs.values()):
        proc.stop()
    redis_server.kill()

    from sqlalchemy import select
    from sqlalchemy.orm import Session

    with Session(engine) as session:
        docs = {str(d.id): d for d in session.scalars(select(Document))}
        names = {c.id: index_name(c) for c in session.scalars(select(Collection))}
        chunk_ids: dict[str, set[str]] = {}
        for chunk_id, coll_id in session.execute(
            select(Chunk.id, Document.collection_id)
            .join(Document, Chunk.document_id == Document.id)
            .where(Document.status == DocumentStatus.indexed, Chunk.generation == Document.indexed_generation)
        ):
            chunk_ids.setdefault(names[coll_id], set()).add(str(chunk_id))
    from qdrant_client import QdrantClient

    qdrant = QdrantClient(url=args.qdrant_url) if args.qdrant_url else QdrantClient(path=str(work / "qdrant"))
    points_total = duplicate_points = orphan_points = missing_points = 0
    for name in set(names.values()):
        point_ids: list[str] = []
        if qdrant.collection_exists(name):
            offset = None
            while True:
                batch, offset = qdrant.scroll(name, limit=2000, offset=offset, with_payload=False)
                point_ids += [str(p.id) for p in batch]
                if offset is None:
                    break
        expected = chunk_ids.get(name, set())
        points_total += len(point_ids)
        duplicate_points += len(point_ids) - len(set(point_ids))
        orphan_points += len(set(point_ids) - expected)
        missing_points += len(expected - set(point_ids))
    qdrant.close()
    engine.dispose()
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{db_name}" WITH (FORCE)'))
    admin.dispose()

    by_status = Counter(d.status.value for d in docs.values())
    lost = [i for i in accepted if i not in docs]
    failed_reasons = Counter((d.error or "")[:80] for d in docs.values() if d.status == DocumentStatus.failed)
    requests = sum(v for k, v in codes.items())
    emit(
        {
            "duration_s": round(load_s, 1),
            "uploaders": args.uploaders,
            "searchers": args.searchers,
            "qdrant": "server" if args.qdrant_url else "local mode (embed worker inside the API process)",
            "requests": requests,
            "requests_by_status": dict(sorted(codes.items())),
            "5xx": sum(v for k, v in codes.items() if k.split(":")[1].startswith("5")),
            "connection_errors": sum(v for k, v in codes.items() if not k.split(":")[1].isdigit()),
            "uploads_accepted": len(accepted),
            "uploads_held_back_429": codes.get("upload:429", 0),
            "documents_uploaded": len(docs),
            "indexed": by_status.get("indexed", 0),
            "failed": by_status.get("failed", 0),
            "failed_reasons": dict(failed_reasons),
            "lost": len(lost),
            "stuck": by_status.get("queued", 0) + by_status.get("processing", 0),
            "duplicates": duplicate_points,
            "chunk_rows": sum(len(v) for v in chunk_ids.values()),
            "points": points_total,
            "orphan_points": orphan_points,
            "missing_points": missing_points,
            "kills": kills,
            "broker_restarts": broker_restarts,
            "drain_s": drain_s,
            "search_ms": percentiles([ms / 1000 for ms in search_ms]) if search_ms else None,
            "settings": {
                "stage_lease_s": args.lease_s,
                "redispatch_after_s": args.redispatch_after_s,
                "max_in_flight_documents": args.max_in_flight,
            },
        }
    )


def _python_module(name: str, args: list[str], env: dict[str, str], log_path: Path, cwd: Path) -> ServiceProcess:
    """A ServiceProcess running `python -m MODULE ARGS` instead of the CLI."""
    proc = ServiceProcess.__new__(ServiceProcess)
    proc.name, proc.log_path = name, log_path
    proc._log = open(log_path, "wb")  # noqa: SIM115 (closed in stop())
    proc.proc = subprocess.Popen(
        [sys.executable, "-m", *args],
        cwd=str(cwd),
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=proc._log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    log(f"started {name} (pid {proc.proc.pid}): python -m {' '.join(args)}")
    return proc


if __name__ == "__main__":
    main()
