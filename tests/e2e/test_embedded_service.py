"""`saekin serve` as a user runs it: one process, SQLite + Qdrant Edge + in-process ingestion."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import REPO

TEXT = (
    "탄소중립 기본법은 기후위기에 대응하기 위한 법률이다. 정부는 2050년까지 온실가스 순배출량을 영으로 줄이는 "
    "목표를 세웠다.\n\n지방자치단체는 지역 실정에 맞는 탄소중립 이행계획을 5년마다 수립해야 한다."
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _saekin(env: dict, *args: str, **kwargs) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "services.cli", *args],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        **kwargs,
    )


@pytest.fixture(scope="module")
def served(tmp_path_factory, small_twin: Path):
    """One `saekin serve` for this module's tests (starting one costs seconds of imports and loading)."""
    tmp_path = tmp_path_factory.mktemp("served")
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SAEKIN_")}
    env.update(SAEKIN_DATA_DIR=str(tmp_path / "data"), SAEKIN_EMBEDDING_MODEL=str(small_twin), SAEKIN_PORT=str(port))
    proc = _saekin(env, "serve")
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"saekin serve exited: {proc.communicate()[0]}")
        try:
            if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    else:
        proc.kill()
        pytest.fail(f"saekin serve did not become ready: {proc.communicate()[0]}")
    yield base, env
    proc.terminate()
    proc.wait(timeout=30)


def test_upload_index_and_search_over_http(served):
    base, _ = served
    r = httpx.post(
        f"{base}/v1/collections/laws/documents",
        json={"text": TEXT, "external_id": "carbon-act", "title": "탄소중립 기본법", "metadata": {"kind": "law"}},
    )
    assert r.status_code == 202, r.text
    doc_id = r.json()["id"]
    deadline = time.monotonic() + 60
    while (doc := httpx.get(f"{base}/v1/collections/laws/documents/{doc_id}").json())["status"] not in (
        "indexed",
        "failed",
    ):
        assert time.monotonic() < deadline, doc
        time.sleep(0.1)
    assert doc["status"] == "indexed", doc

    hits = httpx.post(f"{base}/v1/collections/laws/search", json={"query": "지방자치단체 이행계획"}).json()["results"]
    assert hits and hits[0]["external_id"] == "carbon-act"
    assert "이행계획" in hits[0]["text"] and hits[0]["metadata"] == {"kind": "law"}
    assert httpx.get(f"{base}/docs").status_code == 200


def test_a_second_process_on_the_same_data_dir_is_refused(served):
    _, env = served
    env = dict(env, SAEKIN_PORT="1")
    second = _saekin(env, "serve")
    out, _ = second.communicate(timeout=60)
    assert second.returncode == 1
    assert "in use by Saekin process" in out
