"""Context for an LLM (cited passages within a token budget) and search across collections."""

from __future__ import annotations

from fastapi import APIRouter

from services.api.auth import PrincipalDep, require_collections
from services.api.deps import CollectionName, RuntimeDep
from services.api.errors import error_responses
from services.context.schemas import ContextRequest, ContextResponse, MultiContextRequest
from services.context.service import build_context
from services.db import session_scope
from services.runtime import Runtime
from services.search.schemas import MultiSearchRequest, SearchResponse
from services.search.service import search_collections

router = APIRouter(prefix="/v1", tags=["context"])


def _context(rt: Runtime, collections: list[str], request: ContextRequest) -> ContextResponse:
    with session_scope(rt.session_factory) as session:
        return build_context(
            session,
            index=rt.index,
            analyzer=rt.analyzer,
            models=rt.models,
            counter_for=rt.counter_for,
            collection_names=collections,
            request=request,
            reranker=rt.reranker,
        )


@router.post(
    "/collections/{collection}/context", response_model=ContextResponse, responses=error_responses(404, 409, 413, 503)
)
def context(collection: CollectionName, request: ContextRequest, rt: RuntimeDep) -> ContextResponse:
    """Cited passages for an LLM prompt within `max_tokens`: hits of one document that touch are
    merged in document order (the chunks' sentence overlap once), neighbouring chunks added while
    the budget allows, passages ordered by their best hit and each started by `[n] title · p. N ·
    heading`; the last one that does not fit is cut at a sentence boundary."""
    return _context(rt, [collection], request)


@router.post("/context", response_model=ContextResponse, responses=error_responses(404, 409, 413, 503))
def context_many(request: MultiContextRequest, rt: RuntimeDep, principal: PrincipalDep) -> ContextResponse:
    """The context endpoint over several collections of the service's profile, searched as one
    (a collection of another profile: 409 naming it)."""
    require_collections(principal, request.collections)
    return _context(rt, request.collections, request)


@router.post("/search", response_model=SearchResponse, responses=error_responses(404, 409, 413, 503))
def search_many(request: MultiSearchRequest, rt: RuntimeDep, principal: PrincipalDep) -> SearchResponse:
    """Search several collections of the service's profile as one: hits merged by score, each
    naming its collection."""
    require_collections(principal, request.collections)
    with session_scope(rt.session_factory) as session:
        return search_collections(
            session,
            index=rt.index,
            analyzer=rt.analyzer,
            models=rt.models,
            collection_names=request.collections,
            request=request,
            reranker=rt.reranker,
        )
