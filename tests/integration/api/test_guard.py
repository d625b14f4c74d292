"""The request guard (services/api/guard.py): the key before any body, every JSON body capped.

The in-process TestClient reads a request's whole body before the app sees it, so the tests that
count what was read drive the ASGI app directly with a receive that hands out the body in pieces,
and one test sends a 300 MB declaration over a real socket to a real uvicorn server.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time

import pytest

KEY = "s3cret-key"
AUTH = {"Authorization": f"Bearer {KEY}"}


@pytest.fixture
def keyed(make_settings, tmp_path):
    """An app with an API key and a 64 KiB JSON cap, on SQLite, and its TestClient."""
    from fastapi.testclient import TestClient

    from services.api.app import create_app
    from services.db import upgrade_database
    from services.runtime import Runtime

    url = f"sqlite:///{tmp_path / 'guard.db'}"
    upgrade_database(url)
    settings = make_settings(database_url=url, api_keys=[KEY], max_json_mb=1 / 16)
    rt = Runtime(settings)
    app = create_app(settings, runtime=rt, warm_up=False)
    with TestClient(app) as client:
        client.runtime = rt
        yield client
    rt.close()


class Body:
    """An ASGI receive handing out `chunks` pieces of `size` bytes, counting what was taken."""

    def __init__(self, chunks: int, size: int = 1 << 20, piece: bytes = b" ") -> None:
        self.left, self.size, self.piece, self.taken = chunks, size, piece, 0

    async def __call__(self) -> dict:
        if self.left == 0:
            await asyncio.sleep(3600)  # a client that never sends more
        self.left -= 1
        self.taken += self.size
        return {"type": "http.request", "body": self.piece * self.size, "more_body": self.left > 0}


def call_asgi(app, method: str, path: str, receive, headers: dict[str, str]) -> tuple[int, dict, dict]:
    """One request straight into the ASGI app; its status, headers and JSON body."""
    sent: list[dict] = []

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
        "client": ("203.0.113.9", 40000),
        "server": ("127.0.0.1", 8000),
        "state": {},
    }
    asyncio.run(asyncio.wait_for(app(scope, receive, send), 60))
    start = next(m for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return start["status"], {k.decode(): v.decode() for k, v in start["headers"]}, json.loads(body)


def test_a_huge_body_without_a_key_is_refused_before_it_is_read(keyed):
    body = Body(chunks=300)  # 300 MB, chunked (no Content-Length)
    status, headers, answer = call_asgi(
        keyed.app, "POST", "/v1/collections/c/search", body, {"content-type": "application/json"}
    )
    assert status == 401 and answer["error"]["code"] == "unauthorized"
    assert headers["www-authenticate"] == "Bearer"
    assert body.taken == 0


def test_a_chunked_body_over_the_cap_stops_at_the_cap(keyed):
    body = Body(chunks=300, size=16 * 1024)
    status, _, answer = call_asgi(
        keyed.app, "POST", "/v1/collections/c/search", body, {"content-type": "application/json", **AUTH}
    )
    assert status == 413 and answer["error"]["code"] == "payload_too_large"
    assert body.taken <= 64 * 1024 + 16 * 1024  # read up to the 64 KiB cap, not the 4.8 MB sent


def test_a_declared_length_over_the_cap_is_refused_before_reading(keyed):
    body = Body(chunks=300)
    headers = {"content-type": "application/json", "content-length": str(300 << 20), **AUTH}
    status, _, answer = call_asgi(keyed.app, "POST", "/v1/search", body, headers)
    assert status == 413 and "over the limit of 65536 bytes" in answer["error"]["message"]
    assert body.taken == 0


@pytest.mark.parametrize(
    "path", ["/v1/collections/c/search", "/v1/collections/c/context", "/v1/search", "/v1/context", "/v1/rerank"]
)
def test_every_json_route_is_capped(keyed, path):
    big = {"query": "가" * 40_000, "collections": ["c"], "max_tokens": 5, "documents": ["b"]}
    r = keyed.post(path, json=big, headers=AUTH)
    assert r.status_code == 413, r.text
    assert r.json()["error"]["code"] == "payload_too_large"


def test_a_malformed_body_without_a_key_gets_401_not_422(keyed):
    r = keyed.post("/v1/collections/c/search", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 401, r.text
    r = keyed.post("/v1/collections/c/search", content=b"{not json", headers={"Authorization": "Bearer wrong"})
    assert r.status_code == 401, r.text


def test_mcp_is_behind_the_same_guard(keyed):
    call = {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}
    assert keyed.post("/mcp", json=call).status_code == 401
    headers = {**AUTH, "Accept": "application/json, text/event-stream", "Host": "127.0.0.1:8000"}
    r = keyed.post("/mcp", json=call, headers=headers)
    assert r.status_code == 200, r.text
    assert "search" in {t["name"] for t in r.json()["result"]["tools"]}


def test_public_paths_stay_open(keyed):
    for path in ["/healthz", "/readyz", "/openapi.json", "/docs", "/redoc", "/docs/oauth2-redirect", "/console"]:
        assert keyed.get(path).status_code in (200, 503), path
    assert keyed.get("/console/static/app.js").status_code == 200
    assert keyed.get("/docs-assets/swagger-ui.css").status_code == 200
    assert keyed.get("/", follow_redirects=False).status_code == 307
    # Neighbours of public paths are not public.
    for path in ["/healthz/x", "/console/other", "/docsx", "/v1/collections"]:
        assert keyed.get(path).status_code == 401, path


def test_uploads_keep_their_own_limit(keyed):
    # 200 KB of text: over the 64 KiB JSON cap, under the 8 MB upload limit.
    r = keyed.post("/v1/collections/big/documents", json={"text": "한국어 문장입니다. " * 10_000}, headers=AUTH)
    assert r.status_code == 202, r.text
    r = keyed.post("/v1/collections/big/documents", json={"text": "x"})
    assert r.status_code == 401


def test_routes_see_the_principal(keyed):
    from services.auth.models import Scope

    authenticator = keyed.app.state.authenticator  # the guard's hook asks this one
    found = authenticator.authenticate(KEY)
    assert found is not None and found.name == "SAEKIN_API_KEYS[0]" and found.scope == Scope.admin
    assert authenticator.authenticate("other") is None
    assert authenticator.authenticate(None) is None
    schema = keyed.get("/openapi.json").json()
    assert schema["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"


def test_a_real_server_answers_a_300_mb_declaration_without_a_key_at_once(make_settings, tmp_path):
    import uvicorn

    from services.api.app import create_app
    from services.db import upgrade_database
    from services.runtime import Runtime

    url = f"sqlite:///{tmp_path / 'served.db'}"
    upgrade_database(url)
    settings = make_settings(database_url=url, api_keys=[KEY])
    rt = Runtime(settings)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(settings, runtime=rt, warm_up=False), host="127.0.0.1", port=port, log_level="warning"
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        while not server.started:
            time.sleep(0.05)
        with socket.create_connection(("127.0.0.1", port), timeout=30) as conn:
            conn.sendall(
                b"POST /v1/collections/c/search HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                + f"Content-Length: {300 << 20}\r\n\r\n".encode()
                + b'{"query": "'
            )
            answer = conn.recv(65536).decode()  # only 11 of the 300 MB were sent: the answer cannot wait for them
        assert answer.startswith("HTTP/1.1 401"), answer
        assert '"unauthorized"' in answer
    finally:
        server.should_exit = True
        thread.join(10)
        rt.close()
