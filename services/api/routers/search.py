"""Semantic, keyword and hybrid search over one collection."""
from __future__ import annotations

from fastapi import APIRouter

from services.api.deps import RuntimeDep, SessionDep
from services.search import service
from services.search.schemas import SearchRequest, SearchResponse

router = APIRouter(prefix="/v1/collections/{collection}", tags=["search"])


@router.post("/search", response_model=SearchResponse)
def search(collection: str, request: SearchRequest, session: SessionDep, rt: RuntimeDep) -> SearchResponse:
    """Ranked passages for a question, with their document metadata and highlighted query terms."""
    return service.search(session, rt=rt, collection_name=collection, request=request)
