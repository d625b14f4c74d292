"""Batches by token budget, for the encoder and the reranker alike.

- `plan_batches` (pure): text indices, longest first, packed into padded batches whose size
  (batch size x longest text) stays within a token budget;
- `plan_packed_and_padded` (pure): the same, with short texts first gathered into padding-free
  packed sequences where the model allows it;
- `padded_batch` / `packed_batch`: the model inputs of one planned batch (`Batch`), and
  `unpack` to turn a packed sequence's outputs back into padded rows;
- `forward_splitting_on_oom`: runs a forward pass, halving a batch the GPU has no memory for;
- `prefetch`: builds batches in a background thread while the model works.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    import torch

log = logging.getLogger(__name__)

# On CPU a forward pass of one or a few 512-token texts already keeps every core busy; bigger
# batches only add memory traffic (measured on the bge-m3 twin, 2-core EPYC: int8 ran at
# ~270-330 tokens/s on 1 x 512-token batches against ~160-190 on 16 x 512). The GPU budget
# (SAEKIN_EMBED_MAX_BATCH_TOKENS, default 16,384) is therefore capped to this on CPU...
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
# this many tokens are packed...
PACK_MAX_TOKENS = 128
# ...and a packed sequence holds at most this many tokens (attention over it then costs under a
# tenth of the linear layers' work for a 1024-wide model).
PACK_GROUP_TOKENS = 512
# Architectures whose position ids can be given per packed text: model_type -> whether positions
# start after the padding index (RoBERTa family) or at 0 (BERT).
_PACKABLE_MODEL_TYPES = {"xlm-roberta": True, "roberta": True, "bert": False}


def batch_token_budget(
    max_batch_tokens: int, *, is_cuda: bool, hidden_size: int, cpu_cap: int | None = CPU_MAX_BATCH_TOKENS
) -> int:
    """The padded-token budget of a forward pass: `max_batch_tokens`, on CPU capped at `cpu_cap`
    for real-sized models (hidden size at least CPU_CAP_MIN_HIDDEN)."""
    if max_batch_tokens < 1:
        raise ValueError("max_batch_tokens must be positive")
    if not is_cuda and cpu_cap and hidden_size >= CPU_CAP_MIN_HIDDEN:
        return min(int(max_batch_tokens), int(cpu_cap))
    return int(max_batch_tokens)


# --------------------------------------------------------------------------------------------
# Planning (pure)
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


def plan_packed_and_padded(
    lengths: Sequence[int], max_batch_tokens: int, *, can_pack: bool, min_fill: float = 0.0
) -> list[tuple[bool, list[int]]]:
    """(packed?, text indices) of each batch: with `can_pack`, texts of at most PACK_MAX_TOKENS
    go into packed sequences of at most min(PACK_GROUP_TOKENS, max_batch_tokens) tokens (a longer
    text alone); the rest into padded batches by `plan_batches`. Every index appears once."""
    packable: list[int] = []
    rest: list[int] = []
    for i, n in enumerate(lengths):
        (packable if can_pack and n <= PACK_MAX_TOKENS else rest).append(i)
    plan: list[tuple[bool, list[int]]] = []
    group_tokens = min(PACK_GROUP_TOKENS, max_batch_tokens)
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
    plan += [
        (False, [rest[j] for j in batch])
        for batch in plan_batches([lengths[i] for i in rest], max_batch_tokens, min_fill=min_fill)
    ]
    return plan


def packing_position_offset(transformer: Any) -> int | None:
    """Where a packed text's position ids start for this transformers model (0 for BERT, the
    padding index + 1 for the RoBERTa family), or None when it cannot be packed: packing needs
    SDPA (it takes the block-diagonal mask as given) and position ids given per text."""
    config = transformer.config
    model_type = getattr(config, "model_type", None)
    if getattr(config, "_attn_implementation", None) != "sdpa" or model_type not in _PACKABLE_MODEL_TYPES:
        return None
    if not _PACKABLE_MODEL_TYPES[model_type]:
        return 0
    padding_idx = getattr(getattr(transformer, "embeddings", None), "padding_idx", None)
    return None if padding_idx is None else int(padding_idx) + 1


# --------------------------------------------------------------------------------------------
# Model inputs
# --------------------------------------------------------------------------------------------


class Batch:
    """Model inputs for some texts: padded rows, or (``lengths`` set) all texts packed into one row."""

    __slots__ = ("attention_mask", "indices", "input_ids", "lengths", "padded", "position_ids", "token_type_ids")

    def __init__(
        self,
        indices: np.ndarray,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        *,
        padded: bool,
        lengths: list[int] | None = None,
        position_ids: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
    ):
        self.indices = indices  # positions of the batch's texts in the caller's input
        self.input_ids = input_ids
        self.attention_mask = attention_mask  # packed: (1, 1, T, T) bool, True where a token may attend
        self.padded = padded  # some row is shorter than the batch (the mask matters)
        self.lengths = lengths
        self.position_ids = position_ids
        self.token_type_ids = token_type_ids

    def __len__(self) -> int:
        return len(self.indices)

    def halves(self) -> tuple[Batch, Batch]:
        """The padded batch's rows in two batches, each trimmed to its own longest row."""
        if self.lengths is not None or len(self) < 2:
            raise ValueError("only a padded batch of two or more rows can be halved")
        half = len(self) // 2
        parts = []
        for rows in (slice(0, half), slice(half, None)):
            mask = self.attention_mask[rows]
            lens = mask.sum(dim=1)
            width = int(lens.max())
            types = self.token_type_ids
            parts.append(
                Batch(
                    self.indices[rows],
                    self.input_ids[rows, :width],
                    mask[:, :width],
                    padded=bool((lens != width).any()),
                    token_type_ids=None if types is None else types[rows, :width],
                )
            )
        return parts[0], parts[1]


