import copy
import hashlib
import itertools
import json
import os
import subprocess
import sys
import unicodedata
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from services.ingest.analyzer import (
    KoreanAnalyzer,
    Sentence,
    Term,
    get_analyzer,
    tag_class,
    term_id,
    term_spans,
)
from services.ingest.normalize import normalize_text
from services.vectors import SparseVector

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def analyzer() -> KoreanAnalyzer:
    return get_analyzer()


def keys(analyzer, text):
    return {(tag_class(t.tag), t.form) for t in analyzer.terms(text)}


def ids(vector: SparseVector) -> set[int]:
    return set(vector.indices)


def test_get_analyzer_is_a_singleton(analyzer):
    assert get_analyzer() is analyzer


# -- particles, endings, classes ----------------------------------------------------------


@pytest.mark.parametrize("word", ["서울", "서울은", "서울에서", "서울의", "서울로", "서울까지"])
def test_particles_do_not_change_the_term(analyzer, word):
    seoul = term_id("서울", "N")
    assert analyzer.query_vector(word).indices == [seoul]
    assert seoul in ids(analyzer.document_vector(analyzer.terms(f"나는 {word} 갔다")))


def test_endings_are_dropped_and_verb_stems_kept(analyzer):
    for text in ["친구를 만났다", "친구를 만나서", "친구를 만나고 싶어요"]:
        found = keys(analyzer, text)
        assert ("V", "만나") in found and ("N", "친구") in found, found
        assert not any(form in {"었", "다", "서", "고", "를"} for _, form in found)
    # adjectives (irregular tags such as VA-I) share the verb class
    assert ("V", "아름답") in keys(analyzer, "아름다운 강산")


def test_dependent_nouns_pronouns_and_auxiliaries_dropped(analyzer):
    forms = {form for _, form in keys(analyzer, "그것은 할 수 있는 것이다")}
    assert not forms & {"그것", "수", "것", "이"}


# Unit, counter and currency nouns (Kiwi: NNB), alone or after a number, with the term each must give.
UNIT_CASES = [
    ("리터는 몇 갤런인가요?", {"리터", "갤런"}),
    ("사과 3개를 샀다", {"개"}),
    ("학생 5명이 왔다", {"명"}),
    ("20살 청년", {"살"}),
    ("입장료는 1,000원이다", {"원"}),
    ("금리가 3퍼센트 올랐다", {"퍼센트"}),
    ("밀가루 10그램과 3피트", {"그램", "피트"}),
    ("천 원짜리와 100달러", {"원", "달러"}),
    ("두 마리", {"마리"}),
]


@pytest.mark.parametrize("text, units", UNIT_CASES)
def test_unit_and_counter_nouns_are_terms(analyzer, text, units):
    found = keys(analyzer, text)
    assert {("N", unit) for unit in units} <= found, found
    # the query and the document sides follow the same rule: the same ids
    query_ids = ids(analyzer.query_vector(text))
    assert {term_id(unit, "N") for unit in units} <= query_ids
    assert query_ids <= ids(analyzer.document_vector(analyzer.terms(text)))


def test_a_number_and_its_unit_give_a_phrase_term(analyzer):
    assert ("SN", "1000") in keys(analyzer, "1,000원")
    assert analyzer.query_vector("1,000원") == analyzer.query_vector("1000원")
    assert term_id("1000원", "B") in ids(analyzer.query_vector("1,000원"))  # number + unit bigram
    assert term_id("3개", "B") in ids(analyzer.document_vector(analyzer.terms("사과 3개를 샀다")))


def test_a_number_pairs_with_what_follows_it(analyzer):
    found = {form for cls, form in keys(analyzer, "공무원연금법 제65조 제1항 제1호")}
    assert {"65조", "1항", "1호", "조", "호"} <= found
    assert not found & {"법65", "조1", "항1"}  # a number opens a phrase...
    assert "코로나19" in {form for _, form in keys(analyzer, "코로나19 백신")}  # ... unless written together


@pytest.mark.parametrize("query", ["리터는 몇 갤런인가요?", "퍼센트", "몇 개?", "몇 명이야", "3개", "원"])
def test_a_query_of_units_is_never_empty(analyzer, query):
    assert analyzer.query_vector(query)


