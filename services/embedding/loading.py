"""Loading a model once: its tokenizer, the device and the precision set-up.

Shared by the embedding encoder (encoder.py) and the cross-encoder reranker (reranker.py):

- `load_tokenizer`: the model's fast tokenizer, also used without the model by ingest workers
  to count chunk tokens;
- `rust_tokenizer`: a private copy of a fast tokenizer's Rust backend for batch encoding;
- `Precision`: validates a device and precision pair and applies it to a model: half-precision
  weights (bf16 by default, or fp16) on CUDA; on CPU fp32 (default), bf16 autocast (only fast
  where the CPU has native bf16 instructions, `cpu_supports_bf16`) or int8 dynamic quantization
  of the nn.Linear layers.
"""

from __future__ import annotations

import json
import logging
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

log = logging.getLogger(__name__)

CPU_PRECISIONS = ("fp32", "bf16", "int8")
CUDA_PRECISIONS = ("fp32", "fp16", "bf16")


# --------------------------------------------------------------------------------------------
# Tokenizers
# --------------------------------------------------------------------------------------------


def _st_max_seq_length(model_name_or_path: str) -> int | None:
    """The max_seq_length a sentence-transformers model directory declares (current and older file names)."""
    path = Path(model_name_or_path)
    for name in ("sentence_bert_config.json", "sentence_xlm-roberta_config.json", "sentence_roberta_config.json"):
        try:
            value = json.loads((path / name).read_text(encoding="utf-8")).get("max_seq_length")
        except (OSError, ValueError):
            continue
        if value:
            return int(value)
    return None


@lru_cache(maxsize=8)
def load_tokenizer(model_name_or_path: str) -> PreTrainedTokenizerFast:
    """The model's fast tokenizer (offsets supported), loaded once per path and process.

    Its `model_max_length` is the sentence-transformers max_seq_length when the model directory
    declares one (what the model will truncate at), else the tokenizer's own. The instance is
    shared: call it from one thread at a time (a Hugging Face fast tokenizer whose truncation or
    padding settings change under a concurrent call raises "Already borrowed").
    """
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    tok = AutoTokenizer.from_pretrained(model_name_or_path, use_fast=True)
    if not isinstance(tok, PreTrainedTokenizerFast):
        raise TypeError(f"{model_name_or_path}: no fast tokenizer (tokenizer.json) available")
    st_max = _st_max_seq_length(model_name_or_path)
    if st_max:
        tok.model_max_length = st_max
    return tok


def rust_tokenizer(tokenizer: Any, *, max_length: int | None) -> Tokenizer:
    """A private copy of a fast tokenizer's Rust backend: no padding, truncation at `max_length`
    (None: none). Its `encode_batch` runs on Rust threads and shares no state with `tokenizer`."""
    from tokenizers import Tokenizer

    backend = Tokenizer.from_str(tokenizer.backend_tokenizer.to_str())
    backend.no_padding()
    if max_length is None:
        backend.no_truncation()
    else:
        backend.enable_truncation(max_length=max_length)
    return backend


# --------------------------------------------------------------------------------------------
# Device and precision
# --------------------------------------------------------------------------------------------


def default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


@lru_cache(maxsize=1)
def cpu_supports_bf16() -> bool:
    """Whether this CPU has native bf16 matrix instructions (x86 avx512_bf16/AMX, Arm bf16).

    Without them bf16 autocast is emulated and far slower than fp32 (measured on an AVX2-only
    EPYC: a 512x1024x4096 matmul at 0.3 GFLOP/s in bf16 against 56 GFLOP/s in fp32).
    """
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            text = fh.read()
    except OSError:  # no /proc: macOS, whose Apple-silicon CPUs have bf16
        import platform

        return platform.machine().lower() in ("arm64", "aarch64") and platform.system() == "Darwin"
    flags: set[str] = set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            flags.update(value.split())
    return bool(flags & {"avx512_bf16", "amx_bf16", "bf16"})


