"""Listing, describing and deleting collections (documents, chunks and the Qdrant collection)."""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable, Sequence

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session, sessionmaker

from services.collections.schemas import CollectionOut, DocumentCounts, ReindexStatus
from services.db import session_scope
from services.documents.lifecycle import reindex_target
from services.documents.models import Chunk, Collection, Document, index_name, live_layout, physical_index_name, utcnow
from services.documents.service import get_collection
from services.errors import InvalidInput
from services.index.base import VectorIndex
from services.index.query import FilterIndexKind
from services.ingest.analyzer import analyzer_version
from services.search.schemas import SearchDefaults

log = logging.getLogger(__name__)

# Documents deleted per transaction: a large collection is removed in steps that each hold the
# database's locks briefly (SQLite: the whole file) instead of one long transaction.
DELETE_BATCH = 500


def describe(session: Session, collections: Sequence[Collection]) -> list[CollectionOut]:
    """Collections with their document counts by status and searchable chunk counts (two queries)."""
    ids = [c.id for c in collections]
    if not ids:
        return []
    d, ch = Document.__table__.c, Chunk.__table__.c
    counts: dict[uuid.UUID, DocumentCounts] = {i: DocumentCounts() for i in ids}
    for collection_id, status, n in session.execute(
        select(d.collection_id, d.status, func.count())
        .where(d.collection_id.in_(ids))
        .group_by(d.collection_id, d.status)
    ):
        setattr(counts[collection_id], status.value if hasattr(status, "value") else str(status), n)
        counts[collection_id].total += n
    chunks: dict[uuid.UUID, int] = dict(
        session.execute(
            select(d.collection_id, func.count())
            .select_from(Chunk.__table__.join(Document.__table__, ch.document_id == d.id))
            .where(d.collection_id.in_(ids), ch.generation == d.indexed_generation, ch.layout == live_layout())
            .group_by(d.collection_id)
        ).all()
    )
    return [
        CollectionOut(
            name=c.name,
            status="deleting" if c.deleting_at is not None else "ready",
            profile=c.profile,
            model=c.model,
            model_sha256=c.model_sha256,
            created_at=c.created_at,
            documents=counts[c.id],
            chunk_count=chunks.get(c.id, 0),
            search_defaults=SearchDefaults.model_validate(c.search_defaults or {}),
            filter_indexes=c.filter_indexes or {},
            analyzer_version=c.analyzer_version,
            analyzer_current=c.analyzer_version == analyzer_version(),
            index_name=index_name(c),
            reindex=ReindexStatus.model_validate(c.reindex) if c.reindex else None,
        )
        for c in collections
    ]


def list_collections(session: Session) -> list[CollectionOut]:
    """Every collection, by name."""
    return describe(session, list(session.scalars(select(Collection).order_by(Collection.name))))


def get_collection_out(session: Session, *, name: str) -> CollectionOut:
    """One collection, or NotFound."""
    return describe(session, [get_collection(session, name=name)])[0]


def declare_filter_indexes(
    session: Session,
    *,
    index: VectorIndex,
    name: str,
    declared: dict[str, FilterIndexKind],
    limit: int,
    dim: Callable[[Collection], int | None],
) -> None:
    """Record the payload indexes the collection `name` declares (metadata key -> kind) and make
    them on its index and on the one a running reindex is writing, dropping those of keys no
    longer declared. InvalidInput above `limit`, the limit of indexes made on a filter's first
    use, which declared ones count against. `dim(collection)`: the dense width to create the
    index with when no document was embedded yet (so the indexes exist before its first point),
    or None to leave that to the embed stage; a reindex declares them on its new index
    (reindex.py)."""
    if len(declared) > limit:
        raise InvalidInput(
            f"{len(declared)} filter indexes declared, at most {limit} (SAEKIN_INDEX_FILTER_INDEX_LIMIT)",
            code="too_many_filter_indexes",
        )
    collection = get_collection(session, name=name)
    # Locked first (PostgreSQL): a reindex switching meanwhile is waited for, not written past.
    session.refresh(collection, with_for_update=True)
    before = list(collection.filter_indexes or {})
    collection.filter_indexes = declared or None
    session.flush()
    live = index_name(collection)
    for target in dict.fromkeys(n for n in (live, reindex_target(collection)) if n):
        if not index.collection_exists(target):
            width = dim(collection) if target == live else None
            if width is None:
                continue
            index.ensure_collection(target, dim=width)
        index.declare_filter_indexes(target, declared, undeclared=before)


class Deletions:
    """Collection deletions running in this process, so that a repeated DELETE joins the running one."""

    def __init__(self, wait_s: float = 2.0) -> None:
        self.wait_s = wait_s  # how long DELETE waits before answering 202
        self._lock = threading.Lock()
        self._running: dict[str, threading.Thread] = {}

    def delete(
        self, *, session_factory: sessionmaker[Session], index: VectorIndex, name: str, wait_s: float | None = None
    ) -> bool:
        """Delete the collection `name` (NotFound if there is none); True when done within
        `wait_s`, False while it goes on in the background.

        The collection is marked first (uploads are refused and searches find nothing from then
        on), then its documents go in batches (chunks and sources cascade), then the Qdrant
        collection, then the collection row. Every step can be repeated: a DELETE after a crash
        finishes the job.
        """
        with session_scope(session_factory) as session:
            collection = get_collection(session, name=name)
            if collection.deleting_at is None:
                session.execute(update(Collection).where(Collection.id == collection.id).values(deleting_at=utcnow()))
            target = (collection.id, collection_indexes(collection))
        with self._lock:
            thread = self._running.get(name)
            if thread is None or not thread.is_alive():
                thread = threading.Thread(
                    target=self._purge, args=(session_factory, index, name, *target), name=f"delete-{name}", daemon=True
                )
                self._running[name] = thread
                thread.start()
        thread.join(self.wait_s if wait_s is None else wait_s)
        return not thread.is_alive()

    def _purge(
        self,
        session_factory: sessionmaker[Session],
        index: VectorIndex,
        name: str,
        collection_id: uuid.UUID,
        qdrant_names: list[str],
    ) -> None:
        try:
            purge(session_factory=session_factory, index=index, collection_id=collection_id, index_names=qdrant_names)
        except Exception:
            log.exception("deleting collection %s failed; DELETE it again to finish", name)
        finally:
            with self._lock:
                if self._running.get(name) is threading.current_thread():
                    del self._running[name]


def collection_indexes(collection: Collection) -> list[str]:
    """Every Qdrant collection a collection holds: the live one (by its physical name, and the
    name searches address where that is an alias) and the one a running reindex is writing."""
    names = [
        physical_index_name(collection.name, collection.profile, collection.index_version or 1),
        index_name(collection),
        reindex_target(collection),
    ]
    return list(dict.fromkeys(n for n in names if n))


def purge(
    *, session_factory: sessionmaker[Session], index: VectorIndex, collection_id: uuid.UUID, index_names: list[str]
) -> None:
    """Remove a collection's documents (in batches), its Qdrant collections, then its row."""
    d = Document.__table__.c
    while True:
        with session_scope(session_factory) as session:
            ids = list(session.scalars(select(d.id).where(d.collection_id == collection_id).limit(DELETE_BATCH)))
            if not ids:
                break
            session.execute(delete(Document).where(Document.id.in_(ids)))
    for name in index_names:
        index.drop_collection(name)
    with session_scope(session_factory) as session:
        session.execute(delete(Collection).where(Collection.id == collection_id))
