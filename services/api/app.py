"""The FastAPI application factory."""

from __future__ import annotations

import logging
import threading
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI
from fastapi.concurrency import run_in_threadpool

from config.settings import Settings, get_settings
from services.api.auth import authorize
from services.api.deps import reject_unknown_query_params
from services.api.docs import install_docs
from services.api.errors import install_error_handlers
from services.api.guard import RequestGuard
from services.api.observe import ObserveRequests
from services.api.routers import backup, collections, context, documents, health, keys, metrics, openai_compat, search
from services.auth.authn import Authenticator
from services.auth.limits import Limits, LocalLimits, RedisLimits
from services.auth.principal import Principal
from services.collections.reindex import Reindexes
from services.collections.service import Deletions
from services.console import install_console
from services.dispatch import CeleryDispatcher, Dispatcher, InProcessDispatcher
from services.leases import Reaper
from services.mcp_server import RuntimeBackend, build_mcp_server, mount_mcp, principal_of_request
from services.runtime import Runtime

log = logging.getLogger(__name__)


def create_app(
    settings: Settings | None = None,
    *,
    runtime: Runtime | None = None,
    dispatcher: Dispatcher | None = None,
    warm_up: bool = True,
) -> FastAPI:
    """The API; embedded mode runs ingestion in-process, production mode only enqueues."""
    settings = settings or get_settings()
    if not logging.getLogger().handlers:  # a uvicorn worker process started by `saekin serve --workers N`
        from services.observability.logs import configure_logging

        configure_logging(settings.log_format, settings.log_level)
    mcp_backend = _LateRuntimeBackend()
    mcp_server = build_mcp_server(mcp_backend)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        rt = runtime or Runtime(settings)
        app.state.runtime = rt
        app.state.authenticator = Authenticator(settings, rt.session_factory)
        app.state.limits = _limits(settings)
        mcp_backend.rt = rt
        app.state.dispatcher = dispatcher or _dispatcher(settings, rt)
        reaper = _embedded_reaper(settings, rt, app.state.dispatcher) if dispatcher is None else None
        app.state.metrics_registry = metrics.scrape_registry(app, rt)
        app.state.deletions = Deletions()
        app.state.reindexes = Reindexes()
        app.state.model_ready = threading.Event()
        if warm_up:
            # Load the index, Kiwi and the query model in the background; /readyz says when done.
            threading.Thread(target=_warm_up, args=(rt, app.state.model_ready), daemon=True).start()
        else:
            app.state.model_ready.set()
        async with mcp_server.session_manager.run():
            yield
        if reaper is not None:
            reaper.close()
        app.state.dispatcher.close()
        if runtime is None:
            rt.close()

    app = FastAPI(
        title="Saekin",
        version="0.1.0",
        lifespan=lifespan,
        docs_url=None,  # /docs and /redoc: install_docs, with local assets instead of a CDN
        redoc_url=None,
        description="Korean document retrieval: upload documents, search them with morpheme + dense hybrid search.",
    )
    install_error_handlers(app)
    app.include_router(health.router, dependencies=[Depends(reject_unknown_query_params)])
    for router in (
        metrics.router,
        collections.router,
        documents.router,
        search.router,
        context.router,
        openai_compat.router,
        backup.router,
        keys.router,
    ):
        # authorize: the caller's key, the route's scope, the {collection} it may see, its request rate.
        app.include_router(router, dependencies=[Depends(authorize), Depends(reject_unknown_query_params)])
    mount_mcp(app, mcp_server, settings)
    install_docs(app)
    install_console(app)
    # Outermost but for Starlette's error middleware: no route reads a body before the key is checked.
    app.add_middleware(RequestGuard, settings=settings, authenticate=_authenticate_with(app))
    # Outside the guard: refused requests get their request id, access line and latency too.
    app.add_middleware(ObserveRequests)
    return app


class _LateRuntimeBackend(RuntimeBackend):
    """The MCP tools' backend, given the runtime when the app starts; each tool call acts for the
    key of its /mcp request."""

    def __init__(self) -> None:
        self.principal = principal_of_request


def _authenticate_with(app: FastAPI):
    """The request guard's hook: the app's Authenticator (SAEKIN_API_KEYS, SAEKIN_METRICS_TOKEN and
    the database's keys); a cached answer costs no thread hand-off."""

    async def authenticate(settings: Settings, token: str | None) -> Principal | None:
        authenticator: Authenticator = app.state.authenticator
        hit, principal = authenticator.cached(token)
        if hit:
            return principal
        return await run_in_threadpool(authenticator.authenticate, token)

    return authenticate


def _limits(settings: Settings) -> Limits:
    """Per-key limits counted in the broker's Redis in production (shared by every API process),
    in this process when embedded."""
    if settings.broker_url and settings.broker_url.startswith(("redis://", "rediss://", "unix://")):
        return RedisLimits(settings.broker_url)
    return LocalLimits()


def _dispatcher(settings: Settings, rt: Runtime) -> Dispatcher:
    """Celery in production; in the embedded service threads in this process."""
    if settings.broker_url:
        return CeleryDispatcher(settings.broker_url)
    return InProcessDispatcher(rt.prepare, rt.embed_waiting, prepare_threads=settings.prepare_threads)


def _embedded_reaper(settings: Settings, rt: Runtime, dispatcher: Dispatcher) -> Reaper | None:
    """The embedded service's reaper: at start it takes back everything the last process left
    queued or in progress, then it looks every SAEKIN_REAPER_INTERVAL_S. In production the
    workers run it (workers/tasks.py)."""
    if not isinstance(dispatcher, InProcessDispatcher):
        return None
    reaper = Reaper.from_settings(
        rt.engine,
        settings,
        dispatch=dispatcher.submit,
        request_embedding=dispatcher.request_embedding,
        backlog=dispatcher.backlog,
    )
    reaper.run_once(everything=True)
    return reaper.start()


def _warm_up(rt: Runtime, ready: threading.Event) -> None:
    try:
        rt.index.collection_exists("saekin_readiness_probe")
        rt.analyzer.query_vector("워밍업")
        rt.query_encoder.encode("워밍업 질의")
        _ = rt.model_ref  # the weights' hash, which uploads and dense searches check
        if rt.reranker is not None:  # configured: loaded now, not on the first search that reranks
            rt.reranker.warmup()
        ready.set()
    except Exception:
        # A model that cannot be loaded is remembered by the runtime (rt.model_failure): /readyz
        # says why, dense searches answer 503 with the reason at once, sparse ones keep working.
        log.exception("warm-up failed; /readyz reports the model as failed")
        if rt.model_failure is None:
            rt.note_warm_up_failure()
