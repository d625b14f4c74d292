"""Sentence-aware chunking measured in the embedding model's own tokens.

Guarantees of :func:`chunk_sentences` (the property tests check each):

* every character of ``text`` lies in at least one chunk's ``[char_start, char_end)``:
  the text is cut into *units* at sentence starts only, each unit running to the next
  sentence's start, so the whitespace between sentences (and any text outside the given
  sentence spans) travels with the sentence before it, and leading text with the first;
* ``chunk.text == text[chunk.char_start:chunk.char_end]`` and ``chunk.token_count`` is
  the token count of exactly that text (no special tokens), never above ``max_tokens``;
  every chunk is re-tokenized as a whole, because the tokens of a concatenation can
  differ from the sum of its parts;
* chunks are packed greedily from whole units (sentences) up to ``max_tokens``; a
  sentence longer than the budget is cut at token boundaries (from the offsets mapping),
  preferring a word start in the last half of the window;
* with ``overlap_tokens`` > 0 a chunk starts with whole trailing sentences of the
  previous chunk, at most ``overlap_tokens`` tokens of them (also re-checked), never the
  whole previous chunk, so ``char_start`` strictly increases;
* ordinals are consecutive from ``first_ordinal``; whitespace-only text gives no chunks.

Cost: the units of one text are tokenized in one batched call, the candidate chunks in a
second one; only the rare chunk whose re-count exceeds the budget is repaired locally.
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["Chunk", "chunk_sentences", "count_tokens"]

_BATCH = 2048


@dataclass(frozen=True)
class Chunk:
    ordinal: int
    char_start: int
    char_end: int
    text: str
    token_count: int


def _backend(tokenizer: Any) -> Any:
    """The Rust tokenizer behind a Hugging Face fast tokenizer, set to neither truncate nor pad.

    Called directly, it skips the Python layer that builds a BatchEncoding per call (about a
    third of the chunker's tokenizer time). The check-and-reset is what ``tokenizer(...,
    truncation=False)`` does before each call, so the shared instance's contract is unchanged.
    """
    backend = tokenizer.backend_tokenizer
    if backend.truncation is not None:
        backend.no_truncation()
    if backend.padding is not None:
        backend.no_padding()
    return backend


def _token_starts(tokenizer: Any, texts: list[str]) -> list[list[int]]:
    """Start offset (character) of each token of each text, special tokens excluded."""
    return [
        [start for start, _ in e.offsets] for e in _backend(tokenizer).encode_batch(texts, add_special_tokens=False)
    ]


def count_tokens(tokenizer: Any, texts: Sequence[str]) -> list[int]:
    """Token counts of ``texts`` without special tokens, in batched tokenizer calls."""
    counts: list[int] = []
    texts = list(texts)
    backend = _backend(tokenizer)
    for i in range(0, len(texts), _BATCH):
        # encode_batch_fast: no offsets are tracked, which counting does not need.
        counts.extend(len(e.ids) for e in backend.encode_batch_fast(texts[i : i + _BATCH], add_special_tokens=False))
    return counts


def _span(sentence: Any) -> tuple[int, int]:
    if isinstance(sentence, (tuple, list)):
        return int(sentence[0]), int(sentence[1])
    return int(sentence.start), int(sentence.end)


def _unit_bounds(text: str, sentences: Sequence[Any]) -> list[int]:
    """Sorted cut positions: 0, each sentence start inside the text, len(text)."""
    n = len(text)
    starts = {0, n}
    for sentence in sentences:
        start, end = _span(sentence)
        if end > start and 0 < start < n:
            starts.add(start)
    return sorted(starts)


def _split_long(
    text: str, start: int, end: int, token_starts: list[int], tokenizer: Any, max_tokens: int
) -> list[tuple[int, int, int]]:
    """Cut ``text[start:end]`` (more than ``max_tokens`` tokens) into verified pieces."""
    n = len(token_starts)
    pieces: list[tuple[int, int, int]] = []
    piece_start, first_tok = start, 0
    while piece_start < end:
        # Tokens starting at or before piece_start (several tokens can share a character)
        # cannot start the next piece: the piece must make progress.
        min_hi = bisect.bisect_right(token_starts, piece_start)
        hi = max(min_hi, min(n, first_tok + max_tokens))  # first token of the next piece
        if hi < n:
            # Prefer a word start in the second half of the window.
            floor = max(min_hi, first_tok + max(1, max_tokens // 2))
            for k in range(hi, floor - 1, -1):
                s = token_starts[k]
                if text[s].isspace() or text[s - 1].isspace():
                    hi = k
                    break
        while True:
            cut = token_starts[hi] if hi < n else end
            count = count_tokens(tokenizer, [text[piece_start:cut]])[0]
            if count <= max_tokens:
                break
            if hi <= min_hi:
                cut, count = _shrink_chars(text, piece_start, cut, tokenizer, max_tokens)
                break
            hi = max(min_hi, hi - max(1, count - max_tokens))
        pieces.append((piece_start, cut, count))
        piece_start = cut
        first_tok = bisect.bisect_left(token_starts, cut)
    return pieces


def _shrink_chars(text: str, start: int, end: int, tokenizer: Any, max_tokens: int) -> tuple[int, int]:
    """Largest prefix of text[start:end] within the budget, cut at a character (last resort)."""
    lo, hi = start + 1, end - 1  # a fitting prefix ends in [start+1, end-1]
    best = None
    while lo <= hi:
        mid = (lo + hi) // 2
        count = count_tokens(tokenizer, [text[start:mid]])[0]
        if count <= max_tokens:
            best = (mid, count)
            lo = mid + 1
        else:
            hi = mid - 1
    if best is None:
        raise ValueError(f"max_tokens={max_tokens} is too small: {text[start : start + 1]!r} alone needs more tokens")
    return best


def chunk_sentences(
    text: str,
    sentences: Sequence[tuple[int, int]],
    tokenizer: Any,
    *,
    max_tokens: int,
    overlap_tokens: int = 0,
    first_ordinal: int = 0,
) -> list[Chunk]:
    """Pack ``text``'s sentences (char spans) into chunks of at most ``max_tokens`` tokens.

    ``tokenizer`` is a Hugging Face fast tokenizer (``PreTrainedTokenizerFast``);
    ``sentences`` are ``(start, end)`` spans (or objects with ``.start``/``.end``), e.g.
    from the analyzer's one-pass :meth:`KoreanAnalyzer.analyze`.
    """
    if max_tokens < 1:
        raise ValueError(f"max_tokens must be >= 1, got {max_tokens}")
    if not 0 <= overlap_tokens < max_tokens:
        raise ValueError(f"overlap_tokens must be in [0, max_tokens), got {overlap_tokens}")
    if not text or text.isspace():
        return []

    # 1. Units: sentences with their trailing gap; sentences over the budget are cut.
    bounds = _unit_bounds(text, sentences)
    seg_texts = [text[a:b] for a, b in itertools.pairwise(bounds)]
    seg_counts = count_tokens(tokenizer, seg_texts)
    long_ids = [i for i, c in enumerate(seg_counts) if c > max_tokens]
    long_starts: dict[int, list[int]] = {}
    if long_ids:
        long_starts = dict(zip(long_ids, _token_starts(tokenizer, [seg_texts[i] for i in long_ids])))
    unit_start: list[int] = []
    unit_end: list[int] = []
    unit_count: list[int] = []
    for i, (a, b) in enumerate(itertools.pairwise(bounds)):
        if i in long_starts:
            token_starts: list[int] = []
            running = a
            for start in long_starts[i]:
                running = max(running, a + start)  # keep it monotonic
                token_starts.append(running)
            for pa, pb, pc in _split_long(text, a, b, token_starts, tokenizer, max_tokens):
                unit_start.append(pa)
                unit_end.append(pb)
                unit_count.append(pc)
        else:
            unit_start.append(a)
            unit_end.append(b)
            unit_count.append(seg_counts[i])
    n_units = len(unit_start)

    # 2. Plan with the units' own counts: each chunk is the overlap (whole trailing units
    #    of the previous chunk's new part, never all of it) plus new units, packed
    #    greedily up to the budget. The new parts ("cores") partition the units.
    plans: list[tuple[int, int, int]] = []  # (overlap start, core start, core end) in units
    a = 0
    while a < n_units:
        o, extra = a, 0
        if plans and overlap_tokens:
            prev_core = plans[-1][1]
            while (
                o - 1 > prev_core
                and extra + unit_count[o - 1] <= overlap_tokens
                and extra + unit_count[o - 1] + unit_count[a] <= max_tokens
            ):
                o -= 1
                extra += unit_count[o]
        b, total = a + 1, extra + unit_count[a]
        while b < n_units and total + unit_count[b] <= max_tokens:
            total += unit_count[b]
            b += 1
        plans.append((o, a, b))
        a = b

    # 3. Re-count every planned chunk (and overlap) as a whole text, in one batch.
    def span_text(first: int, last: int) -> str:
        return text[unit_start[first] : unit_end[last - 1]]

    batch: list[str] = []
    for o, a, b in plans:
        if b - o > 1:
            batch.append(span_text(o, b))
        if a - o > 1:
            batch.append(span_text(o, a))
    measured = iter(count_tokens(tokenizer, batch))
    first_counts: list[tuple[int, int]] = []
    for o, a, b in plans:
        total = next(measured) if b - o > 1 else unit_count[o]
        overlap = next(measured) if a - o > 1 else (unit_count[o] if a > o else 0)
        first_counts.append((total, overlap))

    # 4. Accept the chunks that fit; repair the rare others locally: drop overlap
    #    sentences first, then split the new part, without moving any later chunk.
    out: list[tuple[int, int, int, int]] = []  # (first unit, core start, end unit, tokens)
    for (o, a, b), (total, overlap) in zip(plans, first_counts):
        if out and o < a and o <= out[-1][1]:
            o = out[-1][1] + 1  # the previous chunk was split: stay inside its last part
        elif (o < a and total <= max_tokens and overlap <= overlap_tokens) or (o == a and total <= max_tokens):
            out.append((o, a, b, total))
            continue
        while o < a:
            total, overlap = count_tokens(tokenizer, [span_text(o, b), span_text(o, a)])
            if total <= max_tokens and overlap <= overlap_tokens:
                break
            o += 1
        if o < a:
            out.append((o, a, b, total))
            continue
        while a < b:  # no overlap left: split the new part greedily, re-counting
            hi = b
            while True:
                total = unit_count[a] if hi == a + 1 else count_tokens(tokenizer, [span_text(a, hi)])[0]
                if total <= max_tokens:
                    break
                hi -= 1
            out.append((a, a, hi, total))
            a = hi

    chunks = []
    for k, (first, _, end_unit, tokens) in enumerate(out):
        char_start, char_end = unit_start[first], unit_end[end_unit - 1]
        chunks.append(Chunk(first_ordinal + k, char_start, char_end, text[char_start:char_end], tokens))
    return chunks
