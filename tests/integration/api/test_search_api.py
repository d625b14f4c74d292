"""Korean hybrid search through the API: morpheme matching, modes, explain, highlights."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest

from tests.conftest import unique_collection, wait_for_status


@pytest.fixture
def database_url(tmp_path) -> str:
    from services.db import upgrade_database

    url = f"sqlite:///{tmp_path / 'search.db'}"
    upgrade_database(url)
    return url


@pytest.fixture
def corpus(app_client):
    col = unique_collection()
    docs = {
        "seoul": "서울에서는 매년 가을에 세계 불꽃 축제가 열린다. 관람객은 한강 공원에 모인다.",
        "busan": "부산의 해운대에서는 여름마다 모래 축제가 열린다.",
        "jeju": "제주도의 감귤은 겨울에 수확한다. 농가는 수확한 감귤을 전국으로 보낸다.",
    }
    for ext, text in docs.items():
        r = app_client.post(f"/v1/collections/{col}/documents", json={"text": text, "external_id": ext})
        assert wait_for_status(app_client, col, r.json()["id"])["status"] == "indexed"
    return col


def search(client, col, **body):
    r = client.post(f"/v1/collections/{col}/search", json=body)
    assert r.status_code == 200, r.text
    return r.json()


def test_a_word_found_where_it_only_appears_with_a_particle(app_client, corpus):
    # 서울 appears only as 서울에서 in the document; the query uses the bare noun and another particle.
    for query in ("서울", "서울은", "서울의 축제"):
        hits = search(app_client, corpus, query=query, mode="sparse")["results"]
        assert hits and hits[0]["external_id"] == "seoul", (query, hits)
    assert search(app_client, corpus, query="서울", mode="sparse")["results"][0]["highlights"] == [[0, 2]]


def test_highlights_are_morpheme_spans_in_the_passage(app_client, corpus):
    top = search(app_client, corpus, query="감귤 수확", mode="sparse")["results"][0]
    assert top["external_id"] == "jeju"
    marked = {top["text"][s:e] for s, e in top["highlights"]}
    assert {"감귤", "수확"} <= marked
    # a conjugated verb: 열리다 is written 열린 (its place comes from the spans stored at ingest)
    top = search(app_client, corpus, query="불꽃 축제가 열리다", mode="sparse")["results"][0]
    assert top["external_id"] == "seoul"
    assert {"불꽃", "축제", "열린"} <= {top["text"][s:e] for s, e in top["highlights"]}


@pytest.mark.parametrize("mode", ["dense", "sparse", "hybrid"])
def test_every_mode_answers(app_client, corpus, mode):
    body = search(app_client, corpus, query="축제가 열리는 도시", mode=mode, top_k=3)
    assert body["mode"] == mode and 1 <= len(body["results"]) <= 3
    assert [h["rank"] for h in body["results"]] == list(range(1, len(body["results"]) + 1))


def test_hybrid_explain_shows_both_legs_and_the_fused_rank(app_client, corpus):
    body = search(app_client, corpus, query="해운대 모래 축제", mode="hybrid", explain=True, fusion="dbsf")
    top = body["results"][0]
    assert top["external_id"] == "busan"
    explain = top["explain"]
    assert explain["sparse"]["rank"] == 1 and explain["sparse"]["score"] > 0
    assert explain["dense"]["rank"] is not None
    assert explain["fused"] == {"rank": 1, "score": top["score"]} and explain["rerank"] is None
    assert body["settings"]["fusion"] == {"method": "dbsf", "weights": {"dense": 1.0, "sparse": 1.0}}


@pytest.mark.parametrize("mode, leg", [("sparse", "sparse"), ("dense", "dense")])
def test_explain_works_in_every_mode(app_client, corpus, mode, leg):
    hits = search(app_client, corpus, query="해운대 모래 축제", mode=mode, explain=True)["results"]
    other = {"sparse": "dense", "dense": "sparse"}[leg]
    for rank, hit in enumerate(hits, start=1):
        assert hit["explain"][leg]["rank"] == rank and hit["explain"][other] is None
        assert hit["explain"]["fused"] == {"rank": rank, "score": hit["score"]}


def test_fusion_objects_and_their_validation(app_client, corpus):
    for fusion in (
        {"method": "convex", "alpha": 0.3},
        {"method": "rrf", "k": 60, "weights": {"dense": 0.5}},
        {"method": "dbsf", "weights": {"dense": 0.25, "sparse": 1}},
    ):
        body = search(app_client, corpus, query="해운대 모래 축제", mode="hybrid", fusion=fusion)
        ranked = [hit["external_id"] for hit in body["results"]]
        if fusion["method"] == "rrf":
            # RRF with k=60 on three documents: sparse rank 1 and 2 differ by 1/60 - 1/61, so the
            # twin's random dense leg decides the order; only the answer's shape is checked.
            assert "busan" in ranked and body["settings"]["fusion"]["k"] == 60
        else:  # score-based fusion with a small dense weight keeps the sparse leg's clear winner
            assert ranked[0] == "busan", (fusion, ranked)
        assert body["settings"]["fusion"]["method"] == fusion["method"]
    assert search(app_client, corpus, query="해운대", mode="hybrid")["settings"]["fusion"] == {
        "method": "convex",
        "alpha": 0.05,
    }  # the service's default
    for bad in (
        {"method": "convex", "alpha": 1.5},
        {"method": "convex"},
        {"method": "rrf", "k": 0},
        {"method": "rrf", "weights": {"dense": -1}},
        {"method": "dbsf", "alpha": 0.2},
        {"method": "borda"},
        "borda",
    ):
        r = app_client.post(f"/v1/collections/{corpus}/search", json={"query": "해운대", "fusion": bad})
        assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_request", (bad, r.text)


def test_collection_defaults_round_trip_and_apply(app_client, corpus):
    url = f"/v1/collections/{corpus}"
    assert app_client.get(url).json()["search_defaults"] == {"mode": None, "fusion": None, "rerank": None}
    patched = app_client.patch(url, json={"search_defaults": {"mode": "sparse", "fusion": {"method": "rrf", "k": 60}}})
    assert patched.status_code == 200, patched.text
    assert app_client.get(url).json()["search_defaults"]["fusion"] == {
        "method": "rrf",
        "k": 60,
        "weights": {"dense": 1.0, "sparse": 1.0},
    }
    assert search(app_client, corpus, query="해운대 축제")["mode"] == "sparse"  # the collection's default
    body = search(app_client, corpus, query="해운대 축제", mode="hybrid")  # a request overrides it...
    assert body["settings"]["fusion"]["method"] == "rrf" and body["settings"]["fusion"]["k"] == 60  # ...per field
    for bad in ({"mode": "fuzzy"}, {"fusion": {"method": "convex", "alpha": -0.1}}, {"rerank": {"depth": 0}}, {"x": 1}):
        r = app_client.patch(url, json={"search_defaults": bad})
        assert r.status_code == 422, (bad, r.text)
    assert app_client.get(url).json()["search_defaults"]["mode"] == "sparse"  # a refused patch changes nothing
    assert app_client.patch(url, json={"search_defaults": {}}).json()["search_defaults"]["mode"] is None
    assert app_client.patch("/v1/collections/nope", json={"search_defaults": {}}).status_code == 404


def test_rerank_without_a_reranker_is_a_clear_error_or_a_note(app_client, corpus):
    r = app_client.post(f"/v1/collections/{corpus}/search", json={"query": "해운대", "rerank": True})
    assert r.status_code == 503 and r.json()["error"]["code"] == "rerank_unavailable"
    app_client.patch(f"/v1/collections/{corpus}", json={"search_defaults": {"rerank": True}})
    body = search(app_client, corpus, query="해운대", mode="sparse")
    assert body["results"] and "not configured" in body["note"] and body["settings"]["rerank"] is None


def test_a_query_without_searchable_terms_falls_back_to_dense(app_client, corpus):
    body = search(app_client, corpus, query="그리고 또한 에서는?", mode="hybrid")
    assert body["mode"] == "dense" and "no searchable terms" in body["note"]
    assert body["results"]
    sparse_only = search(app_client, corpus, query="...", mode="sparse")
    assert sparse_only["results"] == [] and sparse_only["note"]


def test_top_k_is_filled_past_hits_of_unpublished_generations(app_client, corpus):
    """A hit whose document's current generation is not the one indexed is skipped, and the
    next hits' rows are loaded so that top_k results still come back."""
    from sqlalchemy import update

    from services.db import session_scope
    from services.documents.models import Document

    body = {"query": "축제가 열리는 곳의 감귤", "mode": "sparse", "top_k": 2}
    before = search(app_client, corpus, **body)["results"]
    assert len(before) == 2
    hidden = before[0]["document_id"]
    with session_scope(app_client.runtime.session_factory) as session:  # as if a replacement were half done
        session.execute(update(Document).where(Document.id == uuid.UUID(hidden)).values(indexed_generation=None))
    after = search(app_client, corpus, **body)["results"]
    assert len(after) == 2 and hidden not in {h["document_id"] for h in after}
    assert [h["rank"] for h in after] == [1, 2]


