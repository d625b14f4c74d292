"""API keys with scopes and collections: tenant isolation on every route of the app's route table
(a key for collection A gets 404 for B, as if B did not exist), scopes, limits, the bearer scheme."""

from __future__ import annotations

import json
import time

import pytest
from fastapi.routing import APIRoute
from starlette.routing import Route

from tests.conftest import wait_for_status

ROOT = {"Authorization": "Bearer root-key"}
A, B = "tenant-a", "tenant-b"


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def app_routes(app) -> set[tuple[str, str]]:
    """(method, path) of every route of the app: API routes (in included routers too) and /mcp."""
    found: set[tuple[str, str]] = set()

    def walk(routes):
        for route in routes:
            if hasattr(route, "effective_route_contexts"):  # an included router (FastAPI >= 0.13x)
                walk(ctx.original_route for ctx in route.effective_route_contexts())
            elif isinstance(route, APIRoute | Route):
                for method in sorted((route.methods or {"POST"}) - {"HEAD"}):
                    found.add((method, route.path))

    walk(app.router.routes)
    return found


# Routes that answer the same to everyone (no key needed, nothing of a collection in them).
PUBLIC = {
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("GET", "/openapi.json"),
    ("GET", "/docs"),
    ("GET", "/docs/oauth2-redirect"),
    ("GET", "/redoc"),
    ("GET", "/console"),
    ("GET", "/"),
}
DOC = "{doc}"
# Every other route, as a request about collection B (what a key of A must not reach).
CASES: dict[tuple[str, str], tuple[str, dict | None, dict | None]] = {
    ("GET", "/v1/collections"): ("/v1/collections", None, None),
    ("GET", "/v1/collections/{collection}"): (f"/v1/collections/{B}", None, None),
    ("PATCH", "/v1/collections/{collection}"): (f"/v1/collections/{B}", {"search_defaults": {"mode": "sparse"}}, None),
    ("DELETE", "/v1/collections/{collection}"): (f"/v1/collections/{B}", None, None),
    ("POST", "/v1/collections/{collection}/reindex"): (f"/v1/collections/{B}/reindex", {"sparse_only": True}, None),
    ("POST", "/v1/collections/{collection}/documents"): (f"/v1/collections/{B}/documents", {"text": "침입 문서"}, None),
    ("GET", "/v1/collections/{collection}/documents"): (f"/v1/collections/{B}/documents", None, None),
    ("DELETE", "/v1/collections/{collection}/documents"): (
        f"/v1/collections/{B}/documents",
        None,
        {"external_id": "b1"},
    ),
    ("GET", "/v1/collections/{collection}/documents/{document_id}"): (
        f"/v1/collections/{B}/documents/{DOC}",
        None,
        None,
    ),
    ("GET", "/v1/collections/{collection}/documents/{document_id}/chunks"): (
        f"/v1/collections/{B}/documents/{DOC}/chunks",
        None,
        None,
    ),
    ("DELETE", "/v1/collections/{collection}/documents/{document_id}"): (
        f"/v1/collections/{B}/documents/{DOC}",
        None,
        None,
    ),
    ("POST", "/v1/collections/{collection}/search"): (f"/v1/collections/{B}/search", {"query": "부산 축제"}, None),
    ("POST", "/v1/collections/{collection}/context"): (
        f"/v1/collections/{B}/context",
        {"query": "부산 축제", "max_tokens": 200},
        None,
    ),
    ("POST", "/v1/search"): ("/v1/search", {"query": "축제", "collections": [A, B]}, None),
    ("POST", "/v1/context"): ("/v1/context", {"query": "축제", "collections": [A, B], "max_tokens": 200}, None),
    ("POST", "/v1/embeddings"): ("/v1/embeddings", {"model": "bge-m3-ko", "input": "축제"}, None),
    ("POST", "/v1/rerank"): ("/v1/rerank", {"query": "축제", "documents": ["부산 축제"]}, None),
    ("GET", "/v1/keys"): ("/v1/keys", None, None),
    ("POST", "/v1/keys"): ("/v1/keys", {"name": "mine", "scope": "admin", "collections": [B]}, None),
    ("DELETE", "/v1/keys/{key_id}"): ("/v1/keys/{key_b}", None, None),
    ("POST", "/v1/backup"): ("/v1/backup", {"directory": "/tmp/saekin-tenant-backup-never-written"}, None),
    ("GET", "/metrics"): ("/metrics", None, None),
    ("POST", "/mcp"): ("/mcp", None, None),
}
# What a key of A gets on the routes that name no collection of B in their path.
EXPECTED_OTHER = {
    ("GET", "/v1/collections"): 200,  # listed without B
    ("POST", "/v1/embeddings"): 200,  # no collection: any read key
    ("POST", "/v1/rerank"): 404,  # reranker_not_configured here, not a tenant answer (checked below)
    ("GET", "/v1/keys"): 403,  # keys: admin of every collection only
    ("POST", "/v1/keys"): 403,
    ("DELETE", "/v1/keys/{key_id}"): 403,
    ("POST", "/v1/backup"): 403,  # every collection's data
    ("GET", "/metrics"): 403,  # names every collection
}


