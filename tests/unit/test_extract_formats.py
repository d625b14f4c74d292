"""Each format on Korean sample files the tests build themselves."""

from __future__ import annotations

import codecs
from pathlib import Path

import pytest

from services.errors import ExtractionError
from services.ingest.extract import (
    DOCX,
    HWP,
    HWPX,
    PDF,
    TEXT_HTML,
    TEXT_MARKDOWN,
    TEXT_PLAIN,
    ExtractedDocument,
    Section,
    extract_file,
)
from tests.extract_samples import (
    build_docx,
    build_hwp,
    build_hwpx,
    build_pdf,
    docx_paragraph,
    docx_table,
    hwpx_paragraph,
    hwpx_section_xml,
    hwpx_table,
    para_records,
    table_records,
)

KOREAN = "대한민국은 민주공화국이다. 대한민국의 주권은 국민에게 있고, 모든 권력은 국민으로부터 나온다."


def write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


# ---------------------------------------------------------------- plain text and encodings


@pytest.mark.parametrize(
    "encoding,prefix",
    [
        ("utf-8", b""),
        ("utf-8", codecs.BOM_UTF8),
        ("utf-16-le", codecs.BOM_UTF16_LE),
        ("utf-16-be", codecs.BOM_UTF16_BE),
        ("cp949", b""),
        ("euc-kr", b""),
    ],
)
def test_plain_text_encodings(tmp_path, encoding, prefix):
    text = f"{KOREAN}\n둘째 줄: 서울특별시 강남구 학동로 426\n"
    path = write(tmp_path, "note.txt", prefix + text.encode(encoding))
    doc = extract_file(path)
    assert doc == ExtractedDocument(media_type=TEXT_PLAIN, sections=[Section(text=text)])


def test_cp949_extension_syllables(tmp_path):
    # 똠, 햏 and 쑝 exist in CP949 (UHC) but not in EUC-KR's KS X 1001 set.
    text = "똠방각하 햏자 쑝쑝 " + KOREAN
    doc = extract_file(write(tmp_path, "legacy.txt", text.encode("cp949")))
    assert doc.sections[0].text == text


def test_utf16_without_bom(tmp_path):
    doc = extract_file(write(tmp_path, "u16.txt", KOREAN.encode("utf-16-le")))
    assert doc.sections[0].text == KOREAN


@pytest.mark.parametrize(
    "encoding,damage",
    [
        ("utf-8", "stray byte"),
        ("cp949", "stray byte"),  # a stray byte in UTF-16 shifts all that follows
        ("utf-8", "cut mid-character"),
        ("cp949", "cut mid-character"),
        ("utf-16-le", "cut mid-character"),
    ],
)
def test_a_stray_byte_costs_a_character_not_the_document(tmp_path, encoding, damage):
    text = f"{KOREAN}\n둘째 줄: 서울특별시 강남구 학동로 426\n" * 3
    data = text.encode(encoding)
    if damage == "stray byte":
        data = data[:40] + b"\xff" + data[40:]
    else:
        data = data[:-1] if encoding == "utf-16-le" else text.encode(encoding)[:-3] + "한".encode(encoding)[:1]
    path = write(tmp_path, "damaged.txt", data)
    doc = extract_file(path, filename=path.name)  # detected as text, decoded with the right encoding
    decoded = doc.sections[0].text
    assert 1 <= decoded.count("\ufffd") <= 4
    assert decoded.replace("\ufffd", "").count("서울특별시 강남구") >= 2


def test_decomposed_hangul_kept_as_found(tmp_path):
    import unicodedata

    nfd = unicodedata.normalize("NFD", KOREAN)
    doc = extract_file(write(tmp_path, "mac.txt", nfd.encode("utf-8")))
    assert doc.sections[0].text == nfd  # the pipeline normalizes to NFC later


def test_binary_claimed_as_text(tmp_path):
    path = write(tmp_path, "x.txt", bytes(range(256)) * 8)
    with pytest.raises(ExtractionError):
        extract_file(path, media_type=TEXT_PLAIN)
    with pytest.raises(ExtractionError):
        extract_file(path, filename="x.txt")