def test_search_shows_only_its_own_collections_passages(app_client, corpus):
    # A collection whose name maps to the same index as another's (created before such names were
    # refused): its search must not show the other collection's passages.
    from sqlalchemy import insert

    from services.documents.models import Collection

    twin = corpus.replace("-", "_")
    with app_client.runtime.engine.begin() as conn:
        conn.execute(
            insert(Collection.__table__).values(
                id=uuid.uuid4(), name=twin, profile="bge-m3-ko", created_at=datetime.now(UTC)
            )
        )
    assert search(app_client, corpus, query="감귤", mode="sparse")["results"]
    assert search(app_client, twin, query="감귤", mode="sparse")["results"] == []


CLIMATE = "탄소중립 기본법은 기후위기에 대응하기 위한 법률이다. 각 도의 예산은 도가 정한다. 서울은 금과 은이 많다."
UNITS = "1갤런은 약 3.785리터이다. 사과 3개는 1,000원이고 학생 5명은 모두 20살이다."


@pytest.fixture
def morpheme_corpus(app_client):
    col = unique_collection()
    for ext, text in {"climate": CLIMATE, "units": UNITS}.items():
        r = app_client.post(f"/v1/collections/{col}/documents", json={"text": text, "external_id": ext})
        assert wait_for_status(app_client, col, r.json()["id"])["status"] == "indexed"
    return col


