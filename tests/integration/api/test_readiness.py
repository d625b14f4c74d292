"""/readyz tells the truth without telling strangers too much; a model that cannot load is said so
at once; `saekin serve` refuses to start exposed or with an unusable model."""

from __future__ import annotations

import pytest

from tests.conftest import unique_collection, wait_for_status

KEY = "readiness-key"


class BrokenBroker:
    """A dispatcher whose broker is down; its error names the host, as Celery's would."""

    def dispatch(self, *_args, **_kw) -> None:
        raise RuntimeError("Error 111 connecting to redis-internal.example:6379. Connection refused.")

    def ping(self) -> None:
        raise RuntimeError("Error 111 connecting to redis-internal.example:6379. Connection refused.")

    def close(self) -> None:
        pass


def _client(settings, dispatcher=None, warm_up=False):
    from fastapi.testclient import TestClient

    from services.api.app import create_app
    from services.runtime import Runtime

    rt = Runtime(settings)
    return TestClient(create_app(settings, runtime=rt, dispatcher=dispatcher, warm_up=warm_up)), rt


@pytest.fixture
def sqlite_url(tmp_path):
    from services.db import upgrade_database

    url = f"sqlite:///{tmp_path / 'ready.db'}"
    upgrade_database(url)
    return url


def test_public_readiness_names_the_component_but_not_the_error(make_settings, sqlite_url):
    settings = make_settings(database_url=sqlite_url, api_keys=[KEY])
    client, rt = _client(settings, dispatcher=BrokenBroker())
    with client:
        public = client.get("/readyz")
        assert public.status_code == 503
        assert public.json() == {
            "status": "not_ready",
            "checks": {"database": "ok", "index": "ok", "broker": "failed", "model": "ok"},
        }
        assert "redis-internal" not in public.text
        wrong_key = client.get("/readyz", headers={"Authorization": "Bearer nope"})
        assert "redis-internal" not in wrong_key.text
        private = client.get("/readyz", headers={"Authorization": f"Bearer {KEY}"}).json()
        assert "redis-internal.example:6379" in private["details"]["broker"]
    rt.close()


def test_without_keys_details_go_to_this_machine_only(make_settings, sqlite_url):
    from services.api.routers.health import _may_see_details
    from services.auth.principal import ANONYMOUS

    class Req:
        def __init__(self, client):
            self.scope = {"client": client}
            self.state = type("S", (), {"principal": ANONYMOUS})()

    assert _may_see_details(Req(("127.0.0.1", 5000)))
    assert _may_see_details(Req(("::1", 5000)))
    assert not _may_see_details(Req(("192.0.2.7", 5000)))


@pytest.fixture
def indexed_then_model_gone(make_settings, tmp_path):
    """An embedded data directory with one indexed document; then the settings of a service whose
    model directory does not exist."""
    from fastapi.testclient import TestClient

    from services.api.app import create_app
    from services.db import upgrade_database
    from services.runtime import Runtime

    settings = make_settings()
    upgrade_database(settings.sqlalchemy_url)
    col = unique_collection()
    rt = Runtime(settings)
    with TestClient(create_app(settings, runtime=rt, warm_up=False)) as client:
        doc = client.post(f"/v1/collections/{col}/documents", json={"text": "서울은 대한민국의 수도이다."}).json()
        assert wait_for_status(client, col, doc["id"])["status"] == "indexed"
    rt.close()
    return col, make_settings(embedding_model=str(tmp_path / "no-such-model"))


def test_a_model_that_cannot_load_fails_readiness_and_dense_search_at_once(indexed_then_model_gone):
    col, settings = indexed_then_model_gone
    client, rt = _client(settings, warm_up=True)
    with client:
        import time

        deadline = time.monotonic() + 60
        while (ready := client.get("/readyz").json())["checks"]["model"] == "loading":
            assert time.monotonic() < deadline, ready
            time.sleep(0.1)
        assert ready["status"] == "not_ready" and ready["checks"]["model"] == "failed"
        assert "no-such-model" in ready["details"]["model"] and "make twin" in ready["details"]["model"]
        for mode in ("dense", "hybrid", None):
            body = {"query": "서울", **({"mode": mode} if mode else {})}
            r = client.post(f"/v1/collections/{col}/search", json=body)
            assert r.status_code == 503, r.text
            assert r.json()["error"]["code"] == "model_unavailable"
            assert "SAEKIN_EMBEDDING_MODEL" in r.json()["error"]["message"]
        sparse = client.post(f"/v1/collections/{col}/search", json={"query": "서울", "mode": "sparse"})
        assert sparse.status_code == 200, sparse.text
        assert sparse.json()["results"]
        upload = client.post(f"/v1/collections/{col}/documents", json={"text": "부산"})
        assert upload.status_code == 503 and upload.json()["error"]["code"] == "model_unavailable"
    rt.close()


def test_serve_refuses_a_public_address_without_keys(saekin, small_twin, tmp_path):
    result = saekin("serve", "--host", "0.0.0.0", SAEKIN_DATA_DIR=str(tmp_path), SAEKIN_EMBEDDING_MODEL=str(small_twin))
    assert result.exit_code == 1
    assert "refusing to listen on 0.0.0.0 without API keys" in result.output
    assert "SAEKIN_ALLOW_NO_AUTH=true" in result.output


def test_binding_rules():
    from config.settings import Settings
    from services.cli import _refuse_open_without_keys, is_loopback_host

    assert is_loopback_host("127.0.0.1") and is_loopback_host("localhost") and is_loopback_host("::1")
    assert not is_loopback_host("0.0.0.0") and not is_loopback_host("::") and not is_loopback_host("10.0.0.5")
    _refuse_open_without_keys(Settings(_env_file=None, api_keys="k"), "0.0.0.0")
    _refuse_open_without_keys(Settings(_env_file=None, allow_no_auth=True), "0.0.0.0")
    _refuse_open_without_keys(Settings(_env_file=None), "127.0.0.1")


def test_serve_with_an_unusable_model_fails_at_start(saekin, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = saekin("serve", SAEKIN_EMBEDDING_MODEL="./models/bge-m3-ko")
    assert result.exit_code == 1
    assert f"{tmp_path}/models/bge-m3-ko does not exist" in result.output
    assert "SAEKIN_EMBEDDING_MODEL" in result.output and "make twin" in result.output
    assert not (tmp_path / "data").exists()  # nothing created on the way to the error


def test_relative_paths_are_resolved_once(tmp_path, monkeypatch, small_twin):
    from config.settings import Settings

    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "twin").symlink_to(small_twin)
    monkeypatch.chdir(tmp_path)
    settings = Settings(_env_file=None, data_dir="data", embedding_model="models/twin")
    assert settings.data_dir == tmp_path / "data"
    assert settings.embedding_model == str(tmp_path / "models" / "twin")
    assert Settings(_env_file=None, embedding_model="dragonkue/bge-m3-ko").embedding_model == "dragonkue/bge-m3-ko"
