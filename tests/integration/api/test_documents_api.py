"""The documents and search API on SQLite and PostgreSQL, with real in-process ingestion."""

from __future__ import annotations

import io
import json

from tests.conftest import unique_collection, wait_for_status

SEOUL = (
    "서울특별시는 대한민국의 수도이다. 서울에서는 한강이 도시를 가로질러 흐른다. "
    "조선 시대에는 한양이라고 불렸으며, 오늘날 인구는 약 940만 명이다.\n\n"
    "서울의 대중교통은 지하철과 버스로 이루어져 있다. 지하철은 1974년에 처음 개통되었다."
)
BUSAN = "부산광역시는 대한민국 제2의 도시이며 최대의 항구 도시이다. 해운대 해수욕장이 유명하다."


def upload_text(client, collection, text, **fields):
    return client.post(f"/v1/collections/{collection}/documents", json={"text": text, **fields})


def test_upload_json_is_queued_then_indexed_and_searchable(app_client):
    col = unique_collection()
    response = upload_text(
        app_client, col, SEOUL, external_id="seoul", title="서울", metadata={"lang": "ko", "year": 2024}
    )
    assert response.status_code == 202, response.text
    body = response.json()
    assert body["status"] in ("queued", "processing", "indexed")
    assert body["external_id"] == "seoul"

    doc = wait_for_status(app_client, col, body["id"])
    assert doc["status"] == "indexed", doc
    assert doc["chunk_count"] >= 1 and doc["embedded_count"] == doc["chunk_count"]
    assert doc["media_type"] == "text/plain"

    hits = app_client.post(f"/v1/collections/{col}/search", json={"query": "서울 지하철 개통", "top_k": 3}).json()
    assert hits["results"], hits
    top = hits["results"][0]
    assert top["document_id"] == body["id"]
    assert top["external_id"] == "seoul" and top["title"] == "서울"
    assert top["metadata"] == {"lang": "ko", "year": 2024}
    assert "지하철" in top["text"]
    assert SEOUL[top["char_start"] : top["char_end"]] == top["text"]
    assert top["rank"] == 1 and isinstance(top["score"], float) and hits["took_ms"] >= 0


def test_multipart_upload_with_metadata_and_euc_kr_text(app_client):
    col = unique_collection()
    data = "한국어 문서는 예전에 EUC-KR로 저장되곤 했다. 이 파일은 완성형 인코딩으로 저장되었다.".encode("cp949")
    response = app_client.post(
        f"/v1/collections/{col}/documents",
        files={"file": ("legacy.txt", io.BytesIO(data), "text/plain")},
        data={"external_id": "legacy", "metadata": json.dumps({"source": "test"})},
    )
    assert response.status_code == 202, response.text
    doc = wait_for_status(app_client, col, response.json()["id"])
    assert doc["status"] == "indexed", doc
    assert doc["filename"] == "legacy.txt" and doc["metadata"] == {"source": "test"}
    hits = app_client.post(f"/v1/collections/{col}/search", json={"query": "완성형 인코딩", "mode": "sparse"}).json()
    assert hits["results"][0]["external_id"] == "legacy"
    assert "완성형" in hits["results"][0]["text"]


def test_same_content_again_answers_200_with_the_existing_document(app_client):
    col = unique_collection()
    first = upload_text(app_client, col, BUSAN)
    assert first.status_code == 202
    wait_for_status(app_client, col, first.json()["id"])
    again = upload_text(app_client, col, BUSAN)
    assert again.status_code == 200
    assert again.json()["id"] == first.json()["id"]
    listing = app_client.get(f"/v1/collections/{col}/documents").json()
    assert len(listing["items"]) == 1


