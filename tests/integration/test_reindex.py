"""`saekin reindex`: a new index built beside the live one from the stored chunks, then switched to,
on Qdrant Edge (the database names the shard) and through qdrant-client (a Qdrant alias; local
mode here), with uploads, replacements and deletions during the build."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import select, update

from services.collections.model import model_ref
from services.collections.reindex import ReindexError, run_for_runtime
from services.collections.service import get_collection_out
from services.db import session_scope
from services.documents import lifecycle
from services.documents.models import Chunk, Collection, Document, DocumentStatus
from services.errors import Conflict
from services.index import IndexFilter
from services.index.base import VectorIndex
from services.search.schemas import SearchRequest
from services.search.service import search
from services.vectors import SparseVector
from tests.conftest import embed, prepare
from tests.conftest import submit_text as submit

DOCS = {
    "leave": "연차 휴가는 매년 15일이다. 입사 첫해에는 한 달에 하루씩 생긴다.",
    "travel": "국내 출장 숙박비는 하루 10만 원까지 지급한다. 영수증을 내야 한다.",
    "salary": "급여는 매월 25일에 지급한다. 휴일이면 그 전날 지급한다.",
    "security": "사내 보안 교육은 분기마다 한 번 받는다. 미이수자는 계정이 잠긴다.",
}


@pytest.fixture(scope="module")
def other_twin(tmp_path_factory) -> Path:
    """Same architecture as the small twin, other (seeded) weights: a model change of one profile."""
    from config.profiles import get_profile
    from services.embedding.twin import build_twin

    return build_twin(get_profile("bge-m3-ko"), tmp_path_factory.mktemp("twins") / "other", small=True, seed=1)


@pytest.fixture(scope="module")
def sroberta_twin(tmp_path_factory) -> Path:
    """A small ko-sroberta-multitask twin: another profile, whose model reads 128 tokens."""
    from config.profiles import get_profile
    from services.embedding.twin import build_twin

    return build_twin(get_profile("ko-sroberta-multitask"), tmp_path_factory.mktemp("twins") / "sroberta", small=True)


@pytest.fixture(
    params=[("edge", "sqlite"), ("local", "sqlite"), ("edge", "postgres")], ids=["edge", "qdrant-alias", "edge-pg"]
)
def rt(request, make_settings, tmp_path):
    from services.db import upgrade_database
    from services.runtime import Runtime

    engine, database = request.param
    overrides: dict = dict(chunk_tokens=48, chunk_overlap_tokens=8)
    if engine == "local":
        overrides["qdrant_path"] = tmp_path / "qdrant-local"
    if database == "postgres":
        overrides["database_url"] = request.getfixturevalue("own_postgres_url")
    settings = make_settings(**overrides)
    upgrade_database(settings.sqlalchemy_url)
    runtime = Runtime(settings)
    runtime.engine_kind = engine
    yield runtime
    runtime.close()


def ingest(rt, external_id: str, text: str):
    item = submit(rt, text, external_id=external_id)
    prepare(rt, item)
    embed(rt, [item])
    return item


def collection_row(rt, name: str = "c") -> Collection:
    with session_scope(rt.session_factory) as session:
        return session.scalars(select(Collection).where(Collection.name == name)).one()


def searchable_chunks(rt, name: str = "c") -> dict[str, tuple]:
    """Chunk id -> (document, generation) of every chunk searches may show."""
    with session_scope(rt.session_factory) as session:
        rows = session.execute(
            select(Chunk.id, Chunk.document_id, Chunk.generation)
            .join(Document, Document.id == Chunk.document_id)
            .join(Collection, Collection.id == Document.collection_id)
            .where(
                Collection.name == name,
                Chunk.generation == Document.indexed_generation,
                Chunk.layout == Collection.chunk_layout,
            )
        ).all()
    return {str(cid): (doc, gen) for cid, doc, gen in rows}


def sparse_search(rt, query: str, name: str = "c") -> list[str | None]:
    with session_scope(rt.session_factory) as session:
        response = search(
            session,
            index=rt.index,
            analyzer=rt.analyzer,
            query_encoder=None,
            profile=rt.profile,
            collection_name=name,
            request=SearchRequest(query=query, mode="sparse", top_k=3),
        )
    return [hit.external_id for hit in response.results]


def point_ids(index: VectorIndex, name: str, chunk_ids) -> set[str]:
    return set(index.dense_vectors(name, list(chunk_ids)))


def test_a_model_change_builds_a_new_index_switches_to_it_and_drops_the_old(rt, other_twin):
    for key, text in DOCS.items():
        ingest(rt, key, text)
    before = collection_row(rt)
    old_index = before.index_name
    assert before.index_version == 1 and old_index == "saekin_c_bge_m3_ko"
    found_before = sparse_search(rt, "출장 숙박비")
    chunks = searchable_chunks(rt)

    seen: list[tuple[int, int, str | None, str]] = []

    def progress(done: int, total: int) -> None:
        # Until the switch, searches read the old index and GET shows the reindex going on.
        with session_scope(rt.session_factory) as session:
            out = get_collection_out(session, name="c")
        seen.append((done, total, out.index_name, out.reindex.status if out.reindex else ""))
        assert sparse_search(rt, "출장 숙박비") == found_before

    result = run_for_runtime(rt, name="c", model=str(other_twin), progress=progress, batch_documents=1)

    assert seen[0][:2] == (0, 4) and seen[-1][:2] == (4, 4)
    assert all(name == old_index and status == "building" for _, _, name, status in seen[:-1])
    after = collection_row(rt)
    assert after.index_version == 2
    assert after.model == str(other_twin.resolve()) and after.model_sha256 == model_ref(str(other_twin)).sha256
    assert after.model_sha256 != rt.model_ref.sha256
    assert after.reindex["status"] == "done" and after.reindex["documents_done"] == 4
    assert after.reindex["chunks_done"] == len(chunks) == result.chunks
    if rt.engine_kind == "edge":
        # The database names the shard searches open.
        assert after.index_name == result.physical_index == "saekin_c_bge_m3_ko-v2"
    else:
        # A Qdrant alias names the collection; the alias was moved.
        assert after.index_name == "saekin-c" and result.physical_index == "saekin_c_bge_m3_ko-v2"
    assert not rt.index.collection_exists(old_index)
    assert rt.index.count(after.index_name) == len(chunks)
    assert sparse_search(rt, "출장 숙박비") == found_before  # the sparse vectors are the same

    # The new index holds the new model's vectors of the stored chunk texts.
    with session_scope(rt.session_factory) as session:
        texts = {str(i): t for i, t in session.execute(select(Chunk.id, Chunk.text)).all() if str(i) in chunks}
    encoder = rt.encoder_for(str(other_twin), "bge-m3-ko")
    ids = list(texts)
    expected = encoder.encode_documents([texts[i] for i in ids])
    stored = rt.index.dense_vectors(after.index_name, ids)
    for cid, vector in zip(ids, expected):
        got = np.asarray(stored[cid])
        assert np.allclose(got / np.linalg.norm(got), vector / np.linalg.norm(vector), atol=1e-4)

    # Again, back to the service's model: the alias (or the database) moves on, v2 goes.
    again = run_for_runtime(rt, name="c")
    assert collection_row(rt).index_version == 3 and again.physical_index == "saekin_c_bge_m3_ko-v3"
    assert not rt.index.collection_exists("saekin_c_bge_m3_ko-v2")
    assert rt.index.count(collection_row(rt).index_name) == len(chunks)
    assert collection_row(rt).model_sha256 == rt.model_ref.sha256


def test_uploads_replacements_and_deletions_during_the_build_reach_the_new_index(rt):
    items = {key: ingest(rt, key, text) for key, text in DOCS.items()}
    doomed = ingest(rt, "doomed", "폐기될 규정이다. 곧 삭제된다.")
    done_once = []

    def meanwhile(done: int, total: int) -> None:
        if done != 1 or done_once:
            return
        state = collection_row(rt).reindex
        assert state is not None
        target = state["target_index"]
        copied = [
            key
            for key, item in items.items()
            if rt.index.count(target, IndexFilter(document_ids=[str(item.document_id)]))
        ]
        done_once.append(copied)  # the one copied first, unless that was the doomed one
        # While the new index is written: a new document, a replacement of every document (the
        # one copied already among them), a deletion; all published into the live index.
        ingest(rt, "new", "재택 근무는 주 2회까지 신청할 수 있다.")
        for key in DOCS:
            ingest(rt, key, DOCS[key] + " 이 규정은 내년부터 바뀐다.")
        with session_scope(rt.session_factory) as session:
            lifecycle.cancel(session, index=rt.index, collection_name="c", document_id=doomed.document_id)

    result = run_for_runtime(rt, name="c", progress=meanwhile, batch_documents=1)

    assert done_once
    if done_once[0]:  # copied, then replaced: copied again
        assert result.replayed >= 1
    chunks = searchable_chunks(rt)
    name = collection_row(rt).index_name
    assert point_ids(rt.index, name, chunks) == set(chunks)  # every searchable chunk has its point
    assert {gen for _, gen in chunks.values()} == {1, 2}
    assert sparse_search(rt, "재택 근무") == ["new"]
    assert "doomed" not in sparse_search(rt, "폐기 규정 삭제")
    # Only generation 2 is left of the replaced documents; nothing of the deleted one.
    for item in items.values():
        assert rt.index.count(name, IndexFilter(document_ids=[str(item.document_id)])) == sum(
            1 for doc, _ in chunks.values() if doc == item.document_id
        )
    assert rt.index.count(name, IndexFilter(document_ids=[str(doomed.document_id)])) == 0


def test_a_worker_that_wrote_to_the_old_index_writes_again_after_the_switch(rt, monkeypatch):
    ingest(rt, "leave", DOCS["leave"])
    late = submit(rt, DOCS["travel"], external_id="travel")
    prepare(rt, late)
    upsert = rt.index.upsert
    switched = []

    def switch_before_publication(name, points, **kwargs):
        upsert(name, points, **kwargs)  # the worker's points go to the index of its time...
        if not switched:
            switched.append(name)
            run_for_runtime(rt, name="c")  # ...which a reindex retires before the worker publishes

    monkeypatch.setattr(rt.index, "upsert", switch_before_publication)
    embed(rt, [late])

    row = collection_row(rt)
    assert switched == ["saekin_c_bge_m3_ko"] and row.index_version == 2
    with session_scope(rt.session_factory) as session:
        assert session.get(Document, late.document_id).status == DocumentStatus.indexed
    chunks = searchable_chunks(rt)
    assert point_ids(rt.index, row.index_name, chunks) == set(chunks)
    assert sparse_search(rt, "출장 숙박비")[0] == "travel"


def test_an_analyzer_change_recomputes_only_the_sparse_vectors(rt, make_settings):
    for key, text in DOCS.items():
        ingest(rt, key, text)
    chunks = searchable_chunks(rt)
    with session_scope(rt.session_factory) as session:
        good = {str(c.id): (c.sparse, c.term_spans) for c in session.scalars(select(Chunk))}
    name = collection_row(rt).index_name
    dense_before = rt.index.dense_vectors(name, list(chunks))
    # An older analyzer: other sparse vectors in the rows and the index, another version recorded.
    bogus = SparseVector([7], [1.0])
    with session_scope(rt.session_factory) as session:
        session.execute(update(Chunk).values(sparse=bogus, term_spans={}))
        session.execute(update(Collection).values(analyzer_version="2/kiwipiepy-0.20.0"))
    with session_scope(rt.session_factory) as session:
        assert get_collection_out(session, name="c").analyzer_current is False

    from services.runtime import Runtime

    rt.index.close()  # a process of its own (an index has one owner), without the model loaded
    fresh = Runtime(rt.settings)
    try:
        result = run_for_runtime(fresh, name="c", sparse_only=True)
        assert result.recomputed_sparse and not fresh.loaded("encoder")  # the model was never loaded
    finally:
        fresh.close()
    rt.__dict__.pop("_index")
    with session_scope(rt.session_factory) as session:
        out = get_collection_out(session, name="c")
        rows = {str(c.id): (c.sparse, c.term_spans) for c in session.scalars(select(Chunk))}
    assert out.analyzer_current and out.reindex is not None and out.reindex.sparse_only
    # Each chunk analysed alone: the same terms as the pipeline's (which analyses whole sections).
    for cid, (sparse, spans) in rows.items():
        assert set(sparse.indices) == set(good[cid][0].indices) and spans == good[cid][1]
    new_name = collection_row(rt).index_name
    dense_after = rt.index.dense_vectors(new_name, list(chunks))
    assert dense_after.keys() == dense_before.keys()
    assert all(np.allclose(dense_after[k], dense_before[k], atol=1e-6) for k in dense_before)
    assert sparse_search(rt, "출장 숙박비")[0] == "travel"


def test_the_live_index_is_untouched_when_a_reindex_cannot_finish(rt, monkeypatch):
    for key, text in DOCS.items():
        ingest(rt, key, text)
    before = collection_row(rt)
    upsert = rt.index.upsert

    def full_disk(name, points, **kwargs):
        if name != before.index_name:
            raise OSError("no space left on device")
        return upsert(name, points, **kwargs)

    monkeypatch.setattr(rt.index, "upsert", full_disk)
    with pytest.raises(OSError, match="no space left"):
        run_for_runtime(rt, name="c", batch_documents=1)
    monkeypatch.undo()
    after = collection_row(rt)
    assert after.index_name == before.index_name and after.index_version == 1
    assert after.reindex["status"] == "failed" and "no space left" in after.reindex["error"]
    assert not rt.index.collection_exists("saekin_c_bge_m3_ko-v2")
    assert sparse_search(rt, "출장 숙박비")[0] == "travel"

    # One reindex at a time: a running one (recently alive) refuses a second.
    with session_scope(rt.session_factory) as session:
        state = dict(after.reindex, status="building", updated_at=after.reindex["finished_at"])
        session.execute(update(Collection).values(reindex=state))
    with pytest.raises(Conflict, match="being reindexed"):
        run_for_runtime(rt, name="c")


def test_deleting_a_reindexed_collection_drops_its_index(rt):
    from services.collections.service import Deletions

    ingest(rt, "leave", DOCS["leave"])
    result = run_for_runtime(rt, name="c")
    assert rt.index.collection_exists(result.index_name)
    assert Deletions().delete(session_factory=rt.session_factory, index=rt.index, name="c", wait_s=30)
    assert not rt.index.collection_exists(result.physical_index)
    assert not rt.index.collection_exists(result.index_name)


def test_the_cli_reindexes_with_a_progress_bar(tmp_path: Path, small_twin: Path, saekin) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    for key, text in DOCS.items():
        (docs / f"{key}.txt").write_text(text, encoding="utf-8")
    env = dict(SAEKIN_DATA_DIR=str(tmp_path / "data"), SAEKIN_EMBEDDING_MODEL=str(small_twin))
    assert saekin("ingest", str(docs), "--collection", "hr", **env).exit_code == 0
    before = json.loads(saekin("search", "출장 숙박비", "-c", "hr", "--json", **env).stdout)["results"]

    done = saekin("reindex", "--collection", "hr", **env)
    assert done.exit_code == 0, done.stderr
    assert "4 documents" in done.stdout and "saekin_hr_bge_m3_ko-v2" in done.stdout
    assert "reindex hr: 100%" in done.stderr  # tqdm's bar
    after = json.loads(saekin("search", "출장 숙박비", "-c", "hr", "--json", **env).stdout)["results"]
    assert [h["chunk_id"] for h in after] == [h["chunk_id"] for h in before]

    sparse = saekin("reindex", "-c", "hr", "--sparse-only", "--profile", "ko-sroberta-multitask", **env)
    assert sparse.exit_code == 1 and "--sparse-only keeps the collection's model" in sparse.stderr
    missing = saekin("reindex", "-c", "nope", **env)
    assert missing.exit_code == 1 and "does not exist" in missing.stderr


def test_the_running_service_reindexes_a_collection_it_serves(app_client):
    from tests.conftest import unique_collection, wait_for_status

    col = unique_collection()
    for key, text in DOCS.items():
        r = app_client.post(f"/v1/collections/{col}/documents", json={"text": text, "external_id": key})
        assert wait_for_status(app_client, col, r.json()["id"])["status"] == "indexed"
    first = app_client.get(f"/v1/collections/{col}").json()

    started = app_client.post(f"/v1/collections/{col}/reindex", json={})
    assert started.status_code == 202, started.text
    assert started.json()["reindex"]["status"] in ("building", "switching", "done")
    app_client.app.state.reindexes.wait(col, timeout=120)

    done = app_client.get(f"/v1/collections/{col}").json()
    assert done["reindex"]["status"] == "done" and done["reindex"]["documents_done"] == 4
    assert done["index_name"] != first["index_name"] and done["index_name"].endswith("-v2")
    assert done["chunk_count"] == first["chunk_count"]
    hits = app_client.post(f"/v1/collections/{col}/search", json={"query": "출장 숙박비", "top_k": 1}).json()
    assert hits["results"][0]["external_id"] == "travel"

    wrong = app_client.post(f"/v1/collections/{col}/reindex", json={"sparse_only": True, "profile": "bge-m3-ko"})
    assert wrong.status_code == 422 and "--sparse-only keeps" in wrong.json()["error"]["message"]
    missing = app_client.post("/v1/collections/nope-nope/reindex", json={})
    assert missing.status_code == 404


def _cosine(a, b) -> float:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def test_after_a_model_change_the_running_process_serves_the_collection_with_its_new_model(rt, other_twin):
    """No restart: the next search encodes the question with the model the collection now records,
    and the next upload is embedded by it (ModelRegistry)."""
    from config.profiles import get_profile
    from services.collections.model import RecordedModel
    from services.embedding.encoder import Encoder
    from services.ingest.pipeline import embed_documents

    for key, text in DOCS.items():
        ingest(rt, key, text)
    run_for_runtime(rt, name="c", model=str(other_twin))
    other = Encoder(str(other_twin), get_profile("bge-m3-ko"))  # a copy of the new model, for reference
    name = collection_row(rt).index_name

    question = "출장 숙박비는 얼마까지인가"
    with session_scope(rt.session_factory) as session:
        response = search(
            session,
            index=rt.index,
            analyzer=rt.analyzer,
            models=rt.models,
            collection_name="c",
            request=SearchRequest(query=question, mode="dense", top_k=4),
        )
    assert len(response.results) == 4
    vector = other.encode_queries([question])[0]
    stored = rt.index.dense_vectors(name, [str(hit.chunk_id) for hit in response.results])
    for hit in response.results:  # each score is the new model's question against the new vectors
        assert hit.score == pytest.approx(_cosine(vector, stored[str(hit.chunk_id)]), abs=1e-4)
    assert rt.models.loaded_models() == [str(other_twin.resolve())]

    # An upload now: accepted for the collection's model, embedded by it, searchable.
    text = "재택 근무는 주 2회까지 신청할 수 있다."
    with session_scope(rt.session_factory) as session:
        item = lifecycle.store(
            session,
            collection_name="c",
            profile=rt.profile,
            upload=lifecycle.Upload(data=text.encode(), media_type="text/plain", external_id="remote"),
            model=rt.model_ref,
            any_model=True,
        ).item
    prepare(rt, item)
    embed_documents([item], engine=rt.engine, models=rt.models, index=rt.index)
    chunks = [cid for cid, (doc, _) in searchable_chunks(rt).items() if doc == item.document_id]
    got = rt.index.dense_vectors(name, chunks)[chunks[0]]
    assert _cosine(got, other.encode_documents([text])[0]) > 0.9999
    assert _cosine(got, rt.encoder.encode_documents([text])[0]) < 0.99  # not the process's own model
    assert rt.models.encoder(RecordedModel("c", "bge-m3-ko", str(other_twin), None)) is rt.encoder_for(
        str(other_twin), "bge-m3-ko"
    )  # the model the reindex loaded is the one that serves


def test_a_process_limited_to_its_own_model_refuses_a_collection_of_another(rt, other_twin, make_settings):
    from services.runtime import Runtime

    ingest(rt, "leave", DOCS["leave"])
    run_for_runtime(rt, name="c", model=str(other_twin))
    settings = rt.settings.model_copy(update={"max_models": 1})
    own_only = Runtime(settings)
    own_only.__dict__["_index"] = rt.index  # one process owns an Edge data directory
    try:
        with session_scope(own_only.session_factory) as session, pytest.raises(Conflict) as refused:
            search(
                session,
                index=rt.index,
                analyzer=rt.analyzer,
                models=own_only.models,
                collection_name="c",
                request=SearchRequest(query="연차 휴가", mode="hybrid"),
            )
        assert refused.value.code == "model_mismatch"
        assert own_only.models.loaded_models() == []
    finally:
        own_only.__dict__.pop("_index")
        own_only.close()


def test_the_running_service_changes_a_collections_model_without_a_restart(app_client, other_twin):
    from tests.conftest import unique_collection, wait_for_status

    col = unique_collection()
    for key, text in DOCS.items():
        r = app_client.post(f"/v1/collections/{col}/documents", json={"text": text, "external_id": key})
        assert wait_for_status(app_client, col, r.json()["id"])["status"] == "indexed"

    started = app_client.post(f"/v1/collections/{col}/reindex", json={"model": str(other_twin)})
    assert started.status_code == 202, started.text
    app_client.app.state.reindexes.wait(col, timeout=120)
    done = app_client.get(f"/v1/collections/{col}").json()
    assert done["reindex"]["status"] == "done", done
    assert done["model"] == str(other_twin.resolve())

    for mode in ("dense", "hybrid"):
        r = app_client.post(f"/v1/collections/{col}/search", json={"query": "출장 숙박비", "mode": mode})
        assert r.status_code == 200 and r.json()["results"], (mode, r.text)
    r = app_client.post(
        f"/v1/collections/{col}/documents", json={"text": "재택 근무는 주 2회까지다.", "external_id": "new"}
    )
    assert r.status_code == 202, r.text
    assert wait_for_status(app_client, col, r.json()["id"])["status"] == "indexed"
    hits = app_client.post(f"/v1/collections/{col}/search", json={"query": "재택 근무", "mode": "sparse"}).json()
    assert hits["results"][0]["external_id"] == "new"


# Long enough that bge-m3-ko's 510-token chunks are far over ko-sroberta-multitask's 126.
LONG = {key: " ".join(f"제{n}조. {text}" for n in range(1, 21)) for key, text in DOCS.items()}


@pytest.fixture(params=["sqlite", "postgres"])
def wide_rt(make_settings, request):
    """A runtime chunking at the profile's own budget (bge-m3-ko: 510 tokens), Edge on SQLite or PostgreSQL."""
    from services.db import upgrade_database
    from services.runtime import Runtime

    database = {"database_url": request.getfixturevalue("own_postgres_url")} if request.param == "postgres" else {}
    settings = make_settings(chunk_overlap_tokens=8, **database)
    upgrade_database(settings.sqlalchemy_url)
    runtime = Runtime(settings)
    yield runtime
    runtime.close()


