"""HTML: main text without scripts, styles and navigation; h1–h6 become section headings (with their
paths), tables sections of their own."""

from __future__ import annotations

import re
from pathlib import Path

from services.errors import ExtractionError

from ._budget import Budget
from ._structure import SectionBuilder, row_line
from ._types import TEXT_HTML, ExtractedDocument, Section
from .textfmt import decode_text, read_limited

_META_CHARSET = re.compile(rb"""<meta[^>]{0,512}?charset\s*=\s*["']?\s*([A-Za-z0-9_\-:.]{1,40})""", re.I)
_WS = re.compile(r"\s+")

# Removed wherever they are.
_DROP_ALWAYS = (
    "script, style, noscript, template, svg, math, iframe, object, embed, canvas, nav, aside, "
    "[role=navigation], [role=complementary], [hidden], [aria-hidden=true]"
)
# Removed unless they sit inside the main content (an article's own header keeps its title).
_DROP_OUTSIDE_MAIN = "header, footer, [role=banner], [role=contentinfo]"

_TAG = re.compile(r"<(/?)([A-Za-z][A-Za-z0-9]{0,15})\b[^<>]*?(/?)>")
# Void elements and elements the parser closes implicitly do not deepen the tree.
_NON_NESTING = {
    "area",
    "base",
    "br",
    "col",
    "embed",
    "hr",
    "img",
    "input",
    "link",
    "meta",
    "source",
    "track",
    "wbr",
    "p",
    "li",
    "dt",
    "dd",
    "tr",
    "td",
    "th",
    "option",
    "optgroup",
    "rt",
    "rp",
    "tbody",
    "thead",
    "tfoot",
    "colgroup",
    "caption",
    "html",
    "head",
    "body",
}
#: HTML allows deeper trees than office XML; lexbor's tree builder slows down quadratically past this.
HTML_DEPTH_FACTOR = 4

_HEADINGS = {"h1", "h2", "h3", "h4", "h5", "h6"}
_BLOCKS = {
    "address",
    "article",
    "blockquote",
    "body",
    "br",
    "caption",
    "dd",
    "details",
    "dialog",
    "div",
    "dl",
    "dt",
    "fieldset",
    "figcaption",
    "figure",
    "form",
    "hr",
    "li",
    "main",
    "ol",
    "p",
    "pre",
    "section",
    "summary",
    "table",
    "tbody",
    "thead",
    "tfoot",
    "tr",
    "ul",
    "legend",
    "option",
}


def html_charset_hint(data: bytes) -> str | None:
    """The charset a <meta> tag declares in the first 2 KiB, if any."""
    m = _META_CHARSET.search(data[:2048])
    return m.group(1).decode("ascii") if m else None


def extract_html_file(path: Path, budget: Budget) -> ExtractedDocument:
    """HTML file → document with one section per heading."""
    data = read_limited(path, budget, "HTML file")
    text = decode_text(data, charset_hint=html_charset_hint(data))
    return html_to_document(text, budget)


def html_to_document(markup: str, budget: Budget) -> ExtractedDocument:
    """Parse HTML text with selectolax (lexbor) and return its main text split at headings."""
    from selectolax.lexbor import LexborHTMLParser

    _check_nesting(markup, budget)
    tree = LexborHTMLParser(markup)
    title_node = tree.css_first("title")
    title = _collapse(title_node.text()) if title_node is not None else ""
    for node in tree.css(_DROP_ALWAYS):
        node.decompose()
    for node in tree.css(_DROP_OUTSIDE_MAIN):
        if not _inside_main(node):
            node.decompose()
    root = tree.css_first("main") or tree.css_first("[role=main]") or tree.body or tree.root
    sections = _Walker(budget).run(root) if root is not None else []
    if not sections:
        raise ExtractionError("no text: the HTML page has no visible text")
    return ExtractedDocument(media_type=TEXT_HTML, sections=sections, title=title or None)


def _check_nesting(markup: str, budget: Budget) -> None:
    """Refuse markup nested deeper than HTML_DEPTH_FACTOR × max_xml_depth before parsing it.

    HTML tree builders check element scopes on every start tag, so very deep nesting costs time
    quadratic in the depth (100,000 nested <div>s take most of a minute).
    """
    limit = HTML_DEPTH_FACTOR * budget.limits.max_xml_depth
    depth = 0
    for m in _TAG.finditer(markup):
        name = m.group(2).lower()
        if name in _NON_NESTING or m.group(3):
            continue
        if m.group(1):
            depth = max(0, depth - 1)
        else:
            depth += 1
            if depth > limit:
                raise ExtractionError(f"HTML nested deeper than {limit} levels")


