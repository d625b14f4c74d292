"""Backups of the embedded default: the SQLite database and the Qdrant Edge shards, taken while the
service serves, and their restore into a data directory.

Consistency: every chunk the database backup calls searchable must have its point in the index
copy. Points are written before the publication that makes them searchable, and deleted after
it (stale generations) or before the deletion's commit (a deleted document). So:

1. writes to every shard are paused (searches go on): pending writes flushed;
2. the database is copied with SQLite's online backup API (one read transaction, one moment);
3. the shards are copied, then writes resume.

Publications committed after (2) leave extra points in the copy, which searches never show (a
hit counts only with its chunk row of the searchable generation). The one thing the pause cannot
order is a document whose points were deleted before (1) while its deletion committed after (2):
the backup then has its rows but not its points. The backup finds such chunks by reading the
copies back and marks their documents as waiting for the embed stage, so a restore (or the
service started on the restored directory) embeds them again from their stored chunk rows.

Production (PostgreSQL + a Qdrant server) is backed up with pg_dump and Qdrant snapshots, in
that order (README, Operating Saekin).
"""

from __future__ import annotations

import json
import logging
import shutil
import sqlite3
import time
import uuid
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Table, select, update

from services.datadir import DataDirLock
from services.db import make_engine
from services.documents.models import (
    Chunk,
    Collection,
    Document,
    DocumentStage,
    DocumentStatus,
    collection_index_name,
)
from services.errors import Conflict, InvalidInput

if TYPE_CHECKING:
    from services.runtime import Runtime

log = logging.getLogger(__name__)

MANIFEST = "saekin-backup.json"
DATABASE = "saekin.db"
INDEX_DIR = "qdrant"
_RETRIEVE_BATCH = 1024

_documents: Table = Document.__table__  # type: ignore[assignment]
_chunks: Table = Chunk.__table__  # type: ignore[assignment]
_collections: Table = Collection.__table__  # type: ignore[assignment]


@dataclass
class BackupManifest:
    created_at: str
    seconds: float
    paused_writes_s: float  # how long index writes waited
    collections: dict[str, dict[str, Any]] = field(default_factory=dict)  # name -> index, documents, chunks, points
    shards: list[str] = field(default_factory=list)
    reembed_documents: int = 0  # documents whose points were missing: embedded again on restore


def backup_embedded(*, database_path: Path, index: Any, destination: Path) -> BackupManifest:
    """Back up the embedded service's database (SQLite at `database_path`) and Qdrant Edge index
    (`index`, an EdgeIndex, serving meanwhile) into `destination` (new or empty)."""
    from services.index.edge import EdgeIndex

    if not isinstance(index, EdgeIndex):
        raise InvalidInput(
            "saekin backup is for the embedded default (Qdrant Edge); production: pg_dump and Qdrant snapshots",
            code="backup_not_embedded",
        )
    destination = Path(destination)
    if destination.exists() and any(destination.iterdir()):
        raise Conflict(f"{destination} is not empty: back up into a new directory", code="backup_exists")
    destination.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    paused: dict[str, float] = {}

    def copy_database() -> None:
        paused["at"] = time.perf_counter()
        source = sqlite3.connect(f"file:{database_path}?mode=ro", uri=True, timeout=30)
        target = sqlite3.connect(destination / DATABASE)
        try:
            source.backup(target)  # one read transaction: the database as of one moment
        finally:
            target.close()
            source.close()

    shards = index.snapshot(destination / INDEX_DIR, while_paused=copy_database)
    paused_s = time.perf_counter() - paused.get("at", time.perf_counter())
    manifest = BackupManifest(
        created_at=datetime.now(UTC).isoformat(),
        seconds=0.0,
        paused_writes_s=round(paused_s, 3),
        shards=shards,
    )
    _check_points(destination, manifest)
    manifest.seconds = round(time.perf_counter() - started, 3)
    # Written last: a directory without it is an unfinished backup, which restore refuses.
    (destination / MANIFEST).write_text(json.dumps(asdict(manifest), ensure_ascii=False, indent=2))
    log.info(
        "backup in %s: %d shards, %.1fs (writes paused %.2fs)", destination, len(shards), manifest.seconds, paused_s
    )
    return manifest


def backup_runtime(rt: Runtime, destination: Path) -> BackupManifest:
    """:func:`backup_embedded` of this process's database and index; InvalidInput outside the
    embedded default (SQLite and Qdrant Edge)."""
    url = rt.engine.url
    if url.get_backend_name() != "sqlite" or not url.database or url.database == ":memory:":
        raise InvalidInput(
            "saekin backup is for the embedded default (SQLite + Qdrant Edge); production: pg_dump and "
            "Qdrant snapshots (README, Backups)",
            code="backup_not_embedded",
        )
    if not Path(destination).is_absolute():
        raise InvalidInput("the backup directory must be an absolute path", code="invalid_backup_directory")
    return backup_embedded(database_path=Path(url.database), index=rt.index, destination=destination)


