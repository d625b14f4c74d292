"""HWPX (OWPML, KS X 6101: ZIP + XML): paragraphs and tables of Contents/section*.xml in spine order,
outline headings and automatic numbers from Contents/header.xml.

Elements are matched by local name so both the 2011 Hancom namespaces and the 2024 OWPML ones work.
Scripts in the package are never read, let alone executed.
"""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass, field
from pathlib import Path
from xml.etree.ElementTree import Element

from services.errors import ExtractionError

from ._budget import Budget
from ._numbering import LevelFormat, Numbering
from ._safexml import local, parse_xml
from ._safezip import SafeZip
from ._structure import SectionBuilder, item_lines, row_line
from ._types import HWPX, ExtractedDocument

HWPX_MIMETYPE = b"application/hwp+zip"
_SECTION_NAME = re.compile(r"(?:^|/)section(\d+)\.xml$", re.I)
_DEFAULT_HPF = "Contents/content.hpf"
# Controls whose paragraphs are not document text: hidden comments (메모/숨은 설명) and field data.
_SKIP_CONTROLS = {"hiddenComment", "secPr", "colPr", "linesegarray", "fieldBegin", "fieldEnd", "parameters"}
_T_CHILDREN = {"tab": "\t", "lineBreak": "\n", "hyphen": "-", "nbSpace": " ", "fwSpace": " "}


def is_hwpx_package(zf: SafeZip) -> bool:
    """True for an HWPX package: 'mimetype' says application/hwp+zip, or it has Contents/section*.xml."""
    if zf.has("mimetype") and zf.infos["mimetype"].file_size < 256:
        try:
            if zf.read("mimetype").strip() == HWPX_MIMETYPE:
                return True
        except ExtractionError:
            pass
    return any(_SECTION_NAME.search(n) and n.lower().startswith("contents/") for n in zf.names())


def extract_hwpx(path: Path, budget: Budget) -> ExtractedDocument:
    """HWPX file → document: sections at outline headings, tables as sections of their own."""
    with SafeZip(path, budget, "HWPX") as zf:
        _refuse_encrypted(zf, budget)
        hpf_name = _rootfile(zf, budget)
        title, section_names = _package_info(zf, hpf_name, budget)
        if not section_names:
            raise ExtractionError("corrupt HWPX: it has no Contents/section*.xml body")
        styles = _header_styles(zf, hpf_name, budget)
        builder = SectionBuilder(budget)
        walker = _Walker(budget, styles, builder)
        for name in section_names:
            root = parse_xml(zf.read(name), budget, f"HWPX {name}")
            walker.body(root)
            builder.flush()
        sections = builder.finish()
    if not sections:
        raise ExtractionError("no text: the HWPX document is empty")
    return ExtractedDocument(media_type=HWPX, sections=sections, title=title)


@dataclass
class HeaderStyles:
    """header.xml: paragraph properties' heading kind and level, and the numbering definitions."""

    headings: dict[str, tuple[str, int, str]] = field(default_factory=dict)  # paraPr id → (type, level, idRef)
    numberings: dict[str, Numbering] = field(default_factory=dict)


def _header_styles(zf: SafeZip, hpf_name: str | None, budget: Budget) -> HeaderStyles:
    """Optional: a missing or damaged header.xml only costs the headings and numbers."""
    base = posixpath.dirname(hpf_name) if hpf_name else "Contents"
    name = next((n for n in (posixpath.join(base, "header.xml"), "Contents/header.xml") if zf.has(n)), None)
    head = _optional_xml(zf, name, budget, "HWPX header") if name else None
    return parse_header_styles(head) if head is not None else HeaderStyles()


