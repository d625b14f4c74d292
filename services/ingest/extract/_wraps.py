"""Line wraps of justified Korean text: inside a word (탄소중 / 립기본계획) or between words
(위원회를 / 의견을)? PDF positions cannot tell (_pdflines marks such wraps with WRAP_MARK); the
words can: Kiwi analyses the two words on each side of the wrap once joined and once spaced, and
the form whose best analysis scores higher wins (ties: spaced, which never glues two words).

Measured on hand-checked wraps of the fixture PDFs (tests/unit/test_extract_pdf_wraps.py): the
joined-or-spaced decision is right for about 96 % of them; the rest are compound nouns that read
correctly either way (고용노동 / 법안심사소위원회).
"""

from __future__ import annotations

import dataclasses
import logging
import re
from collections.abc import Callable
from typing import Any

from ._types import ExtractedDocument

log = logging.getLogger(__name__)

WRAP_MARK = "\u2063"  # INVISIBLE SEPARATOR: a wrap still to be decided
_CONTEXT_WORDS = 2
# Numbers take their unit or counter without a space (제64 / 항, 2024 / 년, 40 / 대).
_COUNTER = re.compile(r"^[항조호장절관편회차년월일시분초명개건원세대층번권부배쪽%]")

Scorer = Callable[[str], float]


def process_kiwi(without_it: str) -> Any:
    """The process-wide analyzer's Kiwi (loaded once), or None with a warning saying `without_it`:
    what the caller does instead (extraction never fails for want of Kiwi)."""
    try:
        from services.ingest.analyzer import get_analyzer

        return get_analyzer().kiwi
    except Exception:
        log.warning("Kiwi is not available: %s", without_it, exc_info=True)
        return None


def _kiwi_scorer() -> Scorer | None:
    """The score of the best analysis of a text, by the process-wide analyzer's Kiwi."""
    kiwi = process_kiwi("PDF line wraps are kept as spaces, which never glue words together")
    if kiwi is None:
        return None

    def score(text: str) -> float:
        return float(kiwi.analyze(text, top_n=1)[0][1])

    return score


def decide(left: str, right: str, score: Scorer | None) -> str:
    """'' when the wrap is inside a word, ' ' when it is between words; left/right: the line texts."""
    if not left or not right:
        return " "
    if left[-1].isdigit() and _COUNTER.match(right):
        return ""
    if score is None:
        return " "
    a = " ".join(left.split()[-_CONTEXT_WORDS:])
    b = " ".join(right.split()[:_CONTEXT_WORDS])
    return "" if score(a + b) > score(a + " " + b) else " "


def resolve_text(text: str, score: Scorer | None) -> str:
    """Every WRAP_MARK of text replaced by '' or ' '."""
    if WRAP_MARK not in text:
        return text
    pieces = text.split(WRAP_MARK)
    out = [pieces[0]]
    for piece in pieces[1:]:
        left = out[-1].rsplit("\n", 1)[-1]
        right = piece.split("\n", 1)[0].split(WRAP_MARK, 1)[0]
        out.append(decide(left, right, score))
        out.append(piece)
    return "".join(out)


def resolve_wraps(doc: ExtractedDocument, score: Scorer | None = None) -> ExtractedDocument:
    """The document with its undecided wraps decided (Kiwi loaded on first need)."""
    if not any(WRAP_MARK in s.text for s in doc.sections):
        return doc
    if score is None:
        score = _kiwi_scorer()
    sections = [dataclasses.replace(s, text=resolve_text(s.text, score)) for s in doc.sections]
    return dataclasses.replace(doc, sections=sections)


def strip_marks(text: str) -> str:
    return text.replace(WRAP_MARK, " ")
