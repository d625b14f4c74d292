"""GET /metrics after an upload and a search, parsed with prometheus-client's own parser; request
ids; the document event lines."""

from __future__ import annotations

import io
import json
import logging

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import unique_collection, wait_for_status


def scrape(client, **headers) -> dict[str, list]:
    r = client.get("/metrics", headers=headers)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain")
    return {f.name: f.samples for f in text_string_to_metric_families(r.text)}


def samples(families: dict[str, list], name: str, **labels: str) -> list:
    """Samples of the family `name` (a counter's family drops `_total`: its samples keep it)."""
    family = families.get(name.removesuffix("_total"), [])
    return [s for s in family if all(s.labels.get(k) == v for k, v in labels.items())]


@pytest.fixture
def json_log():
    """Records of the saekin loggers as the service writes them (JSON lines with request ids)."""
    from services.observability.logs import AlembicChatterFilter, RequestIdFilter, json_formatter

    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(json_formatter())
    handler.addFilter(RequestIdFilter())
    handler.addFilter(AlembicChatterFilter())
    logger = logging.getLogger("saekin")
    logger.addHandler(handler)
    old_level = logger.level
    logger.setLevel(logging.INFO)
    yield lambda: [json.loads(line) for line in stream.getvalue().splitlines()]
    logger.removeHandler(handler)
    logger.setLevel(old_level)


def test_metrics_after_an_upload_and_a_search(app_client, json_log):
    col = unique_collection("m")
    r = app_client.post(
        f"/v1/collections/{col}/documents",
        json={
            "text": "서울에서는 매년 가을에 세계 불꽃 축제가 열린다. 관람객은 한강 공원에 모인다.",
            "external_id": "seoul",
        },
        headers={"X-Request-ID": "upload-req-1"},
    )
    assert r.status_code == 202, r.text
    assert r.headers["x-request-id"] == "upload-req-1"
    doc = wait_for_status(app_client, col, r.json()["id"])
    assert doc["status"] == "indexed"
    r = app_client.post(f"/v1/collections/{col}/search", json={"query": "서울 축제", "highlight": True})
    assert r.status_code == 200 and r.json()["results"]
    assert len(r.headers["x-request-id"]) == 32  # none sent: a new one

    m = scrape(app_client)
    # request latency per route template (not per collection name) and status
    search_route = "/v1/collections/{collection}/search"
    count = samples(m, "saekin_http_request_duration_seconds", route=search_route, status="200", method="POST")
    assert any(s.name.endswith("_count") and s.value >= 1 for s in count)
    assert not [s for s in m["saekin_http_request_duration_seconds"] if col in s.labels["route"]]
    upload = samples(m, "saekin_http_request_duration_seconds", route="/v1/collections/{collection}/documents")
    assert {s.labels["status"] for s in upload} >= {"202"}
    # search stages
    stages = {s.labels["stage"] for s in m["saekin_search_stage_seconds"] if s.name.endswith("_count")}
    assert {"encode", "analyse", "index_query", "sql", "highlight"} <= stages
    # ingestion stages, chunks, documents
    ingest = {s.labels["stage"] for s in m["saekin_ingest_stage_seconds"] if s.name.endswith("_count")}
    assert {"extract", "chunk", "store", "embed", "upsert", "publish"} <= ingest
    assert samples(m, "saekin_ingest_chunks_total", stage="embed")[0].value >= doc["chunk_count"]
    assert samples(m, "saekin_ingest_documents_total", outcome="indexed")[0].value >= 1
    assert samples(m, "saekin_documents", collection=col, status="indexed")[0].value == 1
    assert samples(m, "saekin_queue_depth", queue="inprocess")[0].value >= 0
    assert samples(m, "saekin_embedding_tokens_total", kind="document")[0].value > 0
    assert samples(m, "saekin_embedding_tokens_total", kind="query")[0].value > 0
    assert samples(m, "saekin_model_loaded", model="embedding")[0].value == 1
    assert samples(m, "saekin_model_loaded", model="analyzer")[0].value == 1

    # one event line per state change, with collection, stage, duration and chunks
    records = json_log()
    events = [r for r in records if r["logger"] == "saekin.documents" and r["document_id"] == doc["id"]]
    assert [(e["status"], e["stage"]) for e in events] == [
        ("queued", None),
        ("processing", "extracting"),
        ("processing", "embedding"),
        ("indexed", "done"),
    ]
    assert all(e["collection"] == col for e in events)
    assert events[0]["request_id"] == "upload-req-1"  # stored in the upload request
    assert events[2]["chunks"] == events[3]["chunks"] == doc["chunk_count"]
    assert events[2]["duration_s"] >= 0 and events[3]["duration_s"] >= 0
    access = [r for r in records if r["logger"] == "saekin.access" and r["route"] == search_route]
    assert access and access[0]["status"] == 200 and len(access[0]["request_id"]) == 32


def test_a_failed_document_logs_its_reason(app_client, json_log):
    col = unique_collection("m")
    r = app_client.post(
        f"/v1/collections/{col}/documents", files={"file": ("broken.pdf", b"%PDF-1.7 broken", "application/pdf")}
    )
    assert r.status_code == 202, r.text
    doc = wait_for_status(app_client, col, r.json()["id"])
    assert doc["status"] == "failed"
    events = [e for e in json_log() if e["logger"] == "saekin.documents" and e["document_id"] == doc["id"]]
    assert events[-1]["status"] == "failed" and events[-1]["level"] == "WARNING"
    assert events[-1]["reason"] == doc["error"] and events[-1]["collection"] == col
    assert events[-1]["duration_s"] >= 0


def test_incoming_request_ids_are_kept_only_when_sane(app_client):
    assert app_client.get("/healthz", headers={"X-Request-ID": "abc-123.def"}).headers["x-request-id"] == "abc-123.def"
    forged = app_client.get("/healthz", headers={"X-Request-ID": "a b\tc"}).headers["x-request-id"]
    assert forged != "a b\tc" and len(forged) == 32
    assert len(app_client.get("/healthz", headers={"X-Request-ID": "x" * 200}).headers["x-request-id"]) == 32


def test_unmatched_paths_share_one_label(app_client):
    app_client.get("/no/such/path/12345")
    m = scrape(app_client)
    routes = {s.labels["route"] for s in m["saekin_http_request_duration_seconds"]}
    assert "<unmatched>" in routes and "/no/such/path/12345" not in routes


@pytest.fixture
def sqlite_url(tmp_path) -> str:
    from services.db import upgrade_database

    url = f"sqlite:///{tmp_path / 'metrics.db'}"
    upgrade_database(url)
    return url


def test_metrics_behind_the_keys(make_settings, sqlite_url):
    from fastapi.testclient import TestClient

    from services.api.app import create_app

    settings = make_settings(database_url=sqlite_url, api_keys=["admin-key"], metrics_token="scrape-only")
    with TestClient(create_app(settings, warm_up=False)) as client:
        assert client.get("/metrics").status_code == 401
        assert client.get("/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert client.get("/metrics", headers={"Authorization": "Bearer admin-key"}).status_code == 200
        assert client.get("/metrics", headers={"Authorization": "Bearer scrape-only"}).status_code == 200
        # the scrape token opens /metrics only
        assert client.get("/v1/collections", headers={"Authorization": "Bearer scrape-only"}).status_code == 403
