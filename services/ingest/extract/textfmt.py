"""Plain text and Markdown: encoding detection (UTF-8, UTF-16, CP949/EUC-KR, others) and Markdown headings."""

from __future__ import annotations

import codecs
import re
from pathlib import Path

from services.errors import ExtractionError

from ._budget import Budget
from ._structure import clean_heading
from ._types import TEXT_MARKDOWN, TEXT_PLAIN, ExtractedDocument, Section

# Characters that betray binary data: controls that never occur in real text files (everything
# below 0x20 except tab, LF, VT, FF, CR, ESC; DEL), U+FFFD and the private-use planes (category Co).
_NOT_TEXT = re.compile("[\x00-\x08\x0e-\x1a\x1c-\x1f\x7f\ufffd\ue000-\uf8ff\U000f0000-\U000ffffd\U00100000-\U0010fffd]")


def read_limited(path: Path, budget: Budget, what: str) -> bytes:
    """Read a whole file, refusing files over the document's uncompressed-byte allowance."""
    size = path.stat().st_size
    if size == 0:
        raise ExtractionError("empty file (0 bytes)")
    budget.take(size, what)
    return path.read_bytes()


def decode_text(data: bytes, *, charset_hint: str | None = None) -> str:
    """Decode bytes of a text file: BOM, then a declared charset, strict UTF-8, UTF-16 without BOM,
    CP949 (EUC-KR superset) when the result looks Korean, then charset-normalizer's best guess.

    Raises ExtractionError when the bytes are not text in any encoding we can recognise.
    """
    text = _decode(data, charset_hint)
    _ensure_textual(text)
    return text


def _decode(data: bytes, hint: str | None) -> str:
    if data.startswith(codecs.BOM_UTF8):
        return _decode_lenient(data[3:], "utf-8")
    if data.startswith(codecs.BOM_UTF16_LE):
        return _decode_lenient(data[2:], "utf-16-le")
    if data.startswith(codecs.BOM_UTF16_BE):
        return _decode_lenient(data[2:], "utf-16-be")
    if hint:
        codec = _codec_for_label(hint)
        if codec:
            try:
                return data.decode(codec)
            except UnicodeDecodeError:
                pass
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        pass
    utf16 = _guess_utf16_without_bom(data)
    if utf16:
        text = data.decode(utf16, errors="replace")  # a file cut after an odd byte ends in U+FFFD
        if _few_replacements(text):
            return text
    try:
        text = data.decode("cp949")
    except UnicodeDecodeError:
        pass
    else:
        if _looks_korean(text):
            return text
    # A stray byte or two (a file cut mid-character, a mis-pasted character) costs a U+FFFD each,
    # not the document. UTF-8 first: read as CP949, UTF-8 Korean gives plausible Hangul, while
    # CP949 Korean read as UTF-8 is almost all U+FFFD.
    mostly_utf8 = data.decode("utf-8", errors="replace")
    if _few_replacements(mostly_utf8):
        return mostly_utf8
    mostly_cp949 = data.decode("cp949", errors="replace")
    if _few_replacements(mostly_cp949) and _looks_korean(mostly_cp949):
        return mostly_cp949
    return _charset_normalizer_guess(data)


