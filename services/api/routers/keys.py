"""API keys over HTTP: list, create (the plain key answered once) and revoke. Admin keys of every
collection only: a key limited to some collections could otherwise mint keys for others."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from services.api.auth import PrincipalDep
from services.api.deps import SessionDep
from services.api.errors import error_responses
from services.auth import keys
from services.auth.keys import PATTERN_REGEX
from services.auth.models import ApiKey, Scope
from services.auth.principal import Forbidden, Principal
from services.index.query import QUERY_TEXT_PATTERN

router = APIRouter(prefix="/v1/keys", tags=["keys"])

# A collection name or glob pattern (the characters of names, and * ? [ ] !), as keys.validate_patterns checks.
CollectionPattern = Annotated[str, StringConstraints(pattern=PATTERN_REGEX, min_length=1, max_length=128)]


class KeyIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(
        ...,
        min_length=1,
        max_length=128,
        pattern=QUERY_TEXT_PATTERN,  # not blank, no NUL
        description="Who or what the key is for.",
    )
    scope: Scope = Field(
        Scope.read,
        description="read: search, context, get, list; write: also upload and "
        "delete; admin: also keys, collection settings and deletion, /metrics.",
    )
    collections: list[CollectionPattern] = Field(
        ["*"], min_length=1, max_length=100, description="Collection names or glob patterns (e.g. hr-*); * is all."
    )
    rate_limit_rps: float | None = Field(
        None, gt=0, le=1_000_000, description="Requests per second; null: the service default."
    )
    upload_mb_per_day: float | None = Field(
        None, gt=0, le=1_000_000_000, description="Upload MB per UTC day; null: the service default."
    )


class KeyOut(BaseModel):
    id: uuid.UUID
    name: str
    prefix: str = Field(..., description="The key's first characters, to tell keys apart.")
    scope: Scope
    collections: list[str]
    rate_limit_rps: float | None
    upload_bytes_per_day: int | None
    created_at: datetime
    revoked_at: datetime | None

    @classmethod
    def of(cls, key: ApiKey) -> KeyOut:
        return cls(
            id=key.id,
            name=key.name,
            prefix=key.prefix,
            scope=key.scope,
            collections=list(key.collections),
            rate_limit_rps=key.rate_limit_rps,
            upload_bytes_per_day=key.upload_bytes_per_day,
            created_at=key.created_at,
            revoked_at=key.revoked_at,
        )


class KeyCreated(KeyOut):
    key: str = Field(..., description="The plain key: shown this once, stored only as a hash.")


class KeyList(BaseModel):
    items: list[KeyOut]


def _require_all_collections(principal: Principal) -> None:
    if not principal.all_collections:
        raise Forbidden("managing keys needs an admin key for every collection ('*')", code="insufficient_scope")


@router.get("", response_model=KeyList, responses=error_responses())
def list_keys(principal: PrincipalDep, session: SessionDep) -> KeyList:
    """The live keys (never their plain text)."""
    _require_all_collections(principal)
    return KeyList(items=[KeyOut.of(k) for k in keys.list_keys(session)])


@router.post("", status_code=201, response_model=KeyCreated, responses=error_responses())
def create_key(body: KeyIn, principal: PrincipalDep, session: SessionDep, request: Request) -> KeyCreated:
    """A new key; the answer holds the plain key, which is not stored and cannot be shown again."""
    _require_all_collections(principal)
    created = keys.create_key(
        session,
        name=body.name,
        scope=body.scope,
        collections=body.collections,
        rate_limit_rps=body.rate_limit_rps,
        upload_bytes_per_day=int(body.upload_mb_per_day * 1024 * 1024) if body.upload_mb_per_day else None,
    )
    session.commit()
    request.app.state.authenticator.forget()
    return KeyCreated(**KeyOut.of(created.key).model_dump(), key=created.plain)


@router.delete("/{key_id}", status_code=204, responses=error_responses(404))
def revoke_key(key_id: str, principal: PrincipalDep, session: SessionDep, request: Request) -> Response:
    """Revoke a key (by id, or its prefix): it stops working within seconds in every API process."""
    _require_all_collections(principal)
    keys.revoke_key(session, key_id)
    session.commit()
    request.app.state.authenticator.forget()
    return Response(status_code=204)
