"""Korean morpheme analysis (Kiwi) for sentence splitting, sparse BM25 vectors and highlights.

One Kiwi pass (``tokenize(..., split_sents=True)``) gives both the sentences the chunker
packs and the morphemes the sparse vectors are built from.

Which morphemes become terms (Sejong tag set as Kiwi uses it), and why:

* kept: common and proper nouns NNG/NNP, dependent nouns NNB other than the functional ones
  (below), numerals NR, roots XR (the 깨끗 of 깨끗하다), verb and adjective stems VV/VA
  (regular and irregular, ``VA-I`` etc.; the stem as Kiwi lemmatizes it: 만났다 -> 만나),
  foreign words SL (NFKC + lower-cased), numbers SN (thousands separators removed:
  1,000 == 1000), hanja SH, and Kiwi's pattern tokens URL/e-mail/hashtag/mention (W_*) and
  serials such as dates or phone numbers (W_SERIAL);
* dropped: particles J*, endings E*, the copula VCP/VCN, prefixes XP* and suffixes XS*
  (들/성/적/하 alone carry little meaning; the noun they attach to is kept), the functional
  dependent nouns (것, 수, 등, 때문, 데, 바 …), pronouns NP, auxiliary predicates VX,
  adverbs/determiners/interjections, and punctuation and symbols S* other than SL/SN/SH.

Dependent (bound) nouns: Kiwi tags two different kinds NNB. Korean grammar tells them apart:
unit nouns (단위성 의존명사: 리터, 갤런, 그램, 퍼센트, 달러, 원, 개, 명, 살, 년, 조, 호 …) name
what a number counts or measures and carry meaning, alone (리터는 몇 갤런인가요?) or after a
number (3개, 1,000원); they are an open class (every new unit or currency joins it). The
functional ones (보편성/주어성/서술성/부사성 의존명사: 것, 수, 데, 바, 줄, 뿐, 때문, 채, 듯 …,
plus the relational 중, 내, 외, 간, 측) only turn a clause or a noun into a noun phrase or
an adverbial; they are a small closed class, listed in ``_FUNCTIONAL_NOUNS``, and only they
are dropped. A few of them double as counters right after a numeral (1등 first place, 5분
five minutes, 3시 three o'clock, 2차 second round, 두 분 two people): a bound noun right
after a number, a numeral (NR) or a numeral determiner (한, 두, 몇, 여러 …) is a unit
whatever its form. Queries and documents go through the same rule (:meth:`KoreanAnalyzer.terms`).

Tag classes for hashing: nouns, numerals and roots are one class ``N`` (Kiwi may tag the
same surface NNG in one context and NNP or XR in another), verb and adjective stems ``V``,
foreign words ``SL``, numbers and serials ``SN``, hanja ``SH``, web patterns ``W``. So
서울, 서울은, 서울에서 and 서울의 all produce the term ``N:서울``.

Bigrams (``bigrams=True``): each pair of consecutive content terms inside one sentence
adds the concatenation of the two as an extra term. Korean writes compound nouns both
spaced and unspaced (지방 은행 / 지방은행) and Kiwi splits unspaced compounds into parts
(탄소중립 -> 탄소 + 중립) unless its dictionary holds the whole word (국민연금공단); a
noun-noun bigram is hashed in the noun class ``N`` so that all three spellings meet. Other
pairs (noun + verb stem etc.) go to class ``B``, where they act as phrase evidence.
Bigram terms have tag ``"<tag1>+<tag2>"`` and span both parts. A number opens a phrase, the
quantity it forms with the unit or noun after it: it pairs with what follows (3개, 제65조 ->
65조) and with the term before it only when written together with it (코로나19). So
공무원연금법 제65조 제1항 adds 65조 and 1항 but not 법65 or 조1: without this, every unit
kept (조, 항, 년, 월) would chain the numbers of a citation or a date into pairs that only
repeat it, over-weighting the passages that cite it most often.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import re
import threading
import unicodedata
import warnings
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache

from services.ingest.normalize import normalize_text
from services.vectors import SparseVector

__all__ = [
    "ANALYZER_VERSION",
    "KoreanAnalyzer",
    "Sentence",
    "StoredSpans",
    "Term",
    "analyzer_version",
    "get_analyzer",
    "tag_class",
    "term_id",
    "term_spans",
]

# Bump whenever the same text would give other sparse vectors or term spans: which morphemes are
# terms, their forms, tag classes, hashing, bigrams or the BM25 weighting. A collection records
# the version its chunks were analysed with (with the Kiwi release, whose model splits and tags
# too); `saekin reindex --sparse-only` brings an older one up to date without re-embedding.
ANALYZER_VERSION = "3"


@lru_cache(maxsize=1)
def analyzer_version() -> str:
    """This code's analyzer version with the Kiwi release, e.g. ``3/kiwipiepy-0.24.0``."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        kiwi = version("kiwipiepy")
    except PackageNotFoundError:  # pragma: no cover - kiwipiepy is a dependency
        kiwi = "unknown"
    return f"{ANALYZER_VERSION}/kiwipiepy-{kiwi}"


