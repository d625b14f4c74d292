"""The embedded index at scale (issue 20, item 5): writes, memory, disk and query latency per size, as JSON.

For each size, in a fresh child process (so that its memory is the index's own):
1. Opens the index as `saekin serve` does (`open_index` on the default settings: Qdrant Edge,
   compact storage with int8 dense vectors, optimisation in the background after 10,000 new
   points, payload indexes made on a filter's first use) and writes `size` points through it in
   batches of 256, as the embed stage does. Sparse vectors are the real ones of AutoRAG chunks
   (Kiwi morphemes of 330-term windows of the corpus pages, BM25 weights, cycled); dense vectors
   are synthetic unit vectors of the model's dimension with a low intrinsic dimension (a random
   48-dim Gaussian mapped to 1024 dims, plus noise) like text embeddings; isotropic random
   vectors are the worst case of any graph index (recall@10 0.30 at 20,000 here) and nothing a
   model produces. Each point has a document id and metadata: `lang` (2 values), `topic` (20).
2. Waits for the background optimisation, then measures recall@10 of the dense leg (quantized
   HNSW, rescored) against exact search (numpy over the float vectors) on `--recall-queries`
   queries from the same distribution.
3. Starts a writer thread that keeps upserting new points in batches of 64 (uploads go on,
   and with them background optimisations), and times queries from this thread: sparse (the
   AutoRAG questions' morphemes), hybrid (RRF over dense and sparse, a fixed query vector per
   question instead of the model) and hybrid with a metadata filter (`topic`: a twentieth of the
   points), top 10, 100 candidates per leg, as the search service asks the index.
4. Reports resident memory (RSS growth of the process from before the index was opened,
   split into anonymous memory and file pages mapped from the index), disk use, and how long
   the background optimisations took.
5. Reopens the index in a fresh process (as after a restart) and reports its memory after the
   same queries without writes (`reopened`): the index's steady state, without what the writing
   process's allocator kept from its largest moment.

This mode does not measure the HTTP service around the index (the question's encoding, Kiwi on
the question, the SQL lookup and highlights); `--http` does:

With `--http`, for each size:
1. Builds an embedded data directory (SQLite + Qdrant Edge) of `size` chunks as
   bench/query_latency.py does (the AutoRAG pages through the real CPU stage, copies of their
   chunk rows, the real embed stage writing points through the index layer and publishing),
   each document with a `topic` (20 values); the dense vectors are DenseSource's at the served
   model's width. Waits for the background optimisation, as above.
2. Starts `saekin serve` on it with the small twin (64 dims: it embeds the uploads in
   milliseconds), declares `topic`'s payload index (PATCH filter_indexes), and starts a thread
   that keeps uploading AutoRAG pages (new content each time) through POST /documents, which the
   service prepares, embeds and writes meanwhile.
3. Times `--queries` searches per mode over HTTP (the AutoRAG questions, top 10, highlights on):
   sparse, hybrid (RRF) and hybrid filtered on one topic, the hybrid ones with a fixed question
   vector in the request (`vector`, from the recall queries' source: no encoding); at the client,
   the server's `took_ms`, and the mean time of each search stage (analyse, index_query, sql,
   highlight) from /metrics.
4. Stops the server and measures recall@10 of the dense leg against exact search over every
   stored vector (queries from the same source as the stored vectors), the server's RSS, disk.

    .venv/bin/python bench/scale.py --sizes 10000,100000
    nice -n 10 .venv/bin/python bench/scale.py --sizes 1000000 --queries 200
    nice -n 10 .venv/bin/python bench/scale.py --http --sizes 10000,100000

stdout: {"sizes": [{"chunks", "write_s", "rss_mb", "rss_anon_mb", "rss_file_mb", "disk_mb",
"p50_ms": {"sparse", "hybrid", "hybrid_filtered"}, "p95_ms": {...}, "recall_at_10_vs_exact",
"optimised_in_background_s", "optimisations", "written_during_queries"}], ...}; with --http:
{"mode": "http", "sizes": [{"chunks", "write_s", "rss_mb", "disk_mb", "p50_ms": {"sparse", "hybrid",
"hybrid_filtered"}, "p95_ms", "server_took_p50_ms", "server_stage_mean_ms", "recall_at_10_vs_exact",
"optimised_in_background_s", "uploads_during_queries", ...}]}
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import DEFAULT_CORPUS, embedded_settings, emit, load_pages, log

COLLECTION = "scale"
DIM = 1024
INTRINSIC_DIM = 48
WINDOW_TERMS = 330  # about the average terms of a 510-token chunk (SAEKIN_BM25_AVG_TERMS)
WRITE_BATCH = 256
LIVE_BATCH = 64
TOPICS = 20
UNIT = 16


class DenseSource:
    """Unit vectors with a low intrinsic dimension; the same ids give the same vectors."""

    def __init__(self, seed: int = 0, *, dim: int = DIM, intrinsic: int = INTRINSIC_DIM) -> None:
        rng = np.random.default_rng(seed)
        self.dim, self.intrinsic = dim, intrinsic
        self.basis = rng.standard_normal((intrinsic, dim)).astype(np.float32)
        self.seed = seed

    def block(self, start: int, n: int) -> np.ndarray:
        """Vectors start..start+n, made in units of UNIT rows so any aligned range gives the same rows."""
        first = start // UNIT
        units = [self._unit(u) for u in range(first, -(-(start + n) // UNIT))]
        offset = start - first * UNIT
        return np.concatenate(units)[offset : offset + n]

    def _unit(self, u: int) -> np.ndarray:
        rng = np.random.default_rng((self.seed, u))
        x = rng.standard_normal((UNIT, self.intrinsic)).astype(np.float32) @ self.basis
        x += 0.3 * np.sqrt(self.intrinsic) * rng.standard_normal((UNIT, self.dim)).astype(np.float32)
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        return x


def sparse_corpus(corpus: Path):
    """Real sparse vectors: AutoRAG pages as 330-term windows, and the questions' query vectors."""
    import pyarrow.parquet as pq

    from services.ingest.analyzer import get_analyzer
    from services.ingest.normalize import normalize_text

    analyzer = get_analyzer()
    pages = load_pages(corpus)
    chunks = []
    for page in pages:
        terms = analyzer.terms(normalize_text(page))
        for i in range(0, len(terms), WINDOW_TERMS):
            vector = analyzer.document_vector(terms[i : i + WINDOW_TERMS])
            if vector:
                chunks.append(vector)
    questions = [q for q in pq.read_table(corpus / "qa_v4.parquet", columns=["query"]).column("query").to_pylist() if q]
    queries = [v for v in (analyzer.query_vector(q) for q in questions) if v]
    return chunks, queries


