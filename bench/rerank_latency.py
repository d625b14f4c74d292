"""Reranking latency: what one question's rerank costs for 20 and 50 candidates (issue 15).

Candidates are Korean passages as search returns them: the AutoRAG corpus
(../shared/data/autorag-ko) normalized, split into sentences and packed by Saekin's chunker to
the default embedding profile's chunk budget (510 tokens), so most pairs fill the reranker's
512-token pair budget. Each timed query pairs one AutoRAG question with a random sample of
candidates and scores them with `services.embedding.reranker.Reranker` at every requested
precision (rounds interleaved, so a noisy neighbour on a shared machine affects each alike),
and prints one JSON object:

    {"device", "model", "profile", "max_tokens", "max_batch_tokens", "mean_pair_tokens",
     "results": [{"precision", "candidates", "p50_ms", "pairs_per_s", "tokens_per_s",
                  "max_abs_diff_to_fp32", ...}], "skipped", "load_average"}

`pairs_per_s` and `tokens_per_s` follow from the p50 latency. On CPU, `cpu_p50_ms` is the
process CPU time of the same calls (all threads) and `pairs_per_cpu_s` follows from it: other
processes on a shared machine stretch wall time, not this process's CPU time, so on n idle
cores a call takes about cpu_p50_ms / n (`load_average` is recorded too). `max_abs_diff_to_fp32` is the
largest score difference to fp32 on the same pairs (a random-weight twin's scores all lie near
0.5, so it says little about a trained model's ranking: check that with `saekin eval`).

    python bench/rerank_latency.py                          # full-size bge-reranker-v2-m3-ko twin
    python bench/rerank_latency.py --precisions int8 --repeat 5
    python bench/rerank_latency.py --small --repeat 1       # quick check (latencies meaningless)

Without --model a full-size twin is built once under ./.twins/ (about 2.2 GB).
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import DEFAULT_CORPUS, device_name, emit, korean_chunks, load_pages, log, resolve_model


def _parse() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--profile", default="bge-reranker-v2-m3-ko")
    ap.add_argument("--model", default=None, help="model directory or hub id (default: the profile's twin)")
    ap.add_argument("--small", action="store_true", help="the small twin (quick check; latencies meaningless)")
    ap.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS, help="AutoRAG folder (qa*.parquet, corpus)")
    ap.add_argument("--candidates", default="20,50", help="comma list of candidates per question (default 20,50)")
    ap.add_argument(
        "--precisions",
        default=None,
        help="comma list (default: bf16,fp16 on CUDA; fp32,int8 on CPU, plus bf16 where the CPU has native bf16)",
    )
    ap.add_argument("--device", default=None, help="cuda, cuda:1, cpu (default: cuda when available)")
    ap.add_argument("--max-tokens", type=int, default=None, help="tokens per pair (default: the profile's, 512)")
    ap.add_argument(
        "--max-batch-tokens", type=int, default=None, help="padded tokens per forward pass (default: settings)"
    )
    ap.add_argument(
        "--repeat", type=int, default=None, help="timed questions per configuration (default: 3 on CPU, 10 on CUDA)"
    )
    ap.add_argument("--seed", type=int, default=0)
    return ap.parse_args()


def _questions(corpus: Path) -> list[str]:
    import pyarrow.parquet as pq

    files = sorted(corpus.glob("qa*.parquet"))
    if not files:
        raise SystemExit(f"no qa*.parquet in {corpus} (pass --corpus DIR)")
    return [q for q in pq.read_table(files[0], columns=["query"]).column("query").to_pylist() if q and q.strip()]


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def main() -> None:
    args = _parse()
    import numpy as np
    import torch

    from config.profiles import get_profile, get_reranker_profile
    from config.settings import get_settings
    from services.embedding.loading import cpu_supports_bf16, default_device, load_tokenizer
    from services.embedding.reranker import Reranker

    profile = get_reranker_profile(args.profile)
    device = args.device or default_device()
    on_cuda = device.startswith("cuda")
    settings = get_settings()
    max_tokens = args.max_tokens or settings.rerank_max_tokens or profile.pair_tokens
    max_batch_tokens = args.max_batch_tokens or settings.rerank_max_batch_tokens
    repeat = args.repeat or (10 if on_cuda else 3)
    counts = [int(c) for c in args.candidates.split(",") if c.strip()]
    if args.precisions:
        precisions = [p.strip() for p in args.precisions.split(",") if p.strip()]
    elif on_cuda:
        precisions = ["bf16", "fp16"]
    else:
        precisions = ["fp32", "int8"] + (["bf16"] if cpu_supports_bf16() else [])
    skipped = []
    if not on_cuda and not args.precisions and not cpu_supports_bf16():
        skipped.append(
            {"precision": "bf16", "reason": "CPU has no native bf16 (avx512_bf16/amx): emulated, far slower than fp32"}
        )

    model = resolve_model(args.profile, args.model, small=args.small)
    tokenizer = load_tokenizer(model)
    log(f"loading pages and questions from {args.corpus}")
    pages = load_pages(args.corpus)
    questions = _questions(args.corpus)
    chunk_tokens = get_profile("bge-m3-ko").chunk_tokens
    passages, method = korean_chunks(pages, tokenizer, max_tokens=chunk_tokens, overlap_tokens=0)
    rng = random.Random(args.seed)
    # The same questions and candidate lists for every precision: (question, passages) per count and round.
    work = {n: [(rng.choice(questions), rng.sample(passages, n)) for _ in range(repeat)] for n in counts}
    pair_tokens = [
        len(ids)
        for q, ps in work[counts[0]]
        for ids in tokenizer(
            [q] * len(ps), ps, truncation="only_second", max_length=max_tokens, return_attention_mask=False
        )["input_ids"]
    ]
    mean_pair_tokens = statistics.fmean(pair_tokens)
    log(
        f"{len(pages)} pages -> {len(passages)} passages ({method}, {chunk_tokens} tokens max); "
        f"{mean_pair_tokens:.0f} tokens per pair on average; {repeat} question(s) per count on {device}"
    )

    rerankers = {}
    for precision in precisions:
        reranker = Reranker(
            model, profile, device=device, precision=precision, max_tokens=max_tokens, max_batch_tokens=max_batch_tokens
        )
        reranker.warmup()
        rerankers[precision] = reranker
        log(f"{precision}: loaded, {reranker.max_batch_tokens} padded tokens per batch")

    seconds: dict[tuple[str, int], list[float]] = {(p, n): [] for p in precisions for n in counts}
    cpu_seconds: dict[tuple[str, int], list[float]] = {(p, n): [] for p in precisions for n in counts}
    scores: dict[tuple[str, int], list[float]] = {}
    for rnd in range(repeat):
        for precision, reranker in rerankers.items():
            for n in counts:
                question, candidates = work[n][rnd]
                _sync(device)
                t0, c0 = time.perf_counter(), time.process_time()
                got = reranker.rerank(question, candidates)
                _sync(device)
                secs = time.perf_counter() - t0
                seconds[(precision, n)].append(secs)
                cpu_seconds[(precision, n)].append(time.process_time() - c0)
                if rnd == 0:
                    scores[(precision, n)] = got
                log(
                    f"round {rnd + 1}/{repeat} {precision} {n} candidates: {secs:.2f} s ({n / secs:.2f} pairs/s), "
                    f"{cpu_seconds[(precision, n)][-1]:.2f} CPU s"
                )

    results = []
    for precision in precisions:
        for n in counts:
            timings = seconds[(precision, n)]
            p50 = statistics.median(timings)
            row: dict[str, object] = {
                "precision": precision,
                "candidates": n,
                "p50_ms": round(p50 * 1000, 1),
                "min_ms": round(min(timings) * 1000, 1),
                "max_ms": round(max(timings) * 1000, 1),
                "pairs_per_s": round(n / p50, 2),
                "tokens_per_s": round(n * mean_pair_tokens / p50, 1),
            }
            if not on_cuda:
                cpu_p50 = statistics.median(cpu_seconds[(precision, n)])
                row["cpu_p50_ms"] = round(cpu_p50 * 1000, 1)
                row["pairs_per_cpu_s"] = round(n / cpu_p50, 3)
            if "fp32" in rerankers and precision != "fp32":
                diff = np.abs(np.asarray(scores[(precision, n)]) - np.asarray(scores[("fp32", n)]))
                row["max_abs_diff_to_fp32"] = round(float(diff.max()), 6)
            results.append(row)

    reranker = next(iter(rerankers.values()))
    result: dict[str, object] = {
        "device": device_name(device),
        "model": model,
        "profile": profile.name,
        "max_tokens": max_tokens,
        "max_batch_tokens": reranker.max_batch_tokens,
        "max_batch_tokens_setting": max_batch_tokens,
        "passages": method,
        "mean_pair_tokens": round(mean_pair_tokens, 1),
        "repeat": repeat,
        "threads": torch.get_num_threads(),
        "results": results,
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }
    if skipped:
        result["skipped"] = skipped
    emit(result)


if __name__ == "__main__":
    main()
