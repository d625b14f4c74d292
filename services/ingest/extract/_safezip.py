"""ZIP containers (DOCX, HWPX) opened with bomb checks: sizes and ratios are checked before reading."""

from __future__ import annotations

import zipfile
import zlib
from pathlib import Path

from services.errors import ExtractionError

from ._budget import Budget

_MAX_MEMBERS = 20_000
_RATIO_FLOOR = 2**20  # members smaller than this cannot be bombs, whatever their ratio
_CHUNK = 2**20


class SafeZip:
    """A read-only ZIP archive whose members are read within the document's byte and ratio limits."""

    def __init__(self, path: Path, budget: Budget, kind: str) -> None:
        self.kind = kind
        self.budget = budget
        try:
            self.zf = zipfile.ZipFile(path)
            infos = self.zf.infolist()
        except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError, ValueError, NotImplementedError) as exc:
            raise ExtractionError(f"corrupt or truncated {kind}: the ZIP container cannot be read") from exc
        if len(infos) > _MAX_MEMBERS:
            self.close()
            raise ExtractionError(f"{kind} has {len(infos)} ZIP members, more than the limit of {_MAX_MEMBERS}")
        self.infos = {info.filename: info for info in infos}
        limits = budget.limits
        total = sum(info.file_size for info in infos)
        if total > limits.max_uncompressed_bytes:
            self.close()
            raise ExtractionError(
                f"ZIP bomb suspected: {kind} declares {total} uncompressed bytes, more than the limit of "
                f"{limits.max_uncompressed_bytes}"
            )
        for info in infos:
            self._check_ratio(info)

    def _check_ratio(self, info: zipfile.ZipInfo) -> None:
        if info.file_size <= _RATIO_FLOOR:
            return
        ratio = info.file_size / max(1, info.compress_size)
        if ratio > self.budget.limits.max_compression_ratio:
            raise ExtractionError(
                f"ZIP bomb suspected: member {info.filename!r} of the {self.kind} expands {ratio:.0f}x "
                f"(limit {self.budget.limits.max_compression_ratio:g}x)"
            )

    def names(self) -> list[str]:
        return list(self.infos)

    def has(self, name: str) -> bool:
        return name in self.infos

    def read(self, name: str) -> bytes:
        """Read one member in chunks, charging its real size to the budget as it streams."""
        info = self.infos.get(name)
        if info is None:
            raise ExtractionError(f"corrupt {self.kind}: member {name!r} is missing")
        if info.flag_bits & 0x1:
            raise ExtractionError(f"encrypted {self.kind}: member {name!r} is password-protected")
        out = bytearray()
        try:
            with self.zf.open(info) as fh:
                while True:
                    chunk = fh.read(_CHUNK)
                    if not chunk:
                        break
                    self.budget.take(len(chunk), self.kind)
                    out += chunk
                    if (
                        len(out) > _RATIO_FLOOR
                        and len(out) / max(1, info.compress_size) > self.budget.limits.max_compression_ratio
                    ):
                        raise ExtractionError(
                            f"ZIP bomb suspected: member {name!r} of the {self.kind} expands beyond "
                            f"{self.budget.limits.max_compression_ratio:g}x"
                        )
                    self.budget.check_time()
        except ExtractionError:
            raise
        except (
            zipfile.BadZipFile,
            zlib.error,
            EOFError,
            OSError,
            ValueError,
            NotImplementedError,
            RuntimeError,
        ) as exc:
            raise ExtractionError(f"corrupt or truncated {self.kind}: member {name!r} cannot be decompressed") from exc
        return bytes(out)

    def close(self) -> None:
        self.zf.close()

    def __enter__(self) -> SafeZip:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
