"""Who is calling, and what it may do: a key's scope and the collections it may see.

Tenant isolation answers 404, never 403, for a collection the key may not see: the answer is the
one a missing collection gets, so that names do not leak. A key that sees a collection but has too
small a scope for the operation gets 403 naming the scope it needs.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase

from services.auth.models import Scope
from services.documents.service import collection_not_found
from services.errors import SaekinError

ALL_COLLECTIONS = ("*",)


class Forbidden(SaekinError):
    code = "forbidden"
    http_status = 403


@dataclass(frozen=True)
class Principal:
    """The caller: an API key from the database, a key of SAEKIN_API_KEYS (admin, every
    collection), or anyone when no key is configured at all (`anonymous`, every right)."""

    name: str
    scope: Scope
    collections: tuple[str, ...] = ALL_COLLECTIONS
    key_id: uuid.UUID | None = None  # database keys
    rate_limit_rps: float | None = None
    upload_bytes_per_day: int | None = None
    metrics_only: bool = False  # SAEKIN_METRICS_TOKEN: /metrics and nothing else

    @property
    def authenticated(self) -> bool:
        """A key was given and accepted (not the open service's anonymous caller)."""
        return self is not ANONYMOUS and self.name != "anonymous"

    @property
    def all_collections(self) -> bool:
        return "*" in self.collections

    @property
    def limit_key(self) -> str:
        """What the request and upload limits count against."""
        return str(self.key_id) if self.key_id else self.name

    def sees(self, collection: str) -> bool:
        """The key may see `collection` (a name or glob pattern matches it, case-sensitively)."""
        return not self.metrics_only and any(fnmatchcase(collection, p) for p in self.collections)

    def can(self, scope: Scope) -> bool:
        return not self.metrics_only and self.scope.includes(scope)

    def require(self, scope: Scope, collections: Iterable[str] = ()) -> None:
        """404 (as for a missing collection) for the first of `collections` the key may not see,
        then 403 when its scope is below `scope`."""
        for name in collections:
            if not self.sees(name):
                raise collection_not_found(name)
        if not self.can(scope):
            raise Forbidden(
                f"this API key's scope is {self.scope.value if not self.metrics_only else 'metrics'}; "
                f"this needs {scope.value}",
                code="insufficient_scope",
            )

    def visible(self, names: Sequence[str]) -> list[str]:
        return [n for n in names if self.sees(n)]


# No key configured anywhere: the service is open (it refuses to listen beyond loopback that way).
ANONYMOUS = Principal(name="anonymous", scope=Scope.admin)
