"""Whether the title stored inside a document is one its reader would call its title.

Office software and templates leave placeholders in a document's properties: Hancom's
"제목입니다", a template's text typed twice ("본문내용본문내용"), Word's "문서1" or the
"Microsoft Word - 보고서.docx" a PDF printer writes. Such a title is worse than the file
name, so it is dropped (and a printer's prefix and a file extension are cut off).
"""

from __future__ import annotations

import re

__all__ = ["document_title"]

# Compared without spaces, case-folded, trailing full stop removed.
_PLACEHOLDERS = frozenset(
    {
        "제목",
        "제목입니다",
        "제목없음",
        "제목을입력하세요",
        "제목을입력하십시오",
        "문서제목",
        "본문",
        "본문내용",
        "내용",
        "새문서",
        "문서",
        "빈문서",
        "프레젠테이션",
        "powerpoint프레젠테이션",
        "powerpointpresentation",
        "presentation",
        "untitled",
        "untitleddocument",
        "title",
        "document",
        "text",
        "noname",
        "slide1",
        "sheet1",
    }
)
# Default file names ("문서1", "Document3", "새 문서 2", "Untitled-1").
_DEFAULT_NAME = re.compile(r"(?:문서|새문서|빈문서|document|untitled|noname|book|통합문서)[-_]?\d*")
_PRINTER_PREFIX = re.compile(r"^microsoft\s+(?:word|powerpoint|excel)\s*-\s*", re.IGNORECASE)
_FILE_EXTENSION = re.compile(r"\.(?:hwpx?|hml|docx?|pdf|pptx?|xlsx?|txt|html?|md)$", re.IGNORECASE)
_LETTER = re.compile(r"[^\W\d_]")


def document_title(raw: str | None) -> str | None:
    """The title to show for a document whose properties say `raw`, or None for a placeholder."""
    if not raw:
        return None
    title = " ".join(raw.split())
    title = _PRINTER_PREFIX.sub("", title)
    title = _FILE_EXTENSION.sub("", title).strip()
    if not _LETTER.search(title):
        return None
    key = title.replace(" ", "").casefold().rstrip(".")
    if key in _PLACEHOLDERS or _DEFAULT_NAME.fullmatch(key) or _repeated(key):
        return None
    return title


def _repeated(key: str) -> bool:
    """The same text of two or more characters written twice or more ("본문내용본문내용")."""
    n = len(key)
    return any(n % size == 0 and key == key[:size] * (n // size) for size in range(2, n // 2 + 1))
