"""Bad input gets a 4xx with {"error": {"code", "message"}} and changes nothing."""

from __future__ import annotations

import io

import pytest

from tests.conftest import unique_collection, wait_for_status


def assert_error(response, status: int, code: str | None = None) -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["message"]
    if code:
        assert error["code"] == code
    return error


@pytest.fixture
def seeded(app_client):
    """A collection holding one indexed document; every test checks it is untouched."""
    col = unique_collection()
    doc = app_client.post(
        f"/v1/collections/{col}/documents", json={"text": "기존 문서는 그대로 남아야 한다.", "external_id": "x"}
    ).json()
    wait_for_status(app_client, col, doc["id"])
    yield col
    listing = app_client.get(f"/v1/collections/{col}/documents").json()["items"]
    assert [(d["external_id"], d["status"], d["generation"]) for d in listing] == [("x", "indexed", 1)]


def test_empty_json_body(app_client, seeded):
    r = app_client.post(
        f"/v1/collections/{seeded}/documents", content=b"", headers={"content-type": "application/json"}
    )
    assert_error(r, 422, "empty_body")


def test_blank_text(app_client, seeded):
    assert_error(app_client.post(f"/v1/collections/{seeded}/documents", json={"text": "   "}), 422)


def test_empty_file(app_client, seeded):
    r = app_client.post(
        f"/v1/collections/{seeded}/documents", files={"file": ("empty.txt", io.BytesIO(b""), "text/plain")}
    )
    assert_error(r, 422, "empty_document")


def test_missing_file_field(app_client, seeded):
    r = app_client.post(
        f"/v1/collections/{seeded}/documents", data={"title": "no file"}, files={"other": ("a.txt", b"x")}
    )
    assert_error(r, 422, "missing_file")


@pytest.mark.parametrize("name", ["Bad Name", "../etc", "한글", "x" * 64, "-lead", "trailing-newline%0A"])
def test_invalid_collection_names(app_client, name):
    r = app_client.post(f"/v1/collections/{name}/documents", json={"text": "문서"})
    assert r.status_code in (404, 422), r.text
    if r.status_code == 422:
        assert r.json()["error"]["code"] == "invalid_collection_name"


def test_collection_names_differing_only_in_dash_and_underscore(app_client, seeded):
    # Both would be stored in one index: the second name is refused (the fixture checks the first).
    assert "-" in seeded
    r = app_client.post(f"/v1/collections/{seeded.replace('-', '_')}/documents", json={"text": "다른 문서"})
    assert_error(r, 409, "collection_name_conflict")
    assert seeded in r.json()["error"]["message"]


def test_bodies_that_cannot_be_parsed(app_client, seeded):
    search = f"/v1/collections/{seeded}/search"
    r = app_client.post(search, content=b'{"query": "\xff\xfe"}', headers={"content-type": "application/json"})
    assert_error(r, 422, "malformed_body")
    upload = f"/v1/collections/{seeded}/documents"
    r = app_client.post(
        upload, files=[("file", ("a.txt", b"a", "text/plain")), ("file", ("b.txt", b"b", "text/plain"))]
    )
    assert_error(r, 422, "malformed_body")
    r = app_client.post(upload, content=b"--x\r\nbroken", headers={"content-type": "multipart/form-data"})
    assert r.status_code == 422 and r.json()["error"]["message"]


def test_metadata_that_is_not_json(app_client, seeded):
    r = app_client.post(
        f"/v1/collections/{seeded}/documents",
        files={"file": ("a.txt", io.BytesIO("문서".encode()), "text/plain")},
        data={"metadata": "{not json"},
    )
    assert_error(r, 422, "invalid_metadata")


@pytest.mark.parametrize(
    "metadata",
    [
        '{"v": NaN}',
        '{"v": Infinity}',
        '{"a": {"b": [-1e999]}}',
        '{"v": 100000000000000000000}',
        '{"v": -9223372036854775809}',
        "[" * 40 + "]" * 40,
        '{"a": ' * 40 + "1" + "}" * 40,
    ],
)
def test_metadata_the_index_cannot_store(app_client, seeded, metadata):
    # Accepted, such values would fail the document (and, before, its whole batch) at embedding.
    if metadata.startswith("["):
        metadata = '{"deep": ' + metadata + "}"
    body = '{"text": "문서", "metadata": ' + metadata + "}"
    r = app_client.post(
        f"/v1/collections/{seeded}/documents", content=body.encode(), headers={"content-type": "application/json"}
    )
    assert_error(r, 422, "invalid_metadata")
    r = app_client.post(
        f"/v1/collections/{seeded}/documents",
        data={"metadata": metadata},
        files={"file": ("a.txt", io.BytesIO("문서".encode()), "text/plain")},
    )
    assert_error(r, 422, "invalid_metadata")


def test_metadata_nested_past_the_json_parser(app_client, seeded):
    r = app_client.post(
        f"/v1/collections/{seeded}/documents",
        data={"metadata": "[" * 100_000},
        files={"file": ("a.txt", io.BytesIO("문서".encode()), "text/plain")},
    )
    assert_error(r, 422, "invalid_metadata")