def marked(hit) -> list[tuple[str, int]]:
    return [(hit["text"][s:e], s) for s, e in hit["highlights"]]


@pytest.mark.parametrize("query", ["리터는 몇 갤런인가요?", "사과 3개", "5명", "20살", "1,000원"])
def test_units_and_counters_are_searchable(app_client, morpheme_corpus, query):
    hits = search(app_client, morpheme_corpus, query=query, mode="sparse")["results"]
    assert hits and hits[0]["external_id"] == "units", (query, hits)


def test_units_are_highlighted_where_they_are_morphemes(app_client, morpheme_corpus):
    top = search(app_client, morpheme_corpus, query="리터는 몇 갤런인가요?", mode="sparse")["results"][0]
    assert marked(top) == [("갤런", UNITS.index("갤런")), ("리터", UNITS.index("리터"))]


def test_highlights_are_the_passages_own_morphemes_only(app_client, morpheme_corpus):
    def top(query: str) -> dict:
        hit = search(app_client, morpheme_corpus, query=query, mode="sparse")["results"][0]
        assert hit["external_id"] == "climate"
        return hit

    # 기: no syllable of 기본법 or 기후위기
    assert marked(top("기 예산")) == [("예산", CLIMATE.index("예산"))]
    # 도 the province, not the particle 의 between 도 and 예산
    assert marked(top("도의 예산")) == [
        ("도", CLIMATE.index("도의")),
        ("예산", CLIMATE.index("예산")),
        ("도", CLIMATE.index("도가")),
    ]
    # 은 silver, not the topic particle of 기본법은, 예산은 or 서울은
    assert marked(top("은이 많다")) == [("은", CLIMATE.index("은이")), ("많", CLIMATE.index("많다"))]


@pytest.mark.parametrize("stored", ["stems", "null"])
def test_chunks_ingested_before_term_spans_get_the_same_highlights(app_client, morpheme_corpus, stored):
    """Chunks of revisions 0003-0005 hold a list of verb/adjective stems, older ones nothing."""
    from sqlalchemy import update

    from services.documents.models import Chunk
    from services.ingest.analyzer import tag_class, term_id

    queries = ["도의 예산", "은이 많다", "리터는 몇 갤런인가요?", "기 예산"]
    before = [search(app_client, morpheme_corpus, query=q, mode="sparse")["results"] for q in queries]
    chunks = Chunk.__table__
    with app_client.runtime.engine.begin() as conn:
        for chunk in conn.execute(chunks.select()).mappings().all():
            # what revisions 0003-0005 stored: [term id, start, end] of each verb or adjective stem
            stems = [
                [term_id(t.form, "V"), t.start, t.end]
                for t in app_client.runtime.analyzer.terms(chunk["text"])
                if tag_class(t.tag) == "V"
            ]
            conn.execute(
                update(chunks).where(chunks.c.id == chunk["id"]).values(term_spans=stems if stored == "stems" else None)
            )
    after = [search(app_client, morpheme_corpus, query=q, mode="sparse")["results"] for q in queries]
    assert [[marked(h) for h in hits] for hits in after] == [[marked(h) for h in hits] for hits in before]


