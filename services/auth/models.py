"""The api_keys table: a key's hash (never the key), scope, collection patterns and limits."""

from __future__ import annotations

import enum
import uuid
from datetime import datetime

from sqlalchemy import JSON, BigInteger, Enum, Float, String, Uuid
from sqlalchemy.orm import Mapped, mapped_column

from services.db import Base
from services.documents.models import UtcDateTime, utcnow


class Scope(str, enum.Enum):
    """What a key may do; each scope includes the ones before it."""

    read = "read"  # search, context, get, list (and /v1/embeddings, /v1/rerank)
    write = "write"  # + upload and delete documents
    admin = "admin"  # + keys, collection settings, collection deletion, /metrics

    @property
    def rank(self) -> int:
        return _RANKS[self]

    def includes(self, other: Scope) -> bool:
        return self.rank >= other.rank


_RANKS = {Scope.read: 0, Scope.write: 1, Scope.admin: 2}


class ApiKey(Base):
    __tablename__ = "api_keys"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    name: Mapped[str] = mapped_column(String(128))
    # The key's first characters, shown by `saekin keys list` so a person can tell keys apart.
    prefix: Mapped[str] = mapped_column(String(16))
    # sha256 of the whole key (a 256-bit random secret, so a fast hash is enough; no salt needed).
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    scope: Mapped[Scope] = mapped_column(Enum(Scope, name="api_key_scope", native_enum=False, length=16))
    # Collection names or glob patterns (fnmatch: *, ?, [seq]); ["*"] is every collection.
    collections: Mapped[list[str]] = mapped_column(JSON)
    # None: the service's defaults (SAEKIN_KEY_RATE_LIMIT_RPS, SAEKIN_KEY_UPLOAD_MB_PER_DAY).
    rate_limit_rps: Mapped[float | None] = mapped_column(Float, nullable=True)
    upload_bytes_per_day: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