def parse_header_styles(head: Element) -> HeaderStyles:
    styles = HeaderStyles()
    for el in head.iter():
        tag = local(el.tag)
        if tag == "paraPr" and el.get("id") is not None:
            for child in el.iter():
                if local(child.tag) == "heading":
                    kind = (child.get("type") or "NONE").upper()
                    level = int(child.get("level") or 0) if (child.get("level") or "0").isdigit() else 0
                    styles.headings[el.get("id") or ""] = (kind, level, child.get("idRef") or "0")
                    break
        elif tag == "numbering" and el.get("id") is not None:
            levels: dict[int, LevelFormat] = {}
            for head_el in el:
                if local(head_el.tag) != "paraHead":
                    continue
                level_text = head_el.get("level") or ""
                if not level_text.isdigit() or not 1 <= int(level_text) <= 10:
                    continue
                start_text = head_el.get("start") or "1"
                levels[int(level_text)] = LevelFormat(
                    head_el.text or "",
                    (head_el.get("numFormat") or "DIGIT").upper(),
                    int(start_text) if start_text.isdigit() and int(start_text) > 0 else 1,
                )
            ordered = [levels.get(i, LevelFormat("")) for i in range(1, 11)]
            styles.numberings[el.get("id") or ""] = Numbering(ordered)
    return styles


def _optional_xml(zf: SafeZip, name: str, budget: Budget, what: str) -> Element | None:
    """A package member that only guides reading (manifest, container, content.hpf): None when it
    is missing or damaged, so that intact body sections are still read."""
    if not zf.has(name):
        return None
    try:
        return parse_xml(zf.read(name), budget, what)
    except ExtractionError:
        return None


def _refuse_encrypted(zf: SafeZip, budget: Budget) -> None:
    # Only an explicit marker refuses the document; encrypted sections fail on their own anyway.
    manifest = _optional_xml(zf, "META-INF/manifest.xml", budget, "HWPX manifest")
    if manifest is not None and any(local(el.tag) in ("encryption-data", "EncryptionData") for el in manifest.iter()):
        raise ExtractionError("encrypted HWPX: the document is password-protected")


def _rootfile(zf: SafeZip, budget: Budget) -> str | None:
    container = _optional_xml(zf, "META-INF/container.xml", budget, "HWPX container")
    if container is not None:
        for el in container.iter():
            if local(el.tag) == "rootfile" and (el.get("full-path") or "").endswith(".hpf"):
                name = el.get("full-path", "").lstrip("/")
                if zf.has(name):
                    return name
    return _DEFAULT_HPF if zf.has(_DEFAULT_HPF) else None


def _package_info(zf: SafeZip, hpf_name: str | None, budget: Budget) -> tuple[str | None, list[str]]:
    """(title, section part names in reading order): spine order of content.hpf, else numeric name order."""
    title: str | None = None
    ordered: list[str] = []
    hpf = _optional_xml(zf, hpf_name, budget, "HWPX content.hpf") if hpf_name is not None else None
    if hpf is not None:
        hrefs: dict[str, str] = {}
        spine: list[str] = []
        for el in hpf.iter():
            name = local(el.tag)
            item_id, href, idref = el.get("id"), el.get("href"), el.get("idref")
            if name == "title" and title is None and el.text and el.text.strip():
                title = el.text.strip()
            elif name == "item" and item_id and href:
                hrefs[item_id] = href
            elif name == "itemref" and idref:
                spine.append(idref)
        base = posixpath.dirname(hpf_name or "")
        for idref in spine or list(hrefs):
            href = hrefs.get(idref)
            if not href or not _SECTION_NAME.search(href):
                continue
            for candidate in (href.lstrip("/"), posixpath.normpath(posixpath.join(base, href))):
                if zf.has(candidate) and candidate not in ordered:
                    ordered.append(candidate)
                    break
    if not ordered:
        found = [
            (int(m.group(1)), n)
            for n in zf.names()
            if (m := _SECTION_NAME.search(n)) and n.lower().startswith("contents/")
        ]
        ordered = [n for _, n in sorted(found)]
    return title, ordered