def chunk_rows(rt, name: str = "c"):
    with session_scope(rt.session_factory) as session:
        return session.execute(
            select(Chunk.document_id, Chunk.generation, Chunk.layout, Chunk.token_count, Document.external_id)
            .join(Document, Document.id == Chunk.document_id)
            .join(Collection, Collection.id == Document.collection_id)
            .where(Collection.name == name)
        ).all()


def test_a_model_with_a_smaller_budget_chunks_the_documents_again_while_searches_go_on(wide_rt, sroberta_twin):
    from services.documents.service import list_chunks
    from services.ingest.pipeline import embed_documents

    rt = wide_rt
    items = {key: ingest(rt, key, text) for key, text in LONG.items()}
    # Chunked under the old layout, still on its way to the index when the switch comes.
    late = submit(rt, LONG["leave"] + " 늦게 올라온 문서이다.", external_id="late")
    prepare(rt, late)
    before = searchable_chunks(rt)
    assert max(n for *_, n, _ in chunk_rows(rt)) > 126
    found_before = sparse_search(rt, "출장 숙박비")
    during: list[tuple[int, set[str]]] = []

    def meanwhile(done: int, total: int) -> None:
        # The live layout is what searches and the chunk listing show until the switch (the last
        # report comes after it).
        if collection_row(rt).chunk_layout == 0:
            assert sparse_search(rt, "출장 숙박비") == found_before
        with session_scope(rt.session_factory) as session:
            _, _, rows, _ = list_chunks(session, collection_name="c", document_id=items["travel"].document_id)
        during.append((done, {str(r.id) for r in rows}))
        if done == 1 and len(during) == 2:  # an upload during the build: chunked again by the replay
            ingest(rt, "new", " ".join(f"재택 근무는 주 2회까지 신청할 수 있다. ({n})" for n in range(40)))

    result = run_for_runtime(
        rt, name="c", profile="ko-sroberta-multitask", model=str(sroberta_twin), progress=meanwhile, batch_documents=1
    )

    assert result.rechunked  # "new" is copied by the main pass or replayed, by where its id sorts
    assert len(during) >= 6  # 0, after each document, and the end
    assert all(ids <= set(before) for _, ids in during[:-1])  # old rows, until the switch
    assert not during[-1][1] & set(before)
    row = collection_row(rt)
    assert row.chunk_layout == 1 and row.profile == "ko-sroberta-multitask" and row.reindex["rechunk"] is True
    after = searchable_chunks(rt)
    assert not set(after) & set(before)
    rows = chunk_rows(rt)
    live = [r for r in rows if r.external_id != "late"]
    assert {r.layout for r in live} == {1} and max(r.token_count for r in live) <= 126
    assert len(after) > len(before) and rt.index.count(row.index_name) == len(after)
    assert {r.external_id for r in live} == {*LONG, "new"}
    assert sparse_search(rt, "출장 숙박비")[0] == "travel"
    assert sparse_search(rt, "재택 근무")[0] == "new"
    with session_scope(rt.session_factory) as session:
        dense = search(
            session,
            index=rt.index,
            analyzer=rt.analyzer,
            models=rt.models,
            collection_name="c",
            request=SearchRequest(query="출장 숙박비", mode="hybrid", top_k=3),
        )
    assert dense.results and dense.results[0].external_id == "travel"

    # Chunked under the old layout before the switch: sent back to be chunked again, then indexed.
    embed_documents([late], engine=rt.engine, models=rt.models, index=rt.index)
    with session_scope(rt.session_factory) as session:
        assert session.get(Document, late.document_id).status == DocumentStatus.queued
    prepare(rt, late)
    embed(rt, [late])
    with session_scope(rt.session_factory) as session:
        assert session.get(Document, late.document_id).status == DocumentStatus.indexed
    late_rows = [r for r in chunk_rows(rt) if r.external_id == "late"]
    assert {r.layout for r in late_rows} == {1} and max(r.token_count for r in late_rows) <= 126

    # A new upload is chunked by the collection's new model.
    with session_scope(rt.session_factory) as session:
        upload = lifecycle.Upload(data=LONG["salary"].replace("급여", "상여금").encode(), media_type="text/plain")
        fresh = lifecycle.store(
            session, collection_name="c", profile=rt.profile, upload=upload, model=rt.model_ref, any_model=True
        ).item
    prepare(rt, fresh)
    embed(rt, [fresh])
    fresh_rows = [r for r in chunk_rows(rt) if r.document_id == fresh.document_id]
    assert {r.layout for r in fresh_rows} == {1} and max(r.token_count for r in fresh_rows) <= 126


