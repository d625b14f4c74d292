"""Lines of a PDF page from PDFium's characters and their boxes, and what each line break is.

PDFium gives the page's characters in reading order with generated line breaks ("\\r\\n") and
generated spaces (where it saw a gap). For each line this module keeps its horizontal extent and
font size, inserts the spaces PDFium missed between text objects that sit apart on one line
(brochures: separate text boxes side by side), and classifies each break between two lines:

* ``BREAK``: a real line end (a short line, a paragraph end, the next line indented or a list item);
* ``SPACE``: a wrap between words (a left-aligned line that ends because the next word did not fit);
* ``WRAP``: a full (justified) line that continues on the next line: Korean text wraps anywhere,
  inside a word (탄소중 / 립) or between words (위원회를 / 의견을); the position alone cannot
  tell which, so _wraps.py decides it from Korean word structure.
"""

from __future__ import annotations

import re
import statistics
from dataclasses import dataclass, field

BREAK, SPACE, WRAP = "\n", " ", "\u2063"  # WRAP: a placeholder (INVISIBLE SEPARATOR) until decided

# A line that starts a new item: bullets, circled or parenthesised numbers, "1.", "제3조", ○ speaker marks.
_ITEM_START = re.compile(
    r"^\s*(?:[○◯●◦•·∙▪■□◆◇▶▷►※\-–—*]|[\u2460-\u24ff\u3260-\u327f]|\(?\d{1,3}[.)]\s|\(\d{1,3}\)|\([가-하]\)|제\s?\d+\s?[조장절항]\b)"
)
# "가. " starts an item too, unless it ends a word wrapped from a full line ("자부합니 / 다. 그런데").
_HANGUL_ITEM = re.compile(r"^\s*[가-하]\.\s")
_SENTENCE_END = re.compile(r"[.?!。]['\"”’)\]」』]*$|[다요까][.?!]?$")
_LETTER = re.compile(r"[^\W_]")


@dataclass
class Line:
    text: str
    left: float = 0.0
    right: float = 0.0
    top: float = 0.0
    bottom: float = 0.0
    size: float = 0.0  # font size (points)
    first_word_width: float = 0.0
    chars: int = 0  # characters with a box

    @property
    def has_box(self) -> bool:
        return self.chars > 0


@dataclass
class PageLines:
    lines: list[Line] = field(default_factory=list)


def _chars(textpage) -> list[str]:
    """The page's characters, one per PDFium index (a surrogate pair's second half as '')."""
    import pypdfium2.raw as pdfium_c

    n = max(0, pdfium_c.FPDFText_CountChars(textpage.raw))
    codes = [pdfium_c.FPDFText_GetUnicode(textpage.raw, i) for i in range(n)]
    out = []
    i = 0
    while i < n:
        code = codes[i]
        if 0xD800 <= code < 0xDC00 and i + 1 < n and 0xDC00 <= codes[i + 1] < 0xE000:
            out.append(chr(0x10000 + ((code - 0xD800) << 10) + (codes[i + 1] - 0xDC00)))
            out.append("")
            i += 2
            continue
        out.append(chr(code) if code and not 0xD800 <= code < 0xE000 else "")
        i += 1
    return out


def page_lines(textpage) -> list[Line]:
    """Lines of the page from the characters' positions (PDFium's own line breaks are kept, and a
    new line starts wherever the text moves to another row, which PDFium sometimes runs together)."""
    import pypdfium2.raw as pdfium_c

    lines: list[Line] = []
    parts: list[str] = []
    boxes: list[tuple[float, float, float, float] | None] = []
    last: tuple[float, float, float, float] | None = None  # box of the line's last real character
    band: list[float] = []  # [bottom, top] of the line's letters so far

    def close() -> None:
        nonlocal parts, boxes, last, band
        if parts:
            lines.append(_make_line(parts, boxes))
        parts, boxes, last, band = [], [], None, []

    for i, ch in enumerate(_chars(textpage)):
        if not ch:
            continue
        if ch in "\r\n":
            close()
            continue
        box = None
        if not ch.isspace() and not pdfium_c.FPDFText_IsGenerated(textpage.raw, i):
            try:
                left, bottom, right, top = textpage.get_charbox(i, loose=True)  # font-height boxes
                box = (left, bottom, right, top)
            except Exception:  # a character PDFium cannot place: keep its text, not its box
                box = None
        if box is not None and last is not None:
            height = max(1.0, band[1] - band[0], box[3] - box[1])
            overlap = min(band[1], box[3]) - max(band[0], box[1])
            if overlap < 0.3 * min(height, max(1.0, box[3] - box[1])) or box[0] < last[0] - height:
                close()  # another row (or back to the left): a new line
        parts.append(ch)
        boxes.append(box)
        if box is not None:
            last = box
            band = [min(band[0], box[1]), max(band[1], box[3])] if band else [box[1], box[3]]
    close()
    return [line for line in lines if line.text.strip()]


