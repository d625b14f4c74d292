"""PDF line wraps decided from the evidence (issue 18, item 2), measured against what the pages show.

Each expectation below was checked by hand on the rendered page: the words around one line break of
a fixture PDF as a reader reads them. Justified Korean text wraps inside words (적 / 법) and between
words (대한 / 답을); a wrap inside a word must be joined without a space, a wrap between words must
keep them apart. The accuracy over all of them must be at least 95 %. Compound nouns that Korean
spelling allows either way (고용노동 / 법안심사소위원회) are counted as the page's official names
have them, i.e. as misses when spaced.
"""

from __future__ import annotations

import re

import pytest

from services.ingest.extract import extract_file
from tests.conftest import FIXTURES

MINUTES = "pdf_assembly_minutes_2col_hancompdf.pdf"  # 20 pages, two columns, justified
BILL = "assembly_bill_2125318_hancompdf.pdf"  # 10 pages, justified

# (file, page, the text around the wrap as the page reads). A space in the phrase: between words;
# none: one word across the line end. Sampled at random (seed 18) among the wraps of full lines.
EXPECTED = [
    (MINUTES, 6, "우리 위원회로 보임해 오신"),
    (MINUTES, 6, "여야 의견을 최대한"),
    (MINUTES, 6, "우리 위원회를 파행 없이"),
    (MINUTES, 6, "사임하시고 조수진 위원님께서"),
    (MINUTES, 6, "찾아뵙고 인사드리지"),
    (MINUTES, 6, "심각하게 파괴라도"),
    (MINUTES, 6, "의사진행을 저지하는지"),
    (MINUTES, 7, "보호법 등이 입법되어야"),
    (MINUTES, 7, "동일임금 법제화,"),
    (MINUTES, 8, "질문에 대한 답을"),
    (MINUTES, 10, "의사일정 제64항"),
    (MINUTES, 11, "근로자파견법의 적법"),
    (MINUTES, 11, "계속 발생하고 있습니다"),
    (MINUTES, 11, "종업원을 전출할 수"),
    (MINUTES, 11, "이러다 보니 쪼개기계약을"),
    (MINUTES, 11, "전혀 없습니다"),
    (MINUTES, 11, "전통적인 파견관계가"),
    (MINUTES, 11, "강제적으로 적용되기가"),
    (MINUTES, 11, "최근 대법원은 갱신기대권의"),
    (MINUTES, 11, "효율적인 회의"),
    (MINUTES, 11, "고용노동법안심사소위원회에"),
    (MINUTES, 11, "불법파견 사건이었습니다"),
    (MINUTES, 12, "아닌데도 불구하고"),
    (MINUTES, 12, "토양 오염과 하천의"),
    (MINUTES, 12, "정부 부처 관계자에"),
    (MINUTES, 12, "박정 위원장님 그리고"),
    (MINUTES, 12, "못할 수도 있고"),
    (MINUTES, 12, "법률적으로도 체크할"),
    (MINUTES, 12, "국회가 노력하겠다는"),
    (MINUTES, 12, "끝까지 각오를"),
    (MINUTES, 12, "말았는데요."),
    (MINUTES, 13, "참석하지 않는다 하더라도"),
    (MINUTES, 13, "의안이 통과될 수"),
    (MINUTES, 13, "그런데 단 한 번도"),
    (MINUTES, 13, "진심으로 감사의"),
    (MINUTES, 13, "금후에는 어쨌든"),
    (MINUTES, 13, "강력하게 말씀 올립니다"),
    (MINUTES, 13, "보이콧을 일삼는"),
    (MINUTES, 14, "양경규 어느"),
    (MINUTES, 18, "제34386호 생활화학제품"),
    (MINUTES, 18, "일부개정령안 환경"),
    (MINUTES, 18, "제34045호 대기환경보전법"),
    (MINUTES, 19, "제1082호 실내공기질"),
    (MINUTES, 19, "제1088호 환경오염피해"),
    (MINUTES, 19, "제1077호 생물다양성"),
    (MINUTES, 19, "시행규칙 고용노동"),
    (MINUTES, 19, "제34304호 산업안전보건법"),
    (MINUTES, 19, "일부개정령 환경"),
    (MINUTES, 19, "제34048호 고용보험법"),
    (MINUTES, 19, "행정입법명 소관"),
    (MINUTES, 20, "예방기금 운용계획"),
    (BILL, 1, "- 1 -"),
    (BILL, 1, "탄소중립기본계획"),
    (BILL, 1, "2050 탄소중립녹색성장위원회"),
    (BILL, 1, "민주적 참여를"),
    (BILL, 1, "위원회의 위원 위촉에"),
    (BILL, 1, "시민사회단체 등"),
    (BILL, 1, "의견을 들은 후 각"),
    (BILL, 1, "규정하고 있음."),
    (BILL, 1, "주요 정책 등을"),
    (BILL, 2, "- 2 -"),
    (BILL, 2, "반영될 수 있도록 하여야"),
    (BILL, 2, "제2기 탄소중립위원회가"),
    (BILL, 2, "민주적 참여 원칙을"),
    (BILL, 2, "탄소중립기본계획을 심의"),
    (BILL, 2, "위원회 등을 구성하도록"),
    (BILL, 2, "전가되지 않고 모든"),
    (BILL, 2, "하기 위한 목적이라는"),
    (BILL, 2, "위촉하는 경우"),
    (BILL, 2, "명확히 하고 실질적인"),
    (BILL, 2, "탄소중립 사회로의"),
    (BILL, 3, "- 3 -"),
    (BILL, 3, "다음과 같이 개정한다"),
    (BILL, 3, "시민사회단체 등"),
    (BILL, 3, "의견을 들은 후"),
    (BILL, 3, "다음 각 호에"),
    (BILL, 3, "대표성을 반영하여야"),
    (BILL, 4, "하여야”를"),
    (BILL, 4, "다양한 사회계층의"),
    (BILL, 4, "다음과 같이 신설한다"),
    (BILL, 10, "비영리민간단체"),
]


