"""HWPX (OWPML, KS X 6101: ZIP + XML): paragraphs and tables of Contents/section*.xml in spine order.

Elements are matched by local name so both the 2011 Hancom namespaces and the 2024 OWPML ones work.
Scripts in the package are never read, let alone executed.
"""

from __future__ import annotations

import posixpath
import re
from pathlib import Path
from xml.etree.ElementTree import Element

from services.errors import ExtractionError

from ._budget import Budget
from ._safexml import local, parse_xml
from ._safezip import SafeZip
from ._types import HWPX, ExtractedDocument, Section

HWPX_MIMETYPE = b"application/hwp+zip"
CELL_SEPARATOR = " | "
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
    """HWPX file → document with one section per HWPX body section."""
    with SafeZip(path, budget, "HWPX") as zf:
        _refuse_encrypted(zf, budget)
        hpf_name = _rootfile(zf, budget)
        title, section_names = _package_info(zf, hpf_name, budget)
        if not section_names:
            raise ExtractionError("corrupt HWPX: it has no Contents/section*.xml body")
        sections: list[Section] = []
        for name in section_names:
            root = parse_xml(zf.read(name), budget, f"HWPX {name}")
            lines = _Walker(budget).block_lines(root)
            text = "\n".join(line for line in lines if line.strip())
            if text.strip():
                sections.append(Section(text=text))
    if not sections:
        raise ExtractionError("no text: the HWPX document is empty")
    return ExtractedDocument(media_type=HWPX, sections=sections, title=title)


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
            if name == "title" and title is None and (el.text or "").strip():
                title = el.text.strip()
            elif name == "item" and el.get("id") and el.get("href"):
                hrefs[el.get("id")] = el.get("href")
            elif name == "itemref" and el.get("idref"):
                spine.append(el.get("idref"))
        base = posixpath.dirname(hpf_name)
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
    """Turns section XML into text lines: one per paragraph, one per table row (cells joined by ' | ')."""

    def __init__(self, budget: Budget) -> None:
        self.budget = budget
        self.count = 0

    def _tick(self) -> None:
        self.count += 1
        if self.count % 1024 == 0:
            self.budget.check_time()

    def block_lines(self, el: Element) -> list[str]:
        """Lines of every paragraph and table under el (nested objects included, hidden comments not)."""
        lines: list[str] = []
        for child in el:
            name = local(child.tag)
            if name == "p":
                lines.extend(self.paragraph_lines(child))
            elif name == "tbl":
                lines.extend(self.table_lines(child))
            elif name in _SKIP_CONTROLS:
                continue
            else:
                lines.extend(self.block_lines(child))
        return lines

    def paragraph_lines(self, p: Element) -> list[str]:
        self._tick()
        parts: list[str] = []
        nested: list[str] = []
        for run in p:
            name = local(run.tag)
            if name == "run":
                for item in run:
                    iname = local(item.tag)
                    if iname == "t":
                        parts.append(_t_text(item))
                    elif iname == "tbl":
                        parts.append(" ")  # a table separates the words around it
                        nested.extend(self.table_lines(item))
                    elif iname not in _SKIP_CONTROLS:
                        nested.extend(self.block_lines(item))  # ctrl (footnote, header…), shapes' text boxes
            elif name == "t":
                parts.append(_t_text(run))
            elif name not in _SKIP_CONTROLS:
                nested.extend(self.block_lines(run))
        text = "".join(parts).strip()
        return ([text] if text else []) + nested

    def table_lines(self, tbl: Element) -> list[str]:
        rows: list[str] = []
        for tr in tbl:
            if local(tr.tag) != "tr":
                if local(tr.tag) not in _SKIP_CONTROLS:
                    rows.extend(self.block_lines(tr))  # a caption's paragraphs
                continue
            cells = []
            for tc in tr:
                if local(tc.tag) != "tc":
                    continue
                cells.append(" ".join(" ".join(self.block_lines(tc)).split()))
            if any(cells):
                rows.append(CELL_SEPARATOR.join(cells))
        return rows


def _t_text(t: Element) -> str:
    parts = [t.text or ""]
    for child in t:
        parts.append(_T_CHILDREN.get(local(child.tag), ""))
        parts.append(child.tail or "")
    return "".join(parts)
