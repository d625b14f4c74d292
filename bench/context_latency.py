"""Latency of /context against /search for the same questions (issue 16), over HTTP, sparse mode.

What it does:
1. Builds an embedded data directory with `--chunks` chunks (default 10,000) exactly as
   bench/query_latency.py does (the AutoRAG pages through the real CPU stage once, then copies
   of their chunk rows, the real embed stage with random dense vectors).
2. Starts `python -m services.cli serve` on it and sends the AutoRAG questions (repeated to
   `--queries`) sequentially from one keep-alive client, in sparse mode (so the model does not
   dominate), alternating per question between
   - `/search` with `"highlight": false` (the search work /context does: top_k 10, no highlights),
   - `/search` with the defaults (highlights on),
   - `/context` with `max_tokens` (default 2,000), `neighbors` 1, tokenizer `o200k_base` (which
     falls back to the embedding model's tokenizer where the encoding file is missing: the JSON
     says which counted).
   Latency is measured at the client; the server's own `took_ms` is reported too.

Target (issue 16): /context p50 - /search p50 <= 5 ms (`assembly_added_p50_ms`, against the
search without highlights).

    .venv/bin/python bench/context_latency.py                      # small twin, 10,000 chunks, 300 questions
    .venv/bin/python bench/context_latency.py --chunks 2000 --queries 50   # quick check

Progress on stderr; stdout gets one JSON document.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import DEFAULT_CORPUS, embedded_settings, emit, make_work_dir, resolve_model
from bench._service import ServiceProcess, free_port, model_dim, percentiles, service_env, wait_ready
from bench.query_latency import COLLECTION, build_index


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--profile", default="bge-m3-ko")
    ap.add_argument("--model", default=None, help="model directory (default: the profile's small twin)")
    ap.add_argument("--full", action="store_true", help="the full-size twin instead of the small one")
    ap.add_argument("--chunks", type=int, default=10_000)
    ap.add_argument("--queries", type=int, default=300)
    ap.add_argument("--top-k", type=int, default=10)
    ap.add_argument("--max-tokens", type=int, default=2000)
    ap.add_argument("--neighbors", type=int, default=1)
    ap.add_argument("--tokenizer", default="o200k_base", choices=["o200k_base", "cl100k_base", "embedding"])
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    ap.add_argument("--work-dir", type=Path, default=None)
    ap.add_argument("--batch-docs", type=int, default=256)
    ap.add_argument("--ready-timeout", type=float, default=900)
    args = ap.parse_args()

    import httpx

    from services.evaluation.datasets import load_dataset

    model = resolve_model(args.profile, args.model, small=not args.full)
    dim = model_dim(model)
    if dim is None:
        raise SystemExit(f"cannot read the output dimension of {model}")
    dataset = load_dataset(args.corpus)
    questions = list(dataset.queries.values())
    queries = [questions[i % len(questions)] for i in range(args.queries)]
    work_dir = make_work_dir("saekin-bench-ctx-", args.work_dir)
    data_dir = work_dir / "data"
    settings = embedded_settings(data_dir, args.profile, model)
    t0 = time.perf_counter()
    build = build_index(settings, dataset.corpus, chunks=args.chunks, dim=dim, batch_docs=args.batch_docs)
    build["build_s"] = round(time.perf_counter() - t0, 1)

    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    env = service_env(
        {"SAEKIN_DATA_DIR": str(data_dir), "SAEKIN_EMBEDDING_MODEL": model, "SAEKIN_EMBEDDING_PROFILE": args.profile}
    )
    server = ServiceProcess(
        "api",
        ["serve", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        log_path=work_dir / "server.log",
        cwd=work_dir,
    )
    try:
        wait_ready(server, base_url, timeout=args.ready_timeout)
        search_body = {"mode": "sparse", "top_k": args.top_k}
        kinds = {
            "search_no_highlight": (f"/v1/collections/{COLLECTION}/search", {**search_body, "highlight": False}),
            "search": (f"/v1/collections/{COLLECTION}/search", search_body),
            "context": (
                f"/v1/collections/{COLLECTION}/context",
                {
                    **search_body,
                    "max_tokens": args.max_tokens,
                    "neighbors": args.neighbors,
                    "tokenizer": args.tokenizer,
                },
            ),
        }
        latencies: dict[str, list[float]] = {k: [] for k in kinds}
        took: dict[str, list[float]] = {k: [] for k in kinds}
        context_tokens: list[int] = []
        citations: list[int] = []
        tokenizer_used = None
        with httpx.Client(base_url=base_url, timeout=120) as client:
            for q in queries[: args.warmup]:
                for path, body in kinds.values():
                    client.post(path, json={"query": q, **body}).raise_for_status()
            for i, q in enumerate(queries):
                # alternate the order so that no kind always runs right after another's cache warm-up
                order = list(kinds) if i % 2 == 0 else list(reversed(kinds))
                for kind in order:
                    path, body = kinds[kind]
                    t = time.perf_counter()
                    r = client.post(path, json={"query": q, **body})
                    latencies[kind].append(time.perf_counter() - t)
                    if r.status_code != 200:
                        raise RuntimeError(f"{kind} for {q!r}: {r.status_code} {r.text[:300]}")
                    answer = r.json()
                    took[kind].append(answer["took_ms"])
                    if kind == "context":
                        context_tokens.append(answer["token_count"])
                        citations.append(len(answer["citations"]))
                        tokenizer_used = answer["tokenizer"]
                        if answer["token_count"] > args.max_tokens:
                            raise RuntimeError(f"context over budget for {q!r}: {answer['token_count']}")
        server.check_alive()
    finally:
        server.stop()

    result_kinds = {
        k: {**percentiles(v), "server_took_p50_ms": round(float(np.median(took[k])), 2)} for k, v in latencies.items()
    }
    emit(
        {
            "benchmark": "context_latency",
            "chunks_indexed": args.chunks,
            "queries": len(queries),
            "mode": "sparse",
            "top_k": args.top_k,
            "max_tokens": args.max_tokens,
            "neighbors": args.neighbors,
            "tokenizer_asked": args.tokenizer,
            "tokenizer_used": tokenizer_used,
            "model": model,
            "kinds": result_kinds,
            "assembly_added_p50_ms": round(
                result_kinds["context"]["p50_ms"] - result_kinds["search_no_highlight"]["p50_ms"], 2
            ),
            "assembly_added_server_p50_ms": round(
                result_kinds["context"]["server_took_p50_ms"]
                - result_kinds["search_no_highlight"]["server_took_p50_ms"],
                2,
            ),
            "context_vs_search_with_highlights_p50_ms": round(
                result_kinds["context"]["p50_ms"] - result_kinds["search"]["p50_ms"], 2
            ),
            "context_tokens_p50": float(np.median(context_tokens)),
            "citations_mean": round(float(np.mean(citations)), 2),
            "target_p50_added_ms": 5.0,
            "build": build,
        }
    )


if __name__ == "__main__":
    main()
