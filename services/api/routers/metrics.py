"""GET /metrics: Prometheus text exposition of the process metrics and the scrape-time collectors."""

from __future__ import annotations

from fastapi import APIRouter, FastAPI, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry

from services.api.auth import PrincipalDep
from services.api.errors import error_responses
from services.auth.principal import Forbidden
from services.observability.collectors import DocumentsCollector, QueueCollector
from services.observability.metrics import render
from services.runtime import Runtime

# With keys configured /metrics needs an admin key of every collection, or SAEKIN_METRICS_TOKEN (a
# token that opens /metrics only, for the Prometheus configuration): metrics name every collection.
router = APIRouter(tags=["health"])


@router.get(
    "/metrics",
    response_class=Response,
    responses={
        200: {"content": {CONTENT_TYPE_LATEST: {}}, "description": "Prometheus text format"},
        **error_responses(),
    },
)
def metrics(request: Request, principal: PrincipalDep) -> Response:
    """Prometheus metrics: request latency per route and status, search and ingestion stages,
    documents by status per collection, queue depth, embedding tokens, loaded models."""
    if not (principal.metrics_only or principal.all_collections):
        raise Forbidden("/metrics names every collection: it needs an admin key for '*'", code="insufficient_scope")
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
