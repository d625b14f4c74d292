"""Log formats, request ids and stage timing (services/observability)."""

from __future__ import annotations

import io
import json
import logging

import pytest
from prometheus_client import CollectorRegistry, Histogram

from services.observability.logs import configure_logging, new_request_id, request_id_var
from services.observability.metrics import StageTimes


@pytest.fixture
def restore_root():
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for h in list(root.handlers):
        root.removeHandler(h)
    for h in handlers:
        root.addHandler(h)
    root.setLevel(level)


def test_json_lines_carry_the_request_id_and_extra_fields(restore_root):
    out = io.StringIO()
    configure_logging("json", stream=out)
    token = request_id_var.set("req-42")
    try:
        logging.getLogger("saekin.documents").info(
            "document %s indexed", "d1", extra={"collection": "법령", "chunks": 3, "duration_s": 0.25}
        )
    finally:
        request_id_var.reset(token)
    line = json.loads(out.getvalue())
    assert line["message"] == "document d1 indexed" and line["level"] == "INFO"
    assert line["request_id"] == "req-42" and line["collection"] == "법령" and line["chunks"] == 3
    assert "법령" in out.getvalue()  # not \\uXXXX escapes


def test_text_lines_show_the_request_id_and_extra_fields(restore_root):
    out = io.StringIO()
    configure_logging("text", stream=out)
    logging.getLogger("x").warning("failed", extra={"reason": "no text", "stage": None})
    line = out.getvalue().strip()
    assert "[-] failed reason=no text" in line and "stage=" not in line


def test_alembic_start_up_chatter_is_dropped(restore_root):
    out = io.StringIO()
    configure_logging("text", stream=out)
    logging.getLogger("alembic.runtime.plugins").warning("setup plugin alembic.autogenerate.schemas")
    logging.getLogger("alembic.runtime.migration").info("Context impl SQLiteImpl.")
    logging.getLogger("alembic.runtime.migration").info("Will assume non-transactional DDL.")
    logging.getLogger("alembic.runtime.migration").info("Running upgrade 0008 -> 0009, keys")
    assert out.getvalue().count("\n") == 1 and "Running upgrade" in out.getvalue()


def test_incoming_request_ids_are_kept_only_when_they_look_like_ids():
    assert new_request_id("3f2a-b.c:d") == "3f2a-b.c:d"
    for bad in (None, "", "a b", "x\ny", "x" * 129, "한글"):
        assert len(new_request_id(bad)) == 32 and new_request_id(bad) != bad


def test_stage_times_sum_repeated_stages_and_observe_once():
    registry = CollectorRegistry()
    histogram = Histogram("t_seconds", "t", ["stage"], registry=registry)
    times = StageTimes()
    times.add("sql", 0.5)
    times.add("sql", 0.25)
    with times.stage("index_query"):
        pass
    times.observe(histogram)
    assert registry.get_sample_value("t_seconds_count", {"stage": "sql"}) == 1
    assert registry.get_sample_value("t_seconds_sum", {"stage": "sql"}) == 0.75
    assert registry.get_sample_value("t_seconds_count", {"stage": "index_query"}) == 1