def _inside_main(node) -> bool:
    parent = node.parent
    while parent is not None:
        if parent.tag in ("main", "article") or (parent.attributes or {}).get("role") == "main":
            return True
        parent = parent.parent
    return False


def _collapse(s: str) -> str:
    return _WS.sub(" ", s).strip()


class _Walker:
    """Iterative depth-first walk (no recursion, so deeply nested markup cannot exhaust the stack).

    h1-h6 start sections with their heading path; a table (outside any cell) is a section of its
    own, one line per row with each non-empty cell once; a table inside a cell is flattened into it.
    """

    def __init__(self, budget: Budget) -> None:
        self.budget = budget
        self.out = SectionBuilder(budget)
        self.parts: list[str] = []
        self.pre = 0
        self.cells: list[list[str]] = []  # text parts of each open <td>/<th>
        self.rows: list[list[str]] = []  # cell texts of each open <tr>
        self.table_depth = 0  # open tables outside any cell
        self.table_lines: list[str] = []  # rows (and captions) of the open outer table
        self.heading_parts: list[str] | None = None
        self.heading_level = 0

    def run(self, root) -> list[Section]:
        stack = [(root, False)]
        steps = 0
        while stack:
            node, exiting = stack.pop()
            steps += 1
            if steps % 4096 == 0:
                self.budget.check_time()
            tag = node.tag
            if exiting:
                self._exit(tag)
                continue
            if tag == "-text":
                self._text(node.text_content or "")
                continue
            if tag is None or tag.startswith("-"):
                continue
            self._enter(tag)
            stack.append((node, True))
            children = []
            child = node.first_child
            while child is not None:
                children.append(child)
                child = child.next
            stack.extend((c, False) for c in reversed(children))
        self._flush_line()
        if self.table_lines:
            self.out.add_table(self.table_lines)
        return self.out.finish()

    def _text(self, text: str) -> None:
        if self.heading_parts is not None:
            self.heading_parts.append(text)
        elif self.cells:
            self.cells[-1].append(text)
        elif self.pre and "\n" in text:
            first, *rest = text.split("\n")
            self.parts.append(first)
            for piece in rest:
                self._flush_line(keep_ws=True)
                self.parts.append(piece)
        else:
            self.parts.append(text)

    def _enter(self, tag: str) -> None:
        if tag in _HEADINGS and self.heading_parts is None and not self.cells:
            self._flush_line()
            self.heading_parts = []
            self.heading_level = int(tag[1]) - 1
            return
        if tag in ("td", "th"):
            self.cells.append([])
            return
        if tag == "tr":
            if not self.cells:
                self._boundary()
            self.rows.append([])
            return
        if tag == "table" and not self.cells:
            self._flush_line()
            if self.table_depth == 0:
                self.table_lines = []
            self.table_depth += 1
            return
        if tag == "pre":
            self._boundary()
            self.pre += 1
            return
        if tag in _BLOCKS:
            self._boundary()

    def _exit(self, tag: str) -> None:
        if tag in _HEADINGS and self.heading_parts is not None and not self.cells:
            heading = _collapse("".join(self.heading_parts))
            self.heading_parts = None
            if heading:
                self.out.add_heading(self.heading_level, heading)
            return
        if tag in ("td", "th"):
            if not self.cells:
                return
            text = _collapse("".join(self.cells.pop()))
            if self.rows:
                self.rows[-1].append(text)
            elif self.cells:
                self.cells[-1].append(" " + text + " ")
            else:
                self.parts.append(" " + text + " ")
            return
        if tag == "tr":
            if not self.rows:
                return
            line = row_line(self.rows.pop())
            if self.cells:  # a table inside a cell: its rows run on in that cell
                self.cells[-1].append(" " + line + " ")
            elif line:
                self._add_line(line)
            return
        if tag == "table" and not self.cells and self.table_depth:
            self._flush_line()
            self.table_depth -= 1
            if self.table_depth == 0:
                lines, self.table_lines = self.table_lines, []
                self.out.add_table(lines)
            return
        if tag == "pre":
            self.pre = max(0, self.pre - 1)
            self._flush_line(keep_ws=True)
            return
        if tag in _BLOCKS:
            self._boundary()

    def _boundary(self) -> None:
        if self.heading_parts is not None:
            self.heading_parts.append(" ")
        elif self.cells:
            self.cells[-1].append(" ")
        else:
            self._flush_line()

    def _add_line(self, line: str) -> None:
        if self.table_depth:
            self.table_lines.append(line)
        else:
            self.out.add_line(line)

    def _flush_line(self, keep_ws: bool = False) -> None:
        raw = "".join(self.parts)
        self.parts = []
        line = raw.rstrip() if keep_ws else _collapse(raw)
        if line.strip():
            self._add_line(line)