def test_whitespace_only_text(tmp_path):
    with pytest.raises(ExtractionError, match="no text"):
        extract_file(write(tmp_path, "w.txt", b" \n\t\n"))


# ---------------------------------------------------------------- Markdown


def test_markdown_headings(tmp_path):
    md = (
        "---\ntitle: 헌법 요약\n---\n"
        "서문입니다.\n\n"
        "# 제1장 총강\n\n제1조 대한민국은 민주공화국이다.\n\n"
        "## 제2조 ##\n국민의 요건은 법률로 정한다.\n\n"
        "```\n# 코드 안의 샵은 제목이 아니다\n```\n\n"
        "제2장 국민의 권리와 의무\n---------------------\n모든 국민은 인간으로서의 존엄과 가치를 가진다.\n"
    )
    doc = extract_file(write(tmp_path, "doc.md", md.encode("utf-8")))
    assert doc.media_type == TEXT_MARKDOWN
    assert doc.title == "헌법 요약"
    # Heading paths; a setext heading underlined with '-' is a second level, like '##'.
    assert [s.heading for s in doc.sections] == [
        None,
        "제1장 총강",
        "제1장 총강 > 제2조",
        "제1장 총강 > 제2장 국민의 권리와 의무",
    ]
    assert doc.sections[0].text == "서문입니다."
    assert doc.sections[1].text == "제1장 총강\n\n제1조 대한민국은 민주공화국이다."
    assert "# 코드 안의 샵은 제목이 아니다" in doc.sections[2].text
    assert doc.sections[3].text.endswith("존엄과 가치를 가진다.")


def test_markdown_needs_a_name_or_type(tmp_path):
    path = write(tmp_path, "upload", "# 제목\n본문".encode())
    assert extract_file(path).media_type == TEXT_PLAIN
    assert extract_file(path, media_type="text/markdown; charset=utf-8").sections[0].heading == "제목"
    assert extract_file(path, filename="notes.markdown").media_type == TEXT_MARKDOWN


# ---------------------------------------------------------------- HTML

HTML = """<!DOCTYPE html>
<html lang="ko"><head><meta charset="euc-kr"><title>강남구 공고</title>
<style>body { color: red; }</style><script>var secret = "스크립트";</script></head>
<body>
<header><nav><a href="/">홈</a> | <a href="/menu">메뉴</a></nav></header>
<aside>광고 배너</aside>
<main>
  <h1>입법예고</h1>
  <p>서울특별시 강남구 공무직 관리 규정을<br>개정합니다.</p>
  <h2>주요 내용</h2>
  <ul><li>채용 절차 개선</li><li>서류전형 의무화</li></ul>
  <table><tr><th>항목</th><th>기한</th></tr><tr><td><p>의견 제출</p></td><td>4월 11일</td></tr></table>
  <pre>  들여쓰기   유지
두 번째 줄</pre>
</main>
<footer>저작권 강남구청</footer>
<noscript>자바스크립트를 켜세요</noscript>
</body></html>"""


def test_html_main_text_and_headings(tmp_path):
    doc = extract_file(write(tmp_path, "page.html", HTML.encode("cp949")))
    assert doc.media_type == TEXT_HTML
    assert doc.title == "강남구 공고"
    text = doc.text
    for gone in ("스크립트", "color", "홈", "메뉴", "광고 배너", "저작권", "자바스크립트"):
        assert gone not in text
    # Heading paths (h1 > h2); the table is a section of its own under the same path.
    assert [(s.heading, s.table) for s in doc.sections] == [
        ("입법예고", False),
        ("입법예고 > 주요 내용", False),
        ("입법예고 > 주요 내용", True),
        ("입법예고 > 주요 내용", False),
    ]
    assert doc.sections[0].text == "입법예고\n서울특별시 강남구 공무직 관리 규정을\n개정합니다."
    assert doc.sections[1].text.splitlines() == ["주요 내용", "채용 절차 개선", "서류전형 의무화"]
    assert doc.sections[2].text.splitlines() == ["항목 | 기한", "의견 제출 | 4월 11일"]
    assert doc.sections[3].text.splitlines() == ["  들여쓰기   유지", "두 번째 줄"]


