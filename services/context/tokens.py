"""Token counters for context budgets: an LLM's tiktoken encoding, or the embedding model's tokenizer.

tiktoken downloads an encoding's file (o200k_base, cl100k_base) the first time it is used, which
fails on an offline server. Saekin never lets it try: an encoding is loaded only from a file
already on disk, looked for in order in

1. ``SAEKIN_TIKTOKEN_DIR`` under its plain name (``o200k_base.tiktoken``, as published at
   ``https://openaipublic.blob.core.windows.net/encodings/o200k_base.tiktoken``) or under the
   name tiktoken's own cache gives it (the sha1 of that address);
2. tiktoken's cache (``TIKTOKEN_CACHE_DIR``, else ``DATA_GYM_CACHE_DIR``, else
   ``<tmp>/data-gym-cache``), where a machine that once had network left it.

When neither has it, counting falls back to the embedding model's tokenizer and the answer says
so in its note (`resolve_counter`).
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import tempfile
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

log = logging.getLogger(__name__)

TokenizerName = Literal["o200k_base", "cl100k_base", "embedding"]
TIKTOKEN_ENCODINGS = ("o200k_base", "cl100k_base")
_BLOB_URL = "https://openaipublic.blob.core.windows.net/encodings/{name}.tiktoken"


class TiktokenCounter:
    """Tokens of an OpenAI encoding (special tokens counted as plain text)."""

    def __init__(self, name: str, encoding: Any) -> None:
        self.name = name
        self._encoding = encoding

    def count(self, text: str) -> int:
        return len(self._encoding.encode_ordinary(text))

    def count_many(self, texts: Sequence[str]) -> list[int]:
        return [len(ids) for ids in self._encoding.encode_ordinary_batch(list(texts), num_threads=1)]


class HFCounter:
    """Tokens of a Hugging Face fast tokenizer, without special tokens (what the text itself costs).

    Counts on a copy of the Rust tokenizer, so that the instance the ingest stage shares (whose
    truncation settings the chunker resets) is never touched from request threads.
    """

    name = "embedding"

    def __init__(self, tokenizer: Any, label: str | None = None) -> None:
        from tokenizers import Tokenizer

        self._backend = Tokenizer.from_str(tokenizer.backend_tokenizer.to_str())
        self._backend.no_truncation()
        self._backend.no_padding()
        self.label = label

    def count(self, text: str) -> int:
        # encode_batch_fast tracks no offsets: about twice as fast as encode() for counting.
        return len(self._backend.encode_batch_fast([text], add_special_tokens=False)[0].ids)

    def count_many(self, texts: Sequence[str]) -> list[int]:
        return [len(e.ids) for e in self._backend.encode_batch_fast(list(texts), add_special_tokens=False)]


@dataclass(frozen=True)
class Resolved:
    counter: TiktokenCounter | HFCounter
    tokenizer: TokenizerName  # the one actually used
    note: str | None  # why another than the one asked for was used


def cache_key(name: str) -> str:
    """The file name tiktoken's own cache gives an encoding's file."""
    return hashlib.sha1(_BLOB_URL.format(name=name).encode()).hexdigest()


def tiktoken_cache_dir() -> Path:
    """Where tiktoken itself caches encoding files (its own rule)."""
    if "TIKTOKEN_CACHE_DIR" in os.environ:
        return Path(os.environ["TIKTOKEN_CACHE_DIR"])
    if "DATA_GYM_CACHE_DIR" in os.environ:
        return Path(os.environ["DATA_GYM_CACHE_DIR"])
    return Path(tempfile.gettempdir()) / "data-gym-cache"


def encoding_file(name: str, directory: Path | None) -> Path | None:
    """The first local file holding encoding `name`, or None."""
    candidates = []
    if directory is not None:
        candidates += [directory / f"{name}.tiktoken", directory / cache_key(name)]
    cache = tiktoken_cache_dir()
    if cache:
        candidates.append(cache / cache_key(name))
    return next((p for p in candidates if p.is_file()), None)


def _load_ranks(path: Path) -> dict[bytes, int]:
    """A .tiktoken file: one `base64(token) rank` per line (tiktoken's own format)."""
    ranks: dict[bytes, int] = {}
    for line in path.read_bytes().splitlines():
        if line:
            token, rank = line.split()
            ranks[base64.b64decode(token)] = int(rank)
    return ranks


_lock = threading.Lock()


@lru_cache(maxsize=8)
def _tiktoken_counter(name: str, path: str) -> TiktokenCounter:
    import tiktoken
    from tiktoken_ext import openai_public

    # The encoding's split pattern and special tokens as tiktoken defines them, with the ranks read
    # from the local file (tiktoken's constructor would fetch the file from the network).
    with _lock:
        original = openai_public.load_tiktoken_bpe
        try:
            openai_public.load_tiktoken_bpe = lambda *a, **k: _load_ranks(Path(path))
            spec = getattr(openai_public, name)()
        finally:
            openai_public.load_tiktoken_bpe = original
    return TiktokenCounter(name, tiktoken.Encoding(**spec))


def tiktoken_counter(name: str, directory: Path | None) -> TiktokenCounter | None:
    """A counter for encoding `name` from a local file, or None when no file is found."""
    path = encoding_file(name, directory)
    if path is None:
        return None
    return _tiktoken_counter(name, str(path))


def resolve_counter(name: TokenizerName, *, directory: Path | None, embedding: HFCounter) -> Resolved:
    """The counter for `name`; the embedding model's, with a note, when the encoding's file is missing."""
    if name == "embedding":
        return Resolved(embedding, "embedding", None)
    try:
        counter = tiktoken_counter(name, directory)
    except Exception as exc:  # a damaged file: say so, count anyway
        log.warning("could not load the tiktoken encoding %s: %r", name, exc)
        counter = None
        reason = f"the {name} encoding file could not be read ({exc})"
    else:
        reason = f"the {name} encoding file is not available offline"
    if counter is not None:
        return Resolved(counter, name, None)
    where = f"{directory}/{name}.tiktoken" if directory is not None else f"SAEKIN_TIKTOKEN_DIR/{name}.tiktoken"
    note = (
        f"{reason}: tokens were counted with the embedding model's tokenizer"
        f"{f' ({embedding.label})' if embedding.label else ''}, which can differ from the LLM's count. "
        f"To count in {name}, put {_BLOB_URL.format(name=name)} at {where}."
    )
    return Resolved(embedding, "embedding", note)
