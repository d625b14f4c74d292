"""PPTX via python-pptx (MIT; lxml without entity resolution): one page per slide, the slide title
as heading, text frames in shape order, tables as sections of their own, speaker notes last.

The package is vetted first (_ooxml.vet_package); nothing embedded is run or opened.
"""

from __future__ import annotations

from pathlib import Path

from services.errors import ExtractionError

from ._budget import Budget
from ._ooxml import vet_package
from ._structure import SectionBuilder, row_line
from ._types import PPTX, ExtractedDocument

_MAX_GROUP_DEPTH = 32


def extract_pptx(path: Path, budget: Budget) -> ExtractedDocument:
    """PPTX file → document with sections per slide (page = slide number, heading = slide title)."""
    vet_package(path, budget, "PPTX")
    from pptx import Presentation

    try:
        prs = Presentation(str(path))
    except ExtractionError:
        raise
    except Exception as exc:  # python-pptx raises KeyError, lxml and zipfile errors… on damaged packages
        raise ExtractionError(f"corrupt PPTX: the presentation cannot be read ({type(exc).__name__})") from exc
    title = (prs.core_properties.title or "").strip() or None
    builder = SectionBuilder(budget)
    for number, slide in enumerate(prs.slides, start=1):
        budget.check_time()
        builder.set_page(number)
        builder.reset_path([])
        title_shape = slide.shapes.title
        title_id = title_shape.shape_id if title_shape is not None else None
        if title_shape is not None and title_shape.has_text_frame:
            builder.add_heading(0, title_shape.text_frame.text)
        _shapes(builder, slide.shapes, title_id, 0)
        if slide.has_notes_slide:
            notes = slide.notes_slide.notes_text_frame
            if notes is not None:
                builder.add_lines([p for p in notes.text.split("\n") if p.strip()])
    sections = builder.finish()
    if not sections:
        raise ExtractionError("no text: the PPTX presentation has no text")
    return ExtractedDocument(media_type=PPTX, sections=sections, title=title)


def _shapes(builder: SectionBuilder, shapes, title_id: int | None, depth: int) -> None:
    if depth > _MAX_GROUP_DEPTH:
        raise ExtractionError(f"PPTX shapes grouped deeper than {_MAX_GROUP_DEPTH} levels")
    for shape in shapes:
        if title_id is not None and depth == 0 and shape.shape_id == title_id:
            continue
        if getattr(shape, "shape_type", None) is not None and shape.shape_type == 6:  # MSO_SHAPE_TYPE.GROUP
            _shapes(builder, shape.shapes, title_id, depth + 1)
        elif getattr(shape, "has_table", False) and shape.has_table:
            rows = []
            seen: set[int] = set()
            for row in shape.table.rows:
                cells = []
                for cell in row.cells:
                    if cell.is_spanned or id(cell._tc) in seen:  # merged: the origin cell only
                        continue
                    seen.add(id(cell._tc))
                    cells.append(cell.text)
                line = row_line(cells)
                if line:
                    rows.append(line)
            builder.add_table(rows)
        elif getattr(shape, "has_text_frame", False) and shape.has_text_frame:
            builder.add_lines([p for p in shape.text_frame.text.split("\n") if p.strip()])
