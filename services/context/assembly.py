"""Context assembly: ranked chunk hits → one cited block of text within a token budget.

A pure function of its inputs (no database, no index), so that its guarantees can be tested
with generated documents. What :func:`assemble` promises:

* hits of one document whose chunks touch or overlap (consecutive ordinals, or character
  ranges that meet) become one passage in document order, and the sentences two consecutive
  chunks share (the chunker's overlap) appear once: a passage is the union of its chunks'
  character ranges in the document text;
* passages are ordered by their best hit's rank and each starts with its citation marker and
  source line (``[1] 탄소중립 기본법 · p. 3 · 제2장 > 제8조``);
* the hits' passages come first; the first one that does not fit is trimmed at a sentence
  boundary (never mid-sentence) and nothing after it is added; when every hit's passage fits,
  neighbouring chunks (up to ``neighbors`` on each side of each passage, nearest first, best
  passage first) are added while the budget allows, whole chunks only, merging passages that
  come to touch;
* the returned context never has more than ``max_tokens`` tokens in ``counter``: the plan is made
  with per-piece counts (cheap, and tokens of a concatenation can differ from the sum of its
  parts), then the whole context is counted and, were it over, trimmed by whole sentences from
  its end until it fits;
* the same inputs give the same output.
"""

from __future__ import annotations

import bisect
import itertools
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

# The ingest pipeline joins a document's sections with this (services/ingest/pipeline.py); the
# characters between two consecutive chunks of different sections are exactly these.
SECTION_SEPARATOR = "\n\n"
PASSAGE_SEPARATOR = "\n\n"

Format = Literal["markdown", "text"]

# Where a sentence may end when a chunk has no stored sentence starts (ingested before they were
# stored): after sentence-final punctuation (and closing quotes or brackets) and whitespace, or
# after a line break.
_SENTENCE_END = re.compile(r"[.!?。？！…][\"'”’)\]」』]*\s+|\n+")


class TokenCounter(Protocol):
    """Counts tokens the way an LLM (or the embedding model) will see the text."""

    name: str

    def count(self, text: str) -> int: ...

    def count_many(self, texts: Sequence[str]) -> list[int]: ...


@dataclass(frozen=True)
class ChunkText:
    """One chunk of a document's searchable generation, as assembly needs it."""

    document_id: str
    ordinal: int
    char_start: int  # into the document text (sections joined by SECTION_SEPARATOR)
    char_end: int
    text: str  # == document text[char_start:char_end]
    page: int | None = None
    heading: str | None = None
    # Offsets (relative to char_start) of sentences that start inside the chunk; None: unknown
    sentence_starts: Sequence[int] | None = None
    # Tokens of `text` in the embedding model's tokenizer (stored at ingest): with the `embedding`
    # counter the plan uses it instead of counting again (the final count stays exact).
    token_count: int | None = None


@dataclass(frozen=True)
class Source:
    """What a citation says about a document."""

    document_id: str
    title: str | None = None
    external_id: str | None = None
    collection: str | None = None


@dataclass(frozen=True)
class Hit:
    """A ranked search hit: the chunk (document_id, ordinal) and its rank (1 = best) and score."""

    rank: int
    score: float
    document_id: str
    ordinal: int


@dataclass(frozen=True)
class Passage:
    """One passage of the assembled context."""

    n: int
    source: Source
    pages: list[int]
    heading: str | None
    char_start: int
    char_end: int
    score: float
    best_rank: int
    text: str  # as it appears in the context, after the source line
    trimmed: bool


@dataclass(frozen=True)
class Assembly:
    context: str
    token_count: int
    passages: list[Passage]


@dataclass
class _Run:
    """Consecutive chunks (by ordinal) of one document: a passage being planned."""

    document_id: str
    first: int
    last: int
    best_rank: int
    score: float
    best_ordinal: int
    cut: int | None = None  # passage text is cut to this many characters (trimmed at a sentence)
    cost: int = 0  # planned tokens of the rendered block
    ordinals: list[int] = field(default_factory=list)


