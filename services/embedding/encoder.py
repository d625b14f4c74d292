"""The embedding engine: one model per process, batches packed by a padded-token budget.

`Encoder` loads the model through the real path (`SentenceTransformer(name_or_path)`) once,
then runs its own forward pass, equal to `SentenceTransformer.encode` within float tolerance:

- texts are tokenized once, sorted by token length and packed into batches whose padded size
  (batch size x longest text) stays within `max_batch_tokens` (`plan_batches`, a pure function;
  capped at CPU_MAX_BATCH_TOKENS on CPU, where bigger batches only cost memory traffic); on CPU,
  short texts go padding-free, concatenated into one sequence with a block-diagonal mask;
- a background thread tokenizes and pads the next batches while the model works on the current
  one (for calls with more than a handful of texts);
- the transformer runs under `torch.inference_mode` with PyTorch's scaled-dot-product attention
  where the architecture has it (DeBERTa-v2 has not), and a batch without padding is passed
  without an attention mask (the fast kernels then apply);
- precision: bf16 (default) or fp16 weights on CUDA; on CPU fp32 (default), bf16 autocast, or
  int8 dynamic quantization of the nn.Linear layers;
- pooling and normalization are the loaded model's own modules (Pooling, Normalize, ...), so
  the vectors match the plain path; a mismatch with the profile is logged.

`QueryEncoder` is the API process's micro-batching front: questions that wait while the model
works share the next forward pass (short ones packed without padding), and each caller gets its
own vector.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from contextlib import nullcontext
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from config.profiles import ModelProfile

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from transformers import PreTrainedTokenizerFast

log = logging.getLogger(__name__)

PRECISIONS = ("fp32", "fp16", "bf16", "int8")
CPU_PRECISIONS = ("fp32", "bf16", "int8")
CUDA_PRECISIONS = ("fp32", "fp16", "bf16")

# Calls with at most this many texts run inline (no tokenizer thread): queries, tiny documents.
_INLINE_MAX_TEXTS = 64
# Texts tokenized per window: sorting and packing happen within a window, and the next window is
# tokenized while the model works through the current one.
_WINDOW_TEXTS = 4096
_PREFETCH_BATCHES = 3
# On CPU a forward pass of one or a few 512-token texts already keeps every core busy; bigger
# batches only add memory traffic (measured on the bge-m3 twin, 2-core EPYC: int8 ran at
# ~270-330 tokens/s on 1 x 512-token batches against ~160-190 on 16 x 512). The GPU budget
# (SAEKIN_EMBED_MAX_BATCH_TOKENS, default 16,384) is therefore capped to this on CPU.
CPU_MAX_BATCH_TOKENS = 2048
# ...for real-sized models only: tiny ones (the hidden-64 test twins) are dominated by per-batch
# overhead and keep the full budget.
CPU_CAP_MIN_HIDDEN = 256
# A CPU computes every padded position, so a padded batch takes a text only if it is at least
# this fraction of the batch's longest (before packing, 8 distinct AutoRAG questions in one
# padded batch cost the bge-m3 twin, int8, 2-core EPYC 1.3 x their one-at-a-time time; 8 of
# equal length 0.5 x). A GPU runs short batches below its capacity anyway and keeps one batch.
CPU_MIN_FILL = 0.75
# Padding-free batches: short texts (questions) of different lengths are concatenated into one
# sequence with a block-diagonal attention mask and per-text position ids, so a CPU computes no
# padding at all (bge-m3 twin, fp32, 2-core EPYC: 8 questions without padding cost 181 ms each
# against 489 ms alone; a padded batch of 8 AutoRAG questions of different lengths 423 ms each
# against 573 ms). Attention over the packed sequence grows with its square, so only texts up to
# this many tokens are packed.
PACK_MAX_TOKENS = 128
# ...and a packed sequence holds at most this many tokens (attention over it then costs under a
# tenth of the linear layers' work for a 1024-wide model).
PACK_GROUP_TOKENS = 512
# Architectures whose position ids can be given per packed text: model_type -> whether positions
# start after the padding index (RoBERTa family) or at 0 (BERT).
_PACKABLE_MODEL_TYPES = {"xlm-roberta": True, "roberta": True, "bert": False}


# --------------------------------------------------------------------------------------------
# Tokenizer (CPU ingest workers count chunk tokens with it without loading the model)
# --------------------------------------------------------------------------------------------


def _st_max_seq_length(model_name_or_path: str) -> int | None:
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
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_name_or_path, use_fast=True)
    if not getattr(tok, "is_fast", False):
        raise TypeError(f"{model_name_or_path}: no fast tokenizer (tokenizer.json) available")
    st_max = _st_max_seq_length(model_name_or_path)
    if st_max:
        tok.model_max_length = st_max
    return tok


# --------------------------------------------------------------------------------------------
# Batch planning (pure)
# --------------------------------------------------------------------------------------------


def plan_batches(
    lengths: Sequence[int], max_batch_tokens: int, *, max_batch_size: int | None = None, min_fill: float = 0.0
) -> list[list[int]]:
    """Pack text indices into batches by padded-token budget.

    Indices are taken longest first (so similar lengths share a batch and the largest batch
    comes first); a batch grows while `len(batch) * max(lengths in batch)` stays within
    `max_batch_tokens` (and `len(batch) <= max_batch_size` when given), and while the next text
    is at least `min_fill` x the batch's longest (each row at most 1 - min_fill padding). A text
    longer than the budget gets a batch of its own. Every index appears in exactly one batch.
    """
    if max_batch_tokens < 1:
        raise ValueError("max_batch_tokens must be positive")
    if max_batch_size is not None and max_batch_size < 1:
        raise ValueError("max_batch_size must be positive")
    if not 0.0 <= min_fill <= 1.0:
        raise ValueError("min_fill must be between 0 and 1")
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    batches: list[list[int]] = []
    current: list[int] = []
    longest = 0
    for i in order:
        n = max(int(lengths[i]), 1)
        if current:
            fits = (len(current) + 1) * max(longest, n) <= max_batch_tokens and n >= min_fill * longest
            if fits and (max_batch_size is None or len(current) < max_batch_size):
                current.append(i)
                longest = max(longest, n)
                continue
            batches.append(current)
        current, longest = [i], n
    if current:
        batches.append(current)
    return batches


# --------------------------------------------------------------------------------------------
# Encoder
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
    except OSError:
        import platform

        return platform.machine().lower() in ("arm64", "aarch64") and platform.system() == "Darwin"
    flags: set[str] = set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            flags.update(value.split())
    return bool(flags & {"avx512_bf16", "amx_bf16", "bf16"})


def _supports_sdpa(model_name_or_path: str) -> bool:
    """Whether the checkpoint's transformers class implements scaled-dot-product attention."""
    try:
        from transformers import AutoConfig
        from transformers.models.auto.modeling_auto import MODEL_MAPPING

        config = AutoConfig.from_pretrained(model_name_or_path)
        return bool(getattr(MODEL_MAPPING[type(config)], "_supports_sdpa", False))
    except Exception:  # unknown architecture: let transformers choose
        return False


