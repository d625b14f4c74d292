"""The MCP server (official `mcp` SDK): tools search, get_context, list_collections, get_document.

Two ways to serve it, one set of tools:
- streamable HTTP at `/mcp` of the API app, behind the same API keys (:func:`mount_mcp`);
- stdio, `saekin mcp`: against a running service (`--url`, through :class:`SaekinClient`) or
  in-process on the embedded data directory (:class:`RuntimeBackend`).
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Sequence
from contextvars import ContextVar
from typing import TYPE_CHECKING, Annotated, Any, Literal, Protocol

from pydantic import Field, ValidationError

from services.auth.models import Scope
from services.auth.principal import ANONYMOUS, Principal
from services.collections.schemas import CollectionList
from services.context.schemas import ContextResponse, MultiContextRequest
from services.documents.schemas import DocumentOut
from services.errors import InvalidInput, SaekinError, describe_validation_errors
from services.search.schemas import MultiSearchRequest, SearchResponse

if TYPE_CHECKING:
    from fastapi import FastAPI
    from mcp.server.mcpserver import MCPServer

    from config.settings import Settings
    from services.runtime import Runtime

INSTRUCTIONS = (
    "Saekin(색인)은 한국어 문서 검색 서비스입니다. Korean document retrieval: keyword search over Korean "
    "morphemes (서울, 서울은, 서울에서 all match 서울) fused with dense vectors. Use get_context to get "
    "cited passages for an answer within a token budget and cite them as [n]; use search for a ranked "
    "list; list_collections shows what can be searched."
)


class Backend(Protocol):
    """What the tools need; a running service (SaekinClient) or this process (RuntimeBackend)."""

    def search(self, collections: str | Sequence[str], query: str, **fields: Any) -> SearchResponse: ...

    def context(
        self, collections: str | Sequence[str], query: str, *, max_tokens: int, **fields: Any
    ) -> ContextResponse: ...

    def list_collections(self) -> CollectionList: ...

    def get_document(
        self, collection: str, *, document_id: uuid.UUID | str | None = None, external_id: str | None = None
    ) -> DocumentOut: ...


# The caller of the /mcp request being served (set by the key check around the endpoint).
current_principal: ContextVar[Principal | None] = ContextVar("saekin_mcp_principal", default=None)


def principal_of_request() -> Principal:
    principal = current_principal.get()
    if principal is None:  # no key check ran: refuse rather than answer for everyone
        raise SaekinError("no API key was checked for this MCP request", code="unauthorized")
    return principal


class RuntimeBackend:
    """The tools' backend in this process: the same service functions the HTTP routes call, with
    the same access rule: a collection the caller's key may not see is not found."""

    def __init__(self, rt: Runtime, principal: Callable[[], Principal] = lambda: ANONYMOUS) -> None:
        self.rt = rt
        # stdio (`saekin mcp` on the data directory): the local user, every right.
        self.principal = principal

    def search(self, collections: str | Sequence[str], query: str, **fields: Any) -> SearchResponse:
        from services.db import session_scope
        from services.search.service import search_collections

        names = [collections] if isinstance(collections, str) else list(collections)
        self.principal().require(Scope.read, names)
        request = _validated(MultiSearchRequest, {"query": query, "collections": names, **fields})
        with session_scope(self.rt.session_factory) as session:
            return search_collections(
                session,
                index=self.rt.index,
                analyzer=self.rt.analyzer,
                models=self.rt.models,
                collection_names=request.collections,
                request=request,
                reranker=self.rt.reranker,
            )

    def context(
        self, collections: str | Sequence[str], query: str, *, max_tokens: int, **fields: Any
    ) -> ContextResponse:
        from services.context.service import build_context
        from services.db import session_scope

        names = [collections] if isinstance(collections, str) else list(collections)
        self.principal().require(Scope.read, names)
        request = _validated(
            MultiContextRequest, {"query": query, "max_tokens": max_tokens, "collections": names, **fields}
        )
        with session_scope(self.rt.session_factory) as session:
            return build_context(
                session,
                index=self.rt.index,
                analyzer=self.rt.analyzer,
                models=self.rt.models,
                counter_for=self.rt.counter_for,
                collection_names=request.collections,
                request=request,
                reranker=self.rt.reranker,
            )

    def list_collections(self) -> CollectionList:
        from services.collections.service import list_collections
        from services.db import session_scope

        principal = self.principal()
        principal.require(Scope.read)
        with session_scope(self.rt.session_factory) as session:
            return CollectionList(items=[c for c in list_collections(session) if principal.sees(c.name)])

    def get_document(
        self, collection: str, *, document_id: uuid.UUID | str | None = None, external_id: str | None = None
    ) -> DocumentOut:
        from services.db import session_scope
        from services.documents import service

        self.principal().require(Scope.read, [collection])
        with session_scope(self.rt.session_factory) as session:
            if document_id is not None:
                document = service.get_document(
                    session, collection_name=collection, document_id=uuid.UUID(str(document_id))
                )
            elif external_id is not None:
                document = service.get_document_by_external_id(
                    session, collection_name=collection, external_id=external_id
                )
            else:
                raise InvalidInput("give document_id or external_id")
            return DocumentOut.of(document)