def assemble(
    hits: Sequence[Hit],
    chunks: Mapping[tuple[str, int], ChunkText],
    sources: Mapping[str, Source],
    *,
    counter: TokenCounter,
    max_tokens: int,
    neighbors: int = 1,
    fmt: Format = "markdown",
) -> Assembly:
    """The context for `hits` (best first) within `max_tokens` tokens of `counter`.

    `chunks` holds every hit's chunk and the neighbours that may be added, by (document id,
    ordinal); hits whose chunk is missing are skipped.
    """
    if max_tokens < 1:
        raise ValueError("max_tokens must be at least 1")
    planner = _Planner(chunks, sources, counter, fmt)
    runs = planner.initial_runs([h for h in hits if (h.document_id, h.ordinal) in chunks])
    budget = max_tokens
    selected: list[_Run] = []
    used = 0
    complete = True
    for run in runs:
        run.cost = planner.cost(run)
        extra = run.cost + (planner.separator_cost if selected else 0)
        if used + extra <= budget:
            selected.append(run)
            used += extra
            continue
        complete = False
        room = budget - used - (planner.separator_cost if selected else 0)
        if planner.trim(run, room):
            selected.append(run)
            used += run.cost + (planner.separator_cost if selected[:-1] else 0)
        break
    if complete and neighbors > 0 and selected:
        used = planner.add_neighbors(selected, neighbors, budget, used)
    return planner.finish(selected, budget)


