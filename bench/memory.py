"""Peak memory of Saekin's processes with a model loaded (issue 5, benchmark 4).

Embed worker side: a fresh Python process imports torch and sentence-transformers, loads
`services.embedding.encoder.Encoder` with the model (default: the full-size bge-m3-ko twin
under ./.twins/), warms it up and embeds one token-budget's worth of 510-token Korean chunks,
as an embed worker does; its peak RSS is reported against the size of the model's weights.
Target: embed_worker_rss_mb <= model_weight_mb + 1024. The GPU worker loads no Kiwi.

    python bench/memory.py                          # {"embed_worker_rss_mb", "model_weight_mb", ...}
    python bench/memory.py --device cpu --precision int8 --texts 8

(The API-process side, "api_rss_mb", is measured by the API benchmark.)
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import REPO, current_rss_mb, emit, log, model_weight_mb, peak_rss_mb, resolve_model


def _worker_texts(tokenizer, n: int, max_tokens: int) -> list[str]:
    """n Korean chunks of max_tokens tokens, cut from the bundled twin corpus (no Kiwi needed)."""
    from bench._common import token_windows
    from services.embedding.twin import builtin_corpus

    text = " ".join(builtin_corpus())
    windows = list(token_windows([text], tokenizer, max_tokens))
    full = windows[:-1] or windows  # the last window is short
    return [full[i % len(full)] for i in range(n)]


def embed_worker_child(args: argparse.Namespace) -> dict:
    """Runs in the measured process: load the encoder, warm up, embed one full batch."""
    from config.profiles import get_profile
    from services.embedding.encoder import Encoder

    profile = get_profile(args.profile)
    baseline_mb = peak_rss_mb()
    enc = Encoder(
        args.model, profile, device=args.device, precision=args.precision, max_batch_tokens=args.max_batch_tokens
    )
    loaded_mb = peak_rss_mb()
    if not args.lazy_weights:
        # Weights are memory-mapped from safetensors and count in RSS only once touched; a twin's
        # small tokenizer touches ~4,000 of bge-m3's 250,002 embedding rows, a long-running worker
        # with the real tokenizer eventually most of them. Touch everything: the worst case.
        import torch

        with torch.inference_mode():
            for tensor in [*enc.model.parameters(), *enc.model.buffers()]:
                if tensor.is_floating_point():
                    tensor.sum(dtype=torch.float32).item()
    enc.warmup()
    chunk = min(profile.chunk_tokens, enc.max_seq_length - 2)
    n = args.texts or max(1, enc.max_batch_tokens // (chunk + 2))  # one full batch (the budget is capped on CPU)
    texts = _worker_texts(enc.tokenizer, n, chunk)
    vectors = enc.encode_documents(texts)
    assert vectors.shape == (n, enc.dim)
    out = {
        "device": enc.device,
        "precision": enc.precision,
        "texts": n,
        "effective_max_batch_tokens": enc.max_batch_tokens,
        "rss_after_imports_mb": baseline_mb,
        "rss_after_load_mb": loaded_mb,
        "embed_worker_rss_mb": peak_rss_mb(),
        "rss_at_end_mb": current_rss_mb(),
    }
    if enc.is_cuda:
        import torch

        out["cuda_max_allocated_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return out


def measure_embed_worker(
    model: str,
    profile: str,
    *,
    device: str | None = None,
    precision: str | None = None,
    max_batch_tokens: int = 16384,
    texts: int | None = None,
    lazy_weights: bool = False,
) -> dict:
    """Peak RSS of a fresh embed-worker process (run as a child so nothing else is counted)."""
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--child",
        "--model",
        model,
        "--profile",
        profile,
        "--max-batch-tokens",
        str(max_batch_tokens),
    ]
    if device:
        cmd += ["--device", device]
    if precision:
        cmd += ["--precision", precision]
    if texts:
        cmd += ["--texts", str(texts)]
    if lazy_weights:
        cmd += ["--lazy-weights"]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr)
        raise SystemExit(f"embed worker child failed with exit code {proc.returncode}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description="Peak RSS of an embed worker with the model loaded.")
    ap.add_argument("--profile", default="bge-m3-ko")
    ap.add_argument("--model", default=None, help="model directory or hub id (default: full-size twin under ./.twins/)")
    ap.add_argument("--device", default=None)
    ap.add_argument("--precision", default=None)
    ap.add_argument(
        "--max-batch-tokens", type=int, default=None, help="default: settings (SAEKIN_EMBED_MAX_BATCH_TOKENS)"
    )
    ap.add_argument("--texts", type=int, default=None, help="chunks to embed (default: one token budget's worth)")
    ap.add_argument(
        "--lazy-weights",
        action="store_true",
        help="do not touch every weight first (RSS then counts only the pages the texts touch)",
    )
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.max_batch_tokens is None:
        from config.settings import get_settings

        args.max_batch_tokens = get_settings().embed_max_batch_tokens

    if args.child:
        print(json.dumps(embed_worker_child(args)), flush=True)
        return

    model = resolve_model(args.profile, args.model)
    log(f"measuring an embed worker with {model}")
    worker = measure_embed_worker(
        model,
        args.profile,
        device=args.device,
        precision=args.precision,
        max_batch_tokens=args.max_batch_tokens,
        texts=args.texts,
        lazy_weights=args.lazy_weights,
    )
    weights = model_weight_mb(model)
    result = {
        "embed_worker_rss_mb": worker.pop("embed_worker_rss_mb"),
        "model_weight_mb": weights,
        "model": model,
        "max_batch_tokens": args.max_batch_tokens,
        "weights_touched": not args.lazy_weights,
        **worker,
    }
    if weights:
        result["embed_worker_over_weights_mb"] = round(result["embed_worker_rss_mb"] - weights, 1)
    emit(result)


if __name__ == "__main__":
    main()
