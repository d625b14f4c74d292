"""Rebuilding a collection's index beside the live one, then switching to it: a model change, an
analyzer change (sparse vectors only) or a rebuild, while searches go on.

    begin ─▶ copy every indexed document ─▶ catch up ─▶ switch (+ last catch-up) ─▶ drop the old index

* The new index is a new physical Qdrant collection (Edge shard), `physical_index_name(.., n+1)`,
  written from the chunk rows the database keeps (their text; no document is extracted or
  chunked again). Dense vectors come from the target model, or, for `sparse_only`, are copied
  from the live index; sparse vectors and term spans are recomputed from each chunk's text when
  the analyzer changed (and written back to the chunk rows).
* Searches read the live index until the switch: nothing the reindex writes is addressed
  before. Uploads go on as before, into the live index; the reindex replays them: after the
  full copy it copies again every document published since it began (a watermark on
  documents.indexed_at), until a pass finds none, and the switch itself copies, inside its
  transaction, what was published since the last pass. Publication holds the collection row
  (lifecycle.publish) and checks the index build it wrote to, so a worker whose points went to
  the old index after that is refused and writes them again (pipeline.embed_documents).
  Deletions during the build delete from both indexes (lifecycle.cancel).
* The switch is one database transaction: the collection's index name and build number, its
  profile, model and analyzer version change together. Qdrant Edge needs no more: the database
  is what names the shard searches open. On a Qdrant server the collection is addressed by an
  alias (`index_alias`), moved in one alias update inside that transaction (VectorIndex.switch).
* The old index is dropped after a short grace (searches that read the old name just before the
  switch finish on it).

* Re-chunking, when the new model's token budget is smaller than the longest chunk (or asked
  for): each document's stored upload is extracted and chunked again with the new model's
  tokenizer and budget, and the new chunk rows are written beside the live ones, for the same
  generations, under the collection's next chunk layout (`chunks.layout`). Searches read the live
  layout (`collections.chunk_layout`) until the switch moves it; the old rows go after the
  switch (a failed reindex deletes the new ones). A generation that was chunked under the old
  layout and is still waiting for the embed stage at the switch is sent back to the prepare
  stage (lifecycle.read_for_embedding), which chunks by the collection's new model.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

from sqlalchemy import ColumnElement, Connection, Engine, Table, delete, func, insert, select, tuple_, update

from services.collections.model import RecordedModel
from services.documents import lifecycle
from services.documents.lifecycle import REINDEX_RUNNING, WorkItem
from services.documents.models import (
    Chunk,
    Collection,
    Document,
    DocumentSource,
    collection_index_name,
    index_alias,
    physical_index_name,
    utcnow,
)
from services.errors import Conflict, InvalidInput, NotFound, SaekinError
from services.index.base import IndexPoint, VectorIndex
from services.ingest.analyzer import KoreanAnalyzer, analyzer_version, term_spans
from services.ingest.pipeline import chunk_payload, chunk_upload

if TYPE_CHECKING:
    from services.embedding.encoder import Encoder
    from services.ingest.extract import ExtractLimits
    from services.ingest.policy import ChunkPolicy
    from services.runtime import Runtime

log = logging.getLogger(__name__)

_documents: Table = Document.__table__  # type: ignore[assignment]
_chunks: Table = Chunk.__table__  # type: ignore[assignment]
_sources: Table = DocumentSource.__table__  # type: ignore[assignment]
_collections: Table = Collection.__table__  # type: ignore[assignment]

# Documents per copy step: one encode call and one upsert each.
BATCH_DOCUMENTS = 32
# Publication times come from the workers' clocks: a catch-up looks this far before its watermark.
CLOCK_SKEW = timedelta(seconds=30)
# Catch-up passes before the switch; the switch copies whatever the last one left.
CATCH_UP_PASSES = 5
# A running reindex that has not reported for this long died with its process: another may start.
# It reports after every batch, which a large model on CPUs can take many minutes to embed.
STALE_AFTER = timedelta(hours=1)
# Searches that read the old index name just before the switch finish on it before it is dropped.
DROP_GRACE_S = 2.0


@dataclass(frozen=True)
class ReindexTarget:
    """What the new index is built with."""

    profile: str
    model: str | None  # hub id or local path (None: unknown, kept as recorded)
    model_sha256: str | None
    sparse_only: bool = False  # keep the dense vectors, recompute only the sparse ones
    rechunk: bool | None = None  # chunk the documents again; None: when the new budget needs it


@dataclass(frozen=True)
class ReindexResult:
    collection: str
    index_name: str  # what searches address now
    physical_index: str
    documents: int
    chunks: int
    replayed: int  # documents copied again because they were published during the reindex
    recomputed_sparse: bool
    seconds: float
    rechunked: bool = False


class ReindexError(InvalidInput):
    """A reindex that cannot proceed with what it was asked (the live index is untouched)."""


Progress = Callable[[int, int], None]  # (documents copied, documents to copy)


@dataclass
class _Job:
    collection_id: uuid.UUID
    name: str
    old_index: str
    old_version: int
    target: ReindexTarget
    target_index: str
    recompute_sparse: bool
    started_at: datetime
    total: int
    old_layout: int = 0  # the chunk layout searches read
    rechunk: bool = False  # new chunk rows under old_layout + 1
    done: int = 0
    chunks: int = 0
    replayed: int = 0
    created: bool = False  # the target index exists
    filter_indexes: dict[str, Any] = field(default_factory=dict)  # declared in the collection's settings


def reindex_collection(
    *,
    engine: Engine,
    index: VectorIndex,
    name: str,
    target: ReindexTarget,
    analyzer: KoreanAnalyzer | None,
    policy: ChunkPolicy,
    encoder: Encoder | None = None,
    extract_limits: ExtractLimits | None = None,
    progress: Progress | None = None,
    batch_documents: int = BATCH_DOCUMENTS,
    drop_grace_s: float = DROP_GRACE_S,
) -> ReindexResult:
    """Build `name`'s index anew with `target` (encoder: the target model; None with sparse_only),
    switch searches to it and drop the old one. `policy`: the target model's chunk policy (its
    token budget, BM25 weights); `extract_limits` bound the extraction of a re-chunking reindex.
    Conflict when a reindex of the collection is running."""
    if encoder is None and not target.sparse_only:
        raise ValueError("a reindex that re-embeds needs the target model's encoder")
    if target.sparse_only and target.rechunk:
        raise ReindexError("--sparse-only keeps the chunks and their dense vectors: it cannot re-chunk")
    started = time.perf_counter()
    job = _begin(engine, name, target)
    if job.recompute_sparse and analyzer is None:
        _fail(engine, job, "the analyzer is needed to recompute sparse vectors")
        raise ValueError("the analyzer is needed to recompute sparse vectors")
    log.info(
        "reindex %s: %d documents from %s into %s (%s)",
        name,
        job.total,
        job.old_index,
        job.target_index,
        "sparse vectors only" if target.sparse_only else f"model {target.model}",
    )
    copy = _Copier(job, index=index, encoder=encoder, analyzer=analyzer, policy=policy, limits=extract_limits)
    try:
        job.rechunk = _needs_rechunk(engine, job, policy)
        if job.rechunk:
            if analyzer is None:
                raise ValueError("the analyzer is needed to chunk documents again")
            log.info("reindex %s: documents are chunked again (budget %d tokens)", name, policy.max_tokens)
        if progress:
            progress(0, job.total)
        watermark = job.started_at - CLOCK_SKEW
        after: uuid.UUID | None = None
        while True:  # every document indexed when the reindex began, in id order
            with engine.connect() as conn:
                ids = list(
                    conn.scalars(
                        select(_documents.c.id)
                        .where(*_indexed(job), *((_documents.c.id > after,) if after is not None else ()))
                        .order_by(_documents.c.id)
                        .limit(batch_documents)
                    )
                )
            if not ids:
                break
            after = ids[-1]
            job.done += copy.documents(ids, engine=engine)
            if progress:
                progress(job.done, job.total)
        for _ in range(CATCH_UP_PASSES):  # what was published meanwhile
            since, watermark = watermark, utcnow() - CLOCK_SKEW
            copied = copy.published_since(since, engine=engine)
            job.replayed += copied
            if not copied:
                break
        address, previous = _switch(engine, index, job, copy, watermark)
    except BaseException as exc:
        _fail(engine, job, exc if isinstance(exc, SaekinError) else f"{type(exc).__name__}: {exc}")
        if job.rechunk:
            _delete_layout_rows(engine, job, new=True)
        if job.created:
            try:
                index.drop_collection(job.target_index)
            except Exception:
                log.exception("reindex %s: could not drop the unfinished index %s", name, job.target_index)
        raise
    if progress:
        progress(job.total, job.total)
    old_physical = previous or job.old_index
    if old_physical not in (job.target_index, address) or job.rechunk:
        time.sleep(drop_grace_s)
    if old_physical not in (job.target_index, address):
        index.drop_collection(old_physical)
    if job.rechunk:
        _delete_layout_rows(engine, job, new=False)
    seconds = time.perf_counter() - started
    log.info("reindex %s: done in %.1f s, searches read %s", name, seconds, job.target_index)
    return ReindexResult(
        collection=name,
        index_name=address,
        physical_index=job.target_index,
        documents=job.done,
        chunks=job.chunks,
        replayed=job.replayed,
        recomputed_sparse=job.recompute_sparse or job.rechunk,
        seconds=round(seconds, 3),
        rechunked=job.rechunk,
    )


def reindex_state(collection: Collection) -> dict[str, Any] | None:
    """The running or last reindex of `collection` as the API shows it."""
    return dict(collection.reindex) if collection.reindex else None


# --- steps ------------------------------------------------------------------------------------


def _begin(engine: Engine, name: str, target: ReindexTarget) -> _Job:
    """Mark the collection as being reindexed (one reindex at a time) and plan the job."""
    coll = _collections.c
    now = utcnow()
    with engine.begin() as conn:
        row = conn.execute(
            select(
                coll.id,
                coll.name,
                coll.profile,
                coll.model,
                coll.model_sha256,
                coll.index_name,
                coll.index_version,
                coll.analyzer_version,
                coll.reindex,
                coll.deleting_at,
                coll.chunk_layout,
                coll.filter_indexes,
            )
            .where(coll.name == name)
            .with_for_update()
        ).first()
        if row is None or row.deleting_at is not None:
            raise NotFound(f"collection {name!r} does not exist", code="collection_not_found")
        running = row.reindex or {}
        if running.get("status") in REINDEX_RUNNING and not _abandoned(running, now):
            raise Conflict(
                f"collection {name!r} is being reindexed since {running.get('started_at')}",
                code="reindex_running",
            )
        if target.sparse_only and (target.profile != row.profile or _other_weights(row.model_sha256, target)):
            raise ReindexError(
                "--sparse-only keeps the dense vectors, so it cannot change the model: "
                f"the collection is embedded by {row.model or row.profile}"
            )
        version = row.index_version + 1
        job = _Job(
            collection_id=row.id,
            name=name,
            old_index=row.index_name or collection_index_name(name, row.profile),
            old_version=row.index_version,
            target=target,
            target_index=physical_index_name(name, target.profile, version),
            recompute_sparse=target.sparse_only or row.analyzer_version != analyzer_version(),
            started_at=now,
            total=0,
            old_layout=row.chunk_layout,
            filter_indexes=dict(row.filter_indexes or {}),
        )
        job.total = conn.scalar(select(func.count()).select_from(_documents).where(*_indexed(job))) or 0
        conn.execute(update(_collections).where(coll.id == row.id).values(reindex=_state(job, "building")))
    return job


def _needs_rechunk(engine: Engine, job: _Job, policy: ChunkPolicy) -> bool:
    """Whether the documents are chunked again: when asked, or (unless told not to) when the
    collection's longest chunk is over the new model's budget."""
    if job.target.rechunk is not None:
        return job.target.rechunk
    if job.target.sparse_only:
        return False
    c, d = _chunks.c, _documents.c
    with engine.connect() as conn:
        longest = conn.scalar(
            select(func.max(c.token_count))
            .join_from(_chunks, _documents, c.document_id == d.id)
            .where(*_indexed(job), c.generation == d.indexed_generation, c.layout == job.old_layout)
        )
    return bool(longest and longest > policy.max_tokens)


def _delete_layout_rows(engine: Engine, job: _Job, *, new: bool) -> None:
    """After a re-chunking reindex: the old layout's rows of indexed generations (switched), or the
    new layout's rows (failed). Rows of generations still on their way to the index stay: the
    embed stage sends those back to be chunked again."""
    c, d = _chunks.c, _documents.c
    documents = select(d.id).where(d.collection_id == job.collection_id)
    where: tuple[ColumnElement[bool], ...]
    if new:
        where = (c.layout == job.old_layout + 1,)
    else:
        indexed = select(d.indexed_generation).where(d.id == c.document_id).scalar_subquery()
        where = (c.layout != job.old_layout + 1, c.generation == indexed)
    with engine.begin() as conn:
        deleted = conn.execute(delete(_chunks).where(c.document_id.in_(documents), *where)).rowcount
    log.info("reindex %s: %d chunk rows of the %s layout deleted", job.name, deleted, "new" if new else "old")


def _switch(
    engine: Engine, index: VectorIndex, job: _Job, copy: _Copier, watermark: datetime
) -> tuple[str, str | None]:
    """One transaction: take the collection row (publication waits), copy what was published
    since the last pass, move the alias (server), record the new index and model."""
    coll = _collections.c
    with engine.begin() as conn:
        claimed = conn.execute(
            update(_collections)
            .where(coll.id == job.collection_id, coll.index_version == job.old_version, coll.deleting_at.is_(None))
            .values(reindex=_state(job, "switching"))
        ).rowcount
        if not claimed:
            raise ReindexError(f"collection {job.name!r} was deleted or switched by someone else meanwhile")
        job.replayed += copy.published_since(watermark, conn=conn)
        copy.ensure_target(None)
        # A PATCH of the declared indexes that came before the target existed did not reach it;
        # one after this claim waits for the switch and then addresses the new index.
        declared = conn.scalar(select(coll.filter_indexes).where(coll.id == job.collection_id)) or {}
        index.declare_filter_indexes(job.target_index, declared, undeclared=job.filter_indexes)
        address, previous = index.switch(alias=index_alias(job.name), target=job.target_index)
        values: dict[str, Any] = dict(
            index_name=address,
            index_version=job.old_version + 1,
            profile=job.target.profile,
            reindex=_state(job, "done", finished_at=utcnow().isoformat()),
        )
        if job.target.model is not None:
            values.update(model=job.target.model, model_sha256=job.target.model_sha256)
        if job.recompute_sparse or job.rechunk:
            values["analyzer_version"] = analyzer_version()
        if job.rechunk:
            values["chunk_layout"] = job.old_layout + 1
        conn.execute(update(_collections).where(coll.id == job.collection_id).values(**values))
    return address, previous


def _report(conn: Connection, job: _Job) -> None:
    conn.execute(
        update(_collections).where(_collections.c.id == job.collection_id).values(reindex=_state(job, "building"))
    )


def _fail(engine: Engine, job: _Job, error: SaekinError | str) -> None:
    message = error.message if isinstance(error, SaekinError) else error
    log.error("reindex %s failed: %s", job.name, message)
    try:
        with engine.begin() as conn:
            conn.execute(
                update(_collections)
                .where(_collections.c.id == job.collection_id)
                .values(reindex=_state(job, "failed", error=message[:2000], finished_at=utcnow().isoformat()))
            )
    except Exception:  # the database itself may be what failed
        log.exception("reindex %s: could not record the failure", job.name)


def _state(job: _Job, status: str, **extra: Any) -> dict[str, Any]:
    return {
        "status": status,
        "profile": job.target.profile,
        "model": job.target.model,
        "model_sha256": job.target.model_sha256,
        "sparse_only": job.target.sparse_only,
        "recompute_sparse": job.recompute_sparse,
        "rechunk": job.rechunk,
        "target_index": job.target_index,
        "started_at": job.started_at.isoformat(),
        "updated_at": utcnow().isoformat(),
        "documents_total": job.total,
        "documents_done": min(job.done, job.total),
        "chunks_done": job.chunks,
        "documents_replayed": job.replayed,
        **extra,
    }


def _abandoned(state: dict[str, Any], now: datetime) -> bool:
    try:
        return now - datetime.fromisoformat(state["updated_at"]) > STALE_AFTER
    except (KeyError, TypeError, ValueError):
        return True


def _other_weights(recorded: str | None, target: ReindexTarget) -> bool:
    return bool(recorded and target.model_sha256 and recorded != target.model_sha256)


def _indexed(job: _Job) -> tuple[Any, ...]:
    """The collection's documents that have a searchable generation."""
    d = _documents.c
    return (d.collection_id == job.collection_id, d.indexed_generation.is_not(None))