@pytest.fixture(scope="module")
def tenants(tmp_path_factory, small_twin):
    """An app with SAEKIN_API_KEYS=root-key, collections A and B with one document each, and keys."""
    from fastapi.testclient import TestClient

    from config.settings import Settings
    from services.api.app import create_app
    from services.db import upgrade_database
    from services.runtime import Runtime

    tmp = tmp_path_factory.mktemp("tenants")
    url = f"sqlite:///{tmp / 'tenants.db'}"
    upgrade_database(url)
    settings = Settings(
        _env_file=None,
        data_dir=tmp / "data",
        embedding_model=str(small_twin),
        database_url=url,
        api_keys=["root-key"],
        chunk_overlap_tokens=16,
    )
    rt = Runtime(settings)
    app = create_app(settings, runtime=rt, warm_up=False)
    with TestClient(app) as client:
        docs = {}
        for col, text, ext in ((A, "서울에서 불꽃 축제가 열린다.", "a1"), (B, "부산에서 모래 축제가 열린다.", "b1")):
            r = client.post(f"/v1/collections/{col}/documents", json={"text": text, "external_id": ext}, headers=ROOT)
            assert r.status_code == 202, r.text
            docs[col] = r.json()["id"]
            assert wait_for_status(_Authed(client, ROOT), col, docs[col])["status"] == "indexed"
        keys = {}
        for name, scope, collections in (
            ("a-read", "read", [A]),
            ("a-write", "write", [A]),
            ("a-admin", "admin", ["tenant-a*"]),  # a pattern: tenant-a, tenant-a2, ... never tenant-b
            ("b-admin", "admin", [B]),
        ):
            r = client.post("/v1/keys", json={"name": name, "scope": scope, "collections": collections}, headers=ROOT)
            assert r.status_code == 201, r.text
            keys[name] = r.json()
        client.docs, client.keys = docs, keys
        yield client
    rt.close()


class _Authed:
    """A client that sends a key with every request (for wait_for_status)."""

    def __init__(self, client, headers):
        self.client, self.headers = client, headers

    def get(self, url, **kw):
        return self.client.get(url, headers=self.headers, **kw)


def send(client, route: tuple[str, str], headers: dict[str, str]):
    path, body, params = CASES[route]
    path = path.replace(DOC, client.docs[B]).replace("{key_b}", client.keys["b-admin"]["id"])
    return client.request(route[0], path, json=body, params=params, headers=headers)


def test_every_route_of_the_app_has_a_tenant_case(tenants):
    """A route added without a case here fails: give it one (and an access rule in services/api/auth.py)."""
    routes = app_routes(tenants.app)
    assert routes - PUBLIC - {r for r in routes if r[1].startswith(("/docs-assets", "/console/static"))} == set(CASES)