def test_a_failed_re_chunking_leaves_the_live_chunks_and_removes_the_new_ones(wide_rt, sroberta_twin, monkeypatch):
    rt = wide_rt
    for key, text in LONG.items():
        ingest(rt, key, text)
    before = chunk_rows(rt)
    upsert = rt.index.upsert
    live_index = collection_row(rt).index_name
    writes = []

    def failing_second_write(name, points, **kwargs):
        if name != live_index:
            writes.append(name)
            if len(writes) == 2:
                raise OSError("no space left on device")
        return upsert(name, points, **kwargs)

    monkeypatch.setattr(rt.index, "upsert", failing_second_write)
    with pytest.raises(OSError):
        run_for_runtime(rt, name="c", profile="ko-sroberta-multitask", model=str(sroberta_twin), batch_documents=1)
    monkeypatch.undo()
    row = collection_row(rt)
    assert row.chunk_layout == 0 and row.reindex["status"] == "failed" and row.profile == "bge-m3-ko"
    assert sorted(chunk_rows(rt)) == sorted(before)
    assert sparse_search(rt, "출장 숙박비")[0] == "travel"


def test_told_not_to_re_chunk_a_reindex_refuses_chunks_the_new_model_cannot_read(wide_rt, sroberta_twin):
    rt = wide_rt
    ingest(rt, "leave", LONG["leave"])
    with pytest.raises(ReindexError) as refused:
        run_for_runtime(rt, name="c", profile="ko-sroberta-multitask", model=str(sroberta_twin), rechunk=False)
    assert refused.value.code == "rechunk_needed" and "--rechunk" in refused.value.message
    assert collection_row(rt).chunk_layout == 0


