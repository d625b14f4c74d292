"""Cross-encoder reranking: a relevance score for each (question, passage) pair.

`Reranker` loads a sequence-classification model with one label (bge-reranker-v2-m3 and its
Korean fine-tune, config/profiles.py) once per process through sentence-transformers'
`CrossEncoder`, then scores pairs with the encoder's batching and precision set-up:

- the question is tokenized once and each passage once, with character offsets; a pair holds at
  most `max_tokens` tokens (special tokens included; 512 by default, far below the model's
  8,192, which would cost a large cross-encoder seconds per pair);
- a passage longer than its share of the pair is scored on a window of it: the window holding
  the most of the question's highlights (character spans the caller passes), centred on them
  (`choose_window`). A long passage without highlights is scored on its beginning, and that is
  logged;
- pairs are sorted by length into padded batches under a token budget (`plan_batches`, capped
  on CPU like the encoder's), each run once under `torch.inference_mode`: bf16 or fp16 weights
  on CUDA; fp32, bf16 autocast or int8 dynamic quantization (of the transformer body; the
  one-label head stays fp32) on CPU;
- a score is what `CrossEncoder.predict` gives for the same pair: the model's logit through the
  model's activation (sigmoid for one label unless its config names another), in input order.
"""

from __future__ import annotations

import bisect
import logging
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from config.profiles import RerankerProfile
from services.embedding.batching import (
    CPU_MAX_BATCH_TOKENS,
    CPU_MIN_FILL,
    Batch,
    batch_token_budget,
    forward_splitting_on_oom,
    padded_batch,
    plan_batches,
)
from services.embedding.loading import OnDevice, Precision, rust_tokenizer
from services.errors import ModelUnavailable

if TYPE_CHECKING:  # pragma: no cover
    import torch

log = logging.getLogger(__name__)

Span = tuple[int, int]  # [start, end) in characters

# The question gets at most this share of a pair's tokens; a longer question is cut at its end.
_QUERY_SHARE = 0.5


