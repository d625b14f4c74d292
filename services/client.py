"""A small typed HTTP client for a running Saekin service.

The LangChain and LlamaIndex retrievers, `saekin mcp --url` and scripts use it::

    from services.client import SaekinClient

    with SaekinClient("http://127.0.0.1:8000", api_key="...") as saekin:
        ctx = saekin.context("laws", "지방자치단체 이행계획", max_tokens=1500)
        print(ctx.context)          # "[1] 탄소중립 기본법 · p. 3 · ...\\n..."
        print(ctx.citations[0].title)

Answers are the service's own response models; an error answer raises :class:`SaekinAPIError`
with the service's error code and message.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from typing import Any

import httpx

from services.collections.schemas import CollectionList, CollectionOut
from services.context.schemas import ContextResponse
from services.documents.schemas import DocumentOut, DocumentPage
from services.search.schemas import SearchResponse


class SaekinAPIError(Exception):
    """An error answer of the service: HTTP status, its error code and message."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status, self.code, self.message = status, code, message


class SaekinClient:
    """Blocking client for one Saekin service (thread-safe: one httpx.Client underneath)."""

    def __init__(
        self,
        base_url: str,
        *,
        api_key: str | None = None,
        timeout: float = 60.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = httpx.Client(base_url=base_url.rstrip("/"), headers=headers, timeout=timeout, transport=transport)

    def __enter__(self) -> SaekinClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    # --- search and context ---------------------------------------------------------------

    def search(self, collections: str | Sequence[str], query: str, **fields: Any) -> SearchResponse:
        """Ranked passages; `fields` are the search body's (top_k, mode, filter, fusion, ...)."""
        body = {"query": query, **_drop_none(fields)}
        if isinstance(collections, str):
            return SearchResponse.model_validate(self._post(f"/v1/collections/{collections}/search", body))
        return SearchResponse.model_validate(self._post("/v1/search", {**body, "collections": list(collections)}))

    def context(
        self, collections: str | Sequence[str], query: str, *, max_tokens: int, **fields: Any
    ) -> ContextResponse:
        """Cited context within `max_tokens`; `fields`: tokenizer, neighbors, format, top_k, mode, filter..."""
        body = {"query": query, "max_tokens": max_tokens, **_drop_none(fields)}
        if isinstance(collections, str):
            return ContextResponse.model_validate(self._post(f"/v1/collections/{collections}/context", body))
        return ContextResponse.model_validate(self._post("/v1/context", {**body, "collections": list(collections)}))

    # --- collections and documents ---------------------------------------------------------

    def list_collections(self) -> CollectionList:
        return CollectionList.model_validate(self._get("/v1/collections"))

    def get_collection(self, name: str) -> CollectionOut:
        return CollectionOut.model_validate(self._get(f"/v1/collections/{name}"))

    def get_document(
        self, collection: str, *, document_id: uuid.UUID | str | None = None, external_id: str | None = None
    ) -> DocumentOut:
        """A document by Saekin's id or by yours (`external_id`)."""
        if (document_id is None) == (external_id is None):
            raise ValueError("give document_id or external_id")
        if document_id is not None:
            return DocumentOut.model_validate(self._get(f"/v1/collections/{collection}/documents/{document_id}"))
        page = DocumentPage.model_validate(
            self._get(f"/v1/collections/{collection}/documents", params={"external_id": external_id})
        )
        if not page.items:
            raise SaekinAPIError(404, "document_not_found", f"no document with external_id {external_id!r}")
        return page.items[0]

    def upload_text(
        self,
        collection: str,
        text: str,
        *,
        external_id: str | None = None,
        title: str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> DocumentOut:
        body = _drop_none({"text": text, "external_id": external_id, "title": title, "metadata": metadata})
        return DocumentOut.model_validate(self._post(f"/v1/collections/{collection}/documents", body))

    def wait_until_indexed(
        self, collection: str, document_id: uuid.UUID | str, *, timeout: float = 120.0
    ) -> DocumentOut:
        """Poll a document until it is indexed or failed (TimeoutError after `timeout` seconds)."""
        deadline = time.monotonic() + timeout
        while True:
            document = self.get_document(collection, document_id=document_id)
            if document.status.value in ("indexed", "failed"):
                return document
            if time.monotonic() > deadline:
                raise TimeoutError(f"document {document_id} is still {document.status.value}")
            time.sleep(0.1)

    def delete_document(
        self, collection: str, *, document_id: uuid.UUID | str | None = None, external_id: str | None = None
    ) -> None:
        if (document_id is None) == (external_id is None):
            raise ValueError("give document_id or external_id")
        if document_id is not None:
            self._request("DELETE", f"/v1/collections/{collection}/documents/{document_id}")
        else:
            self._request("DELETE", f"/v1/collections/{collection}/documents", params={"external_id": external_id})

    # --- plumbing ----------------------------------------------------------------------------

    def _get(self, path: str, params: dict[str, Any] | None = None) -> Any:
        return self._request("GET", path, params=params)

    def _post(self, path: str, body: dict[str, Any]) -> Any:
        return self._request("POST", path, json=body)

    def _request(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self._http.request(method, path, **kwargs)
        if response.status_code >= 400:
            try:
                error = response.json()["error"]
                code, message = str(error["code"]), str(error["message"])
            except (ValueError, KeyError, TypeError):
                code, message = "http_error", response.text[:500]
            raise SaekinAPIError(response.status_code, code, message)
        return response.json() if response.content else None


def _drop_none(values: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in values.items() if v is not None}
