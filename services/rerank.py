"""Reranking passages for a question: the interface /v1/rerank (and search's `rerank`) use.

The model itself lives with the embedding code (a cross-encoder); this module only says what the
API needs of it, so that the route, its schema and its 404 exist whether or not one is configured.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from config.settings import Settings

log = logging.getLogger(__name__)


class Reranker(Protocol):
    """Scores passages for a question; higher is more relevant."""

    name: str

    def rerank(
        self, query: str, passages: Sequence[str], highlights: Sequence[Sequence[tuple[int, int]]] | None = None
    ) -> list[float]:
        """One relevance score per passage, in the passages' order. `highlights` ([start, end)
        spans of query terms in each passage) may guide models that look at them; None: none known."""
        ...


def load_reranker(settings: Settings) -> Reranker | None:
    """The reranker SAEKIN_RERANKER_MODEL names, or None.

    No cross-encoder implementation ships in this build yet: a configured model is reported and
    the rerank route answers 404 saying so, rather than pretending to rerank.
    """
    if not settings.reranker_model:
        return None
    log.warning(
        "SAEKIN_RERANKER_MODEL=%s is set, but this build has no reranker implementation; /v1/rerank answers 404",
        settings.reranker_model,
    )
    return None


def not_configured_message(settings: Settings) -> str:
    if settings.reranker_model:
        return (
            f"reranking is not available: SAEKIN_RERANKER_MODEL={settings.reranker_model} is set, "
            "but this build has no reranker implementation"
        )
    return "no reranker is configured: set SAEKIN_RERANKER_MODEL to a cross-encoder (hub id or local directory)"
