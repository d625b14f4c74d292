"""Liveness and readiness."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from sqlalchemy import text

from services.api.deps import RuntimeDep

router = APIRouter(tags=["health"])


@router.get("/healthz")
def healthz() -> dict:
    """The process is alive."""
    return {"status": "ok"}


@router.get("/readyz")
def readyz(request: Request, rt: RuntimeDep) -> JSONResponse:
    """Database, vector index, broker (production) and query model are usable."""
    checks: dict[str, str] = {}

    def check(name: str, probe) -> None:
        try:
            probe()
            checks[name] = "ok"
        except Exception as exc:  # each failure is reported, not raised
            checks[name] = f"error: {exc}"[:300]

    def database() -> None:
        with rt.engine.connect() as conn:
            conn.execute(text("SELECT 1"))

    check("database", database)
    check("index", lambda: rt.index.collection_exists("saekin_readiness_probe"))
    ping = getattr(request.app.state.dispatcher, "ping", None)
    if ping is not None:
        check("broker", ping)

    def model() -> None:
        if not request.app.state.model_ready.is_set():
            raise RuntimeError("query model is still loading")

    check("model", model)
    ready = all(v == "ok" for v in checks.values())
    return JSONResponse(
        {"status": "ready" if ready else "not_ready", "checks": checks}, status_code=200 if ready else 503
    )