def choose_window(token_offsets: Sequence[Span], highlights: Sequence[Span], budget: int) -> int:
    """The first token of the `budget`-token window of a passage to score.

    `token_offsets` are the passage's tokens' character spans (in order), `highlights` character
    spans [start, end) in the passage. The window holds as many highlights whole as any window
    can (the earliest such group), centred on them; with no highlight inside the passage, or a
    passage within budget, it starts at 0.
    """
    n = len(token_offsets)
    if n <= budget:
        return 0
    starts = [s for s, _ in token_offsets]
    ends = [e for _, e in token_offsets]
    spans: list[tuple[int, int]] = []  # highlights as inclusive token ranges
    for start, end in highlights:
        if end <= start:
            continue
        first = bisect.bisect_right(ends, start)  # first token ending after the span starts
        last = bisect.bisect_left(starts, end) - 1  # last token starting before the span ends
        if first <= last:
            spans.append((first, last))
    if not spans:
        return 0
    spans.sort()
    best_count, best_lo, best_hi = 0, 0, 0
    for i, (lo, _) in enumerate(spans):
        inside = [hi for _, hi in spans[i:] if hi < lo + budget]
        if len(inside) > best_count:
            best_count, best_lo, best_hi = len(inside), lo, max(inside)
    if best_count == 0:  # every highlight is longer than the window: start at the first one
        return min(spans[0][0], n - budget)
    slack = budget - (best_hi - best_lo + 1)
    return max(0, min(best_lo - slack // 2, n - budget))


class Reranker(OnDevice):
    """A cross-encoder loaded once, scoring (question, passage) pairs in token-budgeted batches."""

    def __init__(
        self,
        model_name_or_path: str,
        profile: RerankerProfile,
        *,
        device: str | None = None,
        precision: str | None = None,
        max_tokens: int | None = None,
        max_batch_tokens: int = 8192,
        cpu_max_batch_tokens: int | None = CPU_MAX_BATCH_TOKENS,
    ) -> None:
        from sentence_transformers import CrossEncoder

        self.model_name_or_path = str(model_name_or_path)
        self.profile = profile
        self._precision = Precision.resolve(device, precision)
        self.max_tokens = int(max_tokens or profile.pair_tokens)
        if self.max_tokens < 16:
            raise ValueError("max_tokens must be at least 16")
        try:
            self.model = CrossEncoder(
                self.model_name_or_path,
                max_length=self.max_tokens,
                device=self.device,
                trust_remote_code=False,
                model_kwargs=self._precision.model_kwargs(),
            )
        except Exception as exc:
            raise ModelUnavailable(
                f"the reranker {self.model_name_or_path!r} (profile {profile.name}) could not be loaded: "
                f"{type(exc).__name__}: {exc}"
            ) from exc
        self.model.eval()
        classifier: Any = self.model.model
        config: Any = getattr(classifier, "config", None)
        architectures = list(getattr(config, "architectures", None) or [])
        # A checkpoint of another kind (an embedding model) loads too, with a fresh, untrained head.
        if not any(a.endswith("ForSequenceClassification") for a in architectures) or self.model.num_labels != 1:
            raise ModelUnavailable(
                f"{self.model_name_or_path!r} is not a reranker: a sequence-classification cross-encoder with one "
                f"relevance score is needed, the checkpoint is {', '.join(architectures) or 'of no known architecture'} "
                f"with {self.model.num_labels} label(s)"
            )
        limit = _positions(config)
        if limit is not None and self.max_tokens > limit:
            raise ValueError(f"max_tokens={self.max_tokens} is more than {self.model_name_or_path} reads ({limit})")
        self.max_batch_tokens = batch_token_budget(
            max_batch_tokens, is_cuda=self.is_cuda, hidden_size=int(config.hidden_size), cpu_cap=cpu_max_batch_tokens
        )
        tokenizer: Any = self.model.tokenizer
        self._backend = rust_tokenizer(tokenizer, max_length=None)
        self._specials = self._backend.num_special_tokens_to_add(True)
        self._uses_type_ids = "token_type_ids" in getattr(tokenizer, "model_input_names", ())
        pad = tokenizer.pad_token_id
        self.pad_token_id = int(pad) if pad is not None else 0
        self._precision.prepare(classifier.base_model)  # int8: the body's linear layers; the head stays
        self._lock = threading.Lock()
        log.info(
            "reranker %s on %s (%s, %d tokens per pair, %d per batch)",
            self.model_name_or_path,
            self.device,
            self.precision,
            self.max_tokens,
            self.max_batch_tokens,
        )

    # -- public API -------------------------------------------------------------------------------

    def rerank(
        self, query: str, passages: Sequence[str], highlights: Sequence[Sequence[Span]] | None = None
    ) -> list[float]:
        """The relevance score of each passage for `query`, in input order (higher is better).

        `highlights[i]`: character spans [start, end) of the query's terms in `passages[i]`; a
        passage longer than the pair budget is scored on the window holding most of them.
        """
        pairs = self._pairs(query, passages, highlights)
        scores = np.empty(len(pairs), dtype=np.float32)
        if not pairs:
            return []
        ids = [p.ids for p in pairs]
        type_ids = [p.type_ids for p in pairs] if self._uses_type_ids else None
        min_fill = 0.0 if self.is_cuda else CPU_MIN_FILL
        for indices in plan_batches([len(x) for x in ids], self.max_batch_tokens, min_fill=min_fill):
            batch = padded_batch(
                ids, indices, pad_token_id=self.pad_token_id, type_ids=type_ids, pin_memory=self.is_cuda
            )
            with self._lock:
                scores[batch.indices] = forward_splitting_on_oom(self._forward, batch).cpu().numpy()
        return [float(s) for s in scores]

    def windows(
        self, query: str, passages: Sequence[str], highlights: Sequence[Sequence[Span]] | None = None
    ) -> list[Span]:
        """The character span [start, end) of each passage that `rerank` scores."""
        return [p.span for p in self._pairs(query, passages, highlights)]

    def warmup(self) -> None:
        """One forward pass so the first real request pays no start-up cost."""
        self.rerank("워밍업 질문입니다", ["모델을 미리 데워 두기 위한 문단입니다.", "두 번째 문단"])

    # -- the engine -----------------------------------------------------------------------------

    def _pairs(self, query: str, passages: Sequence[str], highlights: Sequence[Sequence[Span]] | None) -> list[_Pair]:
        if isinstance(passages, str):
            raise TypeError("pass a sequence of passages, not a single string")
        if highlights is not None and len(highlights) != len(passages):
            raise ValueError(f"{len(highlights)} highlight lists for {len(passages)} passages")
        if not passages:
            return []
        q = self._backend.encode(query, add_special_tokens=False)
        max_query = int(self.max_tokens * _QUERY_SHARE) - self._specials
        if len(q.ids) > max_query:
            log.warning("a question of %d tokens was cut to %d for reranking", len(q.ids), max_query)
            q.truncate(max_query)
        budget = self.max_tokens - self._specials - len(q.ids)
        encodings = self._backend.encode_batch(list(passages), add_special_tokens=False)
        pairs = []
        unguided = 0
        for i, (text, enc) in enumerate(zip(passages, encodings)):
            n = len(enc.ids)
            if n > budget:
                marks = highlights[i] if highlights is not None else ()
                first = choose_window(enc.offsets, marks, budget)
                if first == 0 and not _inside(enc.offsets[:budget], marks):
                    unguided += 1
                enc.truncate(first + budget, direction="right")
                enc.truncate(budget, direction="left")
                span = (enc.offsets[0][0], enc.offsets[-1][1])
            else:
                span = (0, len(text))
            pair = self._backend.post_process(q, enc, add_special_tokens=True)
            pairs.append(_Pair(pair.ids, pair.type_ids, span))
        if unguided:
            log.info(
                "%d passage(s) over the reranker's %d-token pair budget had no highlight: scored on their beginning",
                unguided,
                self.max_tokens,
            )
        return pairs

    def _forward(self, batch: Batch) -> torch.Tensor:
        import torch

        features: dict[str, Any] = {"input_ids": batch.input_ids.to(self.device, non_blocking=True)}
        if batch.padded:  # without padding the mask changes nothing; leaving it out lets SDPA pick its fastest kernel
            features["attention_mask"] = batch.attention_mask.to(self.device, non_blocking=True)
        if batch.token_type_ids is not None:
            features["token_type_ids"] = batch.token_type_ids.to(self.device, non_blocking=True)
        with torch.inference_mode(), self._precision.autocast():
            scores: torch.Tensor = self.model(features)["scores"].float()
            activation = self.model.activation_fn
            if activation is not None:
                scores = activation(scores)
        return scores.reshape(len(batch))


class _Pair:
    """One (question, passage window) pair: its token ids, type ids and the window's character span."""

    __slots__ = ("ids", "span", "type_ids")

    def __init__(self, ids: list[int], type_ids: list[int], span: Span) -> None:
        self.ids = ids
        self.type_ids = type_ids
        self.span = span


def _inside(offsets: Sequence[Span], marks: Sequence[Span]) -> bool:
    """Whether any highlight overlaps the tokens of `offsets`."""
    if not offsets:
        return False
    lo, hi = offsets[0][0], offsets[-1][1]
    return any(start < hi and end > lo and end > start for start, end in marks)


def _positions(config: Any) -> int | None:
    """How many tokens the model's position embeddings cover (RoBERTa's start after the padding index)."""
    positions = getattr(config, "max_position_embeddings", None)
    if not positions:
        return None
    if getattr(config, "model_type", None) in ("roberta", "xlm-roberta", "camembert"):
        return int(positions) - int(getattr(config, "pad_token_id", 1) or 0) - 1
    return int(positions)
