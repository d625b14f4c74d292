"""`saekin ingest` and `saekin search` in embedded mode, as a user runs them."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from tests.conftest import REPO


def run(env, *args):
    return subprocess.run(
        [sys.executable, "-m", "services.cli", *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=300
    )


def test_ingest_a_folder_then_search(tmp_path, small_twin):
    docs = tmp_path / "docs"
    (docs / "sub").mkdir(parents=True)
    (docs / "a.txt").write_text(
        "우리 회사의 연차 휴가는 매년 15일이다. 입사 첫해에는 월 1일씩 생긴다.", encoding="utf-8"
    )
    (docs / "sub" / "b.md").write_text("# 출장비\n\n국내 출장 숙박비는 하루 10만 원까지 지급한다.", encoding="utf-8")
    (docs / "sub" / "c.bin").write_bytes(bytes(range(256)) * 4)
    (docs / ".git").mkdir()
    (docs / ".git" / "HEAD").write_text("ref: refs/heads/main\n", encoding="utf-8")  # not a document
    env = {k: v for k, v in os.environ.items() if not k.startswith("SAEKIN_")}
    env.update(SAEKIN_DATA_DIR=str(tmp_path / "data"), SAEKIN_EMBEDDING_MODEL=str(small_twin))

    first = run(env, "ingest", str(docs), "--collection", "hr")
    assert first.returncode == 1, first.stderr  # one file was not indexed: like cp, a non-zero exit
    assert "2 new, 0 unchanged, 1 rejected, 0 failed" in first.stdout
    assert "c.bin" in first.stderr  # the rejected file is named with its reason
    again = run(env, "ingest", str(docs / "sub" / ".."), "--collection", "hr")  # the same files, spelled otherwise
    assert "0 new, 2 unchanged" in again.stdout
    only_good = run(env, "ingest", str(docs / "a.txt"), "--collection", "hr")
    assert only_good.returncode == 0 and "0 new, 1 unchanged, 0 rejected, 0 failed" in only_good.stdout

    bad_name = run(env, "ingest", str(docs), "--collection", "bad name!")
    assert bad_name.returncode == 1 and bad_name.stderr.count("invalid collection name") == 1
    bad_mode = run(env, "search", "휴가", "--collection", "hr", "--mode", "fuzzy")
    assert (
        bad_mode.returncode == 1 and bad_mode.stderr.startswith("error: mode:") and "Traceback" not in bad_mode.stderr
    )

    found = run(env, "search", "출장 숙박비", "--collection", "hr", "--mode", "sparse", "--json")
    assert found.returncode == 0, found.stderr
    hits = json.loads(found.stdout)["results"]
    assert hits[0]["title"] == "b.md" and "숙박비" in hits[0]["text"] and hits[0]["heading"] == "출장비"

    missing = run(env, "search", "휴가", "--collection", "nope")
    assert missing.returncode == 1 and "does not exist" in missing.stderr

    # Maintenance: merge Qdrant Edge's segments; searches find the same passages afterwards.
    optimized = run(env, "optimize")
    assert optimized.returncode == 0, optimized.stderr
    assert "saekin_hr_bge_m3_ko: 2 points" in optimized.stdout
    after = run(env, "search", "출장 숙박비", "--collection", "hr", "--mode", "sparse", "--json")
    assert json.loads(after.stdout)["results"][0]["chunk_id"] == hits[0]["chunk_id"]


def test_optimize_refuses_production_mode(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("SAEKIN_")}
    env.update(
        SAEKIN_DATA_DIR=str(tmp_path / "data"),
        SAEKIN_DATABASE_URL="postgresql+psycopg://x@127.0.0.1:1/x",
        SAEKIN_BROKER_URL="redis://127.0.0.1:1/0",
        SAEKIN_QDRANT_URL="http://127.0.0.1:1",
    )
    refused = run(env, "optimize")
    assert refused.returncode == 1 and "embedded mode" in refused.stderr


def test_make_twin_refuses_to_overwrite_unless_asked(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("SAEKIN_")}
    out = tmp_path / "twin"
    euc_kr = tmp_path / "corpus.txt"
    euc_kr.write_bytes("말뭉치에 한국어 문장을 더한다.\n".encode("cp949"))  # not UTF-8: read with replacements
    args = ("make-twin", "--profile", "ko-sroberta-multitask", "--small", "--out", str(out), "--corpus", str(euc_kr))
    assert run(env, *args).returncode == 0
    again = run(env, *args)
    assert again.returncode == 1 and "--overwrite" in again.stderr and "Traceback" not in again.stderr
    assert run(env, *args, "--overwrite").returncode == 0
    missing = run(env, "make-twin", "--small", "--out", str(tmp_path / "t2"), "--corpus", str(tmp_path / "nope.txt"))
    assert missing.returncode == 1 and "no such file" in missing.stderr
