"""The request guard: the API key is checked before any body is read, and every JSON body is capped.

A pure ASGI middleware in front of every route (the /v1 routers, /mcp, and whatever is added
later), so that a client without a key gets 401 at once and a body over the limit 413 while it
streams, whatever the route would have done with it: FastAPI parses a JSON body before any
dependency runs, so a 300 MB body without a key used to be read and parsed to answer 401.

Who the caller is comes from one hook (`authenticate`: the app's Authenticator, services/auth); the
middleware puts its answer (a Principal) in ``request.state.principal`` for routes that need to know.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from config.settings import Settings
from services.auth.principal import Principal

UNAUTHORIZED_MESSAGE = "missing or invalid API key: send Authorization: Bearer <key>"

# Paths that stay open without a key: liveness and readiness (its public part), the console's page
# and assets (the page asks for the key itself), and the API's documentation.
PUBLIC_PATHS = frozenset(
    {"/", "/healthz", "/readyz", "/console", "/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json"}
)
PUBLIC_PREFIXES = ("/console/static/", "/docs-assets/")
# Uploads stream against their own limit (SAEKIN_MAX_UPLOAD_MB), checked by the upload route.
UPLOAD_PATH = re.compile(r"/v1/collections/[^/]+/documents/?")


# Who the caller is: services.auth.authn.Authenticator, through the app's hook (a coroutine, so that a
# database lookup runs off the event loop); None refuses the request.
Authenticate = Callable[[Settings, str | None], Awaitable[Principal | None]]


def bearer_token(scope: Scope) -> str | None:
    """The token of an `Authorization: Bearer <token>` header, if there is one."""
    for name, value in scope.get("headers") or ():
        if name == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            return token.strip() if scheme.lower() == "bearer" and token.strip() else None
    return None


def is_loopback_client(scope: Scope) -> bool:
    """The request comes from this machine (or an in-process test client)."""
    client = scope.get("client")
    if not client:
        return True
    host = client[0]
    if host in ("testclient", "localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class BodyTooLarge(HTTPException):
    """Raised while a body streams past its limit. An HTTPException, so FastAPI's body parser lets it
    through to the error handler (any other exception there would become a 400)."""

    def __init__(self, limit: int, received: int | None = None) -> None:
        size = f"{received} bytes" if received is not None else f"more than {limit} bytes"
        super().__init__(
            413, f"request body of {size} is over the limit of {limit} bytes (SAEKIN_MAX_JSON_MB for JSON bodies)"
        )
        self.limit = limit


class RequestGuard:
    """ASGI middleware: authenticate from the headers alone, then cap the body while it streams."""

    def __init__(self, app: ASGIApp, *, settings: Settings, authenticate: Authenticate) -> None:
        self.app = app
        self.settings = settings
        self.authenticate = authenticate

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        principal = await self.authenticate(self.settings, bearer_token(scope))
        state = scope.setdefault("state", {})
        state["principal"] = principal
        if principal is None and not _is_public(path):
            await _error(
                scope, receive, send, 401, "unauthorized", UNAUTHORIZED_MESSAGE, {"WWW-Authenticate": "Bearer"}
            )
            return
        if UPLOAD_PATH.fullmatch(path) and scope["method"] == "POST":
            await self.app(scope, receive, send)
            return
        limit = self.settings.max_json_bytes
        declared = _content_length(scope)
        if declared is not None and declared > limit:
            exc = BodyTooLarge(limit, declared)
            await _error(scope, receive, send, 413, "payload_too_large", exc.detail)
            return
        await self._capped(scope, receive, send, limit)

    async def _capped(self, scope: Scope, receive: Receive, send: Send, limit: int) -> None:
        """Run the app with a receive that counts the bytes (a chunked body declares no length)."""
        received = 0
        started = False

        async def counted_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(limit)
            return message

        async def watched_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counted_receive, watched_send)
        except BodyTooLarge as exc:  # read outside FastAPI's handlers (a mounted app): answered here
            if started:
                raise
            await _error(scope, receive, send, 413, "payload_too_large", exc.detail)


def _is_public(path: str) -> bool:
    return path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIXES)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers") or ():
        if name == b"content-length":
            return int(value) if value.isdigit() else None
    return None


async def _error(
    scope: Scope, receive: Receive, send: Send, status: int, code: str, message: str, headers: Any = None
) -> None:
    """The API's error body (services/api/errors.py), sent without reading the request's body."""
    from services.api.errors import error_body

    headers = {**(headers or {}), "Connection": "close"}  # the unread body cannot be skipped
    await JSONResponse(error_body(code, message), status_code=status, headers=headers)(scope, receive, send)
