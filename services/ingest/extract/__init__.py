"""Turn uploaded bytes into text with structure (pages, headings), by the type the content shows.

Formats: plain text (UTF-8, UTF-16, CP949/EUC-KR), Markdown, HTML, PDF (pypdfium2), DOCX, XLSX
(openpyxl), PPTX (python-pptx), HWPX, HWPML and HWP 5.0 including 배포용 documents (own reader of the
public record format). Hostile input (bombs, entity expansion, deep
nesting, truncation, garbage) ends in ExtractionError or UnsupportedMediaType, never another error.

Ingestion workers call extract_file_with_timeout (child process, time limit, memory cap); the
upload path can call detect_media_type_path (or detect_media_type on the first bytes) to refuse
unknown types early.
"""

from ._core import extract_file, normalize_media_type
from ._types import (
    DOCX,
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
    Section,
)
from .detect import detect_media_type, detect_media_type_data, detect_media_type_path
from .sandbox import extract_file_with_timeout

__all__ = [
    "DOCX",
    "HWP",
    "HWPML",
    "HWPX",
    "PDF",
    "PPTX",
    "SUPPORTED_MEDIA_TYPES",
    "TEXT_HTML",
    "TEXT_MARKDOWN",
    "TEXT_PLAIN",
    "XLSX",
    "ExtractLimits",
    "ExtractedDocument",
    "Section",
    "detect_media_type",
    "detect_media_type_data",
    "detect_media_type_path",
    "extract_file",
    "extract_file_with_timeout",
    "normalize_media_type",
]