def make_points(start: int, n: int, dense: DenseSource, sparse: list):
    from services.index import IndexPoint

    vectors = dense.block(start, n)
    return [
        IndexPoint(
            id=str(uuid.UUID(int=i + 1)),
            dense=vectors[i - start],
            sparse=sparse[i % len(sparse)],
            payload={
                "document_id": f"doc-{i // 10}",
                "external_id": f"ext-{i // 10}",
                "generation": 1,
                "metadata": {"lang": ["ko", "en"][i % 2], "topic": f"t{(i // 10) % TOPICS}"},
            },
        )
        for i in range(start, start + n)
    ]


def memory_mb() -> dict[str, float]:
    out = {}
    with open("/proc/self/status", encoding="ascii") as fh:
        for line in fh:
            key = line.split(":")[0]
            if key in ("VmRSS", "RssAnon", "RssFile"):
                out[key] = int(line.split()[1]) / 1024
    return out


def disk_mb(path: Path) -> float:
    total = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    return round(total / 2**20, 1)


def wait_for_optimisation(index, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        shard = index._shards.get(COLLECTION)
        optimization = shard.optimization if shard is not None else None
        if optimization is None:
            return
        optimization.thread.join(5)
    log("background optimisation still running at the time limit")


def exact_top10(dense: DenseSource, size: int, queries: np.ndarray) -> list[set[str]]:
    """The exact top 10 (cosine over the float vectors) of each query, in blocks."""
    best_scores = np.full((len(queries), 10), -np.inf, dtype=np.float32)
    best_ids = np.zeros((len(queries), 10), dtype=np.int64)
    for start in range(0, size, 50_000):
        n = min(50_000, size - start)
        scores = queries @ dense.block(start, n).T
        merged_scores = np.concatenate([best_scores, scores], axis=1)
        merged_ids = np.concatenate([best_ids, np.arange(start, start + n)[None, :].repeat(len(queries), 0)], axis=1)
        top = np.argsort(-merged_scores, axis=1)[:, :10]
        best_scores = np.take_along_axis(merged_scores, top, axis=1)
        best_ids = np.take_along_axis(merged_ids, top, axis=1)
    return [{str(uuid.UUID(int=int(i) + 1)) for i in row} for row in best_ids]


def measure(size: int, args: argparse.Namespace) -> dict:
    """One size, in this process (the parent runs each size in a child: see main)."""
    from config.settings import Settings
    from services.index import IndexFilter, open_index
    from services.index.edge import EdgeIndex

    chunks, questions = sparse_corpus(args.corpus)
    dense = DenseSource(args.seed)
    query_dense = DenseSource(args.seed + 1).block(0, max(args.queries, args.recall_queries))
    work = Path(tempfile.mkdtemp(prefix="saekin-scale-", dir=args.work_dir))
    settings = Settings(data_dir=work)
    log(f"{size}: {len(chunks)} sparse chunk vectors, {len(questions)} questions; data in {work}")
    before = memory_mb()
    index = open_index(settings)
    assert isinstance(index, EdgeIndex), "bench/scale.py measures the embedded index (no SAEKIN_QDRANT_URL)"
    index.ensure_collection(COLLECTION, dim=DIM)
    started = time.perf_counter()
    for start in range(0, size, WRITE_BATCH):
        index.upsert(COLLECTION, make_points(start, min(WRITE_BATCH, size - start), dense, chunks))
        if start % (WRITE_BATCH * 200) == 0:
            log(f"{size}: {start} written, {time.perf_counter() - started:.0f}s")
    write_s = time.perf_counter() - started
    log(f"{size}: written in {write_s:.0f}s; waiting for the background optimisation")
    wait_for_optimisation(index, args.optimise_timeout)
    thread = index.optimize_in_background(COLLECTION)  # index the tail written after the last one
    if thread is not None:
        thread.join(args.optimise_timeout)
    status = index.optimization_status(COLLECTION)
    settled_s = time.perf_counter() - started

    # Recall of the dense leg against exact search, on the settled index.
    truth = exact_top10(dense, size, query_dense[: args.recall_queries])
    recall = []
    for q, expected in zip(query_dense[: args.recall_queries], truth):
        hits = index.query(COLLECTION, dense=q, limit=10, with_payload=False)
        recall.append(len({h.id for h in hits} & expected) / 10)
    log(f"{size}: recall@10 {np.mean(recall):.4f}")
    ef_sweep = [_ef_point(index, ef, over, query_dense, truth, questions, args) for ef, over in args.ef_sweep]

    # Queries while a writer keeps adding points (and optimisations run in the background).
    stop = threading.Event()
    written = [0]

    def writer() -> None:
        next_id = size
        while not stop.is_set():
            index.upsert(COLLECTION, make_points(next_id, LIVE_BATCH, dense, chunks))
            next_id += LIVE_BATCH
            written[0] += LIVE_BATCH
            time.sleep(args.write_pause)

    writing = threading.Thread(target=writer, daemon=True)
    writing.start()
    topic = IndexFilter(metadata={"topic": ["t3"]})
    modes = {
        "sparse": lambda i: {"sparse": questions[i % len(questions)]},
        "hybrid": lambda i: {"dense": query_dense[i], "sparse": questions[i % len(questions)], "fusion": "rrf"},
        "hybrid_filtered": lambda i: {
            "dense": query_dense[i],
            "sparse": questions[i % len(questions)],
            "fusion": "rrf",
            "filter": topic,
        },
    }
    p50, p95 = {}, {}
    for mode, kwargs in modes.items():
        index.query(COLLECTION, limit=10, with_payload=False, **kwargs(0))  # warm-up (and the filter's index)
        samples = []
        for i in range(args.queries):
            t = time.perf_counter()
            index.query(COLLECTION, limit=10, prefetch_limit=100, with_payload=False, **kwargs(i))
            samples.append(time.perf_counter() - t)
        ms = np.array(samples) * 1000
        p50[mode], p95[mode] = round(float(np.percentile(ms, 50)), 2), round(float(np.percentile(ms, 95)), 2)
        log(f"{size}: {mode} p50 {p50[mode]} ms, p95 {p95[mode]} ms")
    stop.set()
    writing.join()
    after = memory_mb()
    final = index.optimization_status(COLLECTION)
    index_exact_idf = index._shards[COLLECTION].exact_idf
    index.close()
    reopened = _reopened(work, args)
    result = {
        "chunks": size,
        "write_s": round(write_s, 1),
        "settled_s": round(settled_s, 1),
        "rss_mb": round(after["VmRSS"] - before["VmRSS"], 1),
        "rss_anon_mb": round(after["RssAnon"] - before["RssAnon"], 1),
        "rss_file_mb": round(after["RssFile"] - before["RssFile"], 1),
        "rss_kb_per_chunk": round((after["VmRSS"] - before["VmRSS"]) * 1024 / (size + written[0]), 2),
        "disk_mb": disk_mb(work / "qdrant"),
        "p50_ms": p50,
        "p95_ms": p95,
        "recall_at_10_vs_exact": round(float(np.mean(recall)), 4),
        "optimised_in_background_s": status["last_seconds"] and round(status["last_seconds"], 1),
        "optimisation_running_at_end": final["running"],
        # Sparse IDF from the shard's statistics (no point deleted or overwritten) or live counts.
        "sparse_idf": "statistics" if index_exact_idf else "live counts",
        "written_during_queries": written[0],
        "reopened": reopened,
    }
    if ef_sweep:
        result["ef_sweep"] = ef_sweep
    shutil.rmtree(work, ignore_errors=True)
    return result


def _ef_point(index, ef: int, oversampling: float | None, query_dense, truth: list[set[str]], questions, args) -> dict:
    """Recall@10 of the dense leg and hybrid p50 (no writes) with the dense search exploring `ef`
    candidates (SAEKIN_INDEX_HNSW_EF) and rescoring `limit` x `oversampling` of them with the
    float originals (None: QUANTIZED_OVERSAMPLING), on the settled index; the index's own setting
    is restored."""
    from services.index.edge import _dense_search

    own = index._dense_search
    # What EdgeIndex(hnsw_ef=ef) would use, or with that oversampling.
    index._dense_search = _dense_search(ef) if oversampling is None else _dense_search(ef, oversampling)
    try:
        recall = [
            len({h.id for h in index.query(COLLECTION, dense=q, limit=10, with_payload=False)} & expected) / 10
            for q, expected in zip(query_dense, truth)
        ]
        samples = []
        for i in range(args.queries):
            t = time.perf_counter()
            index.query(
                COLLECTION,
                dense=query_dense[i],
                sparse=questions[i % len(questions)],
                fusion="rrf",
                limit=10,
                prefetch_limit=100,
                with_payload=False,
            )
            samples.append(time.perf_counter() - t)
    finally:
        index._dense_search = own
    point = {
        "ef": ef,
        "oversampling": oversampling,
        "recall_at_10_vs_exact": round(float(np.mean(recall)), 4),
        "hybrid_p50_ms": round(float(np.percentile(np.array(samples) * 1000, 50)), 2),
    }
    log(f"ef {ef}: {point}")
    return point


def _reopened(work: Path, args: argparse.Namespace) -> dict:
    """The index's steady state: a fresh process opens it and answers the same queries, no writes."""
    cmd = [
        sys.executable,
        __file__,
        "--reopen",
        str(work),
        "--queries",
        str(args.queries),
        "--corpus",
        str(args.corpus),
    ]
    done = subprocess.run(cmd, stdout=subprocess.PIPE, text=True)
    if done.returncode != 0:
        return {"error": f"exit {done.returncode}"}
    return json.loads(done.stdout.strip().splitlines()[-1])


def measure_reopened(work: Path, args: argparse.Namespace) -> dict:
    """Open an index written by measure() in this fresh process: its memory after warm queries."""
    from config.settings import Settings
    from services.index import IndexFilter, open_index

    _, questions = sparse_corpus(args.corpus)
    query_dense = DenseSource(args.seed + 1).block(0, args.queries)
    topic = IndexFilter(metadata={"topic": ["t3"]})
    before = memory_mb()
    index = open_index(Settings(data_dir=work, index_optimize_after=0))
    chunks = index.count(COLLECTION)
    p50 = {}
    for mode in ("sparse", "hybrid", "hybrid_filtered"):
        samples = []
        for i in range(args.queries):
            kwargs: dict = {"sparse": questions[i % len(questions)]}
            if mode != "sparse":
                kwargs.update(dense=query_dense[i], fusion="rrf")
            if mode == "hybrid_filtered":
                kwargs["filter"] = topic
            t = time.perf_counter()
            index.query(COLLECTION, limit=10, prefetch_limit=100, with_payload=False, **kwargs)
            samples.append(time.perf_counter() - t)
        p50[mode] = round(float(np.percentile(np.array(samples) * 1000, 50)), 2)
    after = memory_mb()
    index.close()
    anon, file = after["RssAnon"] - before["RssAnon"], after["RssFile"] - before["RssFile"]
    return {
        "chunks": chunks,
        "rss_anon_mb": round(anon, 1),
        "rss_file_mb": round(file, 1),
        "rss_anon_kb_per_chunk": round(anon * 1024 / chunks, 2),
        "rss_kb_per_chunk": round((anon + file) * 1024 / chunks, 2),
        "p50_ms": p50,
    }


# --- through the HTTP service ------------------------------------------------------------------

HTTP_MODES = ("sparse", "hybrid", "hybrid_filtered")
STAGES = ("encode", "analyse", "index_query", "sql", "highlight")


class _OptimisationLog(logging.Handler):
    """Collects the durations of background optimisations that services.index.edge logs."""

    PATTERN = re.compile(r"optimised in the background in ([0-9.]+)s")

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.seconds: list[float] = []

    def emit(self, record: logging.LogRecord) -> None:
        if found := self.PATTERN.search(record.getMessage()):
            self.seconds.append(float(found.group(1)))


class LowRankVectors:
    """Stands in for the model in the embed stage of the HTTP build: DenseSource's vectors at the
    served model's width. The small twin cannot: its vectors of different texts agree to a cosine
    of 0.99999 (random weights), which no index, exact or not, ranks meaningfully."""

    def __init__(self, dim: int, seed: int = 0) -> None:
        self.dim = dim
        self._source = DenseSource(seed, dim=dim, intrinsic=min(INTRINSIC_DIM, dim // 4))
        self._next = 0

    def encode_documents(self, texts, *, progress=None) -> np.ndarray:
        start, self._next = self._next, self._next + len(texts)
        return self._source.block(start, len(texts))


def _stage_sums(client) -> dict[str, tuple[float, float]]:
    """stage -> (seconds, count) of saekin_search_stage_seconds, from /metrics."""
    out: dict[str, tuple[float, float]] = {}
    text = client.get("/metrics").text
    for stage in STAGES:
        total = re.search(rf'saekin_search_stage_seconds_sum{{stage="{stage}"}} ([0-9.e+-]+)', text)
        count = re.search(rf'saekin_search_stage_seconds_count{{stage="{stage}"}} ([0-9.e+-]+)', text)
        out[stage] = (float(total.group(1)) if total else 0.0, float(count.group(1)) if count else 0.0)
    return out


def _exact_recall(database_url: str, data_dir: Path, queries: np.ndarray, collection: str) -> float:
    """Recall@10 of the dense leg against exact search over every stored vector (the server
    stopped: this process opens the index), for query vectors of the stored vectors' source."""
    from sqlalchemy import create_engine, text

    from services.index.edge import EdgeIndex

    engine = create_engine(database_url)
    with engine.connect() as conn:
        name = conn.execute(text("SELECT index_name FROM collections WHERE name = :n"), {"n": collection}).scalar_one()
        ids = [str(uuid.UUID(str(i))) for i in conn.execute(text("SELECT id FROM chunks")).scalars()]
    engine.dispose()
    with EdgeIndex(data_dir / "qdrant", optimize_after=None) as index:
        found_ids, vectors = [], []
        for start in range(0, len(ids), 2000):
            for point, vector in index.dense_vectors(name, ids[start : start + 2000]).items():
                found_ids.append(point)
                vectors.append(vector)
        matrix = np.asarray(vectors, dtype=np.float32)
        matrix /= np.linalg.norm(matrix, axis=1, keepdims=True)
        recall = []
        for q in queries:
            exact = {found_ids[i] for i in np.argsort(-(matrix @ q))[:10]}
            hits = index.query(name, dense=q, limit=10, with_payload=False)
            recall.append(len({h.id for h in hits} & exact) / 10)
    return round(float(np.mean(recall)), 4)


def measure_http(size: int, args: argparse.Namespace) -> dict:
    """One size through `saekin serve`: build the data directory, then time searches over HTTP
    while a thread keeps uploading documents."""
    import httpx

    from bench._common import make_work_dir, resolve_model
    from bench._service import (
        ServiceProcess,
        free_port,
        model_dim,
        peak_rss_mb_of,
        rss_mb_of,
        service_env,
        wait_ready,
    )
    from bench.query_latency import COLLECTION as HTTP_COLLECTION
    from bench.query_latency import build_index
    from services.evaluation.datasets import load_dataset

    model = resolve_model("bge-m3-ko", args.model, small=True)
    dim = model_dim(model)
    if dim is None:
        raise SystemExit(f"cannot read the output dimension of {model}")
    dataset = load_dataset(args.corpus)
    pages = list(dataset.corpus.values())
    questions = list(dataset.queries.values())
    work = make_work_dir("saekin-scale-http-", args.work_dir)
    data_dir = work / "data"
    settings = embedded_settings(data_dir, "bge-m3-ko", model)
    optimisations = _OptimisationLog()
    logging.getLogger("services.index.edge").addHandler(optimisations)
    logging.getLogger("services.index.edge").setLevel(logging.INFO)

    def settle(rt, done: int, total: int) -> None:
        if done < total:
            return
        # As in index mode: the background optimisation finished and the tail optimised too.
        index = rt.index
        name = next(iter(index._shards))
        shard = index._shards[name]
        if shard.optimization is not None:
            shard.optimization.thread.join(args.optimise_timeout)
        thread = index.optimize_in_background(name)
        if thread is not None:
            thread.join(args.optimise_timeout)

    log(f"{size}: building {data_dir} through the real CPU and embed stages ({dim}-dim stand-in vectors)")
    started = time.perf_counter()
    build = build_index(
        settings,
        dataset.corpus,
        chunks=size,
        dim=dim,
        batch_docs=256,
        metadata=lambda n: {"topic": f"t{n % TOPICS}"},
        on_batch=settle,
        vectors=LowRankVectors(dim, args.seed),
    )
    build_s = time.perf_counter() - started
    built_optimisations = list(optimisations.seconds)

    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    env = service_env(
        {"SAEKIN_DATA_DIR": str(data_dir), "SAEKIN_EMBEDDING_MODEL": model, "SAEKIN_EMBEDDING_PROFILE": "bge-m3-ko"}
    )
    server = ServiceProcess(
        "api", ["serve", "--host", "127.0.0.1", "--port", str(port)], env=env, log_path=work / "server.log", cwd=work
    )
    url = f"/v1/collections/{HTTP_COLLECTION}"
    stop = threading.Event()
    uploads: dict[str, int] = {}
    try:
        wait_ready(server, base_url, timeout=900)
        client = httpx.Client(base_url=base_url, timeout=120)
        # The filtered key's payload index, declared as a collection's settings do (issue 20).
        client.patch(url, json={"filter_indexes": {"topic": "keyword"}}).raise_for_status()

        def uploader() -> None:
            with httpx.Client(base_url=base_url, timeout=120) as up:
                n = 0
                while not stop.is_set():
                    text = f"{pages[n % len(pages)]}\n\n(업로드 {n}번)"  # new content: a new document
                    body = {"text": text, "metadata": {"topic": f"t{n % TOPICS}"}, "external_id": f"live-{n}"}
                    try:
                        status = str(up.post(f"{url}/documents", json=body).status_code)
                    except httpx.HTTPError as exc:
                        status = type(exc).__name__
                    uploads[status] = uploads.get(status, 0) + 1
                    n += 1
                    stop.wait(args.upload_pause)

        uploading = threading.Thread(target=uploader, daemon=True)
        if not args.no_uploads:
            uploading.start()
        bodies: dict[str, dict[str, Any]] = {
            "sparse": {"mode": "sparse"},
            "hybrid": {"mode": "hybrid"},
            "hybrid_filtered": {"mode": "hybrid", "filter": {"metadata": {"topic": "t3"}}},
        }
        # Hybrid searches send a fixed question vector (the API's `vector`), from the source of the
        # recall queries below, so the model's encoding is not in the figures.
        question_vectors = DenseSource(args.seed + 1, dim=dim, intrinsic=min(INTRINSIC_DIM, dim // 4)).block(
            0, args.queries
        )
        p50, p95, took50, took95, stages, hits = {}, {}, {}, {}, {}, {}
        load_before = os.getloadavg()[0]  # the machine is shared: say how busy it was
        for mode, body in bodies.items():

            def ask(i: int, body: dict[str, Any] = body) -> dict[str, Any]:
                asked = {"query": questions[i % len(questions)], "top_k": 10, **body}
                if body["mode"] != "sparse":
                    asked["vector"] = question_vectors[i % len(question_vectors)].tolist()
                return asked

            for i in range(5):  # warm-up
                client.post(f"{url}/search", json=ask(i)).raise_for_status()
            before = _stage_sums(client)
            latencies, took, found = [], [], []
            for i in range(args.queries):
                asked = ask(i)
                t = time.perf_counter()
                r = client.post(f"{url}/search", json=asked)
                latencies.append(time.perf_counter() - t)
                r.raise_for_status()
                took.append(r.json()["took_ms"])
                found.append(len(r.json()["results"]))
            after = _stage_sums(client)
            ms = np.array(latencies) * 1000
            p50[mode], p95[mode] = round(float(np.percentile(ms, 50)), 2), round(float(np.percentile(ms, 95)), 2)
            took50[mode] = round(float(np.percentile(took, 50)), 2)
            took95[mode] = round(float(np.percentile(took, 95)), 2)
            stages[mode] = {
                stage: round(
                    1000 * (after[stage][0] - before[stage][0]) / max(1.0, after[stage][1] - before[stage][1]), 2
                )
                for stage in STAGES
            }
            hits[mode] = round(float(np.mean(found)), 2)
            log(
                f"{size}: {mode} p50 {p50[mode]} ms, p95 {p95[mode]} ms (server {took50[mode]} ms), stages {stages[mode]}"
            )
        load_after = os.getloadavg()[0]
        stop.set()
        if uploading.is_alive():
            uploading.join(120)
        collection = client.get(url).json()
        server_rss = {"rss_mb_peak": peak_rss_mb_of(server.pid), "rss_mb": rss_mb_of(server.pid)}
        client.close()
        server.check_alive()
    finally:
        stop.set()
        server.stop()
    served_optimisations = [float(x) for x in _OptimisationLog.PATTERN.findall(server.tail(100_000))]
    source = DenseSource(args.seed + 1, dim=dim, intrinsic=min(INTRINSIC_DIM, dim // 4))
    recall = _exact_recall(settings.sqlalchemy_url, data_dir, source.block(0, args.recall_queries), HTTP_COLLECTION)
    result = {
        "chunks": size,
        "dim": dim,
        "write_s": build["index_s"],
        "build_s": round(build_s, 1),
        "rss_mb": server_rss["rss_mb"],
        "rss_mb_peak": server_rss["rss_mb_peak"],
        "disk_mb": disk_mb(data_dir / "qdrant"),
        "database_mb": disk_mb(data_dir) - disk_mb(data_dir / "qdrant"),
        "p50_ms": p50,
        "p95_ms": p95,
        "server_took_p50_ms": took50,
        "server_took_p95_ms": took95,
        "server_stage_mean_ms": stages,
        "hits_mean": hits,
        "recall_at_10_vs_exact": recall,
        "optimised_in_background_s": {"while_writing": built_optimisations, "while_serving": served_optimisations},
        "uploads_during_queries": uploads,
        "load_average_1m": [round(load_before, 2), round(load_after, 2)],
        "chunks_at_end": collection.get("chunk_count"),
        "documents_at_end": collection.get("documents"),
        "build": build,
    }
    logging.getLogger("services.index.edge").removeHandler(optimisations)
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    return result


def _sweep_point(spec: str) -> tuple[int, float | None]:
    ef, _, oversampling = spec.partition("x")
    return int(ef), float(oversampling) if oversampling else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000", help="comma-separated chunk counts")
    parser.add_argument("--queries", type=int, default=300, help="timed queries per mode")
    parser.add_argument("--recall-queries", type=int, default=100)
    parser.add_argument("--write-pause", type=float, default=0.2, help="seconds between the writer's batches of 64")
    parser.add_argument("--optimise-timeout", type=float, default=3600)
    parser.add_argument(
        "--ef-sweep",
        type=lambda v: [_sweep_point(x) for x in v.split(",") if x],
        default=[],
        help="index mode: also recall@10 and hybrid p50 (no writes) at these SAEKIN_INDEX_HNSW_EF values, "
        "each optionally with an oversampling of the int8 candidates: e.g. 512,256,1024x2",
    )
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    parser.add_argument("--work-dir", type=Path, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--http", action="store_true", help="measure through `saekin serve` (see the docstring)")
    parser.add_argument("--model", default=None, help="--http: model directory (default: the small twin)")
    parser.add_argument("--upload-pause", type=float, default=0.1, help="--http: seconds between uploads")
    parser.add_argument("--keep", action="store_true", help="--http: keep the data directory")
    parser.add_argument("--no-uploads", action="store_true", help="--http: no uploads while measuring (a baseline)")
    parser.add_argument("--one", type=int, default=None, help=argparse.SUPPRESS)  # a child measuring one size
    parser.add_argument("--reopen", type=Path, default=None, help=argparse.SUPPRESS)  # a child reopening one
    args = parser.parse_args()

    if args.reopen is not None:
        print(json.dumps(measure_reopened(args.reopen, args)), flush=True)
        return
    if args.one is not None:
        print(json.dumps(measure(args.one, args)), flush=True)
        return
    if args.http:
        results = [measure_http(int(size), args) for size in args.sizes.split(",")]
        emit(
            {
                "mode": "http",
                "uploads": not args.no_uploads,
                "sizes": results,
                "machine": platform.machine(),
                "cpus": os.cpu_count(),
            }
        )
        return
    results = []
    for size in (int(s) for s in args.sizes.split(",")):
        if size % UNIT:
            raise SystemExit(f"sizes must be multiples of {UNIT}")
        cmd = [sys.executable, __file__, "--one", str(size)] + [
            a for a in sys.argv[1:] if not a.startswith("--sizes") and a != args.sizes
        ]
        done = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        if done.returncode != 0:
            log(f"size {size} failed (exit {done.returncode})")
            results.append({"chunks": size, "error": f"exit {done.returncode}"})
            continue
        results.append(json.loads(done.stdout.strip().splitlines()[-1]))
    emit(
        {
            "sizes": results,
            "dim": DIM,
            "machine": platform.machine(),
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
        }
    )


if __name__ == "__main__":
    main()