def test_metadata_at_the_limits_is_kept(app_client, seeded):
    metadata = {"big": 2**63 - 1, "small": -(2**63), "x": 1.5, "nested": {"a": [1, {"b": True}]}}
    r = app_client.post(
        f"/v1/collections/{seeded}/documents", json={"text": "한계값 문서", "metadata": {**metadata, "huge": 1e20}}
    )
    assert r.status_code == 202, r.text
    doc = wait_for_status(app_client, seeded, r.json()["id"])
    assert doc["status"] == "indexed", doc
    # PostgreSQL's JSONB gives 1e20 back as the integer 100000000000000000000: equal in value.
    assert doc["metadata"].pop("huge") == 1e20
    assert doc["metadata"] == metadata
    hits = app_client.post(
        f"/v1/collections/{seeded}/search",
        json={"query": "한계값", "mode": "sparse", "filter": {"metadata": {"big": 2**63 - 1}}},
    ).json()
    assert [h["document_id"] for h in hits["results"]] == [doc["id"]]
    app_client.delete(f"/v1/collections/{seeded}/documents/{doc['id']}")


def test_metadata_that_is_not_an_object(app_client, seeded):
    r = app_client.post(f"/v1/collections/{seeded}/documents", json={"text": "문서", "metadata": [1, 2]})
    assert_error(r, 422)


def test_upload_over_the_limit_is_refused_with_413(app_client, seeded):
    limit = app_client.runtime.settings.max_upload_bytes
    big = b"a" * (50 * 1024 * 1024)  # a 50 MB upload against the 8 MB limit the tests configure
    assert len(big) > limit
    r = app_client.post(
        f"/v1/collections/{seeded}/documents", files={"file": ("big.txt", io.BytesIO(big), "text/plain")}
    )
    assert_error(r, 413, "payload_too_large")


def test_streamed_upload_without_length_is_cut_at_the_limit(app_client, seeded):
    limit = app_client.runtime.settings.max_upload_bytes

    def body():
        chunk = b"b" * (1024 * 1024)
        for _ in range(limit // len(chunk) + 2):
            yield chunk

    r = app_client.post(
        f"/v1/collections/{seeded}/documents", content=body(), headers={"content-type": "application/json"}
    )
    assert_error(r, 413, "payload_too_large")


def test_unknown_content_type(app_client, seeded):
    r = app_client.post(
        f"/v1/collections/{seeded}/documents", content=b"abc", headers={"content-type": "application/x-foo"}
    )
    assert_error(r, 415, "unsupported_media_type")


def test_unknown_binary_file_type(app_client, seeded):
    r = app_client.post(
        f"/v1/collections/{seeded}/documents",
        files={"file": ("x.bin", io.BytesIO(bytes(range(256)) * 8), "application/octet-stream")},
    )
    assert_error(r, 415, "unsupported_media_type")


def test_search_validation(app_client, seeded):
    url = f"/v1/collections/{seeded}/search"
    assert_error(app_client.post(url, json={"query": ""}), 422, "invalid_request")
    assert_error(app_client.post(url, json={"query": "서울", "top_k": 101}), 422, "invalid_request")
    assert_error(app_client.post(url, json={"query": "서울", "mode": "fuzzy"}), 422, "invalid_request")
    assert_error(app_client.post(url, content=b"{", headers={"content-type": "application/json"}), 422)
    for value in ("100000000000000000000", "NaN", "[1, -Infinity]"):
        body = '{"query": "서울", "mode": "sparse", "filter": {"metadata": {"v": ' + value + "}}}"
        assert_error(app_client.post(url, content=body.encode(), headers={"content-type": "application/json"}), 422)


def test_unknown_collection_and_document(app_client, seeded):
    assert_error(
        app_client.post("/v1/collections/nope-nope/search", json={"query": "서울"}), 404, "collection_not_found"
    )
    assert_error(app_client.get(f"/v1/collections/{seeded}/documents/00000000-0000-0000-0000-000000000000"), 404)
    assert_error(app_client.get(f"/v1/collections/{seeded}/documents/not-a-uuid"), 422)


def test_api_keys_required_when_configured(make_settings, tmp_path, monkeypatch):
    from fastapi.testclient import TestClient

    from services.api.app import create_app
    from services.db import upgrade_database
    from services.runtime import Runtime

    monkeypatch.setenv("SAEKIN_API_KEYS", "k1, k2")  # the documented form, read from the environment
    settings = make_settings()
    assert settings.api_keys == ["k1", "k2"]
    upgrade_database(settings.sqlalchemy_url)
    rt = Runtime(settings)
    with TestClient(create_app(settings, runtime=rt, warm_up=False)) as client:
        assert client.get("/healthz").status_code == 200
        assert_error(client.get("/v1/collections/abc/documents"), 401, "unauthorized")
        assert_error(client.get("/v1/collections/abc/documents", headers={"Authorization": "Bearer wrong"}), 401)
        # A token with non-ASCII characters is a wrong token, not a server error.
        assert_error(client.get("/v1/collections/abc/documents", headers={"Authorization": "Bearer 키".encode()}), 401)
        assert client.get("/v1/collections/abc/documents", headers={"Authorization": "Bearer k2"}).status_code == 404
    rt.close()
