"""Upload, inspect, list and delete documents."""

from __future__ import annotations

import json
import uuid
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from pydantic import ValidationError
from starlette.datastructures import UploadFile

from services.api.auth import PrincipalDep, check_upload_room, take_upload
from services.api.deps import CollectionName, DispatcherDep, RuntimeDep, SessionDep
from services.api.errors import error_responses
from services.db import session_scope
from services.dispatch import intake
from services.documents import lifecycle, service
from services.documents.lifecycle import Upload
from services.documents.models import DocumentStatus
from services.documents.schemas import ChunkOut, ChunkPage, DocumentOut, DocumentPage, TextDocumentIn
from services.errors import InvalidInput, PayloadTooLarge, TooManyRequests, UnsupportedMediaType
from services.index.query import STORABLE_TEXT_PATTERN
from services.ingest.extract import detect_media_type_data
from services.runtime import Runtime

router = APIRouter(prefix="/v1/collections/{collection}/documents", tags=["documents"])

UPLOAD_OPENAPI = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {
                        "file": {"type": "string", "format": "binary"},
                        "external_id": {"type": "string", "maxLength": 256, "pattern": STORABLE_TEXT_PATTERN},
                        "title": {"type": "string", "maxLength": 512, "pattern": STORABLE_TEXT_PATTERN},
                        "metadata": TextDocumentIn.model_json_schema()["properties"]["metadata"],
                    },
                    # Another field is refused (422): a misspelt `titel` must not be dropped silently.
                    "additionalProperties": False,
                },
                # metadata travels as a JSON text part
                "encoding": {"metadata": {"contentType": "application/json"}},
            },
            "application/json": {"schema": TextDocumentIn.model_json_schema()},
        },
    }
}


@router.post(
    "",
    status_code=202,
    response_model=DocumentOut,
    openapi_extra=UPLOAD_OPENAPI,
    responses={
        200: {"model": DocumentOut, "description": "the same content is already stored"},
        **error_responses(409, 413, 415, 429, 503),
    },
)
async def upload_document(
    collection: CollectionName,
    request: Request,
    response: Response,
    rt: RuntimeDep,
    dispatcher: DispatcherDep,
    principal: PrincipalDep,
) -> DocumentOut:
    """Store a document (multipart file or JSON text) and queue it for indexing; 200 if already stored."""
    service.validate_collection_name(collection)
    await _hold_back_when_busy(rt)
    limit = rt.settings.max_upload_bytes
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"upload of {int(declared)} bytes is over the limit of {limit} bytes")
    # The key's bytes per day: refused before reading when the declared size cannot fit.
    check_upload_room(request, principal, int(declared) if declared and declared.isdigit() else None)
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type == "multipart/form-data":
        upload = await _read_multipart(request, limit)
    elif content_type == "application/json":
        upload = await _read_json(request, limit)
    else:
        raise UnsupportedMediaType(
            f"send multipart/form-data with a 'file' field, or application/json with 'text' (got {content_type or 'nothing'})"
        )

    take_upload(request, principal, len(upload.data))
    # Storing and dispatching block (database, broker): off the event loop.
    stored = await run_in_threadpool(
        intake,
        upload,
        session_factory=rt.session_factory,
        collection_name=collection,
        profile=rt.profile,
        dispatcher=dispatcher,
        model=rt.model_ref,
        any_model=rt.settings.max_models > 1,
        redispatch_after_s=rt.settings.redispatch_after_s,
    )
    if not stored.created:
        response.status_code = 200
    return DocumentOut.of(stored.document)


# A client held back waits about this long: the backlog drains by many documents a second.
RETRY_AFTER_S = 5


async def _hold_back_when_busy(rt: Runtime) -> None:
    """429 with Retry-After, before the body is read, while SAEKIN_MAX_IN_FLIGHT_DOCUMENTS documents
    are queued or processing: a backlog no faster than ingestion can only grow, and every
    document in it waits longer."""
    limit = rt.settings.max_in_flight_documents
    if not limit:
        return
    in_flight = await run_in_threadpool(_count_in_flight, rt)
    if in_flight >= limit:
        raise TooManyRequests(
            f"{in_flight} documents are waiting for ingestion (the limit is {limit}): retry in {RETRY_AFTER_S} s",
            retry_after_s=RETRY_AFTER_S,
        )


def _count_in_flight(rt: Runtime) -> int:
    with session_scope(rt.session_factory) as session:
        return service.count_in_flight(session)


async def _read_body_limited(request: Request, limit: int) -> bytes:
    body = bytearray()
    async for part in request.stream():
        body += part
        if len(body) > limit:
            raise PayloadTooLarge(f"upload is over the limit of {limit} bytes")
    return bytes(body)


async def _read_json(request: Request, limit: int) -> Upload:
    raw = await _read_body_limited(request, limit)
    if not raw.strip():
        raise InvalidInput('the request body is empty: send {"text": ...}', code="empty_body")
    try:
        body = TextDocumentIn.model_validate_json(raw)
    except ValidationError as exc:
        raise InvalidInput(
            "invalid JSON document: "
            + "; ".join(f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}" for e in exc.errors()),
            code="invalid_request",
        ) from None
    if not body.text.strip():
        raise InvalidInput("text is empty", code="empty_document")
    return Upload(
        data=body.text.encode("utf-8"),
        media_type="text/plain",
        external_id=body.external_id,
        title=body.title,
        metadata=body.metadata,
    )


_MULTIPART_FIELDS = frozenset({"file", "external_id", "title", "metadata"})