@dataclass(frozen=True)
class Term:
    """A content morpheme (or a bigram of two) with its char span in the analyzed text."""

    form: str
    tag: str
    start: int
    end: int


@dataclass(frozen=True)
class Sentence:
    """One sentence: its char span in the analyzed text and its content terms."""

    start: int
    end: int
    terms: tuple[Term, ...]


#: What a chunk stores for highlighting (``chunks.term_spans``): see :meth:`KoreanAnalyzer.highlights_many`.
StoredSpans = dict[str, list[int]] | list[list[int]] | None


# Kiwi tag (without the -R/-I regularity suffix) -> hashing class; absent tags are dropped.
_TAG_CLASS: dict[str, str] = {
    "NNG": "N",
    "NNP": "N",
    "NNB": "N",  # dependent nouns other than _FUNCTIONAL_NOUNS: units, counters, currencies
    "NR": "N",
    "XR": "N",
    "VV": "V",
    "VA": "V",
    "SL": "SL",
    "SN": "SN",
    "SH": "SH",
    "W_SERIAL": "SN",
    "W_URL": "W",
    "W_EMAIL": "W",
    "W_HASHTAG": "W",
    "W_MENTION": "W",
}
# Case particles and the topic particle: written apart from their noun (spacing errors,
# common in OCR text) or typed alone, Kiwi reads them as nouns (은 "silver", 의 "justice").
# Homographs that are also common standalone nouns (도 province, 가 edge, 이 tooth, 만 bay)
# are not listed.
_PARTICLE_FORMS = frozenset(
    [
        "은",
        "는",
        "을",
        "를",
        "의",
        "에",
        "와",
        "과",
        "로",
        "으로",
        "에서",
        "에게",
        "께서",
        "부터",
        "까지",
        "처럼",
        "보다",
        "이나",
        "이며",
        "에는",
        "에도",
        "와의",
        "과의",
    ]
)
# The closed class of functional dependent nouns (NNB), dropped unless right after a numeral
# (see the module docstring); every other NNB is a unit or counter noun and kept. Grouped as
# Korean grammars group them: universal, subject-like, predicate-forming, adverbial, relational.
_FUNCTIONAL_NOUNS = frozenset(
    [
        *["것", "거", "꺼", "데", "바", "이", "분", "자", "적"],
        *["수", "지", "리", "나위", "여지"],
        *["뿐", "따름", "터", "때문", "셈", "노릇", "나름"],
        *["듯", "듯이", "채", "척", "체", "양", "뻔", "김", "줄", "만", "만큼", "대로", "바람", "탓", "통", "참"],
        *["판", "턱", "겸", "법", "등", "등등", "따위"],
        *["중", "내", "외", "간", "측", "상", "하", "시", "차", "즈음", "무렵", "녘", "께", "경", "이래"],
    ]
)
# Numeral determiners (수관형사): 두 분 and 몇 시 count, as 2분 and 3시 do.
_NUMERAL_DETERMINERS = frozenset(
    [
        *["한", "두", "세", "석", "서", "네", "넉", "너", "다섯", "여섯", "일곱", "여덟", "아홉", "열", "스무"],
        *["몇", "여러", "수", "한두", "두세", "서너", "두어", "너덧", "네댓", "대여섯", "예닐곱"],
    ]
)
_LOWERCASE_CLASSES = frozenset({"SL", "W"})
# Full-width ASCII (Ｋ, ＴＸ, １２３，０００; common in Korean documents) and the ideographic space, as
# ASCII. Kiwi reads the copy folded with this table: one character for one, so offsets into the
# original text stay valid, and ＫＴＸ meets KTX (Kiwi tags full-width letters SW and drops them).
_FOLD_WIDTH = {0xFF01 + i: 0x21 + i for i in range(94)} | {0x3000: 0x20}
_WIDE = re.compile("[\uff01-\uff5e\u3000]")
_SENTENCE_END = re.compile(r"[.?!。？！]\s")
_THOUSANDS = re.compile(r"^\d{1,3}(?:,\d{3})+(?:\.\d+)?$")