def _few_replacements(text: str) -> bool:
    # One stray byte inside a multibyte character makes up to four U+FFFD.
    return text.count("\ufffd") <= max(8, len(text) // 200)


def _decode_lenient(data: bytes, codec: str) -> str:
    """Decode with a known encoding (from a BOM); a few bad sequences become U+FFFD, many are an error."""
    text = data.decode(codec, errors="replace")
    if text.count("\ufffd") > max(8, len(text) // 100):
        raise ExtractionError(f"text file claims {codec} (byte order mark) but is not valid {codec}")
    return text


def _codec_for_label(label: str) -> str | None:
    label = label.strip().strip("\"'").lower()
    # WHATWG maps every EUC-KR label to windows-949, the superset Korean software writes.
    if label in {
        "euc-kr",
        "euc_kr",
        "euckr",
        "ks_c_5601-1987",
        "ks_c_5601",
        "korean",
        "csksc56011987",
        "iso-ir-149",
        "windows-949",
        "cp949",
        "uhc",
        "x-windows-949",
    }:
        return "cp949"
    try:
        return codecs.lookup(label).name
    except LookupError:
        return None


def _guess_utf16_without_bom(data: bytes) -> str | None:
    """UTF-16 without a byte order mark: the endianness whose decoding reads as real script, if any."""
    if len(data) < 4 or b"\x00" not in data:
        return None
    for codec in ("utf-16-le", "utf-16-be"):
        if plausible_utf16(data[:8192], codec):
            return codec
    return None


def plausible_utf16(sample: bytes, codec: str) -> bool:
    """True when `sample` decodes as `codec` into (almost only) letters of common scripts and punctuation.

    Random bytes and text read with the wrong endianness scatter over the whole BMP and fail this.
    """
    try:
        text = codecs.getincrementaldecoder(codec)().decode(sample[: len(sample) // 2 * 2], final=False)
    except UnicodeDecodeError:
        return False
    if not text or "\x00" in text:
        return False
    good = 0
    for ch in text:
        o = ord(ch)
        if (
            32 <= o < 127
            or ch in "\t\n\r\f"
            or 0xAC00 <= o <= 0xD7A3
            or 0x1100 <= o <= 0x11FF
            or 0x3130 <= o <= 0x318F  # Hangul
            or 0x4E00 <= o <= 0x9FFF
            or 0x3000 <= o <= 0x30FF  # Hanja, CJK punctuation, kana
            or 0xFF00 <= o <= 0xFFEF
            or 0x2000 <= o <= 0x27BF
            or 0xA0 <= o <= 0x24F  # symbols, Latin
            or 0x370 <= o <= 0x4FF  # Greek, Cyrillic
        ):
            good += 1
    return good >= 0.95 * len(text)


def _looks_korean(text: str) -> bool:
    """True when most non-ASCII characters are Hangul, Hanja or CJK punctuation (a CP949 decode that fits)."""
    non_ascii = 0
    plausible = 0
    for ch in text:
        o = ord(ch)
        if o < 128:
            continue
        non_ascii += 1
        if (
            0xAC00 <= o <= 0xD7A3  # Hangul syllables
            or 0x3130 <= o <= 0x318F  # Hangul compatibility jamo
            or 0x4E00 <= o <= 0x9FFF  # CJK ideographs (Hanja)
            or 0x3000 <= o <= 0x303F  # CJK punctuation
            or 0xFF00 <= o <= 0xFFEF  # full-width forms
            or 0x2000 <= o <= 0x27BF  # general punctuation, symbols, arrows, circled numbers
            or 0x3200 <= o <= 0x33FF  # enclosed CJK, CJK compatibility
            or o in (0xB7, 0xA7, 0xB0, 0xB1, 0xD7, 0xF7)
        ):
            plausible += 1
    return non_ascii > 0 and plausible >= 0.8 * non_ascii


def _charset_normalizer_guess(data: bytes) -> str:
    from charset_normalizer import from_bytes

    best = from_bytes(data[: 4 * 2**20]).best()
    if best is None or not best.encoding:
        raise ExtractionError("not a text file: the bytes match no known text encoding")
    return data.decode(best.encoding, errors="replace")


def _ensure_textual(text: str) -> None:
    if "\x00" in text:
        raise ExtractionError("binary data, not text (contains NUL characters)")
    sample = text[: 2**20]
    if not sample:
        return
    bad = sum(1 for _ in _NOT_TEXT.finditer(sample))
    if bad > max(2, len(sample) // 50):
        raise ExtractionError("binary data, not text (too many control characters)")


def extract_text_file(path: Path, media_type: str, budget: Budget) -> ExtractedDocument:
    """Plain text or Markdown file → document (one section for plain text, one per heading for Markdown)."""
    data = read_limited(path, budget, "text file")
    text = decode_text(data)
    if not text.strip():
        raise ExtractionError("no text: the file contains only whitespace")
    if media_type == TEXT_MARKDOWN:
        title, sections = markdown_sections(text)
        if not sections:
            raise ExtractionError("no text: the Markdown file has only empty headings")
        return ExtractedDocument(media_type=TEXT_MARKDOWN, sections=sections, title=title)
    return ExtractedDocument(media_type=TEXT_PLAIN, sections=[Section(text=text)])


_ATX = re.compile(r"^ {0,3}(#{1,6})(?:[ \t]+(.*?))?(?:[ \t]+#+)?[ \t]*$")
_SETEXT = re.compile(r"^ {0,3}(=+|-+)[ \t]*$")
_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")


def markdown_sections(text: str) -> tuple[str | None, list[Section]]:
    """Split Markdown at ATX (#) and setext headings outside code fences; returns (title, sections).

    Each section's text starts with its heading line (without the # marks) so the heading stays
    searchable; its `heading` is the path of headings above it ("제1장 > 제2조"). The title is the
    front matter's (a first heading is a heading, not document metadata).
    """
    lines = text.splitlines()
    title: str | None = None
    # YAML front matter: drop it, keep its title.
    if lines and lines[0].strip() == "---":
        for i in range(1, min(len(lines), 200)):
            if lines[i].strip() in ("---", "..."):
                for fm in lines[1:i]:
                    key, _, value = fm.partition(":")
                    if key.strip().lower() == "title" and value.strip():
                        title = value.strip().strip("\"'")
                lines = lines[i + 1 :]
                break

    sections: list[Section] = []
    heading: str | None = None
    path: list[tuple[int, str]] = []
    buf: list[str] = []
    fence: str | None = None

    def flush() -> None:
        body = "\n".join(buf).strip("\n")
        if body.strip():
            sections.append(Section(text=body, heading=" > ".join(h for _, h in path) or None))

    def enter(level: int, text: str | None) -> None:
        while path and path[-1][0] >= level:
            path.pop()
        if text:
            path.append((level, clean_heading(text)))

    for line in lines:
        if fence is not None:
            buf.append(line)
            m = _FENCE.match(line)
            closing = m.group(1) if m else ""
            if (
                closing
                and closing[0] == fence[0]
                and len(closing) >= len(fence)
                and not line.strip()[len(closing) :].strip()
            ):
                fence = None
            continue
        m = _FENCE.match(line)
        if m:
            fence = m.group(1)
            buf.append(line)
            continue
        m = _ATX.match(line)
        if m:
            flush()
            heading = (m.group(2) or "").strip() or None
            enter(len(m.group(1)), heading)
            buf = [heading] if heading else []
            continue
        if _SETEXT.match(line) and buf and buf[-1].strip() and not _SETEXT.match(buf[-1]):
            candidate = buf.pop().strip()
            flush()
            heading = candidate
            enter(1 if line.strip().startswith("=") else 2, heading)
            buf = [heading]
            continue
        buf.append(line)
    flush()
    return title, sections
