"""Query latency of the embedded Saekin service over HTTP (issue 5, benchmark 3, and the API half
of benchmark 4: the API process's peak RSS).

What it does, in one run:
1. Builds a fresh embedded data directory (SQLite + Qdrant Edge) with `--chunks` chunks
   (default 10,000): the AutoRAG pages are submitted as documents and go through the real
   CPU stage once (`pipeline.prepare_document`: extraction, Kiwi, chunking by model tokens,
   sparse vectors); the corpus is then repeated under new document ids by copying the
   prepared chunk rows (Kiwi is not run again) until there are `--chunks` chunks. All
   documents then go through the real embed stage (`pipeline.embed_documents`: points with
   their payload through Saekin's index layer, then publication) with one difference: the
   dense vectors are random unit vectors of the model's dimension instead of model output
   (embedding 10,000 chunks with the full-size model takes hours on a CPU; stored values do
   not change search cost). Sparse vectors are the chunks' real ones.
2. Starts the service as a user does, `python -m services.cli serve` (embedded mode, the model
   given by SAEKIN_EMBEDDING_MODEL), waits for /readyz, and sends the AutoRAG questions
   (repeated to `--queries`) over HTTP from one keep-alive client: sequentially for the
   modes dense, sparse and hybrid (top_k 10, the API's defaults otherwise, highlights
   included), sparse once more without highlights (`"highlight": false`, reported apart as
   sparse_no_highlight), then hybrid from `--concurrency` clients (threads, one client each).
   Latency is measured at the client, per request.
3. Reads the server's peak RSS (VmHWM), stops it, and times the bare model on the same
   questions in this process (`Encoder.encode_queries([q])`, same model, device and
   precision), so the two never compete for cores.

Targets (issue 5): hybrid p50 <= 1.1 x bare encode p50; sparse p50 <= 15 ms; concurrent
throughput >= 2 x sequential; API peak RSS <= model weights + 1 GiB.

    .venv/bin/python bench/query_latency.py                       # full-size bge-m3-ko twin, 10,000 chunks
    .venv/bin/python bench/query_latency.py --small --chunks 2000 --queries 30   # quick check

Progress goes to stderr; stdout gets one JSON document:
{"chunks_indexed", "bare_encode_p50_ms", "modes": {"dense"|"sparse"|"hybrid": {"p50_ms", "p95_ms",
"p99_ms"}}, "sequential_qps", "concurrent_qps", "api_rss_mb", "model", "precision", "queries", ...}
"""

from __future__ import annotations

import argparse
import shutil
import sys
import threading
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

import numpy as np

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import DEFAULT_CORPUS, embedded_settings, emit, log, make_work_dir, model_weight_mb, resolve_model
from bench._service import (
    ServiceProcess,
    free_port,
    model_dim,
    peak_rss_mb_of,
    percentiles,
    service_env,
    wait_ready,
)

COLLECTION = "bench"
MODES = ("dense", "sparse", "hybrid")


# --- building the index ------------------------------------------------------------------------


class RandomVectors:
    """Stands in for the model in the embed stage: random unit vectors of the model's dimension."""

    def __init__(self, dim: int, seed: int = 0) -> None:
        self.dim = dim
        self._rng = np.random.default_rng(seed)

    def encode_documents(self, texts: Sequence[str], *, progress=None) -> np.ndarray:
        v = self._rng.standard_normal((len(texts), self.dim), dtype=np.float32)
        v /= np.linalg.norm(v, axis=1, keepdims=True)
        return v


def _runtime_class():
    from services.runtime import Runtime

    class IndexingRuntime(Runtime):
        """The real runtime (SQLite, Qdrant Edge, Kiwi, the model's tokenizer) with RandomVectors as encoder."""

        def __init__(self, settings, vectors: RandomVectors) -> None:
            super().__init__(settings)
            self._vectors = vectors

        @property
        def encoder(self):
            return self._vectors

    return IndexingRuntime