def test_html_without_main_uses_body_and_keeps_article_header(tmp_path):
    page = (
        "<html><body><header>사이트 머리</header><article><header><h1>기사 제목</h1></header>"
        "<p>기사 본문</p></article></body></html>"
    )
    doc = extract_file(write(tmp_path, "a.htm", page.encode()))
    assert doc.sections == [Section(text="기사 제목\n기사 본문", heading="기사 제목")]


def test_html_sniffed_from_content(tmp_path):
    doc = extract_file(write(tmp_path, "upload.bin", b"<!doctype html><p>\xed\x95\x9c\xea\xb8\x80</p>"))
    assert doc.media_type == TEXT_HTML and doc.text == "한글"


# ---------------------------------------------------------------- PDF


def test_pdf_pages_numbered_and_blank_page_skipped(tmp_path):
    path = write(tmp_path, "p.pdf", build_pdf(["First page text", None, "Third page (3)"], title="Report"))
    doc = extract_file(path)
    assert doc.media_type == PDF and doc.title == "Report"
    assert doc.sections == [Section(text="First page text", page=1), Section(text="Third page (3)", page=3)]


def test_pdf_korean_text_layer(tmp_path):
    doc = extract_file(
        write(tmp_path, "k.pdf", build_pdf(["제1조 대한민국은 민주공화국이다.", "제2조 국민"], korean=True))
    )
    assert doc.sections == [
        Section(text="제1조 대한민국은 민주공화국이다.", page=1),
        Section(text="제2조 국민", page=2),
    ]


def test_pdf_without_text_layer(tmp_path):
    with pytest.raises(ExtractionError, match="no text layer"):
        extract_file(write(tmp_path, "scan.pdf", build_pdf([None, None])))


def test_pdf_encrypted_with_user_password(tmp_path):
    with pytest.raises(ExtractionError, match="encrypted PDF"):
        extract_file(write(tmp_path, "e.pdf", build_pdf(["secret"], encrypt_user_password="pw")))


def test_pdf_owner_password_only_is_readable(tmp_path):
    doc = extract_file(write(tmp_path, "o.pdf", build_pdf(["open to read"], encrypt_owner_password="owner")))
    assert doc.sections == [Section(text="open to read", page=1)]


def test_pdf_page_limit(tmp_path):
    from services.ingest.extract import ExtractLimits

    with pytest.raises(ExtractionError, match="more than the limit of 2"):
        extract_file(write(tmp_path, "l.pdf", build_pdf(["a", "b", "c"])), limits=ExtractLimits(max_pages=2))


def _justified(lines: list[str], *, top: float = 700, left: float = 72, width: float = 300) -> list:
    """Runs of single characters spread so that every line but the last of each paragraph ends at
    the right margin, as justified Korean text is set (a line may end inside a word)."""
    runs = []
    for row, line in enumerate(lines):
        full = not line.endswith("¶")
        line = line.rstrip("¶")
        spacing = (width - 10 * len(line)) / max(1, len(line) - 1) if full else 0.5
        runs.append((left, top - 16 * row, line, 10, spacing))
    return runs


def test_pdf_justified_wraps_joined_inside_words_and_spaced_between(tmp_path):
    lines = [
        "보고서 제목¶",
        "본문은 양쪽 정렬로 조판되어 줄이 단어 중",
        "간에서도 바뀐다. 그래서 탄소중",
        "립 같은 낱말이 두 줄로 나뉘며 우리",
        "위원회를 비롯한 여러 곳에서 검색이 어렵",
        "다.¶",
        "1. 목록 항목¶",
        "2. 다음 항목¶",
    ]
    doc = extract_file(write(tmp_path, "j.pdf", build_pdf([_justified(lines)], korean=True)))
    assert doc.text.splitlines() == [
        "보고서 제목",
        "본문은 양쪽 정렬로 조판되어 줄이 단어 중간에서도 바뀐다. 그래서 탄소중립 같은 낱말이 두 줄로 나뉘며"
        " 우리 위원회를 비롯한 여러 곳에서 검색이 어렵다.",
        "1. 목록 항목",
        "2. 다음 항목",
    ]