@pytest.mark.parametrize("route", sorted(CASES), ids=lambda r: f"{r[0]} {r[1]}")
def test_a_key_of_collection_a_gets_404_for_b(tenants, route):
    key = bearer(tenants.keys["a-admin"]["key"])  # the largest scope: only the collection can refuse it
    if route == ("POST", "/mcp"):
        return _mcp_case(tenants, key)
    r = send(tenants, route, key)
    if route in EXPECTED_OTHER:
        assert r.status_code == EXPECTED_OTHER[route], (route, r.status_code, r.text)
        if route == ("GET", "/v1/collections"):
            assert [c["name"] for c in r.json()["items"]] == [A]
        if route == ("POST", "/v1/rerank"):
            assert r.json()["error"]["code"] == "reranker_not_configured"
        return
    assert r.status_code == 404, (route, r.status_code, r.text)
    # the answer a missing collection gets: B's existence does not leak
    assert r.json()["error"] == {"code": "collection_not_found", "message": f"collection {B!r} does not exist"}
    missing = send(tenants, route, ROOT) if route[0] == "GET" and "{document_id}" not in route[1] else None
    if missing is not None:  # B exists and the root key reaches it
        assert missing.status_code == 200, (route, missing.text)
    # nothing of B was changed or deleted
    assert tenants.get(f"/v1/collections/{B}/documents/{tenants.docs[B]}", headers=ROOT).json()["status"] == "indexed"


def _mcp(client, key, name, arguments):
    r = client.post(
        "http://127.0.0.1:8000/mcp",  # the MCP transport checks the Host header (DNS rebinding)
        json={"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": name, "arguments": arguments}},
        headers={**key, "Accept": "application/json, text/event-stream"},
    )
    assert r.status_code == 200, r.text
    return r.json()["result"]


def _mcp_case(client, key):
    for name, arguments in (
        ("search", {"query": "축제", "collections": [B]}),
        ("search", {"query": "축제", "collections": [A, B]}),
        ("get_context", {"query": "축제", "collections": [B]}),
        ("get_document", {"collection": B, "document_id": client.docs[B]}),
    ):
        result = _mcp(client, key, name, arguments)
        assert result["isError"], (name, result)
        assert f"collection_not_found: collection {B!r} does not exist" in result["content"][0]["text"]
    listed = _mcp(client, key, "list_collections", {})
    assert [c["name"] for c in json.loads(listed["content"][0]["text"])["items"]] == [A]
    found = _mcp(client, key, "search", {"query": "축제", "collections": [A], "mode": "sparse"})
    assert not found["isError"] and json.loads(found["content"][0]["text"])["results"]


def test_scopes(tenants):
    read, write = bearer(tenants.keys["a-read"]["key"]), bearer(tenants.keys["a-write"]["key"])
    admin = bearer(tenants.keys["a-admin"]["key"])
    assert tenants.post(f"/v1/collections/{A}/search", json={"query": "축제"}, headers=read).status_code == 200
    r = tenants.post(f"/v1/collections/{A}/documents", json={"text": "읽기 키의 문서"}, headers=read)
    assert r.status_code == 403 and r.json()["error"]["code"] == "insufficient_scope"
    r = tenants.post(
        f"/v1/collections/{A}/documents", json={"text": "쓰기 키의 문서", "external_id": "w"}, headers=write
    )
    assert r.status_code == 202
    assert (
        tenants.delete(f"/v1/collections/{A}/documents", params={"external_id": "w"}, headers=write).status_code == 204
    )
    patch = {"search_defaults": {"mode": "sparse"}}
    assert tenants.patch(f"/v1/collections/{A}", json=patch, headers=write).status_code == 403
    assert tenants.patch(f"/v1/collections/{A}", json=patch, headers=admin).status_code == 200
    # a pattern: the admin key of tenant-a* may create tenant-a2, never tenant-b
    r = tenants.post("/v1/collections/tenant-a2/documents", json={"text": "둘째 컬렉션"}, headers=admin)
    assert r.status_code == 202
    assert tenants.get("/v1/keys", headers=read).status_code == 403


