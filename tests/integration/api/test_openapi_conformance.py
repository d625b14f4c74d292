"""Schemathesis against the app in process: every operation of /openapi.json, with valid and invalid
requests (positive and negative generation), passes all of schemathesis's checks: no 5xx, every
status and body the schema documents, headers such as 405's Allow right, invalid input refused.

Examples are bounded per operation (SCHEMATHESIS_EXAMPLES, default 12) so that the whole run takes
seconds per route on the small model twin; the embedded app (SQLite, Qdrant Edge, in-process
ingestion) is shared by the module, with one collection holding an indexed document so that
searches and lookups reach past 404.
"""

from __future__ import annotations

import os

import pytest

schemathesis = pytest.importorskip(
    "schemathesis", reason="schemathesis is in the test extras: pip install -e '.[test]'"
)
from hypothesis import HealthCheck, settings  # noqa: E402

EXAMPLES = int(os.environ.get("SCHEMATHESIS_EXAMPLES", "12"))
KEY = "conformance-key"
UNSAFE_TO_FUZZ = {"POST /v1/backup"}


@pytest.fixture(scope="module")
def api_schema(tmp_path_factory, small_twin):
    from fastapi.testclient import TestClient
    from schemathesis.config._checks import PositiveDataAcceptanceConfig

    from config.settings import Settings
    from services.api.app import create_app
    from services.db import upgrade_database
    from services.runtime import Runtime
    from tests.conftest import wait_for_status

    data = tmp_path_factory.mktemp("schemathesis")
    settings = Settings(
        _env_file=None,
        data_dir=data,
        embedding_model=str(small_twin),
        chunk_overlap_tokens=16,
        max_upload_mb=1,
        api_keys=[KEY],
    )
    upgrade_database(settings.sqlalchemy_url)
    rt = Runtime(settings)
    app = create_app(settings, runtime=rt, warm_up=False)
    with TestClient(app) as client:  # runs the lifespan: the runtime and dispatcher on app.state
        client.headers["Authorization"] = f"Bearer {KEY}"
        doc = client.post(
            "/v1/collections/c/documents", json={"text": "서울은 대한민국의 수도이다.", "external_id": "x"}
        )
        wait_for_status(client, "c", doc.json()["id"])
        # Schemathesis calls the app through a client of its own, which would start the lifespan
        # again (the MCP session manager runs once): the running app is shared without it.
        schema = schemathesis.openapi.from_asgi("/openapi.json", _WithoutLifespan(app))
        # A file of a type Saekin cannot read is schema-valid (any bytes are) and answered 415, as
        # the upload documents: an accepted answer to valid data, like 404 or 409.
        schema.config.checks.positive_data_acceptance = PositiveDataAcceptanceConfig(
            expected_statuses=["2xx", "3xx", "401", "403", "404", "409", "415", "429", "5xx"]
        )
        yield schema
    rt.close()


class _WithoutLifespan:
    """The app, answering lifespan events itself: its lifespan already runs in the fixture."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "lifespan":
            await self.app(scope, receive, send)
            return
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return


# Schemathesis's pytest plugin (schema.parametrize) does not run under pytest 9: each operation's
# strategy is driven by Hypothesis here instead, which is what the plugin does.
@pytest.mark.parametrize("mode", ["positive", "negative"])
def test_every_operation_conforms_to_the_schema(api_schema, mode):
    from hypothesis import given
    from hypothesis.errors import Unsatisfiable
    from schemathesis.generation.modes import GenerationMode

    failures: list[str] = []
    # POST /v1/backup writes a backup into whatever absolute directory it is given: generated paths
    # would write across this machine's filesystem (tests/integration/test_backup.py tests it).
    operations = [
        operation
        for operation in (result.ok() for result in api_schema.get_all_operations())
        if operation.label not in UNSAFE_TO_FUZZ
    ]
    assert len(operations) >= 15
    for operation in operations:

        @given(operation.as_strategy(generation_mode=GenerationMode(mode)))
        @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
        def conforms(case) -> None:
            case.call_and_validate(headers={"Authorization": f"Bearer {KEY}"})

        try:
            conforms()
        except Unsatisfiable:  # nothing to generate: no parameters to make invalid in negative mode
            continue
        except (Exception, BaseExceptionGroup) as exc:  # schemathesis's FailureGroup is an exception group
            failures.append(f"{operation.label}: {exc}"[:2000])
    assert not failures, "\n\n".join(failures)


def test_the_schema_says_what_the_api_does(api_schema):
    """The findings of `schemathesis run --checks all` on the API before: each one, directly."""
    from fastapi.testclient import TestClient

    raw = api_schema.raw_schema
    collection = next(p for p in raw["paths"]["/v1/collections/{collection}"]["get"]["parameters"])
    assert collection["schema"]["pattern"] == "^[a-z0-9][a-z0-9_-]{0,62}$"
    search = raw["paths"]["/v1/collections/{collection}/search"]["post"]["responses"]
    assert {"401", "404", "409", "413", "422", "503"} <= set(search)
    upload = raw["paths"]["/v1/collections/{collection}/documents"]["post"]
    assert {"401", "409", "413", "415", "422", "429", "503"} <= set(upload["responses"])
    assert upload["requestBody"]["content"]["multipart/form-data"]["schema"]["additionalProperties"] is False

    app = api_schema.app.app  # its lifespan runs in the fixture: a client without one
    client = TestClient(app, headers={"Authorization": f"Bearer {KEY}"})
    if True:
        # Multipart with a field the upload does not take: refused, nothing stored.
        r = client.post(
            "/v1/collections/c/documents", data={"titel": "오타"}, files={"file": ("a.txt", "새 문서".encode())}
        )
        assert r.status_code == 422 and r.json()["error"]["code"] == "unknown_field", r.text
        assert "'titel'" in r.json()["error"]["message"]
        # 405 names every method the path takes.
        r = client.put("/v1/collections/c")
        assert r.status_code == 405
        assert set(r.headers["allow"].replace(" ", "").split(",")) == {"GET", "HEAD", "PATCH", "DELETE"}
        # A name outside the pattern keeps its own error code.
        r = client.get("/v1/collections/Bad%20Name")
        assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_collection_name"