@dataclass(frozen=True)
class Precision:
    """A validated device and precision, and how to load and run a model in it."""

    device: str
    name: str  # fp32, fp16, bf16 or int8
    is_cuda: bool
    autocasts: bool = True  # False where another runtime runs the model (an exported encoder)

    @classmethod
    def resolve(cls, device: str | None, precision: str | None) -> Precision:
        """`device` (None: cuda when available) and `precision` (None: bf16 on CUDA, fp32 on CPU),
        or a ValueError naming the precisions the device offers."""
        import torch

        device = device or default_device()
        is_cuda = torch.device(device).type == "cuda"
        name = precision or ("bf16" if is_cuda else "fp32")
        allowed = CUDA_PRECISIONS if is_cuda else CPU_PRECISIONS
        if name not in allowed:
            raise ValueError(f"precision {name!r} is not available on {device}; choose one of {allowed}")
        if not is_cuda and name == "bf16" and not cpu_supports_bf16():
            log.warning("bf16 on a CPU without native bf16 instructions is emulated and much slower than fp32")
        return cls(device, name, is_cuda)

    def model_kwargs(self) -> dict[str, Any]:
        """transformers `from_pretrained` arguments: on CUDA, half-precision weights are loaded as
        such (half the host memory of loading fp32 and converting)."""
        import torch

        half = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.name)
        return {"dtype": half} if self.is_cuda and half is not None else {}

    def prepare(self, module: torch.nn.Module) -> torch.nn.Module:
        """`module` ready to run: with int8, its nn.Linear layers quantized in place (per-channel
        weight scales: closer to fp32 than per-tensor at the same speed; bge-m3 twin, 12 chunks:
        centred cosine to fp32 0.83 against 0.79)."""
        if self.name != "int8":
            return module
        import torch

        with warnings.catch_warnings():  # torch.ao.quantization deprecation notices (still works)
            warnings.simplefilter("ignore", UserWarning)
            warnings.simplefilter("ignore", DeprecationWarning)
            quantized: torch.nn.Module = torch.ao.quantization.quantize_dynamic(
                module,
                {torch.nn.Linear: torch.ao.quantization.per_channel_dynamic_qconfig},
                dtype=torch.qint8,
                inplace=True,
            )
        return quantized

    @contextmanager
    def autocast(self) -> Iterator[None]:
        """The context a forward pass runs in: bf16 autocast for bf16 on CPU, else nothing."""
        if self.name == "bf16" and not self.is_cuda and self.autocasts:
            import torch

            with torch.autocast("cpu", dtype=torch.bfloat16):
                yield
        else:
            yield


class OnDevice:
    """The `device`, `precision` name and `is_cuda` of a model loaded with a `Precision` (the
    encoder and the reranker), from the `_precision` its __init__ sets first."""

    _precision: Precision

    @property
    def device(self) -> str:
        return self._precision.device

    @property
    def precision(self) -> str:
        return self._precision.name

    @property
    def is_cuda(self) -> bool:
        return self._precision.is_cuda


# --------------------------------------------------------------------------------------------
# Is the configured model usable? (checked by `saekin serve` before it listens)
# --------------------------------------------------------------------------------------------

OFFLINE_HINT = (
    "set SAEKIN_EMBEDDING_MODEL to a local model directory (or a hub id this machine can download); "
    "without network, `make twin` builds a small test twin in .twins/bge-m3-ko-small to try the service with "
    "(SAEKIN_EMBEDDING_MODEL=.twins/bge-m3-ko-small)"
)


def _model_setting(settings: Any) -> str:
    if settings.embedding_model:
        return f"SAEKIN_EMBEDDING_MODEL={settings.embedding_model}"
    return f"SAEKIN_EMBEDDING_PROFILE={settings.embedding_profile} (hub id {settings.profile.hub_id})"


def model_load_error(settings: Any, exc: BaseException) -> str:
    """One line saying which setting named a model that could not be loaded, why, and what to do."""
    detail = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
    return f"the embedding model could not be loaded ({_model_setting(settings)}): {detail}; {OFFLINE_HINT}"


def check_embedding_model(settings: Any) -> None:
    """Raise ModelUnavailable unless the configured model's directory or hub files can be read:
    its config and tokenizer are loaded (seconds), the weights later by the warm-up."""
    from config.settings import looks_like_path
    from services.errors import ModelUnavailable

    name = settings.model_name_or_path
    path = Path(name).expanduser()
    if (path.exists() or looks_like_path(name)) and not (path / "config.json").is_file():
        what = "is not a model directory (no config.json)" if path.is_dir() else "does not exist"
        raise ModelUnavailable(
            f"the embedding model {_model_setting(settings)}: {path.resolve()} {what}; {OFFLINE_HINT}",
            code="model_unavailable",
        )
    try:
        from transformers import AutoConfig

        AutoConfig.from_pretrained(name)
        load_tokenizer(name)
    except Exception as exc:
        raise ModelUnavailable(model_load_error(settings, exc), code="model_unavailable") from exc