# ---------------------------------------------------------------- DOCX


def docx_sample() -> bytes:
    body = (
        docx_paragraph("머리말 없는 첫 문단")
        + docx_paragraph("제1장 총칙", style="1")
        + docx_paragraph("이 규정은 강남구 공무직에 적용한다.")
        + docx_table([["구분", "내용"], ["채용", "서류전형 및 면접"]])
        + docx_paragraph("제2장 채용", style="MyHeading")  # heading by inheritance (basedOn heading 2)
        + "<w:p><w:r><w:t>탭</w:t></w:r><w:r><w:tab/><w:t>뒤</w:t><w:br/><w:t>다음 줄</w:t></w:r>"
        "<w:del><w:r><w:delText>지운 글</w:delText></w:r></w:del>"
        "<w:moveFrom><w:r><w:t>옮기기 전 자리</w:t></w:r></w:moveFrom>"
        "<w:moveTo><w:r><w:t>옮긴 자리</w:t></w:r></w:moveTo>"
        '<w:r><w:fldChar w:fldCharType="begin"/></w:r><w:r><w:instrText>HYPERLINK "x"</w:instrText></w:r>'
        "<w:hyperlink><w:r><w:t>링크</w:t></w:r></w:hyperlink>"
        '<w:r><mc:AlternateContent><mc:Choice Requires="wps"><w:drawing><w:txbxContent>'
        + docx_paragraph("글상자")
        + "</w:txbxContent></w:drawing></mc:Choice>"
        "<mc:Fallback><w:pict><w:txbxContent>" + docx_paragraph("글상자") + "</w:txbxContent></w:pict>"
        "</mc:Fallback></mc:AlternateContent></w:r></w:p>"
        + "<w:sdt><w:sdtContent>"
        + docx_paragraph("콘텐츠 컨트롤 안의 문단")
        + "</w:sdtContent></w:sdt>"
        + '<w:p><w:pPr><w:outlineLvl w:val="1"/></w:pPr><w:r><w:t>직접 개요 수준</w:t></w:r></w:p>'
        + docx_paragraph("끝 문단")
    )
    return build_docx(body, title="공무직 관리 규정")


def test_docx_paragraphs_tables_headings(tmp_path):
    doc = extract_file(write(tmp_path, "rule.docx", docx_sample()))
    assert doc.media_type == DOCX and doc.title == "공무직 관리 규정"
    # Heading paths: heading 1 > (heading 2 by inheritance); the outline level 1 is a second level too.
    assert [s.heading for s in doc.sections] == [
        None,
        "제1장 총칙",
        "제1장 총칙",
        "제1장 총칙 > 제2장 채용",
        "제1장 총칙 > 직접 개요 수준",
    ]
    assert doc.sections[0].text == "머리말 없는 첫 문단"
    assert doc.sections[1].text.splitlines() == ["제1장 총칙", "이 규정은 강남구 공무직에 적용한다."]
    assert doc.sections[2].table and doc.sections[2].text.splitlines() == ["구분 | 내용", "채용 | 서류전형 및 면접"]
    chapter2 = doc.sections[3].text
    assert "탭\t뒤\n다음 줄" in chapter2
    assert "지운 글" not in chapter2 and "HYPERLINK" not in chapter2
    assert "옮기기 전 자리" not in chapter2 and "옮긴 자리" in chapter2  # tracked move: read once, at its new place
    assert "링크" in chapter2
    assert chapter2.count("글상자") == 1  # the markup-compatibility fallback is not read twice
    assert "콘텐츠 컨트롤 안의 문단" in chapter2
    assert doc.sections[4].text == "직접 개요 수준\n끝 문단"


