"""Context assembly: properties over generated documents (hypothesis) and a few worked examples."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.context.assembly import ChunkText, Hit, Source, assemble

WORDS = [
    "탄소중립",
    "기본법은",
    "지방자치단체는",
    "이행계획을",
    "수립해야",
    "한다",
    "정부는",
    "목표를",
    "세웠다",
    "점검한다",
]


class WordCounter:
    """Tokens = whitespace-separated words (close to additive)."""

    name = "words"

    def count(self, text: str) -> int:
        return len(text.split())

    def count_many(self, texts: Sequence[str]) -> list[int]:
        return [self.count(t) for t in texts]


class CeilCounter:
    """Tokens = ceil(characters / 3): deliberately not additive over concatenation."""

    name = "ceil3"

    def count(self, text: str) -> int:
        return math.ceil(len(text) / 3)

    def count_many(self, texts: Sequence[str]) -> list[int]:
        return [self.count(t) for t in texts]


@dataclass
class Doc:
    id: str
    text: str
    chunks: list[ChunkText]


def make_doc(doc_index: int, sections: list[list[int]], overlap: int, pages: bool) -> Doc:
    """A document of sections of sentences `D{d}S{i} words.`; chunks pack whole sentences, each
    chunk's core sizes given, starting with up to `overlap` trailing sentences of the previous
    chunk's core (never all of it), as the chunker does; chunks never cross sections."""
    doc_id = f"00000000-0000-0000-0000-{doc_index:012d}"
    text = ""
    chunks: list[ChunkText] = []
    sentence_no = 0
    for s_index, core_sizes in enumerate(sections):
        if s_index:
            text += "\n\n"
        starts: list[int] = []
        ends: list[int] = []
        section_start = len(text)
        total = sum(core_sizes)
        for i in range(total):
            words = " ".join(WORDS[(sentence_no * 7 + k) % len(WORDS)] for k in range(1 + sentence_no % 4))
            sentence = f"D{doc_index}S{sentence_no} {words}."
            starts.append(len(text))
            text += sentence
            ends.append(len(text))
            if i < total - 1:
                text += " "
            sentence_no += 1
        # unit i runs from sentence i's start to sentence i+1's start (trailing space travels with it)
        unit_end = [*starts[1:], len(text)]
        core_start = 0
        prev_core: tuple[int, int] | None = None
        for size in core_sizes:
            first = core_start
            if prev_core is not None and overlap:
                first = max(prev_core[0] + 1, core_start - overlap)
            a, b = starts[first], unit_end[core_start + size - 1]
            inside = [s - a for s in starts if a < s < b]
            chunks.append(
                ChunkText(
                    document_id=doc_id,
                    ordinal=len(chunks),
                    char_start=a,
                    char_end=b,
                    text=text[a:b],
                    page=(s_index + 1) if pages else None,
                    heading=f"제{s_index + 1}장",
                    sentence_starts=inside,
                )
            )
            prev_core = (core_start, core_start + size)
            core_start += size
        assert core_start == total and section_start <= starts[0]
    return Doc(doc_id, text, chunks)


@st.composite
def scenarios(draw):
    n_docs = draw(st.integers(1, 3))
    overlap = draw(st.integers(0, 2))
    docs = [
        make_doc(
            d,
            draw(st.lists(st.lists(st.integers(1, 4), min_size=1, max_size=4), min_size=1, max_size=3)),
            overlap,
            draw(st.booleans()),
        )
        for d in range(n_docs)
    ]
    all_chunks = [(doc, c) for doc in docs for c in doc.chunks]
    picked = draw(st.lists(st.sampled_from(range(len(all_chunks))), min_size=1, max_size=8, unique=True))
    hits = [
        Hit(rank=r, score=1.0 / r, document_id=all_chunks[i][1].document_id, ordinal=all_chunks[i][1].ordinal)
        for r, i in enumerate(picked, start=1)
    ]
    return docs, hits, draw(st.integers(1, 400)), draw(st.integers(0, 3)), draw(st.sampled_from(["markdown", "text"]))


def _run(docs, hits, budget, neighbors, fmt, counter):
    chunks = {(c.document_id, c.ordinal): c for doc in docs for c in doc.chunks}
    sources = {doc.id: Source(doc.id, title=f"문서 *{doc.id[-1]}*", external_id=f"ext-{doc.id[-1]}") for doc in docs}
    return assemble(hits, chunks, sources, counter=counter, max_tokens=budget, neighbors=neighbors, fmt=fmt)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios(), st.sampled_from([WordCounter(), CeilCounter()]))