@pytest.mark.parametrize(
    "text, functional",
    [
        ("할 수 있는 것이다", {"수", "것"}),
        ("그 때문에 갈 데가 없다", {"때문", "데"}),
        ("본 적이 있다", {"적"}),
        ("할 줄 안다", {"줄"}),
        ("먹을 뿐이다", {"뿐"}),
        ("갈 터이다", {"터"}),
        ("앉은 채로 자는 듯이", {"채", "듯이"}),
        ("할 만큼 하는 대로", {"만큼", "대로"}),
        ("학생 등 교사 등등", {"등", "등등"}),
        ("오신 분", {"분"}),
        ("필요 시 회의 중", {"시", "중"}),
        ("할 거야", {"거"}),
        ("온 지 오래", {"지"}),
    ],
)
def test_functional_dependent_nouns_are_dropped(analyzer, text, functional):
    assert not {form for _, form in keys(analyzer, text)} & functional


def test_a_functional_form_right_after_a_numeral_counts(analyzer):
    # 분 "person" / 5분 "five minutes", 시 "when" / 3시, 등 "etc." / 1등 "first place", 두 분 "two people"
    for text, unit in [
        ("5분 동안", "분"),
        ("3시에", "시"),
        ("1등", "등"),
        ("두 분", "분"),
        ("10여 분", "분"),
        ("삼 분", "분"),
    ]:
        assert ("N", unit) in keys(analyzer, text), text
    assert ("N", "분") not in keys(analyzer, "오신 분")
    assert ("N", "등") not in keys(analyzer, "학생 등")


def test_compound_nouns_parts_and_bigram(analyzer):
    joined = keys(analyzer, "탄소중립")
    spaced = keys(analyzer, "탄소 중립")
    for expected in [("N", "탄소"), ("N", "중립"), ("N", "탄소중립")]:
        assert expected in joined and expected in spaced
    # A compound Kiwi keeps whole meets its spaced spelling through the noun bigram.
    assert ("N", "국민연금공단") in keys(analyzer, "국민연금공단에")
    assert ("N", "국민연금공단") in keys(analyzer, "국민연금 공단에")


def test_bigrams_stay_inside_sentences_and_can_be_disabled(analyzer):
    terms = analyzer.terms("서울은 크다. 부산은 작다.")
    assert "크부산" not in {t.form for t in terms}
    assert any("+" in t.tag for t in terms)
    plain = copy.copy(analyzer)
    plain.bigrams = False
    assert not any("+" in t.tag for t in plain.terms("탄소중립 정책"))


def test_english_lowercased_and_numbers(analyzer):
    found = keys(analyzer, "GPU Server와 gpu 서버, 2050년 목표 1,000억원")
    assert ("SL", "gpu") in found and ("SL", "server") in found
    assert ("SL", "GPU") not in found
    assert ("SN", "2050") in found and ("SN", "1000") in found
    assert analyzer.query_vector("1,000억") == analyzer.query_vector("1000억")
    assert analyzer.query_vector("GPU") == analyzer.query_vector("gpu")


def test_hanja_and_web_patterns(analyzer):
    found = keys(analyzer, "大韓民國 헌법, 문의 help@example.com")
    assert ("SH", "大韓民國") in found
    assert ("W", "help@example.com") in found


def test_term_offsets_point_into_the_text(analyzer):
    text = "올해 서울에서 GPU 3대를 샀다."
    for term in analyzer.terms(text):
        if "+" in term.tag:
            continue
        surface = text[term.start : term.end]
        if tag_class(term.tag) in {"N", "SL", "SN"}:
            assert surface.lower() == term.form, term


def test_nfd_input_equals_nfc_after_normalize(analyzer):
    nfc = "서울에서 탄소중립 정책을 발표했다."
    nfd = unicodedata.normalize("NFD", nfc)
    assert analyzer.terms(normalize_text(nfd)) == analyzer.terms(nfc)
    assert analyzer.query_vector(nfd) == analyzer.query_vector(nfc)