def test_docx_written_by_python_docx(tmp_path):
    docx = pytest.importorskip("docx")
    d = docx.Document()
    d.core_properties.title = "보고서"
    d.add_heading("개요", level=1)
    d.add_paragraph("한국어 문서 검색 서비스 색인.")
    t = d.add_table(rows=2, cols=3)
    for r, row in enumerate([["가", "나", "다"], ["1", "2", "3"]]):
        for c, value in enumerate(row):
            t.cell(r, c).text = value
    d.add_heading("세부 사항", level=2)
    d.add_paragraph("형태소 분석과 밀집 벡터를 함께 쓴다.")
    path = tmp_path / "made.docx"
    d.save(path)
    doc = extract_file(path, filename="made.docx")
    assert doc.title == "보고서"
    assert [(s.heading, s.text, s.table) for s in doc.sections] == [
        ("개요", "개요\n한국어 문서 검색 서비스 색인.", False),
        ("개요", "가 | 나 | 다\n1 | 2 | 3", True),
        ("개요 > 세부 사항", "세부 사항\n형태소 분석과 밀집 벡터를 함께 쓴다.", False),
    ]


def test_docx_empty_body(tmp_path):
    with pytest.raises(ExtractionError, match="no text"):
        extract_file(write(tmp_path, "e.docx", build_docx("")))


# ---------------------------------------------------------------- HWPX


def test_hwpx_paragraphs_tables_and_spine_order(tmp_path):
    first = hwpx_section_xml(
        hwpx_paragraph("서울특별시 강남구 공고")
        + hwpx_paragraph('<hp:t>항목<hp:tab width="1"/>설명<hp:lineBreak/>다음 줄</hp:t>')
        + hwpx_paragraph(
            "<hp:t>표 앞</hp:t>", hwpx_table([["구분", "기한"], ["의견 제출", "4월 11일"]]), "<hp:t>표 뒤</hp:t>"
        )
        + hwpx_paragraph(
            "<hp:ctrl><hp:hiddenComment><hp:subList>"
            + hwpx_paragraph("숨은 설명")
            + "</hp:subList></hp:hiddenComment></hp:ctrl>",
            "<hp:t>본문 끝</hp:t>",
        )
        + hwpx_paragraph(
            "<hp:ctrl><hp:footNote><hp:subList>" + hwpx_paragraph("각주 내용") + "</hp:subList></hp:footNote></hp:ctrl>"
        )
    )
    second = hwpx_section_xml(hwpx_paragraph("둘째 구역"))
    # Files named in reverse: the spine of content.hpf decides the order, not the names.
    data = build_hwpx(
        [second, first],
        section_names=["Contents/section1.xml", "Contents/section0.xml"],
        spine_order=[1, 0],
        title="공고문",
    )
    doc = extract_file(write(tmp_path, "n.hwpx", data))
    assert doc.media_type == HWPX and doc.title == "공고문"
    # A table is a section of its own (kept in one chunk when it fits).
    assert [(s.text, s.table) for s in doc.sections] == [
        ("서울특별시 강남구 공고\n항목\t설명\n다음 줄\n표 앞 표 뒤", False),
        ("구분 | 기한\n의견 제출 | 4월 11일", True),
        ("본문 끝\n각주 내용", False),
        ("둘째 구역", False),
    ]


def test_hwpx_without_content_hpf_uses_numeric_name_order(tmp_path):
    sections = [hwpx_section_xml(hwpx_paragraph(f"구역 {i}")) for i in range(11)]
    data = build_hwpx(sections, with_hpf=False)
    doc = extract_file(write(tmp_path, "n.hwpx", data))
    assert [s.text for s in doc.sections] == [f"구역 {i}" for i in range(11)]  # 10 after 9, not after 1


def test_hwpx_2024_owpml_namespace(tmp_path):
    xml = (
        '<?xml version="1.0" encoding="UTF-8"?><hs:sec xmlns:hs="http://www.owpml.org/owpml/2024/section" '
        'xmlns:hp="http://www.owpml.org/owpml/2024/paragraph"><hp:p><hp:run><hp:t>표준 문서</hp:t></hp:run>'
        "</hp:p></hs:sec>"
    )
    doc = extract_file(write(tmp_path, "k.hwpx", build_hwpx([xml])))
    assert doc.text == "표준 문서"