def test_same_content_with_a_new_title_or_metadata_is_a_new_version(app_client):
    col = unique_collection()
    first = upload_text(app_client, col, BUSAN, external_id="busan", title="부산", metadata={"v": 1})
    wait_for_status(app_client, col, first.json()["id"])
    assert upload_text(app_client, col, BUSAN, external_id="busan", title="부산", metadata={"v": 1}).status_code == 200
    second = upload_text(app_client, col, BUSAN, external_id="busan", title="부산광역시", metadata={"v": 2})
    assert second.status_code == 202 and second.json()["generation"] == 2
    doc = wait_for_status(app_client, col, first.json()["id"])
    assert doc["status"] == "indexed" and doc["indexed_generation"] == 2
    assert doc["title"] == "부산광역시" and doc["metadata"] == {"v": 2}

    # The index holds the new metadata too: filters find the document by it, not by the old one.
    def search(v):
        return app_client.post(
            f"/v1/collections/{col}/search",
            json={"query": "해운대", "mode": "sparse", "filter": {"metadata": {"v": v}}},
        ).json()["results"]

    assert [h["title"] for h in search(2)] == ["부산광역시"] and search(1) == []


def test_concurrent_uploads_of_one_document_get_distinct_versions(app_client):
    from concurrent.futures import ThreadPoolExecutor

    from services.db import session_scope
    from services.documents import lifecycle

    col = unique_collection()
    rt = app_client.runtime

    def replace(i: int) -> int:
        with session_scope(rt.session_factory) as session:
            upload = lifecycle.Upload(data=f"{i}번째 판의 내용이다.".encode(), media_type="text/plain", external_id="x")
            return lifecycle.store(
                session, collection_name=col, profile=rt.settings.embedding_profile, upload=upload
            ).generation

    replace(0)
    with ThreadPoolExecutor(8) as pool:
        generations = list(pool.map(replace, range(1, 17)))
    assert sorted(generations) == list(range(2, 18))
    [doc] = app_client.get(f"/v1/collections/{col}/documents").json()["items"]
    assert doc["generation"] == 17


def test_timestamps_are_utc_everywhere(app_client):
    col = unique_collection()
    posted = upload_text(app_client, col, "시각 표기를 확인하는 문서이다.").json()
    fetched = wait_for_status(app_client, col, posted["id"])
    listed = app_client.get(f"/v1/collections/{col}/documents").json()["items"][0]
    for doc in (posted, fetched, listed):
        assert doc["created_at"].endswith(("Z", "+00:00")), doc
        assert doc["updated_at"] >= doc["created_at"]
    assert fetched["created_at"] == posted["created_at"] == listed["created_at"]


def test_known_external_id_with_new_content_replaces_the_document(app_client):
    col = unique_collection()
    first = upload_text(app_client, col, SEOUL, external_id="city")
    wait_for_status(app_client, col, first.json()["id"])
    second = upload_text(app_client, col, BUSAN, external_id="city", metadata={"v": 2})
    assert second.status_code == 202
    assert second.json()["id"] == first.json()["id"]
    doc = wait_for_status(app_client, col, first.json()["id"])
    assert doc["status"] == "indexed" and doc["generation"] == 2 and doc["indexed_generation"] == 2

    def sparse(q):
        return app_client.post(f"/v1/collections/{col}/search", json={"query": q, "mode": "sparse"}).json()["results"]

    assert [h["external_id"] for h in sparse("해운대 해수욕장")] == ["city"]
    assert sparse("한강 한양") == []  # the old generation's chunks are gone
    name = f"saekin_{col.replace('-', '_')}_bge_m3_ko"
    assert app_client.runtime.index.count(name) == doc["chunk_count"]


def test_delete_removes_document_rows_and_points(app_client):
    col = unique_collection()
    keep = upload_text(app_client, col, BUSAN, external_id="keep").json()
    gone = upload_text(app_client, col, SEOUL, external_id="gone").json()
    wait_for_status(app_client, col, keep["id"])
    wait_for_status(app_client, col, gone["id"])
    assert app_client.delete(f"/v1/collections/{col}/documents/{gone['id']}").status_code == 204
    assert app_client.get(f"/v1/collections/{col}/documents/{gone['id']}").status_code == 404
    results = app_client.post(f"/v1/collections/{col}/search", json={"query": "서울 지하철 부산", "top_k": 10}).json()[
        "results"
    ]
    assert {h["external_id"] for h in results} == {"keep"}
    name = f"saekin_{col.replace('-', '_')}_bge_m3_ko"
    keep_doc = app_client.get(f"/v1/collections/{col}/documents/{keep['id']}").json()
    assert app_client.runtime.index.count(name) == keep_doc["chunk_count"]


