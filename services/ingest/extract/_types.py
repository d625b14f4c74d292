"""Value types shared by every extractor: the extracted document, its sections, and the safety limits."""

from __future__ import annotations

from dataclasses import dataclass

TEXT_PLAIN = "text/plain"
TEXT_MARKDOWN = "text/markdown"
TEXT_HTML = "text/html"
PDF = "application/pdf"
DOCX = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
HWPX = "application/hwp+zip"
HWP = "application/x-hwp"
HWPML = "application/x-hwpml"
XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
PPTX = "application/vnd.openxmlformats-officedocument.presentationml.presentation"

SUPPORTED_MEDIA_TYPES: frozenset[str] = frozenset(
    {TEXT_PLAIN, TEXT_MARKDOWN, TEXT_HTML, PDF, DOCX, HWPX, HWP, HWPML, XLSX, PPTX}
)

#: Human names used in error messages.
FORMAT_NAMES: dict[str, str] = {
    TEXT_PLAIN: "plain text",
    TEXT_MARKDOWN: "Markdown",
    TEXT_HTML: "HTML",
    PDF: "PDF",
    DOCX: "DOCX",
    HWPX: "HWPX",
    HWP: "HWP",
    HWPML: "HWPML",
    XLSX: "XLSX",
    PPTX: "PPTX",
}


@dataclass(frozen=True)
class Section:
    """A run of text with its location: 1-based page (PDF page, slide, sheet), the heading path it
    sits under ("제2장 총칙 > 제8조"), and whether it is one table (one line per row, cells joined
    by " | "), which the chunker keeps in one chunk when it fits the budget."""

    text: str
    page: int | None = None
    heading: str | None = None
    table: bool = False


@dataclass(frozen=True)
class ExtractedDocument:
    """Text of one document, in reading order, split into sections that carry page/heading metadata."""

    media_type: str
    sections: list[Section]
    title: str | None = None
    #: Written by Hancom software (a PDF from Hancom PDF): private-use characters are Hancom's.
    hancom: bool = False

    @property
    def text(self) -> str:
        """All section texts joined by blank lines (convenience for callers that need flat text)."""
        return "\n\n".join(s.text for s in self.sections)


@dataclass(frozen=True)
class ExtractLimits:
    """Bounds that keep hostile documents from exhausting memory, CPU or the parser stack.

    max_uncompressed_bytes: total bytes one document may expand to (zip members, HWP streams, text files).
    max_compression_ratio: largest uncompressed/compressed ratio accepted for a member over 1 MiB.
    max_xml_depth: deepest element nesting accepted in XML (also the deepest HWP record nesting).
    max_pages: most PDF pages processed.
    time_limit_s: wall-clock budget per document (checked cooperatively in-process; enforced by
        killing the child in extract_file_with_timeout).
    max_memory_bytes: address-space cap (RLIMIT_AS) of the child process of extract_file_with_timeout.
    """

    max_uncompressed_bytes: int = 200 * 2**20
    max_compression_ratio: float = 200.0
    max_xml_depth: int = 256
    max_pages: int = 5000
    time_limit_s: float = 120.0
    max_memory_bytes: int = 2 * 2**30