def _validated(model: Any, values: dict[str, Any]) -> Any:
    try:
        return model.model_validate({k: v for k, v in values.items() if v is not None})
    except ValidationError as exc:
        raise InvalidInput(describe_validation_errors(exc.errors())) from None


_SDK_LOCK = threading.Lock()
Mode = Literal["hybrid", "sparse", "dense"]
Collections = Annotated[
    list[str],
    Field(
        min_length=1, max_length=20, description="검색할 컬렉션 이름들 (collections to search; see list_collections)."
    ),
]


def build_mcp_server(backend: Backend) -> MCPServer:
    """An MCP server whose tools call `backend`."""
    import mcp.server.mcpserver.server as sdk
    from mcp.server.mcpserver import MCPServer
    from mcp.server.mcpserver.exceptions import ToolError

    # The SDK's constructor configures the root logger (logging.basicConfig with a rich handler);
    # logging is the application's to set up (`saekin serve`, `saekin mcp`), so it is skipped here.
    with _SDK_LOCK:
        configure, sdk.configure_logging = sdk.configure_logging, lambda *a, **k: None
        try:
            server: MCPServer = MCPServer("saekin", title="Saekin (색인)", instructions=INSTRUCTIONS, version="0.1.0")
        finally:
            sdk.configure_logging = configure

    def call(fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except SaekinError as exc:  # the service's message, not a traceback
            raise ToolError(f"{exc.code}: {exc.message}") from None
        except Exception as exc:
            message = getattr(exc, "message", None) or str(exc)
            raise ToolError(f"{getattr(exc, 'code', 'error')}: {message}") from None

    @server.tool(
        title="한국어 문서 검색 (search)",
        description="한국어 문서에서 질문과 관련된 구절을 순위대로 찾습니다. Ranked passages for a question from "
        "one or more collections, with title, page, heading and score. Korean particles and endings "
        "are handled (서울은/서울에서 → 서울).",
    )
    def search(
        query: Annotated[str, Field(min_length=1, max_length=4000, description="질문 또는 검색어 (question).")],
        collections: Collections,
        top_k: Annotated[int, Field(ge=1, le=50, description="결과 개수 (how many passages).")] = 5,
        mode: Annotated[Mode, Field(description="hybrid (default), sparse (keywords), dense (meaning).")] = "hybrid",
        filter: Annotated[
            dict[str, Any] | None,
            Field(description='메타데이터 필터, e.g. {"metadata": {"year": {"gte": 2020}}}.'),
        ] = None,
    ) -> dict[str, Any]:
        response = call(backend.search, collections, query, top_k=top_k, mode=mode, filter=filter, highlight=False)
        return {
            "results": [
                {
                    "rank": h.rank,
                    "score": h.score,
                    "collection": h.collection,
                    "document_id": str(h.document_id),
                    "external_id": h.external_id,
                    "title": h.title,
                    "page": h.page,
                    "heading": h.heading,
                    "text": h.text,
                }
                for h in response.results
            ],
            "mode": response.mode,
            "note": response.note,
        }

    @server.tool(
        title="답변용 인용 문맥 (get_context)",
        description="질문에 답하기 위한 인용 문맥을 토큰 예산 안에서 만듭니다. Cited context for answering a "
        "question within max_tokens: passages start with [n] title · p. N · heading; cite them as [n]. "
        "The citations list says where each passage comes from.",
    )
    def get_context(
        query: Annotated[str, Field(min_length=1, max_length=4000, description="질문 (the question to answer).")],
        collections: Collections,
        max_tokens: Annotated[int, Field(ge=1, le=32768, description="문맥의 토큰 예산 (token budget).")] = 2000,
        neighbors: Annotated[int, Field(ge=0, le=5, description="앞뒤로 덧붙일 이웃 청크 수.")] = 1,
        tokenizer: Annotated[
            Literal["o200k_base", "cl100k_base", "embedding"], Field(description="How tokens are counted.")
        ] = "o200k_base",
        mode: Annotated[Mode, Field(description="hybrid (default), sparse, dense.")] = "hybrid",
    ) -> dict[str, Any]:
        response = call(
            backend.context,
            collections,
            query,
            max_tokens=max_tokens,
            neighbors=neighbors,
            tokenizer=tokenizer,
            mode=mode,
        )
        return response.model_dump(mode="json")

    @server.tool(
        title="컬렉션 목록 (list_collections)",
        description="검색할 수 있는 컬렉션과 문서 수를 보여 줍니다. Collections with their model and document counts.",
    )
    def list_collections() -> dict[str, Any]:
        return call(backend.list_collections).model_dump(mode="json")

    @server.tool(
        title="문서 정보 (get_document)",
        description="문서의 상태와 메타데이터를 보여 줍니다. A document's status, title and metadata, by Saekin's "
        "document_id or by your external_id.",
    )
    def get_document(
        collection: Annotated[str, Field(description="컬렉션 이름 (collection).")],
        document_id: Annotated[str | None, Field(description="Saekin의 문서 id (UUID).")] = None,
        external_id: Annotated[str | None, Field(description="업로드할 때 준 id (your id).")] = None,
    ) -> dict[str, Any]:
        if (document_id is None) == (external_id is None):
            raise ToolError("give document_id or external_id")
        return call(backend.get_document, collection, document_id=document_id, external_id=external_id).model_dump(
            mode="json"
        )

    return server


class _RequireApiKey:
    """ASGI wrapper: `/mcp` takes the same API keys as the HTTP API (the app's Authenticator); the
    caller's principal is what the tools check collections against, and its request rate counts."""

    def __init__(self, app: Any, settings: Settings) -> None:
        self.app = app
        self.settings = settings

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        from starlette.concurrency import run_in_threadpool
        from starlette.responses import JSONResponse

        from services.api.errors import error_body
        from services.auth.limits import retry_after

        state = scope["app"].state
        principal = (scope.get("state") or {}).get("principal")  # the request guard's answer
        if not isinstance(principal, Principal):
            headers = dict(scope.get("headers") or [])
            scheme, _, token = headers.get(b"authorization", b"").decode("latin-1").partition(" ")
            token = token.strip() if scheme.lower() == "bearer" else ""
            hit, principal = state.authenticator.cached(token or None)
            if not hit:
                principal = await run_in_threadpool(state.authenticator.authenticate, token or None)
        response = None
        if principal is None:
            response = JSONResponse(
                error_body("unauthorized", "missing or invalid API key: send Authorization: Bearer <key>"),
                status_code=401,
                headers={"WWW-Authenticate": "Bearer"},
            )
        elif principal.rate_limit_rps and (
            wait := state.limits.take_request(principal.limit_key, principal.rate_limit_rps)
        ):
            response = JSONResponse(
                error_body(
                    "rate_limited", f"this API key is limited to {principal.rate_limit_rps:g} requests per second"
                ),
                status_code=429,
                headers={"Retry-After": str(retry_after(wait))},
            )
        if response is not None:
            await response(scope, receive, send)
            return
        token_var = current_principal.set(principal)
        try:
            await self.app(scope, receive, send)
        finally:
            current_principal.reset(token_var)


def mount_mcp(app: FastAPI, server: MCPServer, settings: Settings) -> None:
    """Serve `server` over streamable HTTP at `/mcp` of `app`, behind the API keys like every route
    (the request guard, services/api/guard.py). The app's lifespan must run `server.session_manager.run()`."""
    from starlette.routing import Route

    # Stateless: every request stands alone (no server-side session to lose on a restart or to
    # share between API processes); JSON answers instead of SSE streams.
    sub = server.streamable_http_app(
        streamable_http_path="/mcp", stateless_http=True, json_response=True, host=settings.host
    )
    for route in sub.routes:
        if isinstance(route, Route) and route.path == "/mcp":
            app.router.routes.append(Route("/mcp", endpoint=_RequireApiKey(route.endpoint, settings)))