def _fold_width(text: str) -> str:
    # The search first: translate costs ~75 ns a character, and most texts have nothing to fold.
    return text.translate(_FOLD_WIDTH) if _WIDE.search(text) else text


@lru_cache(maxsize=4096)  # a few dozen tags and their pairs; called for every term of every chunk
def tag_class(tag: str) -> str | None:
    """Hashing class of a Kiwi tag or of a bigram tag ``"A+B"``; None for dropped tags."""
    if "+" in tag:
        left, _, right = tag.partition("+")
        return "N" if tag_class(left) == "N" and tag_class(right) == "N" else "B"
    return _TAG_CLASS.get(tag.split("-", 1)[0])


def term_id(form: str, tag_class: str) -> int:
    """Stable unsigned 32-bit id of a term: the first 4 bytes of blake2b("class:form")."""
    digest = hashlib.blake2b(f"{tag_class}:{form}".encode(), digest_size=4).digest()
    return int.from_bytes(digest, "big")


_cached_term_id = lru_cache(maxsize=1 << 18)(term_id)


def _term_form(form: str, cls: str) -> str:
    if cls in _LOWERCASE_CLASSES:
        if not form.isascii():
            form = unicodedata.normalize("NFKC", form)
        return form.lower()
    if cls == "SN" and "," in form and _THOUSANDS.match(form):
        return form.replace(",", "")
    return form


def _key(term: Term) -> tuple[str, str]:
    return (tag_class(term.tag) or "", term.form)