def test_search_filters_by_metadata_and_external_id(app_client):
    col = unique_collection()
    a = upload_text(app_client, col, SEOUL, external_id="a", metadata={"region": "capital"}).json()
    b = upload_text(app_client, col, BUSAN, external_id="b", metadata={"region": "south"}).json()
    wait_for_status(app_client, col, a["id"])
    wait_for_status(app_client, col, b["id"])

    def search(flt):
        return app_client.post(f"/v1/collections/{col}/search", json={"query": "대한민국 도시", "filter": flt}).json()[
            "results"
        ]

    assert {h["external_id"] for h in search({"metadata": {"region": "south"}})} == {"b"}
    assert {h["external_id"] for h in search({"metadata": {"region": ["south", "capital"]}})} == {"a", "b"}
    assert {h["external_id"] for h in search({"external_ids": ["a"]})} == {"a"}
    assert {h["external_id"] for h in search({"document_ids": [b["id"]]})} == {"b"}


def test_listing_pages_with_a_cursor_and_filters_by_status(app_client):
    col = unique_collection()
    ids = [
        upload_text(app_client, col, f"{i}번째 문서입니다. 내용이 조금씩 다릅니다 {i}.").json()["id"] for i in range(5)
    ]
    for doc_id in ids:
        wait_for_status(app_client, col, doc_id)
    seen, cursor = [], None
    while True:
        page = app_client.get(
            f"/v1/collections/{col}/documents", params={"limit": 2, **({"cursor": cursor} if cursor else {})}
        ).json()
        seen += [d["id"] for d in page["items"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert sorted(seen) == sorted(ids) and len(seen) == 5
    indexed = app_client.get(f"/v1/collections/{col}/documents", params={"status": "indexed"}).json()["items"]
    assert len(indexed) == 5
    assert app_client.get(f"/v1/collections/{col}/documents", params={"status": "failed"}).json()["items"] == []


def test_health_and_readiness(app_client):
    assert app_client.get("/healthz").json() == {"status": "ok"}
    ready = app_client.get("/readyz")
    assert ready.status_code == 200, ready.text
    assert ready.json()["checks"]["database"] == "ok"


def test_decomposed_hangul_names_are_the_same_document(app_client):
    import unicodedata

    col = unique_collection()

    def nfd(s):
        return unicodedata.normalize("NFD", s)

    first = upload_text(app_client, col, BUSAN, external_id=nfd("부산-소개"), title=nfd("부산 소개"))
    assert (
        first.status_code == 202 and first.json()["external_id"] == "부산-소개" and first.json()["title"] == "부산 소개"
    )
    wait_for_status(app_client, col, first.json()["id"])
    again = upload_text(app_client, col, BUSAN, external_id="부산-소개", title="부산 소개")
    assert again.status_code == 200 and again.json()["id"] == first.json()["id"]
    hits = app_client.post(
        f"/v1/collections/{col}/search",
        json={"query": "해운대", "mode": "sparse", "filter": {"external_ids": [nfd("부산-소개")]}},
    ).json()["results"]
    assert [h["document_id"] for h in hits] == [first.json()["id"]]


def test_search_shows_the_searchable_versions_title_and_metadata(app_client):
    col = unique_collection()
    first = upload_text(app_client, col, SEOUL, external_id="law", title="서울 소개", metadata={"kind": "law"})
    wait_for_status(app_client, col, first.json()["id"])
    # A replacement that fails: the first version stays searchable, as it was labelled.
    broken = app_client.post(
        f"/v1/collections/{col}/documents",
        files={"file": ("new.pdf", b"%PDF-1.7 broken", "application/pdf")},
        data={"external_id": "law", "title": "깨진 판", "metadata": '{"kind": "broken"}'},
    )
    assert broken.status_code == 202, broken.text
    doc = wait_for_status(app_client, col, first.json()["id"])
    assert doc["status"] == "failed" and doc["indexed_generation"] == 1 and doc["title"] == "깨진 판"

    def search(kind):
        return app_client.post(
            f"/v1/collections/{col}/search",
            json={"query": "서울 지하철", "mode": "sparse", "filter": {"metadata": {"kind": kind}}},
        ).json()["results"]

    hits = search("law")
    assert hits and {(h["title"], h["metadata"]["kind"]) for h in hits} == {("서울 소개", "law")}
    assert search("broken") == []
