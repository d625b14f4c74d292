"""Collections API, documents by external_id, unknown query parameters, the model a collection records."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import update

from services.ingest.analyzer import analyzer_version
from tests.conftest import unique_collection, wait_for_status


def upload(client, col, text, **fields):
    r = client.post(f"/v1/collections/{col}/documents", json={"text": text, **fields})
    assert r.status_code == 202, r.text
    assert wait_for_status(client, col, r.json()["id"])["status"] == "indexed"
    return r.json()["id"]


def test_list_get_and_delete_a_collection(app_client):
    col = unique_collection("col")
    upload(app_client, col, "제주도의 감귤은 겨울에 수확한다.", external_id="a")
    upload(app_client, col, "부산의 해운대에서는 여름마다 모래 축제가 열린다.", external_id="b")
    listed = {c["name"]: c for c in app_client.get("/v1/collections").json()["items"]}
    one = app_client.get(f"/v1/collections/{col}").json()
    assert listed[col] == one
    assert one["status"] == "ready" and one["profile"] == "bge-m3-ko"
    assert one["documents"] == {"queued": 0, "processing": 0, "indexed": 2, "failed": 0, "total": 2}
    assert one["chunk_count"] == 2
    assert one["model"].endswith("bge-m3-ko-small") and len(one["model_sha256"]) == 64
    assert one["model_sha256"] == app_client.runtime.model_ref.sha256
    # The analyzer its sparse vectors come from, the index searches read, no reindex yet.
    assert one["analyzer_version"] == analyzer_version() and one["analyzer_current"] is True
    assert one["index_name"].startswith("saekin_") and one["reindex"] is None
    assert one["search_defaults"] == {"mode": None, "fusion": None, "rerank": None}  # the service's, until PATCHed

    assert app_client.delete(f"/v1/collections/{col}").status_code == 204
    assert app_client.get(f"/v1/collections/{col}").status_code == 404
    assert col not in {c["name"] for c in app_client.get("/v1/collections").json()["items"]}
    assert not app_client.runtime.index.collection_exists(f"saekin_{col.replace('-', '_')}_bge_m3_ko")
    assert app_client.delete(f"/v1/collections/{col}").status_code == 404
    # the name is free again
    upload(app_client, col, "새 문서입니다.")


def test_a_long_deletion_answers_202_and_refuses_uploads_meanwhile(app_client, monkeypatch):
    from services.collections import service

    col = unique_collection("slow")
    upload(app_client, col, "제주도의 감귤은 겨울에 수확한다.")
    release = threading.Event()
    real_purge = service.purge

    def slow_purge(**kwargs):
        release.wait(30)
        real_purge(**kwargs)

    monkeypatch.setattr(service, "purge", slow_purge)
    app_client.app.state.deletions.wait_s = 0.05
    r = app_client.delete(f"/v1/collections/{col}")
    assert r.status_code == 202 and r.json()["status"] == "deleting"
    assert app_client.get(f"/v1/collections/{col}").json()["status"] == "deleting"
    r = app_client.post(f"/v1/collections/{col}/documents", json={"text": "또 하나"})
    assert r.status_code == 409 and r.json()["error"]["code"] == "collection_deleting"
    r = app_client.post(f"/v1/collections/{col}/search", json={"query": "감귤", "mode": "sparse"})
    assert r.status_code == 404 and "being deleted" in r.json()["error"]["message"]
    release.set()
    app_client.app.state.deletions.wait_s = 30
    # a repeated DELETE joins the running one and answers when it is done
    assert app_client.delete(f"/v1/collections/{col}").status_code in (204, 404)
    assert app_client.get(f"/v1/collections/{col}").status_code == 404


def test_documents_by_external_id(app_client):
    col = unique_collection("ext")
    doc_id = upload(app_client, col, "제주도의 감귤은 겨울에 수확한다.", external_id="citrus")
    upload(app_client, col, "부산의 해운대에서는 여름마다 모래 축제가 열린다.", external_id="festival")
    page = app_client.get(f"/v1/collections/{col}/documents", params={"external_id": "citrus"}).json()
    assert [d["id"] for d in page["items"]] == [doc_id]
    assert app_client.get(f"/v1/collections/{col}/documents", params={"external_id": "none"}).json()["items"] == []
    r = app_client.delete(f"/v1/collections/{col}/documents", params={"external_id": "none"})
    assert r.status_code == 404 and r.json()["error"]["code"] == "document_not_found"
    assert app_client.delete(f"/v1/collections/{col}/documents", params={"external_id": "citrus"}).status_code == 204
    assert app_client.get(f"/v1/collections/{col}/documents/{doc_id}").status_code == 404
    remaining = app_client.get(f"/v1/collections/{col}/documents").json()["items"]
    assert [d["external_id"] for d in remaining] == ["festival"]
    # without external_id the collection's documents are never deleted wholesale
    assert app_client.delete(f"/v1/collections/{col}/documents").status_code == 422


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("get", "/v1/collections/c/documents?externl_id=x"),
        ("get", "/v1/collections?limit=3"),
        ("get", "/v1/collections/c?x=1"),
        ("delete", "/v1/collections/c/documents?external_id=x&all=true"),
        ("post", "/v1/collections/c/search?debug=1"),
        ("post", "/v1/embeddings?model=x"),
        ("get", "/healthz?verbose=1"),
    ],
)
def test_unknown_query_parameters_are_a_422(app_client, method, path):
    r = app_client.request(method, path, json={"query": "a"} if method == "post" else None)
    assert r.status_code == 422, (path, r.status_code, r.text)
    assert r.json()["error"]["code"] == "unknown_query_parameter"


def test_a_collection_refuses_other_model_weights(app_client):
    from services.db import session_scope
    from services.documents.models import Collection

    col = unique_collection("model")
    upload(app_client, col, "제주도의 감귤은 겨울에 수확한다.")
    with session_scope(app_client.runtime.session_factory) as session:
        session.execute(update(Collection).where(Collection.name == col).values(model_sha256="0" * 64))
    r = app_client.post(f"/v1/collections/{col}/documents", json={"text": "다른 모델로 넣으면 안 된다."})
    assert r.status_code == 409 and r.json()["error"]["code"] == "model_mismatch"
    r = app_client.post(f"/v1/collections/{col}/search", json={"query": "감귤", "mode": "hybrid"})
    assert r.status_code == 409 and r.json()["error"]["code"] == "model_mismatch"
    # keyword search does not use the model's vectors
    r = app_client.post(f"/v1/collections/{col}/search", json={"query": "감귤", "mode": "sparse"})
    assert r.status_code == 200 and r.json()["results"]


def test_a_collection_from_before_the_model_was_recorded_takes_the_current_one(app_client):
    from services.db import session_scope
    from services.documents.models import Collection

    col = unique_collection("legacy")
    upload(app_client, col, "제주도의 감귤은 겨울에 수확한다.")
    with session_scope(app_client.runtime.session_factory) as session:
        session.execute(update(Collection).where(Collection.name == col).values(model=None, model_sha256=None))
    assert app_client.get(f"/v1/collections/{col}").json()["model_sha256"] is None
    upload(app_client, col, "부산의 해운대에서는 여름마다 모래 축제가 열린다.")
    assert app_client.get(f"/v1/collections/{col}").json()["model_sha256"] == app_client.runtime.model_ref.sha256


def test_declared_filter_indexes_are_made_shown_and_carried_by_a_reindex(app_client):
    col = unique_collection("fidx")
    docs = {
        "a": ("제주도의 감귤은 겨울에 수확한다.", {"lang": "ko", "year": 2020, "date": "2020-03-01", "score": 1.5}),
        "b": (
            "부산의 해운대에서는 여름마다 모래 축제가 열린다.",
            {"lang": "en", "year": 2021, "date": "2021-07-01", "score": 2},
        ),
        "c": ("제주도의 바다는 겨울에도 푸르다.", {"lang": "ko", "year": 2022, "date": "2022-12-31", "score": 3.5}),
    }
    for key, (text, metadata) in docs.items():
        upload(app_client, col, text, external_id=key, metadata=metadata)
    url = f"/v1/collections/{col}"
    filters = {
        "lang": ({"lang": "ko"}, {"a", "c"}),
        "year": ({"year": [2021, 2022]}, {"b", "c"}),
        "date": ({"date": {"gte": "2021-01-01"}}, {"b", "c"}),
        "score": ({"score": {"gt": 1.5, "lte": 3.5}}, {"b", "c"}),
    }

    def found(metadata: dict, mode: str) -> set[str]:
        body = {"query": "제주도 겨울 바다 축제", "mode": mode, "top_k": 10, "filter": {"metadata": metadata}}
        r = app_client.post(f"{url}/search", json=body)
        assert r.status_code == 200, r.text
        return {hit["external_id"] for hit in r.json()["results"]}

    assert app_client.get(url).json()["filter_indexes"] == {}
    declared = {"lang": "keyword", "year": "integer", "date": "datetime", "score": "float"}
    patched = app_client.patch(url, json={"filter_indexes": declared})
    assert patched.status_code == 200, patched.text
    assert patched.json()["filter_indexes"] == declared == app_client.get(url).json()["filter_indexes"]
    assert patched.json()["search_defaults"]["mode"] is None  # a field left out keeps its value
    index = app_client.runtime.index
    live = patched.json()["index_name"]
    # Made before the answer, before any filter used them.
    assert index.metadata_indexes(live) == declared
    for metadata, expected in filters.values():
        for mode in ("sparse", "hybrid"):
            assert found(metadata, mode) == expected  # what the filter asks, index or not

    # A new set replaces the old one: a key left out loses its index, a new kind replaces one.
    patched = app_client.patch(url, json={"filter_indexes": {"lang": "keyword", "year": "float"}})
    assert patched.json()["filter_indexes"] == {"lang": "keyword", "year": "float"}
    indexes = index.metadata_indexes(live)
    assert indexes["lang"] == "keyword" and indexes["year"] == "float"
    assert "score" not in indexes and "date" not in indexes
    assert found(filters["year"][0], "hybrid") == filters["year"][1]

    # Refused whole, with a JSON error, and nothing changes.
    limit = app_client.runtime.settings.index_filter_index_limit
    for bad in (
        {"lang": "text"},
        {'a"b': "keyword"},
        {"": "keyword"},
        {f"k{i}": "keyword" for i in range(limit + 1)},
        ["lang"],
    ):
        r = app_client.patch(url, json={"filter_indexes": bad})
        assert r.status_code == 422, (bad, r.text)
        assert r.json()["error"]["code"] in ("invalid_request", "too_many_filter_indexes", "invalid_input"), r.text
    assert app_client.get(url).json()["filter_indexes"] == {"lang": "keyword", "year": "float"}
    assert app_client.patch("/v1/collections/nope-nope", json={"filter_indexes": {}}).status_code == 404

    # A reindex builds a new index with the declared indexes.
    assert app_client.post(f"{url}/reindex", json={}).status_code == 202
    app_client.app.state.reindexes.wait(col, timeout=120)
    done = app_client.get(url).json()
    assert done["reindex"]["status"] == "done" and done["index_name"] != live
    assert index.metadata_indexes(done["index_name"]) == {"lang": "keyword", "year": "float"}
    assert found(filters["lang"][0], "hybrid") == filters["lang"][1]

    # {} removes the declarations and their indexes.
    assert app_client.patch(url, json={"filter_indexes": {}}).json()["filter_indexes"] == {}
    assert index.metadata_indexes(done["index_name"]) == {}


def test_declaring_indexes_creates_an_index_not_written_yet(app_client):
    col = unique_collection("fidx-new")
    upload(app_client, col, "제주도의 감귤은 겨울에 수확한다.", metadata={"lang": "ko"})
    url = f"/v1/collections/{col}"
    index, live = app_client.runtime.index, app_client.get(url).json()["index_name"]
    index.drop_collection(live)  # as before the embed stage first wrote to it
    patched = app_client.patch(url, json={"filter_indexes": {"lang": "keyword"}})
    assert patched.status_code == 200, patched.text
    # Created as wide as the embed stage makes it, with the declared index before any point.
    assert index.count(live) == 0 and index.metadata_indexes(live) == {"lang": "keyword"}
    upload(app_client, col, "부산의 해운대에서는 여름마다 모래 축제가 열린다.", metadata={"lang": "ko"})
    body = {"query": "해운대 축제", "mode": "hybrid", "filter": {"metadata": {"lang": "ko"}}}
    assert len(app_client.post(f"{url}/search", json=body).json()["results"]) == 1
