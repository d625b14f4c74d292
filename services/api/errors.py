"""One place that turns errors into `{"error": {"code", "message"}}` answers."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from services.errors import InvalidInput, SaekinError, describe_validation_errors

log = logging.getLogger(__name__)


class ErrorDetail(BaseModel):
    code: str = Field(..., description="Stable machine-readable name, e.g. collection_not_found.")
    message: str = Field(..., description="What went wrong and, where it helps, what to do.")
    details: list[dict[str, Any]] | None = Field(None, description="Per-field problems of a 422.")


class ErrorBody(BaseModel):
    error: ErrorDetail


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` entries with the error body, for a route's documented failures."""
    meaning = {
        401: "missing or invalid API key (when keys are configured)",
        403: "the API key's scope is too small for this operation",
        404: "not found (also a collection the API key may not see)",
        409: "conflict (profile or model mismatch, concurrent change)",
        413: "body too large",
        415: "a file type Saekin cannot read, or a body that is neither multipart nor JSON",
        422: "invalid request: body, path or query parameters (including unknown ones)",
        429: "over the API key's request rate or daily upload bytes, or too many documents waiting for "
        "ingestion: retry after the Retry-After header's seconds",
        503: "a dependency (index, model) is unavailable",
    }
    return {s: {"model": ErrorBody, "description": meaning.get(s, "error")} for s in (401, 403, 422, 429, *statuses)}


def error_body(code: str, message: str, **extra) -> dict:
    return {"error": {"code": code, "message": message, **extra}}


def install_error_handlers(app: FastAPI) -> None:
    from services.documents.service import validate_collection_name

    @app.exception_handler(SaekinError)
    async def _domain(_: Request, exc: SaekinError) -> JSONResponse:
        retry_after = getattr(exc, "retry_after_s", None)
        headers = {"Retry-After": str(retry_after)} if retry_after is not None else None
        return JSONResponse(error_body(exc.code, exc.message), status_code=exc.http_status, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        for e in errors:  # a collection name outside the pattern: the answer validate_collection_name gives
            if tuple(e.get("loc", ()))[:2] == ("path", "collection"):
                try:
                    validate_collection_name(str(e.get("input", "")))
                except InvalidInput as problem:
                    return JSONResponse(error_body(problem.code, problem.message), status_code=422)
        details = [{"loc": list(e.get("loc", ())), "message": e.get("msg", "")} for e in errors]
        message = describe_validation_errors(errors) or "invalid request"
        return JSONResponse(error_body("invalid_request", message, details=details), status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 400:
            # FastAPI's and Starlette's body parsers (bytes that are not UTF-8, broken multipart, too
            # many parts): invalid input like any other, 422 as documented.
            return JSONResponse(
                error_body("malformed_body", f"the request body could not be read: {exc.detail}"), status_code=422
            )
        code = {401: "unauthorized", 404: "not_found", 405: "method_not_allowed", 413: "payload_too_large"}.get(
            exc.status_code, "http_error"
        )
        headers = getattr(exc, "headers", None)
        if exc.status_code == 405 and (allowed := _allowed_methods(request)):
            # Starlette's Allow names only the first route matching the path; several routes (GET,
            # PATCH and DELETE of one path) each take their own method.
            headers = {**(headers or {}), "Allow": ", ".join(allowed)}
        return JSONResponse(error_body(code, str(exc.detail)), status_code=exc.status_code, headers=headers)

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error")
        return JSONResponse(error_body("internal_error", "internal server error"), status_code=500)


def _allowed_methods(request: Request) -> list[str]:
    """Every method the API's schema lists for the request's path (its routes are matched by their
    templates; FastAPI nests included routers, whose matching is not public)."""
    import re

    methods: set[str] = set()
    path = request.scope.get("path", "")
    for template, operations in request.app.openapi().get("paths", {}).items():
        pattern = re.sub(r"\\\{[^}]+\\\}", "[^/]+", re.escape(template))
        if re.fullmatch(pattern, path):
            methods |= {m.upper() for m in operations if m in _HTTP_METHODS}
    if "GET" in methods:
        methods.add("HEAD")
    return sorted(methods)


_HTTP_METHODS = frozenset({"get", "put", "post", "delete", "options", "head", "patch", "trace"})
