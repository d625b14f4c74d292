"""List, describe and delete collections."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from services.api.auth import PrincipalDep
from services.api.deps import CollectionName, RuntimeDep, SessionDep
from services.api.errors import error_responses
from services.collections import service
from services.collections.model import RecordedModel
from services.collections.reindex import Reindexes
from services.collections.schemas import (
    CollectionList,
    CollectionOut,
    CollectionPatch,
    DeletionAccepted,
    ReindexRequest,
)
from services.db import session_scope
from services.documents.models import Collection
from services.documents.service import set_search_defaults

router = APIRouter(prefix="/v1/collections", tags=["collections"])


@router.get("", response_model=CollectionList, responses=error_responses())
def list_collections(session: SessionDep, principal: PrincipalDep) -> CollectionList:
    """Every collection the API key may see: profile, model, document counts by status, chunk
    count, search defaults."""
    return CollectionList(items=[c for c in service.list_collections(session) if principal.sees(c.name)])


@router.get("/{collection}", response_model=CollectionOut, responses=error_responses(404))
def get_collection(collection: CollectionName, session: SessionDep) -> CollectionOut:
    """One collection: profile, model (hub id or path, weights sha256), counts, search defaults."""
    return service.get_collection_out(session, name=collection)


@router.patch("/{collection}", response_model=CollectionOut, responses=error_responses(404, 413, 422))
def patch_collection(
    collection: CollectionName, patch: CollectionPatch, session: SessionDep, rt: RuntimeDep
) -> CollectionOut:
    """Change the collection's settings; fields left out keep theirs.

    `search_defaults`: the default search settings (mode, fusion, rerank) used where a search
    request leaves them out. They change how stored vectors are searched: nothing is re-indexed.
    Fields left out or null fall back to the service's defaults.

    `filter_indexes`: metadata key -> payload index kind (keyword, integer, float, datetime,
    bool), made on the collection's index before the answer (and on every index a reindex
    builds); keys left out of a new set lose theirs. 422 beyond SAEKIN_INDEX_FILTER_INDEX_LIMIT."""
    if patch.search_defaults is not None:
        defaults = patch.search_defaults.model_dump(mode="json", exclude_none=True) or None
        set_search_defaults(session, name=collection, defaults=defaults)
    if patch.filter_indexes is not None:
        service.declare_filter_indexes(
            session,
            index=rt.index,
            name=collection,
            declared=dict(patch.filter_indexes),
            limit=rt.settings.index_filter_index_limit,
            dim=lambda c: _embed_dim(rt, c),
        )
    return service.get_collection_out(session, name=collection)


@router.delete(
    "/{collection}",
    status_code=204,
    responses={
        202: {"model": DeletionAccepted, "description": "a long deletion goes on in the background"},
        **error_responses(404),
    },
)
async def delete_collection(collection: CollectionName, request: Request, rt: RuntimeDep) -> Response:
    """Delete the collection: its documents, chunks and Qdrant collection. 204 when done; 202 while a
    long one goes on (GET shows `status: deleting`; a repeated DELETE finishes an interrupted one)."""
    deletions: service.Deletions = request.app.state.deletions
    done = await run_in_threadpool(
        deletions.delete, session_factory=rt.session_factory, index=rt.index, name=collection
    )
    if done:
        return Response(status_code=204)
    body = DeletionAccepted(name=collection, message=f"collection {collection!r} is being deleted")
    return JSONResponse(body.model_dump(), status_code=202)


@router.post(
    "/{collection}/reindex", status_code=202, response_model=CollectionOut, responses=error_responses(404, 409)
)
async def reindex_collection(
    collection: CollectionName, body: ReindexRequest, request: Request, rt: RuntimeDep
) -> CollectionOut:
    """Rebuild the collection's index in this service (a new model, or only the sparse vectors)
    beside the live one, then switch searches to it; 202 once it has begun. Searches read the old
    index until the switch, uploads meanwhile are copied too; GET shows `reindex` with its progress.
    `model` names a hub id or a directory on this server, loaded into this process."""
    reindexes: Reindexes = request.app.state.reindexes
    await run_in_threadpool(
        reindexes.start,
        rt,
        name=collection,
        profile=body.profile,
        model=body.model,
        sparse_only=body.sparse_only,
        rechunk=body.rechunk,
    )
    return await run_in_threadpool(_describe, rt, collection)


def _embed_dim(rt, collection: Collection) -> int:
    """The width the embed stage gives the collection's index: that of the model the collection
    records (this service's own, or another one loaded on first use)."""
    recorded = RecordedModel(collection.name, collection.profile, collection.model, collection.model_sha256)
    return rt.models.encoder(recorded).dim


def _describe(rt, name: str) -> CollectionOut:
    with session_scope(rt.session_factory) as session:
        return service.get_collection_out(session, name=name)
