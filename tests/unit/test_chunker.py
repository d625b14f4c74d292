"""Chunker properties with tokenizers trained here (WordPiece as in KLUE, Unigram as in XLM-R)."""

import itertools
from types import SimpleNamespace

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from services.ingest.chunker import Chunk, chunk_sentences, count_tokens

KOREAN = """\
대한민국은 민주공화국이다. 대한민국의 주권은 국민에게 있고, 모든 권력은 국민으로부터 나온다.
은행은 예금을 받고 대출을 해 주는 금융기관입니다. 지방은행이 시중은행으로 전환하려면 인가가 필요합니다.
탄소중립은 온실가스 배출량과 흡수량을 같게 만드는 것을 말한다. 정부는 2050년까지 탄소중립을 달성하겠다고 발표했다.
서울에서 부산까지 기차로 두 시간 반이 걸린다. 오늘은 날씨가 맑고 바람이 조금 분다.
디지털 커머스 시대에 B2B 비즈니스는 e커머스와 통합되어야 한다. 고객 경험이 가장 중요하다!
이 법은 공공기관의 정보공개 의무와 국민의 정보공개 청구에 필요한 사항을 정함을 목적으로 한다.
인공지능 모델은 GPU에서 학습하며, 한국어 문장을 형태소 단위로 분석하면 검색 품질이 좋아진다.
질문이 있으신가요? 고객센터로 연락해 주세요. 감사합니다.
The quick brown fox jumps over the lazy dog. Retrieval augmented generation needs good chunking.
Korean text mixes 한글 and English words, numbers like 3.14 and 1,000억원, and symbols (※ ①).
"""

WORDS = [
    "서울",
    "서울에서",
    "부산으로",
    "탄소중립",
    "정책은",
    "은행이",
    "대출을",
    "국민의",
    "권리와",
    "의무",
    "인공지능",
    "모델이",
    "한국어",
    "형태소",
    "분석기는",
    "검색",
    "품질을",
    "높인다",
    "디지털",
    "커머스",
    "고객",
    "경험",
    "날씨가",
    "맑다",
    "GPU",
    "server",
    "retrieval",
    "Korean",
    "text",
    "2050년",
    "1,000억원",
    "3.14",
    "B2B",
    "e커머스",
    "①",
    "※",
    "😀",
    "漢字",
]
ENDS = [".", "?", "!", "다.", "요?", ""]
GAPS = [" ", "  ", "\n", "\n\n", " \n ", "\t"]


def _train(kind: str) -> PreTrainedTokenizerFast:
    lines = KOREAN.splitlines() * 3
    if kind == "unigram":
        tok = Tokenizer(models.Unigram())
        tok.normalizer = normalizers.NFKC()
        tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
        tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
        unigram = trainers.UnigramTrainer(
            vocab_size=300, special_tokens=["<s>", "<pad>", "</s>", "<unk>"], unk_token="<unk>"
        )
        tok.train_from_iterator(lines, unigram)
        return PreTrainedTokenizerFast(
            tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="<pad>"
        )
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=False, strip_accents=False)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    trainer = trainers.WordPieceTrainer(vocab_size=400, special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]"])
    tok.train_from_iterator(lines, trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]", sep_token="[SEP]"
    )


TOKENIZERS = {kind: _train(kind) for kind in ("wordpiece", "unigram")}


class SuperAdditiveTokenizer:
    """A tokenizer whose count of a concatenation exceeds the sum of the parts.

    One token per non-space character, plus one extra token for every text longer than 12
    characters: the packer's sum of sentence counts underestimates, the re-check must catch it.
    It offers what the chunker uses of a fast tokenizer: its backend's batch encoders.
    """

    truncation = None
    padding = None

    @property
    def backend_tokenizer(self):
        return self

    def encode_batch(self, texts, add_special_tokens=False):
        out = []
        for text in texts:
            spans = [(i, i + 1) for i, ch in enumerate(text) if not ch.isspace()]
            if len(text) > 12 and spans:
                spans.append(spans[-1])
            out.append(SimpleNamespace(ids=[0] * len(spans), offsets=spans))
        return out

    encode_batch_fast = encode_batch


def n_tokens(tokenizer, text: str) -> int:
    return count_tokens(tokenizer, [text])[0]


def unit_bounds(text, sentences):
    bounds = {0, len(text)}
    bounds.update(s for s, e in sentences if e > s and 0 < s < len(text))
    return sorted(bounds)


