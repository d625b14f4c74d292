"""Shared fixtures: a small model twin, real PostgreSQL and Redis (or a clear skip), embedded apps."""

from __future__ import annotations

import getpass
import os
import shutil
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from typer.testing import Result

    from config.settings import Settings
    from services.documents.lifecycle import WorkItem

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
FIXTURES = SHARED / "fixtures"
AUTORAG = SHARED / "data" / "autorag-ko"


def docker_engine_available() -> bool:
    if not shutil.which("docker"):
        return False
    try:
        import docker

        docker.from_env(timeout=3).ping()
        return True
    except Exception:
        return False


def _tcp_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


# --- model twin -----------------------------------------------------------------------------


@pytest.fixture(scope="session")
def small_twin(tmp_path_factory) -> Path:
    """A tiny bge-m3-ko twin (XLM-R architecture, hidden 64, Korean-trained Unigram tokenizer)."""
    from config.profiles import get_profile
    from services.embedding.twin import build_twin

    return build_twin(get_profile("bge-m3-ko"), tmp_path_factory.mktemp("twins") / "bge-m3-ko-small", small=True)


@pytest.fixture(scope="session")
def small_reranker_twin(tmp_path_factory) -> Path:
    """A tiny bge-reranker-v2-m3-ko twin (XLM-R sequence classification, one label, random weights)."""
    from config.profiles import get_reranker_profile
    from services.embedding.twin import build_twin

    profile = get_reranker_profile("bge-reranker-v2-m3-ko")
    return build_twin(profile, tmp_path_factory.mktemp("twins") / "reranker-small", small=True)


# --- PostgreSQL and Redis: given URL, else the local server, else testcontainers, else skip --------


@pytest.fixture(scope="session")
def postgres_server_url() -> Iterator[str]:
    url = os.environ.get("SAEKIN_TEST_DATABASE_URL")
    container = None
    if not url:
        if _tcp_open("127.0.0.1", 5432):
            url = f"postgresql+psycopg://{getpass.getuser()}@127.0.0.1:5432/test"
        elif docker_engine_available():
            from testcontainers.postgres import PostgresContainer

            container = PostgresContainer("postgres:16-alpine", driver="psycopg").start()
            url = container.get_connection_url()
        else:
            pytest.skip(
                "no PostgreSQL: set SAEKIN_TEST_DATABASE_URL, run one on 127.0.0.1:5432, "
                "or start Docker so testcontainers can"
            )
    yield url
    if container is not None:
        container.stop()


@contextmanager
def _fresh_database(server_url: str) -> Iterator[str]:
    """A new database on the server, migrated to head; dropped afterwards."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    from services.db import upgrade_database

    name = f"saekin_test_{uuid.uuid4().hex[:10]}"
    admin = create_engine(server_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        url = make_url(server_url).set(database=name).render_as_string(hide_password=False)
        upgrade_database(url)
        yield url
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(scope="session")
def postgres_url(postgres_server_url: str) -> Iterator[str]:
    """A fresh database for this test session, shared by its tests."""
    with _fresh_database(postgres_server_url) as url:
        yield url


@pytest.fixture
def own_postgres_url(postgres_server_url: str) -> Iterator[str]:
    """A database of this test's own, for tests whose workers take whatever documents wait."""
    with _fresh_database(postgres_server_url) as url:
        yield url


# Redis databases 1-15 are lent to test runs, one each, so that two runs on one machine (two
# checkouts, CI beside a developer) never flush or consume each other's queues and flags.
_REDIS_LEASE_KEY = "saekin:test-run:db:{}"
_REDIS_LEASE_S = 3 * 3600


def _lease_redis_database(server: str) -> tuple[str, Callable[[], None]]:
    """A Redis database of this run's own on `server` (redis://host:port), and its release."""
    import redis

    registry = redis.Redis.from_url(f"{server}/0")
    owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
    for db in range(15, 0, -1):
        key = _REDIS_LEASE_KEY.format(db)
        if registry.set(key, owner, nx=True, ex=_REDIS_LEASE_S):
            redis.Redis.from_url(f"{server}/{db}").flushdb()  # left over by a run that was killed

            def release(key: str = key) -> None:
                if registry.get(key) == owner.encode():
                    registry.delete(key)

            return f"{server}/{db}", release
    pytest.skip(f"no free Redis database on {server}: 15 test runs hold one each ({_REDIS_LEASE_KEY.format('N')})")


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """A Redis database that belongs to this test run (a given URL is used as it is)."""
    url = os.environ.get("SAEKIN_TEST_REDIS_URL")
    container = None
    release: Callable[[], None] = lambda: None  # noqa: E731
    if not url:
        if _tcp_open("127.0.0.1", 6379):
            url, release = _lease_redis_database("redis://127.0.0.1:6379")
        elif docker_engine_available():
            from testcontainers.redis import RedisContainer

            container = RedisContainer("redis:7-alpine").start()
            url = f"redis://{container.get_container_host_ip()}:{container.get_exposed_port(6379)}/0"
        else:
            pytest.skip(
                "no Redis: set SAEKIN_TEST_REDIS_URL, run one on 127.0.0.1:6379, or start Docker so testcontainers can"
            )
    yield url
    release()
    if container is not None:
        container.stop()


