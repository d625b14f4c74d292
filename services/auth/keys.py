"""Create, list and revoke API keys; find the key a bearer token belongs to.

A key is `sk_` + 43 URL-safe characters (256 random bits). Only its sha256 is stored: a key that
random cannot be guessed from its hash, so a fast hash without salt is enough, and lookup is one
indexed query. The plain key is returned once, by `create_key`.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from services.auth.models import ApiKey, Scope
from services.documents.models import utcnow
from services.errors import InvalidInput, NotFound

KEY_PREFIX = "sk_"
# A collection pattern: the characters of collection names plus the glob characters * ? [ ] !
PATTERN_REGEX = r"^[A-Za-z0-9_\-*?\[\]!.]{1,128}$"
_PATTERN = re.compile(PATTERN_REGEX)


def hash_key(plain: str) -> str:
    return hashlib.sha256(plain.encode()).hexdigest()


@dataclass(frozen=True)
class CreatedKey:
    key: ApiKey
    plain: str  # shown once


def validate_patterns(patterns: Sequence[str]) -> list[str]:
    """Collection names or glob patterns, at least one; 422 naming a malformed one."""
    cleaned = [p.strip() for p in patterns if p.strip()]
    if not cleaned:
        raise InvalidInput("give at least one collection name or pattern ('*' for all)", code="invalid_collections")
    for pattern in cleaned:
        if not _PATTERN.fullmatch(pattern):
            raise InvalidInput(
                f"collection pattern {pattern!r} is not a collection name or glob pattern (letters, digits, "
                "'-', '_', and * ? [ ])",
                code="invalid_collections",
            )
    return list(dict.fromkeys(cleaned))


def create_key(
    session: Session,
    *,
    name: str,
    scope: Scope,
    collections: Sequence[str],
    rate_limit_rps: float | None = None,
    upload_bytes_per_day: int | None = None,
) -> CreatedKey:
    """A new key; its plain text is in the result and nowhere else."""
    if not name.strip() or len(name) > 128:
        raise InvalidInput("a key needs a name of 1 to 128 characters", code="invalid_request")
    plain = KEY_PREFIX + secrets.token_urlsafe(32)
    key = ApiKey(
        name=name.strip(),
        prefix=plain[:10],
        key_hash=hash_key(plain),
        scope=scope,
        collections=validate_patterns(collections),
        rate_limit_rps=rate_limit_rps,
        upload_bytes_per_day=upload_bytes_per_day,
        created_at=utcnow(),
    )
    session.add(key)
    session.flush()
    return CreatedKey(key, plain)


def list_keys(session: Session, *, include_revoked: bool = False) -> list[ApiKey]:
    query = select(ApiKey).order_by(ApiKey.created_at)
    if not include_revoked:
        query = query.where(ApiKey.revoked_at.is_(None))
    return list(session.scalars(query))


def revoke_key(session: Session, key_id: str) -> ApiKey:
    """Revoke the key with this id (or an unambiguous start of it, or its prefix `sk_…`)."""
    key_id = key_id.strip()
    if key_id.startswith(KEY_PREFIX):
        matches = list(session.scalars(select(ApiKey).where(ApiKey.prefix == key_id[:10])))
    else:
        try:
            matches = [k] if (k := session.get(ApiKey, uuid.UUID(key_id))) else []
        except ValueError:
            matches = [k for k in session.scalars(select(ApiKey)) if str(k.id).startswith(key_id)] if key_id else []
    if len(matches) != 1:
        raise NotFound(
            f"no key {key_id!r}" if not matches else f"{key_id!r} names {len(matches)} keys: give more of the id",
            code="key_not_found",
        )
    key = matches[0]
    if key.revoked_at is None:
        key.revoked_at = utcnow()
        session.flush()
    return key


def find_key(session: Session, plain: str) -> ApiKey | None:
    """The live key whose hash is the token's, compared in constant time."""
    digest = hash_key(plain)
    key = session.scalar(select(ApiKey).where(ApiKey.key_hash == digest, ApiKey.revoked_at.is_(None)))
    if key is None or not secrets.compare_digest(key.key_hash, digest):
        return None
    return key


def any_live_key(session: Session) -> bool:
    return session.scalar(select(ApiKey.id).where(ApiKey.revoked_at.is_(None)).limit(1)) is not None
