"""A collection's settings: its default search mode, fusion and rerank."""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter
from pydantic import BaseModel

from services.api.deps import SessionDep
from services.documents import service
from services.documents.models import Collection
from services.search.schemas import SearchDefaults

router = APIRouter(prefix="/v1/collections/{collection}", tags=["collections"])


class CollectionOut(BaseModel):
    name: str
    profile: str
    created_at: datetime
    search_defaults: SearchDefaults

    @classmethod
    def of(cls, collection: Collection) -> CollectionOut:
        return cls(
            name=collection.name,
            profile=collection.profile,
            created_at=collection.created_at,
            search_defaults=SearchDefaults.model_validate(collection.search_defaults or {}),
        )


class CollectionPatch(BaseModel):
    search_defaults: SearchDefaults


@router.get("", response_model=CollectionOut, responses={404: {"description": "no such collection"}})
def get_collection(collection: str, session: SessionDep) -> CollectionOut:
    """The collection's profile and default search settings."""
    return CollectionOut.of(service.get_collection(session, name=collection))


@router.patch(
    "",
    response_model=CollectionOut,
    responses={404: {"description": "no such collection"}, 422: {"description": "invalid settings"}},
)
def patch_collection(collection: str, patch: CollectionPatch, session: SessionDep) -> CollectionOut:
    """Set the collection's default search settings (mode, fusion, rerank), used where a search
    request leaves them out. They change how stored vectors are searched: nothing is re-indexed.
    Fields left out or null fall back to the service's defaults."""
    defaults = patch.search_defaults.model_dump(mode="json", exclude_none=True) or None
    return CollectionOut.of(service.set_search_defaults(session, name=collection, defaults=defaults))
