"""CPU encoder backends: query encode latency and agreement with fp32 PyTorch (issue 20, item 4).

Every variant is Saekin's own `Encoder` (services/embedding/encoder.py) with one backend and
precision: PyTorch fp32 (the reference) and int8 (dynamic quantization), ONNX Runtime (fp32 at
an optimisation level, int8 dynamic quantization) and OpenVINO (fp32, int8 weights). Exports are
made once into --export-dir and reused by later runs (the first run also reports export times).

Measured per variant, in this process, on the AutoRAG questions (../shared/data/autorag-ko):

- `query_p50_ms` / `query_p95_ms`: `encode_queries([q])`, one question per call, as the query
  encoder runs an idle service's questions; `ratio_p50` is the variant's p50 over PyTorch
  fp32's; `cpu_ms_p50` is the process CPU time per question and `cpu_ratio_p50` its ratio to
  PyTorch fp32's: on a machine shared with other busy processes wall time mostly measures the
  neighbours (run with --threads 1 there: multi-threaded runtimes wait for descheduled
  threads), CPU time much less;
- `docs_tokens_per_s`: `encode_documents` over --docs token windows of --doc-tokens tokens
  (the CPU embed worker's work);
- agreement with PyTorch fp32: `cosine_min` and `centred_cosine_min`/`_mean` over the questions
  and the documents, where "centred" subtracts the mean fp32 vector of that set first (the
  issue's definition; random-weight twins map every text to nearly the same direction, so the
  plain cosine says little there: the centred one measures the text-specific part).

PyTorch fp32 stays loaded while the other variants are loaded one at a time (a full-size model in
every backend at once would not fit in memory beside everything else); each question is timed
with the variant and with PyTorch fp32 in turn, so a noisy neighbour affects both alike, and
`ratio_p50` compares the two from the same pass (`torch_fp32_p50_ms_same_pass`).

    nice -n 10 .venv/bin/python bench/cpu_backends.py                     # full-size bge-m3-ko twin
    .venv/bin/python bench/cpu_backends.py --small --queries 20 --docs 4  # quick check

Progress goes to stderr; stdout gets one JSON document:
{"model", "profile", "threads", "queries", "rounds", "variants": [{"variant", "backend",
"precision", "query_p50_ms", "query_p95_ms", "cpu_ms_p50", "torch_fp32_p50_ms_same_pass", "ratio_p50",
"docs_tokens_per_s",
"queries_cosine_min", "queries_centred_cosine_min", "queries_centred_cosine_mean",
"docs_centred_cosine_min", "load_s", "export_s"}], "load_average"}
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import DEFAULT_CORPUS, TWINS_DIR, emit, load_pages, log, resolve_model, token_windows

# variant name -> (backend, precision, ONNX optimisation level)
VARIANTS: dict[str, tuple[str, str, str | None]] = {
    "torch-fp32": ("torch", "fp32", None),
    "torch-int8": ("torch", "int8", None),
    "onnx-O1-fp32": ("onnx", "fp32", "O1"),
    "onnx-O2-fp32": ("onnx", "fp32", "O2"),
    "onnx-O3-fp32": ("onnx", "fp32", "O3"),
    "onnx-O2-int8": ("onnx", "int8", "O2"),
    "openvino-fp32": ("openvino", "fp32", None),
    "openvino-int8": ("openvino", "int8", None),
    "torch-bf16": ("torch", "bf16", None),
    "openvino-bf16": ("openvino", "bf16", None),
}
DEFAULT_VARIANTS = "torch-fp32,torch-int8,onnx-O2-fp32,onnx-O3-fp32,onnx-O2-int8,openvino-fp32,openvino-int8"
BF16_VARIANTS = "torch-bf16,openvino-bf16"  # added to the default where the CPU has native bf16


def _parse() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--profile", default="bge-m3-ko")
    ap.add_argument("--model", default=None, help="model directory (default: a twin under ./.twins/)")
    ap.add_argument("--small", action="store_true", help="the small twin (a quick check; figures meaningless)")
    ap.add_argument(
        "--variants",
        default=None,
        help=f"comma-separated, from {', '.join(VARIANTS)} (default: {DEFAULT_VARIANTS}, and {BF16_VARIANTS} "
        "on CPUs with native bf16)",
    )
    ap.add_argument("--export-dir", type=Path, default=TWINS_DIR / "encoders", help="where exports are kept")
    ap.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS, help="AutoRAG folder (qa*.parquet, corpus)")
    ap.add_argument("--queries", type=int, default=40, help="AutoRAG questions timed per round (default 40)")
    ap.add_argument("--rounds", type=int, default=2, help="passes over the questions per variant (default 2)")
    ap.add_argument(
        "--threads", type=int, default=None, help="intra-op threads of every backend (default: torch's, one per core)"
    )
    ap.add_argument("--gap-ms", type=float, default=100, help="idle time before each timed question (default 100)")
    ap.add_argument("--docs", type=int, default=4, help="token windows for document agreement and speed")
    ap.add_argument("--doc-tokens", type=int, default=256, help="tokens per document window")
    return ap.parse_args()


def _cosine(got: np.ndarray, ref: np.ndarray) -> np.ndarray:
    out: np.ndarray = (got * ref).sum(1) / (np.linalg.norm(got, axis=1) * np.linalg.norm(ref, axis=1))
    return out


def main() -> None:
    from services.embedding.loading import cpu_supports_bf16

    args = _parse()
    chosen = args.variants or DEFAULT_VARIANTS + ("," + BF16_VARIANTS if cpu_supports_bf16() else "")
    names = [v.strip() for v in chosen.split(",") if v.strip()]
    unknown = [v for v in names if v not in VARIANTS]
    if unknown:
        raise SystemExit(f"unknown variants {unknown}; choose from {list(VARIANTS)}")
    if "torch-fp32" not in names:
        names.insert(0, "torch-fp32")  # the reference

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)  # the encoder gives ONNX Runtime and OpenVINO the same count

    from config.profiles import get_profile
    from services.embedding.backends import centred_cosine
    from services.embedding.encoder import Encoder
    from services.evaluation.datasets import load_dataset

    profile = get_profile(args.profile)
    model = resolve_model(args.profile, args.model, small=args.small)
    questions = list(load_dataset(args.corpus).queries.values())[: args.queries]

    def load(name: str) -> tuple[Encoder, float, float | None]:
        backend, precision, level = VARIANTS[name]
        started = time.monotonic()
        export_started: list[float] = []

        def progress(stage: str) -> None:
            export_started.append(time.monotonic())
            log(f"  {name}: {stage}")

        enc = Encoder(
            model,
            profile,
            device="cpu",
            precision=precision,
            backend=backend,
            onnx_optimization=level,
            export_dir=args.export_dir,
            export_progress=progress,
        )
        load_s = time.monotonic() - started
        export_s = (time.monotonic() - export_started[0]) if export_started else None
        enc.warmup()
        return enc, load_s, export_s

    log(f"model {model}; {len(questions)} questions x {args.rounds} rounds; variants {names}")
    # PyTorch fp32 stays loaded; every other variant is loaded in turn and timed question by
    # question alternately with it (the order flipping each question), so that both see the same
    # neighbours on a shared machine. Each variant's ratio is taken against the reference's times
    # from its own pass.
    reference, ref_load_s, _ = load("torch-fp32")
    pages = load_pages(args.corpus)
    docs = token_windows(pages, reference.tokenizer, args.doc_tokens)[: args.docs]
    ref_docs = reference.encode_documents(docs) if docs else None
    ref_queries = np.concatenate([reference.encode_queries([q]) for q in questions])
    wall: dict[str, list[float]] = {}
    cpu: dict[str, list[float]] = {}
    paired_ref: dict[str, list[float]] = {}
    paired_ref_cpu: dict[str, list[float]] = {}
    rows: list[dict[str, Any]] = []

    def timed(enc: Encoder, q: str) -> tuple[float, float, np.ndarray]:
        # An idle gap first, as between a service's questions: the thread pools of the runtime
        # that ran last (OpenMP, TBB) spin for a while after a run and would slow the next one.
        time.sleep(args.gap_ms / 1000)
        t0, c0 = time.perf_counter(), time.process_time()
        v = enc.encode_queries([q])
        return time.perf_counter() - t0, time.process_time() - c0, v[0]

    for name in names:
        enc = reference
        load_s: float | None = ref_load_s
        export_s: float | None = None
        if name != "torch-fp32":
            enc, load_s, export_s = load(name)
        wall[name], cpu[name], paired_ref[name], paired_ref_cpu[name] = [], [], [], []
        vectors: list[np.ndarray] = []
        for rnd in range(args.rounds):
            for i, q in enumerate(questions):
                if name == "torch-fp32":
                    w, c, v = timed(enc, q)
                    wall[name].append(w)
                    cpu[name].append(c)
                    paired_ref[name].append(w)
                    paired_ref_cpu[name].append(c)
                else:
                    first_ref = (i + rnd) % 2 == 0
                    if first_ref:
                        rw, rc, _ = timed(reference, q)
                    w, c, v = timed(enc, q)
                    if not first_ref:
                        rw, rc, _ = timed(reference, q)
                    wall[name].append(w)
                    cpu[name].append(c)
                    paired_ref[name].append(rw)
                    paired_ref_cpu[name].append(rc)
                if rnd == 0:
                    vectors.append(v)
        got_q = np.stack(vectors)
        row: dict[str, Any] = {"variant": name, "backend": VARIANTS[name][0], "precision": VARIANTS[name][1]}
        row["optimization"] = VARIANTS[name][2]
        p50 = statistics.median(wall[name])
        ref_p50 = statistics.median(paired_ref[name])
        row |= {
            "query_p50_ms": round(p50 * 1000, 1),
            "query_p95_ms": round(float(np.percentile(wall[name], 95)) * 1000, 1),
            "cpu_ms_p50": round(statistics.median(cpu[name]) * 1000, 1),
            "torch_fp32_p50_ms_same_pass": round(ref_p50 * 1000, 1),
            "ratio_p50": round(p50 / ref_p50, 3),
            "cpu_ratio_p50": round(statistics.median(cpu[name]) / statistics.median(paired_ref_cpu[name]), 3),
            "queries_cosine_min": round(float(_cosine(got_q, ref_queries).min()), 5),
            "queries_centred_cosine_min": round(float(centred_cosine(got_q, ref_queries).min()), 5),
            "queries_centred_cosine_mean": round(float(centred_cosine(got_q, ref_queries).mean()), 5),
            "load_s": round(load_s, 1) if load_s is not None else None,
            "export_s": None if export_s is None else round(export_s, 1),
        }
        if docs and ref_docs is not None:
            t0 = time.perf_counter()
            got_d = enc.encode_documents(docs)
            row["docs_tokens_per_s"] = round(sum(enc.count_tokens(docs)) / (time.perf_counter() - t0), 1)
            row["docs_centred_cosine_min"] = round(float(centred_cosine(got_d, ref_docs).min()), 5)
        rows.append(row)
        log(json.dumps(row))  # each variant's figures as soon as they are known
        log(
            f"{name}: query p50 {p50 * 1000:.0f} ms vs torch fp32 {ref_p50 * 1000:.0f} ms (ratio {row['ratio_p50']}), "
            f"centred cosine min {row['queries_centred_cosine_min']}"
        )
        if enc is not reference:
            del enc
            gc.collect()
    variants = rows
    emit(
        {
            "model": model,
            "profile": profile.name,
            "threads": torch.get_num_threads(),
            "queries": len(questions),
            "rounds": args.rounds,
            "docs": len(docs),
            "doc_tokens": args.doc_tokens,
            "variants": variants,
            "load_average": list(os.getloadavg()),
        }
    )


if __name__ == "__main__":
    main()
