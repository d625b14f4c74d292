"""Access control of the HTTP API: who the caller is, what each route needs, per-key limits.

Every /v1 route (and /metrics) runs :func:`authorize`: it finds the caller's principal (the
request guard's, or from the bearer token), looks the route up in :data:`ROUTE_SCOPES` (a route
missing there is refused: new routes fail closed, and the tenant test over the route table
fails), answers 404 for a `{collection}` the key may not see, 403 for too small a scope, and 429
with Retry-After over the key's request rate. Routes that name collections in the body (multi-
collection search and context) check them with :func:`require_collections`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Annotated

from fastapi import Depends, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from services.auth.authn import Authenticator
from services.auth.limits import Limits, LocalLimits, retry_after
from services.auth.models import Scope
from services.auth.principal import Forbidden, Principal
from services.errors import TooManyRequests

# Declares the bearer scheme in the OpenAPI document (Swagger's Authorize button); the token is
# checked by the Authenticator, not by this object (auto_error=False).
bearer_scheme = HTTPBearer(
    auto_error=False,
    description="An API key: `saekin keys create`, POST /v1/keys, or one of SAEKIN_API_KEYS.",
)

# (method, route template) → the scope it needs. Routes with {collection} also need the key to see it.
ROUTE_SCOPES: dict[tuple[str, str], Scope] = {
    ("GET", "/v1/collections"): Scope.read,  # listed: only the collections the key sees
    ("GET", "/v1/collections/{collection}"): Scope.read,
    ("PATCH", "/v1/collections/{collection}"): Scope.admin,
    ("DELETE", "/v1/collections/{collection}"): Scope.admin,
    ("POST", "/v1/collections/{collection}/reindex"): Scope.admin,  # (when the reindex route is served)
    ("POST", "/v1/collections/{collection}/documents"): Scope.write,
    ("GET", "/v1/collections/{collection}/documents"): Scope.read,
    ("DELETE", "/v1/collections/{collection}/documents"): Scope.write,
    ("GET", "/v1/collections/{collection}/documents/{document_id}"): Scope.read,
    ("GET", "/v1/collections/{collection}/documents/{document_id}/chunks"): Scope.read,
    ("DELETE", "/v1/collections/{collection}/documents/{document_id}"): Scope.write,
    ("POST", "/v1/collections/{collection}/search"): Scope.read,
    ("POST", "/v1/collections/{collection}/context"): Scope.read,
    ("POST", "/v1/search"): Scope.read,  # body collections: require_collections
    ("POST", "/v1/context"): Scope.read,  # body collections: require_collections
    ("POST", "/v1/embeddings"): Scope.read,  # no collection: any read key
    ("POST", "/v1/rerank"): Scope.read,
    ("GET", "/v1/keys"): Scope.admin,
    ("POST", "/v1/keys"): Scope.admin,
    ("DELETE", "/v1/keys/{key_id}"): Scope.admin,
    ("POST", "/v1/backup"): Scope.admin,
    ("GET", "/metrics"): Scope.admin,  # or SAEKIN_METRICS_TOKEN
}
# Routes about the whole service (every collection's data or names, or keys that could reach any
# collection): an admin key of every collection ('*') only.
WHOLE_SERVICE = {
    ("GET", "/v1/keys"),
    ("POST", "/v1/keys"),
    ("DELETE", "/v1/keys/{key_id}"),
    ("POST", "/v1/backup"),
    ("GET", "/metrics"),
}


UNAUTHORIZED = "missing or invalid API key: send Authorization: Bearer <key>"


def _token(request: Request) -> str | None:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None


async def principal_of(request: Request) -> Principal:
    """The caller, from the bearer token (cached answers need no thread); 401 when refused."""
    principal = getattr(request.state, "principal", None)  # the request guard's answer
    if isinstance(principal, Principal):
        return principal
    authenticator: Authenticator = request.app.state.authenticator
    token = _token(request)
    hit, found = authenticator.cached(token)
    if not hit:
        found = await run_in_threadpool(authenticator.authenticate, token)
    if found is None:
        raise HTTPException(401, UNAUTHORIZED, headers={"WWW-Authenticate": "Bearer"})
    request.state.principal = found
    return found


async def authorize(
    request: Request,
    _credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)] = None,
) -> Principal:
    """The route's access rule for the caller (see the module's docstring)."""
    principal = await principal_of(request)
    route_path = getattr(request.scope.get("route"), "path", "")
    needed = ROUTE_SCOPES.get((request.method, route_path))
    if needed is None:  # a route nobody gave a rule: refused, not open
        raise Forbidden(f"{request.method} {route_path or request.url.path} has no access rule", code="no_access_rule")
    if principal.metrics_only and route_path == "/metrics":
        return principal
    collection = request.path_params.get("collection")
    principal.require(needed, [collection] if collection is not None else ())
    if (request.method, route_path) in WHOLE_SERVICE and not principal.all_collections:
        raise Forbidden(
            f"{route_path} concerns every collection: it needs an admin key for '*'", code="insufficient_scope"
        )
    if principal.rate_limit_rps:
        if isinstance(request.app.state.limits, LocalLimits):
            check_request_rate(request, principal)
        else:  # a round trip to Redis: off the event loop
            await run_in_threadpool(check_request_rate, request, principal)
    return principal


PrincipalDep = Annotated[Principal, Depends(authorize)]


def require_collections(principal: Principal, names: Iterable[str]) -> None:
    """404 for the first named collection the key may not see (multi-collection routes)."""
    principal.require(Scope.read, names)


def check_request_rate(request: Request, principal: Principal) -> None:
    rps = principal.rate_limit_rps
    if not rps:
        return
    limits: Limits = request.app.state.limits
    wait = limits.take_request(principal.limit_key, rps)
    if wait is not None:
        raise TooManyRequests(
            f"this API key is limited to {rps:g} requests per second",
            retry_after_s=retry_after(wait),
            code="rate_limited",
        )


def check_upload_room(request: Request, principal: Principal, declared: int | None) -> None:
    """429 before reading an upload whose declared size is over what the key may still upload today."""
    per_day = principal.upload_bytes_per_day
    if not per_day or declared is None:
        return
    room, wait = request.app.state.limits.upload_room(principal.limit_key, per_day)
    if declared > room:
        raise TooManyRequests(
            f"this API key may upload {per_day} bytes a day; {max(room, 0)} are left today",
            retry_after_s=retry_after(wait),
            code="upload_quota",
        )


def take_upload(request: Request, principal: Principal, nbytes: int) -> None:
    """Count an upload's bytes against the key's day; 429 when they do not fit."""
    per_day = principal.upload_bytes_per_day
    if not per_day:
        return
    wait = request.app.state.limits.take_upload(principal.limit_key, nbytes, per_day)
    if wait is not None:
        raise TooManyRequests(
            f"this API key may upload {per_day} bytes a day; this upload does not fit",
            retry_after_s=retry_after(wait),
            code="upload_quota",
        )