class KoreanAnalyzer:
    """Kiwi-based analyzer: sentences, content terms, BM25 sparse vectors and highlights.

    Texts given to :meth:`analyze`, :meth:`analyze_many`, :meth:`terms` and the ``text``
    of :meth:`highlights` are analyzed as they are (offsets refer to them): pass the output
    of :func:`normalize_text`. Queries (:meth:`query_vector`, the ``query`` of
    :meth:`highlights`) are normalized here.
    """

    #: Longest text handed to Kiwi in one piece; longer texts are cut at breaks.
    max_block_chars = 8192

    def __init__(
        self,
        *,
        num_workers: int = 0,
        k1: float = 1.2,
        b: float = 0.75,
        avg_doc_len: float = 256.0,
        bigrams: bool = True,
    ) -> None:
        if num_workers < 0:
            num_workers = os.cpu_count() or 1
        if k1 < 0 or not 0.0 <= b <= 1.0 or avg_doc_len <= 0:
            raise ValueError("need k1 >= 0, 0 <= b <= 1 and avg_doc_len > 0")
        from kiwipiepy import Kiwi

        with warnings.catch_warnings():
            # kiwipiepy warns that num_workers=0 means single-threaded since 0.21: intended.
            warnings.simplefilter("ignore", DeprecationWarning)
            self._kiwi = Kiwi(num_workers=num_workers, typos=None)
        self._kiwi.tokenize("")  # Kiwi initializes lazily: pay the load cost here, once.
        self.num_workers = num_workers
        self.k1 = float(k1)
        self.b = float(b)
        self.avg_doc_len = float(avg_doc_len)
        self.bigrams = bigrams

    @property
    def kiwi(self):
        """The Kiwi instance itself, for callers that need more than analysis (PDF line wraps)."""
        return self._kiwi

    # -- analysis ---------------------------------------------------------------------

    def analyze(self, text: str) -> list[Sentence]:
        """Split ``text`` into sentences and their content terms in one Kiwi pass."""
        return self.analyze_many([text])[0]

    def analyze_many(self, texts: Sequence[str]) -> list[list[Sentence]]:
        """:meth:`analyze` for many texts, spread over Kiwi's worker threads."""
        texts = list(texts)
        # Kiwi's cost grows faster than linearly with the length of one input (measured:
        # 25k chars 0.3 s, 200k chars 4.7 s, 1.2M chars 166 s), so long texts go to Kiwi
        # in blocks cut at paragraph or line breaks; every character is analyzed once.
        jobs: list[tuple[int, int, int]] = []  # (text index, block start, block end)
        for index, text in enumerate(texts):
            if text and not text.isspace():
                jobs.extend((index, a, b) for a, b in _blocks(text, self.max_block_chars))
        pieces = [_fold_width(texts[i][a:b]) for i, a, b in jobs]
        if self.num_workers > 0 and len(pieces) > 1:
            results = self._kiwi.tokenize(pieces, split_sents=True)
        else:
            results = (self._kiwi.tokenize(piece, split_sents=True) for piece in pieces)
        per_text: list[list[tuple[int, list]]] = [[] for _ in texts]
        for (index, a, _), sentences in zip(jobs, results):
            per_text[index].append((a, sentences))
        return [self._build(text, blocks) if blocks else [] for text, blocks in zip(texts, per_text)]

    def terms(self, text: str) -> list[Term]:
        """Content terms of ``text`` (bigrams included when enabled), in text order."""
        return [term for sentence in self.analyze(text) for term in sentence.terms]

    def _build(self, text: str, blocks: Iterable[tuple[int, list]]) -> list[Sentence]:
        spans: list[list] = []  # [start, end, block offset, tokens]
        for offset, kiwi_sents in blocks:
            for tokens in kiwi_sents:
                if not tokens:
                    continue
                start = offset + min(t.start for t in tokens)
                end = offset + max(t.start + t.len for t in tokens)
                if spans and start < spans[-1][1]:
                    if spans[-1][2] == offset:
                        # Overlapping sentences (should not happen): merge them.
                        spans[-1][1] = max(spans[-1][1], end)
                        spans[-1][3] = spans[-1][3] + list(tokens)
                        continue
                    start = spans[-1][1]
                spans.append([start, end, offset, tokens])
        if not spans:
            return []
        # Cover every non-space character: the first sentence starts at the first
        # non-space character, and text Kiwi left outside any sentence joins the sentence
        # before it (the first one when it precedes every sentence).
        first_non_space = len(text) - len(text.lstrip())
        spans[0][0] = min(spans[0][0], first_non_space)
        for current, following in itertools.pairwise(spans):
            gap = text[current[1] : following[0]]
            current[1] += len(gap.rstrip())
        spans[-1][1] = max(spans[-1][1], len(text.rstrip()))
        return [
            Sentence(start, end, self._sentence_terms(text, offset, tokens)) for start, end, offset, tokens in spans
        ]

    @staticmethod
    def _stray_particle(text: str, start: int, end: int) -> bool:
        """A particle written as a word of its own (정책 은, 서울 에서), which Kiwi reads as a noun."""
        return (
            text[start:end] in _PARTICLE_FORMS
            and (start == 0 or text[start - 1].isspace())
            and (end == len(text) or not text[end].isalnum())
        )

    def _sentence_terms(self, text: str, offset: int, tokens: Sequence) -> tuple[Term, ...]:
        out: list[Term] = []
        previous: Term | None = None
        for index, token in enumerate(tokens):
            tag = token.tag
            cls = _TAG_CLASS.get(tag)
            if cls is None:
                if "-" not in tag:
                    continue
                cls = _TAG_CLASS.get(tag.split("-", 1)[0])
                if cls is None:
                    continue
            if tag == "NNB" and token.form in _FUNCTIONAL_NOUNS and not _after_numeral(tokens, index):
                continue
            start = offset + token.start
            if cls == "N" and token.len <= 2 and self._stray_particle(text, start, start + token.len):
                continue
            term = Term(_term_form(token.form, cls), tag, start, start + token.len)
            out.append(term)
            # A number pairs with what follows it (3개, 65조), with what precedes it only when
            # written together (코로나19): see the module docstring.
            if self.bigrams and previous is not None and (cls != "SN" or previous.end == term.start):
                out.append(Term(previous.form + term.form, f"{previous.tag}+{tag}", previous.start, term.end))
            previous = term
        return tuple(out)

    # -- sparse vectors ---------------------------------------------------------------

    def document_vector(
        self,
        terms: Sequence[Term],
        *,
        k1: float | None = None,
        b: float | None = None,
        avg_doc_len: float | None = None,
    ) -> SparseVector:
        """BM25 term-frequency weights of a document's terms; Qdrant applies the IDF.

        k1, b and avg_doc_len default to the analyzer's; the pipeline passes the configured ones.
        """
        if not terms:
            return SparseVector()
        counts = Counter(_cached_term_id(t.form, tag_class(t.tag) or "") for t in terms)
        k1 = self.k1 if k1 is None else k1
        b = self.b if b is None else b
        norm = k1 * (1.0 - b + b * len(terms) / (avg_doc_len or self.avg_doc_len))
        indices = sorted(counts)
        values = [counts[i] * (k1 + 1.0) / (counts[i] + norm) for i in indices]
        return SparseVector(indices=indices, values=values)

    def query_terms(self, query: str) -> tuple[Term, ...]:
        """Content terms of a raw query (normalized here). A search analyzes its query once and
        passes the terms to :meth:`query_vector` and :meth:`highlights_many`."""
        return tuple(self.terms(normalize_text(query)))

    def query_vector(self, query: str | Sequence[Term]) -> SparseVector:
        """Query terms with their query frequency as weight; empty without content terms."""
        terms = self.query_terms(query) if isinstance(query, str) else query
        if not terms:
            return SparseVector()
        counts = Counter(_cached_term_id(t.form, tag_class(t.tag) or "") for t in terms)
        indices = sorted(counts)
        return SparseVector(indices=indices, values=[float(counts[i]) for i in indices])

    # -- highlights -------------------------------------------------------------------

    def highlights(self, text: str, query: str | Sequence[Term], spans: StoredSpans = None) -> list[tuple[int, int]]:
        """Merged, sorted char spans of ``text`` where its own content morphemes match the query's.

        Morpheme-aware and at the text's morpheme boundaries: query 서울 highlights the 서울 of
        서울에서, 만나다 highlights 만났, and the noun 기 highlights no part of 기후위기.
        ``query``: the raw query or its :meth:`query_terms`. ``spans``: the text's stored
        :func:`term_spans` (or what older chunks stored, see :meth:`highlights_many`).
        """
        return self.highlights_many([text], query, [spans])[0]

    def highlights_many(
        self, texts: Sequence[str], query: str | Sequence[Term], spans: Sequence[StoredSpans] | None = None
    ) -> list[list[tuple[int, int]]]:
        """:meth:`highlights` of each text, for one query (a page of search results).

        A text's highlights are the places of its morphemes whose term ids are the query's: its
        content morphemes and noun-noun bigrams (so 국민연금공단 meets 국민연금 공단 either way
        round). ``spans[i]`` is what the text's chunk stored at ingest:

        * ``{"<term id>": [start, end, ...], ...}`` (:func:`term_spans`): every content morpheme,
          so the text is not analyzed again;
        * a list ``[[id, start, end], ...]`` of verb and adjective stems only (chunks ingested
          before revision 0006), or None (before revision 0003): the stored stems are used as
          they are, and the text's other morphemes come from analyzing only the words around
          places where a query term's surface can occur (one word of context either side; the
          whole text when those windows cover most of it), all texts' windows in one Kiwi
          call. Kiwi reads each candidate word with its neighbours, so these chunks get the
          highlights new ones get in all but rare cases, at the cost of a small Kiwi pass per
          page of results until they are ingested again.
        """
        stored_spans = list(spans) if spans is not None else [None] * len(texts)
        if len(stored_spans) != len(texts):
            raise ValueError("spans must be None or have one entry per text")
        terms = self.query_terms(query) if isinstance(query, str) else query
        wanted = {_key(t) for t in terms if "+" not in t.tag or tag_class(t.tag) == "N"}
        out: list[list[tuple[int, int]]] = [[] for _ in texts]
        if not wanted:
            return out
        wanted_ids = {_cached_term_id(form, cls) for cls, form in wanted}
        verbs = {key for key in wanted if key[0] == "V"}
        verb_ids = {_cached_term_id(form, "V") for _, form in verbs}
        # Candidate patterns, built once per query: every term's, or (stems stored) all but verbs'.
        every_needle = _needle_pattern(wanted)
        non_verb_needle = _needle_pattern(wanted - verbs) if verbs else every_needle
        pieces: list[tuple[int, int, int, bool]] = []  # (text index, window start, end, stems stored)
        for index, (text, stored) in enumerate(zip(texts, stored_spans)):
            if not text or text.isspace():
                continue
            if isinstance(stored, dict):
                out[index] = _matching_spans(stored, wanted_ids)
                continue
            pattern = every_needle
            if stored is not None:
                out[index] = [(start, end) for tid, start, end in stored if tid in verb_ids]
                pattern = non_verb_needle
            windows = _candidate_windows(_fold_width(text), pattern)
            pieces.extend(
                (index, a, b, stored is not None) for a, b in ([(0, len(text))] if windows is None else windows)
            )
        if pieces:
            analyzed = self.analyze_many([texts[i][a:b] for i, a, b, _ in pieces])
            for (index, a, _, stems_stored), sentences in zip(pieces, analyzed):
                places = term_spans(t for sentence in sentences for t in sentence.terms)
                out[index] += _matching_spans(places, wanted_ids - verb_ids if stems_stored else wanted_ids, a)
        return [_merge_spans(s) for s in out]


