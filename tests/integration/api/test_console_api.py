"""The console's page shell and the API docs as the service serves them (the browser tests are in
tests/e2e/test_console.py)."""

from __future__ import annotations

from pathlib import Path

from services.console.routes import CONTENT_SECURITY_POLICY


def test_console_page_is_served_with_a_local_only_policy(make_settings, tmp_path: Path):
    from fastapi.testclient import TestClient

    from services.api.app import create_app
    from services.db import upgrade_database
    from services.runtime import Runtime

    url = f"sqlite:///{tmp_path / 'console.db'}"
    upgrade_database(url)
    settings = make_settings(database_url=url, api_keys=["k"])
    rt = Runtime(settings)
    with TestClient(create_app(settings, runtime=rt, warm_up=False)) as client:
        page = client.get("/console")  # the shell holds no data: no key needed
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert page.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
        assert "default-src 'self'" in CONTENT_SECURITY_POLICY and "connect-src 'self'" in CONTENT_SECURITY_POLICY
        assert '<script type="module" src="/console/static/app.js">' in page.text
        assert client.get("/console/static/vendor/alpinejs/alpine.esm.min.js").status_code == 200
        assert client.get("/", follow_redirects=False).headers["location"] == "/console"
        for path in ("/docs", "/redoc"):
            docs = client.get(path)
            assert docs.status_code == 200 and "cdn." not in docs.text and "googleapis" not in docs.text
            assert "default-src 'self'" in docs.headers["content-security-policy"]
        assert client.get("/docs-assets/swagger-ui-bundle.js").status_code == 200
        assert client.get("/docs-assets/redoc.standalone.js").status_code == 200
        assert client.get("/v1/collections").status_code == 401  # the data stays behind the key
    rt.close()
