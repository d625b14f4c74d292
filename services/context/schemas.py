"""Request and response bodies of the context API."""

from __future__ import annotations

import uuid
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from services.search.schemas import CollectionNameField, SearchRequest

MAX_CONTEXT_TOKENS = 32_768
MAX_NEIGHBORS = 5
MAX_COLLECTIONS = 20


class ContextRequest(SearchRequest):
    """The search fields (query, filter, mode, fusion, top_k candidates...) plus the budget.

    `highlight` and `explain` have no effect here.
    """

    model_config = ConfigDict(extra="forbid")

    max_tokens: int = Field(
        ..., ge=1, le=MAX_CONTEXT_TOKENS, description="Budget of the returned context, in `tokenizer` tokens."
    )
    tokenizer: Literal["o200k_base", "cl100k_base", "embedding"] = Field(
        "o200k_base",
        description="How tokens are counted: an OpenAI tiktoken encoding (o200k_base: GPT-4o and later; "
        "cl100k_base: GPT-4, GPT-3.5), or `embedding` for the active embedding model's tokenizer. An "
        "encoding whose file is not available offline falls back to `embedding`, and `note` says so.",
    )
    neighbors: int = Field(
        1,
        ge=0,
        le=MAX_NEIGHBORS,
        description="Adjacent chunks of the same document added around each hit while the budget allows.",
    )
    format: Literal["markdown", "text"] = Field(
        "markdown", description="markdown: titles in bold (escaped); text: plain source lines."
    )


class MultiContextRequest(ContextRequest):
    collections: list[CollectionNameField] = Field(
        ...,
        min_length=1,
        max_length=MAX_COLLECTIONS,
        description="Collections of the service's profile, searched as one.",
    )


class Citation(BaseModel):
    n: int = Field(..., description="The marker `[n]` that starts the passage in `context`.")
    document_id: uuid.UUID
    external_id: str | None
    title: str | None
    collection: str
    pages: list[int] = Field(..., description="Pages the passage spans (PDF), empty when unknown.")
    heading: str | None = Field(..., description="The section heading of the passage's best hit.")
    char_start: int = Field(..., description="Where the passage starts in the document's text.")
    char_end: int
    score: float = Field(..., description="Search score of the passage's best hit.")
    rank: int = Field(..., description="Search rank of the passage's best hit.")
    text: str = Field(..., description="The passage as it appears in `context` (after its source line).")
    trimmed: bool = Field(..., description="Cut at a sentence boundary to fit the budget.")


class ContextResponse(BaseModel):
    context: str = Field(..., description="Passages, each starting with `[n] title · p. N · heading`.")
    token_count: int = Field(..., description="Tokens of `context` counted with `tokenizer`; never above max_tokens.")
    tokenizer: Literal["o200k_base", "cl100k_base", "embedding"] = Field(..., description="The tokenizer used.")
    citations: list[Citation]
    mode: Literal["dense", "sparse", "hybrid"]
    took_ms: float
    note: str | None = Field(
        None, description="Why the context is empty, or why another tokenizer or mode than asked was used."
    )
