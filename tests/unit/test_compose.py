"""The compose stack as an operator would start it, read without a Docker engine (none runs here):
the files are loaded with PyYAML and the properties that decide whether it starts are checked."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def base() -> dict:
    return yaml.safe_load((REPO / "docker-compose.yml").read_text())


@pytest.fixture(scope="module")
def gpu() -> dict:
    return yaml.safe_load((REPO / "docker-compose.gpu.yml").read_text())


def dockerfile() -> str:
    return (REPO / "Dockerfile").read_text()


def test_volume_mount_points_exist_in_the_image_owned_by_its_user(base):
    text = dockerfile()
    user = re.search(r"^USER (\S+)", text, re.M).group(1)
    mounted = {
        volume.split(":")[1]
        for service in base["services"].values()
        if service.get("image", "").startswith("saekin")
        for volume in service.get("volumes", [])
    }
    assert mounted == {"/models"}
    for directory in (*mounted, "/data"):
        assert re.search(rf"mkdir -p [^\n]*{directory}\b", text), directory
        assert re.search(rf"chown {user}:{user} [^\n]*{directory}\b", text), directory
    # Created and owned before the image switches to the user.
    assert text.index("chown") < text.index(f"USER {user}")


def test_the_base_stack_runs_on_cpu(base):
    for name, service in base["services"].items():
        assert "deploy" not in service or "devices" not in str(service["deploy"]), name
    assert "TORCH_INDEX=https://download.pytorch.org/whl/cpu" in dockerfile()


def test_the_gpu_override_builds_cuda_torch_and_reserves_a_gpu(gpu):
    worker = gpu["services"]["embed-worker"]
    assert "/cu" in worker["build"]["args"]["TORCH_INDEX"]
    assert worker["image"] != "saekin:latest"  # the CPU image of the other services stays as it is
    devices = worker["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}]
    assert worker["environment"]["SAEKIN_EMBEDDING_DEVICE"] == "cuda"
    assert set(gpu["services"]) == {"embed-worker"}
    assert "ARG TORCH_INDEX" in dockerfile() and "--index-url ${TORCH_INDEX}" in dockerfile()


@pytest.mark.parametrize("worker, queue", [("ingest-worker", "ingest"), ("embed-worker", "embed")])
def test_workers_have_a_celery_ping_health_check(base, worker, queue):
    service = base["services"][worker]
    assert f'"--queue", "{queue}"' in str(service["command"]).replace("'", '"')
    test = service["healthcheck"]["test"]
    assert test[0] == "CMD-SHELL"
    assert "celery" in test[1] and "inspect ping" in test[1]
    # The node name `saekin worker` gives (services/cli.py: --hostname={queue}@%h), with $ escaped for compose.
    assert f"{queue}@$$HOSTNAME" in test[1] and "$$SAEKIN_BROKER_URL" in test[1]
    assert "--hostname={queue}@%h" in (REPO / "services" / "cli.py").read_text()


def test_postgres_password_comes_from_env_and_is_in_the_example(base):
    example = (REPO / ".env.example").read_text()
    assert re.search(r"^POSTGRES_PASSWORD=\S+", example, re.M)
    assert re.search(r"^SAEKIN_API_KEYS=\S+", example, re.M)
    assert "${POSTGRES_PASSWORD:?" in base["services"]["postgres"]["environment"]["POSTGRES_PASSWORD"]
    assert "${POSTGRES_PASSWORD:?" in base["services"]["api"]["environment"]["SAEKIN_DATABASE_URL"]


def test_compose_reads_env_and_the_app_does_not(base, tmp_path, monkeypatch):
    assert base["services"]["api"]["env_file"] == [{"path": ".env", "required": False}]
    from config.settings import Settings

    monkeypatch.chdir(tmp_path)
    (tmp_path / ".env").write_text("SAEKIN_BROKER_URL=redis://redis:6379/0\nSAEKIN_DATABASE_URL=postgresql://x/y\n")
    for key in ("SAEKIN_BROKER_URL", "SAEKIN_DATABASE_URL", "SAEKIN_QDRANT_URL"):
        monkeypatch.delenv(key, raising=False)
    assert Settings().mode == "embedded"  # `make run` beside a compose .env stays embedded


def test_the_api_listens_everywhere_only_with_keys(base):
    api = base["services"]["api"]
    assert "0.0.0.0" in api["command"]
    # The key comes from .env through env_file; saekin serve refuses 0.0.0.0 without one.
    assert "SAEKIN_ALLOW_NO_AUTH" not in str(base)
    from services.cli import is_loopback_host

    assert not is_loopback_host("0.0.0.0")