def _check_points(destination: Path, manifest: BackupManifest) -> None:
    """Count what the backup holds, and mark documents whose searchable chunks have no point in
    the index copy as waiting to be embedded again."""
    import qdrant_edge as qe

    from services.index.edge_optimizer import is_shard

    engine = make_engine(f"sqlite:///{destination / DATABASE}")
    d, c, coll = _documents.c, _chunks.c, _collections.c
    reembed: list[uuid.UUID] = []
    try:
        with engine.connect() as conn:
            collections = conn.execute(
                select(coll.id, coll.name, coll.profile, coll.index_name, coll.chunk_layout)
            ).all()
        for collection in collections:
            name = collection.index_name or collection_index_name(collection.name, collection.profile)
            with engine.connect() as conn:
                rows = conn.execute(
                    select(c.id, c.document_id, d.generation, d.indexed_generation)
                    .join_from(_chunks, _documents, c.document_id == d.id)
                    .where(
                        d.collection_id == collection.id,
                        c.generation == d.indexed_generation,
                        c.layout == collection.chunk_layout,
                    )
                ).all()
            present: set[str] = set()
            path = destination / INDEX_DIR / name
            points = 0
            if is_shard(path):
                shard = qe.EdgeShard.load(str(path))
                try:
                    points = int(shard.count(qe.CountRequest(exact=True)))
                    ids: list[int | uuid.UUID | str] = [str(row.id) for row in rows]
                    for i in range(0, len(ids), _RETRIEVE_BATCH):
                        found = shard.retrieve(ids[i : i + _RETRIEVE_BATCH], with_payload=False, with_vector=False)
                        present.update(str(r.id) for r in found)
                finally:
                    shard.close()
            # A document with a newer generation on its way is embedded anyway.
            missing = {
                row.document_id
                for row in rows
                if str(row.id) not in present and row.generation == row.indexed_generation
            }
            reembed += sorted(missing)
            manifest.collections[collection.name] = {
                "index": name,
                "documents": len({row.document_id for row in rows}),
                "chunks": len(rows),
                "points": points,
                "reembed_documents": len(missing),
            }
        if reembed:
            log.warning(
                "backup: %d documents had no points in the index copy; a restore embeds them again", len(reembed)
            )
            with engine.begin() as conn:
                conn.execute(
                    update(_documents)
                    .where(d.id.in_(reembed))
                    .values(
                        status=DocumentStatus.processing,
                        stage=DocumentStage.embedding,
                        lease_owner=None,
                        lease_until=None,
                    )
                )
        manifest.reembed_documents = len(reembed)
    finally:
        engine.dispose()


@dataclass(frozen=True)
class Restored:
    data_dir: Path
    moved_aside: Path | None  # where the data that was there went (--force)
    manifest: dict[str, Any]


def restore_embedded(source: Path, data_dir: Path, *, force: bool = False) -> Restored:
    """Put the backup in `source` into `data_dir`. Refuses a data directory a running Saekin
    holds, and one that holds data unless `force` (which moves that data aside, not away)."""
    source, data_dir = Path(source), Path(data_dir)
    manifest_path = source / MANIFEST
    if not manifest_path.is_file() or not (source / DATABASE).is_file():
        raise InvalidInput(f"{source} is not a finished Saekin backup (no {MANIFEST})", code="not_a_backup")
    manifest = json.loads(manifest_path.read_text())
    lock = DataDirLock(data_dir).acquire()  # DataDirLocked: a running service holds it
    try:
        present = [p for p in (data_dir / DATABASE, data_dir / INDEX_DIR) if p.exists()]
        aside: Path | None = None
        if present:
            if not force:
                raise Conflict(
                    f"{data_dir} holds a Saekin database or index: --force moves them aside (nothing is deleted)",
                    code="data_dir_not_empty",
                )
            aside = data_dir / f"before-restore-{datetime.now(UTC).strftime('%Y%m%dT%H%M%S')}"
            aside.mkdir()
            for path in data_dir.iterdir():
                if path.name in (DATABASE, f"{DATABASE}-wal", f"{DATABASE}-shm", INDEX_DIR):
                    shutil.move(str(path), aside / path.name)
        shutil.copy2(source / DATABASE, data_dir / DATABASE)
        if (source / INDEX_DIR).is_dir():
            shutil.copytree(source / INDEX_DIR, data_dir / INDEX_DIR)
        else:
            (data_dir / INDEX_DIR).mkdir()
    finally:
        lock.release()
    return Restored(data_dir=data_dir, moved_aside=aside, manifest=manifest)
