"""Alembic migrations go up, down and up again on SQLite and PostgreSQL, matching the models."""

from __future__ import annotations

import json
import uuid

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, inspect, text
from sqlalchemy.engine import make_url

from services.db import Base, alembic_config, upgrade_database


def _roundtrip(url: str) -> None:
    upgrade_database(url)
    engine = create_engine(url)
    with engine.connect() as conn:
        assert {"collections", "documents", "document_sources", "chunks"} <= set(inspect(conn).get_table_names())
        diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), Base.metadata)
        assert diff == [], f"models and migrations disagree: {diff}"
    command.downgrade(alembic_config(url), "base")
    with engine.connect() as conn:
        assert set(inspect(conn).get_table_names()) <= {"alembic_version"}
    upgrade_database(url)
    engine.dispose()


def test_sqlite_up_down_up(tmp_path):
    _roundtrip(f"sqlite:///{tmp_path / 'm.db'}")


@pytest.mark.postgres
def test_postgres_up_down_up(postgres_server_url):
    name = f"saekin_mig_{uuid.uuid4().hex[:8]}"
    admin = create_engine(postgres_server_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        _roundtrip(make_url(postgres_server_url).set(database=name).render_as_string(hide_password=False))
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def test_indexed_documents_keep_their_title_and_metadata_through_0005(tmp_path):
    url = f"sqlite:///{tmp_path / 'm.db'}"
    command.upgrade(alembic_config(url), "0004")
    engine = create_engine(url)
    collection, indexed, waiting = (uuid.uuid4().hex for _ in range(3))
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO collections (id, name, profile, created_at) "
                "VALUES (:id, 'c', 'bge-m3-ko', '2026-11-23 00:00:00')"
            ),
            {"id": collection},
        )
        for doc, generation in ((indexed, 1), (waiting, None)):
            conn.execute(
                text(
                    "INSERT INTO documents (id, collection_id, title, sha256, metadata, status, chunk_count, embedded_count,"
                    " generation, indexed_generation, created_at, updated_at) VALUES (:id, :c, '제목', :id, '{\"k\": 1}',"
                    " 'indexed', 0, 0, 1, :g, '2026-11-23 00:00:00', '2026-11-23 00:00:00')"
                ),
                {"id": doc, "c": collection, "g": generation},
            )
    upgrade_database(url)
    with engine.connect() as conn:
        rows = dict(conn.execute(text("SELECT id, indexed_title || ' ' || indexed_metadata FROM documents")).all())
    assert rows == {indexed: '제목 {"k": 1}', waiting: None}
    engine.dispose()


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_0008_renames_stem_spans_keeping_old_rows(backend, tmp_path, request):
    """Rows stored before 0008 keep their list of stems (search tells them by their shape); a
    downgrade leaves the older code NULL, which it highlights by analyzing, for rows of the new shape."""
    if backend == "sqlite":
        url = f"sqlite:///{tmp_path / 'm.db'}"
        command.upgrade(alembic_config(url), "0005")
    else:
        url = request.getfixturevalue("own_postgres_url")  # migrated to head
        command.downgrade(alembic_config(url), "0005")
    engine = create_engine(url)
    collection, document, old, new = (str(uuid.uuid4()) for _ in range(4))
    chunk = (
        "INSERT INTO chunks (id, document_id, generation, ordinal, text, char_start, char_end, token_count, sparse, {col})"
        " VALUES (:id, :d, 1, :o, '서울에서 만났다', 0, 8, 4, '{{}}', :spans)"
    )
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO collections (id, name, profile, created_at) "
                "VALUES (:id, 'c', 'bge-m3-ko', '2026-11-23 00:00:00')"
            ),
            {"id": collection},
        )
        conn.execute(
            text(
                "INSERT INTO documents (id, collection_id, title, sha256, metadata, status, chunk_count, embedded_count,"
                " generation, indexed_generation, created_at, updated_at) VALUES (:id, :c, 't', 'x', '{}',"
                " 'indexed', 2, 2, 1, 1, '2026-11-23 00:00:00', '2026-11-23 00:00:00')"
            ),
            {"id": document, "c": collection},
        )
        conn.execute(text(chunk.format(col="stem_spans")), {"id": old, "d": document, "o": 0, "spans": "[[7, 5, 7]]"})
    upgrade_database(url)
    new_spans = '{"3": [0, 2], "7": [5, 7], "9": [0, 2, 5, 7]}'
    with engine.begin() as conn:
        conn.execute(text(chunk.format(col="term_spans")), {"id": new, "d": document, "o": 1, "spans": new_spans})
        stored = dict(conn.execute(text("SELECT ordinal, term_spans FROM chunks")).all())

    def as_json(value):
        return json.loads(value) if isinstance(value, str) else value  # SQLite returns the JSON text

    assert {k: as_json(v) for k, v in stored.items()} == {0: [[7, 5, 7]], 1: json.loads(new_spans)}
    command.downgrade(alembic_config(url), "0005")
    with engine.connect() as conn:
        stored = dict(conn.execute(text("SELECT ordinal, stem_spans FROM chunks")).all())
    assert {k: as_json(v) for k, v in stored.items()} == {0: [[7, 5, 7]], 1: None}  # older code analyzes NULL rows
    engine.dispose()
    upgrade_database(url)


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_0010_merges_duplicate_uploads_into_the_oldest(backend, tmp_path, request):
    """Documents without an external_id that share their bytes become the oldest of them (its chunks
    and source kept, the others' deleted); documents with an external_id are left alone."""
    from sqlalchemy.exc import IntegrityError

    if backend == "sqlite":
        url = f"sqlite:///{tmp_path / 'm.db'}"
        command.upgrade(alembic_config(url), "0009")
    else:
        url = request.getfixturevalue("own_postgres_url")
        command.downgrade(alembic_config(url), "0009")
    engine = create_engine(url)
    collection = str(uuid.uuid4())
    oldest, younger, youngest, other, with_id = (str(uuid.uuid4()) for _ in range(5))
    document = (
        "INSERT INTO documents (id, collection_id, external_id, title, sha256, metadata, status, chunk_count,"
        " embedded_count, generation, attempts, created_at, updated_at) VALUES (:id, :c, :e, :t, :s, '{}', 'indexed',"
        " 1, 1, 1, 0, :at, :at)"
    )
    chunk = (
        "INSERT INTO chunks (id, document_id, generation, ordinal, text, char_start, char_end, token_count, sparse)"
        " VALUES (:id, :d, 1, 0, '본문', 0, 2, 1, '{}')"
    )
    source = "INSERT INTO document_sources (document_id, generation, data, size) VALUES (:d, 1, :data, 6)"
    with engine.begin() as conn:
        conn.execute(
            text("INSERT INTO collections (id, name, profile, created_at) VALUES (:id, 'c', 'bge-m3-ko', :at)"),
            {"id": collection, "at": "2026-11-23 00:00:00"},
        )
        for doc, external_id, sha, at in (
            (youngest, None, "a" * 64, "2026-11-23 00:00:03"),
            (oldest, None, "a" * 64, "2026-11-23 00:00:01"),
            (younger, None, "a" * 64, "2026-11-23 00:00:02"),
            (other, None, "b" * 64, "2026-11-23 00:00:04"),
            (with_id, "mine", "a" * 64, "2026-11-23 00:00:05"),
        ):
            conn.execute(text(document), {"id": doc, "c": collection, "e": external_id, "t": doc, "s": sha, "at": at})
            conn.execute(text(chunk), {"id": str(uuid.uuid4()), "d": doc})
            conn.execute(text(source), {"d": doc, "data": "본문".encode()})
    upgrade_database(url)
    with engine.connect() as conn:
        kept = {str(r[0]) for r in conn.execute(text("SELECT id FROM documents"))}
        chunk_owners = {str(r[0]) for r in conn.execute(text("SELECT document_id FROM chunks"))}
        source_owners = {str(r[0]) for r in conn.execute(text("SELECT document_id FROM document_sources"))}
    assert kept == chunk_owners == source_owners == {oldest, other, with_id}
    with pytest.raises(IntegrityError), engine.begin() as conn:  # the database now refuses a duplicate
        conn.execute(
            text(document),
            {"id": str(uuid.uuid4()), "c": collection, "e": None, "t": "x", "s": "a" * 64, "at": "2026-11-24 00:00:00"},
        )
    engine.dispose()


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_0011_names_each_existing_collections_index_as_the_code_derived_it(backend, tmp_path, request):
    if backend == "sqlite":
        url = f"sqlite:///{tmp_path / 'm.db'}"
        command.upgrade(alembic_config(url), "0010")
    else:
        url = request.getfixturevalue("own_postgres_url")  # migrated to head
        command.downgrade(alembic_config(url), "0010")
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO collections (id, name, profile, created_at) "
                "VALUES (:id, 'hr-docs', 'ko-sroberta-multitask', '2026-11-23 00:00:00')"
            ),
            {"id": str(uuid.uuid4())},
        )
    upgrade_database(url)
    with engine.connect() as conn:
        row = conn.execute(text("SELECT index_name, index_version, analyzer_version, reindex FROM collections")).one()
    assert tuple(row) == ("saekin_hr_docs_ko_sroberta_multitask", 1, None, None)
    command.downgrade(alembic_config(url), "0010")
    engine.dispose()
    upgrade_database(url)
