"""The `saekin` commands as a user runs them, in this process (typer's runner): embedded ingest,
search, optimize, eval and make-twin. tests/e2e/test_cli_smoke.py runs the installed script once."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import Result


def failed_cleanly(result: Result) -> bool:
    """Exit status 1 with an error line, not a traceback (an exception escaping the command)."""
    return result.exit_code == 1 and isinstance(result.exception, SystemExit)


def test_ingest_a_folder_then_search(tmp_path: Path, small_twin: Path, saekin) -> None:
    docs = tmp_path / "docs"
    (docs / "sub").mkdir(parents=True)
    (docs / "a.txt").write_text(
        "우리 회사의 연차 휴가는 매년 15일이다. 입사 첫해에는 월 1일씩 생긴다.", encoding="utf-8"
    )
    (docs / "sub" / "b.md").write_text("# 출장비\n\n국내 출장 숙박비는 하루 10만 원까지 지급한다.", encoding="utf-8")
    (docs / "sub" / "c.bin").write_bytes(bytes(range(256)) * 4)
    (docs / ".git").mkdir()
    (docs / ".git" / "HEAD").write_text("ref: refs/heads/main\n", encoding="utf-8")  # not a document
    env = dict(SAEKIN_DATA_DIR=str(tmp_path / "data"), SAEKIN_EMBEDDING_MODEL=str(small_twin))

    first = saekin("ingest", str(docs), "--collection", "hr", **env)
    assert first.exit_code == 1, first.stderr  # one file was not indexed: like cp, a non-zero exit
    assert "2 new, 0 unchanged, 1 rejected, 0 failed" in first.stdout
    assert "c.bin" in first.stderr  # the rejected file is named with its reason
    again = saekin("ingest", str(docs / "sub" / ".."), "--collection", "hr", **env)  # the same files, spelled otherwise
    assert "0 new, 2 unchanged" in again.stdout
    only_good = saekin("ingest", str(docs / "a.txt"), "--collection", "hr", **env)
    assert only_good.exit_code == 0 and "0 new, 1 unchanged, 0 rejected, 0 failed" in only_good.stdout

    bad_name = saekin("ingest", str(docs), "--collection", "bad name!", **env)
    assert failed_cleanly(bad_name) and bad_name.stderr.count("invalid collection name") == 1
    bad_mode = saekin("search", "휴가", "--collection", "hr", "--mode", "fuzzy", **env)
    assert failed_cleanly(bad_mode) and bad_mode.stderr.startswith("error: mode:")

    found = saekin("search", "출장 숙박비", "--collection", "hr", "--mode", "sparse", "--json", **env)
    assert found.exit_code == 0, found.stderr
    hits = json.loads(found.stdout)["results"]
    assert hits[0]["title"] == "b.md" and "숙박비" in hits[0]["text"] and hits[0]["heading"] == "출장비"

    missing = saekin("search", "휴가", "--collection", "nope", **env)
    assert failed_cleanly(missing) and "does not exist" in missing.stderr

    # Maintenance: merge Qdrant Edge's segments; searches find the same passages afterwards.
    optimized = saekin("optimize", **env)
    assert optimized.exit_code == 0, optimized.stderr
    assert "saekin_hr_bge_m3_ko: 2 points" in optimized.stdout
    after = saekin("search", "출장 숙박비", "--collection", "hr", "--mode", "sparse", "--json", **env)
    assert json.loads(after.stdout)["results"][0]["chunk_id"] == hits[0]["chunk_id"]


def test_optimize_refuses_production_mode(tmp_path: Path, saekin) -> None:
    refused = saekin(
        "optimize",
        SAEKIN_DATA_DIR=str(tmp_path / "data"),
        SAEKIN_DATABASE_URL="postgresql+psycopg://x@127.0.0.1:1/x",
        SAEKIN_BROKER_URL="redis://127.0.0.1:1/0",
        SAEKIN_QDRANT_URL="http://127.0.0.1:1",
    )
    assert failed_cleanly(refused) and "embedded mode" in refused.stderr


def test_make_twin_refuses_to_overwrite_unless_asked(tmp_path: Path, saekin) -> None:
    out = tmp_path / "twin"
    euc_kr = tmp_path / "corpus.txt"
    euc_kr.write_bytes("말뭉치에 한국어 문장을 더한다.\n".encode("cp949"))  # not UTF-8: read with replacements
    args = ("make-twin", "--profile", "ko-sroberta-multitask", "--small", "--out", str(out), "--corpus", str(euc_kr))
    made = saekin(*args)
    assert made.exit_code == 0, made.stderr
    again = saekin(*args)
    assert failed_cleanly(again) and "--overwrite" in again.stderr
    assert saekin(*args, "--overwrite").exit_code == 0
    missing = saekin("make-twin", "--small", "--out", str(tmp_path / "t2"), "--corpus", str(tmp_path / "nope.txt"))
    assert failed_cleanly(missing) and "no such file" in missing.stderr


def test_keys_create_list_revoke(tmp_path: Path, saekin) -> None:
    env = dict(SAEKIN_DATA_DIR=str(tmp_path / "data"))
    created = saekin("keys", "create", "--name", "인사팀 챗봇", "--scope", "write", "--collections", "hr,hr-*", **env)
    assert created.exit_code == 0, created.output
    plain = created.stdout.strip()
    assert plain.startswith("sk_") and len(plain) > 40 and "not shown again" in created.stderr
    listed = saekin("keys", "list", **env)
    assert listed.exit_code == 0 and plain not in listed.stdout  # only its prefix
    key_id, prefix, name, scope, collections, limits, _, state = listed.stdout.strip().split("\t")
    assert (prefix, name, scope, collections, limits, state) == (
        plain[:10] + "…",
        "인사팀 챗봇",
        "write",
        "hr,hr-*",
        "-",
        "live",
    )
    assert failed_cleanly(saekin("keys", "create", "--name", "x", "--scope", "owner", **env))
    assert failed_cleanly(saekin("keys", "create", "--name", "x", "--collections", "a b", **env))
    revoked = saekin("keys", "revoke", key_id[:8], **env)
    assert revoked.exit_code == 0 and key_id in revoked.stdout
    assert saekin("keys", "list", **env).stdout == ""
    assert "revoked" in saekin("keys", "list", "--all", **env).stdout
    assert failed_cleanly(saekin("keys", "revoke", "no-such-key", **env))
