"""The installed `saekin` script, run once as a user runs it (the commands themselves are tested in
process in tests/integration/test_cli.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path


def test_the_installed_script_ingests_and_searches(tmp_path: Path, small_twin: Path) -> None:
    script = Path(sys.executable).with_name("saekin")
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "leave.txt").write_text("우리 회사의 연차 휴가는 매년 15일이다.", encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith("SAEKIN_")}
    env.update(SAEKIN_DATA_DIR=str(tmp_path / "data"), SAEKIN_EMBEDDING_MODEL=str(small_twin))

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(script), *args], env=env, capture_output=True, text=True, timeout=300)

    ingested = run("ingest", str(docs), "--collection", "hr")
    assert ingested.returncode == 0, ingested.stderr
    assert "1 new, 0 unchanged, 0 rejected, 0 failed" in ingested.stdout
    found = run("search", "연차 휴가", "--collection", "hr", "--mode", "sparse", "--json")
    assert found.returncode == 0, found.stderr
    assert "15일" in json.loads(found.stdout)["results"][0]["text"]
