import unicodedata

from hypothesis import given, settings
from hypothesis import strategies as st

from services.ingest.normalize import normalize_text

SPECIALS = "\r\n\t\x00\x01\x0b\x0c\x1b\x7f\x85\x9f\u00a0\u00ad\u1680\u2000\u2001\u2009\u200b\u200d\u2028\u2029\u202f\u205f\u2060\u3000\ufeff"
HANGUL = "서울에서만났다탄소중립정책은한국어문서검색"


def test_nfd_hangul_becomes_nfc():
    nfc = "서울에서 탄소중립을 논의했다."
    nfd = unicodedata.normalize("NFD", nfc)
    assert nfd != nfc and len(nfd) > len(nfc)
    assert normalize_text(nfd) == nfc


def test_line_breaks():
    assert normalize_text("가\r\n나\r다\n라") == "가\n나\n다\n라"
    assert normalize_text("a\r\n\r\nb") == "a\n\nb"
    assert normalize_text("쪽1\x0c쪽2\x0b끝") == "쪽1\n쪽2\n끝"
    assert normalize_text("a\u2028b\u2029c\x85d") == "a\nb\nc\nd"


def test_control_characters_dropped_but_tab_and_newline_kept():
    assert normalize_text("서\x00울\x01\x1b\x7f\x9f\t시\n") == "서울\t시\n"
    assert normalize_text("plain\x00ascii\x08") == "plainascii"


def test_spaces_and_invisible_characters():
    assert normalize_text("서울\u00a0시\u3000청\u2009사") == "서울 시 청 사"
    assert normalize_text("\ufeff제목") == "제목"
    assert normalize_text("서울\u200b에서") == "서울에서"
    assert normalize_text("soft\u00adhyphen") == "softhyphen"
    # Emoji sequences keep their zero-width joiner.
    assert normalize_text("👩\u200d💻") == "👩\u200d💻"


def test_content_is_not_collapsed():
    text = "  두 칸  띄어쓰기\n\n\n세 줄\t탭  "
    assert normalize_text(text) == text
    assert normalize_text("ＡＢＣ ㈜ ①") == "ＡＢＣ ㈜ ①"  # NFC, not NFKC
    assert normalize_text("") == ""


def test_lone_surrogates_replaced():
    broken = b"caf\xe9 \xec\x84\x9c".decode("utf-8", errors="surrogateescape")
    out = normalize_text(broken)
    out.encode("utf-8")  # must not raise
    assert "\ufffd" in out and out.endswith("서")


texts = st.text(
    alphabet=st.one_of(
        st.sampled_from(SPECIALS),
        st.sampled_from(HANGUL),
        st.sampled_from([chr(c) for c in range(0x1100, 0x1113)] + [chr(c) for c in range(0x1161, 0x1176)]),
        st.characters(),
    ),
    max_size=60,
)


@settings(max_examples=400, deadline=None)
@given(texts)
def test_idempotent_and_clean(text):
    once = normalize_text(text)
    assert normalize_text(once) == once
    assert unicodedata.is_normalized("NFC", once)
    for ch in once:
        cat = unicodedata.category(ch)
        assert ch in "\n\t" or cat != "Cc", repr(ch)
        assert cat != "Cs"
        assert ch not in "\r\u00a0\u3000\ufeff\u200b"


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=st.sampled_from(HANGUL + " .,\n"), max_size=40))
def test_clean_nfc_text_unchanged(text):
    assert normalize_text(text) == text
    assert normalize_text(unicodedata.normalize("NFD", text)) == text
