"""Korean morpheme analysis (Kiwi) for sentence splitting, sparse BM25 vectors and highlights.

One Kiwi pass (``tokenize(..., split_sents=True)``) gives both the sentences the chunker
packs and the morphemes the sparse vectors are built from.

Which morphemes become terms (Sejong tag set as Kiwi uses it), and why:

* kept: common and proper nouns NNG/NNP, numerals NR, roots XR (the 깨끗 of 깨끗하다),
  verb and adjective stems VV/VA (regular and irregular, ``VA-I`` etc.; the stem as Kiwi
  lemmatizes it: 만났다 -> 만나), foreign words SL (NFKC + lower-cased), numbers SN
  (thousands separators removed: 1,000 == 1000), hanja SH, and Kiwi's pattern tokens
  URL/e-mail/hashtag/mention (W_*) and serials such as dates or phone numbers (W_SERIAL);
* dropped: particles J*, endings E*, the copula VCP/VCN, prefixes XP* and suffixes XS*
  (들/성/적/하 alone carry little meaning; the noun they attach to is kept), dependent
  nouns NNB (것, 수, 등, 년 after a number), pronouns NP, auxiliary predicates VX,
  adverbs/determiners/interjections, and punctuation and symbols S* other than SL/SN/SH.

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
Bigram terms have tag ``"<tag1>+<tag2>"`` and span both parts.
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
    "KoreanAnalyzer",
    "Sentence",
    "Term",
    "get_analyzer",
    "stem_spans",
    "tag_class",
    "term_id",
    "terms_in_span",
]


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


# Kiwi tag (without the -R/-I regularity suffix) -> hashing class; absent tags are dropped.
_TAG_CLASS: dict[str, str] = {
    "NNG": "N",
    "NNP": "N",
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
        for token in tokens:
            tag = token.tag
            cls = _TAG_CLASS.get(tag)
            if cls is None:
                if "-" not in tag:
                    continue
                cls = _TAG_CLASS.get(tag.split("-", 1)[0])
                if cls is None:
                    continue
            start = offset + token.start
            if cls == "N" and token.len <= 2 and self._stray_particle(text, start, start + token.len):
                continue
            term = Term(_term_form(token.form, cls), tag, start, start + token.len)
            out.append(term)
            if self.bigrams and previous is not None:
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

    def highlights(
        self, text: str, query: str | Sequence[Term], stems: Sequence[Sequence[int]] | None = None
    ) -> list[tuple[int, int]]:
        """Merged, sorted char spans of ``text`` where the query's content morphemes occur.

        Morpheme-aware (query 서울 highlights the 서울 of 서울에서; 만나다 highlights 만났).
        ``query``: the raw query or its :meth:`query_terms`. ``stems``: the text's
        :func:`stem_spans`, if stored; without them the text is analyzed.
        """
        return self.highlights_many([text], query, [stems])[0]

    def highlights_many(
        self,
        texts: Sequence[str],
        query: str | Sequence[Term],
        stems: Sequence[Sequence[Sequence[int]] | None] | None = None,
    ) -> list[list[tuple[int, int]]]:
        """:meth:`highlights` of each text, for one query (a page of search results).

        Nouns, numbers and foreign words keep their surface inside an eojeol (서울 in
        서울에서), so a plain search finds them without Kiwi. Verb and adjective stems
        conjugate: their places come from the text's stored :func:`stem_spans` (``stems[i]``)
        or, where none are stored, from analyzing the words around places where their
        surface can occur (one word of context either side; the whole text when those
        windows cover most of it), all texts' windows in one Kiwi call.
        """
        stems = list(stems) if stems is not None else [None] * len(texts)
        if len(stems) != len(texts):
            raise ValueError("stems must be None or have one entry per text")
        wanted = {_key(t) for t in (self.query_terms(query) if isinstance(query, str) else query)}
        spans: list[list[tuple[int, int]]] = [[] for _ in texts]
        if not wanted:
            return spans
        # Patterns built once per query; noun-noun bigrams (국민연금공단) are searched as well.
        surface = _needle_pattern(key for key in wanted if key[0] not in ("V", "B"))
        verbs = {key for key in wanted if key[0] == "V"}
        verb_needles = _needle_pattern(verbs)
        verb_ids = {_cached_term_id(form, "V") for _, form in verbs}
        pieces: list[tuple[int, int, int]] = []  # (text index, window start, window end) to analyze
        for index, (text, stored) in enumerate(zip(texts, stems)):
            if not text or text.isspace():
                continue
            spans[index] = _surface_spans(_fold_width(text), surface)
            if not verbs:
                continue
            if stored is not None:
                spans[index] += [(start, end) for tid, start, end in stored if tid in verb_ids]
                continue
            windows = _candidate_windows(text, verb_needles)
            pieces.extend((index, a, b) for a, b in ([(0, len(text))] if windows is None else windows))
        if pieces:
            analyzed = self.analyze_many([texts[i][a:b] for i, a, b in pieces])
            for (index, a, _), sentences in zip(pieces, analyzed):
                spans[index] += [
                    (t.start + a, t.end + a)
                    for sentence in sentences
                    for t in sentence.terms
                    if "+" not in t.tag and t.end > t.start and _key(t) in verbs
                ]
        return [_merge_spans(s) for s in spans]


def stem_spans(terms: Iterable[Term], *, offset: int = 0) -> list[list[int]]:
    """[term id, start - offset, end - offset] of each verb or adjective stem among ``terms``:
    stored with a chunk (offset = the chunk's start) so :meth:`KoreanAnalyzer.highlights`
    finds conjugated stems without analyzing the chunk again."""
    return [
        [_cached_term_id(t.form, "V"), t.start - offset, t.end - offset]
        for t in terms
        if tag_class(t.tag) == "V" and t.end > t.start
    ]  # bigrams are class N or B


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


def _surface_spans(text: str, pattern: re.Pattern | None) -> list[tuple[int, int]]:
    """Where the surfaces of non-conjugating terms (``pattern``) occur; ASCII words only as whole words."""
    if pattern is None:
        return []
    spans = []
    for match in pattern.finditer(text):
        start, end = match.span()
        if match.group().isascii() and (
            (start > 0 and text[start - 1].isascii() and text[start - 1].isalnum())
            or (end < len(text) and text[end].isascii() and text[end].isalnum())
        ):
            continue  # "ai" inside "maintain"
        spans.append((start, end))
    return spans


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


def terms_in_span(sentences: Sequence[Sentence], start: int, end: int) -> list[Term]:
    """Terms of ``sentences`` lying inside ``[start, end)``, e.g. one chunk's terms."""
    return [
        term
        for sentence in sentences
        if sentence.end > start and sentence.start < end
        for term in sentence.terms
        if term.start >= start and term.end <= end
    ]


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
