"""PDF via pypdfium2 (PDFium, Apache-2.0/BSD): sections per page with its 1-based page number,
headings from the outline (bookmarks), and text that reads like the page.

Lines come from PDFium's characters and their boxes (_pdflines): spaces PDFium missed between text
objects side by side are restored, and each break between lines is a line end, a space, or a
wrap of justified Korean text decided from the words on both sides (_wraps, with Kiwi).
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass
from pathlib import Path

from services.errors import ExtractionError

from ._budget import Budget
from ._pdflines import BREAK, WRAP, classify_breaks, page_lines
from ._structure import SectionBuilder
from ._types import PDF, ExtractedDocument
from ._wraps import WRAP_MARK

# PDFium load error codes (fpdfview.h).
_ERR_FILE, _ERR_FORMAT, _ERR_PASSWORD, _ERR_SECURITY = 2, 3, 4, 5
# PDFium is not thread-safe: one document at a time per process.
_PDFIUM_LOCK = threading.Lock()
# Controls PDFium may emit (soft-hyphen markers, form feeds, NUL); keep tab and newline.
_CONTROLS = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ufffe\uffff" + WRAP_MARK + "]")
_MAX_BOOKMARKS = 20_000
_HANCOM = re.compile(r"hancom|hwp|한컴|한글", re.I)


@dataclass(frozen=True)
class Bookmark:
    level: int
    title: str
    page: int  # 0-based


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
        meta = _metadata(doc)
        title = (meta.get("Title") or "").strip() or None
        hancom = bool(_HANCOM.search(f"{meta.get('Producer', '')} {meta.get('Creator', '')}"))
        by_page: dict[int, list[Bookmark]] = {}
        for mark in _bookmarks(doc, n_pages):
            by_page.setdefault(mark.page, []).append(mark)
        builder = SectionBuilder(budget)
        any_text = False
        for index in range(n_pages):
            budget.check_time()
            lines = _page_lines(doc, index)
            if lines:
                any_text = True
                budget.take(sum(len(text.encode("utf-8")) + 1 for text, _ in lines), "PDF text")
            builder.set_page(index + 1)
            _add_page(builder, lines, by_page.get(index, []))
        sections = builder.finish()
    finally:
        doc.close()
    if not any_text or not sections:
        raise ExtractionError(
            f"no text layer: none of the PDF's {n_pages} page(s) has extractable text"
            " (scanned images need OCR, which is not supported)"
        )
    return ExtractedDocument(media_type=PDF, sections=sections, title=title, hancom=hancom)


def _page_lines(doc, index: int) -> list[tuple[str, str]]:
    """(line text, what follows it: BREAK, a space or WRAP_MARK) for each line of the page."""
    import pypdfium2 as pdfium

    try:
        page = doc[index]
    except pdfium.PdfiumError:
        return []  # one broken page should not lose the others
    try:
        textpage = page.get_textpage()
        try:
            lines = page_lines(textpage)
        finally:
            textpage.close()
    except pdfium.PdfiumError:
        return []
    finally:
        page.close()
    kinds = [*classify_breaks(lines), BREAK]
    out = []
    for line, kind in zip(lines, kinds):
        text = _CONTROLS.sub("", line.text).strip()
        if text:
            out.append((text, WRAP_MARK if kind == WRAP else kind))
        elif out:
            out[-1] = (out[-1][0], BREAK)
    return out


def _add_page(builder: SectionBuilder, lines: list[tuple[str, str]], marks: list[Bookmark]) -> None:
    """The page's lines into the builder, a section starting at each bookmark's title (or at the
    page's top when its title is not found on the page)."""
    rows: list[str] = []  # text of the running paragraph run, joined by the chosen separators
    current = ""

    def flush() -> None:
        nonlocal current
        if current:
            rows.append(current)
            current = ""
        builder.add_lines(rows)
        rows.clear()

    pending = list(marks)
    # Bookmarks whose titles are not on the page start its sections at the top.
    keys = [_key(text) for text, _ in lines]
    placed: dict[int, list[Bookmark]] = {}
    for mark in pending:
        at = next((i for i, k in enumerate(keys) if k and _key(mark.title) and k.startswith(_key(mark.title))), None)
        placed.setdefault(at if at is not None else 0, []).append(mark)
    for i, (text, sep) in enumerate(lines):
        for mark in placed.get(i, []):
            flush()
            builder.add_heading(mark.level, mark.title)
            if _key(text) == _key(mark.title):
                text = ""
        if text:
            current += text
            if sep == BREAK:
                rows.append(current)
                current = ""
            else:
                current += sep
    flush()


def _key(text: str) -> str:
    return "".join(text.split())


def _metadata(doc) -> dict[str, str]:
    import pypdfium2 as pdfium

    try:
        return doc.get_metadata_dict(skip_empty=True)
    except (pdfium.PdfiumError, ValueError, UnicodeError):  # optional metadata must not fail the document
        return {}


def _bookmarks(doc, n_pages: int) -> list[Bookmark]:
    """The outline's items that lead to a page, in document order (bounded; cycles are skipped)."""
    import pypdfium2 as pdfium
    import pypdfium2.raw as pdfium_c

    marks: list[Bookmark] = []
    try:
        for i, item in enumerate(doc.get_toc(max_depth=16)):
            if i >= _MAX_BOOKMARKS:
                break
            title = " ".join((item.get_title() or "").split())
            dest = item.get_dest()
            if dest is None:
                action = pdfium_c.FPDFBookmark_GetAction(item)
                raw = pdfium_c.FPDFAction_GetDest(doc, action) if action else None
                dest = pdfium.PdfDest(raw, pdf=doc) if raw else None
            page = dest.get_index() if dest is not None else None
            if title and page is not None and 0 <= page < n_pages:
                marks.append(Bookmark(item.level, title, page))
    except (pdfium.PdfiumError, ValueError, UnicodeError, AttributeError):
        return marks  # a damaged outline costs the headings, never the text
    return marks
