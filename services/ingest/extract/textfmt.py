"""Plain text and Markdown: encoding detection (UTF-8, UTF-16, CP949/EUC-KR, others) and Markdown headings."""
from __future__ import annotations

import codecs
import re
import unicodedata
from pathlib import Path

from services.errors import ExtractionError

from ._budget import Budget
from ._types import TEXT_MARKDOWN, TEXT_PLAIN, ExtractedDocument, Section

# Controls that never occur in real text files (everything below 0x20 except tab, LF, VT, FF, CR, ESC).
_BAD_CONTROLS = frozenset(chr(c) for c in range(32) if c not in (9, 10, 11, 12, 13, 27)) | {"\x7f"}


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
        try:
            return data.decode(utf16)
        except UnicodeDecodeError:
            pass
    try:
        text = data.decode("cp949")
    except UnicodeDecodeError:
        pass
    else:
        if _looks_korean(text):
            return text
    return _charset_normalizer_guess(data)


def _decode_lenient(data: bytes, codec: str) -> str:
    """Decode with a known encoding (from a BOM); a few bad sequences become U+FFFD, many are an error."""
    text = data.decode(codec, errors="replace")
    if text.count("\ufffd") > max(8, len(text) // 100):
        raise ExtractionError(f"text file claims {codec} (byte order mark) but is not valid {codec}")
    return text


def _codec_for_label(label: str) -> str | None:
    label = label.strip().strip("\"'").lower()
    # WHATWG maps every EUC-KR label to windows-949, the superset Korean software writes.
    if label in {"euc-kr", "euc_kr", "euckr", "ks_c_5601-1987", "ks_c_5601", "korean", "csksc56011987",
                 "iso-ir-149", "windows-949", "cp949", "uhc", "x-windows-949"}:
        return "cp949"
    try:
        return codecs.lookup(label).name
    except LookupError:
        return None


def _guess_utf16_without_bom(data: bytes) -> str | None:
    if len(data) < 4 or len(data) % 2:
        return None
    sample = data[:4096]
    even_zero = sample[0::2].count(0)
    odd_zero = sample[1::2].count(0)
    half = len(sample) // 2
    if odd_zero > 0.3 * half and even_zero < 0.05 * half:
        return "utf-16-le"
    if even_zero > 0.3 * half and odd_zero < 0.05 * half:
        return "utf-16-be"
    return None


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
    bad = sum(1 for ch in sample if ch in _BAD_CONTROLS or ch == "\ufffd" or unicodedata.category(ch) == "Co")
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
        return ExtractedDocument(media_type=TEXT_MARKDOWN, sections=sections, title=title)
    return ExtractedDocument(media_type=TEXT_PLAIN, sections=[Section(text=text)])


_ATX = re.compile(r"^ {0,3}(#{1,6})(?:[ \t]+(.*?))?(?:[ \t]+#+)?[ \t]*$")
_SETEXT = re.compile(r"^ {0,3}(=+|-+)[ \t]*$")
_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")


def markdown_sections(text: str) -> tuple[str | None, list[Section]]:
    """Split Markdown at ATX (#) and setext headings outside code fences; returns (title, sections).

    Each section's text starts with its heading line (without the # marks) so the heading stays searchable.
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
    buf: list[str] = []
    fence: str | None = None

    def flush() -> None:
        body = "\n".join(buf).strip("\n")
        if body.strip():
            sections.append(Section(text=body, heading=heading))

    for line in lines:
        if fence is not None:
            buf.append(line)
            m = _FENCE.match(line)
            if m and m.group(1)[0] == fence[0] and len(m.group(1)) >= len(fence) and not line.strip()[len(m.group(1)):].strip():
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
            if title is None and heading and len(m.group(1)) == 1:
                title = heading
            buf = [heading] if heading else []
            continue
        if _SETEXT.match(line) and buf and buf[-1].strip() and not _SETEXT.match(buf[-1]):
            candidate = buf.pop().strip()
            flush()
            heading = candidate
            if title is None and line.strip().startswith("="):
                title = heading
            buf = [heading]
            continue
        buf.append(line)
    flush()
    return title, sections