@pytest.mark.parametrize("text", ["", "   \n\t", "?!...", "(  ) -- ~", "에서", "이것은 저것의", "정책 은"])
def test_empty_and_function_word_text_gives_empty_vectors(analyzer, text):
    if text in {"정책 은"}:
        # a particle written apart from its noun is not a term; the noun is
        assert analyzer.query_vector(text).indices == [term_id("정책", "N")]
        return
    assert analyzer.query_vector(text) == SparseVector()
    assert not analyzer.query_vector(text)
    assert analyzer.document_vector(analyzer.terms(text)) == SparseVector()
    assert analyzer.highlights("서울에서 만났다", text) == []


def test_stray_particles_are_not_nouns(analyzer):
    assert analyzer.query_vector("을 를 에서") == SparseVector()
    assert analyzer.query_vector("의") == SparseVector()


# -- ids --------------------------------------------------------------------------------


def test_term_id_definition():
    expected = int.from_bytes(hashlib.blake2b("N:서울".encode(), digest_size=4).digest(), "big")
    assert term_id("서울", "N") == expected
    assert 0 <= expected < 2**32
    assert term_id("서울", "N") != term_id("서울", "V")


def test_term_ids_stable_across_processes(analyzer):
    words = ["서울", "탄소중립", "gpu", "2050", "만나"]
    code = (
        "import json, sys; from services.ingest.analyzer import term_id; "
        f"print(json.dumps([term_id(w, c) for w in {words!r} for c in ('N', 'V', 'SL')]))"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == [term_id(w, c) for w in words for c in ("N", "V", "SL")]
    # and fixed forever: ids stored in Qdrant must not change between releases
    assert term_id("서울", "N") == int.from_bytes(
        hashlib.blake2b(b"N:\xec\x84\x9c\xec\x9a\xb8", digest_size=4).digest(), "big"
    )


# -- vectors ----------------------------------------------------------------------------


def test_document_vector_is_bm25_tf():
    a = KoreanAnalyzer.__new__(KoreanAnalyzer)  # no Kiwi needed for the formula
    a.k1, a.b, a.avg_doc_len = 1.2, 0.75, 4.0
    terms = [Term("서울", "NNP", 0, 2), Term("서울", "NNG", 5, 7), Term("가", "VV", 8, 9), Term("gpu", "SL", 10, 13)]
    vector = a.document_vector(terms)
    norm = 1.2 * (1 - 0.75 + 0.75 * 4 / 4.0)
    expected = {
        term_id("서울", "N"): 2 * 2.2 / (2 + norm),
        term_id("가", "V"): 1 * 2.2 / (1 + norm),
        term_id("gpu", "SL"): 1 * 2.2 / (1 + norm),
    }
    assert dict(zip(vector.indices, vector.values)) == pytest.approx(expected)
    assert vector.indices == sorted(vector.indices)
    # longer documents get lower weights for the same tf
    a.avg_doc_len = 2.0
    assert max(a.document_vector(terms).values) < max(vector.values)
    assert a.document_vector([]) == SparseVector()


def test_query_vector_weights_are_query_tf(analyzer):
    vector = analyzer.query_vector("서울 서울 부산")
    weights = dict(zip(vector.indices, vector.values))
    assert weights[term_id("서울", "N")] == 2.0
    assert weights[term_id("부산", "N")] == 1.0


def test_constructor_validates_parameters():
    with pytest.raises(ValueError):
        KoreanAnalyzer(b=1.5)


# -- highlights -------------------------------------------------------------------------


def test_highlights_are_morpheme_aware(analyzer):
    text = "우리는 서울에서 만났다. 서울의 인구는 많다."
    spans = analyzer.highlights(text, "서울")
    assert [text[a:b] for a, b in spans] == ["서울", "서울"]
    assert spans == sorted(spans)


def test_highlights_merge_adjacent_parts(analyzer):
    text = "정부는 탄소중립을 선언했다"
    spans = analyzer.highlights(text, "탄소 중립")
    assert [text[a:b] for a, b in spans] == ["탄소중립"]
    text2 = "국민연금공단에 문의"
    assert [text2[a:b] for a, b in analyzer.highlights(text2, "국민연금 공단")] == ["국민연금공단"]


def test_highlights_verbs_and_english(analyzer):
    text = "어제 친구를 만났고 GPU를 샀다"
    spans = analyzer.highlights(text, "친구 만나다 gpu")
    covered = "".join(text[a:b] for a, b in spans)
    assert "친구" in covered and "GPU" in covered and "만" in covered
    assert analyzer.highlights(text, "부산") == []


def test_stored_term_spans_highlight_without_kiwi(analyzer):
    text = "어제 친구를 만났고 오늘도 만나서 밥을 먹었다. 날씨가 아름다웠다."
    stored = term_spans(analyzer.terms(text))
    places = {text[a:b] for flat in stored.values() for a, b in zip(flat[::2], flat[1::2])}
    assert places >= {"친구", "만났", "만나", "먹", "밥", "날씨", "아름다웠"}  # every content morpheme
    assert stored[str(term_id("만나", "V"))] == [
        text.index("만났"),
        text.index("만났") + 2,
        text.index("만나서"),
        text.index("만나서") + 2,
    ]
    recording = copy.copy(analyzer)
    recording._kiwi = _RecordingKiwi(analyzer._kiwi)
    query = "친구를 만나다 아름답다"
    terms = recording.query_terms(query)  # a search analyzes its query once, for the sparse vector too
    before = recording._kiwi.chars
    spans = recording.highlights(text, terms, stored)
    assert recording._kiwi.chars == before  # the stored spans replaced the analysis of the text
    assert spans == analyzer.highlights(text, query)  # ... and gave the same answer
    assert {text[a:b] for a, b in spans} == {"친구", "만났", "만나", "아름다웠"}
    # offsets are relative to the chunk the spans are stored with
    chunk_terms = [t for t in analyzer.terms("머리말. " + text) if t.start >= len("머리말. ")]
    assert term_spans(chunk_terms, offset=len("머리말. ")) == stored
    assert json.loads(json.dumps(stored)) == stored  # stored as JSON


def test_chunks_stored_before_term_spans_still_get_the_same_highlights(analyzer):
    """Older chunks stored verb/adjective stems only ([id, start, end], revisions 0003-0005) or
    nothing: their stems are used, the rest comes from analyzing the words around candidates."""
    text = "어제 친구를 만났고 오늘도 만나서 밥을 먹었다. 각 도의 예산은 도가 정한다. " * 3
    query = "친구를 만나다 도의 예산"
    new = analyzer.highlights(text, query, term_spans(analyzer.terms(text)))
    stems = [[term_id(t.form, "V"), t.start, t.end] for t in analyzer.terms(text) if tag_class(t.tag) == "V"]
    assert analyzer.highlights(text, query, stems) == new
    assert analyzer.highlights(text, query, None) == new
    assert analyzer.highlights(text, "만나다", []) == []  # a stored list without the stem: nothing analyzed


def test_highlights_many_match_one_text_at_a_time(analyzer):
    texts = ["어제 친구를 만났고 GPU를 샀다", "", "서울에서 친구를 만나서 반가웠다", "관계없는 문장입니다"]
    query = "친구 만나다 gpu"
    stored = [term_spans(analyzer.terms(t)) if i == 2 else None for i, t in enumerate(texts)]
    assert analyzer.highlights_many(texts, query, stored) == [analyzer.highlights(t, query) for t in texts]
    assert analyzer.highlights_many(texts, query) == [analyzer.highlights(t, query) for t in texts]
    with pytest.raises(ValueError):
        analyzer.highlights_many(texts, query, [None])


def _marked(analyzer, text, query):
    """The highlighted strings with their places, from stored spans; the same without them."""
    spans = analyzer.highlights(text, query, term_spans(analyzer.terms(text)))
    assert spans == analyzer.highlights(text, query)
    return [(text[a:b], a) for a, b in spans]


def test_a_one_syllable_noun_is_highlighted_only_where_it_is_a_morpheme(analyzer):
    text = "탄소중립 기본법은 기후위기에 대응한다. 기를 모아 대응한다."
    assert _marked(analyzer, text, "기를 펴다") == [("기", text.index("기를"))]  # not in 기본법, 기후위기
    assert _marked(analyzer, "기후위기 대응 기본법", "기를 펴다") == []


def test_do_is_highlighted_as_a_noun_not_as_a_particle_or_syllable(analyzer):
    text = "서울도 좋고 도로도 넓다. 각 도의 예산은 도가 정한다."
    # the province 도 twice; not the particle 도 (서울도, 도로도) nor the 도 of 도로, nor the particle 의
    assert _marked(analyzer, text, "도의 예산") == [
        ("도", text.index("도의")),
        ("예산", text.index("예산")),
        ("도", text.index("도가")),
    ]


def test_the_topic_particle_eun_is_never_highlighted(analyzer):
    text = "서울은 금과 은이 많다. 은은 비싸다."
    # silver 은 (은이, the first 은 of 은은); not the particle 은 of 서울은 and 은은
    assert _marked(analyzer, text, "은이 비싸다") == [
        ("은", text.index("은이")),
        ("은", text.index("은은")),
        ("비싸", text.index("비싸")),
    ]
    assert _marked(analyzer, "서울은 크다", "정책 은") == []  # a stray particle in the query is no term


def test_units_are_highlighted(analyzer):
    text = "1갤런은 약 3.785리터이다. 사과 3개는 1,000원이다."
    marked = [m for m, _ in _marked(analyzer, text, "리터는 몇 갤런인가요? 1000원")]
    assert marked == ["갤런", "리터", "1,000원"]


def test_compound_nouns_are_highlighted_in_either_spelling(analyzer):
    assert _marked(analyzer, "국민연금공단에 문의", "국민연금 공단") == [("국민연금공단", 0)]
    spaced = "국민연금 공단에 문의"
    stored = term_spans(analyzer.terms(spaced))
    assert analyzer.highlights(spaced, "국민연금공단", stored) == [(0, 4), (5, 7)]  # the parts, not the space
    # (chunks stored before term spans look for the query's spelling: 국민연금공단 is not found here)


# -- sentences --------------------------------------------------------------------------


class _CountingKiwi:
    def __init__(self, kiwi):
        self._kiwi = kiwi
        self.calls = Counter()

    def tokenize(self, *args, **kwargs):
        self.calls["tokenize"] += 1
        assert kwargs.get("split_sents") is True
        return self._kiwi.tokenize(*args, **kwargs)

    def __getattr__(self, name):
        self.calls[name] += 1
        return getattr(self._kiwi, name)


SAMPLES = [
    "  서울에서 만났다. 탄소중립 정책은 2050년까지! Hello World의 GPU 3.5배\n\n새 문단입니다 그리고 끝났어요?  ",
    "제1조(목적) 이 법은 은행의 건전한 운영을 도모한다.\n제2조(정의) ① 이 법에서 사용하는 용어의 뜻은 다음과 같다.",
    "문장 부호가 없는 긴 줄 표 데이터 열1 열2 열3 100 200 300",
    "😀 이모지와 🇰🇷 국기, https://example.com 주소.",
    "...!!!",
]


def _check_cover(text, sentences):
    previous_end = 0
    for sentence in sentences:
        assert isinstance(sentence, Sentence)
        assert previous_end <= sentence.start < sentence.end <= len(text)
        assert text[previous_end : sentence.start].strip() == ""  # gaps are whitespace only
        for term in sentence.terms:
            assert sentence.start <= term.start <= term.end <= sentence.end
        previous_end = sentence.end
    assert text[previous_end:].strip() == ""
    if text.strip():
        assert sentences[0].start == len(text) - len(text.lstrip())


@pytest.mark.parametrize("text", SAMPLES)
def test_analyze_is_one_pass_and_sentences_cover_the_text(analyzer, text):
    counting = copy.copy(analyzer)
    counting._kiwi = _CountingKiwi(analyzer._kiwi)
    sentences = counting.analyze(text)
    assert counting._kiwi.calls == Counter({"tokenize": 1})
    _check_cover(text, sentences)


def test_analyze_splits_korean_sentences(analyzer):
    text = "오늘은 날씨가 좋다. 내일은 비가 온대요? 그렇군요!"
    sentences = analyzer.analyze(text)
    assert [text[s.start : s.end] for s in sentences] == ["오늘은 날씨가 좋다.", "내일은 비가 온대요?", "그렇군요!"]


def test_analyze_many_matches_analyze(analyzer):
    texts = SAMPLES + ["", "   "] + [f"{i}번째 문서는 서울에 있다." for i in range(20)]
    assert analyzer.analyze_many(texts) == [analyzer.analyze(t) for t in texts]
    assert analyzer.analyze_many([]) == []


def test_concurrent_use_from_threads(analyzer):
    texts = [f"{i}번 문서: 서울에서 탄소중립 회의가 열렸다. GPU {i}대." for i in range(40)]
    expected = [analyzer.analyze(t) for t in texts]
    with ThreadPoolExecutor(max_workers=4) as pool:
        assert list(pool.map(analyzer.analyze, texts)) == expected


class _RecordingKiwi:
    def __init__(self, kiwi):
        self._kiwi = kiwi
        self.chars = 0

    def tokenize(self, text, **kwargs):
        if isinstance(text, str):
            self.chars += len(text)
            return self._kiwi.tokenize(text, **kwargs)
        texts = list(text)
        self.chars += sum(map(len, texts))
        return self._kiwi.tokenize(texts, **kwargs)


def test_long_texts_go_to_kiwi_in_blocks_each_char_once(analyzer):
    paragraph = "서울에서 탄소중립 회의가 열렸다. 은행은 대출 금리를 올렸다.\n지방은행의 전환 인가 절차를 설명한다.\n\n"
    text = paragraph * 40
    whole = analyzer.analyze(text)
    blocked = copy.copy(analyzer)
    blocked.max_block_chars = 300
    blocked._kiwi = _RecordingKiwi(analyzer._kiwi)
    sentences = blocked.analyze(text)
    assert blocked._kiwi.chars == len(text)
    _check_cover(text, sentences)
    # cuts fall on paragraph breaks here, so the analysis is the same as in one piece
    assert sentences == whole
    assert blocked.analyze_many([text, "짧은 글."]) == [whole, analyzer.analyze("짧은 글.")]


def test_blocks_cover_the_text_and_respect_the_size():
    from hypothesis import given, settings
    from hypothesis import strategies as st

    from services.ingest.analyzer import _blocks

    @settings(max_examples=300, deadline=None)
    @given(st.text(alphabet=st.sampled_from(list("가나다 .?!\n\t")), max_size=400), st.integers(1, 50))
    def check(text, size):
        blocks = _blocks(text, size)
        assert blocks[0][0] == 0 and blocks[-1][1] == len(text)
        for (_, b), (c, _) in itertools.pairwise(blocks):
            assert b == c
        for a, b in blocks:
            assert b - a <= size and (b > a or len(text) == 0)

    check()
    assert _blocks("가나다.\n\n라마바. 사아자차카", 8) == [(0, 6), (6, 11), (11, 16)]
    assert _blocks("가나다.\n\n라마바. 사아", 8) == [(0, 6), (6, 13)]


def test_highlights_in_long_text_analyze_only_candidate_windows(analyzer):
    filler = "오늘은 날씨가 맑고 바람이 조금 분다. " * 30
    text = filler + "우리는 서울에서 GPU 서버를 만났다. " + filler + "부산의 Gpu 가격."
    recording = copy.copy(analyzer)
    recording._kiwi = _RecordingKiwi(analyzer._kiwi)
    spans = recording.highlights(text, "서울 gpu")
    assert [text[a:b] for a, b in spans] == ["서울", "GPU", "Gpu"]
    assert recording._kiwi.chars < len(text) // 4  # the query plus a few windows, not the text
    # a query term that is everywhere: the whole text is analyzed, same kind of answer
    everywhere = recording.highlights(text, "날씨")
    assert len(everywhere) == 60 and all(text[a:b] == "날씨" for a, b in everywhere)


def test_full_width_letters_and_digits_meet_their_ascii_spelling(analyzer):
    text = "ＫＴＸ 열차 운임은 １２３，０００원이다."
    terms = [t for t in analyzer.terms(text) if "+" not in t.tag]
    assert {("ktx", "SL"), ("123000", "SN"), ("열차", "N")} <= {(t.form, tag_class(t.tag)) for t in terms}
    for term in terms:  # offsets point into the text as written
        assert unicodedata.normalize("NFKC", text[term.start : term.end]).lower().replace(",", "") == term.form
    query = {(t.form, tag_class(t.tag)) for t in analyzer.query_terms("KTX 운임 123000원") if "+" not in t.tag}
    assert query == {("ktx", "SL"), ("운임", "N"), ("123000", "SN"), ("원", "N")}
    assert [text[a:b] for a, b in analyzer.highlights_many([text], "KTX 123,000")[0]] == ["ＫＴＸ", "１２３，０００"]