def _pages(name: str) -> dict[int, str]:
    path = FIXTURES / name
    if not path.exists():
        pytest.skip(f"shared fixture {name} is not present in {FIXTURES}")
    doc = extract_file(path)
    pages: dict[int, list[str]] = {}
    for section in doc.sections:
        pages.setdefault(section.page or 0, []).append(section.text)
    # A line end between words is as good as a space: compare with whitespace folded.
    return {page: re.sub(r"\s+", " ", "\n".join(texts)) for page, texts in pages.items()}


@pytest.mark.slow
def test_wraps_read_as_the_pages_show_them():
    texts = {name: _pages(name) for name in (MINUTES, BILL)}
    missed = [(name, page, phrase) for name, page, phrase in EXPECTED if phrase not in texts[name].get(page, "")]
    accuracy = 1 - len(missed) / len(EXPECTED)
    assert accuracy >= 0.95, (accuracy, missed)


@pytest.mark.slow
def test_the_wraps_reported_in_the_issue_are_not_glued():
    minutes = _pages(MINUTES)
    text = " ".join(minutes.values())
    for glued in ("우리위원회를", "의견을최대한", "통한심의를", "경우에한하여"):
        assert glued not in text
    bill = " ".join(_pages(BILL).values())
    assert "탄소중립기본계획" in bill and "탄소중 립" not in bill


@pytest.mark.slow
def test_wraps_are_decided_in_the_parent_of_the_sandbox():
    from services.ingest.extract import extract_file_with_timeout
    from services.ingest.extract._wraps import WRAP_MARK

    path = FIXTURES / BILL
    if not path.exists():
        pytest.skip(f"shared fixture {BILL} is not present in {FIXTURES}")
    marked = extract_file(path, resolve_wraps=False)  # what the child sends back: undecided wraps marked
    assert any(WRAP_MARK in s.text for s in marked.sections)
    through_child = extract_file_with_timeout(path)
    assert not any(WRAP_MARK in s.text for s in through_child.sections)
    assert [s.text for s in through_child.sections] == [s.text for s in extract_file(path).sections]
