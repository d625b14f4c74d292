"""The embedding engine: one sentence-transformers model per process and its forward pass.

`Encoder` loads the model through the real path (`SentenceTransformer(name_or_path)`) once,
then runs its own forward pass, equal to `SentenceTransformer.encode` within float tolerance:

- texts are tokenized once, sorted by token length and packed into batches whose padded size
  stays within `max_batch_tokens` (batching.py; capped on CPU, where bigger batches only cost
  memory traffic); on CPU, short texts go padding-free, concatenated into one sequence with a
  block-diagonal mask;
- a background thread tokenizes and pads the next batches while the model works on the current
  one (for calls with more than a handful of texts);
- the transformer runs under `torch.inference_mode` with PyTorch's scaled-dot-product attention
  where the architecture has it (DeBERTa-v2 has not), and a batch without padding is passed
  without an attention mask (the fast kernels then apply);
- precision (loading.py): bf16 (default) or fp16 weights on CUDA; on CPU fp32 (default), bf16
  autocast, or int8 dynamic quantization of the nn.Linear layers;
- backend (backends.py): on CPU the transformer's forward pass can instead run in ONNX Runtime or
  OpenVINO (fp32 or int8; OpenVINO bf16 too), from files exported once per model into
  `export_dir`; batches are then padded, never packed (the exported graph takes a plain mask);
- pooling and normalization are the loaded model's own modules (Pooling, Normalize, ...), so
  the vectors match the plain path; a mismatch with the profile is logged.

Questions from many API requests share forward passes through `QueryEncoder` (query_encoder.py).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from config.profiles import ModelProfile
from services.embedding.backends import BACKENDS, BackendSpec
from services.embedding.batching import (
    CPU_MAX_BATCH_TOKENS,
    CPU_MIN_FILL,
    Batch,
    batch_token_budget,
    forward_splitting_on_oom,
    packed_batch,
    packing_position_offset,
    padded_batch,
    plan_packed_and_padded,
    prefetch,
    unpack,
)
from services.embedding.loading import OnDevice, Precision, rust_tokenizer
from services.observability.metrics import EMBEDDING_SECONDS, EMBEDDING_TOKENS

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from tokenizers import Tokenizer

log = logging.getLogger(__name__)

# Calls with at most this many texts run inline (no tokenizer thread): queries, tiny documents.
_INLINE_MAX_TEXTS = 64
# Texts tokenized per window: sorting and packing happen within a window, and the next window is
# tokenized while the model works through the current one.
_WINDOW_TEXTS = 4096


class Encoder(OnDevice):
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
        backend: str = "torch",
        export_dir: Path | None = None,
        onnx_optimization: str | None = None,
        export_progress: Callable[[str], None] | None = None,
    ) -> None:
        """`backend` torch (default), onnx or openvino; the latter two run on CPU only, take
        precision fp32 or int8, openvino bf16 too (and `onnx_optimization` O1-O3 for onnx), and
        keep their exported files under `export_dir` (exported on first use;
        `export_progress(stage)` reports it)."""
        from sentence_transformers import SentenceTransformer

        self.model_name_or_path = str(model_name_or_path)
        self.profile = profile
        if backend not in BACKENDS:
            raise ValueError(f"encoder backend {backend!r} is unknown; choose one of {BACKENDS}")
        self.backend = backend
        spec: BackendSpec | None = None
        if backend != "torch":
            spec = BackendSpec.resolve(backend, precision, onnx_optimization)
            if device not in (None, "cpu"):
                raise ValueError(f"encoder backend {backend} runs on the CPU only, not on {device}")
            if export_dir is None:
                raise ValueError(f"encoder backend {backend} needs export_dir (where its exported model is kept)")
            # The PyTorch model is loaded in fp32 to export it (once) and for its tokenizer and
            # pooling modules; its weights are released once the exported model is loaded.
            device, precision = "cpu", "fp32"
        self._precision = Precision.resolve(device, precision)

        self.model = SentenceTransformer(
            self.model_name_or_path,
            device=self.device,
            trust_remote_code=False,
            model_kwargs=self._precision.model_kwargs(),
        )
        self.model.eval()
        first: Any = self.model[0]
        if not hasattr(first, "auto_model"):
            raise TypeError(
                f"{model_name_or_path}: the first module is not a transformers model ({type(first).__name__})"
            )
        self._transformer: Any = first.auto_model
        config = self._transformer.config
        self.max_batch_tokens = batch_token_budget(
            max_batch_tokens, is_cuda=self.is_cuda, hidden_size=int(config.hidden_size), cpu_cap=cpu_max_batch_tokens
        )
        self._post_modules = [m for i, m in enumerate(self.model) if i > 0]
        self._check_profile()

        self.tokenizer = first.tokenizer
        self.max_seq_length = int(self.model.max_seq_length or self.tokenizer.model_max_length)
        pad = self.tokenizer.pad_token_id
        self.pad_token_id = int(pad) if pad is not None else 0
        self._backend = rust_tokenizer(self.tokenizer, max_length=self.max_seq_length)
        self.attn_implementation: str | None = getattr(config, "_attn_implementation", None)
        # Padding-free batches only on CPU: a GPU computes padding in parallel, and the packed
        # path is not measured there.
        self.pack_position_offset = None if self.is_cuda else packing_position_offset(self._transformer)
        self.export_path: Path | None = None  # the exported model's directory (onnx, openvino)
        self.variant = backend if spec is None else spec.name  # e.g. torch, onnx-O2-int8, openvino-fp32
        if spec is None:
            self._transformer = self._precision.prepare(self._transformer)
        else:
            assert export_dir is not None
            self._transformer = self._load_exported(spec, Path(export_dir), export_progress)
            # The name only: the exported runtime applies it (bf16 is OpenVINO's own, not torch autocast).
            self._precision = Precision(device="cpu", name=spec.precision, is_cuda=False, autocasts=False)
            self.pack_position_offset = None

        # sentence-transformers 6 renamed get_sentence_embedding_dimension (5 has only that name).
        get_dimension = (
            getattr(self.model, "get_embedding_dimension", None) or self.model.get_sentence_embedding_dimension
        )
        self.dim = int(get_dimension() or config.hidden_size)
        self._lock = threading.Lock()
        log.info(
            "encoder %s on %s (%s %s, attention=%s, dim=%d, max_seq_length=%d)",
            self.model_name_or_path,
            self.device,
            self.variant,
            self.precision,
            self.attn_implementation,
            self.dim,
            self.max_seq_length,
        )

    def _load_exported(self, spec: BackendSpec, root: Path, progress: Callable[[str], None] | None) -> Any:
        """The exported transformer of `spec` (exported first if needed); the PyTorch weights are
        then dropped (moved to the meta device) so that only one copy stays in memory."""
        import torch

        from services.embedding.backends import ExportedTransformer, ensure_export, model_key

        config = self._transformer.config
        directory = ensure_export(
            self._transformer,
            spec,
            root=root,
            key=model_key(self.model_name_or_path),
            model_name=self.model_name_or_path,
            num_heads=int(config.num_attention_heads),
            hidden_size=int(config.hidden_size),
            progress=progress,
            release=lambda: self._transformer.to("meta"),
        )
        self.export_path = directory
        exported = ExportedTransformer(directory, spec, num_threads=torch.get_num_threads())
        self._transformer.to("meta")
        return exported

    def _check_profile(self) -> None:
        """Log when the model's pooling or normalization differs from the profile's."""
        pooling = None
        normalized = False
        for m in self._post_modules:
            name = type(m).__name__
            if name == "Pooling":
                mode = getattr(m, "pooling_mode", None)  # sentence-transformers 6; 5 has one flag per mode
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

    # -- public API -------------------------------------------------------------------------------

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        """Token counts (special tokens included, before truncation) of `texts`."""
        return [len(e.ids) for e in self._backend_untruncated.encode_batch(list(texts))]

    @cached_property
    def _backend_untruncated(self) -> Tokenizer:
        """A second tokenizer copy, made when the first over-long text needs counting."""
        return rust_tokenizer(self.tokenizer, max_length=None)

    def encode_documents(self, texts: Sequence[str], *, progress: Callable[[int], None] | None = None) -> np.ndarray:
        """float32 (len(texts), dim) embeddings in input order. `progress(n)` is called with the
        number of texts finished after each batch. Texts over max_seq_length are truncated (the
        chunker guarantees that never happens for documents; it is logged)."""
        return self._encode(texts, progress=progress, warn_truncation=True, kind="document")

    def encode_queries(self, texts: Sequence[str]) -> np.ndarray:
        """float32 (len(texts), dim) query embeddings; queries are truncated at max_seq_length."""
        return self._encode(texts, progress=None, warn_truncation=False, kind="query")

    def warmup(self) -> None:
        """Run a few forward passes so the first real request pays no start-up cost."""
        self.encode_queries(["워밍업 질의입니다."])
        self.encode_queries(["질문 하나", "조금 더 긴 두 번째 질문입니다", "세 번째"])
        filler = "이 문장은 모델을 미리 데워 두기 위한 문서입니다. "
        self._encode([filler * 4, filler * 12], progress=None, warn_truncation=False, kind="warmup")

    # -- the engine -----------------------------------------------------------------------------

    def _tokenize(self, texts: Sequence[str]) -> list[list[int]]:
        encodings = self._backend.encode_batch(list(texts), add_special_tokens=True)
        return [e.ids for e in encodings]

    def _batches(self, texts: Sequence[str], warn_truncation: bool) -> Iterator[Batch]:
        """Tokenize window by window, sort, pack and pad: the producer side of the engine."""
        min_fill = 0.0 if self.is_cuda else CPU_MIN_FILL
        for offset in range(0, len(texts), _WINDOW_TEXTS):
            window = texts[offset : offset + _WINDOW_TEXTS]
            ids = self._tokenize(window)
            lengths = [len(x) for x in ids]
            if warn_truncation:
                at_max = [window[i] for i, n in enumerate(lengths) if n >= self.max_seq_length]
                over = sum(1 for n in self.count_tokens(at_max) if n > self.max_seq_length) if at_max else 0
                if over:
                    log.warning("%d text(s) longer than max_seq_length=%d were truncated", over, self.max_seq_length)
            plan = plan_packed_and_padded(
                lengths, self.max_batch_tokens, can_pack=self.pack_position_offset is not None, min_fill=min_fill
            )
            for packed, batch in plan:
                if packed:
                    assert self.pack_position_offset is not None
                    yield packed_batch(ids, batch, position_offset=self.pack_position_offset, offset=offset)
                else:
                    yield padded_batch(
                        ids, batch, pad_token_id=self.pad_token_id, offset=offset, pin_memory=self.is_cuda
                    )

    def _forward(self, batch: Batch) -> torch.Tensor:
        import torch

        ids = batch.input_ids.to(self.device, non_blocking=True)
        mask = batch.attention_mask.to(self.device, non_blocking=True)
        with torch.inference_mode(), self._precision.autocast():
            features: dict[str, Any]
            if batch.lengths is not None:
                # One text needs no mask (SDPA's fastest kernel); several need the block-diagonal one.
                out = self._transformer(
                    input_ids=ids,
                    attention_mask=mask if len(batch.lengths) > 1 else None,
                    position_ids=batch.position_ids,
                    return_dict=True,
                )
                features = unpack(out.last_hidden_state[0], ids[0], batch.lengths, self.pad_token_id)
            else:
                # Without padding the mask changes nothing: leaving it out lets SDPA pick its fastest kernel.
                out = self._transformer(input_ids=ids, attention_mask=mask if batch.padded else None, return_dict=True)
                features = {"input_ids": ids, "attention_mask": mask, "token_embeddings": out.last_hidden_state}
            for module in self._post_modules:
                features = module(features)
            embeddings: torch.Tensor = features["sentence_embedding"].float()
            return embeddings

    def _encode(
        self,
        texts: Sequence[str],
        *,
        progress: Callable[[int], None] | None,
        warn_truncation: bool,
        kind: str = "query",
    ) -> np.ndarray:
        if isinstance(texts, str):
            raise TypeError("pass a sequence of texts, not a single string")
        texts = list(texts)
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        if not texts:
            return out
        batches = self._batches(texts, warn_truncation)
        stop = None
        if len(texts) > _INLINE_MAX_TEXTS:
            batches, stop = prefetch(batches)
        pending: list[tuple[np.ndarray, torch.Tensor]] = []
        try:
            for batch in batches:
                # One forward pass at a time per model; the lock is taken per batch, so a query
                # waits for at most one document batch, not for a whole document job.
                with self._lock:
                    started = time.perf_counter()
                    vecs = forward_splitting_on_oom(self._forward, batch)
                    # On a GPU the time is the launch's until results are copied; over many batches it evens out.
                    EMBEDDING_SECONDS.labels(kind).inc(time.perf_counter() - started)
                EMBEDDING_TOKENS.labels(kind).inc(_real_tokens(batch))
                if self.is_cuda:
                    # Keep results on the GPU while the next batch is launched; copy in bulk.
                    pending.append((batch.indices, vecs))
                    if len(pending) >= 8:
                        _drain(pending, out)
                else:
                    out[batch.indices] = vecs.numpy()
                if progress is not None:
                    progress(len(batch))
            _drain(pending, out)
        finally:
            if stop is not None:
                stop.set()
        return out


def _real_tokens(batch: Batch) -> int:
    """Tokens of the batch's texts, padding excluded."""
    if batch.lengths is not None:
        return sum(batch.lengths)
    return int(batch.attention_mask.sum())


def _drain(pending: list[tuple[np.ndarray, torch.Tensor]], out: np.ndarray) -> None:
    """Copy the GPU results gathered in `pending` into `out` and forget them."""
    for indices, vecs in pending:
        out[indices] = vecs.cpu().numpy()
    pending.clear()
