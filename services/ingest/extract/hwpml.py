"""HWPML (.hml): the XML form of an HWP document (HWPML 2.x, upper-case elements), read as a document.

HEAD/DOCSUMMARY gives the title, HEAD/MAPPINGTABLE the paragraph shapes (HeadingType, Level) and
numberings (PARAHEAD templates such as "^1."); BODY/SECTION/P/TEXT the text: CHAR runs, TAB and
LINEBREAK, TABLE/ROW/CELL, and the paragraph lists of text boxes, notes, headers and footers.
Parsed with the same safe XML parser as HWPX (no DTDs, no entities, depth limit); TAIL (embedded
binaries) is never read.
"""

from __future__ import annotations

import re
from pathlib import Path
from xml.etree.ElementTree import Element

from services.errors import ExtractionError

from ._budget import Budget
from ._numbering import LevelFormat, Numbering
from ._safexml import local, parse_xml
from ._structure import SectionBuilder, row_line
from ._types import HWPML, ExtractedDocument
from .textfmt import read_limited

_SPECIAL = {"TAB": "\t", "LINEBREAK": "\n", "HYPHEN": "-", "NBSPACE": " ", "FWSPACE": " "}
_SKIP = {"HIDDENCOMMENT", "SECDEF", "COLDEF", "FIELDBEGIN", "FIELDEND", "SHAPEOBJECT", "PARAMETERSET", "SCRIPTCODE"}
_CAMEL = re.compile(r"(?<=[a-z])(?=[A-Z])")


def extract_hwpml(path: Path, budget: Budget) -> ExtractedDocument:
    """HWPML file → document: sections at outline headings, tables as sections of their own."""
    root = parse_xml(read_limited(path, budget, "HWPML file"), budget, "HWPML")
    if local(root.tag) != "HWPML":
        raise ExtractionError("not an HWPML document: its root element is not HWPML")
    head = _child(root, "HEAD")
    body = _child(root, "BODY")
    if body is None:
        raise ExtractionError("corrupt HWPML: it has no BODY")
    title = None
    shapes: dict[str, tuple[str, int]] = {}
    numberings: dict[str, Numbering] = {}
    if head is not None:
        summary = _child(head, "DOCSUMMARY")
        title_el = _child(summary, "TITLE") if summary is not None else None
        title = " ".join("".join(title_el.itertext()).split()) or None if title_el is not None else None
        for el in head.iter():
            tag = local(el.tag)
            if tag == "PARASHAPE" and el.get("Id") is not None:
                level = el.get("Level") or "0"
                shapes[el.get("Id") or ""] = (
                    (el.get("HeadingType") or "None").upper(),
                    int(level) if level.isdigit() else 0,
                )
            elif tag == "NUMBERING" and el.get("Id") is not None:
                levels = {}
                for para_head in el:
                    level = para_head.get("Level") or ""
                    if local(para_head.tag) == "PARAHEAD" and level.isdigit() and 1 <= int(level) <= 10:
                        start = para_head.get("Start") or "1"
                        shape = _CAMEL.sub("_", para_head.get("NumFormat") or "Digit").upper()
                        levels[int(level)] = LevelFormat(
                            para_head.text or "", shape, int(start) if start.isdigit() and int(start) > 0 else 1
                        )
                numberings[el.get("Id") or ""] = Numbering([levels.get(i, LevelFormat("")) for i in range(1, 11)])
    walker = _Walker(budget, shapes, numberings)
    for section in body:
        if local(section.tag) == "SECTION":
            walker.body(section)
            walker.out.flush()
    sections = walker.out.finish()
    if not sections:
        raise ExtractionError("no text: the HWPML document is empty")
    return ExtractedDocument(media_type=HWPML, sections=sections, title=title)


def _child(el: Element, name: str) -> Element | None:
    return next((c for c in el if local(c.tag) == name), None)


class _Walker:
    def __init__(self, budget: Budget, shapes: dict[str, tuple[str, int]], numberings: dict[str, Numbering]) -> None:
        self.out = SectionBuilder(budget)
        self.shapes = shapes
        self.numberings = numberings
        self.outline_id = "1"
        self._fallback = Numbering([LevelFormat("") for _ in range(10)])

    def body(self, el: Element) -> None:
        for child in el:
            name = local(child.tag)
            if name == "P":
                text, items, level = self.paragraph(child, body=True)
                if level is not None and text:
                    self.out.add_heading(level, text)
                elif text:
                    self.out.add_line(text)
                for item in items:
                    if isinstance(item, str):
                        self.out.add_line(item)
                    else:
                        self.out.add_table(item)
            elif name not in _SKIP:
                self.body(child)

    def lines(self, el: Element) -> list[str]:
        """Lines of the paragraphs under el (cells, text boxes, notes): tables flattened."""
        out: list[str] = []
        for child in el:
            name = local(child.tag)
            if name == "P":
                text, items, _ = self.paragraph(child, body=False)
                if text:
                    out.append(text)
                for item in items:
                    out.extend([item] if isinstance(item, str) else item)
            elif name not in _SKIP:
                out.extend(self.lines(child))
        return out

    def paragraph(self, p: Element, *, body: bool) -> tuple[str, list, int | None]:
        self.out._tick()
        parts: list[str] = []
        items: list = []
        for text_el in p:
            if local(text_el.tag) != "TEXT":
                continue
            for el in text_el:
                name = local(el.tag)
                if name == "CHAR":
                    parts.append(el.text or "")
                    for inner in el:
                        parts.append(_SPECIAL.get(local(inner.tag), ""))
                        parts.append(inner.tail or "")
                elif name in _SPECIAL:
                    parts.append(_SPECIAL[name])
                elif name == "SECDEF":
                    self.outline_id = el.get("OutlineShape") or self.outline_id
                elif name == "TABLE":
                    parts.append(" ")
                    rows = self.table(el)
                    if body:
                        items.append(rows)  # a list: a table
                    else:
                        items.extend(rows)
                elif name not in _SKIP:
                    items.extend(self.lines(el))  # text boxes, footnotes, headers…
        text = "".join(parts).strip()
        level: int | None = None
        kind, shape_level = self.shapes.get(p.get("ParaShape") or "", ("NONE", 0))
        if text and kind in ("OUTLINE", "NUMBER"):
            if kind == "OUTLINE":
                numbering = self.numberings.get(self.outline_id) or self._fallback
                level = shape_level if body else None
            else:
                numbering = self._fallback
            number = numbering.next(shape_level)
            if number:
                text = f"{number} {text}"
        return text, items, level

    def table(self, table: Element) -> list[str]:
        rows = []
        for row in table:
            if local(row.tag) != "ROW":
                continue
            line = row_line([" ".join(self.lines(cell)) for cell in row if local(cell.tag) == "CELL"])
            if line:
                rows.append(line)
        return rows
