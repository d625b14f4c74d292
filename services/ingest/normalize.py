"""Text normalization applied before hashing, chunking and morpheme analysis.

Rules (all idempotent, nothing else in the content is changed):

* line breaks: ``\\r\\n`` and ``\\r`` become ``\\n``; so do the other line separators
  (U+0085 NEL, U+2028, U+2029) and the page/line feeds ``\\f`` and ``\\v`` that PDF and
  office extractors emit between pages (dropping them would glue words together);
* control characters: every other C0/C1 control character (NUL included) and DEL is
  dropped; ``\\n`` and ``\\t`` are kept;
* invisible format characters that break Korean morpheme analysis when they sit inside
  a word (Kiwi reads ``서울\\u200b에서`` as two nouns) are dropped: the byte order mark /
  zero-width no-break space U+FEFF, zero-width space U+200B, word joiner U+2060 and soft
  hyphen U+00AD. Zero-width (non-)joiners U+200C/U+200D stay: emoji sequences need them;
* exotic spaces become an ASCII space: no-break space U+00A0, U+1680, U+2000..U+200A,
  U+202F, U+205F and the ideographic (full-width) space U+3000 common in Korean/CJK text;
  runs of spaces are not collapsed;
* lone surrogates (from ``surrogateescape`` decoding) become U+FFFD, so the text can
  always be encoded as UTF-8;
* finally Unicode NFC, which recomposes the decomposed Hangul (NFD, conjoining jamo)
  that macOS file names and some macOS editors produce. NFC, not NFKC: compatibility
  characters (full-width Latin, circled numbers, ㈜) are content and stay as they are.
"""

from __future__ import annotations

import re
import unicodedata

__all__ = ["normalize_text"]


def _build_table() -> dict[int, str | None]:
    table: dict[int, str | None] = {}
    for cp in range(0x20):
        table[cp] = None
    del table[ord("\t")]
    del table[ord("\n")]
    table[ord("\r")] = "\n"  # lone CR (CRLF is collapsed before the table is applied)
    table[0x0B] = "\n"  # vertical tab
    table[0x0C] = "\n"  # form feed (page break)
    table[0x7F] = None
    for cp in range(0x80, 0xA0):
        table[cp] = None
    table[0x85] = "\n"  # NEL
    table[0x2028] = "\n"  # LINE SEPARATOR
    table[0x2029] = "\n"  # PARAGRAPH SEPARATOR
    for cp in (0xFEFF, 0x200B, 0x2060, 0x00AD):
        table[cp] = None
    for cp in (0x00A0, 0x1680, *range(0x2000, 0x200B), 0x202F, 0x205F, 0x3000):
        table[cp] = " "
    for cp in range(0xD800, 0xE000):
        table[cp] = "\ufffd"
    return table


_TABLE = _build_table()
# One character class of everything the table changes: most texts need no translate().
_NEEDS_TABLE = re.compile(
    "[" + "".join(f"\\U{cp:08x}" for cp in sorted(_TABLE) if not 0xD800 <= cp < 0xE000) + "\ud800-\udfff]"
)


def normalize_text(text: str) -> str:
    """Return ``text`` in NFC with line breaks, control characters and spaces normalized."""
    if not text:
        return ""
    if _NEEDS_TABLE.search(text):
        if "\r" in text:
            text = text.replace("\r\n", "\n")
        text = text.translate(_TABLE)
    if not text.isascii() and not unicodedata.is_normalized("NFC", text):
        text = unicodedata.normalize("NFC", text)
    return text