def test_keys_over_http_are_hashed_shown_once_and_revocable(tenants):
    from services.auth.keys import hash_key
    from services.auth.models import ApiKey
    from services.db import session_scope

    created = tenants.post("/v1/keys", json={"name": "temp", "collections": [A]}, headers=ROOT).json()
    assert created["key"].startswith("sk_") and created["scope"] == "read"
    with session_scope(tenants.app.state.runtime.session_factory) as session:
        row = session.get(ApiKey, __import__("uuid").UUID(created["id"]))
        assert row.key_hash == hash_key(created["key"]) and created["key"] not in json.dumps(row.collections)
    listed = tenants.get("/v1/keys", headers=ROOT).json()["items"]
    assert created["id"] in {k["id"] for k in listed} and all("key" not in k for k in listed)
    key = bearer(created["key"])
    assert tenants.get("/v1/collections", headers=key).status_code == 200
    assert tenants.delete(f"/v1/keys/{created['id']}", headers=ROOT).status_code == 204
    assert tenants.get("/v1/collections", headers=key).status_code == 401  # this process forgets at once
    assert tenants.get("/v1/collections", headers=bearer("sk_not-a-key")).status_code == 401
    assert tenants.get("/v1/collections").status_code == 401


def test_the_openapi_declares_the_bearer_scheme(tenants):
    spec = tenants.get("/openapi.json").json()
    schemes = spec["components"]["securitySchemes"]
    assert {"type": "http", "scheme": "bearer"}.items() <= schemes["HTTPBearer"].items()
    assert spec["paths"]["/v1/collections/{collection}/search"]["post"]["security"] == [{"HTTPBearer": []}]


@pytest.fixture
def limited(make_settings, tmp_path):
    from fastapi.testclient import TestClient

    from services.api.app import create_app
    from services.db import upgrade_database

    url = f"sqlite:///{tmp_path / 'limits.db'}"
    upgrade_database(url)
    settings = make_settings(database_url=url, api_keys=["root-key"], key_rate_limit_rps=1000)
    with TestClient(create_app(settings, warm_up=False)) as client:
        yield client


def test_a_key_over_its_request_rate_gets_429_with_retry_after(limited):
    key = limited.post(
        "/v1/keys", json={"name": "slow", "collections": ["*"], "rate_limit_rps": 0.01}, headers=ROOT
    ).json()["key"]
    assert limited.get("/v1/collections", headers=bearer(key)).status_code == 200  # the bucket's one request
    r = limited.get("/v1/collections", headers=bearer(key))
    assert r.status_code == 429 and r.json()["error"]["code"] == "rate_limited"
    assert 1 <= int(r.headers["retry-after"]) <= 100
    assert limited.get("/v1/collections", headers=ROOT).status_code == 200  # counted per key


def test_a_key_over_its_upload_bytes_per_day_gets_429(limited):
    key = limited.post(
        "/v1/keys",
        json={"name": "small", "scope": "write", "collections": ["*"], "upload_mb_per_day": 0.0001},
        headers=ROOT,
    ).json()["key"]  # 104 bytes a day
    text = "가" * 20  # 60 bytes of UTF-8
    assert limited.post("/v1/collections/q/documents", json={"text": text}, headers=bearer(key)).status_code == 202
    r = limited.post("/v1/collections/q/documents", json={"text": text + "나"}, headers=bearer(key))
    assert r.status_code == 429 and r.json()["error"]["code"] == "upload_quota"
    assert int(r.headers["retry-after"]) >= 1
    assert limited.post("/v1/collections/q/documents", json={"text": text + "다"}, headers=ROOT).status_code == 202


def test_redis_limits_are_shared_between_processes(redis_url):
    import uuid

    from services.auth.limits import RedisLimits

    first, second = RedisLimits(redis_url), RedisLimits(redis_url)  # two API processes
    key = f"test-{uuid.uuid4().hex}"
    assert first.take_request(key, 2) is None and second.take_request(key, 2) is None
    wait = first.take_request(key, 2)
    assert wait is not None and 0 < wait <= 0.5
    time.sleep(wait + 0.05)
    assert second.take_request(key, 2) is None
    assert first.take_upload(key, 60, 100) is None
    assert second.take_upload(key, 60, 100) is not None  # 120 > 100: refused, not counted
    assert second.upload_room(key, 100)[0] == 40
