"""extract_file: detect the type (unless given) and run the matching extractor within the limits."""

from __future__ import annotations

import dataclasses
import logging
import re
from pathlib import Path, PurePath

from services.errors import ExtractionError, SaekinError, UnsupportedMediaType

from ._budget import Budget
from ._pua import map_private_use
from ._spacing import resolve_spacing
from ._titles import document_title
from ._types import (
    DOCX,
    FORMAT_NAMES,
    HWP,
    HWPML,
    HWPX,
    PDF,
    PPTX,
    SUPPORTED_MEDIA_TYPES,
    TEXT_HTML,
    TEXT_MARKDOWN,
    TEXT_PLAIN,
    XLSX,
    ExtractedDocument,
    ExtractLimits,
)
from ._wraps import resolve_wraps as _resolve_wraps
from .detect import DECLARED_ALIASES, EXTENSION_TYPES, detect_media_type_path

log = logging.getLogger(__name__)

#: Formats written by Hancom's software, whose private-use characters are Hanyang old Hangul or
#: Hancom symbols (a PDF made by Hancom PDF is recognised by its producer in pdf.py).
_HANCOM_FORMATS = frozenset({HWP, HWPX, HWPML})
#: A letter of any script (no digits, no punctuation, no symbols): \w without digits and underscore.
_LETTER = re.compile(r"[^\W\d_]")


def normalize_media_type(media_type: str) -> str:
    """'text/markdown; charset=utf-8' → 'text/markdown'; known aliases mapped; unsupported → UnsupportedMediaType."""
    base = media_type.split(";", 1)[0].strip().lower()
    base = DECLARED_ALIASES.get(base, base)
    if base not in SUPPORTED_MEDIA_TYPES:
        raise UnsupportedMediaType(f"unsupported media type: {media_type}")
    return base


def extract_file(
    path: Path,
    *,
    media_type: str | None = None,
    filename: str | None = None,
    limits: ExtractLimits = ExtractLimits(),
    resolve_wraps: bool = True,
) -> ExtractedDocument:
    """Extract the text of the document at `path`, detecting its type from content when not given.

    Every bad input raises ExtractionError (or UnsupportedMediaType for a type we do not read) with a
    reason a person can act on; no other exception escapes. resolve_wraps=False leaves what needs
    Korean word analysis (PDF line wraps marked with _wraps.WRAP_MARK, letter-spaced words) for the
    caller to decide with decide_korean_words: the sandbox's child does, so that Kiwi is loaded once
    in the worker rather than once per document.
    """
    path = Path(path)
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise ExtractionError(f"the uploaded file cannot be read ({exc.strerror or exc})") from None
    if size == 0:
        raise ExtractionError("empty file (0 bytes)")
    media_type = _detect(path, filename or path.name) if media_type is None else normalize_media_type(media_type)
    budget = Budget(limits)
    try:
        doc = _dispatch(path, media_type, budget)
        if doc.media_type in _HANCOM_FORMATS or doc.hancom:
            doc = _map_private_use(doc)
        doc = dataclasses.replace(doc, title=document_title(doc.title))
        if not any(section.text.strip() for section in doc.sections):
            raise ExtractionError(f"no text: the {FORMAT_NAMES[media_type]} document is empty")
        if not any(_LETTER.search(section.text) for section in doc.sections):
            raise ExtractionError(
                f"no text: the {FORMAT_NAMES[media_type]} document has no letters (only"
                " digits, punctuation, symbols or table lines)"
            )
        return decide_korean_words(doc) if resolve_wraps else doc
    except SaekinError:
        raise
    except MemoryError:
        raise ExtractionError("the document needs more memory than extraction may use") from None
    except RecursionError:
        raise ExtractionError("the document's structure is nested too deeply") from None
    except Exception as exc:  # last line of defence: a library bug on hostile input becomes a domain error
        log.warning("unexpected error extracting %s as %s", filename or path.name, media_type, exc_info=True)
        raise ExtractionError(
            f"could not extract the {FORMAT_NAMES[media_type]} document: it is damaged or uses an unsupported"
            f" feature ({type(exc).__name__})"
        ) from exc


def _map_private_use(doc: ExtractedDocument) -> ExtractedDocument:
    sections = [
        dataclasses.replace(
            sec,
            text=map_private_use(sec.text),
            heading=map_private_use(sec.heading) if sec.heading else sec.heading,
        )
        for sec in doc.sections
    ]
    sections = [sec for sec in sections if sec.text.strip()]
    title = map_private_use(doc.title).strip() or None if doc.title else doc.title
    return dataclasses.replace(doc, sections=sections, title=title)


def decide_korean_words(doc: ExtractedDocument) -> ExtractedDocument:
    """What needs Korean word analysis (Kiwi, loaded once per process): PDF line wraps inside or
    between words, and letter-spaced form words (성 명 → 성명)."""
    return resolve_spacing(_resolve_wraps(doc))


def _detect(path: Path, filename: str | None) -> str:
    try:
        return detect_media_type_path(path, filename=filename)
    except UnsupportedMediaType as exc:
        claimed = EXTENSION_TYPES.get(PurePath(filename).suffix.lower()) if filename else None
        if claimed in (TEXT_PLAIN, TEXT_MARKDOWN, TEXT_HTML) and exc.message.startswith("unsupported file type: XML"):
            raise  # markup of another kind named as text: a foreign type, not a damaged text file
        if claimed:
            # Named like a supported format but its content is not: a damaged file, not a foreign type.
            raise ExtractionError(
                f"{filename} is not a valid {FORMAT_NAMES[claimed]} file: its content was not recognised"
                f" ({exc.message})"
            ) from None
        raise


def _dispatch(path: Path, media_type: str, budget: Budget) -> ExtractedDocument:
    if media_type in (TEXT_PLAIN, TEXT_MARKDOWN):
        from .textfmt import extract_text_file

        return extract_text_file(path, media_type, budget)
    if media_type == TEXT_HTML:
        from .htmlfmt import extract_html_file

        return extract_html_file(path, budget)
    if media_type == PDF:
        from .pdf import extract_pdf

        return extract_pdf(path, budget)
    if media_type == DOCX:
        from .docx import extract_docx

        return extract_docx(path, budget)
    if media_type == HWPX:
        from .hwpx import extract_hwpx

        return extract_hwpx(path, budget)
    if media_type == HWP:
        from .hwp import extract_hwp

        return extract_hwp(path, budget)
    if media_type == HWPML:
        from .hwpml import extract_hwpml

        return extract_hwpml(path, budget)
    if media_type == XLSX:
        from .xlsx import extract_xlsx

        return extract_xlsx(path, budget)
    if media_type == PPTX:
        from .pptx import extract_pptx

        return extract_pptx(path, budget)
    raise UnsupportedMediaType(f"unsupported media type: {media_type}")  # pragma: no cover
