"""DOCX (Office Open XML): paragraphs, tables (sections of their own, one line per row) and heading
styles or outline levels as section headings with their paths."""

from __future__ import annotations

import posixpath
import re
from pathlib import Path
from xml.etree.ElementTree import Element

from services.errors import ExtractionError

from ._budget import Budget
from ._safexml import local, parse_xml
from ._safezip import SafeZip
from ._structure import SectionBuilder, row_line
from ._types import DOCX, ExtractedDocument

_HEADING_NAME = re.compile(r"^(?:heading|제목)\s*(\d*)$", re.I)
_TITLE_NAME = re.compile(r"^(?:title|subtitle)$", re.I)
_OFFICE_DOCUMENT_REL = "/officeDocument"


def extract_docx(path: Path, budget: Budget) -> ExtractedDocument:
    """DOCX file → document with one section per heading."""
    with SafeZip(path, budget, "DOCX") as zf:
        main = main_document_part(zf, budget)
        if main is None:
            raise ExtractionError("corrupt DOCX: it has no main document part (word/document.xml)")
        root = parse_xml(zf.read(main), budget, "DOCX document")
        styles_name = posixpath.join(posixpath.dirname(main), "styles.xml")
        styles = _heading_styles(parse_xml(zf.read(styles_name), budget, "DOCX styles")) if zf.has(styles_name) else {}
        title = _core_title(zf, budget)
    builder = _Builder(styles, budget)
    body = next((c for c in root if local(c.tag) == "body"), None)
    if body is None:
        raise ExtractionError("corrupt DOCX: the document has no body")
    builder.block_container(body)
    sections = builder.finish()
    if not sections:
        raise ExtractionError("no text: the DOCX document is empty")
    return ExtractedDocument(media_type=DOCX, sections=sections, title=title)


def main_document_part(zf: SafeZip, budget: Budget) -> str | None:
    """Name of the main document part, from _rels/.rels (falls back to word/document.xml)."""
    if zf.has("_rels/.rels"):
        rels = parse_xml(zf.read("_rels/.rels"), budget, "DOCX relationships")
        for rel in rels:
            if local(rel.tag) == "Relationship" and (rel.get("Type") or "").endswith(_OFFICE_DOCUMENT_REL):
                target = (rel.get("Target") or "").lstrip("/")
                target = posixpath.normpath(target) if target else ""
                if target and zf.has(target):
                    return target
    return "word/document.xml" if zf.has("word/document.xml") else None


def _core_title(zf: SafeZip, budget: Budget) -> str | None:
    if not zf.has("docProps/core.xml"):
        return None
    try:
        core = parse_xml(zf.read("docProps/core.xml"), budget, "DOCX properties")
    except ExtractionError:
        return None  # optional metadata: a broken core.xml does not lose the text
    for el in core:
        if local(el.tag) == "title" and el.text and el.text.strip():
            return el.text.strip()
    return None


def _attr(el: Element, name: str) -> str | None:
    """An attribute by local name, whatever its namespace (w:val, strict-OOXML namespaces alike)."""
    for key, value in el.attrib.items():
        if local(key) == name:
            return value
    return None


def _child(el: Element, name: str) -> Element | None:
    for c in el:
        if local(c.tag) == name:
            return c
    return None


def _outline_level(ppr: Element | None) -> int | None:
    if ppr is None:
        return None
    outline = _child(ppr, "outlineLvl")
    if outline is None:
        return None
    val = _attr(outline, "val") or ""
    return int(val) if val.isdigit() and int(val) < 9 else -1  # 9: body text, explicitly not a heading


def _heading_styles(styles_root: Element) -> dict[str, int]:
    """styleId → heading level (0 outermost) of paragraph styles that are headings: an outline level,
    a "heading n" / "제목 n" name (level n - 1), Title (0) or Subtitle (1), also through basedOn."""
    info: dict[str, tuple[int | None, str | None]] = {}
    for style in styles_root:
        if local(style.tag) != "style" or _attr(style, "type") not in (None, "paragraph"):
            continue
        style_id = _attr(style, "styleId")
        if not style_id:
            continue
        name_el = _child(style, "name")
        name = ((_attr(name_el, "val") or "") if name_el is not None else "").strip()
        level = _outline_level(_child(style, "pPr"))
        if level is None:
            if m := _HEADING_NAME.match(name):
                level = max(0, int(m.group(1)) - 1) if m.group(1) else 0
            elif _TITLE_NAME.match(name):
                level = 0 if name.lower() == "title" else 1
        based = _child(style, "basedOn")
        info[style_id] = (level, _attr(based, "val") if based is not None else None)
    result: dict[str, int] = {}
    for style_id in info:
        seen: set[str] = set()
        current: str | None = style_id
        while current and current in info and current not in seen and len(seen) < 32:
            seen.add(current)
            level = info[current][0]
            if level is not None:
                if level >= 0:
                    result[style_id] = level
                break
            current = info[current][1]
    return result


