"""What both framework retrievers share: one call to Saekin, passages with citation metadata."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from services.client import SaekinClient


@dataclass(frozen=True)
class Passage:
    text: str
    score: float
    id: str
    metadata: dict[str, Any]


def retrieve(
    client: SaekinClient,
    collections: str | list[str],
    query: str,
    *,
    top_k: int,
    mode: str,
    filter: dict[str, Any] | None,
    max_tokens: int | None,
    tokenizer: str,
    neighbors: int,
) -> list[Passage]:
    """Without `max_tokens`: one passage per search hit. With it: the context endpoint's passages
    (touching hits merged, neighbours added, within the budget), one per citation."""
    if max_tokens is None:
        found = client.search(collections, query, top_k=top_k, mode=mode, filter=filter, highlight=False)
        return [
            Passage(
                text=h.text,
                score=h.score,
                id=str(h.chunk_id),
                metadata={
                    "source": h.title or h.external_id or str(h.document_id),
                    "n": h.rank,
                    "rank": h.rank,
                    "score": h.score,
                    "collection": h.collection,
                    "document_id": str(h.document_id),
                    "external_id": h.external_id,
                    "title": h.title,
                    "pages": [h.page] if h.page is not None else [],
                    "heading": h.heading,
                    "char_start": h.char_start,
                    "char_end": h.char_end,
                    "metadata": h.metadata,
                },
            )
            for h in found.results
        ]
    ctx = client.context(
        collections,
        query,
        max_tokens=max_tokens,
        top_k=top_k,
        mode=mode,
        filter=filter,
        tokenizer=tokenizer,
        neighbors=neighbors,
    )
    return [
        Passage(
            text=c.text,
            score=c.score,
            id=f"{c.document_id}:{c.char_start}-{c.char_end}",
            metadata={
                "source": c.title or c.external_id or str(c.document_id),
                "n": c.n,
                "rank": c.rank,
                "score": c.score,
                "collection": c.collection,
                "document_id": str(c.document_id),
                "external_id": c.external_id,
                "title": c.title,
                "pages": c.pages,
                "heading": c.heading,
                "char_start": c.char_start,
                "char_end": c.char_end,
                "trimmed": c.trimmed,
            },
        )
        for c in ctx.citations
    ]
