"""Issue 18 on documents the tests build: 배포용 HWP, outline headings and numbers, tables, private-use
characters, documents without letters (the real fixtures are in test_extract_fixtures.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.errors import ExtractionError
from services.ingest.extract import HWP, HWPX, extract_file
from services.ingest.extract._numbering import LevelFormat, Numbering, format_number
from services.ingest.extract._pua import map_private_use
from services.ingest.extract.hwp import distribution_key
from tests.extract_samples import (
    build_distribution_hwp,
    build_docx,
    build_hwp,
    build_hwpx,
    control,
    distribution_record,
    docx_paragraph,
    hwpx_paragraph,
    hwpx_section_xml,
    numbering_record,
    para_records,
    para_shape_record,
    secd_records,
    table_records,
)

KOREAN = "대한민국은 민주공화국이다. 대한민국의 주권은 국민에게 있고, 모든 권력은 국민으로부터 나온다."


def write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


# ---------------------------------------------------------------- 1. 배포용 (distribution) HWP


def test_distribution_key_is_recovered_from_the_record():
    key = bytes(range(16))
    assert distribution_key(distribution_record(key, seed=0x0BADF00D)[4:]) == key
    assert distribution_key(distribution_record(key, seed=0x7FFFFFF0)[4:]) == key


@pytest.mark.parametrize("flags", [1 | 4, 4])
def test_distribution_hwp_is_decrypted_and_extracted(tmp_path, flags):
    body = para_records(KOREAN) + table_records([["이름", "값"], ["서울", "1"]]) + para_records("끝 문단")
    doc = extract_file(
        write(tmp_path, "dist.hwp", build_distribution_hwp([body, para_records("둘째 구역")], flags=flags))
    )
    assert doc.media_type == HWP
    text = doc.text
    assert KOREAN in text and "이름 | 값\n서울 | 1" in text and "둘째 구역" in text
    assert "배포용 문서입니다" not in text  # the BodyText notice is not the document


def test_only_a_user_password_is_refused(tmp_path):
    with pytest.raises(ExtractionError, match="password") as info:
        extract_file(write(tmp_path, "p.hwp", build_hwp([para_records(KOREAN)], flags=1 | 2)))
    assert "distribution" not in info.value.message


def test_distribution_hwp_with_a_damaged_record(tmp_path):
    data = build_hwp([para_records(KOREAN)], flags=1 | 4, body_storage="ViewText")
    with pytest.raises(ExtractionError, match="corrupt distribution HWP"):
        extract_file(write(tmp_path, "d.hwp", data))


# ---------------------------------------------------------------- 4. headings and automatic numbers


def test_format_number_shapes():
    assert [format_number(n, "HANGUL_SYLLABLE") for n in (1, 2, 14, 15)] == ["가", "나", "하", "거"]
    assert format_number(3, "CIRCLED_DIGIT") == "③" and format_number(4, "ROMAN_CAPITAL") == "IV"
    assert format_number(2, "CIRCLED_HANGUL_SYLLABLE") == "㉯" and format_number(12, "HANGUL_PHONETIC") == "십이"
    numbering = Numbering([LevelFormat("^1."), LevelFormat("^2.", "HANGUL_SYLLABLE"), LevelFormat("(^3)")])
    assert [numbering.next(level) for level in (0, 1, 1, 2, 0, 1)] == ["1.", "가.", "나.", "(1)", "2.", "가."]


def _outline_hwp() -> bytes:
    doc_info = (
        para_shape_record()  # 0: body text
        + para_shape_record(head=1, level=0)  # 1: 개요 1
        + para_shape_record(head=1, level=1)  # 2: 개요 2
        + para_shape_record(head=2, level=0, numbering_id=2)  # 3: 문단 번호
        + numbering_record(["제^1장", "^2."], shapes=[0, 8])
        + numbering_record(["^1"], shapes=[1])
    )
    body = (
        para_records(control(2, "secd"), children=secd_records(outline_id=1))
        + para_records("머리 문단")
        + para_records("총칙", shape=1)
        + para_records("목적", shape=2)
        + para_records(KOREAN)
        + para_records("첫째 항목", shape=3)
        + para_records("둘째 항목", shape=3)
        + para_records("정의", shape=2)
        + table_records([["용어", "뜻"], ["법", "규칙"]])
        + para_records("보칙", shape=1)
        + para_records("끝.")
    )
    return build_hwp([body], doc_info=doc_info)


def test_hwp_outline_headings_get_paths_and_visible_numbers(tmp_path):
    doc = extract_file(write(tmp_path, "o.hwp", _outline_hwp()))
    got = [(s.heading, s.table, s.text) for s in doc.sections]
    assert got == [
        (None, False, "머리 문단"),
        ("제1장 총칙", False, "제1장 총칙"),
        ("제1장 총칙 > 가. 목적", False, f"가. 목적\n{KOREAN}\n① 첫째 항목\n② 둘째 항목"),
        ("제1장 총칙 > 나. 정의", False, "나. 정의"),
        ("제1장 총칙 > 나. 정의", True, "용어 | 뜻\n법 | 규칙"),
        ("제2장 보칙", False, "제2장 보칙\n끝."),
    ]


def _hwpx_header(numbering: str, para_prs: str) -> bytes:
    return (
        '<?xml version="1.0" encoding="UTF-8"?><hh:head xmlns:hh="http://www.hancom.co.kr/hwpml/2011/head">'
        f"<hh:refList><hh:numberings>{numbering}</hh:numberings><hh:paraProperties>{para_prs}"
        "</hh:paraProperties></hh:refList></hh:head>"
    ).encode()


def test_hwpx_outline_headings_get_paths_and_visible_numbers(tmp_path):
    numbering = (
        '<hh:numbering id="1" start="0">'
        '<hh:paraHead start="1" level="1" numFormat="ROMAN_CAPITAL">^1.</hh:paraHead>'
        '<hh:paraHead start="1" level="2" numFormat="DIGIT">^1-^2</hh:paraHead></hh:numbering>'
    )
    para_prs = (
        '<hh:paraPr id="0"><hh:heading type="NONE" idRef="0" level="0"/></hh:paraPr>'
        '<hh:paraPr id="1"><hh:heading type="OUTLINE" idRef="0" level="0"/></hh:paraPr>'
        '<hh:paraPr id="2"><hh:heading type="OUTLINE" idRef="0" level="1"/></hh:paraPr>'
    )

    def p(text: str, para_pr: int = 0) -> str:
        return hwpx_paragraph(text).replace('paraPrIDRef="0"', f'paraPrIDRef="{para_pr}"', 1)

    body = p("개요", 1) + p("배경", 2) + p(KOREAN) + p("목표", 2) + p("방법", 1) + p("끝.")
    data = build_hwpx([hwpx_section_xml(body)], header=_hwpx_header(numbering, para_prs), title="계획서")
    doc = extract_file(write(tmp_path, "o.hwpx", data))
    assert doc.media_type == HWPX and doc.title == "계획서"
    assert [(s.heading, s.text) for s in doc.sections] == [
        ("I. 개요", "I. 개요"),
        ("I. 개요 > I-1 배경", f"I-1 배경\n{KOREAN}"),
        ("I. 개요 > I-2 목표", "I-2 목표"),
        ("II. 방법", "II. 방법\n끝."),
    ]


def test_docx_heading_levels_make_paths(tmp_path):
    body = (
        docx_paragraph("제2장 총칙", "1")
        + docx_paragraph("제8조", "2")
        + docx_paragraph(KOREAN)
        + docx_paragraph("제9조", "2")
        + docx_paragraph("끝.")
    )
    doc = extract_file(write(tmp_path, "h.docx", build_docx(body)))
    assert [s.heading for s in doc.sections] == ["제2장 총칙", "제2장 총칙 > 제8조", "제2장 총칙 > 제9조"]


# ---------------------------------------------------------------- 6. tables


def test_hwp_merged_cells_once_and_no_empty_cells(tmp_path):
    from tests.extract_samples import TAG_CTRL_HEADER, TAG_LIST_HEADER, TAG_TABLE, record

    # 3 × 3: "구분" spans two rows, "합계" spans two columns; the (2, 2) cell is empty.
    inner = record(TAG_CTRL_HEADER, 1, b" lbt") + record(TAG_TABLE, 2, b"\x00" * 4 + bytes([3, 0, 3, 0]))
    cells = [(0, 0, 2, 1, "구분"), (1, 0, 1, 1, "2023"), (2, 0, 1, 1, "2024"), (0, 1, 1, 1, "1월"), (1, 1, 1, 1, "10")]
    cells += [(2, 1, 1, 1, "20"), (0, 2, 1, 2, "합계"), (2, 2, 1, 1, "")]
    import struct

    for col, row, colspan, rowspan, text in cells:
        inner += record(TAG_LIST_HEADER, 2, struct.pack("<HHIHHHH", 1, 0, 0, col, row, colspan, rowspan) + b"\0" * 22)
        inner += para_records(text, 2)
    doc = extract_file(write(tmp_path, "m.hwp", build_hwp([para_records(KOREAN + control(11, "tbl "), 0, inner)])))
    table = next(s for s in doc.sections if s.table)
    assert table.text == "구분 | 2023 | 2024\n1월 | 10 | 20\n합계"


# ---------------------------------------------------------------- 7. no letters


@pytest.mark.parametrize(
    "name,data",
    [
        (
            "img.html",
            b"<html><body><table><tr><td><img src=a.png></td><td></td></tr><tr><td>|</td></tr></table></body></html>",
        ),
        ("digits.txt", b"12 34 56\n--- | ---\n"),
    ],
)
def test_no_letters_is_no_text(tmp_path, name, data):
    with pytest.raises(ExtractionError, match=r"^no text"):
        extract_file(write(tmp_path, name, data))


# ---------------------------------------------------------------- 8. private-use characters


def test_hanyang_pua_mapped_and_decoration_dropped():
    assert map_private_use("\uf53a글 문서") == "ᄒᆞᆫ글 문서"
    assert map_private_use("\uf0a7항목") == "항목"
    assert map_private_use("가\uf0a7나") == "가 나"
    assert map_private_use("plain 텍스트") == "plain 텍스트"


def test_hwp_private_use_mapped_in_text_headings_and_title(tmp_path):
    doc_info = para_shape_record() + para_shape_record(head=1, level=0) + numbering_record(["^1."])
    body = para_records("\uf53a글 소개", shape=1) + para_records("\uf0a7 \uf53a글 문서 형식")
    doc = extract_file(write(tmp_path, "p.hwp", build_hwp([body], doc_info=doc_info, title="\uf53a글")))
    assert doc.title == "ᄒᆞᆫ글"
    assert doc.sections[0].heading == "1. ᄒᆞᆫ글 소개"
    assert doc.sections[0].text == "1. ᄒᆞᆫ글 소개\nᄒᆞᆫ글 문서 형식"
    assert not any("\ue000" <= ch <= "\uf8ff" for s in doc.sections for ch in s.text)


# ---------------------------------------------------------------- 3. HWPML and other XML


def test_hwpml_read_as_a_document(tmp_path):
    hml = (
        '<?xml version="1.0" encoding="UTF-8" standalone="no" ?><HWPML Version="2.91"><HEAD>'
        "<DOCSUMMARY><TITLE>규정집</TITLE></DOCSUMMARY><MAPPINGTABLE><NUMBERINGLIST>"
        '<NUMBERING Id="1"><PARAHEAD Level="1" NumFormat="Digit" Start="1">제^1장</PARAHEAD>'
        '<PARAHEAD Level="2" NumFormat="HangulSyllable" Start="1">^2.</PARAHEAD></NUMBERING></NUMBERINGLIST>'
        '<PARASHAPELIST><PARASHAPE Id="0" HeadingType="None" Level="0"/><PARASHAPE Id="1" HeadingType="Outline" Level="0"/>'
        '<PARASHAPE Id="2" HeadingType="Outline" Level="1"/></PARASHAPELIST></MAPPINGTABLE></HEAD>'
        '<BODY><SECTION Id="0"><P ParaShape="0"><TEXT><SECDEF OutlineShape="1"/><CHAR/></TEXT></P>'
        '<P ParaShape="1"><TEXT><CHAR>총칙</CHAR></TEXT></P>'
        '<P ParaShape="2"><TEXT><CHAR>목적</CHAR></TEXT></P>'
        '<P ParaShape="0"><TEXT><CHAR>이 규정은</CHAR><TAB/><CHAR>목적을 정한다.</CHAR></TEXT></P>'
        '<P ParaShape="0"><TEXT><TABLE><ROW><CELL><PARALIST><P><TEXT><CHAR>구분</CHAR></TEXT></P></PARALIST></CELL>'
        "<CELL><PARALIST><P><TEXT><CHAR>내용</CHAR></TEXT></P></PARALIST></CELL></ROW>"
        "<ROW><CELL><PARALIST><P><TEXT><CHAR>채용</CHAR></TEXT></P></PARALIST></CELL>"
        "<CELL><PARALIST><P><TEXT><CHAR/></TEXT></P></PARALIST></CELL></ROW></TABLE></TEXT></P>"
        "</SECTION></BODY><TAIL/></HWPML>"
    )
    doc = extract_file(write(tmp_path, "rules.hml", hml.encode()))
    assert doc.media_type == "application/x-hwpml" and doc.title == "규정집"
    assert "<" not in doc.text
    assert [(s.heading, s.table, s.text) for s in doc.sections] == [
        ("제1장 총칙", False, "제1장 총칙"),
        ("제1장 총칙 > 가. 목적", False, "가. 목적\n이 규정은\t목적을 정한다."),
        ("제1장 총칙 > 가. 목적", True, "구분 | 내용\n채용"),
    ]


@pytest.mark.parametrize(
    "name,data",
    [
        ("feed.txt", '<?xml version="1.0"?><rss version="2.0"><channel><title>news</title></channel></rss>'),
        ("data.xml", '<?xml version="1.0" encoding="UTF-8"?>\n<records><r id="1">서울</r></records>'),
        ("pic.svg", '<svg xmlns="http://www.w3.org/2000/svg" width="10"><text>글자</text></svg>'),
        ("doc.txt", '<!DOCTYPE note SYSTEM "note.dtd"><note>메모</note>'),
    ],
)
def test_unknown_xml_is_refused(tmp_path, name, data):
    from services.errors import UnsupportedMediaType

    with pytest.raises(UnsupportedMediaType, match="XML document"):
        extract_file(write(tmp_path, name, data.encode()))


def test_xhtml_and_korean_angle_brackets_are_not_refused(tmp_path):
    xhtml = '<?xml version="1.0" encoding="UTF-8"?>\n<!DOCTYPE html><html xmlns="http://www.w3.org/1999/xhtml"><body><p>본문</p></body></html>'
    assert extract_file(write(tmp_path, "a.xhtml", xhtml.encode())).text == "본문"
    assert (
        extract_file(write(tmp_path, "b.txt", "<공지> 내일은 휴관합니다.".encode())).text == "<공지> 내일은 휴관합니다."
    )


# ---------------------------------------------------------------- XLSX and PPTX


def test_xlsx_sheets_are_pages_with_their_names_as_headings(tmp_path):
    openpyxl = pytest.importorskip("openpyxl")
    wb = openpyxl.Workbook()
    ws = wb.active
    ws.title = "예산"
    ws.append(["구분", "2023", "2024"])
    ws.append(["인건비", 100, 120.0])
    ws.append([None, None, None])
    ws.merge_cells("A4:C4")
    ws["A4"] = "병합된 설명"
    wb.create_sheet("빈 시트")
    wb.create_sheet("참고")["B2"] = "비고 사항"
    wb.properties.title = "2024 예산서"
    path = tmp_path / "budget.xlsx"
    wb.save(path)
    doc = extract_file(path)
    assert doc.media_type == "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
    assert doc.title == "2024 예산서"
    assert [(s.page, s.heading, s.table, s.text) for s in doc.sections] == [
        (1, "예산", True, "구분 | 2023 | 2024\n인건비 | 100 | 120\n병합된 설명"),
        (3, "참고", True, "비고 사항"),
    ]


def test_pptx_slides_are_pages_with_their_titles_as_headings(tmp_path):
    pptx = pytest.importorskip("pptx")
    from pptx.util import Inches

    prs = pptx.Presentation()
    slide = prs.slides.add_slide(prs.slide_layouts[1])
    slide.shapes.title.text = "사업 개요"
    slide.placeholders[1].text = "첫 줄\n둘째 줄"
    table = slide.shapes.add_table(2, 2, Inches(1), Inches(3), Inches(4), Inches(1)).table
    table.cell(0, 0).text, table.cell(0, 1).text = "가", "나"
    table.cell(1, 0).merge(table.cell(1, 1))
    table.cell(1, 0).text = "병합"
    slide.notes_slide.notes_text_frame.text = "발표자 메모"
    prs.slides.add_slide(prs.slide_layouts[5]).shapes.title.text = "둘째 장"
    prs.core_properties.title = "사업 발표"
    path = tmp_path / "deck.pptx"
    prs.save(path)
    doc = extract_file(path)
    assert doc.media_type == "application/vnd.openxmlformats-officedocument.presentationml.presentation"
    assert doc.title == "사업 발표"
    assert [(s.page, s.heading, s.table, s.text) for s in doc.sections] == [
        (1, "사업 개요", False, "사업 개요\n첫 줄\n둘째 줄"),
        (1, "사업 개요", True, "가 | 나\n병합"),
        (1, "사업 개요", False, "발표자 메모"),
        (2, "둘째 장", False, "둘째 장"),
    ]


def test_ooxml_with_a_dtd_is_refused(tmp_path):
    import io
    import zipfile

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("[Content_Types].xml", "<Types/>")
        zf.writestr(
            "xl/workbook.xml",
            '<?xml version="1.0"?><!DOCTYPE w [<!ENTITY a "aaaaaaaaaa">]><workbook>&a;</workbook>',
        )
    with pytest.raises(ExtractionError, match="DTD"):
        extract_file(write(tmp_path, "bomb.xlsx", buf.getvalue()))


# ---------------------------------------------------------------- 2. and 4. PDF: separate text boxes, outline


def test_pdf_separate_text_boxes_keep_their_words_apart(tmp_path):
    from tests.extract_samples import build_pdf

    runs = []
    pairs = [
        ("행사 안내", "참가 신청"),
        ("장소 시청", "문의 민원실"),
        ("일시 오월", "대상 구민"),
        ("준비물 없음", "비용 무료"),
    ]
    for row, (left, right) in enumerate(pairs):
        runs += [(72, 700 - 40 * row, left, 10), (300, 700 - 40 * row, right, 10)]
    doc = extract_file(write(tmp_path, "brochure.pdf", build_pdf([runs], korean=True)))
    words = doc.text.split()
    for left, right in pairs:
        assert left.split()[-1] in words and right.split()[0] in words, doc.text  # 신청장소 was one "word"


def test_pdf_outline_gives_heading_paths(tmp_path):
    from tests.extract_samples import build_pdf

    pages = [
        [(72, 700, "제1장 총칙", 14), (72, 670, "제1조 목적", 12), (72, 650, "이 법은 목적을 정한다.", 10)],
        [(72, 700, "둘째 쪽의 본문이다.", 10), (72, 660, "제2장 보칙", 14), (72, 640, "끝 문단이다.", 10)],
    ]
    outline = [(0, "제1장 총칙", 0), (1, "제1조 목적", 0), (0, "제2장 보칙", 1)]
    doc = extract_file(write(tmp_path, "law.pdf", build_pdf(pages, korean=True, outline=outline)))
    assert [(s.page, s.heading, s.text) for s in doc.sections] == [
        (1, "제1장 총칙", "제1장 총칙"),
        (1, "제1장 총칙 > 제1조 목적", "제1조 목적\n이 법은 목적을 정한다."),
        (2, "제1장 총칙 > 제1조 목적", "둘째 쪽의 본문이다."),
        (2, "제2장 보칙", "제2장 보칙\n끝 문단이다."),
    ]


def test_ooxml_bomb_is_refused_before_the_library_reads_it(tmp_path):
    import io
    import zipfile

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("[Content_Types].xml", "<Types/>")
        zf.writestr("ppt/presentation.xml", b"<p>" + b" " * (300 * 2**20) + b"</p>")
    with pytest.raises(ExtractionError, match="bomb"):
        extract_file(write(tmp_path, "bomb.pptx", buf.getvalue()))