def term_spans(terms: Iterable[Term], *, offset: int = 0) -> dict[str, list[int]]:
    """What a chunk stores so that :meth:`KoreanAnalyzer.highlights` needs no analysis of it:
    ``{"<term id>": [start, end, start, end, ...]}``, the places of each content morpheme and,
    for a noun-noun bigram, of its two parts (not the particle between 도 and 예산 in 도의
    예산), relative to ``offset`` (the chunk's start). Ids as in the sparse vectors."""
    places: dict[int, list[int]] = {}
    first_end: dict[int, int] = {}  # a morpheme's end by its start, to find a bigram's parts
    second_start: dict[int, int] = {}
    bigrams = []
    for t in terms:
        if t.end <= t.start:
            continue
        tid = _highlight_id(t.form, t.tag)
        if tid is None:  # a bigram of another class than N
            continue
        if "+" in t.tag:
            bigrams.append((tid, t))
            continue
        first_end[t.start] = t.end
        second_start[t.end] = t.start
        if tid in places:
            places[tid] += (t.start - offset, t.end - offset)
        else:
            places[tid] = [t.start - offset, t.end - offset]
    for tid, t in bigrams:
        if t.start in first_end and t.end in second_start:
            parts = [t.start - offset, first_end[t.start] - offset, second_start[t.end] - offset, t.end - offset]
            if tid in places:
                places[tid] += parts
            else:
                places[tid] = parts
    return {str(tid): spans for tid, spans in places.items()}


