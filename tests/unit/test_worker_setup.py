"""A worker pool process that cannot set itself up is replaced, not kept (issue 17, defect 7:
a soft time limit interrupted a child's first `import torch`, and that child failed 26 of 26
tasks). The real processes are exercised in tests/e2e/test_worker_processes.py."""

from __future__ import annotations

import pytest

from workers import tasks


class Exited(Exception):
    pass


@pytest.fixture
def exits(monkeypatch):
    codes: list[int] = []

    def fake_exit(code: int) -> None:
        codes.append(code)
        raise Exited(code)

    monkeypatch.setattr(tasks.os, "_exit", fake_exit)
    return codes


def test_a_pool_process_whose_imports_fail_exits_before_its_first_task(monkeypatch, exits):
    monkeypatch.setitem(tasks.SETUP_IMPORTS, "ingest", ("services.ingest.pipeline", "no_such_module_saekin"))
    monkeypatch.setattr(tasks, "_in_pool_child", False)
    monkeypatch.setattr(tasks, "_setup_failure", None)
    monkeypatch.setitem(tasks.current_app.conf, "saekin_queue", "ingest")
    tasks._check_pool_child()  # not at once: a pool process exiting at start stops the whole worker
    assert exits == [] and isinstance(tasks._setup_failure, ModuleNotFoundError)
    with pytest.raises(Exited):
        tasks._leave_if_broken()  # its first task: the pool replaces it, the task is redelivered
    assert exits == [tasks.WORKER_SETUP_FAILED]


def test_a_sound_pool_process_keeps_running(monkeypatch, exits):
    monkeypatch.setitem(tasks.SETUP_IMPORTS, "ingest", ("services.ingest.pipeline",))
    monkeypatch.setattr(tasks, "_in_pool_child", False)
    monkeypatch.setattr(tasks, "_setup_failure", None)
    monkeypatch.setitem(tasks.current_app.conf, "saekin_queue", "ingest")
    tasks._check_pool_child()
    tasks._leave_if_broken()
    assert exits == [] and tasks._in_pool_child


def test_an_import_error_inside_a_task_ends_a_pool_process_but_reaches_retry_in_the_solo_pool(monkeypatch, exits):
    monkeypatch.setattr(tasks, "_in_pool_child", True)
    with pytest.raises(Exited), tasks._exit_if_broken():
        raise ModuleNotFoundError("No module named 'torch._C'")
    assert exits == [tasks.WORKER_SETUP_FAILED]
    monkeypatch.setattr(tasks, "_in_pool_child", False)
    with pytest.raises(ModuleNotFoundError), tasks._exit_if_broken():
        raise ModuleNotFoundError("No module named 'torch._C'")
    with pytest.raises(ValueError), tasks._exit_if_broken():  # other errors go to Celery's retry as before
        raise ValueError("bad document")


def test_pool_processes_are_recycled_and_tasks_of_lost_processes_redelivered(tmp_path):
    from config.settings import Settings
    from workers.celery_app import create_celery

    settings = Settings(
        _env_file=None,
        database_url="postgresql+psycopg://x@127.0.0.1/x",
        broker_url="redis://127.0.0.1:1/0",
        qdrant_url="http://127.0.0.1:6333",
        worker_max_tasks_per_child=50,
    )
    conf = create_celery(settings).conf
    assert conf.worker_max_tasks_per_child == 50
    assert conf.task_acks_late and conf.task_reject_on_worker_lost