def test_the_running_service_re_chunks_for_a_model_with_a_smaller_budget(app_client, sroberta_twin):
    from tests.conftest import unique_collection, wait_for_status

    col = unique_collection()
    ids = {}
    for key, text in LONG.items():
        r = app_client.post(f"/v1/collections/{col}/documents", json={"text": text, "external_id": key})
        ids[key] = r.json()["id"]
        assert wait_for_status(app_client, col, ids[key])["status"] == "indexed"
    body = {"profile": "ko-sroberta-multitask", "model": str(sroberta_twin)}
    assert app_client.post(f"/v1/collections/{col}/reindex", json=body).status_code == 202
    app_client.app.state.reindexes.wait(col, timeout=120)
    done = app_client.get(f"/v1/collections/{col}").json()
    assert done["reindex"]["status"] == "done" and done["reindex"]["rechunk"] is True, done
    assert done["profile"] == "ko-sroberta-multitask"

    chunks = app_client.get(f"/v1/collections/{col}/documents/{ids['travel']}/chunks").json()
    assert chunks["items"] and max(c["token_count"] for c in chunks["items"]) <= 126
    context = app_client.post(
        f"/v1/collections/{col}/context", json={"query": "출장 숙박비", "mode": "hybrid", "max_tokens": 300}
    )
    assert context.status_code == 200 and context.json()["citations"][0]["external_id"] == "travel", context.text
