"""Text no database or index can hold, and metadata keys a payload path cannot spell: one answer on
SQLite and PostgreSQL (422 naming the field, or it works), never a 500."""

from __future__ import annotations

import json

import pytest

from tests.conftest import unique_collection, wait_for_status


def raw_json(client, path: str, body: str):
    """POST a JSON text as written (json= would re-encode escapes such as a lone surrogate)."""
    return client.post(path, content=body.encode("utf-8"), headers={"content-type": "application/json"})


@pytest.fixture
def indexed(app_client):
    """A collection with one indexed document."""
    col = unique_collection()
    doc = app_client.post(
        f"/v1/collections/{col}/documents",
        json={"text": "서울은 대한민국의 수도이다.", "external_id": "seoul", "metadata": {"city": "서울"}},
    )
    assert doc.status_code == 202, doc.text
    assert wait_for_status(app_client, col, doc.json()["id"])["status"] == "indexed"
    return col


@pytest.mark.parametrize("mode", ["sparse", "dense", "hybrid"])
def test_a_metadata_key_a_filter_cannot_name_is_refused_in_filters(app_client, indexed, mode):
    # Qdrant's payload paths quote a key with no escapes: a backslash or '"' cannot be spelt.
    search = f"/v1/collections/{indexed}/search"
    for key in ("a\\b", 'a"b'):
        r = app_client.post(search, json={"query": "서울", "mode": mode, "filter": {"metadata": {key: True}}})
        assert r.status_code == 422, r.text
        assert "metadata key" in r.json()["error"]["message"]
    ok = app_client.post(search, json={"query": "서울", "mode": mode, "filter": {"metadata": {"city": "서울"}}})
    assert ok.status_code == 200 and [h["external_id"] for h in ok.json()["results"]] == ["seoul"]


@pytest.mark.parametrize("key", ["a\\b", 'a"b', "a.b"])
def test_the_same_keys_are_refused_at_upload(app_client, key):
    col = unique_collection()
    r = app_client.post(f"/v1/collections/{col}/documents", json={"text": "본문", "metadata": {key: 1}})
    assert r.status_code == 422, r.text
    assert "metadata key" in r.json()["error"]["message"]
    # Nested keys are not filterable and stay free.
    r = app_client.post(f"/v1/collections/{col}/documents", json={"text": "본문", "metadata": {"k": {key: 1}}})
    assert r.status_code == 202, r.text


@pytest.mark.parametrize(
    "filter_json",
    [
        '{"external_ids": ["\\ud800"]}',
        '{"external_ids": ["ok", "x\\udfffy"]}',
        '{"metadata": {"city": "\\ud800"}}',
        '{"metadata": {"city": ["서울", "\\udc00"]}}',
        '{"metadata": {"\\ud800": true}}',
    ],
)
def test_lone_surrogates_in_a_filter_are_refused(app_client, indexed, filter_json):
    for path, extra in (
        (f"/v1/collections/{indexed}/search", ""),
        (f"/v1/collections/{indexed}/context", ', "max_tokens": 50'),
    ):
        r = raw_json(app_client, path, f'{{"query": "서울"{extra}, "filter": {filter_json}}}')
        assert r.status_code == 422, r.text
        assert "surrogate" in r.json()["error"]["message"]


@pytest.mark.parametrize(
    ("field", "body", "named"),
    [
        ("external_id", {"external_id": "a\u0000b"}, "external_id"),
        ("title", {"title": "제목\u0000"}, "title"),
        ("metadata key", {"metadata": {"k\u0000": 1}}, "metadata"),
        ("metadata value", {"metadata": {"k": "v\u0000"}}, "metadata"),
        ("nested metadata value", {"metadata": {"k": [{"x": "\u0000"}]}}, "metadata"),
    ],
)
def test_nul_characters_are_refused_on_both_databases(app_client, field, body, named):
    col = unique_collection()
    r = app_client.post(f"/v1/collections/{col}/documents", json={"text": "본문", **body})
    assert r.status_code == 422, (field, r.text)
    error = r.json()["error"]
    assert named in error["message"] and "NUL" in error["message"]
    # Multipart uploads follow the same rule.
    form = {k: (json.dumps(v) if k == "metadata" else v) for k, v in body.items()}
    r = app_client.post(f"/v1/collections/{col}/documents", data=form, files={"file": ("a.txt", "본문".encode())})
    assert r.status_code == 422, (field, r.text)
    assert named in r.json()["error"]["message"]
    assert app_client.get(f"/v1/collections/{col}").status_code == 404  # nothing was stored


def test_nul_in_filters_and_lookups_is_refused(app_client, indexed):
    search = f"/v1/collections/{indexed}/search"
    for flt in ({"external_ids": ["a\u0000"]}, {"metadata": {"city": "서\u0000울"}}, {"metadata": {"k\u0000": 1}}):
        r = app_client.post(search, json={"query": "서울", "filter": flt})
        assert r.status_code == 422, r.text
        assert "NUL" in r.json()["error"]["message"]
    r = app_client.get(f"/v1/collections/{indexed}/documents", params={"external_id": "a\u0000"})
    assert r.status_code == 422, r.text
    r = app_client.delete(f"/v1/collections/{indexed}/documents", params={"external_id": "a\u0000"})
    assert r.status_code == 422, r.text


def test_lone_surrogates_in_an_upload_are_refused(app_client):
    col = unique_collection()
    for fields in ('"external_id": "\\ud800"', '"title": "\\udfff"', '"metadata": {"k": "\\ud800"}'):
        r = raw_json(app_client, f"/v1/collections/{col}/documents", f'{{"text": "본문", {fields}}}')
        assert r.status_code == 422, r.text
