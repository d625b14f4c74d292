"""PDF via pypdfium2 (PDFium, Apache-2.0/BSD): one section per page with its 1-based page number."""

from __future__ import annotations

import re
import threading
from pathlib import Path

from services.errors import ExtractionError

from ._budget import Budget
from ._types import PDF, ExtractedDocument, Section

# PDFium load error codes (fpdfview.h).
_ERR_FILE, _ERR_FORMAT, _ERR_PASSWORD, _ERR_SECURITY = 2, 3, 4, 5
# Controls PDFium may emit (soft-hyphen markers, form feeds, NUL); keep tab and newline.
# PDFium is not thread-safe: one document at a time per process.
_PDFIUM_LOCK = threading.Lock()
_CONTROLS = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ufffe\uffff]")


def extract_pdf(path: Path, budget: Budget) -> ExtractedDocument:
    """Text layer of each page; encrypted PDFs and PDFs without any text layer raise ExtractionError."""
    with _PDFIUM_LOCK:
        return _extract_pdf(path, budget)


def _extract_pdf(path: Path, budget: Budget) -> ExtractedDocument:
    import pypdfium2 as pdfium

    if path.stat().st_size == 0:
        raise ExtractionError("empty file (0 bytes)")
    try:
        doc = pdfium.PdfDocument(str(path))
    except pdfium.PdfiumError as exc:
        code = getattr(exc, "err_code", None)
        if code == _ERR_PASSWORD:
            raise ExtractionError("encrypted PDF: it needs a password to open") from None
        if code == _ERR_SECURITY:
            raise ExtractionError("encrypted PDF: its security handler is not supported") from None
        raise ExtractionError("corrupt or truncated PDF: PDFium could not open it") from None
    try:
        n_pages = len(doc)
        if n_pages == 0:
            raise ExtractionError("corrupt PDF: it has no pages")
        if n_pages > budget.limits.max_pages:
            raise ExtractionError(f"PDF has {n_pages} pages, more than the limit of {budget.limits.max_pages}")
        title = _title(doc)
        sections: list[Section] = []
        for index in range(n_pages):
            budget.check_time()
            text = _page_text(doc, index)
            if text.strip():
                budget.take(len(text.encode("utf-8")), "PDF text")
                sections.append(Section(text=text, page=index + 1))
    finally:
        doc.close()
    if not sections:
        raise ExtractionError(
            f"no text layer: none of the PDF's {n_pages} page(s) has extractable text"
            " (scanned images need OCR, which is not supported)"
        )
    return ExtractedDocument(media_type=PDF, sections=sections, title=title)


def _page_text(doc, index: int) -> str:
    import pypdfium2 as pdfium

    try:
        page = doc[index]
    except pdfium.PdfiumError:
        return ""  # one broken page should not lose the others
    try:
        textpage = page.get_textpage()
        try:
            raw = textpage.get_text_range()
        finally:
            textpage.close()
    except pdfium.PdfiumError:
        return ""
    finally:
        page.close()
    text = raw.replace("\r\n", "\n").replace("\r", "\n")
    text = _CONTROLS.sub("", text)
    lines = [line.rstrip() for line in text.split("\n")]
    return "\n".join(_join_wrapped_words(lines)).strip("\n")


def _join_wrapped_words(lines: list[str]) -> list[str]:
    """Justified Korean text wraps anywhere, inside words too (탄소중 / 립기본계획, 민주 / 적 참여).
    A full line that ends in a Hangul syllable is joined to a next line that starts with one:
    Kiwi reads a missing space far better than a break inside a word, and a reader (or an LLM)
    the same. Shorter lines (titles, list items, the ends of paragraphs) keep their break.
    "Full": at least 80 % of the page's usual long line (its 75th percentile), in characters."""
    lengths = sorted(len(line) for line in lines if line.strip())
    if len(lengths) < 4:
        return lines
    full = 0.8 * lengths[(len(lengths) - 1) * 3 // 4]
    out: list[str] = []
    previous = ""  # the previous line as extracted, before any join
    for line in lines:
        if out and len(previous) >= full and _is_hangul(previous[-1:]) and _is_hangul(line[:1]):
            out[-1] += line
        else:
            out.append(line)
        previous = line
    return out


def _is_hangul(ch: str) -> bool:
    return bool(ch) and "\uac00" <= ch <= "\ud7a3"


def _title(doc) -> str | None:
    import pypdfium2 as pdfium

    try:
        meta = doc.get_metadata_dict(skip_empty=True)
    except (pdfium.PdfiumError, ValueError, UnicodeError):  # optional metadata must not fail the document
        return None
    title = (meta.get("Title") or "").strip()
    return title or None
