"""Sections from a stream of headings, paragraphs and tables, shared by the structured formats.

Every heading starts a section whose `heading` is the path of the headings above it and itself
("제2장 총칙 > 제8조"); every table is a section of its own (`table=True`, one line per row, cells
joined by " | ", merged cells once, empty cells left out), so that the chunker can keep it in one
chunk when it fits the budget.
"""

from __future__ import annotations

from ._budget import Budget
from ._types import Section

CELL_SEPARATOR = " | "
PATH_SEPARATOR = " > "
#: Longest heading kept in a path (characters); a paragraph styled as a heading can be long.
MAX_HEADING_CHARS = 160
#: Longest path stored (the chunk table's column holds 512).
MAX_PATH_CHARS = 500


def clean_heading(text: str) -> str:
    """One line, whitespace collapsed, cut to MAX_HEADING_CHARS."""
    text = " ".join(text.split())
    return text if len(text) <= MAX_HEADING_CHARS else text[: MAX_HEADING_CHARS - 1].rstrip() + "…"


def item_lines(items: list) -> list[str]:
    """Plain lines of a reader's items: a line (str) as it is, a table ((rows, caption lines)) as its
    caption lines, then its rows; for text inside cells, notes and text boxes, where no table section
    can start."""
    out: list[str] = []
    for item in items:
        if isinstance(item, str):
            out.append(item)
        else:
            rows, caption = item
            out.extend(caption)
            out.extend(rows)
    return out


def row_line(cells: list[str]) -> str:
    """A table row as one line: each non-empty cell once (whitespace collapsed), joined by ' | '."""
    texts = [" ".join(cell.split()) for cell in cells]
    return CELL_SEPARATOR.join(t for t in texts if t)


class SectionBuilder:
    """Collects lines under the current heading path; a heading or a table closes the running section."""

    def __init__(self, budget: Budget | None = None) -> None:
        self.budget = budget
        self.sections: list[Section] = []
        self.path: list[tuple[int, str]] = []  # (level, heading), outermost first
        self.lines: list[str] = []
        self.page: int | None = None
        self._count = 0

    @property
    def heading(self) -> str | None:
        if not self.path:
            return None
        parts = [text for _, text in self.path]
        path = PATH_SEPARATOR.join(parts)
        while len(path) > MAX_PATH_CHARS and len(parts) > 1:  # keep the innermost headings
            parts = parts[1:]
            path = "… > " + PATH_SEPARATOR.join(parts)
        return path[:MAX_PATH_CHARS]

    def _tick(self) -> None:
        self._count += 1
        if self.budget is not None and self._count % 1024 == 0:
            self.budget.check_time()

    def set_page(self, page: int | None) -> None:
        """Start a new page (slide, sheet): the running section ends; the heading path carries on."""
        if page != self.page:
            self.flush()
            self.page = page

    def add_heading(self, level: int, text: str) -> None:
        """A heading of `level` (0 = outermost): its section starts here, with the heading as first line."""
        self._tick()
        heading = clean_heading(text)
        if not heading:
            return
        self.flush()
        while self.path and self.path[-1][0] >= level:
            self.path.pop()
        self.path.append((level, heading))
        self.lines.append(heading)

    def reset_path(self, path: list[tuple[int, str]]) -> None:
        """Replace the heading path (a PDF page that starts inside a bookmark's part)."""
        self.flush()
        self.path = list(path)

    def add_line(self, text: str) -> None:
        self._tick()
        if text.strip():
            self.lines.append(text)

    def add_lines(self, lines: list[str]) -> None:
        for line in lines:
            self.add_line(line)

    def add_table(self, rows: list[str], caption: list[str] | None = None) -> None:
        """A table as a section of its own (its caption lines first); rows are already joined lines."""
        self._tick()
        body = [line for line in (caption or []) if line.strip()] + [row for row in rows if row.strip()]
        if not body:
            return
        self.flush()
        self.sections.append(Section(text="\n".join(body), page=self.page, heading=self.heading, table=True))

    def flush(self) -> None:
        text = "\n".join(self.lines).strip("\n")
        self.lines = []
        if text.strip():
            self.sections.append(Section(text=text, page=self.page, heading=self.heading))

    def finish(self) -> list[Section]:
        self.flush()
        return self.sections
