"""XLSX via openpyxl (MIT; XML through defusedxml): one page per worksheet, its name as heading,
its rows as a table (cells joined by " | ", merged cells once, empty cells left out).

Cached values are read (data_only), never formulas; macros in .xlsm are never run. The package is
vetted first (_ooxml.vet_package); the text is charged to the byte budget as it grows.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from services.errors import ExtractionError

from ._budget import Budget
from ._ooxml import vet_package
from ._structure import SectionBuilder, row_line
from ._types import XLSX, ExtractedDocument


def _cell_text(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, dt.datetime):
        return value.date().isoformat() if value.time() == dt.time() else value.isoformat(sep=" ")
    if isinstance(value, dt.date):
        return value.isoformat()
    return str(value)


def extract_xlsx(path: Path, budget: Budget) -> ExtractedDocument:
    """XLSX file → document with a section per worksheet (page = sheet number, heading = sheet name)."""
    vet_package(path, budget, "XLSX")
    import openpyxl

    try:
        wb = openpyxl.load_workbook(str(path), read_only=True, data_only=True, keep_links=False)
    except ExtractionError:
        raise
    except Exception as exc:  # openpyxl raises KeyError, ValueError, zipfile errors… on damaged packages
        raise ExtractionError(f"corrupt XLSX: the workbook cannot be read ({type(exc).__name__})") from exc
    try:
        title = ((wb.properties.title or "").strip() or None) if wb.properties is not None else None
        builder = SectionBuilder(budget)
        for number, sheet in enumerate(wb.worksheets, start=1):
            builder.set_page(number)
            builder.reset_path([])
            builder.add_heading(0, sheet.title or f"Sheet{number}")
            builder.flush()
            rows: list[str] = []
            for i, row in enumerate(sheet.iter_rows(values_only=True)):
                line = row_line([_cell_text(v) for v in row])
                if line:
                    budget.take(len(line.encode("utf-8")) + 1, "XLSX text")
                    rows.append(line)
                if i % 1024 == 0:
                    budget.check_time()
            builder.add_table(rows)
        sections = builder.finish()
    finally:
        wb.close()
    sections = [s for s in sections if s.table or "\n" in s.text or s.text != s.heading]
    if not sections:
        raise ExtractionError("no text: the XLSX workbook's sheets are empty")
    return ExtractedDocument(media_type=XLSX, sections=sections, title=title)