class _Walker:
    """Turns section XML into headings, paragraphs and tables (see _structure).

    A paragraph whose paraPr is an outline level (개요) is a heading; outline and paragraph numbers
    are written in front of their paragraphs as the reader sees them. Text in table cells, text
    boxes, headers, footers and notes becomes plain lines.
    """

    def __init__(self, budget: Budget, styles: HeaderStyles, out: SectionBuilder) -> None:
        self.budget = budget
        self.styles = styles
        self.out = out
        self.outline_id = "1"
        self._fallback = Numbering([LevelFormat("") for _ in range(10)])

    def body(self, el: Element) -> None:
        """Paragraphs and tables of a section (or any container at body level) into the builder."""
        for child in el:
            name = local(child.tag)
            if name == "p":
                text, items, level = self.paragraph(child, body=True)
                if level is not None and text:
                    self.out.add_heading(level, text)
                elif text:
                    self.out.add_line(text)
                self._emit(items)
            elif name == "tbl":
                self._emit([self.table(child)])
            elif name in _SKIP_CONTROLS:
                continue
            else:
                self.body(child)

    def _emit(self, items: list) -> None:
        for item in items:
            if isinstance(item, str):
                self.out.add_line(item)
            else:
                self.out.add_table(*item)

    def block_lines(self, el: Element) -> list[str]:
        """Lines of every paragraph and table under el (nested objects included, hidden comments not)."""
        lines: list[str] = []
        for child in el:
            name = local(child.tag)
            if name == "p":
                text, items, _ = self.paragraph(child, body=False)
                if text:
                    lines.append(text)
                lines.extend(item_lines(items))
            elif name == "tbl":
                lines.extend(item_lines([self.table(child)]))
            elif name in _SKIP_CONTROLS:
                continue
            else:
                lines.extend(self.block_lines(child))
        return lines

    def paragraph(self, p: Element, *, body: bool) -> tuple[str, list, int | None]:
        """(text with its number, nested items, heading level or None) of one paragraph."""
        self.out._tick()
        parts: list[str] = []
        items: list = []
        for run in p:
            name = local(run.tag)
            if name == "run":
                for item in run:
                    iname = local(item.tag)
                    if iname == "t":
                        parts.append(_t_text(item))
                    elif iname == "tbl":
                        parts.append(" ")  # a table separates the words around it
                        table = self.table(item)
                        items.extend([table] if body else item_lines([table]))
                    elif iname == "secPr":
                        if item.get("outlineShapeIDRef"):
                            self.outline_id = item.get("outlineShapeIDRef") or "1"
                    elif iname not in _SKIP_CONTROLS:
                        items.extend(self.block_lines(item))  # ctrl (footnote, header…), shapes' text boxes
            elif name == "t":
                parts.append(_t_text(run))
            elif name not in _SKIP_CONTROLS:
                items.extend(self.block_lines(run))
        text = "".join(parts).strip()
        level: int | None = None
        heading = self.styles.headings.get(p.get("paraPrIDRef") or "")
        if heading is not None and text and heading[0] in ("OUTLINE", "NUMBER"):
            kind, shape_level, id_ref = heading
            if kind == "OUTLINE":
                numbering = self.styles.numberings.get(self.outline_id) or self._fallback
                level = shape_level if body else None
            else:
                numbering = self.styles.numberings.get(id_ref) or self._fallback
            number = numbering.next(shape_level)
            if number:
                text = f"{number} {text}"
        return text, items, level

    def table(self, tbl: Element) -> tuple[list[str], list[str]]:
        """(rows as lines, caption lines): each cell once, empty cells left out."""
        rows: list[str] = []
        caption: list[str] = []
        for tr in tbl:
            if local(tr.tag) != "tr":
                if local(tr.tag) not in _SKIP_CONTROLS:
                    caption.extend(self.block_lines(tr))  # a caption's paragraphs
                continue
            cells = [" ".join(self.block_lines(tc)) for tc in tr if local(tc.tag) == "tc"]
            line = row_line(cells)
            if line:
                rows.append(line)
        return rows, caption


def _t_text(t: Element) -> str:
    parts = [t.text or ""]
    for child in t:
        parts.append(_T_CHILDREN.get(local(child.tag), ""))
        parts.append(child.tail or "")
    return "".join(parts)