@lru_cache(maxsize=1 << 18)
def _highlight_id(form: str, tag: str) -> int | None:
    """Term id of a morpheme or a noun-noun bigram; None for other bigrams (phrase evidence for
    ranking only: their parts are highlighted on their own)."""
    cls = tag_class(tag) or ""
    return None if "+" in tag and cls != "N" else _cached_term_id(form, cls)


def _matching_spans(places: dict[str, list[int]], ids: Iterable[int], shift: int = 0) -> list[tuple[int, int]]:
    """Spans (shifted by ``shift``) of the :func:`term_spans` ``places`` of the term ids ``ids``."""
    spans = []
    for tid in ids:
        flat = places.get(str(tid))
        if flat:
            spans += [(flat[i] + shift, flat[i + 1] + shift) for i in range(0, len(flat), 2)]
    return spans


def _after_numeral(tokens: Sequence, index: int) -> bool:
    """Whether ``tokens[index]`` follows a number, a numeral or a numeral determiner (3분, 삼 분,
    두 분), a noun suffix such as 여 ("some": 10여 분) in between."""
    index -= 1
    while index >= 0 and tokens[index].tag == "XSN":
        index -= 1
    if index < 0:
        return False
    tag = tokens[index].tag
    return tag in ("SN", "NR") or (tag == "MM" and tokens[index].form in _NUMERAL_DETERMINERS)