def _unpack(hidden: torch.Tensor, ids: torch.Tensor, lengths: list[int], pad_token_id: int) -> dict[str, Any]:
    """A packed sequence's outputs as padded rows, the features the model's pooling modules take."""
    import torch

    n, width = len(lengths), max(lengths)
    rows = torch.repeat_interleave(torch.arange(n), torch.tensor(lengths))
    cols = torch.cat([torch.arange(k) for k in lengths])
    token_embeddings = hidden.new_zeros((n, width, hidden.shape[-1]))
    token_embeddings[rows, cols] = hidden
    input_ids = ids.new_full((n, width), pad_token_id)
    input_ids[rows, cols] = ids
    attention_mask = torch.zeros((n, width), dtype=torch.int64)
    attention_mask[rows, cols] = 1
    return {"input_ids": input_ids, "attention_mask": attention_mask, "token_embeddings": token_embeddings}


class _Batch:
    """Model inputs for some texts: padded rows, or (``lengths`` set) all texts packed into one row."""

    __slots__ = ("attention_mask", "indices", "input_ids", "lengths", "padded", "position_ids", "tokens")

    def __init__(
        self,
        indices: np.ndarray,
        input_ids: Any,
        attention_mask: Any,
        padded: bool,
        tokens: int,
        lengths: list[int] | None = None,
        position_ids: Any = None,
    ):
        self.indices = indices
        self.input_ids = input_ids
        self.attention_mask = attention_mask  # packed: (1, 1, T, T) bool, True where a token may attend
        self.padded = padded
        self.tokens = tokens
        self.lengths = lengths
        self.position_ids = position_ids