class _Builder:
    def __init__(self, styles: dict[str, int], budget: Budget) -> None:
        self.styles = styles
        self.budget = budget
        self.out = SectionBuilder(budget)

    def block_container(self, container: Element) -> None:
        """Body, content controls, custom XML: paragraphs and tables in document order."""
        for el in container:
            name = local(el.tag)
            if name == "p":
                self._paragraph(el)
            elif name == "tbl":
                self.out.add_table(table_rows(el))
            elif name in ("sdt", "customXml", "smartTag"):
                content = _child(el, "sdtContent") if name == "sdt" else el
                if content is not None:
                    self.block_container(content)
            self.out._tick()

    def _paragraph(self, p: Element) -> None:
        text = paragraph_text(p)
        level = self._heading_level(p)
        if level is not None and text.strip():
            self.out.add_heading(level, text)
        elif text.strip():
            self.out.add_line(text)

    def _heading_level(self, p: Element) -> int | None:
        ppr = _child(p, "pPr")
        if ppr is None:
            return None
        level = _outline_level(ppr)
        if level is not None:
            return level if level >= 0 else None
        style = _child(ppr, "pStyle")
        return self.styles.get(_attr(style, "val") or "") if style is not None else None

    def finish(self):
        return self.out.finish()


# Tracked changes show the document as accepted: deletions (del) and the old place of moved text
# (moveFrom, whose runs use w:t like any other) are not part of it.
_SKIP_IN_PARAGRAPH = {"pPr", "rPr", "instrText", "delText", "delInstrText", "Fallback", "fldData", "del", "moveFrom"}


def paragraph_text(p: Element) -> str:
    """Visible text of a paragraph: runs, hyperlinks, fields' results, tabs and breaks; text boxes inline.

    Deleted revisions, field instructions and markup-compatibility fallbacks (duplicates) are skipped.
    """
    parts: list[str] = []
    stack = [iter(p)]
    while stack:
        el = next(stack[-1], None)
        if el is None:
            stack.pop()
            continue
        name = local(el.tag)
        if name in _SKIP_IN_PARAGRAPH:
            continue
        if name == "t":
            parts.append(el.text or "")
        elif name == "tab" or name == "ptab":
            parts.append("\t")
        elif name in ("br", "cr"):
            parts.append("\n")
        elif name == "noBreakHyphen":
            parts.append("-")
        elif name == "p":  # a paragraph inside a text box
            parts.append("\n")
            stack.append(iter(el))
        elif name == "tbl":  # a table inside a text box
            parts.append("\n" + "\n".join(table_rows(el)) + "\n")
        else:
            stack.append(iter(el))
    return "".join(parts)


def table_rows(tbl: Element) -> list[str]:
    """One line per table row, cells joined by ' | '; a nested table's rows are flattened into its cell.

    A cell merged vertically appears once: its continuation cells (vMerge without restart) are skipped.
    """
    rows: list[str] = []
    for tr in _children_named(tbl, "tr"):
        cells = []
        for tc in _children_named(tr, "tc"):
            if _vmerge_continuation(tc):
                continue
            pieces: list[str] = []
            for el in tc:
                name = local(el.tag)
                if name == "p":
                    pieces.append(paragraph_text(el))
                elif name == "tbl":
                    pieces.extend(table_rows(el))
                elif name == "sdt":
                    content = _child(el, "sdtContent")
                    if content is not None:
                        pieces.extend(paragraph_text(x) for x in content if local(x.tag) == "p")
            cells.append(" ".join(pieces))
        line = row_line(cells)
        if line:
            rows.append(line)
    return rows


def _vmerge_continuation(tc: Element) -> bool:
    tcpr = _child(tc, "tcPr")
    vmerge = _child(tcpr, "vMerge") if tcpr is not None else None
    return vmerge is not None and (_attr(vmerge, "val") or "continue") != "restart"


def _children_named(parent: Element, name: str):
    """`parent`'s children called `name` (w:tr of a table, w:tc of a row), also those that Word
    wraps in content controls (w:sdt/w:sdtContent) or custom XML."""
    for el in parent:
        tag = local(el.tag)
        if tag == name:
            yield el
        elif tag in ("sdt", "customXml"):
            content = _child(el, "sdtContent") if tag == "sdt" else el
            if content is not None:
                yield from (c for c in content if local(c.tag) == name)
