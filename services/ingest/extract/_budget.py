"""A per-document budget: deadline and byte allowance, checked cooperatively by the extractors."""

from __future__ import annotations

import time

from services.errors import ExtractionError

from ._types import ExtractLimits


class Budget:
    """Tracks the wall-clock deadline and the remaining uncompressed-byte allowance of one extraction."""

    def __init__(self, limits: ExtractLimits) -> None:
        self.limits = limits
        self.deadline = time.monotonic() + limits.time_limit_s
        self.bytes_left = limits.max_uncompressed_bytes

    def check_time(self) -> None:
        """Raise ExtractionError once the time limit has passed."""
        if time.monotonic() > self.deadline:
            raise ExtractionError(f"extraction took longer than {self.limits.time_limit_s:g} s")

    def take(self, n: int, what: str) -> None:
        """Account for n more uncompressed bytes; raise when the document's total exceeds the limit."""
        self.bytes_left -= n
        if self.bytes_left < 0:
            raise ExtractionError(
                f"{what} expands beyond the limit of {_mib(self.limits.max_uncompressed_bytes)} uncompressed"
                " (possible decompression bomb)"
            )


def _mib(n: int) -> str:
    return f"{n / 2**20:g} MiB"