class Encoder:
    """A sentence-transformers model loaded once, with a fast token-budgeted forward pass."""

    def __init__(
        self,
        model_name_or_path: str,
        profile: ModelProfile,
        *,
        device: str | None = None,
        precision: str | None = None,
        max_batch_tokens: int = 16384,
        cpu_max_batch_tokens: int | None = CPU_MAX_BATCH_TOKENS,
    ) -> None:
        import torch
        from sentence_transformers import SentenceTransformer

        self.model_name_or_path = str(model_name_or_path)
        self.profile = profile
        self.device = device or default_device()
        self.is_cuda = torch.device(self.device).type == "cuda"
        self.precision = precision or ("bf16" if self.is_cuda else "fp32")
        allowed = CUDA_PRECISIONS if self.is_cuda else CPU_PRECISIONS
        if self.precision not in allowed:
            raise ValueError(f"precision {self.precision!r} is not available on {self.device}; choose one of {allowed}")
        if max_batch_tokens < 1:
            raise ValueError("max_batch_tokens must be positive")
        self.max_batch_tokens = int(max_batch_tokens)

        model_kwargs: dict[str, Any] = {}
        if _supports_sdpa(self.model_name_or_path):
            model_kwargs["attn_implementation"] = "sdpa"
        self._half_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.precision)
        if self.is_cuda and self._half_dtype is not None:
            model_kwargs["dtype"] = self._half_dtype  # load straight into half precision: half the host RAM
        self.model = SentenceTransformer(
            self.model_name_or_path, device=self.device, trust_remote_code=False, model_kwargs=model_kwargs
        )
        self.model.eval()

        first = self.model[0]
        if not hasattr(first, "auto_model"):
            raise TypeError(
                f"{model_name_or_path}: the first module is not a transformers model ({type(first).__name__})"
            )
        self._transformer = first.auto_model
        hidden = int(getattr(self._transformer.config, "hidden_size", 0) or 0)
        if not self.is_cuda and cpu_max_batch_tokens and hidden >= CPU_CAP_MIN_HIDDEN:
            self.max_batch_tokens = min(self.max_batch_tokens, int(cpu_max_batch_tokens))
        self._post_modules = [m for i, m in enumerate(self.model) if i > 0]
        self._check_profile()

        self.tokenizer = first.tokenizer
        self.max_seq_length = int(self.model.max_seq_length or self.tokenizer.model_max_length)
        self.pad_token_id = int(self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0)
        self._backend = self._make_backend(self.max_seq_length)
        self._backend_untruncated = None
        self.attn_implementation = getattr(self._transformer.config, "_attn_implementation", None)
        # Padding-free batches need SDPA (it takes the block-diagonal mask as given) and position
        # ids the model accepts per text. Only on CPU: a GPU computes padding in parallel, and the
        # packed path is not measured there.
        model_type = getattr(self._transformer.config, "model_type", None)
        self.pack_position_offset: int | None = None
        if not self.is_cuda and self.attn_implementation == "sdpa" and model_type in _PACKABLE_MODEL_TYPES:
            padding_idx = getattr(getattr(self._transformer, "embeddings", None), "padding_idx", None)
            if not _PACKABLE_MODEL_TYPES[model_type]:
                self.pack_position_offset = 0
            elif padding_idx is not None:
                self.pack_position_offset = int(padding_idx) + 1

        if self.precision == "int8":
            with warnings.catch_warnings():  # torch.ao.quantization deprecation notices (still works)
                warnings.simplefilter("ignore", UserWarning)
                warnings.simplefilter("ignore", DeprecationWarning)
                # Per-channel weight scales: closer to fp32 than per-tensor at the same speed
                # (bge-m3 twin, 12 chunks: centred cosine to fp32 0.83 against 0.79).
                self._transformer = torch.ao.quantization.quantize_dynamic(
                    self._transformer,
                    {torch.nn.Linear: torch.ao.quantization.per_channel_dynamic_qconfig},
                    dtype=torch.qint8,
                    inplace=True,
                )
        elif self.is_cuda and self._half_dtype is not None:
            self._transformer.to(self._half_dtype)
        self._autocast = (not self.is_cuda) and self.precision == "bf16"
        if self._autocast and not cpu_supports_bf16():
            log.warning("bf16 on a CPU without native bf16 instructions is emulated and much slower than fp32")

        dim = None
        for getter in ("get_embedding_dimension", "get_sentence_embedding_dimension"):
            fn = getattr(self.model, getter, None)
            if fn is not None:
                try:
                    dim = fn()
                except Exception:  # pragma: no cover - defensive across ST versions
                    dim = None
            if dim:
                break
        self.dim = int(dim or self._transformer.config.hidden_size)
        self._lock = threading.Lock()
        log.info(
            "encoder %s on %s (%s, attention=%s, dim=%d, max_seq_length=%d)",
            self.model_name_or_path,
            self.device,
            self.precision,
            self.attn_implementation,
            self.dim,
            self.max_seq_length,
        )

    # -- setup helpers -------------------------------------------------------------------------

    def _check_profile(self) -> None:
        pooling = None
        normalized = False
        for m in self._post_modules:
            name = type(m).__name__
            if name == "Pooling":
                mode = getattr(m, "pooling_mode", None)
                pooling = mode if isinstance(mode, str) else None
                if pooling is None:
                    if getattr(m, "pooling_mode_cls_token", False):
                        pooling = "cls"
                    elif getattr(m, "pooling_mode_mean_tokens", False):
                        pooling = "mean"
            elif name == "Normalize":
                normalized = True
        if pooling != self.profile.pooling or normalized != self.profile.normalize:
            log.warning(
                "%s: model pools %s (normalize=%s) but profile %s says %s (normalize=%s); using the model's modules",
                self.model_name_or_path,
                pooling,
                normalized,
                self.profile.name,
                self.profile.pooling,
                self.profile.normalize,
            )

    def _make_backend(self, max_length: int):
        from tokenizers import Tokenizer

        backend = Tokenizer.from_str(self.tokenizer.backend_tokenizer.to_str())
        backend.no_padding()
        backend.enable_truncation(max_length=max_length)
        return backend

    # -- public API -------------------------------------------------------------------------------

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        """Token counts (special tokens included, before truncation) of `texts`."""
        if self._backend_untruncated is None:
            from tokenizers import Tokenizer

            backend = Tokenizer.from_str(self._backend.to_str())
            backend.no_truncation()
            self._backend_untruncated = backend
        return [len(e.ids) for e in self._backend_untruncated.encode_batch(list(texts))]

    def encode_documents(self, texts: Sequence[str], *, progress: Callable[[int], None] | None = None) -> np.ndarray:
        """float32 (len(texts), dim) embeddings in input order. `progress(n)` is called with the
        number of texts finished after each batch. Texts over max_seq_length are truncated (the
        chunker guarantees that never happens for documents; it is logged)."""
        return self._encode(texts, progress=progress, warn_truncation=True)

    def encode_queries(self, texts: Sequence[str]) -> np.ndarray:
        """float32 (len(texts), dim) query embeddings; queries are truncated at max_seq_length."""
        return self._encode(texts, progress=None, warn_truncation=False)

    def warmup(self) -> None:
        """Run a few forward passes so the first real request pays no start-up cost."""
        self.encode_queries(["워밍업 질의입니다."])
        self.encode_queries(["질문 하나", "조금 더 긴 두 번째 질문입니다", "세 번째"])
        filler = "이 문장은 모델을 미리 데워 두기 위한 문서입니다. "
        self._encode([filler * 4, filler * 12], progress=None, warn_truncation=False)

    # -- the engine -----------------------------------------------------------------------------

    def _tokenize(self, texts: Sequence[str]) -> list[list[int]]:
        encodings = self._backend.encode_batch(list(texts), add_special_tokens=True)
        return [e.ids for e in encodings]

    def _build_batch(self, ids: list[list[int]], indices: list[int], offset: int) -> _Batch:
        import torch

        lens = [len(ids[i]) for i in indices]
        width = max(lens)
        input_ids = np.full((len(indices), width), self.pad_token_id, dtype=np.int64)
        mask = np.zeros((len(indices), width), dtype=np.int64)
        for row, (i, n) in enumerate(zip(indices, lens)):
            input_ids[row, :n] = ids[i]
            mask[row, :n] = 1
        t_ids, t_mask = torch.from_numpy(input_ids), torch.from_numpy(mask)
        if self.is_cuda:
            t_ids, t_mask = t_ids.pin_memory(), t_mask.pin_memory()
        return _Batch(
            np.asarray(indices, dtype=np.int64) + offset, t_ids, t_mask, padded=min(lens) != width, tokens=sum(lens)
        )

    def _build_packed(self, ids: list[list[int]], indices: list[int], offset: int) -> _Batch:
        import torch

        lens = [len(ids[i]) for i in indices]
        flat = np.fromiter((t for i in indices for t in ids[i]), dtype=np.int64, count=sum(lens))
        text_of_token = np.repeat(np.arange(len(lens)), lens)
        positions = np.concatenate([np.arange(n, dtype=np.int64) for n in lens]) + self.pack_position_offset
        same_text = text_of_token[:, None] == text_of_token[None, :]
        return _Batch(
            np.asarray(indices, dtype=np.int64) + offset,
            torch.from_numpy(flat)[None],
            torch.from_numpy(same_text)[None, None],
            padded=False,
            tokens=len(flat),
            lengths=lens,
            position_ids=torch.from_numpy(positions)[None],
        )

    def _plan(self, lengths: list[int]) -> list[tuple[bool, list[int]]]:
        """(packed?, text indices) of each batch: short texts packed where the model allows it,
        the rest padded, by the token budget."""
        can_pack = self.pack_position_offset is not None
        packable: list[int] = []
        rest: list[int] = []
        for i, n in enumerate(lengths):
            (packable if can_pack and n <= PACK_MAX_TOKENS else rest).append(i)
        plan: list[tuple[bool, list[int]]] = []
        group_tokens = min(PACK_GROUP_TOKENS, self.max_batch_tokens)
        group: list[int] = []
        total = 0
        for i in packable:
            if group and total + lengths[i] > group_tokens:
                plan.append((True, group))
                group, total = [], 0
            group.append(i)
            total += lengths[i]
        if group:
            plan.append((True, group))
        min_fill = 0.0 if self.is_cuda else CPU_MIN_FILL
        plan += [
            (False, [rest[j] for j in batch])
            for batch in plan_batches([lengths[i] for i in rest], self.max_batch_tokens, min_fill=min_fill)
        ]
        return plan

    def _batches(self, texts: Sequence[str], warn_truncation: bool) -> Iterator[_Batch]:
        """Tokenize window by window, sort, pack and pad: the producer side of the engine."""
        for offset in range(0, len(texts), _WINDOW_TEXTS):
            window = texts[offset : offset + _WINDOW_TEXTS]
            ids = self._tokenize(window)
            lengths = [len(x) for x in ids]
            if warn_truncation:
                at_max = sum(1 for n in lengths if n >= self.max_seq_length)
                if at_max:
                    full = self.count_tokens([window[i] for i, n in enumerate(lengths) if n >= self.max_seq_length])
                    over = sum(1 for n in full if n > self.max_seq_length)
                    if over:
                        log.warning(
                            "%d text(s) longer than max_seq_length=%d were truncated", over, self.max_seq_length
                        )
            for packed, batch in self._plan(lengths):
                yield self._build_packed(ids, batch, offset) if packed else self._build_batch(ids, batch, offset)

    def _forward(self, batch: _Batch) -> torch.Tensor:
        import torch

        ids = batch.input_ids.to(self.device, non_blocking=True)
        mask = batch.attention_mask.to(self.device, non_blocking=True)
        autocast = torch.autocast("cpu", dtype=torch.bfloat16) if self._autocast else nullcontext()
        with torch.inference_mode(), autocast:
            if batch.lengths is not None:
                # One text needs no mask (SDPA's fastest kernel); several need the block-diagonal one.
                out = self._transformer(
                    input_ids=ids,
                    attention_mask=mask if len(batch.lengths) > 1 else None,
                    position_ids=batch.position_ids,
                    return_dict=True,
                )
                features = _unpack(out.last_hidden_state[0], ids[0], batch.lengths, self.pad_token_id)
            else:
                # Without padding the mask changes nothing: leaving it out lets SDPA pick its fastest kernel.
                out = self._transformer(input_ids=ids, attention_mask=mask if batch.padded else None, return_dict=True)
                features = {"input_ids": ids, "attention_mask": mask, "token_embeddings": out.last_hidden_state}
            for module in self._post_modules:
                features = module(features)
            return features["sentence_embedding"].float()

    def _forward_safe(self, batch: _Batch) -> torch.Tensor:
        """Forward, splitting the batch in halves when the GPU runs out of memory."""
        import torch

        try:
            return self._forward(batch)
        except torch.cuda.OutOfMemoryError:
            if len(batch.indices) == 1:
                raise
            torch.cuda.empty_cache()
            half = len(batch.indices) // 2
            log.warning(
                "CUDA out of memory on a batch of %d x %d tokens; splitting it (lower max_batch_tokens)",
                len(batch.indices),
                batch.input_ids.shape[1],
            )
            parts = []
            for sl in (slice(0, half), slice(half, None)):
                ids, mask = batch.input_ids[sl], batch.attention_mask[sl]
                lens = mask.sum(dim=1)
                width = int(lens.max())
                parts.append(
                    self._forward_safe(
                        _Batch(
                            batch.indices[sl],
                            ids[:, :width],
                            mask[:, :width],
                            padded=bool((lens != width).any()),
                            tokens=int(lens.sum()),
                        )
                    )
                )
            return torch.cat(parts)

    def _encode(
        self, texts: Sequence[str], *, progress: Callable[[int], None] | None, warn_truncation: bool
    ) -> np.ndarray:

        if isinstance(texts, str):
            raise TypeError("pass a sequence of texts, not a single string")
        texts = list(texts)
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        if not texts:
            return out
        if len(texts) <= _INLINE_MAX_TEXTS:
            batches: Iterator[_Batch] = self._batches(texts, warn_truncation)
            stop = None
        else:
            batches, stop = self._prefetch(self._batches(texts, warn_truncation))
        pending: list[tuple[np.ndarray, torch.Tensor]] = []
        try:
            for batch in batches:
                # One forward pass at a time per model; the lock is taken per batch, so a query
                # waits for at most one document batch, not for a whole document job.
                with self._lock:
                    vecs = self._forward_safe(batch)
                if self.is_cuda:
                    # Keep results on the GPU while the next batch is launched; copy in bulk.
                    pending.append((batch.indices, vecs))
                    if len(pending) >= 8:
                        self._drain(pending, out)
                else:
                    out[batch.indices] = vecs.numpy()
                if progress is not None:
                    progress(len(batch.indices))
            self._drain(pending, out)
        finally:
            if stop is not None:
                stop.set()
        return out

    @staticmethod
    def _drain(pending: list, out: np.ndarray) -> None:
        for indices, vecs in pending:
            out[indices] = vecs.cpu().numpy()
        pending.clear()

    @staticmethod
    def _prefetch(source: Iterator[_Batch]) -> tuple[Iterator[_Batch], threading.Event]:
        """Run `source` in a background thread, a few batches ahead of the consumer."""
        q: queue.Queue = queue.Queue(maxsize=_PREFETCH_BATCHES)
        stop = threading.Event()
        done = object()

        def produce() -> None:
            try:
                for item in source:
                    while not stop.is_set():
                        try:
                            q.put(item, timeout=0.1)
                            break
                        except queue.Full:
                            continue
                    if stop.is_set():
                        return
                item = done
            except BaseException as exc:  # handed to the consumer
                item = exc
            while not stop.is_set():
                try:
                    q.put(item, timeout=0.1)
                    return
                except queue.Full:
                    continue

        thread = threading.Thread(target=produce, name="saekin-tokenize", daemon=True)
        thread.start()

        def consume() -> Iterator[_Batch]:
            while True:
                item = q.get()
                if item is done:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item

        return consume(), stop


