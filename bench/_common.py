"""Helpers shared by the benchmarks in bench/: paths, the AutoRAG corpus, Korean chunks, RSS.

Every benchmark prints one JSON object on stdout (progress goes to stderr), so runs can be
compared across machines and commits.
"""

from __future__ import annotations

import json
import resource
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # `python bench/x.py` as well as `python -m bench.x`
    sys.path.insert(0, str(REPO))

DEFAULT_CORPUS = REPO.parent / "shared" / "data" / "autorag-ko"
TWINS_DIR = REPO / ".twins"


def log(*parts: object) -> None:
    """Progress to stderr, stamped with seconds since start."""
    print(f"[{time.perf_counter() - _T0:7.1f}s]", *parts, file=sys.stderr, flush=True)


_T0 = time.perf_counter()


def emit(result: dict[str, Any]) -> None:
    """The benchmark's one JSON line on stdout."""
    print(json.dumps(result, ensure_ascii=False), flush=True)


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, in MiB (Linux reports KiB)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(peak / 1024 if sys.platform != "darwin" else peak / 1024 / 1024, 1)


def current_rss_mb() -> float | None:
    """Resident set size of this process now, in MiB (Linux), for comparison with the peak."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return None


def make_work_dir(prefix: str, parent: Path | None) -> Path:
    """A fresh directory for one run, under `parent` (created if missing) or the system temp dir."""
    if parent is not None:
        parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=prefix, dir=parent))


def embedded_settings(data_dir: Path, profile: str, model: str, **overrides: Any) -> Any:
    """Settings of the embedded default on `data_dir` with `model`: SQLite, Qdrant Edge, in-process
    ingestion, whatever the environment or an .env file says (no server URLs)."""
    from config.settings import Settings

    return Settings(
        _env_file=None,
        data_dir=data_dir,
        database_url=None,
        broker_url=None,
        qdrant_url=None,
        qdrant_path=None,
        embedding_profile=profile,
        embedding_model=model,
        **overrides,
    )


def resolve_model(profile_name: str, model: str | None, *, small: bool = False) -> str:
    """The model to benchmark: `model` if given, else a cached twin of the (embedding or reranker)
    profile under ./.twins/."""
    if model:
        return model
    from services.embedding.twin import ensure_twin, twin_profile

    log(f"using the {'small' if small else 'full-size'} {profile_name} twin under {TWINS_DIR} (built on first use)")
    return str(ensure_twin(twin_profile(profile_name), TWINS_DIR, small=small))


def model_weight_mb(model: str) -> float | None:
    """Size of the weight files of a local model directory, in MiB."""
    path = Path(model)
    if not path.is_dir():
        return None
    files = list(path.rglob("*.safetensors")) or list(path.rglob("pytorch_model*.bin"))
    return round(sum(f.stat().st_size for f in files) / 2**20, 1) if files else None


def load_pages(corpus_dir: Path) -> list[str]:
    """Page texts of the AutoRAG corpus (ocr_corpus_v3.parquet), read at run time from shared/."""
    import pyarrow.parquet as pq

    path = Path(corpus_dir) / "ocr_corpus_v3.parquet"
    if not path.exists():
        raise SystemExit(f"corpus not found: {path} (pass --corpus DIR)")
    return [t for t in pq.read_table(path, columns=["contents"]).column("contents").to_pylist() if t and t.strip()]


def token_windows(pages: Sequence[str], tokenizer: Any, max_tokens: int) -> list[str]:
    """Cut each page into consecutive windows of at most `max_tokens` tokens (by offsets)."""
    enc = tokenizer(
        list(pages),
        add_special_tokens=False,
        return_offsets_mapping=True,
        return_attention_mask=False,
        truncation=False,
        verbose=False,
    )
    out = []
    for text, offsets in zip(pages, enc["offset_mapping"]):
        for i in range(0, len(offsets), max_tokens):
            window = offsets[i : i + max_tokens]
            start = 0 if i == 0 else window[0][0]
            end = offsets[i + max_tokens][0] if i + max_tokens < len(offsets) else len(text)
            piece = text[start:end]
            if piece.strip():
                out.append(piece)
    return out


def korean_chunks(
    pages: Sequence[str], tokenizer: Any, *, max_tokens: int, overlap_tokens: int = 64
) -> tuple[list[str], str]:
    """Chunks as Saekin's ingestion makes them (normalize, Kiwi sentences, chunker).

    Falls back to plain token windows where Kiwi is not installed (a GPU machine lent for a
    benchmark may have torch and sentence-transformers but not the project's environment); the
    second value names the method used.
    """
    try:
        from services.ingest.analyzer import get_analyzer
        from services.ingest.chunker import chunk_sentences
        from services.ingest.normalize import normalize_text
    except ImportError as exc:
        log(f"Saekin's chunker cannot be imported ({exc}); using {max_tokens}-token windows")
        return token_windows(pages, tokenizer, max_tokens), "token-windows"
    texts = [normalize_text(p) for p in pages]
    sentences = get_analyzer().analyze_many(texts)
    chunks = [
        c.text
        for text, sents in zip(texts, sentences)
        for c in chunk_sentences(
            text, [(s.start, s.end) for s in sents], tokenizer, max_tokens=max_tokens, overlap_tokens=overlap_tokens
        )
    ]
    return chunks, "services.ingest.chunker"


def device_name(device: str) -> str:
    import torch

    if device.startswith("cuda"):
        return f"{device} ({torch.cuda.get_device_name(torch.device(device))})"
    cpu = "cpu"
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"cpu ({cpu}, {torch.get_num_threads()} threads)"


# bf16 dense tensor-core peaks in FLOP/s, by device-name fragment (first match wins).
BF16_PEAK_FLOPS: list[tuple[str, float]] = [
    ("H200", 989.4e12),
    ("H100 PCIe", 756.0e12),
    ("H100 NVL", 835.0e12),
    ("H100", 989.4e12),
    ("H800", 989.4e12),
    ("GH200", 989.4e12),
    ("A100", 312.0e12),
    ("A800", 312.0e12),
    ("L40S", 362.1e12),
    ("L4", 121.0e12),
    ("A10", 125.0e12),
    ("RTX 4090", 165.2e12),
]


def bf16_peak_flops(device: str) -> float | None:
    import torch

    if not device.startswith("cuda"):
        return None
    name = torch.cuda.get_device_name(torch.device(device))
    for fragment, peak in BF16_PEAK_FLOPS:
        if fragment in name:
            return peak
    return None
