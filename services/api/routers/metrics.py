"""GET /metrics: Prometheus text exposition of the process metrics and the scrape-time collectors."""

from __future__ import annotations

import secrets
from typing import Annotated

from fastapi import APIRouter, Depends, FastAPI, Header, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry

from services.api.deps import SettingsDep, require_api_key
from services.observability.collectors import DocumentsCollector, QueueCollector
from services.observability.metrics import render
from services.runtime import Runtime

router = APIRouter(tags=["health"])


async def require_metrics_access(
    request: Request, settings: SettingsDep, authorization: Annotated[str | None, Header()] = None
) -> None:
    """With API keys configured, /metrics needs an admin key, or SAEKIN_METRICS_TOKEN (a token that
    opens /metrics only, for the Prometheus configuration). Metrics name every collection."""
    token = settings.metrics_token
    if token:
        scheme, _, given = (authorization or "").partition(" ")
        if scheme.lower() == "bearer" and secrets.compare_digest(given.encode(), token.encode()):
            return
    await require_api_key(settings, authorization)


@router.get(
    "/metrics",
    response_class=Response,
    dependencies=[Depends(require_metrics_access)],
    responses={200: {"content": {CONTENT_TYPE_LATEST: {}}, "description": "Prometheus text format"}},
)
def metrics(request: Request) -> Response:
    """Prometheus metrics: request latency per route and status, search and ingestion stages,
    documents by status per collection, queue depth, embedding tokens, loaded models."""
    return Response(render(request.app.state.metrics_registry), media_type=CONTENT_TYPE_LATEST)


def scrape_registry(app: FastAPI, rt: Runtime) -> CollectorRegistry:
    """The app's scrape-time collectors: documents from its database, its dispatcher's queues."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(DocumentsCollector(rt.engine))

    def depths() -> dict[str, int]:
        ask = getattr(app.state.dispatcher, "queue_depths", None)
        return ask() if ask is not None else {}

    registry.register(QueueCollector(depths))
    return registry
