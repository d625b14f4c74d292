"""Interfaces RAG stacks already speak: OpenAI-style embeddings and Cohere/Jina-style reranking."""

from __future__ import annotations

import base64
from typing import Annotated, Literal

import numpy as np
from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema, field_validator

from services.api.deps import RuntimeDep
from services.api.errors import error_responses
from services.errors import InvalidInput, NotFound
from services.runtime import Runtime

router = APIRouter(prefix="/v1", tags=["openai-compatible"])

MAX_INPUTS = 256
MAX_INPUT_CHARS = 32_000


# What `input` takes, as the validator below checks it: texts that are not blank, within the limits.
_TEXT_SCHEMA = {"type": "string", "minLength": 1, "maxLength": MAX_INPUT_CHARS, "pattern": r"\S"}
_INPUT_SCHEMA = {
    "anyOf": [_TEXT_SCHEMA, {"type": "array", "items": _TEXT_SCHEMA, "minItems": 1, "maxItems": MAX_INPUTS}]
}


class EmbeddingsRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str = Field(..., description="The active profile's name (e.g. bge-m3-ko) or its hub id.")
    input: Annotated[str | list[str], WithJsonSchema(_INPUT_SCHEMA)] = Field(
        ..., description="One text or a list of texts (token arrays are not accepted)."
    )
    encoding_format: Literal["float", "base64"] = Field(
        "float", description="float: lists of numbers; base64: little-endian float32 bytes, base64-encoded."
    )
    dimensions: int | None = Field(None, description="Must equal the model's dimension if given (no truncation).")
    user: str | None = Field(None, description="Accepted for compatibility; not used.")

    @field_validator("input")
    @classmethod
    def _texts(cls, value: str | list[str]) -> str | list[str]:
        texts = [value] if isinstance(value, str) else value
        if not texts:
            raise ValueError("input is empty")
        if len(texts) > MAX_INPUTS:
            raise ValueError(f"at most {MAX_INPUTS} inputs per request")
        for text in texts:
            if not text.strip():
                raise ValueError("an input is empty")
            if len(text) > MAX_INPUT_CHARS:
                raise ValueError(f"an input is longer than {MAX_INPUT_CHARS} characters")
        return value


class Embedding(BaseModel):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | str


class EmbeddingsUsage(BaseModel):
    prompt_tokens: int
    total_tokens: int


class EmbeddingsResponse(BaseModel):
    object: Literal["list"] = "list"
    data: list[Embedding]
    model: str
    usage: EmbeddingsUsage


def served_models(rt: Runtime) -> set[str]:
    return {rt.profile, rt.settings.profile.hub_id, rt.settings.model_name_or_path}


@router.post("/embeddings", response_model=EmbeddingsResponse, responses=error_responses(404, 413, 503))
def embeddings(request: EmbeddingsRequest, rt: RuntimeDep) -> EmbeddingsResponse:
    """OpenAI-compatible embeddings from the warm query encoder (requests that arrive together share
    a forward pass). Point the `openai` client's `base_url` at `http://host:port/v1`."""
    if request.model not in served_models(rt):
        raise NotFound(
            f"model {request.model!r} is not served here: use {rt.profile!r} or {rt.settings.profile.hub_id!r}",
            code="model_not_found",
        )
    encoder = rt.query_encoder
    dim = rt.settings.profile.dim
    if request.dimensions is not None and request.dimensions != dim:
        raise InvalidInput(
            f"dimensions={request.dimensions}: this model's embeddings have {dim} dimensions",
            code="invalid_dimensions",
        )
    texts = [request.input] if isinstance(request.input, str) else request.input
    futures = [encoder.submit(text) for text in texts]
    vectors = [np.asarray(f.result(), dtype=np.float32) for f in futures]
    specials = rt.tokenizer.num_special_tokens_to_add()
    limit = rt.tokenizer.model_max_length
    tokens = sum(min(n + specials, limit) for n in rt.embedding_counter.count_many(texts))
    data = [
        Embedding(
            index=i,
            embedding=base64.b64encode(v.astype("<f4").tobytes()).decode()
            if request.encoding_format == "base64"
            else v.tolist(),
        )
        for i, v in enumerate(vectors)
    ]
    return EmbeddingsResponse(
        data=data, model=request.model, usage=EmbeddingsUsage(prompt_tokens=tokens, total_tokens=tokens)
    )


class RerankDocument(BaseModel):
    model_config = ConfigDict(extra="forbid")
    text: str


class RerankRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str | None = Field(None, description="Accepted for compatibility; the configured reranker answers.")
    query: str = Field(..., min_length=1, max_length=4000)
    documents: list[str | RerankDocument] = Field(..., min_length=1, max_length=1000)
    top_n: int | None = Field(None, ge=1, description="How many results to return (default: all).")
    return_documents: bool = Field(False, description="Include each document's text in its result.")


class RerankResult(BaseModel):
    index: int = Field(..., description="Position of the document in the request.")
    relevance_score: float
    document: RerankDocument | None = None


class RerankResponse(BaseModel):
    model: str
    results: list[RerankResult]


@router.post("/rerank", response_model=RerankResponse, responses=error_responses(404, 413, 503), tags=["rerank"])
def rerank(request: RerankRequest, rt: RuntimeDep) -> RerankResponse:
    """Reorder documents by relevance to the query (the request and answer of Cohere's and Jina's
    rerank APIs). 404 when no reranker is configured."""
    reranker = rt.reranker
    if reranker is None:
        raise NotFound(
            "no reranker is configured: set SAEKIN_RERANK_PROFILE (or SAEKIN_RERANK_MODEL, a cross-encoder's "
            "hub id or local directory)",
            code="reranker_not_configured",
        )
    texts = [d if isinstance(d, str) else d.text for d in request.documents]
    # The question's terms in each document: a document longer than the reranker reads is scored on
    # the window around them.
    analyzer = rt.analyzer
    highlights = analyzer.highlights_many(texts, analyzer.query_terms(request.query), [None] * len(texts))
    scores = reranker.rerank(request.query, texts, highlights)
    order = sorted(range(len(texts)), key=lambda i: (-scores[i], i))[: request.top_n or len(texts)]
    return RerankResponse(
        model=reranker.model_name_or_path,
        results=[
            RerankResult(
                index=i,
                relevance_score=float(scores[i]),
                document=RerankDocument(text=texts[i]) if request.return_documents else None,
            )
            for i in order
        ],
    )
