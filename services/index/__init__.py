"""The vector index: one interface (base.VectorIndex), a Qdrant Edge adapter and a qdrant-client adapter."""

from __future__ import annotations

from typing import TYPE_CHECKING

from services.index.base import IndexPoint, VectorIndex
from services.index.query import (
    DENSE,
    RRF_K,
    SPARSE,
    Convex,
    Dbsf,
    FusionSpec,
    IndexFilter,
    IndexHit,
    IndexRange,
    LegScore,
    Rrf,
    fusion_spec,
)

if TYPE_CHECKING:
    from config.settings import Settings

__all__ = [
    "DENSE",
    "RRF_K",
    "SPARSE",
    "Convex",
    "Dbsf",
    "FusionSpec",
    "IndexFilter",
    "IndexHit",
    "IndexPoint",
    "IndexRange",
    "LegScore",
    "Rrf",
    "VectorIndex",
    "fusion_spec",
    "open_index",
]


def open_index(settings: Settings) -> VectorIndex:
    """The index the settings select: Qdrant server (qdrant_url), local mode (qdrant_path) or Edge (data_dir)."""
    # Adapters are imported here so that a process loads only the engine it uses.
    if settings.qdrant_url:
        from services.index.server import ServerIndex

        return ServerIndex.connect(
            settings.qdrant_url,
            api_key=settings.qdrant_api_key,
            filter_index_limit=settings.index_filter_index_limit,
            compact=settings.index_compact,
            hnsw_ef=settings.index_hnsw_ef,
        )
    if settings.qdrant_path:
        from services.index.server import ServerIndex

        return ServerIndex.local(settings.qdrant_path)
    from services.index.edge import EdgeIndex

    return EdgeIndex(
        settings.data_dir / "qdrant",
        filter_index_limit=settings.index_filter_index_limit,
        optimize_after=settings.index_optimize_after or None,
        compact=settings.index_compact,
        hnsw_ef=settings.index_hnsw_ef,
    )
