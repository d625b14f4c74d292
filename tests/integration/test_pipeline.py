"""The ingest pipeline's stages on a real SQLite database, Qdrant Edge and the small twin."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from services.db import session_scope
from services.documents import lifecycle
from services.documents.lifecycle import EmbedBatch, Lease, WorkItem
from services.documents.models import Chunk, Collection, Document, DocumentStage, DocumentStatus, index_name
from services.ingest.pipeline import embed_each_on_failure
from services.vectors import SparseVector
from tests.conftest import embed, embed_stage, prepare
from tests.conftest import submit_text as submit


@pytest.fixture
def rt(make_settings):
    from services.db import upgrade_database
    from services.runtime import Runtime

    settings = make_settings(chunk_tokens=48, chunk_overlap_tokens=8)
    upgrade_database(settings.sqlalchemy_url)
    runtime = Runtime(settings)
    yield runtime
    runtime.close()


def chunks_of(rt, item: WorkItem) -> list[Chunk]:
    with session_scope(rt.session_factory) as session:
        return list(session.scalars(select(Chunk).where(Chunk.document_id == item.document_id).order_by(Chunk.ordinal)))


def index_name_of(rt, collection: str = "c") -> str:
    with session_scope(rt.session_factory) as session:
        return index_name(session.scalars(select(Collection).where(Collection.name == collection)).one())


TEXT = "\n\n".join(
    f"제{i}조(목적) 이 법은 국민의 건강을 보호하고 삶의 질을 높이는 것을 목적으로 한다. "
    f"국가는 {i}년마다 기본계획을 세워야 한다."
    for i in range(1, 30)
)


def test_chunks_cover_every_character_and_respect_the_budget(rt):
    item = submit(rt, TEXT)
    n = prepare(rt, item)
    chunks = chunks_of(rt, item)
    assert n == len(chunks) > 3
    covered = [False] * len(TEXT)
    for chunk in chunks:
        assert TEXT[chunk.char_start : chunk.char_end] == chunk.text
        assert chunk.token_count <= 48
        assert len(rt.tokenizer(chunk.text, add_special_tokens=False)["input_ids"]) <= 48
        assert chunk.sparse.indices
        for flat in chunk.term_spans.values():  # places of content morphemes, offsets into the chunk's text
            for start, end in zip(flat[::2], flat[1::2]):
                assert 0 <= start < end <= len(chunk.text)
        for i in range(chunk.char_start, chunk.char_end):
            covered[i] = True
    assert all(covered)
    places = {
        chunk.text[a:b] for chunk in chunks for flat in chunk.term_spans.values() for a, b in zip(flat[::2], flat[1::2])
    }
    assert {"높이", "세워", "국민", "건강"} <= places  # stems (높이는 -> 높이, 세워야 -> 세우) and nouns
    with session_scope(rt.session_factory) as session:
        doc = session.get(Document, item.document_id)
        assert doc.stage == DocumentStage.embedding and doc.status == DocumentStatus.processing
        assert doc.char_count == len(TEXT) and doc.text_sha256


def test_embedding_batch_takes_waiting_documents_together(rt):
    items = [submit(rt, f"{i}번 문서의 내용은 서로 다르다. 번호는 {i}이다.") for i in range(5)]
    for item in items:
        prepare(rt, item)
    batch = lifecycle.claim_embed_batch(rt.engine, lease=Lease("task-0", 600, 10), max_chunks=1000)
    assert batch.items == items and not batch.more_waiting  # oldest first
    # A document over the budget still goes, alone.
    assert lifecycle.claim_embed_batch(rt.engine, lease=Lease("task-0", 600, 10), max_chunks=0) == EmbedBatch(
        items[:1], more_waiting=True
    )
    embed(rt, batch.items)
    with session_scope(rt.session_factory) as session:
        statuses = {d.status for d in session.scalars(select(Document))}
    assert statuses == {DocumentStatus.indexed}
    assert rt.index.count(index_name_of(rt)) == sum(len(chunks_of(rt, i)) for i in items)
    embed(rt, [items[1]])  # a redelivered batch: nothing to do, no duplicates
    assert rt.index.count(index_name_of(rt)) == sum(len(chunks_of(rt, i)) for i in items)
    assert lifecycle.claim_embed_batch(rt.engine, lease=Lease("task-1", 600, 10)) == EmbedBatch([], more_waiting=False)


def test_embedding_batch_respects_the_chunk_and_document_limits(rt):
    items = [submit(rt, f"{i}번 문서의 내용은 서로 다르다. 번호는 {i}이다.") for i in range(4)]
    counts = [prepare(rt, item) for item in items]
    by_chunks = lifecycle.claim_embed_batch(rt.engine, lease=Lease("task-0", 600, 10), max_chunks=counts[0] + counts[1])
    assert by_chunks == EmbedBatch(items[:2], more_waiting=True)
    by_documents = lifecycle.claim_embed_batch(rt.engine, lease=Lease("task-1", 600, 10), max_documents=1)
    assert by_documents == EmbedBatch(items[2:3], more_waiting=True)
    assert lifecycle.claim_embed_batch(rt.engine, lease=Lease("task-2", 600, 10)) == EmbedBatch(
        items[3:], more_waiting=False
    )


@pytest.fixture(params=["sqlite", "postgres"])
def rt_on_each_database(request, make_settings, tmp_path):
    """A runtime on SQLite and on a PostgreSQL database of its own (claims lock with FOR UPDATE SKIP LOCKED)."""
    from services.db import upgrade_database
    from services.runtime import Runtime

    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'claims.db'}"
        upgrade_database(url)
    else:
        url = request.getfixturevalue("own_postgres_url")
    runtime = Runtime(make_settings(database_url=url, chunk_tokens=48, chunk_overlap_tokens=8))
    yield runtime
    runtime.close()


def _claim_state(rt, items) -> set:
    with session_scope(rt.session_factory) as session:
        return {
            (d.lease_owner, d.status)
            for d in session.scalars(select(Document).where(Document.id.in_([i.document_id for i in items])))
        }


def test_embed_workers_never_take_documents_another_holds(rt_on_each_database):
    rt = rt_on_each_database
    items = [submit(rt, f"{i}번 문서는 청구 시험에 쓰인다.") for i in range(4)]
    for item in items:
        prepare(rt, item)
    assert lifecycle.claim_embed_batch(rt.engine, lease=Lease("gpu-a", 600, 10)).items == items
    # Another GPU's worker finds nothing to take while the claim lasts.
    assert lifecycle.claim_embed_batch(rt.engine, lease=Lease("gpu-b", 600, 10)).items == []
    # The first task, redelivered after its worker died, takes its documents back at once.
    assert lifecycle.claim_embed_batch(rt.engine, lease=Lease("gpu-a", 0, 10)).items == items
    # Its lease (0 s this time) has run out: any task may take them now.
    assert lifecycle.claim_embed_batch(rt.engine, lease=Lease("gpu-b", 600, 10)).items == items
    embed(rt, items)
    assert _claim_state(rt, items) == {(None, DocumentStatus.indexed)}
    # A new generation waits unclaimed, whatever claim the one before it had.
    replacement = submit(rt, "0번 문서의 새 내용이다.")
    prepare(rt, replacement)
    assert _claim_state(rt, [replacement]) == {(None, DocumentStatus.processing)}


def test_an_embed_task_that_gives_up_fails_its_whole_batch(rt):
    from workers import tasks

    other = submit(rt, "다른 작업이 잡고 있는 문서이다.")
    prepare(rt, other)
    assert lifecycle.claim_embed_batch(rt.engine, lease=Lease("other-task", 600, 10)).items == [other]
    items = [submit(rt, f"{i}번 문서는 실패한 일괄 작업에 들어 있었다.") for i in range(3)]
    for item in items:
        prepare(rt, item)
    assert lifecycle.claim_embed_batch(rt.engine, lease=Lease("doomed-task", 600, 10)).items == items
    tasks.use_runtime(rt)
    try:  # what Celery calls once the task's retries are exhausted
        tasks.embed.on_failure(RuntimeError("CUDA error: out of memory"), "doomed-task", (), {}, None)
    finally:
        tasks.use_runtime(None)
    with session_scope(rt.session_factory) as session:
        docs = {d.id: d for d in session.scalars(select(Document))}
    for item in items:
        assert docs[item.document_id].status == DocumentStatus.failed
        assert "out of memory" in docs[item.document_id].error and docs[item.document_id].lease_owner is None
    assert docs[other.document_id].status == DocumentStatus.processing  # another task's batch is not touched


@pytest.mark.postgres
def test_concurrent_embed_tasks_claim_disjoint_batches(make_settings, own_postgres_url):
    from concurrent.futures import ThreadPoolExecutor

    from services.runtime import Runtime

    rt = Runtime(make_settings(database_url=own_postgres_url, chunk_tokens=48, chunk_overlap_tokens=8))
    try:
        items = [submit(rt, f"{i}번 문서를 여러 작업자가 동시에 노린다.") for i in range(24)]
        for item in items:
            prepare(rt, item)
        with ThreadPoolExecutor(8) as pool:  # eight embed tasks at once
            batches = list(
                pool.map(
                    lambda i: (
                        lifecycle.claim_embed_batch(rt.engine, lease=Lease(f"task-{i}", 600, 10), max_documents=3).items
                    ),
                    range(8),
                )
            )
        taken = [item for batch in batches for item in batch]
        assert len(taken) == len(set(taken))  # no document in two batches
        assert set(taken) <= set(items) and taken
    finally:
        rt.close()


def test_a_stale_generation_is_skipped(rt):
    old = submit(rt, "첫 번째 내용이다.", external_id="x")
    new = submit(rt, "두 번째 내용으로 바뀌었다.", external_id="x")
    assert new.generation == old.generation + 1
    assert prepare(rt, old) is None
    rt.process_now([new])
    with session_scope(rt.session_factory) as session:
        doc = session.get(Document, new.document_id)
        assert doc.status == DocumentStatus.indexed and doc.indexed_generation == new.generation
    assert all(c.generation == new.generation for c in chunks_of(rt, new))


def test_a_document_deleted_while_embedding_leaves_no_points(rt):
    keep = submit(rt, "남아 있어야 하는 문서이다.")
    gone = submit(rt, "지워질 문서이다. 임베딩 도중에 삭제된다.")
    rt.process_now([keep])
    prepare(rt, gone)
    with session_scope(rt.session_factory) as session:
        lifecycle.cancel(session, index=rt.index, collection_name="c", document_id=gone.document_id)
    embed(rt, [gone])
    assert rt.index.count(index_name_of(rt)) == len(chunks_of(rt, keep))


def test_a_document_without_text_fails_with_a_reason(rt):
    item = submit(rt, "   \n\u200b\t  ")
    rt.process_now([item])
    with session_scope(rt.session_factory) as session:
        doc = session.get(Document, item.document_id)
        assert doc.status == DocumentStatus.failed and "no text" in doc.error


def test_a_batch_publishes_live_generations_and_cleans_up_after_replaced_ones(rt):
    plain = submit(rt, "그대로 색인되는 문서이다.", external_id="a")
    first = submit(rt, "처음 올린 내용이다. 나중에 바뀐다.", external_id="b")
    rt.process_now([first])
    second = submit(rt, "두 번째로 올린 내용이다. 이전 조각은 지워진다.", external_id="b")
    racing = submit(rt, "임베딩 도중에 다시 올라오는 문서이다.", external_id="c")
    for item in (plain, second, racing):
        prepare(rt, item)
    submit(rt, "임베딩 도중에 바뀐 내용이다.", external_id="c")  # c's generation 2 arrives while 1 is embedding
    embed(rt, [plain, second, racing])

    with session_scope(rt.session_factory) as session:
        docs = {d.external_id: d for d in session.scalars(select(Document))}
    for key, generation in (("a", 1), ("b", 2)):
        assert docs[key].status == DocumentStatus.indexed and docs[key].indexed_generation == generation
        assert docs[key].embedded_count == docs[key].chunk_count >= 1
    assert docs["c"].status == DocumentStatus.queued and docs["c"].indexed_generation is None
    assert {c.generation for c in chunks_of(rt, second)} == {2}  # generation 1's rows are gone
    # Points: a's and b's generation 2; none of b's generation 1 nor of c's superseded generation.
    assert rt.index.count(index_name_of(rt)) == len(chunks_of(rt, plain)) + len(chunks_of(rt, second))


def test_a_document_that_cannot_be_embedded_fails_alone(rt):
    items = [submit(rt, f"{i}번 문서는 같은 일괄 작업에 들어 있다.") for i in range(3)]
    for item in items:
        prepare(rt, item)
    broken = items[1]
    with rt.engine.begin() as conn:  # a chunk row the index cannot take (say, written by a buggy version)
        conn.execute(
            Chunk.__table__.update()
            .where(Chunk.__table__.c.document_id == broken.document_id)
            .values(sparse=SparseVector(["not a term id"], [1.0]))
        )

    failures = embed_each_on_failure(items, **embed_stage(rt))

    assert [item for item, _ in failures] == [broken]
    with session_scope(rt.session_factory) as session:
        docs = {d.id: d for d in session.scalars(select(Document))}
    assert [docs[i.document_id].status for i in (items[0], items[2])] == [DocumentStatus.indexed] * 2
    assert rt.index.count(index_name_of(rt)) == len(chunks_of(rt, items[0])) + len(chunks_of(rt, items[2]))
    # Alone, the failure is raised: it may be the service's own (the caller retries or fails it).
    with pytest.raises(TypeError):  # the engine refuses a term id that is not an integer
        embed_each_on_failure([broken], **embed_stage(rt))


def test_a_late_worker_leaves_a_newer_generations_points_alone(rt, monkeypatch):
    # Worker A embeds generation 1 and upserts its points; meanwhile generation 2 arrives and worker
    # B upserts its points too. A publishes first, finds generation 1 replaced and must delete its
    # own points only; then B publishes generation 2.
    from services.ingest import pipeline

    first = submit(rt, "처음 올린 내용이다. 곧 바뀐다.", external_id="x")
    prepare(rt, first)
    publish, upsert = pipeline._publish, rt.index.upsert
    deferred = []

    def upsert_then_b_runs_up_to_its_publication(name, points, **kwargs):
        upsert(name, points, **kwargs)
        monkeypatch.setattr(rt.index, "upsert", upsert)
        second = submit(rt, "두 번째 내용이다. 이것이 검색되어야 한다.", external_id="x")
        prepare(rt, second)
        monkeypatch.setattr(pipeline, "_publish", lambda items, names, **_: deferred.append((items, names)))
        embed(rt, [second])  # B: embeds and upserts; its publication waits
        monkeypatch.setattr(pipeline, "_publish", publish)

    monkeypatch.setattr(rt.index, "upsert", upsert_then_b_runs_up_to_its_publication)
    embed(rt, [first])  # A
    [(items, names)] = deferred
    publish(items, names, engine=rt.engine, index=rt.index)  # B publishes last
    second = items[0]

    with session_scope(rt.session_factory) as session:
        doc = session.get(Document, second.document_id)
        assert doc.status == DocumentStatus.indexed and doc.indexed_generation == 2
    assert {c.generation for c in chunks_of(rt, second)} == {2}
    assert rt.index.count(index_name_of(rt)) == len(chunks_of(rt, second)) >= 1


def test_headings_are_normalized_like_the_text(rt):
    import unicodedata

    heading = unicodedata.normalize("NFD", "서울\u200b시 공고")  # decomposed Hangul, a zero-width space
    with session_scope(rt.session_factory) as session:
        result = lifecycle.store(
            session,
            collection_name="c",
            profile=rt.settings.embedding_profile,
            upload=lifecycle.Upload(
                data=f"# {heading}\n\n공고 내용이다.".encode(), filename="notice.md", media_type=None
            ),
        )
        item = WorkItem(result.document.id, result.generation)
    prepare(rt, item)
    [chunk] = chunks_of(rt, item)
    assert chunk.heading == "서울시 공고" and chunk.text.startswith("서울시 공고")


def test_a_long_text_shows_the_chunking_stage_while_it_is_analysed(rt, monkeypatch):
    item = submit(rt, "긴 문서의 문장이 계속 이어진다. " * 3000)  # 54,000 characters: seconds of Kiwi
    analyze_many, seen = rt.analyzer.analyze_many, []

    def watching(texts):
        with session_scope(rt.session_factory) as session:
            seen.append(session.get(Document, item.document_id).stage)
        return analyze_many(texts)

    monkeypatch.setattr(rt.analyzer, "analyze_many", watching)
    prepare(rt, item)
    assert seen == [DocumentStage.chunking]


def test_every_term_of_a_long_sentence_is_in_some_chunks_sparse_vector(rt):
    # One sentence far over the 48-token budget: cut between words, where bigrams span the cut.
    text = " ".join(f"{i}번째 지방자치단체 탄소중립 이행계획 점검 결과" for i in range(12)) + "이다."
    item = submit(rt, text)
    prepare(rt, item)
    chunks = chunks_of(rt, item)
    assert len(chunks) > 3
    in_chunks = {i for chunk in chunks for i in chunk.sparse.indices}
    assert set(rt.analyzer.document_vector(rt.analyzer.terms(text)).indices) <= in_chunks


def test_search_looks_deeper_when_unpublished_chunks_fill_the_first_hits(rt, monkeypatch):
    from services.ingest import pipeline
    from services.search.schemas import SearchRequest
    from services.search.service import OVERFETCH, search

    def page(word: str, n: int) -> str:
        return "\n\n".join(f"{i}번 농가는 {word}을 수확했다. {word} 값이 올랐다." for i in range(n))

    first = submit(rt, page("감귤", 40), external_id="big")
    rt.process_now([first])
    # The replacement mentions 감귤 more often in every chunk, so all its chunks rank first; it is
    # embedded but not yet published.
    second = submit(rt, page("감귤 감귤 감귤", 40), external_id="big")
    prepare(rt, second)
    monkeypatch.setattr(pipeline, "_publish", lambda *args, **kwargs: None)
    embed(rt, [second])
    assert len(chunks_of(rt, second)) > OVERFETCH + 5

    with session_scope(rt.session_factory) as session:
        response = search(
            session,
            index=rt.index,
            analyzer=rt.analyzer,
            query_encoder=None,
            profile=rt.profile,
            collection_name="c",
            request=SearchRequest(query="감귤", mode="sparse", top_k=5, highlight=False),
        )
    assert len(response.results) == 5
    assert all("감귤 감귤" not in hit.text for hit in response.results)  # the searchable generation's text


def test_documents_of_another_profiles_collection_are_refused_at_upload_and_at_embedding(rt):
    from services.errors import Conflict

    with session_scope(rt.session_factory) as session:  # queued by a service running another profile
        result = lifecycle.store(
            session,
            collection_name="sroberta",
            profile="ko-sroberta-multitask",
            upload=lifecycle.Upload(data="다른 모델의 문서이다.".encode(), media_type="text/plain"),
        )
        foreign = WorkItem(result.document.id, result.generation)
    own = submit(rt, "이 작업자의 모델로 색인되는 문서이다.")
    for item in (foreign, own):
        prepare(rt, item)

    failures = embed_each_on_failure([foreign, own], **embed_stage(rt))

    assert [(item, exc.code) for item, exc in failures] == [(foreign, "profile_mismatch")]
    assert "ko-sroberta-multitask" in str(failures[0][1])
    with session_scope(rt.session_factory) as session:
        assert session.get(Document, own.document_id).status == DocumentStatus.indexed
        with pytest.raises(Conflict, match=r"profile_mismatch|was indexed with profile"):
            lifecycle.store(
                session,
                collection_name="c",
                profile="ko-sroberta-multitask",
                upload=lifecycle.Upload(data="모델이 다른 업로드".encode(), media_type="text/plain"),
            )


def test_the_chunk_budget_never_exceeds_what_the_model_reads(make_settings, tmp_path, caplog):
    # The bge-m3-ko profile (510-token chunks) with a 128-token model of the ko-sroberta family.
    from config.profiles import get_profile
    from services.db import upgrade_database
    from services.embedding.twin import build_twin
    from services.runtime import Runtime

    model = build_twin(get_profile("ko-sroberta-multitask"), tmp_path / "sroberta", small=True)
    settings = make_settings(embedding_model=str(model))
    upgrade_database(settings.sqlalchemy_url)
    rt = Runtime(settings)
    try:
        readable = rt.tokenizer.model_max_length - rt.tokenizer.num_special_tokens_to_add()
        assert settings.effective_chunk_tokens > readable
        assert rt.chunking.max_tokens == readable and "fewer than the chunk budget" in caplog.text
        item = submit(rt, TEXT)
        prepare(rt, item)
        assert max(chunk.token_count for chunk in chunks_of(rt, item)) <= readable
    finally:
        rt.close()


def test_a_table_over_the_budget_is_cut_between_rows(rt):
    from tests import extract_samples as samples

    rows = [["구분", "내용"]] + [[f"{i}번 항목", f"서울특별시 {i}구 주민센터 운영 시간 안내"] for i in range(1, 13)]
    data = samples.build_hwp([samples.para_records("표 앞 문단이다.") + samples.table_records(rows)])
    with session_scope(rt.session_factory) as session:
        result = lifecycle.store(
            session,
            collection_name="c",
            profile=rt.profile,
            upload=lifecycle.Upload(data=data, filename="table.hwp", media_type=None),
        )
        item = WorkItem(result.document.id, result.generation)
    prepare(rt, item)
    chunks = chunks_of(rt, item)
    table_chunks = [c for c in chunks if " | " in c.text]
    assert len(table_chunks) > 1  # 48 tokens cannot hold the table
    for chunk in table_chunks:  # every chunk holds whole rows
        assert all(line.count(" | ") == 1 for line in chunk.text.strip().splitlines()), chunk.text
    assert not any("표 앞 문단이다" in c.text for c in table_chunks)
