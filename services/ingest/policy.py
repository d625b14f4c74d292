"""The chunk policy: how chunks are cut (model tokens) and how their terms are weighted (BM25).

One object per embedding model, computed from the settings and the model's tokenizer, so that the
budget the chunker cuts at and the average length BM25 normalises by come from the same rule. A
collection's documents are chunked by the policy of the model it records (`ChunkPolicies`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from config.settings import Settings

if TYPE_CHECKING:
    from services.collections.model import RecordedModel

log = logging.getLogger(__name__)

# Kiwi content morphemes plus bigrams per model token, measured on Korean text: BM25's default
# average chunk length is this share of the chunk budget.
TERMS_PER_TOKEN = 0.65


@dataclass(frozen=True)
class ChunkPolicy:
    tokenizer: Any  # the embedding model's own (fast) tokenizer
    max_tokens: int
    overlap_tokens: int
    bm25_k1: float
    bm25_b: float
    bm25_avg_terms: float

    @classmethod
    def from_settings(cls, settings: Settings, tokenizer: Any) -> ChunkPolicy:
        """The profile's budget (or SAEKIN_CHUNK_TOKENS), but never more than the model reads: a
        model of another family than the profile (say a 128-token one under bge-m3-ko's 510)
        would otherwise silently drop the end of every long chunk."""
        budget = settings.effective_chunk_tokens
        readable = tokenizer.model_max_length - tokenizer.num_special_tokens_to_add()
        if readable < budget:
            log.warning(
                "the model reads at most %d tokens, fewer than the chunk budget of %d (profile %s): "
                "chunks are cut at %d; check SAEKIN_EMBEDDING_PROFILE against the model",
                readable,
                budget,
                settings.embedding_profile,
                readable,
            )
            budget = readable
        return cls(
            tokenizer=tokenizer,
            max_tokens=budget,
            overlap_tokens=min(settings.chunk_overlap_tokens, budget // 2),
            bm25_k1=settings.bm25_k1,
            bm25_b=settings.bm25_b,
            bm25_avg_terms=settings.bm25_avg_terms or TERMS_PER_TOKEN * budget,
        )


# The chunk policy of the model a collection records (Runtime.chunking_for).
ChunkPolicies = Callable[["RecordedModel"], ChunkPolicy]