def test_assembly_properties(scenario, counter):
    docs, hits, budget, neighbors, fmt = scenario
    result = _run(docs, hits, budget, neighbors, fmt, counter)
    texts = {doc.id: doc.text for doc in docs}

    # never over budget, and the count is the context's own
    assert result.token_count == (counter.count(result.context) if result.context else 0)
    assert result.token_count <= budget

    sentences = re.findall(r"D\d+S\d+", result.context)
    assert len(sentences) == len(set(sentences)), "a sentence appears twice"

    ranks = [p.best_rank for p in result.passages]
    assert ranks == sorted(ranks), "passages are ordered by their best hit"
    assert [p.n for p in result.passages] == list(range(1, len(result.passages) + 1))
    for p in result.passages:
        # the citation's text is in the context, right after its marker line, and is exactly the
        # document's text at the cited range (so in document order, overlap once)
        assert p.text in result.context
        assert result.context.count(f"[{p.n}] ") >= 1
        assert texts[p.source.document_id][p.char_start : p.char_end] == p.text
        numbers = [int(m) for m in re.findall(r"D\d+S(\d+)", p.text)]
        assert numbers == sorted(numbers)
        assert p.text.endswith("."), "a passage ends at a sentence boundary"
    # only the last passage may be trimmed
    assert all(not p.trimmed for p in result.passages[:-1])

    # deterministic
    assert _run(docs, hits, budget, neighbors, fmt, counter) == result


def test_touching_hits_merge_and_the_overlap_appears_once():
    doc = make_doc(0, [[2, 2, 2]], overlap=1, pages=True)
    hits = [Hit(1, 3.0, doc.id, 1), Hit(2, 2.0, doc.id, 0)]
    result = _run([doc], hits, 10_000, 0, "text", WordCounter())
    assert len(result.passages) == 1
    p = result.passages[0]
    assert p.text == doc.text[doc.chunks[0].char_start : doc.chunks[1].char_end].strip()
    assert result.context.startswith("[1] 문서 *0* · p. 1 · 제1장\nD0S0")
    assert p.best_rank == 1 and p.score == 3.0


def test_neighbours_are_added_while_the_budget_allows():
    doc = make_doc(0, [[1, 1, 1, 1, 1]], overlap=0, pages=False)
    hit = [Hit(1, 1.0, doc.id, 2)]
    alone = _run([doc], hit, 10_000, 0, "text", WordCounter())
    around = _run([doc], hit, 10_000, 1, "text", WordCounter())
    wide = _run([doc], hit, 10_000, 5, "text", WordCounter())
    assert re.findall(r"S\d+", alone.context) == ["S2"]
    assert re.findall(r"S\d+", around.context) == ["S1", "S2", "S3"]
    assert re.findall(r"S\d+", wide.context) == ["S0", "S1", "S2", "S3", "S4"]
    tight = _run([doc], hit, alone.token_count + 3, 2, "text", WordCounter())
    assert "S2" in tight.context and tight.token_count <= alone.token_count + 3


def test_the_last_passage_is_trimmed_at_a_sentence_and_nothing_follows_it():
    big = make_doc(0, [[6]], overlap=0, pages=False)
    small = make_doc(1, [[1]], overlap=0, pages=False)
    hits = [Hit(1, 2.0, big.id, 0), Hit(2, 1.0, small.id, 0)]
    full = _run([big, small], hits, 10_000, 0, "text", WordCounter())
    budget = full.passages[0].text.count(" ") // 2 + 8
    cut = _run([big, small], hits, budget, 0, "text", WordCounter())
    assert len(cut.passages) == 1 and cut.passages[0].trimmed
    assert cut.passages[0].text.endswith(".") and cut.token_count <= budget
    assert big.text.startswith(cut.passages[0].text)


def test_a_budget_too_small_for_one_sentence_gives_an_empty_context():
    doc = make_doc(0, [[3]], overlap=0, pages=False)
    result = _run([doc], [Hit(1, 1.0, doc.id, 0)], 2, 1, "text", WordCounter())
    assert result.context == "" and result.passages == [] and result.token_count == 0


def test_markdown_escapes_the_title_and_text_format_does_not():
    doc = make_doc(0, [[1]], overlap=0, pages=True)
    md = _run([doc], [Hit(1, 1.0, doc.id, 0)], 1000, 0, "markdown", WordCounter())
    text = _run([doc], [Hit(1, 1.0, doc.id, 0)], 1000, 0, "text", WordCounter())
    assert md.context.startswith("[1] **문서 \\*0\\*** · p. 1 · 제1장\n")
    assert text.context.startswith("[1] 문서 *0* · p. 1 · 제1장\n")


def test_a_passage_across_sections_keeps_the_separator_and_lists_its_pages():
    doc = make_doc(0, [[1], [1]], overlap=0, pages=True)
    result = _run([doc], [Hit(1, 1.0, doc.id, 0), Hit(2, 0.5, doc.id, 1)], 1000, 0, "text", WordCounter())
    assert len(result.passages) == 1
    assert result.passages[0].pages == [1, 2] and "\n\n" in result.passages[0].text
    assert " · pp. 1–2 · " in result.context