# --- copying documents into the new index ----------------------------------------------------


class _Copier:
    """Writes documents' searchable generations into the job's target index."""

    def __init__(
        self,
        job: _Job,
        *,
        index: VectorIndex,
        encoder: Encoder | None,
        analyzer: KoreanAnalyzer | None,
        policy: ChunkPolicy,
        limits: ExtractLimits | None = None,
    ) -> None:
        self.job, self.index, self.encoder, self.analyzer, self.policy = job, index, encoder, analyzer, policy
        self.limits = limits
        self.copied: dict[uuid.UUID, datetime | None] = {}  # document -> publication time copied

    def ensure_target(self, dim: int | None) -> None:
        if self.job.created:
            return
        if dim is None:  # an empty collection: the model's width, or the profile's
            from config.profiles import get_profile

            dim = self.encoder.dim if self.encoder is not None else get_profile(self.job.target.profile).dim
        self.index.drop_collection(self.job.target_index)  # a failed earlier attempt's leftovers
        self.index.ensure_collection(self.job.target_index, dim=dim)
        # The declared payload indexes before the first point: built as the points arrive.
        self.index.declare_filter_indexes(self.job.target_index, self.job.filter_indexes)
        self.job.created = True

    def published_since(self, since: datetime, *, engine: Engine | None = None, conn: Connection | None = None) -> int:
        """Copy again the documents published at or after `since`; how many. With `conn`, all in
        that transaction (the switch); else in short transactions of `engine`."""
        d = _documents.c
        query = select(d.id, d.indexed_at).where(*_indexed(self.job), d.indexed_at >= since).order_by(d.id)
        if conn is not None:
            rows = conn.execute(query).all()
        else:
            assert engine is not None
            with engine.connect() as read:
                rows = read.execute(query).all()
        # `since` reaches back by the clock skew: what was copied as published then is not again.
        ids = [doc_id for doc_id, at in rows if self.copied.get(doc_id) != at]
        for i in range(0, len(ids), BATCH_DOCUMENTS):
            batch = ids[i : i + BATCH_DOCUMENTS]
            if self.job.created:  # their other generations' points go (a replacement published meanwhile)
                for doc_id in batch:
                    self.index.delete_document(self.job.target_index, str(doc_id))
            self.documents(batch, engine=engine, conn=conn)
        return len(ids)

    def documents(
        self, ids: Sequence[uuid.UUID], *, engine: Engine | None = None, conn: Connection | None = None
    ) -> int:
        """Copy the searchable generation of the documents `ids` (those that still have one); how
        many. Analysis and encoding run outside any write transaction unless `conn` is given:
        SQLite has one writer, and uploads must not wait for the model."""
        if self.job.rechunk:
            return self._rechunk(ids, engine=engine, conn=conn)
        if conn is not None:
            docs, chunks = self._read(conn, ids)
        else:
            assert engine is not None
            with engine.connect() as read:
                docs, chunks = self._read(read, ids)
        if not docs:
            return 0
        texts = [chunk.text for chunk in chunks]
        analysis = self._analysis(chunks) if self.job.recompute_sparse else []
        sparse = [row["sparse"] for row in analysis] if analysis else [chunk.sparse for chunk in chunks]
        self._write_points(docs, chunks, sparse, self._dense(chunks, texts))
        if conn is not None:
            lifecycle.store_chunk_analysis(conn, analysis)
        else:
            assert engine is not None
            with engine.begin() as write:
                lifecycle.store_chunk_analysis(write, analysis)
                _report(write, self.job)
        return len(docs)

    def _read(self, conn: Connection, ids: Sequence[uuid.UUID]) -> tuple[dict[uuid.UUID, Any], list[Any]]:
        d, c = _documents.c, _chunks.c
        docs = {
            row.id: row
            for row in conn.execute(
                select(
                    d.id, d.external_id, d.indexed_generation, d.indexed_metadata, d["metadata"], d.indexed_at
                ).where(d.id.in_(ids), *_indexed(self.job))
            )
        }
        self.copied.update((doc_id, row.indexed_at) for doc_id, row in docs.items())
        if not docs:
            return {}, []
        chunks = list(
            conn.execute(
                select(c.id, c.document_id, c.generation, c.ordinal, c.page, c.text, c.sparse)
                .where(
                    tuple_(c.document_id, c.generation).in_([(i, r.indexed_generation) for i, r in docs.items()]),
                    c.layout == self.job.old_layout,
                )
                .order_by(c.document_id, c.ordinal)
            )
        )
        return docs, chunks

    def _rechunk(
        self, ids: Sequence[uuid.UUID], *, engine: Engine | None = None, conn: Connection | None = None
    ) -> int:
        """Chunk the searchable generation of the documents `ids` again from their stored uploads,
        under the next layout: rows and points; how many documents. A document whose stored
        upload is already a newer generation's (a replacement on its way) is left to that one."""
        if conn is not None:
            docs = self._read_uploads(conn, ids)
        else:
            assert engine is not None
            with engine.connect() as read:
                docs = self._read_uploads(read, ids)
        layout = self.job.old_layout + 1
        rows: list[dict[str, Any]] = []
        for doc in docs.values():
            if doc.upload_generation != doc.indexed_generation:
                log.info(
                    "reindex %s: document %s is being replaced; its replacement is chunked anew", self.job.name, doc.id
                )
                continue
            upload = lifecycle.Claimed(
                filename=doc.filename,
                media_type=doc.media_type,
                data=doc.data,
                title=doc.title,
                model=RecordedModel(self.job.name, self.job.target.profile, self.job.target.model, None),
                chunk_layout=layout,
            )
            assert self.analyzer is not None and self.limits is not None
            try:
                rows += chunk_upload(
                    WorkItem(doc.id, doc.indexed_generation),
                    upload,
                    analyzer=self.analyzer,
                    chunking=self.policy,
                    extract_limits=self.limits,
                    layout=layout,
                )
            except SaekinError as exc:  # it was extracted once: a time-out on a loaded machine
                raise ReindexError(f"document {doc.id} could not be extracted again: {exc.message}") from exc
        chunks = [SimpleNamespace(**row) for row in rows]
        dense = self._dense(chunks, [row["text"] for row in rows])
        self._write_points(docs, chunks, [row["sparse"] for row in rows], dense)

        def write(tx: Connection) -> None:
            # A document copied again (replayed) replaces what its earlier copy wrote.
            c = _chunks.c
            tx.execute(delete(_chunks).where(c.document_id.in_(list(docs)), c.layout == layout))
            if rows:
                tx.execute(insert(_chunks), rows)

        if conn is not None:
            write(conn)
        else:
            assert engine is not None
            with engine.begin() as tx:
                write(tx)
                _report(tx, self.job)
        return len(docs)

    def _write_points(
        self, docs: dict[uuid.UUID, Any], chunks: Sequence[Any], sparse: Sequence[Any], dense: dict[str, Any]
    ) -> None:
        """Upsert the chunks' points into the target index (created on the first write), with
        their documents' searchable metadata; chunks without a dense vector are left out."""
        points = []
        for chunk, sparse_vector in zip(chunks, sparse):
            vector = dense.get(str(chunk.id))
            if vector is None:
                continue  # sparse-only: no point in the live index to copy (see _dense)
            doc = docs[chunk.document_id]
            metadata = doc.indexed_metadata if doc.indexed_metadata is not None else doc.metadata
            payload = chunk_payload(chunk, external_id=doc.external_id, metadata=metadata)
            points.append(IndexPoint(id=str(chunk.id), dense=vector, sparse=sparse_vector, payload=payload))
        self.ensure_target(len(points[0].dense) if points else None)
        if points:
            self.index.upsert(self.job.target_index, points)
        self.job.chunks += len(points)

    def _read_uploads(self, conn: Connection, ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, Any]:
        d, source = _documents.c, _sources.c
        docs = {
            row.id: row
            for row in conn.execute(
                select(
                    d.id,
                    d.external_id,
                    d.indexed_generation,
                    d.indexed_metadata,
                    d["metadata"],
                    d.indexed_at,
                    d.filename,
                    d.media_type,
                    d.title,
                    source.generation.label("upload_generation"),
                    source.data,
                )
                .join_from(_documents, _sources, source.document_id == d.id)
                .where(d.id.in_(ids), *_indexed(self.job))
            )
        }
        self.copied.update((doc_id, row.indexed_at) for doc_id, row in docs.items())
        return docs

    def _dense(self, chunks: Sequence[Any], texts: list[str]) -> dict[str, Any]:
        ids = [str(chunk.id) for chunk in chunks]
        if not chunks:
            return {}
        if self.job.target.sparse_only:
            found = self.index.dense_vectors(self.job.old_index, ids)
            if len(found) < len(ids):
                # Published chunks always have points; a gap is a damaged index, which only
                # re-embedding (a reindex with the model) can mend.
                log.warning(
                    "reindex %s: %d chunks have no point in the live index", self.job.name, len(ids) - len(found)
                )
            return found
        assert self.encoder is not None
        over = [n for n in self.encoder.count_tokens(texts) if n > self.encoder.max_seq_length]
        if over:
            raise ReindexError(
                f"{len(over)} chunks are longer than the new model reads ({self.encoder.max_seq_length} tokens): "
                'its documents must be chunked again: reindex with --rechunk (API: "rechunk": true)',
                code="rechunk_needed",
            )
        vectors = self.encoder.encode_documents(texts)
        return dict(zip(ids, vectors))

    def _analysis(self, chunks: Sequence[Any]) -> list[dict[str, Any]]:
        """New sparse vectors and term spans from each chunk's own text (for its row)."""
        assert self.analyzer is not None
        analyses = self.analyzer.analyze_many([chunk.text for chunk in chunks])
        rows = []
        for chunk, sentences in zip(chunks, analyses):
            terms = sorted((t for sent in sentences for t in sent.terms), key=lambda t: t.start)
            vector = self.analyzer.document_vector(
                terms, k1=self.policy.bm25_k1, b=self.policy.bm25_b, avg_doc_len=self.policy.bm25_avg_terms
            )
            rows.append({"id": chunk.id, "sparse": vector, "term_spans": term_spans(terms)})
        return rows


