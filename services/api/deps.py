"""Typed dependencies shared by the routers."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Header, HTTPException, Request
from sqlalchemy.orm import Session

from config.settings import Settings
from services.db import session_scope
from services.dispatch import Dispatcher
from services.runtime import Runtime

# Dependencies that do no I/O are `async def`: FastAPI runs plain `def` ones in its thread
# pool, a hand-off that costs more than they do.


async def get_runtime(request: Request) -> Runtime:
    return request.app.state.runtime


async def get_dispatcher(request: Request) -> Dispatcher:
    return request.app.state.dispatcher


async def get_settings_dep(request: Request) -> Settings:
    return request.app.state.runtime.settings


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]
DispatcherDep = Annotated[Dispatcher, Depends(get_dispatcher)]
SettingsDep = Annotated[Settings, Depends(get_settings_dep)]


def get_session(rt: RuntimeDep) -> Iterator[Session]:
    """A session per request: committed when the route returns, rolled back on error."""
    with session_scope(rt.session_factory) as session:
        yield session


SessionDep = Annotated[Session, Depends(get_session)]


async def require_api_key(settings: SettingsDep, authorization: Annotated[str | None, Header()] = None) -> None:
    """With SAEKIN_API_KEYS set, every /v1 route needs `Authorization: Bearer <key>`."""
    if not settings.api_keys:
        return
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not any(
        secrets.compare_digest(token.encode(), k.encode()) for k in settings.api_keys
    ):
        raise HTTPException(
            401, "missing or invalid API key: send Authorization: Bearer <key>", headers={"WWW-Authenticate": "Bearer"}
        )
