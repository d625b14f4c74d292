"""Embedding throughput: plain `SentenceTransformer.encode` against Saekin's engine (issue 5).

Texts are Korean chunks with the real length distribution: the AutoRAG corpus
(../shared/data/autorag-ko) normalized, split into sentences and packed by Saekin's chunker
to the profile's token budget. One run encodes the same texts with

- the baseline: `SentenceTransformer(model).encode(texts, batch_size=32)` (fp32, as shipped);
- the engine (`services.embedding.encoder.Encoder`) at every requested precision,

and prints one JSON object:

    {"device", "model", "n_texts", "tokens", "baseline": {"tokens_per_s"},
     "engine": [{"precision", "tokens_per_s", "ratio", "cosine_min", ...}], "mfu", ...}

`cosine_min` is the lowest cosine between a text's engine vector and its baseline (fp32)
vector; `cosine_min_centered` does the same after subtracting the baseline's mean vector
(random-weight twins map all texts to nearly the same direction, which makes the plain
cosine flatter than it would be for a trained model). On CPU, `ratio_cpu_time` compares process CPU seconds, which other processes on a shared
machine disturb far less than wall time (`load_average` is recorded too). `mfu` (CUDA only) is the model FLOPs
utilisation of the best half-precision run against the device's bf16 dense peak.

    python bench/embed_throughput.py                       # full-size bge-m3-ko twin, all chunks on CUDA
    python bench/embed_throughput.py --texts 48            # a CPU-sized subset
    python bench/embed_throughput.py --precisions fp32,int8 --max-batch-tokens 16384

Without --model a full-size twin is built once under ./.twins/ (about 2.2 GB for bge-m3-ko).
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from pathlib import Path

import numpy as np

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import (
    DEFAULT_CORPUS,
    bf16_peak_flops,
    device_name,
    emit,
    korean_chunks,
    load_pages,
    log,
    resolve_model,
)


def _parse() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--profile", default="bge-m3-ko")
    ap.add_argument("--model", default=None, help="model directory or hub id (default: full-size twin under ./.twins/)")
    ap.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS, help="directory holding ocr_corpus_v3.parquet")
    ap.add_argument(
        "--texts", type=int, default=None, help="random subset of N chunks (default: all on CUDA, 48 on CPU)"
    )
    ap.add_argument(
        "--precisions",
        default=None,
        help="comma list (default: bf16,fp16 on CUDA; fp32,int8 on CPU, plus bf16 where the CPU has native bf16)",
    )
    ap.add_argument("--max-batch-tokens", type=int, default=None, help="engine padded-token budget (default: settings)")
    ap.add_argument("--baseline-batch-size", type=int, default=32)
    ap.add_argument("--device", default=None, help="cuda, cuda:1, cpu (default: cuda when available)")
    ap.add_argument(
        "--repeat",
        type=int,
        default=None,
        help="timed runs per configuration, median kept (default: 3 on CUDA, 1 on CPU)",
    )
    ap.add_argument("--seed", type=int, default=0)
    return ap.parse_args()


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _timed(fn, device: str) -> tuple[float, float, object]:
    """Wall-clock and process CPU seconds of one call (CPU time is the steadier measure on a
    shared CPU machine: other processes stretch wall time, not this process's CPU time)."""
    _sync(device)
    t0, c0 = time.perf_counter(), time.process_time()
    out = fn()
    _sync(device)
    return time.perf_counter() - t0, time.process_time() - c0, out


def _loadavg() -> list[float] | None:
    """1/5/15-minute load averages at the end: other processes share a developer machine."""
    try:
        import os

        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def _model_flops(auto_model, lengths: list[int]) -> float:
    """Forward FLOPs on the real (unpadded) tokens: 2 x non-embedding parameters per token
    plus attention scores and weighted sums (4 x layers x hidden x length^2 per text)."""
    cfg = auto_model.config
    embed = sum(p.numel() for n, p in auto_model.named_parameters() if "embeddings" in n or "pooler" in n)
    body = sum(p.numel() for p in auto_model.parameters()) - embed
    layers, hidden = cfg.num_hidden_layers, cfg.hidden_size
    return float(sum(2 * body * n + 4 * layers * hidden * n * n for n in lengths))


def main() -> None:
    args = _parse()
    import torch

    from config.profiles import get_profile
    from config.settings import get_settings
    from services.embedding.encoder import Encoder
    from services.embedding.loading import cpu_supports_bf16, default_device, load_tokenizer

    profile = get_profile(args.profile)
    device = args.device or default_device()
    on_cuda = device.startswith("cuda")
    settings = get_settings()
    max_batch_tokens = args.max_batch_tokens or settings.embed_max_batch_tokens
    repeat = args.repeat or (3 if on_cuda else 1)
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

    model = resolve_model(args.profile, args.model)
    tokenizer = load_tokenizer(model)
    max_seq = int(tokenizer.model_max_length)
    chunk_tokens = min(settings.chunk_tokens or profile.chunk_tokens, profile.chunk_tokens, max_seq - 2)

    log(f"loading pages from {args.corpus}")
    pages = load_pages(args.corpus)
    chunks, method = korean_chunks(
        pages, tokenizer, max_tokens=chunk_tokens, overlap_tokens=settings.chunk_overlap_tokens
    )
    n = args.texts or (len(chunks) if on_cuda else 48)
    texts = random.Random(args.seed).sample(chunks, min(n, len(chunks)))
    lengths = [len(ids) for ids in tokenizer(texts, truncation=True, max_length=max_seq)["input_ids"]]
    tokens = sum(lengths)
    log(
        f"{len(pages)} pages -> {len(chunks)} chunks ({method}, {chunk_tokens} tokens max); "
        f"timing {len(texts)} texts, {tokens} tokens (mean {tokens / len(texts):.0f}) on {device}"
    )

    # Everything is loaded first and the timed runs are interleaved round by round, so that a
    # noisy neighbour on a shared machine affects the baseline and the engine alike.
    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(model, device=device)
    st.encode(texts[:2], batch_size=args.baseline_batch_size, show_progress_bar=False)  # warm-up
    flops = _model_flops(st[0].auto_model, lengths)
    encoders = {}
    for precision in precisions:
        enc = Encoder(model, profile, device=device, precision=precision, max_batch_tokens=max_batch_tokens)
        enc.warmup()
        encoders[precision] = enc
        log(f"engine {precision}: attention={enc.attn_implementation}, max_batch_tokens={enc.max_batch_tokens}")

    def baseline():
        return st.encode(texts, batch_size=args.baseline_batch_size, convert_to_numpy=True, show_progress_bar=False)

    runs = [("baseline", baseline)] + [(p, (lambda e=e: e.encode_documents(texts))) for p, e in encoders.items()]
    seconds: dict[str, list[float]] = {name: [] for name, _ in runs}
    cpu_seconds: dict[str, list[float]] = {name: [] for name, _ in runs}
    vectors: dict[str, np.ndarray] = {}
    peaks: dict[str, float] = {}
    for rnd in range(repeat):
        for name, fn in runs:
            if on_cuda:
                torch.cuda.reset_peak_memory_stats()
            secs, cpu_secs, out = _timed(fn, device)
            seconds[name].append(secs)
            cpu_seconds[name].append(cpu_secs)
            vectors.setdefault(name, np.asarray(out, dtype=np.float32))
            if on_cuda:
                peaks[name] = torch.cuda.max_memory_allocated() / 2**20
            log(f"round {rnd + 1}/{repeat} {name}: {secs:.2f} s, {tokens / secs:.0f} tokens/s")

    base_s = statistics.median(seconds["baseline"])
    base_tps = tokens / base_s
    ref = vectors["baseline"]
    centre = ref.mean(0)
    peak = bf16_peak_flops(device)
    engine = []
    for precision in precisions:
        secs = statistics.median(seconds[precision])
        got = vectors[precision]
        cos = (got * ref).sum(1) / (np.linalg.norm(got, axis=1) * np.linalg.norm(ref, axis=1))
        a, b = got - centre, ref - centre
        centred = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
        row = {
            "precision": precision,
            "tokens_per_s": round(tokens / secs, 1),
            "ratio": round(base_s / secs, 3),
            "cosine_min": round(float(cos.min()), 6),
            "cosine_min_centered": round(float(centred.min()), 6),
            "seconds": round(secs, 3),
            "max_batch_tokens": encoders[precision].max_batch_tokens,
        }
        if not on_cuda:
            cpu_secs = statistics.median(cpu_seconds[precision])
            row["cpu_seconds"] = round(cpu_secs, 3)
            row["ratio_cpu_time"] = round(statistics.median(cpu_seconds["baseline"]) / cpu_secs, 3)
        if on_cuda:
            row["mfu"] = round(flops / secs / peak, 4) if peak else None
            row["max_memory_allocated_mb"] = round(peaks[precision], 1)
        engine.append(row)

    half = [r for r in engine if r["precision"] in ("bf16", "fp16") and r.get("mfu") is not None]
    result = {
        "device": device_name(device),
        "model": model,
        "profile": profile.name,
        "n_texts": len(texts),
        "tokens": tokens,
        "mean_tokens_per_text": round(tokens / len(texts), 1),
        "chunker": method,
        "max_batch_tokens_setting": max_batch_tokens,
        "repeat": repeat,
        "baseline": {
            "tokens_per_s": round(base_tps, 1),
            "seconds": round(base_s, 3),
            "cpu_seconds": round(statistics.median(cpu_seconds["baseline"]), 3),
            "batch_size": args.baseline_batch_size,
        },
        "load_average": _loadavg(),
        "engine": engine,
        "mfu": max(r["mfu"] for r in half) if half else None,
        "model_gflops": round(flops / 1e9, 1),
    }
    if skipped:
        result["skipped"] = skipped
    emit(result)


if __name__ == "__main__":
    main()
