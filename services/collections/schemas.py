"""Response bodies of the collections API."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

from services.search.schemas import SearchDefaults


class DocumentCounts(BaseModel):
    queued: int = 0
    processing: int = 0
    indexed: int = 0
    failed: int = 0
    total: int = 0


class CollectionOut(BaseModel):
    name: str
    status: Literal["ready", "deleting"]
    profile: str = Field(..., description="The embedding profile the collection was created with.")
    model: str | None = Field(..., description="Hub id or local path of the model that embeds it.")
    model_sha256: str | None = Field(..., description="sha256 of that model's weights; null when unknown.")
    created_at: datetime
    documents: DocumentCounts = Field(..., description="Documents by status.")
    chunk_count: int = Field(..., description="Searchable chunks (of the indexed generation of each document).")
    search_defaults: SearchDefaults = Field(
        ..., description="What a search of this collection uses where the request leaves it out (PATCH to change)."
    )


class CollectionPatch(BaseModel):
    search_defaults: SearchDefaults


class CollectionList(BaseModel):
    items: list[CollectionOut]


class DeletionAccepted(BaseModel):
    name: str
    status: Literal["deleting"] = "deleting"
    message: str