@pytest.mark.parametrize("member", ["META-INF/container.xml", "Contents/content.hpf", "META-INF/manifest.xml"])
def test_hwpx_with_a_damaged_guiding_member_is_still_read(tmp_path, member):
    import io
    import struct
    import zipfile

    manifest = '<?xml version="1.0"?><odf:manifest xmlns:odf="urn:oasis:names:tc:opendocument:xmlns:manifest:1.0"/>'
    data = bytearray(
        build_hwpx(
            [hwpx_section_xml(hwpx_paragraph(f"구역 {i}")) for i in range(2)], extra={"META-INF/manifest.xml": manifest}
        )
    )
    info = zipfile.ZipFile(io.BytesIO(bytes(data))).getinfo(member)
    name_len, extra_len = struct.unpack("<HH", data[info.header_offset + 26 : info.header_offset + 30])
    start = info.header_offset + 30 + name_len + extra_len
    for i in range(start, start + info.compress_size):  # every byte damaged: a CRC or inflate error
        data[i] ^= 0x5A
    doc = extract_file(write(tmp_path, "d.hwpx", bytes(data)))
    assert [s.text for s in doc.sections] == ["구역 0", "구역 1"]


def test_hwpx_encrypted_manifest(tmp_path):
    manifest = (
        '<?xml version="1.0"?><odf:manifest xmlns:odf="urn:oasis:names:tc:opendocument:xmlns:manifest:1.0">'
        '<odf:file-entry odf:full-path="Contents/section0.xml"><odf:encryption-data/></odf:file-entry>'
        "</odf:manifest>"
    )
    data = build_hwpx([hwpx_section_xml(hwpx_paragraph("x"))], extra={"META-INF/manifest.xml": manifest})
    with pytest.raises(ExtractionError, match="encrypted HWPX"):
        extract_file(write(tmp_path, "e.hwpx", data))


# ---------------------------------------------------------------- HWP 5 (files written with our own CFB writer)


def hwp_section() -> bytes:
    return (
        para_records("한글 문서 첫 문단입니다.")
        + table_records([["구분", "내용"], ["채용", "면접"]], before="표 앞", after="표 뒤")
        + para_records("마지막 문단")
    )


@pytest.mark.parametrize("flags", [0, 1])
def test_hwp_compressed_and_uncompressed(tmp_path, flags):
    data = build_hwp([hwp_section(), para_records("둘째 구역")], flags=flags, title="시험 문서")
    doc = extract_file(write(tmp_path, "a.hwp", data))
    assert doc.media_type == HWP and doc.title == "시험 문서"
    assert [(s.text, s.table) for s in doc.sections] == [
        ("한글 문서 첫 문단입니다.\n표 앞 표 뒤", False),
        ("구분 | 내용\n채용 | 면접", True),
        ("마지막 문단", False),
        ("둘째 구역", False),
    ]


def test_hwp_large_section_outside_the_mini_stream(tmp_path):
    import random

    rng = random.Random(7)
    lines = ["".join(chr(rng.randint(0xAC00, 0xD7A3)) for _ in range(60)) for _ in range(200)]
    data = build_hwp([b"".join(para_records(line) for line in lines)] * 12)  # sections of 13+ KB compressed
    doc = extract_file(write(tmp_path, "big.hwp", data))
    assert len(doc.sections) == 12 and doc.sections[11].text.splitlines() == lines


@pytest.mark.parametrize(
    "flags,message",
    [
        (1 | 2, "password"),
        (1 | 16, "DRM"),
        (1 | 1024, "DRM"),
        (1 | 256, "certificate"),
        (1 | 4 | 2, "password"),  # a distribution document with a user's password too
    ],
)
def test_hwp_protected_documents(tmp_path, flags, message):
    with pytest.raises(ExtractionError, match=message):
        extract_file(write(tmp_path, "p.hwp", build_hwp([hwp_section()], flags=flags)))


def test_hwp_distribution_without_flag_but_viewtext(tmp_path):
    data = build_hwp([hwp_section()], body_storage="ViewText")
    with pytest.raises(ExtractionError, match="distribution"):
        extract_file(write(tmp_path, "v.hwp", data))


def test_hwp_empty_body(tmp_path):
    with pytest.raises(ExtractionError, match="no text"):
        extract_file(write(tmp_path, "e.hwp", build_hwp([para_records("")])))