# --------------------------------------------------------------------------------------------
# Query micro-batching
# --------------------------------------------------------------------------------------------

_STOP = object()


class QueryEncoder:
    """Thread-safe query encoding for the API process with micro-batching.

    A worker thread takes every waiting question (at most `max_batch`; with `max_wait_ms` > 0 it
    first waits that long for more), encodes them in one forward pass and hands each caller its
    own vector. Questions that arrive while a forward pass runs are batched into the next one, so
    under load batches form without any wait, and an idle service answers at once.
    """

    def __init__(self, encoder: Encoder, *, max_wait_ms: float = 0.0, max_batch: int = 32) -> None:
        if max_wait_ms < 0 or max_batch < 1:
            raise ValueError("max_wait_ms must be >= 0 and max_batch >= 1")
        self.encoder = encoder
        self.max_wait_s = max_wait_ms / 1000.0
        self.max_batch = int(max_batch)
        self._queue: queue.Queue = queue.Queue()
        self._closed = False
        self._close_lock = threading.Lock()
        self.batches_run = 0  # forward passes so far (observability and tests)
        self._thread = threading.Thread(target=self._run, name="saekin-query-encoder", daemon=True)
        self._thread.start()

    @property
    def dim(self) -> int:
        return self.encoder.dim

    def encode(self, text: str) -> np.ndarray:
        """The float32 (dim,) embedding of one question."""
        return self.submit(text).result()

    def submit(self, text: str) -> Future:
        """Start encoding one question; the future's result is its float32 (dim,) embedding.

        Lets a caller do its other work (the sparse analysis) while the model runs.
        """
        if not isinstance(text, str):
            raise TypeError("encode takes one string")
        fut: Future = Future()
        with self._close_lock:
            if self._closed:
                raise RuntimeError("QueryEncoder is closed")
            self._queue.put((text, fut))
        return fut

    def close(self) -> None:
        """Stop the worker thread; waiting callers are answered first, later calls raise."""
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
            self._queue.put(_STOP)
        self._thread.join()

    def __enter__(self) -> QueryEncoder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _collect(self, first: tuple[str, Future]) -> tuple[list[tuple[str, Future]], bool]:
        batch = [first]
        deadline = time.monotonic() + self.max_wait_s
        while len(batch) < self.max_batch:
            remaining = deadline - time.monotonic()
            try:
                item = self._queue.get(timeout=remaining) if remaining > 0 else self._queue.get_nowait()
            except queue.Empty:
                break
            if item is _STOP:
                return batch, True
            batch.append(item)
        return batch, False

    def _run(self) -> None:
        stopping = False
        while not stopping:
            item = self._queue.get()
            if item is _STOP:
                break
            batch, stopping = self._collect(item)
            live = [(t, f) for t, f in batch if f.set_running_or_notify_cancel()]
            if not live:
                continue
            try:
                vectors = self.encoder.encode_queries([t for t, _ in live])
            except BaseException as exc:
                for _, f in live:
                    f.set_exception(exc)
                continue
            self.batches_run += 1
            for row, (_, f) in enumerate(live):
                f.set_result(vectors[row].copy())
