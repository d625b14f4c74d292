"""Liveness and readiness."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from sqlalchemy import text

from services.api.deps import RuntimeDep
from services.api.guard import is_loopback_client

router = APIRouter(tags=["health"])


class Readiness(BaseModel):
    status: str = Field(..., description="ready or not_ready.")
    checks: dict[str, str] = Field(
        ..., description="Each component (database, index, broker, model): ok, loading or failed."
    )
    details: dict[str, str] | None = Field(
        None,
        description="Why a component failed (the error text): only for callers with an API key, or from this "
        "machine when the service runs without keys.",
    )


@router.get("/healthz")
def healthz() -> dict:
    """The process is alive."""
    return {"status": "ok"}


@router.get(
    "/readyz",
    response_model=Readiness,
    responses={503: {"model": Readiness, "description": "a component is not ready (see checks)"}},
)
def readyz(request: Request, rt: RuntimeDep) -> JSONResponse:
    """Database, vector index, broker (production) and query model are usable.

    Anyone may ask whether the service is ready and which component is not; the error text (hosts,
    ports, paths) is shown only to authenticated callers.
    """
    checks: dict[str, str] = {}
    details: dict[str, str] = {}

    def check(name: str, probe) -> None:
        try:
            probe()
            checks[name] = "ok"
        except Exception as exc:  # each failure is reported, not raised
            checks[name] = "failed"
            details[name] = str(exc)[:300]

    def database() -> None:
        with rt.engine.connect() as conn:
            conn.execute(text("SELECT 1"))

    check("database", database)
    check("index", lambda: rt.index.collection_exists("saekin_readiness_probe"))
    ping = getattr(request.app.state.dispatcher, "ping", None)
    if ping is not None:
        check("broker", ping)
    if rt.model_failure is not None:
        checks["model"], details["model"] = "failed", rt.model_failure
    elif not request.app.state.model_ready.is_set():
        checks["model"], details["model"] = "loading", "the query model is still loading"
    else:
        checks["model"] = "ok"
    ready = all(v == "ok" for v in checks.values())
    body: dict = {"status": "ready" if ready else "not_ready", "checks": checks}
    if details and _may_see_details(request):
        body["details"] = details
    return JSONResponse(body, status_code=200 if ready else 503)


def _may_see_details(request: Request) -> bool:
    principal = getattr(request.state, "principal", None)
    if principal is None:
        return False
    # Without keys every caller is anonymous: details for this machine only (`make run`).
    return principal.authenticated or is_loopback_client(request.scope)