def check_chunks(text, sentences, tokenizer, chunks, *, max_tokens, overlap_tokens, first_ordinal=0):
    if not text.strip():
        assert chunks == []
        return
    assert chunks, "non-blank text must give chunks"
    assert [c.ordinal for c in chunks] == list(range(first_ordinal, first_ordinal + len(chunks)))
    covered = [False] * len(text)
    for chunk in chunks:
        assert isinstance(chunk, Chunk)
        assert 0 <= chunk.char_start < chunk.char_end <= len(text)
        assert chunk.text == text[chunk.char_start : chunk.char_end]
        assert chunk.token_count == n_tokens(tokenizer, chunk.text)
        assert chunk.token_count <= max_tokens
        for i in range(chunk.char_start, chunk.char_end):
            covered[i] = True
    assert all(covered), "every character must lie in a chunk"
    assert chunks[0].char_start == 0 and chunks[-1].char_end == len(text)
    for previous, chunk in itertools.pairwise(chunks):
        assert previous.char_start < chunk.char_start
        assert previous.char_end < chunk.char_end
        assert chunk.char_start <= previous.char_end  # contiguous or overlapping, no gap
        if overlap_tokens == 0:
            assert chunk.char_start == previous.char_end
        else:
            overlap = text[chunk.char_start : previous.char_end]
            assert n_tokens(tokenizer, overlap) <= overlap_tokens
    # Boundaries fall on sentence starts whenever every sentence fits the budget.
    bounds = unit_bounds(text, sentences)
    units = [text[a:b] for a, b in itertools.pairwise(bounds)]
    if all(n_tokens(tokenizer, u) <= max_tokens for u in units):
        allowed = set(bounds)
        for chunk in chunks:
            assert chunk.char_start in allowed and chunk.char_end in allowed


@st.composite
def documents(draw, max_sentences=12):
    """Text built from sentences, with the true sentence spans."""
    parts, spans, pos = [], [], 0
    lead = draw(st.sampled_from(["", " ", "\n", "  \n"]))
    parts.append(lead)
    pos += len(lead)
    for _ in range(draw(st.integers(0, max_sentences))):
        words = draw(st.lists(st.sampled_from(WORDS), min_size=1, max_size=draw(st.sampled_from([4, 12, 60]))))
        sentence = " ".join(words) + draw(st.sampled_from(ENDS))
        spans.append((pos, pos + len(sentence)))
        gap = draw(st.sampled_from(GAPS))
        parts += [sentence, gap]
        pos += len(sentence) + len(gap)
    return "".join(parts), spans


@st.composite
def arbitrary_spans(draw):
    """Any text and any spans: gaps, overlaps, empty and out-of-order spans included."""
    text = draw(st.text(alphabet=st.sampled_from(list("서울에서 만났다. 탄소중립!\nGPU 3.14 😀a b")), max_size=120))
    n = len(text)
    raw = draw(st.lists(st.tuples(st.integers(-3, n + 3), st.integers(-3, n + 3)), max_size=15))
    return text, raw


params = st.tuples(st.sampled_from(["wordpiece", "unigram"]), st.sampled_from([4, 8, 16, 40, 128]), st.integers(0, 30))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(documents(), params, st.integers(0, 5))
def test_properties_on_generated_documents(doc, config, first_ordinal):
    text, spans = doc
    kind, max_tokens, overlap = config
    assume(overlap < max_tokens)
    tokenizer = TOKENIZERS[kind]
    chunks = chunk_sentences(
        text, spans, tokenizer, max_tokens=max_tokens, overlap_tokens=overlap, first_ordinal=first_ordinal
    )
    check_chunks(
        text, spans, tokenizer, chunks, max_tokens=max_tokens, overlap_tokens=overlap, first_ordinal=first_ordinal
    )


@settings(max_examples=150, deadline=None)
@given(arbitrary_spans(), params)
def test_properties_on_arbitrary_spans(doc, config):
    text, spans = doc
    kind, max_tokens, overlap = config
    assume(overlap < max_tokens)
    tokenizer = TOKENIZERS[kind]
    chunks = chunk_sentences(text, spans, tokenizer, max_tokens=max_tokens, overlap_tokens=overlap)
    check_chunks(text, spans, tokenizer, chunks, max_tokens=max_tokens, overlap_tokens=overlap)


@settings(max_examples=100, deadline=None)
@given(documents(max_sentences=8), st.sampled_from([3, 6, 13, 30]), st.integers(0, 5))
def test_recheck_catches_super_additive_tokenizers(doc, max_tokens, overlap):
    text, spans = doc
    assume(overlap < max_tokens)
    tokenizer = SuperAdditiveTokenizer()
    chunks = chunk_sentences(text, spans, tokenizer, max_tokens=max_tokens, overlap_tokens=overlap)
    check_chunks(text, spans, tokenizer, chunks, max_tokens=max_tokens, overlap_tokens=overlap)


