"""`saekin backup` / `saekin restore` of the embedded default: the SQLite database and the Qdrant Edge
shards copied while documents are being written, restored into a fresh data directory, searched."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest
from sqlalchemy import select

from services.backup import MANIFEST, backup_embedded, restore_embedded
from services.datadir import DataDirLock
from services.db import session_scope
from services.documents import lifecycle
from services.documents.models import Chunk, Collection, Document, DocumentStatus
from services.errors import Conflict, DataDirLocked
from services.search.schemas import SearchRequest
from services.search.service import search
from tests.conftest import embed, prepare
from tests.conftest import submit_text as submit

DOCS = {
    "leave": "연차 휴가는 매년 15일이다. 입사 첫해에는 한 달에 하루씩 생긴다.",
    "travel": "국내 출장 숙박비는 하루 10만 원까지 지급한다. 영수증을 내야 한다.",
    "salary": "급여는 매월 25일에 지급한다. 휴일이면 그 전날 지급한다.",
    "security": "사내 보안 교육은 분기마다 한 번 받는다. 미이수자는 계정이 잠긴다.",
}
QUERIES = ["출장 숙박비 한도", "연차 휴가 일수", "급여 지급일", "보안 교육 미이수"]


def open_runtime(settings):
    from services.db import upgrade_database
    from services.runtime import Runtime

    upgrade_database(settings.sqlalchemy_url)
    return Runtime(settings)


def ingest(rt, external_id: str, text: str, collection: str = "c"):
    item = submit(rt, text, external_id=external_id, collection=collection)
    prepare(rt, item)
    embed(rt, [item])
    return item


def hybrid(rt, query: str, collection: str = "c") -> list[tuple]:
    with session_scope(rt.session_factory) as session:
        response = search(
            session,
            index=rt.index,
            analyzer=rt.analyzer,
            query_encoder=rt.query_encoder,
            profile=rt.profile,
            collection_name=collection,
            request=SearchRequest(query=query, mode="hybrid", top_k=3),
        )
    return [(hit.external_id, str(hit.chunk_id), round(hit.score, 5)) for hit in response.results]


def consistent(rt) -> None:
    """Every chunk the database calls searchable has its point in the index."""
    with session_scope(rt.session_factory) as session:
        collections = list(session.scalars(select(Collection)))
        for collection in collections:
            ids = [
                str(i)
                for i in session.scalars(
                    select(Chunk.id)
                    .join(Document, Document.id == Chunk.document_id)
                    .where(Document.collection_id == collection.id, Chunk.generation == Document.indexed_generation)
                )
            ]
            assert set(rt.index.dense_vectors(collection.index_name, ids)) == set(ids), collection.name


@pytest.fixture
def serving(make_settings, tmp_path):
    settings = make_settings(data_dir=tmp_path / "live", chunk_tokens=48, chunk_overlap_tokens=8)
    rt = open_runtime(settings)
    yield rt
    rt.close()


def test_a_backup_taken_while_documents_change_restores_to_the_same_search_results(serving, make_settings, tmp_path):
    rt = serving
    for key, text in DOCS.items():
        ingest(rt, key, text)
    ingest(rt, "other", "다른 컬렉션의 문서이다. 출장 규정과 무관하다.", collection="other")
    before = {q: hybrid(rt, q) for q in QUERIES}

    # Uploads and deletions go on in another thread while the backup is taken, as in the service.
    stop, rounds = threading.Event(), []

    def writer() -> None:
        n = 0
        while not stop.is_set() or len(rounds) < 4:
            n += 1
            item = ingest(rt, f"w{n}", f"임시 공지 {n}번이다. 회의실 예약은 하루 전까지 한다.")
            if n % 2 == 0:
                with session_scope(rt.session_factory) as session:
                    lifecycle.cancel(session, index=rt.index, collection_name="c", document_id=item.document_id)
            rounds.append(n)

    thread = threading.Thread(target=writer)
    thread.start()
    while len(rounds) < 2:
        thread.join(0.05)
    manifest = backup_embedded(
        database_path=rt.settings.data_dir / "saekin.db", index=rt.index, destination=tmp_path / "backup"
    )
    stop.set()
    thread.join()

    assert (tmp_path / "backup" / MANIFEST).is_file()
    assert set(manifest.collections) == {"c", "other"}
    assert manifest.collections["c"]["points"] >= manifest.collections["c"]["chunks"] - manifest.reembed_documents
    assert {"saekin_c_bge_m3_ko", "saekin_other_bge_m3_ko"} <= set(manifest.shards)
    with pytest.raises(Conflict, match="not empty"):
        backup_embedded(
            database_path=rt.settings.data_dir / "saekin.db", index=rt.index, destination=tmp_path / "backup"
        )

    # Into a fresh data directory: the same passages, in the same order, with the same scores.
    restored = restore_embedded(tmp_path / "backup", tmp_path / "fresh")
    assert restored.moved_aside is None
    fresh = open_runtime(make_settings(data_dir=tmp_path / "fresh", chunk_tokens=48, chunk_overlap_tokens=8))
    try:
        while fresh.embed_waiting(owner="test"):  # what the backup found without points, if anything
            pass
        consistent(fresh)
        # The notices written meanwhile are in the backup as far as they were published (they
        # shift IDF and fused scores a little): the passage each question finds stays the same.
        for query, hits in before.items():
            assert hybrid(fresh, query)[0][:2] == hits[0][:2], query
        assert hybrid(fresh, "다른 컬렉션 문서", collection="other")[0][0] == "other"
        # Writes go on in the restored service.
        ingest(fresh, "after", "복원 뒤에 올린 문서이다. 주차 등록은 총무팀에 한다.")
        assert hybrid(fresh, "주차 등록")[0][0] == "after"
    finally:
        fresh.close()


def test_a_document_whose_points_went_before_its_rows_is_embedded_again_on_restore(serving, make_settings, tmp_path):
    rt = serving
    items = {key: ingest(rt, key, text) for key, text in DOCS.items()}
    # A deletion caught between its two steps: the points are gone, the rows not yet.
    with session_scope(rt.session_factory) as session:
        name = session.scalars(select(Collection.index_name)).one()
    assert name is not None
    rt.index.delete_document(name, str(items["travel"].document_id))

    manifest = backup_embedded(
        database_path=rt.settings.data_dir / "saekin.db", index=rt.index, destination=tmp_path / "backup"
    )
    assert manifest.reembed_documents == 1 and manifest.collections["c"]["reembed_documents"] == 1

    restore_embedded(tmp_path / "backup", tmp_path / "fresh")
    fresh = open_runtime(make_settings(data_dir=tmp_path / "fresh", chunk_tokens=48, chunk_overlap_tokens=8))
    try:
        while fresh.embed_waiting(owner="test"):
            pass
        with session_scope(fresh.session_factory) as session:
            assert session.get(Document, items["travel"].document_id).status == DocumentStatus.indexed
        consistent(fresh)
        assert hybrid(fresh, "출장 숙박비 한도")[0][0] == "travel"
    finally:
        fresh.close()


def test_restore_refuses_a_running_service_and_moves_existing_data_aside_only_when_forced(
    serving, make_settings, tmp_path
):
    rt = serving
    ingest(rt, "leave", DOCS["leave"])
    backup_embedded(database_path=rt.settings.data_dir / "saekin.db", index=rt.index, destination=tmp_path / "b")

    # `saekin serve` holds its data directory's lock: a restore there is refused, even forced.
    with pytest.raises(DataDirLocked), DataDirLock(rt.settings.data_dir):
        restore_embedded(tmp_path / "b", rt.settings.data_dir, force=True)
    restore_embedded(tmp_path / "b", tmp_path / "other")
    with pytest.raises(Conflict, match="--force"):
        restore_embedded(tmp_path / "b", tmp_path / "other")
    again = restore_embedded(tmp_path / "b", tmp_path / "other", force=True)
    assert again.moved_aside is not None and (again.moved_aside / "saekin.db").is_file()
    assert (again.moved_aside / "qdrant").is_dir()
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "saekin.db").write_bytes(b"")
    with pytest.raises(Exception, match="not a finished Saekin backup"):
        restore_embedded(tmp_path / "half", tmp_path / "third")


def test_the_cli_backs_up_and_restores(tmp_path: Path, small_twin: Path, saekin) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    for key, text in DOCS.items():
        (docs / f"{key}.txt").write_text(text, encoding="utf-8")
    live = dict(SAEKIN_DATA_DIR=str(tmp_path / "live"), SAEKIN_EMBEDDING_MODEL=str(small_twin))
    assert saekin("ingest", str(docs), "-c", "hr", **live).exit_code == 0
    before = json.loads(saekin("search", "출장 숙박비", "-c", "hr", "--json", **live).stdout)["results"]

    made = saekin("backup", str(tmp_path / "b"), **live)
    assert made.exit_code == 0, made.stderr
    assert "hr: 4 documents, 4 chunks, 4 points" in made.stdout and "index writes paused" in made.stdout

    fresh = dict(SAEKIN_DATA_DIR=str(tmp_path / "fresh"), SAEKIN_EMBEDDING_MODEL=str(small_twin))
    done = saekin("restore", str(tmp_path / "b"), **fresh)
    assert done.exit_code == 0, done.stderr
    assert "1 collections" in done.stdout
    after = json.loads(saekin("search", "출장 숙박비", "-c", "hr", "--json", **fresh).stdout)["results"]
    assert [(h["chunk_id"], h["score"]) for h in after] == [(h["chunk_id"], h["score"]) for h in before]
    refused = saekin("restore", str(tmp_path / "b"), **fresh)
    assert refused.exit_code == 1 and "--force" in refused.stderr
    production = saekin("backup", str(tmp_path / "c"), **live, SAEKIN_QDRANT_URL="http://127.0.0.1:1")
    assert production.exit_code == 1 and "embedded default" in production.stderr


def test_the_running_service_takes_a_backup_while_it_serves(app_client, make_settings, tmp_path):
    from tests.conftest import unique_collection, wait_for_status

    col = unique_collection()
    for key, text in DOCS.items():
        r = app_client.post(f"/v1/collections/{col}/documents", json={"text": text, "external_id": key})
        assert wait_for_status(app_client, col, r.json()["id"])["status"] == "indexed"
    query = {"query": "출장 숙박비", "top_k": 2, "mode": "sparse"}
    before = app_client.post(f"/v1/collections/{col}/search", json=query).json()["results"]

    taken = app_client.post("/v1/backup", json={"directory": str(tmp_path / "b")})
    if app_client.runtime.engine.url.get_backend_name() != "sqlite":  # production: pg_dump and snapshots
        assert taken.status_code == 422 and taken.json()["error"]["code"] == "backup_not_embedded"
        return
    assert taken.status_code == 200, taken.text
    assert taken.json()["manifest"]["collections"][col]["chunks"] == 4
    relative = app_client.post("/v1/backup", json={"directory": "relative/dir"})
    assert relative.status_code == 422
    # The service went on serving; the backup restores to the same results.
    assert app_client.post(f"/v1/collections/{col}/search", json=query).json()["results"] == before
    restore_embedded(tmp_path / "b", tmp_path / "fresh")
    fresh = open_runtime(make_settings(data_dir=tmp_path / "fresh"))
    try:
        with session_scope(fresh.session_factory) as session:
            response = search(
                session,
                index=fresh.index,
                analyzer=fresh.analyzer,
                query_encoder=None,
                profile=fresh.profile,
                collection_name=col,
                request=SearchRequest(**query),
            )
        assert [str(h.chunk_id) for h in response.results] == [h["chunk_id"] for h in before]
    finally:
        fresh.close()
