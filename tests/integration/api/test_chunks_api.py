"""GET /v1/collections/{c}/documents/{id}/chunks: a document's chunks, read-only, behind the API key."""

from __future__ import annotations

import uuid

from tests.conftest import unique_collection, wait_for_status

# Long enough for several chunks with the small twin (make_settings: 16 tokens of overlap).
PARAGRAPHS = [
    f"제{i}조 서울특별시 {i}구는 대중교통 이용을 늘리기 위해 버스 노선을 개편한다. "
    f"지하철 {i}호선과 연계하는 마을버스를 운행하며, 요금은 시 조례로 정한다. "
    "주민 의견을 듣는 공청회를 해마다 연다."
    for i in range(1, 40)
]
TEXT = "\n\n".join(PARAGRAPHS)


def test_chunks_are_listed_in_order_with_paging(app_client):
    col = unique_collection()
    r = app_client.post(f"/v1/collections/{col}/documents", json={"text": TEXT, "title": "교통 조례"})
    assert r.status_code == 202, r.text
    doc = wait_for_status(app_client, col, r.json()["id"])
    assert doc["status"] == "indexed", doc
    assert doc["chunk_count"] >= 3, doc

    url = f"/v1/collections/{col}/documents/{doc['id']}/chunks"
    everything = app_client.get(url, params={"limit": 500}).json()
    assert everything["document_id"] == doc["id"] and everything["generation"] == doc["indexed_generation"]
    assert everything["next_cursor"] is None
    items = everything["items"]
    assert [c["ordinal"] for c in items] == list(range(doc["chunk_count"]))
    first = items[0]
    assert set(first) == {"id", "ordinal", "text", "page", "heading", "token_count", "char_start", "char_end"}
    assert first["text"].startswith("제1조") and first["token_count"] > 0 and first["char_start"] == 0

    # The ids are the search hits' chunk ids.
    hit = app_client.post(f"/v1/collections/{col}/search", json={"query": "지하철 7호선", "mode": "sparse"}).json()
    assert hit["results"][0]["chunk_id"] in {c["id"] for c in items}

    # Cursor paging returns the same chunks, two at a time.
    paged, cursor = [], None
    while True:
        page = app_client.get(url, params={"limit": 2, **({"cursor": cursor} if cursor else {})}).json()
        paged += page["items"]
        cursor = page["next_cursor"]
        if cursor is None:
            break
        assert len(page["items"]) == 2
    assert paged == items


def test_chunks_of_unknown_documents_and_bad_cursors(app_client):
    col = unique_collection()
    r = app_client.post(f"/v1/collections/{col}/documents", json={"text": "짧은 문서이다."})
    doc = wait_for_status(app_client, col, r.json()["id"])
    url = f"/v1/collections/{col}/documents/{doc['id']}/chunks"

    missing = app_client.get(f"/v1/collections/{col}/documents/{uuid.uuid4()}/chunks")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "document_not_found"
    assert app_client.get(f"/v1/collections/nope-{col}/documents/{doc['id']}/chunks").status_code == 404
    bad = app_client.get(url, params={"cursor": "abc"})
    assert bad.status_code == 422 and bad.json()["error"]["code"] == "invalid_cursor"
    assert app_client.get(url, params={"limit": 0}).status_code == 422
    assert app_client.get(url, params={"offset": 3}).status_code == 422  # unknown parameters are refused


def test_chunks_need_the_api_key(make_settings, tmp_path):
    from fastapi.testclient import TestClient

    from services.api.app import create_app
    from services.db import upgrade_database
    from services.runtime import Runtime

    url = f"sqlite:///{tmp_path / 'keys.db'}"
    upgrade_database(url)
    settings = make_settings(database_url=url, api_keys=["s3cret"])
    rt = Runtime(settings)
    with TestClient(create_app(settings, runtime=rt, warm_up=False)) as client:
        path = f"/v1/collections/c/documents/{uuid.uuid4()}/chunks"
        assert client.get(path).status_code == 401
        assert client.get(path, headers={"Authorization": "Bearer wrong"}).status_code == 401
        # With the key the request reaches the route (the collection does not exist).
        assert client.get(path, headers={"Authorization": "Bearer s3cret"}).status_code == 404
    rt.close()