# --- what the CLI and the API run ---------------------------------------------------------------


def run_for_runtime(
    rt: Runtime,
    *,
    name: str,
    profile: str | None = None,
    model: str | None = None,
    sparse_only: bool = False,
    rechunk: bool | None = None,
    progress: Progress | None = None,
    batch_documents: int = BATCH_DOCUMENTS,
) -> ReindexResult:
    """Reindex `name` with the runtime's resources: to `model` / `profile` (default: the service's
    model), or only its sparse vectors (`sparse_only`, the model the collection records);
    `rechunk` as in ReindexTarget."""
    from config.profiles import get_profile
    from services.collections.model import model_ref
    from services.db import session_scope
    from services.documents.service import get_collection

    settings = rt.settings
    with session_scope(rt.session_factory) as session:
        current = get_collection(session, name=name)
        recorded = (current.profile, current.model, current.model_sha256)
    if sparse_only:
        if profile or model:
            raise ReindexError("--sparse-only keeps the collection's model: leave out --profile and --model")
        if rechunk:
            raise ReindexError("--sparse-only keeps the chunks and their dense vectors: it cannot re-chunk")
        profile, model = recorded[0], recorded[1] or settings.model_name_or_path
    else:
        profile = profile or (settings.embedding_profile if model is None else recorded[0])
        if model is None:  # the profile's model: the service's own when the profile is the service's
            model = (
                settings.model_name_or_path if profile == settings.embedding_profile else get_profile(profile).hub_id
            )
    try:
        get_profile(profile)
    except ValueError as exc:
        raise ReindexError(str(exc), code="invalid_profile") from None
    if sparse_only:
        encoder = None
        target = ReindexTarget(profile=profile, model=recorded[1], model_sha256=recorded[2], sparse_only=True)
    else:
        encoder = rt.encoder_for(model, profile)
        ref = rt.model_ref if model == settings.model_name_or_path else model_ref(model)
        target = ReindexTarget(profile=profile, model=ref.name, model_sha256=ref.sha256, rechunk=rechunk)
    return reindex_collection(
        engine=rt.engine,
        index=rt.index,
        name=name,
        target=target,
        analyzer=rt.analyzer,
        # How the prepare stage will chunk the collection's new uploads once it records this model.
        policy=rt.chunking_for(RecordedModel(name, profile, model, None)),
        encoder=encoder,
        extract_limits=rt.extract_limits,
        progress=progress,
        batch_documents=batch_documents,
    )