def padded_batch(
    ids: Sequence[Sequence[int]],
    indices: Sequence[int],
    *,
    pad_token_id: int,
    offset: int = 0,
    type_ids: Sequence[Sequence[int]] | None = None,
    pin_memory: bool = False,
) -> Batch:
    """The texts `ids[i]` for i in `indices` as padded rows (right padding, attention mask);
    the batch's `indices` are `indices` + `offset` (the texts' positions in the whole call)."""
    import torch

    lens = [len(ids[i]) for i in indices]
    width = max(lens)
    input_ids = np.full((len(indices), width), pad_token_id, dtype=np.int64)
    mask = np.zeros((len(indices), width), dtype=np.int64)
    types = np.zeros((len(indices), width), dtype=np.int64) if type_ids is not None else None
    for row, (i, n) in enumerate(zip(indices, lens)):
        input_ids[row, :n] = ids[i]
        mask[row, :n] = 1
        if types is not None and type_ids is not None:
            types[row, :n] = type_ids[i]
    tensors = [torch.from_numpy(a) for a in (input_ids, mask, types) if a is not None]
    if pin_memory:
        tensors = [t.pin_memory() for t in tensors]
    return Batch(
        np.asarray(indices, dtype=np.int64) + offset,
        tensors[0],
        tensors[1],
        padded=min(lens) != width,
        token_type_ids=tensors[2] if types is not None else None,
    )


def packed_batch(
    ids: Sequence[Sequence[int]], indices: Sequence[int], *, position_offset: int, offset: int = 0
) -> Batch:
    """The texts `ids[i]` for i in `indices` concatenated into one row, with a block-diagonal
    attention mask and position ids restarting at `position_offset` for each text."""
    import torch

    lens = [len(ids[i]) for i in indices]
    flat = np.fromiter((t for i in indices for t in ids[i]), dtype=np.int64, count=sum(lens))
    text_of_token = np.repeat(np.arange(len(lens)), lens)
    positions = np.concatenate([np.arange(n, dtype=np.int64) for n in lens]) + position_offset
    same_text = text_of_token[:, None] == text_of_token[None, :]
    return Batch(
        np.asarray(indices, dtype=np.int64) + offset,
        torch.from_numpy(flat)[None],
        torch.from_numpy(same_text)[None, None],
        padded=False,
        lengths=lens,
        position_ids=torch.from_numpy(positions)[None],
    )


def unpack(hidden: torch.Tensor, ids: torch.Tensor, lengths: list[int], pad_token_id: int) -> dict[str, Any]:
    """A packed sequence's outputs (T, hidden) as padded rows: the features (input_ids,
    attention_mask, token_embeddings) that sentence-transformers pooling modules take."""
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


# --------------------------------------------------------------------------------------------
# Running batches
# --------------------------------------------------------------------------------------------


def forward_splitting_on_oom(forward: Callable[[Batch], torch.Tensor], batch: Batch) -> torch.Tensor:
    """`forward(batch)`, or, when the GPU runs out of memory, the batch's halves one after the
    other (recursively, down to single rows) and their results concatenated."""
    import torch

    try:
        return forward(batch)
    except torch.cuda.OutOfMemoryError:
        if len(batch) == 1 or batch.lengths is not None:
            raise
        torch.cuda.empty_cache()
        log.warning(
            "CUDA out of memory on a batch of %d x %d tokens; splitting it (lower the batch token budget)",
            len(batch),
            batch.input_ids.shape[1],
        )
        return torch.cat([forward_splitting_on_oom(forward, part) for part in batch.halves()])


_DONE = object()


def prefetch(source: Iterator[Batch], *, depth: int = 3) -> tuple[Iterator[Batch], threading.Event]:
    """Run `source` in a background thread, up to `depth` batches ahead of the consumer.

    Returns the consumer's iterator (which re-raises the producer's exception) and an event that
    stops the producer: set it when the consumer stops early.
    """
    q: queue.Queue[object] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item: object) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        last: object = _DONE
        try:
            for batch in source:
                if not put(batch):
                    return
        except BaseException as exc:  # handed to the consumer
            last = exc
        put(last)

    thread = threading.Thread(target=produce, name="saekin-tokenize", daemon=True)
    thread.start()

    def consume() -> Iterator[Batch]:
        while True:
            item = q.get()
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            assert isinstance(item, Batch)
            yield item

    return consume(), stop
