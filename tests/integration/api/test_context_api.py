"""The context endpoint, search across collections, limits and errors, range filters, embeddings and rerank."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import update

from tests.conftest import unique_collection, wait_for_status

LAW = (
    "탄소중립 기본법은 기후위기에 대응하기 위한 법률이다. 정부는 2050년까지 온실가스 순배출량을 영으로 줄이는 "
    "목표를 세웠다. 지방자치단체는 지역 실정에 맞는 탄소중립 이행계획을 5년마다 수립해야 한다. 이행계획에는 "
    "부문별 감축 목표가 들어간다. 환경부 장관은 이행 상황을 매년 점검한다. 점검 결과는 국회에 보고된다."
)
FESTIVAL = "부산의 해운대에서는 여름마다 모래 축제가 열린다. 관람객은 해변에 모인다."
CITRUS = "제주도의 감귤은 겨울에 수확한다. 농가는 수확한 감귤을 전국으로 보낸다. 이행계획은 감귤에 없다."


@pytest.fixture
def database_url(tmp_path) -> str:
    from services.db import upgrade_database

    url = f"sqlite:///{tmp_path / 'context.db'}"
    upgrade_database(url)
    return url


@pytest.fixture
def make_settings(make_settings):
    # Small chunks, so a document has several and their overlap shows.
    def factory(**overrides):
        return make_settings(**{"chunk_tokens": 32, "chunk_overlap_tokens": 8, **overrides})

    return factory


def upload(client, col, text, **fields):
    r = client.post(f"/v1/collections/{col}/documents", json={"text": text, **fields})
    assert r.status_code == 202, r.text
    assert wait_for_status(client, col, r.json()["id"])["status"] == "indexed"
    return r.json()["id"]


@pytest.fixture
def laws(app_client):
    col = unique_collection("laws")
    upload(
        app_client,
        col,
        LAW,
        external_id="carbon",
        title="탄소중립 기본법",
        metadata={"year": 2021, "date": "2021-09-24"},
    )
    upload(
        app_client, col, FESTIVAL, external_id="busan", title="해운대", metadata={"year": 2019, "date": "2019-07-01"}
    )
    return col


def context(client, col, **body):
    r = client.post(f"/v1/collections/{col}/context", json={"mode": "sparse", "max_tokens": 400, **body})
    assert r.status_code == 200, r.text
    return r.json()


def test_context_cites_passages_within_the_budget(app_client, laws):
    body = context(app_client, laws, query="지방자치단체 이행계획 수립", neighbors=0, format="text")
    assert body["tokenizer"] == "embedding" and "o200k_base" in body["note"]  # no encoding file here
    assert body["context"].startswith("[1] 탄소중립 기본법\n")
    assert body["token_count"] <= 400
    first = body["citations"][0]
    assert first["n"] == 1 and first["external_id"] == "carbon" and first["collection"] == laws
    assert first["text"] in body["context"] and "이행계획" in first["text"]
    # the citation's range is the document's: the passage is a slice of the uploaded text
    assert LAW[first["char_start"] : first["char_end"]] == first["text"]
    # same index state, same answer
    again = context(app_client, laws, query="지방자치단체 이행계획 수립", neighbors=0, format="text")
    assert {k: v for k, v in again.items() if k != "took_ms"} == {k: v for k, v in body.items() if k != "took_ms"}


def test_neighbours_widen_the_passage_and_the_budget_caps_it(app_client, laws):
    narrow = context(app_client, laws, query="국회 보고", neighbors=0, top_k=1)
    wide = context(app_client, laws, query="국회 보고", neighbors=3, top_k=1)
    assert len(wide["citations"][0]["text"]) > len(narrow["citations"][0]["text"])
    assert narrow["citations"][0]["text"] in wide["citations"][0]["text"]
    for budget in (12, 25, 40):
        small = context(app_client, laws, query="국회 보고", neighbors=3, tokenizer="embedding", max_tokens=budget)
        assert small["token_count"] <= budget
        if small["citations"]:
            assert small["citations"][0]["text"].endswith(".")
        else:
            assert "too small" in small["note"]


def test_empty_collection_and_termless_question_answer_an_empty_context(app_client, laws):
    body = context(app_client, laws, query="그리고 또한 에서는?")
    assert body["context"] == "" and body["citations"] == [] and "no searchable terms" in body["note"]
    empty = unique_collection("empty")
    upload(app_client, empty, "임시 문서입니다.")
    app_client.delete(f"/v1/collections/{empty}/documents", params={"external_id": "none"})  # 404, harmless
    doc = app_client.get(f"/v1/collections/{empty}/documents").json()["items"][0]
    assert app_client.delete(f"/v1/collections/{empty}/documents/{doc['id']}").status_code == 204
    body = context(app_client, empty, query="지방자치단체")
    assert body["context"] == "" and body["note"]


def test_several_collections_are_ranked_as_one(app_client, laws):
    other = unique_collection("farm")
    upload(app_client, other, CITRUS, external_id="jeju", title="감귤")
    r = app_client.post(
        "/v1/search", json={"query": "감귤 수확", "mode": "sparse", "collections": [laws, other], "top_k": 3}
    )
    assert r.status_code == 200, r.text
    hits = r.json()["results"]
    assert hits[0]["collection"] == other and hits[0]["external_id"] == "jeju"
    scores = [h["score"] for h in hits]
    assert scores == sorted(scores, reverse=True)
    r = app_client.post(
        "/v1/context",
        json={"query": "이행계획", "mode": "sparse", "collections": [other, laws], "max_tokens": 300},
    )
    assert r.status_code == 200, r.text
    assert {c["collection"] for c in r.json()["citations"]} == {laws, other}


def test_collections_of_another_model_are_a_409_naming_them_unless_sparse(app_client, laws):
    from services.db import session_scope
    from services.documents.models import Collection

    other = unique_collection("other")
    upload(app_client, other, CITRUS)
    with session_scope(app_client.runtime.session_factory) as session:
        session.execute(update(Collection).where(Collection.name == other).values(profile="ko-sroberta-multitask"))
    body = {"query": "감귤", "collections": [laws, other], "max_tokens": 100}
    r = app_client.post("/v1/context", json={**body, "mode": "hybrid"})
    assert r.status_code == 409 and other in r.json()["error"]["message"]
    # Keyword vectors do not come from the model: a sparse search spans both.
    r = app_client.post("/v1/context", json={**body, "mode": "sparse"})
    assert r.status_code == 200 and other in {c["collection"] for c in r.json()["citations"]}


@pytest.mark.parametrize(
    ("body", "where"),
    [
        ({"max_tokens": 0}, "max_tokens"),
        ({"max_tokens": 32_769}, "max_tokens"),
        ({"neighbors": 6}, "neighbors"),
        ({"neighbors": -1}, "neighbors"),
        ({"tokenizer": "gpt2"}, "tokenizer"),
        ({"format": "html"}, "format"),
        ({"max_tokens": None}, "max_tokens"),
    ],
)
def test_limits(app_client, laws, body, where):
    payload = {"query": "이행계획", "max_tokens": 100, **body}
    r = app_client.post(f"/v1/collections/{laws}/context", json={k: v for k, v in payload.items() if v is not None})
    assert r.status_code == 422 and where in r.json()["error"]["message"]


def test_at_most_twenty_collections(app_client):
    names = [f"c{i}" for i in range(21)]
    r = app_client.post("/v1/context", json={"query": "a", "collections": names, "max_tokens": 10})
    assert r.status_code == 422 and "collections" in r.json()["error"]["message"]


def test_unknown_collection_is_404(app_client):
    r = app_client.post("/v1/collections/nothing-here/context", json={"query": "감귤", "max_tokens": 10})
    assert r.status_code == 404 and r.json()["error"]["code"] == "collection_not_found"


def test_range_filters(app_client, laws):
    def hits(flt):
        r = app_client.post(
            f"/v1/collections/{laws}/search", json={"query": "축제 이행계획", "mode": "sparse", "filter": flt}
        )
        assert r.status_code == 200, r.text
        return {h["external_id"] for h in r.json()["results"]}

    assert hits({"metadata": {"year": {"gte": 2020, "lt": 2025}}}) == {"carbon"}
    assert hits({"metadata": {"year": {"lt": 2020}}}) == {"busan"}
    assert hits({"metadata": {"year": {"gt": 2019.5, "lte": 2021}}}) == {"carbon"}
    assert hits({"metadata": {"date": {"gte": "2021-01-01"}}}) == {"carbon"}
    assert hits({"metadata": {"date": {"lt": "2020-01-01T00:00:00+09:00"}}}) == {"busan"}
    assert hits({"metadata": {"year": {"gte": 2000}, "date": {"lt": "2020-01-01"}}}) == {"busan"}
    # Years before 1000 keep four digits in the bound sent on (strftime wrote 478-12-26, which the
    # context endpoint's second validation then refused with a 500).
    assert hits({"metadata": {"date": {"gt": "0478-12-26"}}}) == {"carbon", "busan"}
    r = app_client.post(
        f"/v1/collections/{laws}/context",
        json={
            "query": "축제 이행계획",
            "mode": "sparse",
            "max_tokens": 200,
            "filter": {"metadata": {"date": {"gt": "0478-12-26"}}},
        },
    )
    assert r.status_code == 200, r.text


@pytest.mark.parametrize(
    ("bounds", "says"),
    [
        ({"gte": "abc"}, "neither a number nor an ISO 8601 date"),
        ({"gte": True}, "true/false"),
        ({}, "at least one"),
        ({"gt": 1, "gte": 2}, "at most one lower bound"),
        ({"gte": 2020, "lt": "2025-01-01"}, "all be numbers or all be ISO 8601 dates"),
        ({"between": 1}, "between"),
    ],
)
def test_bad_ranges_are_a_clear_422(app_client, laws, bounds, says):
    r = app_client.post(
        f"/v1/collections/{laws}/search", json={"query": "이행계획", "filter": {"metadata": {"year": bounds}}}
    )
    assert r.status_code == 422 and says in r.json()["error"]["message"], r.text


def test_embeddings_model_names_and_errors(app_client):
    r = app_client.post("/v1/embeddings", json={"model": "bge-m3-ko", "input": "탄소중립"})
    assert r.status_code == 200 and len(r.json()["data"]) == 1
    assert app_client.post("/v1/embeddings", json={"model": "dragonkue/bge-m3-ko", "input": ["a"]}).status_code == 200
    r = app_client.post("/v1/embeddings", json={"model": "text-embedding-3-small", "input": "a"})
    assert r.status_code == 404 and "bge-m3-ko" in r.json()["error"]["message"]
    assert app_client.post("/v1/embeddings", json={"model": "bge-m3-ko", "input": []}).status_code == 422
    assert app_client.post("/v1/embeddings", json={"model": "bge-m3-ko", "input": [[1, 2]]}).status_code == 422
    r = app_client.post("/v1/embeddings", json={"model": "bge-m3-ko", "input": "a", "dimensions": 3})
    assert r.status_code == 422 and "dimensions" in r.json()["error"]["message"]


def test_rerank_without_a_reranker_is_a_clear_404(app_client):
    r = app_client.post("/v1/rerank", json={"query": "감귤", "documents": ["제주 감귤", {"text": "부산"}], "top_n": 1})
    assert r.status_code == 404
    assert (
        r.json()["error"]["code"] == "reranker_not_configured"
        and "SAEKIN_RERANK_PROFILE" in r.json()["error"]["message"]
    )


def test_rerank_orders_by_the_configured_reranker(make_settings, small_reranker_twin, tmp_path):
    """The Cohere/Jina shape with a real cross-encoder (a twin: random weights, so the order is the
    model's, checked against the same model's own scores)."""
    from fastapi.testclient import TestClient

    from services.api.app import create_app
    from services.db import upgrade_database
    from services.runtime import Runtime

    settings = make_settings(rerank_model=str(small_reranker_twin))
    upgrade_database(settings.sqlalchemy_url)
    rt = Runtime(settings)
    documents = ["서울은 대한민국의 수도이다.", {"text": "부산은 항구 도시이다."}, "감귤은 제주도에서 난다."]
    with TestClient(create_app(settings, runtime=rt, warm_up=False)) as client:
        r = client.post(
            "/v1/rerank",
            json={"query": "한국의 수도", "documents": documents, "top_n": 2, "return_documents": True},
        )
    texts = [d if isinstance(d, str) else d["text"] for d in documents]
    scores = rt.reranker.rerank("한국의 수도", texts)
    rt.close()
    assert r.status_code == 200, r.text
    expected = sorted(range(3), key=lambda i: (-scores[i], i))[:2]
    body = r.json()
    assert [x["index"] for x in body["results"]] == expected
    assert [x["document"]["text"] for x in body["results"]] == [texts[i] for i in expected]
    assert [x["relevance_score"] for x in body["results"]] == pytest.approx([scores[i] for i in expected], abs=1e-5)
    assert body["model"] == str(small_reranker_twin)


def test_every_new_route_is_documented_with_its_errors(app_client):
    spec = app_client.get("/openapi.json").json()
    for path, method in [
        ("/v1/collections/{collection}/context", "post"),
        ("/v1/context", "post"),
        ("/v1/search", "post"),
        ("/v1/embeddings", "post"),
        ("/v1/rerank", "post"),
        ("/v1/collections", "get"),
        ("/v1/collections/{collection}", "delete"),
    ]:
        responses = spec["paths"][path][method]["responses"]
        assert {"401", "422"} <= set(responses), (path, responses.keys())
        assert responses["422"]["content"]["application/json"]["schema"]["$ref"].endswith("ErrorBody")


def test_new_routes_take_the_api_key(make_settings, tmp_path):
    from fastapi.testclient import TestClient

    from services.api.app import create_app
    from services.db import upgrade_database
    from services.runtime import Runtime

    url = f"sqlite:///{tmp_path / 'keys.db'}"
    upgrade_database(url)
    settings = make_settings(database_url=url, api_keys=["s3cret"])
    rt = Runtime(settings)
    with TestClient(create_app(settings, runtime=rt, warm_up=False)) as client:
        for method, path, body in [
            ("post", "/v1/collections/c/context", {"query": "a", "max_tokens": 5}),
            ("post", "/v1/context", {"query": "a", "max_tokens": 5, "collections": ["c"]}),
            ("post", "/v1/search", {"query": "a", "collections": ["c"]}),
            ("post", "/v1/embeddings", {"model": "bge-m3-ko", "input": "a"}),
            ("post", "/v1/rerank", {"query": "a", "documents": ["b"]}),
            ("get", "/v1/collections", None),
            ("delete", "/v1/collections/c", None),
            ("post", "/mcp", {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}),
        ]:
            r = client.request(method, path, json=body)
            assert r.status_code == 401, (path, r.status_code)
        r = client.get("/v1/collections", headers={"Authorization": "Bearer s3cret"})
        assert r.status_code == 200
    rt.close()


def test_context_skips_a_document_deleted_meanwhile(app_client, laws):
    from services.db import session_scope
    from services.documents.models import Document

    body = context(app_client, laws, query="이행계획 축제")
    hidden = body["citations"][0]["document_id"]
    with session_scope(app_client.runtime.session_factory) as session:
        session.execute(update(Document).where(Document.id == uuid.UUID(hidden)).values(indexed_generation=None))
    after = context(app_client, laws, query="이행계획 축제")
    assert hidden not in {c["document_id"] for c in after["citations"]}