def _merge_spans(spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    merged: list[tuple[int, int]] = []
    for start, end in sorted(spans):
        if merged and start <= merged[-1][1]:
            if end > merged[-1][1]:
                merged[-1] = (merged[-1][0], end)
        else:
            merged.append((start, end))
    return merged


def _needle_pattern(wanted: Iterable[tuple[str, str]]) -> re.Pattern | None:
    """One regex for the :func:`_needles` of ``wanted`` (longest first), built once per query."""
    needles = _needles(wanted)
    if not needles:
        return None
    return re.compile("|".join(map(re.escape, sorted(needles, key=len, reverse=True))), re.IGNORECASE)


def _needles(wanted: Iterable[tuple[str, str]]) -> set[str]:
    """Strings one of which must occur in the text where a wanted term can occur."""
    needles: set[str] = set()
    for cls, form in wanted:
        if not form:
            continue
        if cls == "V":
            # Conjugation can change a stem's last syllable (만나 -> 만났, 아름답 -> 아름다운);
            # one-syllable stems are searched as they are (irregular forms such as 했 for
            # 하 are not highlighted: those are the commonest, least telling verbs).
            needles.add(form[:-1] if len(form) > 1 else form)
        elif cls == "SN" and form.isdigit() and len(form) > 3:
            needles.update({form, f"{int(form):,}"})
        else:
            needles.add(form)
    return needles


def _word_start(text: str, i: int) -> int:
    while i > 0 and not text[i - 1].isspace():
        i -= 1
    return i


def _word_end(text: str, i: int) -> int:
    n = len(text)
    while i < n and not text[i].isspace():
        i += 1
    return i


def _candidate_windows(text: str, pattern: re.Pattern | None) -> list[tuple[int, int]] | None:
    """Merged windows of text (words with a needle of ``pattern``, plus one word each side) or
    None when they would cover more than half of the text."""
    if pattern is None:
        return []
    windows: list[tuple[int, int]] = []
    n = len(text)
    for match in pattern.finditer(text):
        start = _word_start(text, match.start())
        previous = start
        while previous > 0 and text[previous - 1].isspace():
            previous -= 1
        if previous > 0:
            start = _word_start(text, previous)
        end = _word_end(text, match.end())
        following = end
        while following < n and text[following].isspace():
            following += 1
        if following < n:
            end = _word_end(text, following)
        if windows and start <= windows[-1][1]:
            windows[-1] = (windows[-1][0], max(end, windows[-1][1]))
        else:
            windows.append((start, end))
    if sum(b - a for a, b in windows) > n // 2:
        return None
    return windows


def _blocks(text: str, size: int) -> list[tuple[int, int]]:
    """Cut ``text`` into consecutive blocks of at most ``size`` chars, at natural breaks.

    A cut goes, in order of preference, after a blank line, after a line break, after a
    sentence-final mark followed by whitespace, or after whitespace, in the second half of
    the window; only text without any of these is cut hard.
    """
    n = len(text)
    if n <= size:
        return [(0, n)]
    out: list[tuple[int, int]] = []
    start = 0
    while n - start > size:
        lo, hi = start + size // 2, start + size
        cut = text.rfind("\n\n", lo, hi)
        if cut != -1:
            cut += 2
        else:
            cut = text.rfind("\n", lo, hi)
            if cut != -1:
                cut += 1
            else:
                ends = [m.end() for m in _SENTENCE_END.finditer(text, lo, hi)]
                if ends:
                    cut = ends[-1]
                else:
                    space = max(text.rfind(" ", lo, hi), text.rfind("\t", lo, hi))
                    cut = space + 1 if space != -1 else hi
        out.append((start, cut))
        start = cut
    out.append((start, n))
    return out


_analyzer: KoreanAnalyzer | None = None
_analyzer_lock = threading.Lock()


def get_analyzer() -> KoreanAnalyzer:
    """The process-wide analyzer, loaded on first use (Kiwi: ~3 s, ~0.5 GB)."""
    global _analyzer
    if _analyzer is None:
        with _analyzer_lock:
            if _analyzer is None:
                cores = os.cpu_count() or 1
                _analyzer = KoreanAnalyzer(num_workers=cores if cores > 1 else 0)
    return _analyzer
