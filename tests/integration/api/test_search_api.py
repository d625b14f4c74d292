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
        assert body["results"][0]["external_id"] == "busan"
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