def build_index(
    settings,
    corpus: dict[str, str],
    *,
    chunks: int,
    dim: int,
    batch_docs: int,
    metadata=None,
    on_batch=None,
    vectors=None,
) -> dict:
    """Fill settings.data_dir with exactly `chunks` published chunks; returns counts and timings.
    `metadata(n)`: metadata of the n-th document written (pages first, then their copies), for
    benchmarks that filter; `on_batch(rt, documents_done, documents)`: called after each embed batch
    (the runtime is closed on return); `vectors`: what stands in for the model (default
    RandomVectors(dim))."""
    from sqlalchemy import delete, func, insert, select
    from tqdm import tqdm

    from services.datadir import DataDirLock
    from services.db import session_scope, upgrade_database
    from services.documents import lifecycle
    from services.documents.lifecycle import WorkItem
    from services.documents.models import (
        Chunk,
        Collection,
        Document,
        DocumentStage,
        DocumentStatus,
        chunk_point_id,
        index_name,
        utcnow,
    )
    from services.ingest.pipeline import embed_documents, prepare_document

    info: dict = {}
    lock = DataDirLock(settings.data_dir).acquire()
    rt = None
    try:
        upgrade_database(settings.sqlalchemy_url)
        rt = _runtime_class()(settings, vectors or RandomVectors(dim))

        # 1. The AutoRAG pages, submitted as documents and prepared by the real CPU stage.
        items: list[WorkItem] = []
        with session_scope(rt.session_factory) as session:
            for doc_id, text in corpus.items():
                result = lifecycle.store(
                    session,
                    collection_name=COLLECTION,
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
        log(f"submitted {len(items)} pages; preparing them (Kiwi, chunker, sparse vectors)")
        prepared: list[tuple[WorkItem, int]] = []
        rt.analyzer, rt.tokenizer  # noqa: B018 - load before timing the stage
        t1 = time.perf_counter()
        for item in tqdm(items, desc="prepare", unit="doc", file=sys.stderr):
            n = prepare_document(
                item,
                engine=rt.engine,
                analyzer=rt.analyzer,
                chunking=rt.chunking_for,
                extract_limits=rt.extract_limits,
                lease=rt.lease("bench"),
            )
            if n:
                prepared.append((item, n))
        prepare_s = time.perf_counter() - t1
        corpus_chunks = sum(n for _, n in prepared)
        if not corpus_chunks:
            raise RuntimeError("the prepare stage produced no chunks")
        log(
            f"prepared {len(prepared)} documents into {corpus_chunks} chunks in {prepare_s:.1f}s "
            f"({corpus_chunks / prepare_s:.0f} chunks/s)"
        )
        info.update(corpus_documents=len(prepared), corpus_chunks=corpus_chunks, prepare_s=round(prepare_s, 1))

        # 2. Plan: the prepared pages first, then copies of them, until exactly `chunks` chunks.
        plan: list[tuple[int, WorkItem, int]] = []  # (copy number, original item, chunks to keep)
        total, copy = 0, 0
        while total < chunks:
            for item, n in prepared:
                take = min(n, chunks - total)
                if take <= 0:
                    break
                plan.append((copy, item, take))
                total += take
            copy += 1

        # 3. Copies: new document rows and chunk rows (ids from chunk_point_id), no second Kiwi pass.
        t2 = time.perf_counter()
        kept = {item.document_id: take for c, item, take in plan if c == 0}
        with session_scope(rt.session_factory) as session:
            unused = [item.document_id for item, _ in prepared if item.document_id not in kept]
            if unused:  # --chunks below one corpus pass: drop the pages not needed
                session.execute(delete(Document).where(Document.id.in_(unused)))
            for item, n in prepared:
                keep = kept.get(item.document_id)
                if keep is not None and keep < n:
                    session.execute(delete(Chunk).where(Chunk.document_id == item.document_id, Chunk.ordinal >= keep))
                    session.get_one(Document, item.document_id).chunk_count = keep
        work: list[WorkItem] = [item for c, item, _ in plan if c == 0]
        if metadata:
            with session_scope(rt.session_factory) as session:
                for n, item in enumerate(work):
                    document = session.get_one(Document, item.document_id)
                    document.metadata_ = {**(document.metadata_ or {}), **metadata(n)}
        copies = [(c, item, take) for c, item, take in plan if c > 0]
        originals: dict[uuid.UUID, tuple[dict, list[dict]]] = {}
        with session_scope(rt.session_factory) as session:
            # The distinct originals: a list of every copy's passes SQLite's limit of bound variables.
            for document in session.scalars(
                select(Document).where(Document.id.in_({i.document_id for _, i, _ in copies}))
            ):
                originals[document.id] = (
                    {
                        "collection_id": document.collection_id,
                        "external_id": document.external_id,
                        "title": document.title,
                        "filename": document.filename,
                        "media_type": document.media_type,
                        "sha256": document.sha256,
                        "text_sha256": document.text_sha256,
                        "metadata_": document.metadata_,
                        "char_count": document.char_count,
                    },
                    [],
                )
            for chunk in session.scalars(
                select(Chunk).where(Chunk.document_id.in_(list(originals))).order_by(Chunk.document_id, Chunk.ordinal)
            ):
                originals[chunk.document_id][1].append(
                    {
                        "ordinal": chunk.ordinal,
                        "text": chunk.text,
                        "char_start": chunk.char_start,
                        "char_end": chunk.char_end,
                        "page": chunk.page,
                        "heading": chunk.heading,
                        "token_count": chunk.token_count,
                        "sparse": chunk.sparse,
                        "term_spans": chunk.term_spans,
                        "sentence_starts": chunk.sentence_starts,
                    }
                )
        for start in tqdm(range(0, len(copies), batch_docs), desc="copy", unit="batch", file=sys.stderr):
            doc_rows, chunk_rows = [], []
            now = utcnow()
            for c, item, take in copies[start : start + batch_docs]:
                doc, source_chunks = originals[item.document_id]
                new_id = uuid.uuid5(item.document_id, f"bench-copy-{c}")
                extra = {"metadata_": {**(doc["metadata_"] or {}), **metadata(len(work))}} if metadata else {}
                doc_rows.append(
                    {
                        **doc,
                        **extra,
                        "id": new_id,
                        "external_id": f"{doc['external_id']}#copy{c}",
                        "status": DocumentStatus.processing,
                        "stage": DocumentStage.embedding,
                        "chunk_count": take,
                        "embedded_count": 0,
                        "generation": 1,
                        "created_at": now,
                        "updated_at": now,
                    }
                )
                chunk_rows += [
                    {**row, "id": chunk_point_id(new_id, 1, row["ordinal"]), "document_id": new_id, "generation": 1}
                    for row in source_chunks[:take]
                ]
                work.append(WorkItem(new_id, 1))
            with session_scope(rt.session_factory) as session:
                session.execute(insert(Document), doc_rows)
                session.execute(insert(Chunk), chunk_rows)
        copy_s = time.perf_counter() - t2
        log(f"{len(work)} documents ({len(copies)} copies) in {copy_s:.1f}s; writing points and publishing")

        # 4. The real embed stage (points through the index layer, publication), random dense vectors.
        t3 = time.perf_counter()
        with tqdm(total=len(work), desc="index", unit="doc", file=sys.stderr) as bar:
            for start in range(0, len(work), batch_docs):
                batch = work[start : start + batch_docs]
                embed_documents(batch, engine=rt.engine, models=rt.models, index=rt.index)
                bar.update(len(batch))
                if on_batch is not None:
                    on_batch(rt, start + len(batch), len(work))
        index_s = time.perf_counter() - t3

        with session_scope(rt.session_factory) as session:
            collection = session.scalars(select(Collection).where(Collection.name == COLLECTION)).one()
            name = index_name(collection)
            published = session.scalar(
                select(func.count())
                .select_from(Chunk)
                .join(Document, Chunk.document_id == Document.id)
                .where(Document.status == DocumentStatus.indexed, Chunk.generation == Document.indexed_generation)
            )
            documents_indexed = session.execute(
                select(func.count()).select_from(Document).where(Document.status == DocumentStatus.indexed)
            ).scalar_one()
        points = rt.index.count(name)
        log(
            f"indexed {points} points of {documents_indexed} documents in {index_s:.1f}s "
            f"({points / index_s:.0f} points/s, {documents_indexed / index_s:.0f} documents/s)"
        )
        if points != chunks or published != chunks:
            raise RuntimeError(f"expected {chunks} chunks, found {points} points and {published} published chunk rows")
        info.update(
            documents_indexed=documents_indexed,
            corpus_copies=copy,
            copy_s=round(copy_s, 1),
            index_s=round(index_s, 1),
            index_points_per_s=round(points / index_s, 1),
        )
        return info
    finally:
        if rt is not None:
            rt.close()
        lock.release()


# --- HTTP ------------------------------------------------------------------------------------


def _search(client, query: str, mode: str, top_k: int, **extra) -> tuple[float, dict]:
    t0 = time.perf_counter()
    response = client.post(
        f"/v1/collections/{COLLECTION}/search", json={"query": query, "top_k": top_k, "mode": mode, **extra}
    )
    elapsed = time.perf_counter() - t0
    if response.status_code != 200:
        raise RuntimeError(f"{mode} search for {query!r} answered {response.status_code}: {response.text[:500]}")
    return elapsed, response.json()


def run_sequential(
    base_url: str, queries: Sequence[str], mode: str, *, top_k: int, warmup: int, timeout: float, **extra
) -> dict:
    """One keep-alive client, one request at a time; latency per request at the client."""
    import httpx
    from tqdm import tqdm

    latencies, server_ms, hits = [], [], []
    with httpx.Client(base_url=base_url, timeout=timeout) as client:
        for q in queries[:warmup]:
            _search(client, q, mode, top_k, **extra)
        started = time.perf_counter()
        for q in tqdm(queries, desc=f"{mode:>6}", unit="q", file=sys.stderr):
            elapsed, body = _search(client, q, mode, top_k, **extra)
            latencies.append(elapsed)
            server_ms.append(body["took_ms"])
            hits.append(len(body["results"]))
        wall = time.perf_counter() - started
    return {
        **percentiles(latencies),
        "mean_ms": round(float(np.mean(latencies)) * 1000, 2),
        "server_took_p50_ms": round(float(np.median(server_ms)), 2),
        "qps": round(len(queries) / wall, 2),
        "mean_results": round(float(np.mean(hits)), 2),
    }


def run_concurrent(
    base_url: str, queries: Sequence[str], mode: str, *, top_k: int, clients: int, timeout: float
) -> dict:
    """`clients` threads, each with its own keep-alive client, sharing the questions."""
    import httpx

    next_index = iter(range(len(queries)))
    take = threading.Lock()
    latencies: list[float] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(clients + 1)

    def worker() -> None:
        with httpx.Client(base_url=base_url, timeout=timeout) as client:
            try:
                _search(client, queries[0], mode, top_k)  # open the connection before the clock starts
            except BaseException as exc:
                errors.append(exc)
                barrier.abort()
                return
            try:
                barrier.wait()
            except threading.BrokenBarrierError:
                return
            while not errors:
                with take:
                    i = next(next_index, None)
                if i is None:
                    return
                try:
                    elapsed, _ = _search(client, queries[i], mode, top_k)
                except BaseException as exc:  # reported by the main thread
                    errors.append(exc)
                    return
                with take:
                    latencies.append(elapsed)

    threads = [threading.Thread(target=worker, name=f"client-{i}", daemon=True) for i in range(clients)]
    for t in threads:
        t.start()
    try:
        barrier.wait(timeout=timeout)
    except threading.BrokenBarrierError:
        raise RuntimeError(
            f"concurrent {mode} clients could not start: {errors[0]!r}"
            if errors
            else f"concurrent {mode} clients did not connect within {timeout:.0f}s"
        ) from None
    started = time.perf_counter()
    deadline = started + timeout * len(queries)
    for t in threads:
        t.join(timeout=max(1.0, deadline - time.perf_counter()))
    wall = time.perf_counter() - started
    if errors:
        raise RuntimeError(f"concurrent {mode} search failed: {errors[0]!r}") from errors[0]
    if any(t.is_alive() for t in threads) or len(latencies) != len(queries):
        raise RuntimeError(f"concurrent {mode} run did not finish ({len(latencies)} of {len(queries)} answered)")
    log(f"{clients} clients: {len(queries)} {mode} queries in {wall:.1f}s")
    return {**percentiles(latencies), "qps": round(len(queries) / wall, 2), "clients": clients}


# --- bare model --------------------------------------------------------------------------------


def bare_encode(settings, queries: Sequence[str]) -> dict:
    """Encoder.encode_queries([q]) per question in this process: same model, device and precision."""
    from tqdm import tqdm

    from services.embedding.encoder import Encoder

    s = settings
    encoder = Encoder(
        s.model_name_or_path,
        s.profile,
        device=s.embedding_device,
        precision=s.embedding_precision,
        max_batch_tokens=s.embed_max_batch_tokens,
    )
    encoder.warmup()
    latencies = []
    for q in tqdm(queries, desc="  bare", unit="q", file=sys.stderr):
        t0 = time.perf_counter()
        encoder.encode_queries([q])
        latencies.append(time.perf_counter() - t0)
    out = {**percentiles(latencies), "precision": encoder.precision, "device": encoder.device, "dim": encoder.dim}
    del encoder
    return out


def bare_query_vector(queries: Sequence[str]) -> dict:
    """The analyzer's query_vector (Kiwi) per question in this process: the sparse path's own cost."""
    from services.ingest.analyzer import get_analyzer

    analyzer = get_analyzer()
    analyzer.query_vector(queries[0])
    latencies = []
    for q in queries:
        t0 = time.perf_counter()
        analyzer.query_vector(q)
        latencies.append(time.perf_counter() - t0)
    return percentiles(latencies, (50,))


# --- main ------------------------------------------------------------------------------------


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--profile", default="bge-m3-ko")
    ap.add_argument("--model", default=None, help="model directory (default: the profile's twin under ./.twins/)")
    ap.add_argument("--small", action="store_true", help="use the small twin (quick check; latencies meaningless)")
    ap.add_argument(
        "--precision", default=None, help="fp32, bf16, int8 (CPU) or fp16/bf16 (CUDA); default: the service's"
    )
    ap.add_argument(
        "--device", default=None, help="torch device for the service and the bare model (default: the service's)"
    )
    ap.add_argument("--chunks", type=int, default=10_000, help="chunks to index (default 10,000)")
    ap.add_argument(
        "--queries", type=int, default=300, help="questions per run, the AutoRAG ones repeated (default 300)"
    )
    ap.add_argument("--concurrency", type=int, default=8, help="clients of the concurrent run (default 8)")
    ap.add_argument("--top-k", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=5, help="untimed requests per mode before timing")
    ap.add_argument(
        "--corpus", type=Path, default=DEFAULT_CORPUS, help="AutoRAG folder (qa*.parquet, *corpus*.parquet)"
    )
    ap.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 for the service (default: a free one)")
    ap.add_argument("--work-dir", type=Path, default=None, help="where to put the data directory (default: a temp dir)")
    ap.add_argument("--keep", action="store_true", help="keep the data directory and server log")
    ap.add_argument("--ready-timeout", type=float, default=900, help="seconds to wait for /readyz")
    ap.add_argument("--request-timeout", type=float, default=120, help="seconds per HTTP request")
    ap.add_argument("--batch-docs", type=int, default=256, help="documents per embed_documents call while indexing")
    args = ap.parse_args()
    if args.chunks < 1 or args.queries < 1 or args.concurrency < 1:
        ap.error("--chunks, --queries and --concurrency must be positive")

    from services.evaluation.datasets import load_dataset

    model = resolve_model(args.profile, args.model, small=args.small)
    dim = model_dim(model)
    if dim is None:
        raise SystemExit(f"cannot read the output dimension of {model}; pass a local sentence-transformers directory")
    dataset = load_dataset(args.corpus)
    questions = list(dataset.queries.values())
    queries = [questions[i % len(questions)] for i in range(args.queries)]
    log(f"model {model} (dim {dim}); {len(dataset.corpus)} pages, {len(questions)} questions -> {len(queries)} queries")

    work_dir = make_work_dir("saekin-bench-ql-", args.work_dir)
    data_dir = work_dir / "data"
    settings = embedded_settings(
        data_dir, args.profile, model, embedding_precision=args.precision, embedding_device=args.device
    )
    result: dict = {}
    server: ServiceProcess | None = None
    try:
        t0 = time.perf_counter()
        build = build_index(settings, dataset.corpus, chunks=args.chunks, dim=dim, batch_docs=args.batch_docs)
        build["build_s"] = round(time.perf_counter() - t0, 1)

        port = args.port or free_port()
        base_url = f"http://127.0.0.1:{port}"
        env = service_env(
            {
                "SAEKIN_DATA_DIR": str(data_dir),
                "SAEKIN_EMBEDDING_MODEL": model,
                "SAEKIN_EMBEDDING_PROFILE": args.profile,
                "SAEKIN_EMBEDDING_PRECISION": args.precision,
                "SAEKIN_EMBEDDING_DEVICE": args.device,
            }
        )
        t1 = time.perf_counter()
        server = ServiceProcess(
            "api",
            ["serve", "--host", "127.0.0.1", "--port", str(port)],
            env=env,
            log_path=work_dir / "server.log",
            cwd=work_dir,
        )
        wait_ready(server, base_url, timeout=args.ready_timeout)
        startup_s = time.perf_counter() - t1
        log(f"service ready in {startup_s:.1f}s (pid {server.pid}); {len(queries)} queries per mode")

        modes = {}
        for mode in MODES:
            modes[mode] = run_sequential(
                base_url, queries, mode, top_k=args.top_k, warmup=args.warmup, timeout=args.request_timeout
            )
            log(f"{mode}: {modes[mode]}")
        # The same sparse run without highlighting (the API's `highlight` flag): what the highlights cost.
        sparse_plain = run_sequential(
            base_url,
            queries,
            "sparse",
            top_k=args.top_k,
            warmup=args.warmup,
            timeout=args.request_timeout,
            highlight=False,
        )
        log(f"sparse without highlights: {sparse_plain}")
        concurrent = run_concurrent(
            base_url, queries, "hybrid", top_k=args.top_k, clients=args.concurrency, timeout=args.request_timeout
        )
        server.check_alive()
        api_rss = peak_rss_mb_of(server.pid)
        code = server.stop()
        log(f"service stopped (exit code {code}); peak RSS {api_rss} MiB")
        server = None

        bare = bare_encode(settings, queries)
        log(f"bare encode: {bare}")
        sparse_analysis = bare_query_vector(queries)

        weights = model_weight_mb(model)
        hybrid, sparse = modes["hybrid"], modes["sparse"]
        result = {
            "chunks_indexed": args.chunks,
            "bare_encode_p50_ms": bare["p50_ms"],
            "modes": modes,
            "sequential_qps": hybrid["qps"],
            "concurrent_qps": concurrent["qps"],
            "api_rss_mb": api_rss,
            "model": model,
            "precision": bare["precision"],
            "queries": len(queries),
            "device": bare["device"],
            "dim": dim,
            "top_k": args.top_k,
            "hybrid_concurrent": concurrent,
            "sparse_no_highlight": sparse_plain,
            "bare_encode": {k: v for k, v in bare.items() if k.endswith("_ms")},
            "bare_query_vector_p50_ms": sparse_analysis["p50_ms"],
            "model_weight_mb": weights,
            "targets": {
                "hybrid_p50_over_bare_encode": round(hybrid["p50_ms"] / bare["p50_ms"], 3),
                "hybrid_p50_le_1.1x_bare": hybrid["p50_ms"] <= 1.1 * bare["p50_ms"],
                "sparse_p50_le_15ms": sparse["p50_ms"] <= 15.0,
                "concurrent_over_sequential": round(concurrent["qps"] / hybrid["qps"], 3),
                "concurrent_ge_2x_sequential": concurrent["qps"] >= 2 * hybrid["qps"],
                "api_rss_le_weights_plus_1gb": (api_rss <= weights + 1024) if api_rss and weights else None,
            },
            "index": build,
            "service_startup_s": round(startup_s, 1),
        }
    finally:
        if server is not None:
            log(f"stopping the service; last log lines:\n{server.tail(20)}")
            server.stop()
        if args.keep:
            log(f"kept {work_dir}")
        else:
            shutil.rmtree(work_dir, ignore_errors=True)
    emit(result)


if __name__ == "__main__":
    main()
