"""Checks on an Office Open XML package before a library (openpyxl, python-pptx) parses it.

The package is opened with SafeZip first: member count, declared sizes and compression ratios
within the limits, no encrypted members. OOXML parts never carry a document type declaration, so
a part whose head declares one (entity expansion, external entities) refuses the whole file,
whatever the library's own parser settings.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

from services.errors import ExtractionError

from ._budget import Budget
from ._safezip import SafeZip

_HEAD = 4096


def vet_package(path: Path, budget: Budget, kind: str) -> None:
    """Raise ExtractionError for a bomb, an encrypted member, or an XML part with a DTD."""
    with SafeZip(path, budget, kind) as zf:
        for name, info in zf.infos.items():
            if info.flag_bits & 0x1:
                raise ExtractionError(f"encrypted {kind}: member {name!r} is password-protected")
            if not name.lower().endswith((".xml", ".rels")):
                continue
            try:
                with zf.zf.open(info) as fh:
                    head = fh.read(_HEAD)
            except (zipfile.BadZipFile, OSError, ValueError, NotImplementedError, RuntimeError, EOFError) as exc:
                raise ExtractionError(f"corrupt or truncated {kind}: member {name!r} cannot be read") from exc
            if b"<!DOCTYPE" in head or b"<!ENTITY" in head:
                raise ExtractionError(f"{kind} part {name!r}: XML with a document type declaration (DTD) is refused")
        budget.check_time()
