"""Which model weights embed a collection: its hub id or local path, and the sha256 of its weights.

Two models of one profile (say bge-m3-ko and a fine-tune of it) have the same dimensions, so a
profile alone cannot tell their vectors apart; the weights' hash can. It costs nothing for a
model in the Hugging Face cache (an LFS file is stored under its own sha256) and one read of the
weights otherwise (about 2 s for bge-m3's 2.2 GB), once per process.
"""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

log = logging.getLogger(__name__)

_HEX64 = re.compile(r"[0-9a-f]{64}")
_WEIGHT_PATTERNS = ("model.safetensors", "model-*.safetensors", "pytorch_model.bin", "pytorch_model-*.bin")


@dataclass(frozen=True)
class ModelRef:
    """A model as a collection records it."""

    name: str  # the hub id, or the absolute path of a local directory
    sha256: str | None  # of the weights file (or of the shards' hashes); None when unknown


@dataclass(frozen=True)
class RecordedModel:
    """The model a collection records (what embedded its vectors), as the stages and searches ask for it."""

    collection: str
    profile: str
    model: str | None  # hub id or absolute local path; None for collections from before it was recorded
    sha256: str | None


def canonical_model(model: str) -> str:
    """A local directory as its absolute path (what collections record), a hub id as it is."""
    path = Path(model).expanduser()
    return str(path.resolve()) if path.is_dir() else model


def model_ref(name_or_path: str) -> ModelRef:
    """The identity of the model `name_or_path` (a local directory or a hub id in the local cache)."""
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        directory: Path | None = path.resolve()
        name = str(directory)
    else:
        name = name_or_path
        directory = _hub_snapshot(name_or_path)
    if directory is None:
        return ModelRef(name, None)
    # A sentence-transformers directory keeps the transformer's weights at its root, or in a
    # subfolder named by modules.json (0_Transformer, ...) for older layouts.
    files: list[Path] = []
    for folder in (directory, *sorted(p for p in directory.iterdir() if p.is_dir() and p.name[0].isdigit())):
        for pattern in _WEIGHT_PATTERNS:
            files += sorted(folder.glob(pattern))
        if files:
            break
    if not files:
        return ModelRef(name, None)
    digests = [_file_sha256(str(f)) for f in files]
    sha = digests[0] if len(digests) == 1 else hashlib.sha256("\n".join(digests).encode()).hexdigest()
    return ModelRef(name, sha)


def _hub_snapshot(repo_id: str) -> Path | None:
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(repo_id, local_files_only=True))
    except Exception:  # not in the cache (offline), or not a hub id
        return None


@lru_cache(maxsize=32)
def _file_sha256(path: str) -> str:
    target = Path(path).resolve()
    if target != Path(path) and _HEX64.fullmatch(target.name):
        return target.name  # a Hugging Face cache blob is named by its content's sha256
    digest = hashlib.sha256()
    with open(target, "rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()
