"""Typed dependencies shared by the routers."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Path, Request
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from sqlalchemy.orm import Session

from config.settings import Settings
from services.db import session_scope
from services.dispatch import Dispatcher
from services.documents.service import COLLECTION_NAME_PATTERN
from services.errors import InvalidInput
from services.runtime import Runtime

# Dependencies that do no I/O are `async def`: FastAPI runs plain `def` ones in its thread
# pool, a hand-off that costs more than they do.


async def get_runtime(request: Request) -> Runtime:
    return request.app.state.runtime


async def get_dispatcher(request: Request) -> Dispatcher:
    return request.app.state.dispatcher


async def get_settings_dep(request: Request) -> Settings:
    return request.app.state.runtime.settings


# A collection's name in a path: the pattern is in the OpenAPI schema, and a name outside it gets
# the same 422 (invalid_collection_name) as before (services/api/errors.py).
CollectionName = Annotated[
    str,
    Path(
        pattern=COLLECTION_NAME_PATTERN,
        max_length=63,
        description="1-63 lower-case letters, digits, '-' or '_', starting with a letter or digit.",
    ),
]

RuntimeDep = Annotated[Runtime, Depends(get_runtime)]
DispatcherDep = Annotated[Dispatcher, Depends(get_dispatcher)]
SettingsDep = Annotated[Settings, Depends(get_settings_dep)]


def get_session(rt: RuntimeDep) -> Iterator[Session]:
    """A session per request: committed when the route returns, rolled back on error."""
    with session_scope(rt.session_factory) as session:
        yield session


SessionDep = Annotated[Session, Depends(get_session)]


async def reject_unknown_query_params(request: Request) -> None:
    """422 for query parameters the route does not declare: a misspelt filter (`?externl_id=`)
    must not silently list or delete everything."""
    if not request.query_params:
        return
    route = request.scope.get("route")
    if not isinstance(route, APIRoute):
        return
    allowed = _query_names(route)
    unknown = sorted({k for k in request.query_params if k not in allowed})
    if unknown:
        takes = f"it takes {', '.join(sorted(allowed))}" if allowed else "it takes none"
        raise InvalidInput(
            f"unknown query parameter{'s' if len(unknown) > 1 else ''} {', '.join(unknown)} for "
            f"{request.method} {route.path}: {takes}",
            code="unknown_query_parameter",
        )


_QUERY_NAMES: dict[int, frozenset[str]] = {}


def _query_names(route: APIRoute) -> frozenset[str]:
    """Aliases of the query parameters of a route and all its dependencies (cached per route)."""
    names = _QUERY_NAMES.get(id(route))
    if names is None:
        found: set[str] = set()
        pending: list[Dependant] = [route.dependant]
        while pending:
            dependant = pending.pop()
            found.update(field.alias for field in dependant.query_params)
            pending.extend(dependant.dependencies)
        names = _QUERY_NAMES[id(route)] = frozenset(found)
    return names