class _Planner:
    def __init__(
        self,
        chunks: Mapping[tuple[str, int], ChunkText],
        sources: Mapping[str, Source],
        counter: TokenCounter,
        fmt: Format,
    ) -> None:
        self.chunks = chunks
        self.sources = sources
        self.counter = counter
        self.fmt = fmt
        self._full: dict[tuple[str, int], int] = {}
        self._piece: dict[tuple[str, int], int] = {}
        self._counted: dict[str, int] = {}
        self.separator_cost = self.count(PASSAGE_SEPARATOR)

    def count(self, text: str) -> int:
        """Tokens of `text`, each distinct text counted once (source lines recur while planning)."""
        n = self._counted.get(text)
        if n is None:
            n = self._counted[text] = self.counter.count(text)
        return n

    # --- runs -----------------------------------------------------------------------------

    def initial_runs(self, hits: Sequence[Hit]) -> list[_Run]:
        """Hits merged into runs of touching chunks per document, ordered by best rank."""
        by_doc: dict[str, list[Hit]] = {}
        for hit in sorted(hits, key=lambda h: (h.rank, h.document_id, h.ordinal)):
            by_doc.setdefault(hit.document_id, []).append(hit)
        runs: list[_Run] = []
        for doc_id, doc_hits in by_doc.items():
            best = {h.ordinal: h for h in reversed(doc_hits)}  # the best hit per ordinal
            current: _Run | None = None
            for ordinal in sorted(best):
                hit = best[ordinal]
                if current is not None and self._touch(doc_id, current.last, ordinal):
                    current.last = ordinal
                    if hit.rank < current.best_rank:
                        current.best_rank, current.score, current.best_ordinal = hit.rank, hit.score, ordinal
                    continue
                current = _Run(doc_id, ordinal, ordinal, hit.rank, hit.score, ordinal)
                runs.append(current)
        runs.sort(key=lambda r: (r.best_rank, r.document_id, r.first))
        return runs

    def _touch(self, doc_id: str, last: int, ordinal: int) -> bool:
        """Whether chunk `ordinal` follows chunk `last` with no document text between them."""
        if ordinal <= last + 1:
            return True
        a, b = self.chunks.get((doc_id, last)), self.chunks.get((doc_id, ordinal))
        return a is not None and b is not None and b.char_start <= a.char_end

    def _ordinals(self, run: _Run) -> list[int]:
        return [o for o in range(run.first, run.last + 1) if (run.document_id, o) in self.chunks]

    # --- text -----------------------------------------------------------------------------

    def text(self, run: _Run) -> tuple[str, list[int], int, int]:
        """The run's text (union of its chunks), the passage offsets where it may be cut, and the
        document range it covers."""
        text, cuts, anchors = self._text(run)
        return text, cuts, anchors[0][1], anchors[-1][1]

    def _text(self, run: _Run) -> tuple[str, list[int], list[tuple[int, int]]]:
        """Text, cut points and anchors: (passage offset, document offset) at each piece's start
        and at the end, to map passage offsets back to the document."""
        parts: list[str] = []
        cuts: list[int] = []
        anchors: list[tuple[int, int]] = []
        length = 0
        end = None
        for ordinal in self._ordinals(run):
            chunk = self.chunks[(run.document_id, ordinal)]
            if end is None:
                skip = 0
            elif chunk.char_start <= end:
                skip = end - chunk.char_start
            else:  # the next section: only the section separator lies between
                parts.append(SECTION_SEPARATOR)
                length += len(SECTION_SEPARATOR)
                skip = 0
            piece = chunk.text[skip:]
            base = length - skip  # passage offset of the chunk's first character
            cuts.append(length)
            for rel in _sentence_starts(chunk):
                if rel > skip:
                    cuts.append(base + rel)
            anchors.append((length, chunk.char_start + skip))
            parts.append(piece)
            length += len(piece)
            end = max(end or 0, chunk.char_end)
        cuts.append(length)
        assert end is not None
        anchors.append((length, end))
        return "".join(parts), sorted(set(cuts)), anchors

    def pages_heading(self, run: _Run) -> tuple[list[int], str | None]:
        pages = sorted({p for o in self._ordinals(run) if (p := self.chunks[(run.document_id, o)].page) is not None})
        best = self.chunks.get((run.document_id, run.best_ordinal))
        heading = best.heading if best is not None else None
        return pages, heading

    def header(self, run: _Run, n: int) -> str:
        source = self.sources.get(run.document_id) or Source(run.document_id)
        pages, heading = self.pages_heading(run)
        title = source.title or source.external_id or f"문서 {run.document_id[:8]}"
        if self.fmt == "markdown":
            title = f"**{_escape_markdown(title)}**"
        parts = [f"[{n}] {title}"]
        if pages:
            parts.append(_pages(pages))
        if heading:
            parts.append(" ".join(heading.split()))
        return " · ".join(parts)

    def render(self, run: _Run, n: int) -> tuple[str, str, int, int]:
        """The block (source line + passage), the passage text and its document range."""
        text, _, anchors = self._text(run)
        if run.cut is not None:
            text = text[: run.cut]
        stripped = text.strip()
        lead = len(text) - len(text.lstrip())
        trail = len(text) - len(text.rstrip())
        # A passage crossing a section keeps the separator; its document range is exact either way.
        return (
            f"{self.header(run, n)}\n{stripped}",
            stripped,
            _document_offset(anchors, lead),
            _document_offset(anchors, len(text) - trail),
        )

    # --- costs ----------------------------------------------------------------------------

    def _count_full(self, key: tuple[str, int]) -> int:
        if key not in self._full:
            chunk = self.chunks[key]
            stored = chunk.token_count if self.counter.name == "embedding" else None
            self._full[key] = stored if stored is not None else self.count(chunk.text)
        return self._full[key]

    def _count_piece(self, doc_id: str, ordinal: int) -> int:
        """Tokens chunk `ordinal` adds after chunk `ordinal - 1` (the part the two do not share)."""
        key = (doc_id, ordinal)
        if key not in self._piece:
            prev = self.chunks.get((doc_id, ordinal - 1))
            chunk = self.chunks[key]
            if prev is not None and chunk.char_start <= prev.char_end:
                piece = chunk.text[prev.char_end - chunk.char_start :]
                if chunk.token_count is not None and self.counter.name == "embedding":
                    # the chunk's stored count, shared by characters (rounded up: a plan that
                    # comes out over budget costs a second count of the whole context)
                    self._piece[key] = -(-chunk.token_count * len(piece) // max(len(chunk.text), 1)) + 1
                else:
                    self._piece[key] = self.count(piece)
            else:
                self._piece[key] = self._count_full(key) + self.separator_cost
        return self._piece[key]

    def cost(self, run: _Run) -> int:
        """Planned tokens of the run's block: source line, first chunk, then each chunk's new part."""
        ordinals = self._ordinals(run)
        total = self.count(self.header(run, 99) + "\n") + self._count_full((run.document_id, ordinals[0]))
        for prev, ordinal in itertools.pairwise(ordinals):
            total += (
                self._count_piece(run.document_id, ordinal)
                if ordinal == prev + 1
                else self._count_full((run.document_id, ordinal)) + self.separator_cost
            )
        return total

    def trim(self, run: _Run, room: int) -> bool:
        """Cut the run at the last sentence boundary whose block fits in `room` tokens; False if
        not even its first sentence fits."""
        if room <= 0:
            return False
        text, cuts, _, _ = self.text(run)
        header = self.header(run, 99) + "\n"
        candidates = [c for c in cuts if c > 0 and text[:c].strip()]
        lo, hi, best = 0, len(candidates) - 1, None
        while lo <= hi:
            mid = (lo + hi) // 2
            cost = self.count(header + text[: candidates[mid]].strip())
            if cost <= room:
                best = (candidates[mid], cost)
                lo = mid + 1
            else:
                hi = mid - 1
        if best is None:
            return False
        run.cut, run.cost = best
        return True

    # --- neighbours -----------------------------------------------------------------------

    def add_neighbors(self, selected: list[_Run], neighbors: int, budget: int, used: int) -> int:
        """Grow the runs by whole neighbouring chunks, nearest first, best passage first."""
        for _ in range(neighbors):
            for run in list(selected):
                if run not in selected:  # merged into a better run meanwhile
                    continue
                for side in (1, -1):
                    used = self._grow(run, side, selected, budget, used)
        return used

    def _grow(self, run: _Run, side: int, selected: list[_Run], budget: int, used: int) -> int:
        ordinal = run.last + 1 if side > 0 else run.first - 1
        if (run.document_id, ordinal) not in self.chunks:
            return used
        other = next(
            (r for r in selected if r is not run and r.document_id == run.document_id and r.first <= ordinal <= r.last),
            None,
        )
        grown = _Run(
            run.document_id, min(run.first, ordinal), max(run.last, ordinal), run.best_rank, run.score, run.best_ordinal
        )
        if other is not None:
            # The neighbour is part of another passage of the same document: the two become one.
            grown.first, grown.last = min(grown.first, other.first), max(grown.last, other.last)
        else:
            touching = next(
                (
                    r
                    for r in selected
                    if r is not run
                    and r.document_id == run.document_id
                    and (r.first == grown.last + 1 or r.last == grown.first - 1)
                ),
                None,
            )
            if touching is not None:
                other = touching
                grown.first, grown.last = min(grown.first, other.first), max(grown.last, other.last)
        grown.cost = self.cost(grown)
        freed = run.cost + (other.cost + self.separator_cost if other is not None else 0)
        if used - freed + grown.cost > budget:
            return used
        run.first, run.last, run.cost = grown.first, grown.last, grown.cost
        if other is not None:
            if other.best_rank < run.best_rank:
                run.best_rank, run.score, run.best_ordinal = other.best_rank, other.score, other.best_ordinal
            selected.remove(other)
            selected.sort(key=lambda r: (r.best_rank, r.document_id, r.first))
        return used - freed + grown.cost

    # --- the exact count ------------------------------------------------------------------

    def finish(self, selected: list[_Run], budget: int) -> Assembly:
        """Render, count the whole context, and trim whole sentences from its end while over."""
        while True:
            blocks = [self.render(run, n) for n, run in enumerate(selected, start=1)]
            context = PASSAGE_SEPARATOR.join(block for block, _, _, _ in blocks)
            tokens = self.count(context) if context else 0
            if tokens <= budget:
                break
            last = selected[-1]
            text, cuts, _, _ = self.text(last)
            limit = last.cut if last.cut is not None else len(text)
            shorter = [c for c in cuts if 0 < c < limit and text[:c].strip()]
            if shorter:
                last.cut = shorter[-1]
            else:
                selected.pop()
        passages = []
        for n, (run, (_, text, start, end)) in enumerate(zip(selected, blocks), start=1):
            pages, heading = self.pages_heading(run)
            passages.append(
                Passage(
                    n=n,
                    source=self.sources.get(run.document_id) or Source(run.document_id),
                    pages=pages,
                    heading=heading,
                    char_start=start,
                    char_end=end,
                    score=run.score,
                    best_rank=run.best_rank,
                    text=text,
                    trimmed=run.cut is not None,
                )
            )
        return Assembly(context=context, token_count=tokens, passages=passages)


def _document_offset(anchors: list[tuple[int, int]], offset: int) -> int:
    """The document offset of passage offset `offset` (inside a piece, or at the end of one)."""
    i = bisect.bisect_right(anchors, (offset, float("inf"))) - 1
    passage_at, document_at = anchors[max(i, 0)]
    return document_at + (offset - passage_at)


def _sentence_starts(chunk: ChunkText) -> Sequence[int]:
    if chunk.sentence_starts is not None:
        return chunk.sentence_starts
    return [m.end() for m in _SENTENCE_END.finditer(chunk.text) if m.end() < len(chunk.text)]


def _pages(pages: list[int]) -> str:
    if len(pages) == 1:
        return f"p. {pages[0]}"
    if pages == list(range(pages[0], pages[-1] + 1)):
        return f"pp. {pages[0]}–{pages[-1]}"
    return "pp. " + ", ".join(map(str, pages))


_MARKDOWN_SPECIAL = re.compile(r"([\\`*_\[\]])")


def _escape_markdown(text: str) -> str:
    return _MARKDOWN_SPECIAL.sub(r"\\\1", " ".join(text.split()))


def sentence_cut_points(text: str, starts: Sequence[int] | None) -> list[int]:
    """Offsets where `text` may be cut (sentence starts and its end); for tests and callers that
    check a context ends on a boundary."""
    points = list(starts) if starts is not None else [m.end() for m in _SENTENCE_END.finditer(text)]
    points.append(len(text))
    return sorted({p for p in points if 0 < p <= len(text)})


__all__ = [
    "Assembly",
    "ChunkText",
    "Hit",
    "Passage",
    "Source",
    "TokenCounter",
    "assemble",
    "sentence_cut_points",
]
