"""Real Korean documents written by others (../shared/fixtures, read in place, never copied)."""

from __future__ import annotations

import pytest

from services.ingest.extract import (
    HWP,
    HWPX,
    PDF,
    TEXT_PLAIN,
    detect_media_type_path,
    extract_file,
    extract_file_with_timeout,
)
from tests.extract_samples import FIXTURES


def fixture(name: str):
    path = FIXTURES / name
    if not path.is_file():
        pytest.skip(f"shared fixture {name} is not present in {FIXTURES}")
    return path


def test_pdf_assembly_bill_pages_and_korean_text():
    doc = extract_file(fixture("assembly_bill_2125318_hancompdf.pdf"))
    assert doc.media_type == PDF
    pages = {s.page: s.text for s in doc.sections}
    # 10 pages; page 6 carries no text layer (a blank/graphic page), every other page has text.
    assert set(pages) == {1, 2, 3, 4, 5, 7, 8, 9, 10}
    assert "기후위기 대응을 위한 탄소중립ㆍ녹색성장 기본법" in pages[1]
    assert "제안이유 및 주요내용" in pages[1]
    assert "- 1 -" in pages[1] and "- 2 -" in pages[2] and "- 10 -" in pages[10]
    assert "부칙" in pages[5]  # the letter-spaced heading "부 칙", joined (it reads as one noun)
    assert "신ㆍ구조문대비표" in pages[7]
    # Justified lines wrap inside words (탄소중 / 립기본계획): joined again; the short title lines keep their breaks.
    assert "하고, 탄소중립기본계획 및 주요 정책" in pages[1] and "국민의 민주적 참여를" in pages[1]
    assert "녹색성장 기본법\n일부개정법률안\n(이수진의원 대표발의)" in pages[1]


def test_euc_kr_text_decodes():
    path = fixture("chardet_euc-kr_ude_euc2.txt")
    assert detect_media_type_path(path, filename=path.name) == TEXT_PLAIN
    doc = extract_file(path)
    text = doc.sections[0].text
    assert text.startswith("북조선 사람들은 흔히 자국을 조선(朝鮮)이나 공화국(共和國)이라고 부른다.")
    assert "조선민주주의인민공화국" in text
    assert "\ufffd" not in text


def test_hwpx_gangnam_notice():
    doc = extract_file(fixture("gangnam_notice_2023-745.hwpx"))
    assert doc.media_type == HWPX
    text = doc.text
    assert text.startswith("서울특별시 강남구 공고 제2023-745호")
    assert "「서울특별시 강남구 공무직 관리 규정」을 개정함에 있어" in text
    assert "입법예고합니다." in text
    assert "○ \t의견제출자의 성명" in text  # <hp:tab/> inside <hp:t> keeps the text after it
    assert "FAX:02-3423-8822" in text
    assert text.rstrip().endswith("○ 그 밖의 필요한 의견사항")


def test_hwp5_sample():
    doc = extract_file(fixture("pyhwp_sample-5017.hwp"))
    assert doc.media_type == HWP
    # The summary's title is Hancom's placeholder "제목입니다." ("the title goes here"): dropped, so
    # the file name stands (see test_extract_titles.py).
    assert doc.title is None
    lines = doc.text.splitlines()
    assert lines[0] == "한글 2005 예제 파일입니다."
    assert "본문 내용입니다." in doc.text
    # Table cells: one line per row, cells joined; a cell's two paragraphs stay in that cell.
    assert "A0 | B0" in lines
    assert "A1 | B10 B11" in lines
    assert "표 표끝" in lines  # the text around the table control stays, separated by a space
    assert "이건 각주이지요." in lines and "미주입니다." in lines
    # No control characters leak from the 8-WCHAR controls (section/column definitions, tables).
    assert not any(ord(ch) < 32 and ch not in "\t\n" for ch in doc.text)


@pytest.mark.parametrize(
    "name,kind",
    [
        ("assembly_bill_2125318_hancompdf.pdf", PDF),
        ("gangnam_notice_2023-745.hwpx", HWPX),
        ("pyhwp_sample-5017.hwp", HWP),
        ("chardet_euc-kr_ude_euc2.txt", TEXT_PLAIN),
    ],
)
def test_detection_by_content_with_misleading_name(name, kind):
    assert detect_media_type_path(fixture(name), filename="upload.docx") == kind


def test_fixture_through_child_process():
    doc = extract_file_with_timeout(fixture("pyhwp_sample-5017.hwp"))
    assert doc.sections[0].text.startswith("한글 2005 예제 파일입니다.")


def test_hwp_forms_letter_spaced_words_are_joined():
    # 별표6's form title is typed "공 무 원 인 사 기 록 요 약 서" and its labels "성 명", "구 분":
    # as stored, a search for 공무원 or 성명 finds them; prose and form blanks keep their spaces.
    doc = extract_file(fixture("hwp_gov_award_forms.hwp"))
    text = doc.text
    assert "공무원인사기록요약서" in text
    assert "4)성명 | 한글" in text and "7)구분 |" in text
    assert "(만 세)" in text  # a blank to fill in, between brackets
    assert "공 무 원" not in text