class Reindexes:
    """Reindexes running in this process (the API's), one thread each: how the embedded service,
    which owns its index, rebuilds a collection while it keeps serving it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._running: dict[str, threading.Thread] = {}

    def start(
        self,
        rt: Runtime,
        *,
        name: str,
        profile: str | None = None,
        model: str | None = None,
        sparse_only: bool = False,
        rechunk: bool | None = None,
        wait_s: float = 5.0,
    ) -> None:
        """Start reindexing `name` in the background; a refusal found while starting (no such
        collection, one running, a model that cannot be loaded, chunks too long) is raised here."""
        began = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            try:
                run_for_runtime(
                    rt,
                    name=name,
                    profile=profile,
                    model=model,
                    sparse_only=sparse_only,
                    rechunk=rechunk,
                    progress=lambda *_: began.set(),
                )
            except BaseException as exc:
                failure.append(exc)
                if began.is_set():
                    log.exception("reindex of %s failed", name)
            finally:
                began.set()
                with self._lock:
                    if self._running.get(name) is threading.current_thread():
                        del self._running[name]

        with self._lock:
            thread = self._running.get(name)
            if thread is not None and thread.is_alive():
                raise Conflict(f"collection {name!r} is being reindexed", code="reindex_running")
            thread = threading.Thread(target=run, name=f"reindex-{name}", daemon=True)
            self._running[name] = thread
            thread.start()
        began.wait(wait_s)
        if failure:
            error = failure[0]
            if isinstance(error, SaekinError):
                raise error
            raise ReindexError(f"the reindex could not start: {error!r}")

    def wait(self, name: str, timeout: float | None = None) -> None:
        """Wait for the reindex of `name` in this process to end (tests, shutdown)."""
        with self._lock:
            thread = self._running.get(name)
        if thread is not None:
            thread.join(timeout)