def test_rerank_reorders_the_fused_candidates_with_a_real_cross_encoder(make_settings, small_reranker_twin):
    """Reranking end to end with a reranker twin: the top_k come out in the cross-encoder's order,
    each with its fused rank and its rerank score, and a collection default turns it on."""
    from fastapi.testclient import TestClient

    from services.api.app import create_app
    from services.db import upgrade_database
    from services.runtime import Runtime

    settings = make_settings(rerank_model=str(small_reranker_twin))
    upgrade_database(settings.sqlalchemy_url)
    rt = Runtime(settings)
    col = unique_collection()
    with TestClient(create_app(settings, runtime=rt, warm_up=False)) as client:
        for i, text in enumerate(["서울의 축제", "부산의 축제는 여름에 열린다", "제주 축제와 감귤", "축제 없는 마을"]):
            doc = client.post(f"/v1/collections/{col}/documents", json={"text": text, "external_id": str(i)}).json()
            assert wait_for_status(client, col, doc["id"])["status"] == "indexed"
        body = search(client, col, query="축제", mode="sparse", top_k=3, explain=True, rerank={"depth": 4})
        assert body["settings"]["rerank"] == {"enabled": True, "depth": 4}
        hits = body["results"]
        assert len(hits) == 3
        scores = [h["score"] for h in hits]
        assert scores == sorted(scores, reverse=True)  # the reranker's order...
        expected = rt.reranker.rerank("축제", [h["text"] for h in hits])
        assert scores == pytest.approx(expected, abs=1e-5)  # ...and its own scores
        assert all(h["explain"]["rerank"]["score"] == h["score"] for h in hits)
        assert {h["explain"]["fused"]["rank"] for h in hits} <= {1, 2, 3, 4}
        client.patch(f"/v1/collections/{col}", json={"search_defaults": {"rerank": True}})
        assert search(client, col, query="축제", mode="sparse")["settings"]["rerank"]["depth"] == 50
        assert search(client, col, query="축제", mode="sparse", rerank=False)["settings"]["rerank"] is None
    rt.close()


def test_a_client_sent_question_vector_replaces_the_encoding(app_client, corpus):
    # The vector of the jeju passage's own text (from the embeddings endpoint) finds that passage
    # first in dense mode, whatever the question's text says.
    jeju = search(app_client, corpus, query="감귤", mode="sparse")["results"][0]
    assert jeju["external_id"] == "jeju"
    r = app_client.post("/v1/embeddings", json={"model": "bge-m3-ko", "input": jeju["text"]})
    vector = r.json()["data"][0]["embedding"]
    encoded_before = _encode_count(app_client)
    body = search(app_client, corpus, query="불꽃 축제", mode="dense", vector=vector, explain=True)
    assert body["results"][0]["external_id"] == "jeju"
    assert _encode_count(app_client) == encoded_before  # the question was not encoded
    search(app_client, corpus, query="불꽃 축제", mode="dense")
    assert _encode_count(app_client) == encoded_before + 1  # without a vector, it is
    assert body["results"][0]["explain"]["dense"]["score"] == pytest.approx(1.0, abs=1e-3)
    # Scaled, it is the same direction; hybrid takes the text's sparse leg beside it.
    scaled = search(app_client, corpus, query="불꽃 축제", mode="dense", vector=[3 * x for x in vector])
    assert [h["chunk_id"] for h in scaled["results"]] == [h["chunk_id"] for h in body["results"]]
    hybrid = search(app_client, corpus, query="불꽃 축제", mode="hybrid", vector=vector, explain=True)
    legs = {h["external_id"]: h["explain"] for h in hybrid["results"]}
    assert legs["jeju"]["dense"]["rank"] == 1 and legs["seoul"]["sparse"]["rank"] == 1
    # The context endpoint takes it too.
    r = app_client.post(
        f"/v1/collections/{corpus}/context",
        json={"query": "불꽃 축제", "mode": "dense", "vector": vector, "max_tokens": 200, "top_k": 1},
    )
    assert r.status_code == 200, r.text
    assert "감귤" in r.json()["context"]


@pytest.mark.parametrize(
    "vector, words",
    [
        ([0.1, 0.2, 0.3], "dims"),
        ([0.0] * 8, "all zeros"),
        ([], "at least 1"),
    ],
)
def test_a_client_sent_vector_that_cannot_be_used_is_a_422(app_client, corpus, vector, words):
    r = app_client.post(f"/v1/collections/{corpus}/search", json={"query": "축제", "mode": "hybrid", "vector": vector})
    assert r.status_code == 422, r.text
    assert words in r.text
    # NaN is not JSON; a huge number overflows to infinity
    r = app_client.post(
        f"/v1/collections/{corpus}/search",
        content=b'{"query": "x", "vector": [1e999, 0.5]}',
        headers={"content-type": "application/json"},
    )
    assert r.status_code == 422 and "finite" in r.text


def _encode_count(client) -> float:
    """How many searches have run the query encoder (the `encode` stage's count in /metrics)."""
    import re

    found = re.search(r'saekin_search_stage_seconds_count\{stage="encode"\} ([0-9.e+]+)', client.get("/metrics").text)
    return float(found.group(1)) if found else 0.0
