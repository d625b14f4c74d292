"""Who a bearer token belongs to: SAEKIN_METRICS_TOKEN, a key of SAEKIN_API_KEYS, or a key in the
database; the answer is cached for a moment so that a request costs no database query."""

from __future__ import annotations

import hashlib
import secrets
import threading
import time

from sqlalchemy.orm import Session, sessionmaker

from config.settings import Settings
from services.auth.keys import any_live_key, find_key
from services.auth.models import Scope
from services.auth.principal import ANONYMOUS, Principal
from services.db import session_scope

# A revoked key stops working, and a new one starts, within this many seconds in every API process.
CACHE_TTL_S = 2.0
_CACHE_MAX = 10_000
_NO_TOKEN = "<none>"


class Authenticator:
    def __init__(self, settings: Settings, session_factory: sessionmaker[Session], *, ttl_s: float = CACHE_TTL_S):
        self.settings = settings
        self.session_factory = session_factory
        self.ttl_s = ttl_s
        self._cache: dict[str, tuple[float, Principal | None]] = {}
        self._lock = threading.Lock()

    def cached(self, token: str | None) -> tuple[bool, Principal | None]:
        """(True, the answer) when it is known without the database."""
        entry = self._cache.get(_cache_key(token))
        if entry is not None and entry[0] > time.monotonic():
            return True, entry[1]
        return False, None

    def authenticate(self, token: str | None) -> Principal | None:
        """The caller holding bearer `token` (None: no Authorization header), or None when refused.

        Without any key (none in SAEKIN_API_KEYS, none live in the database) every caller is let
        in as `anonymous` with every right. May query the database (call it off the event loop).
        """
        hit, principal = self.cached(token)
        if hit:
            return principal
        principal = self._authenticate(token)
        with self._lock:
            if len(self._cache) >= _CACHE_MAX:
                self._cache.clear()
            self._cache[_cache_key(token)] = (time.monotonic() + self.ttl_s, principal)
        return principal

    def forget(self) -> None:
        """Drop cached answers (after this process created or revoked a key)."""
        with self._lock:
            self._cache.clear()

    def _authenticate(self, token: str | None) -> Principal | None:
        s = self.settings
        if token:
            metrics = s.metrics_token and secrets.compare_digest(token.encode(), s.metrics_token.encode())
            found: Principal | None = None
            for position, key in enumerate(s.api_keys):  # every key compared: no early exit to time
                if secrets.compare_digest(token.encode(), key.encode()):
                    found = self._env_key(position)
            if found is not None:
                return found
            if metrics:
                return Principal(name="metrics-token", scope=Scope.read, collections=(), metrics_only=True)
            with session_scope(self.session_factory) as session:
                stored = find_key(session, token)
                if stored is not None:
                    return Principal(
                        name=stored.name,
                        scope=stored.scope,
                        collections=tuple(stored.collections),
                        key_id=stored.id,
                        rate_limit_rps=stored.rate_limit_rps
                        if stored.rate_limit_rps is not None
                        else s.key_rate_limit_rps,
                        upload_bytes_per_day=stored.upload_bytes_per_day
                        if stored.upload_bytes_per_day is not None
                        else s.key_upload_bytes_per_day,
                    )
                if s.api_keys or any_live_key(session):
                    return None
            return ANONYMOUS  # an open service ignores tokens
        if s.api_keys:
            return None
        with session_scope(self.session_factory) as session:
            return None if any_live_key(session) else ANONYMOUS

    def _env_key(self, position: int) -> Principal:
        """A key of SAEKIN_API_KEYS: admin of every collection, with the default limits."""
        s = self.settings
        return Principal(
            name=f"SAEKIN_API_KEYS[{position}]",
            scope=Scope.admin,
            rate_limit_rps=s.key_rate_limit_rps,
            upload_bytes_per_day=s.key_upload_bytes_per_day,
        )


def _cache_key(token: str | None) -> str:
    # Hashed: the cache holds no plain keys.
    return hashlib.sha256(token.encode()).hexdigest() if token else _NO_TOKEN
