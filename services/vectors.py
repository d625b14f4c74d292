"""Vector value types shared by the analyzer, the encoder and the index adapters."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class SparseVector:
    """A sparse vector: term ids (stable 32-bit hashes of morphemes) and their weights."""

    indices: list[int] = field(default_factory=list)
    values: list[float] = field(default_factory=list)

    def __post_init__(self) -> None:
        if len(self.indices) != len(self.values):
            raise ValueError("sparse vector needs as many values as indices")

    def __bool__(self) -> bool:
        return bool(self.indices)
