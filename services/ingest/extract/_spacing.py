"""Letter-spaced words of Korean forms: "공 무 원 인 사 기 록 요 약 서", "성   명", "부 칙".

Forms and headings spread a short word over its box by typing spaces between its syllables.
Kiwi then reads each syllable as a word of its own, so a search for 공무원 finds nothing. A run of
single syllables is written as one word only when it is a whole line or a whole table cell (an
item marker such as "7)" or "□" may precede it), and then only when the spacing says so: two or
more spaces between syllables, five or more syllables (prose never makes a whole line of them),
or, for two to four syllables with single spaces, Kiwi reading the joined form as one noun
(성 명 → 성명, but 첫 줄 and 표 앞 표 뒤 stay as they are).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable

from ._structure import CELL_SEPARATOR
from ._types import ExtractedDocument
from ._wraps import process_kiwi

__all__ = ["collapse_letter_spacing", "resolve_spacing"]

IsWord = Callable[[str], bool]

_SPACED_CELL = re.compile(
    r"(?P<lead> *(?:\(?\d{1,2}[).]|[가-하][.)]|[□■○●◦▪▫※·•-])? *)"
    r"(?P<word>[가-힣](?: +[가-힣])+)"
    r"(?P<tail> *)"
)
_CANDIDATE = re.compile(r"(?:^|\n| \| )[^\n|]{0,6}[가-힣] +[가-힣]")
_ALWAYS_SYLLABLES = 5


def collapse_letter_spacing(text: str, is_word: IsWord | None = None) -> str:
    """`text` with every letter-spaced whole line or table cell written as one word."""
    if not _CANDIDATE.search(text):
        return text
    return "\n".join(
        CELL_SEPARATOR.join(_collapse_cell(cell, is_word) for cell in line.split(CELL_SEPARATOR))
        for line in text.split("\n")
    )


def _collapse_cell(cell: str, is_word: IsWord | None) -> str:
    match = _SPACED_CELL.fullmatch(cell)
    if match is None:
        return cell
    spaced = match["word"]
    joined = spaced.replace(" ", "")
    wide = "  " in spaced
    if not (wide or len(joined) >= _ALWAYS_SYLLABLES or (is_word is not None and is_word(joined))):
        return cell
    return match["lead"] + joined + match["tail"]


def _kiwi_is_word() -> IsWord | None:
    """Whether the process-wide analyzer's Kiwi reads a text as a single noun."""
    kiwi = process_kiwi("short letter-spaced words are kept spaced")
    if kiwi is None:
        return None

    def is_word(text: str) -> bool:
        tokens = kiwi.tokenize(text)
        return len(tokens) == 1 and tokens[0].tag in ("NNG", "NNP")

    return is_word


def resolve_spacing(doc: ExtractedDocument, is_word: IsWord | None = None) -> ExtractedDocument:
    """The document with its letter-spaced words joined (Kiwi loaded on first need)."""
    texts = [t for s in doc.sections for t in (s.text, s.heading) if t]
    if not any(_CANDIDATE.search(t) for t in texts):
        return doc
    if is_word is None:
        is_word = _kiwi_is_word()
    sections = [
        dataclasses.replace(
            s,
            text=collapse_letter_spacing(s.text, is_word),
            heading=collapse_letter_spacing(s.heading, is_word) if s.heading else s.heading,
        )
        for s in doc.sections
    ]
    return dataclasses.replace(doc, sections=sections)
