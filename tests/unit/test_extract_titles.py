"""Titles found inside documents: placeholders dropped, printer prefixes and extensions cut;
letter-spaced form words joined where the spacing or Kiwi says they are one word."""

from __future__ import annotations

import pytest

from services.ingest.extract._spacing import collapse_letter_spacing, resolve_spacing
from services.ingest.extract._titles import document_title
from services.ingest.extract._types import ExtractedDocument, Section


@pytest.mark.parametrize(
    "raw",
    [
        "제목입니다.",
        "본문내용본문내용",  # a template's text typed twice (the gangnam notice's HWPX metadata)
        "제목 없음",
        "문서1",
        "Document3",
        "Untitled",
        "Microsoft Word - 문서1.docx",
        "PowerPoint 프레젠테이션",
        "   ",
        "---",
        None,
    ],
)
def test_placeholder_titles_are_dropped(raw):
    assert document_title(raw) is None


@pytest.mark.parametrize(
    ("raw", "title"),
    [
        ("2024년 탄소중립 이행계획", "2024년 탄소중립 이행계획"),
        ("Microsoft Word - 2024 업무보고.docx", "2024 업무보고"),
        ("  공무원  인사기록\n요약서 ", "공무원 인사기록 요약서"),
        ("보고서.hwp", "보고서"),
        ("제목", None),
        ("제목: 2024 예산안", "제목: 2024 예산안"),
        ("하하", "하하"),  # a single syllable twice is a word, not a template typed twice
    ],
)
def test_real_titles_are_kept_and_cleaned(raw, title):
    assert document_title(raw) == title


def _nouns(text: str) -> bool:  # stands in for Kiwi: a fixed vocabulary of single nouns
    return text in {"성명", "부칙", "구분", "직위"}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("공 무 원 인 사 기 록 요 약 서", "공무원인사기록요약서"),  # five or more syllables: always
        ("성   명 | 홍길동", "성명 | 홍길동"),  # two or more spaces: always
        ("부 칙\n제1조(시행일)", "부칙\n제1조(시행일)"),  # a noun by Kiwi
        ("7)구 분 | □재직자", "7)구분 | □재직자"),  # an item marker may precede
        ("2)직 위 | 3)직 급", "2)직위 | 3)직 급"),  # 직급 is not in this test's vocabulary
        ("첫 줄", "첫 줄"),  # not one noun: prose
        ("표 앞 표 뒤", "표 앞 표 뒤"),
        ("몇 번 더 할 수 있다", "몇 번 더 할 수 있다"),  # not a whole run of single syllables
        ("나는 그 책을 본 적이 있다", "나는 그 책을 본 적이 있다"),
        ("탭\t뒤", "탭\t뒤"),  # a tab separates fields
        ("(만 세)", "(만 세)"),  # a form's blank between brackets stays
        ("A B C D E", "A B C D E"),
    ],
)
def test_letter_spaced_words(text, expected):
    assert collapse_letter_spacing(text, _nouns) == expected


def test_without_kiwi_only_unambiguous_runs_are_joined():
    assert collapse_letter_spacing("성 명 | 공 무 원 인 사", None) == "성 명 | 공무원인사"


def test_resolve_spacing_uses_kiwi_for_short_runs_and_headings():
    doc = ExtractedDocument(
        media_type="application/x-hwp",
        sections=[Section(text="성 명 | 홍길동\n첫 줄", heading="총 칙")],
    )
    out = resolve_spacing(doc)
    assert out.sections[0].text == "성명 | 홍길동\n첫 줄"
    assert out.sections[0].heading == "총칙"