@pytest.mark.slow
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(documents(max_sentences=10), params)
def test_properties_with_kiwi_sentences(doc, config):
    from services.ingest.analyzer import get_analyzer

    text, _ = doc
    kind, max_tokens, overlap = config
    assume(overlap < max_tokens)
    sentences = [(s.start, s.end) for s in get_analyzer().analyze(text)]
    tokenizer = TOKENIZERS[kind]
    chunks = chunk_sentences(text, sentences, tokenizer, max_tokens=max_tokens, overlap_tokens=overlap)
    check_chunks(text, sentences, tokenizer, chunks, max_tokens=max_tokens, overlap_tokens=overlap)


# -- examples ---------------------------------------------------------------------------


def _sentences(*parts, gap=" "):
    text, spans, pos = "", [], 0
    for part in parts:
        spans.append((pos, pos + len(part)))
        text += part + gap
        pos = len(text)
    return text, spans


def test_whitespace_only_and_empty_text_give_no_chunks():
    tok = TOKENIZERS["wordpiece"]
    assert chunk_sentences("", [], tok, max_tokens=8) == []
    assert chunk_sentences(" \n\t  ", [(0, 3)], tok, max_tokens=8) == []


def test_short_sentences_are_packed_together():
    tok = TOKENIZERS["wordpiece"]
    text, spans = _sentences(*["서울에서 만났다."] * 12)
    per_sentence = n_tokens(tok, "서울에서 만났다. ")
    chunks = chunk_sentences(text, spans, tok, max_tokens=per_sentence * 4)
    assert 3 <= len(chunks) <= 4
    assert all(c.text.strip().endswith(".") for c in chunks)


def test_overlap_repeats_trailing_sentences():
    tok = TOKENIZERS["unigram"]
    sentences = [
        f"{word} 정책은 중요하다." for word in ["서울", "부산", "탄소중립", "은행", "국민", "고객", "모델", "검색"]
    ]
    text, spans = _sentences(*sentences)
    one = max(n_tokens(tok, text[a:b]) for a, b in spans) + 2
    chunks = chunk_sentences(text, spans, tok, max_tokens=one * 3, overlap_tokens=one)
    check_chunks(text, spans, tok, chunks, max_tokens=one * 3, overlap_tokens=one)
    assert len(chunks) > 2
    for previous, chunk in itertools.pairwise(chunks):
        shared = text[chunk.char_start : previous.char_end]
        assert shared.strip() in sentences, "the overlap is exactly the previous chunk's last sentence"


def test_long_sentence_is_split_at_token_boundaries():
    tok = TOKENIZERS["wordpiece"]
    sentence = " ".join(WORDS * 6)  # one sentence, far over the budget
    text = f"짧은 문장. {sentence} 끝."
    spans = [(0, 6), (7, 7 + len(sentence))]
    chunks = chunk_sentences(text, spans, tok, max_tokens=16, first_ordinal=7)
    check_chunks(text, spans, tok, chunks, max_tokens=16, overlap_tokens=0, first_ordinal=7)
    assert len(chunks) > 10
    # pieces of the long sentence are cut between words where a word start is near
    inner = [c for c in chunks if 7 < c.char_start < 7 + len(sentence)]
    assert sum(text[c.char_start - 1].isspace() or text[c.char_start].isspace() for c in inner) >= len(inner) * 0.8


def test_sentence_without_spaces_is_split():
    tok = TOKENIZERS["unigram"]
    text = "가나다라마바사아자차카타파하" * 30
    chunks = chunk_sentences(text, [(0, len(text))], tok, max_tokens=5)
    check_chunks(text, [(0, len(text))], tok, chunks, max_tokens=5, overlap_tokens=0)


def test_sentence_objects_are_accepted():
    class S:
        def __init__(self, start, end):
            self.start, self.end = start, end

    tok = TOKENIZERS["wordpiece"]
    text, spans = _sentences("하나.", "둘.", "셋.")
    as_tuples = chunk_sentences(text, spans, tok, max_tokens=3)
    assert chunk_sentences(text, [S(a, b) for a, b in spans], tok, max_tokens=3) == as_tuples


def test_invalid_budgets():
    tok = TOKENIZERS["wordpiece"]
    with pytest.raises(ValueError):
        chunk_sentences("문장.", [(0, 3)], tok, max_tokens=0)
    with pytest.raises(ValueError):
        chunk_sentences("문장.", [(0, 3)], tok, max_tokens=8, overlap_tokens=8)
    with pytest.raises(ValueError):
        chunk_sentences("문장.", [(0, 3)], SuperAdditiveTokenizer(), max_tokens=8, overlap_tokens=-1)