def _fill_gaps(parts: list[str], boxes: list) -> tuple[list[str], list]:
    """A space where two characters of the line sit clearly further apart than its characters
    usually do and PDFium put none: text objects side by side (a stretched justified line has
    wide gaps everywhere, which are not word breaks)."""
    pairs = [
        (i, boxes[i][0] - boxes[i - 1][2])
        for i in range(1, len(parts))
        if boxes[i] is not None and boxes[i - 1] is not None
    ]
    if not pairs:
        return parts, boxes
    usual = statistics.median(gap for _, gap in pairs)
    height = max(b[3] - b[1] for b in boxes if b is not None)
    wide = {i for i, gap in pairs if gap > max(0.8 * height, usual + 0.6 * height)}
    if not wide:
        return parts, boxes
    new_parts: list[str] = []
    new_boxes: list = []
    for i, (ch, box) in enumerate(zip(parts, boxes)):
        if i in wide:
            new_parts.append(" ")
            new_boxes.append(None)
        new_parts.append(ch)
        new_boxes.append(box)
    return new_parts, new_boxes


def _make_line(parts: list[str], boxes: list) -> Line:
    parts, boxes = _fill_gaps(parts, boxes)
    text = "".join(parts).strip()
    real = [b for b in boxes if b is not None]
    line = Line(text=text)
    if not real:
        return line
    line.left = min(b[0] for b in real)
    line.right = max(b[2] for b in real)
    line.bottom = min(b[1] for b in real)
    line.top = max(b[3] for b in real)
    line.size = max(b[3] - b[1] for b in real) or 1.0  # punctuation is shorter than the letters
    line.chars = len(real)
    # Width of the first word: from the first box to the last box before the first space.
    first = None
    end = None
    started = False
    for ch, box in zip(parts, boxes):
        if ch.isspace():
            if started:
                break
            continue
        started = True
        if box is not None:
            first = box if first is None else first
            end = box
    if first is not None and end is not None:
        line.first_word_width = end[2] - first[0]
    return line


def classify_breaks(lines: list[Line]) -> list[str]:
    """For each break between lines[k] and lines[k+1]: BREAK, SPACE or WRAP (see the module doc)."""
    margin_cache: dict[tuple[int, int], float] = {}
    margins = []
    for k, line in enumerate(lines):
        key = (round(line.left), round(line.right))
        if key not in margin_cache:
            margin_cache[key] = _column_right(lines, k)
        margins.append(margin_cache[key])
    # The left edges of the full lines of each margin: where that column's lines start.
    full_lefts: dict[float, list[float]] = {}
    for line, margin in zip(lines, margins):
        if line.has_box and abs(line.right - margin) < 0.35 * line.size:
            full_lefts.setdefault(margin, []).append(line.left)
    return [_classify(lines, k, margins[k], full_lefts.get(margins[k], [])) for k in range(len(lines) - 1)]


def _column_right(lines: list[Line], k: int) -> float:
    """The right margin of line k's column: the right edge most lines starting near it end at."""
    line = lines[k]
    if not line.has_box:
        return 0.0
    counts: dict[int, int] = {}
    for other in lines:
        if other.has_box and abs(other.left - line.left) < 3 * line.size and other.right > line.left:
            key = round(other.right)
            counts[key] = counts.get(key, 0) + 1
    if not counts:
        return line.right
    best = max(counts.values())
    if best < 2:
        # No other line ends with it: the margin is the furthest right edge of the lines around it.
        return max(
            (o.right for o in lines if o.has_box and o.left < line.right and o.right > line.left), default=line.right
        )
    # The furthest right edge that is (nearly) as common as the most common one.
    margin = max(key for key, n in counts.items() if n >= max(2, best // 2))
    return float(margin) if line.right <= margin + line.size else line.right


def _classify(lines: list[Line], k: int, margin: float, full_lefts: list[float]) -> str:
    line, nxt = lines[k], lines[k + 1]
    a, b = line.text.rstrip(), nxt.text.lstrip()
    if not a or not b or not line.has_box or not nxt.has_box:
        return BREAK
    size = line.size or 10.0
    # Justified lines end at the margin to within a fraction of a character.
    full = line.right >= margin - 0.35 * size
    if _ITEM_START.match(b) or (_HANGUL_ITEM.match(b) and not full):
        return BREAK
    same_column = nxt.left < line.right and nxt.right > line.left
    next_column = nxt.left >= line.right - size and nxt.top > line.bottom  # continues at the top of the next column
    if not (same_column or next_column):
        return BREAK
    if same_column and nxt.top > line.bottom + 0.5 * size:
        return BREAK  # the next line is above this one: not a continuation
    if same_column and line.bottom - nxt.top > 1.6 * size:
        return BREAK  # a blank line's worth of space: a new paragraph
    # The column's left edge: where its full lines start.
    column_left = min((left for left in full_lefts if left < line.right), default=line.left)
    if line.left > column_left + 2 * size:
        return BREAK  # a centred or right-aligned line stands on its own
    # The next line starts further right than the column's lines start: an indented first line.
    if same_column and nxt.left > column_left + 0.6 * size:
        return BREAK
    if full:
        if not _LETTER.search(a[-1]) or not _LETTER.search(b[0]):
            return SPACE if a[-1] in ",.;:?!)]}」』’”" or b[0] in "([{「『‘“" else WRAP
        return WRAP
    # Not full: a left-aligned line ends short when the next word does not fit in what is left.
    # (Conservative: the next line must not start left of this one, which a new list item does.)
    room = margin - line.right
    if (
        nxt.first_word_width
        and room < nxt.first_word_width + 0.5 * size
        and nxt.left >= line.left - 0.6 * size
        and not _SENTENCE_END.search(a)
    ):
        return SPACE
    return BREAK