async def _read_multipart(request: Request, limit: int) -> Upload:
    # Starlette spools file parts to disk; the wrapper below stops reading once the limit is passed.
    counted = _LimitedReceive(request, limit)
    form = await Request(request.scope, counted).form(max_files=1, max_fields=16)
    file = form.get("file")
    if not isinstance(file, UploadFile):
        await form.close()
        raise InvalidInput("multipart upload needs a 'file' field with the document", code="missing_file")
    unknown = sorted(set(form.keys()) - _MULTIPART_FIELDS)
    if unknown:
        await form.close()
        raise InvalidInput(
            f"unknown multipart field{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))}: "
            f"an upload takes {', '.join(sorted(_MULTIPART_FIELDS))}",
            code="unknown_field",
        )
    data = await file.read()
    await form.close()
    if not data:
        raise InvalidInput("the uploaded file is empty", code="empty_document")
    metadata_raw = form.get("metadata")
    metadata = {}
    if isinstance(metadata_raw, str) and metadata_raw.strip():
        try:
            metadata = json.loads(metadata_raw)
        except json.JSONDecodeError as exc:
            raise InvalidInput(f"metadata is not valid JSON: {exc.msg}", code="invalid_metadata") from None
        except RecursionError:
            raise InvalidInput("metadata is nested too deeply", code="invalid_metadata") from None
    external_id = _text_field(form.get("external_id"), "external_id", 256)
    title = _text_field(form.get("title"), "title", 512)
    media_type = await run_in_threadpool(_detect_type, data, file.filename, file.content_type)
    return Upload(
        data=data,
        filename=(file.filename or None) and file.filename[:512],
        media_type=media_type,
        external_id=external_id,
        title=title,
        metadata=metadata,
    )


def _detect_type(data: bytes, filename: str | None, declared: str | None) -> str:
    """415 now for types Saekin cannot read (the type is stored: the worker does not detect it again)."""
    return detect_media_type_data(data, filename=filename, declared=declared)


def _text_field(value, name: str, max_len: int) -> str | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if not isinstance(value, str) or len(value) > max_len:
        raise InvalidInput(f"{name} must be text of at most {max_len} characters", code="invalid_request")
    return value.strip()


class _LimitedReceive:
    """An ASGI receive that raises PayloadTooLarge once the body passes `limit` bytes."""

    def __init__(self, request: Request, limit: int) -> None:
        self._receive = request.receive
        self._limit = limit
        self._seen = 0

    async def __call__(self):
        message = await self._receive()
        if message["type"] == "http.request":
            self._seen += len(message.get("body", b""))
            if self._seen > self._limit:
                raise PayloadTooLarge(f"upload is over the limit of {self._limit} bytes")
        return message


@router.get("/{document_id}", response_model=DocumentOut, responses=error_responses(404))
def get_document(collection: CollectionName, document_id: uuid.UUID, session: SessionDep) -> DocumentOut:
    """A document's status, stage, counts, error reason and metadata."""
    return DocumentOut.of(service.get_document(session, collection_name=collection, document_id=document_id))


@router.get("/{document_id}/chunks", response_model=ChunkPage, responses=error_responses(404))
def list_document_chunks(
    collection: CollectionName,
    document_id: uuid.UUID,
    session: SessionDep,
    cursor: Annotated[str | None, Query(max_length=16)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> ChunkPage:
    """A document's chunks in order (text, page, heading, token count, offsets): those search shows,
    or while a first version is processed, those made so far. Read-only; follow `next_cursor` for more."""
    document, generation, rows, next_cursor = service.list_chunks(
        session, collection_name=collection, document_id=document_id, cursor=cursor, limit=limit
    )
    return ChunkPage(
        document_id=document.id,
        generation=generation,
        items=[ChunkOut.model_validate(c) for c in rows],
        next_cursor=next_cursor,
    )


@router.get("", response_model=DocumentPage, responses=error_responses(404))
def list_documents(
    collection: CollectionName,
    session: SessionDep,
    status: Annotated[DocumentStatus | None, Query()] = None,
    external_id: Annotated[
        str | None, Query(min_length=1, max_length=256, description="Only the document with your id.")
    ] = None,
    cursor: Annotated[str | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> DocumentPage:
    """Documents newest first, optionally only those with `status` or your `external_id`; follow
    `next_cursor` for more."""
    rows, next_cursor = service.list_documents(
        session, collection_name=collection, status=status, external_id=external_id, cursor=cursor, limit=limit
    )
    return DocumentPage(items=[DocumentOut.of(d) for d in rows], next_cursor=next_cursor)


@router.delete("", status_code=204, responses=error_responses(404))
def delete_document_by_external_id(
    collection: CollectionName,
    session: SessionDep,
    rt: RuntimeDep,
    external_id: Annotated[str, Query(min_length=1, max_length=256, description="Your id of the document.")],
) -> Response:
    """Remove the document with your `external_id` from the database and the vector index."""
    document = service.get_document_by_external_id(session, collection_name=collection, external_id=external_id)
    lifecycle.cancel(session, index=rt.index, collection_name=collection, document_id=document.id)
    return Response(status_code=204)


@router.delete("/{document_id}", status_code=204, responses=error_responses(404))
def delete_document(
    collection: CollectionName, document_id: uuid.UUID, session: SessionDep, rt: RuntimeDep
) -> Response:
    """Remove a document from the database and the vector index."""
    lifecycle.cancel(session, index=rt.index, collection_name=collection, document_id=document_id)
    return Response(status_code=204)