# --- settings and apps -------------------------------------------------------------------------


@pytest.fixture
def make_settings(tmp_path: Path, small_twin: Path) -> Callable[..., Settings]:
    """Settings isolated from the environment: a tmp data dir and the small twin."""
    from config.settings import Settings

    def factory(**overrides: Any) -> Settings:
        values: dict[str, Any] = dict(
            data_dir=tmp_path / "data", embedding_model=str(small_twin), chunk_overlap_tokens=16, max_upload_mb=8
        )
        values.update(overrides)
        return Settings(_env_file=None, **values)

    return factory


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request, tmp_path: Path) -> str:
    """Each API test runs on SQLite (embedded) and on PostgreSQL (production), both migrated."""
    from services.db import upgrade_database

    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'api.db'}"
        upgrade_database(url)
        return url
    return request.getfixturevalue("postgres_url")


@pytest.fixture
def app_client(make_settings, database_url: str, tmp_path: Path):
    """A TestClient on an app with in-process ingestion, the given database and Qdrant Edge."""
    from fastapi.testclient import TestClient

    from services.api.app import create_app
    from services.runtime import Runtime

    settings = make_settings(database_url=database_url)
    rt = Runtime(settings)
    app = create_app(settings, runtime=rt, warm_up=False)
    with TestClient(app) as client:
        client.runtime = rt  # type: ignore[attr-defined]
        yield client
    rt.close()


@pytest.fixture
def saekin(monkeypatch) -> Callable[..., Result]:
    """Run `saekin ARGS` in this process (typer's runner) with exactly the SAEKIN_* variables given."""
    from typer.testing import CliRunner

    from config.settings import get_settings
    from services.cli import app

    def run(*args: str, **env: str) -> Result:
        for key in [k for k in os.environ if k.startswith("SAEKIN_")]:
            monkeypatch.delenv(key)
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        get_settings.cache_clear()  # settings are read once per process: read them afresh
        try:
            return CliRunner().invoke(app, list(args))
        finally:
            get_settings.cache_clear()

    return run


def wait_for_status(client, collection: str, document_id: str, timeout: float = 120.0) -> dict:
    """Poll a document until it is indexed or failed."""
    deadline = time.monotonic() + timeout
    while True:
        body = client.get(f"/v1/collections/{collection}/documents/{document_id}").json()
        if body["status"] in ("indexed", "failed") or time.monotonic() > deadline:
            return body
        time.sleep(0.05)


def submit_text(rt, text: str, external_id: str | None = None, collection: str = "c") -> WorkItem:
    """Store `text` as a new document generation (lifecycle.store); its work item, not yet dispatched."""
    from services.db import session_scope
    from services.documents import lifecycle

    upload = lifecycle.Upload(data=text.encode(), media_type="text/plain", external_id=external_id)
    with session_scope(rt.session_factory) as session:
        return lifecycle.store(session, collection_name=collection, profile=rt.profile, upload=upload).item


def prepare(rt, item: WorkItem) -> int | None:
    """The CPU stage for `item` with the runtime's collaborators."""
    from services.ingest.pipeline import prepare_document

    return prepare_document(
        item,
        engine=rt.engine,
        analyzer=rt.analyzer,
        chunking=rt.chunking_for,
        extract_limits=rt.extract_limits,
        lease=rt.lease("test"),
    )


def embed_stage(rt) -> dict:
    """The embed stage's collaborators from the runtime, as keyword arguments."""
    return dict(engine=rt.engine, models=rt.models, index=rt.index)


def embed(rt, items: list[WorkItem]) -> None:
    """The embed stage for `items` with the runtime's collaborators."""
    from services.ingest.pipeline import embed_documents

    embed_documents(items, **embed_stage(rt))


def unique_collection(prefix: str = "t") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"
