"""Helpers for the benchmarks that run Saekin as a user does: service subprocesses, their CPU
time and peak memory (read from /proc, Linux only), loopback ports and latency percentiles.

Used by bench/query_latency.py (the embedded API over HTTP) and bench/pipeline_capacity.py
(Celery workers in production mode).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from bench._common import REPO, log

CLK_TCK = os.sysconf("SC_CLK_TCK")
# Variables that switch Saekin between embedded and production mode, or point it at data:
# a benchmark sets the ones it needs and never inherits the others from the caller's shell.
MODE_VARS = (
    "SAEKIN_DATA_DIR",
    "SAEKIN_DATABASE_URL",
    "SAEKIN_BROKER_URL",
    "SAEKIN_QDRANT_URL",
    "SAEKIN_QDRANT_API_KEY",
    "SAEKIN_QDRANT_PATH",
    "SAEKIN_EMBEDDING_MODEL",
    "SAEKIN_EMBEDDING_PROFILE",
    "SAEKIN_API_KEYS",
)


def service_env(values: Mapping[str, str | None]) -> dict[str, str]:
    """os.environ without MODE_VARS, plus `values` (None values are left out) and the repo on PYTHONPATH."""
    env = {k: v for k, v in os.environ.items() if k not in MODE_VARS}
    env.update({k: str(v) for k, v in values.items() if v is not None})
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


class ServiceProcess:
    """`python -m services.cli ...` as a child process, its output in a log file.

    The child runs in `cwd` (a scratch directory by default, so no `.env` of the repository is
    read) in its own process group; stop() sends SIGTERM to the group, waits, then SIGKILL.
    """

    def __init__(
        self, name: str, args: Sequence[str], *, env: Mapping[str, str], log_path: Path, cwd: Path | None = None
    ) -> None:
        self.name = name
        self.log_path = Path(log_path)
        self._log = open(self.log_path, "wb")  # noqa: SIM115 (closed in stop())
        cmd = [sys.executable, "-m", "services.cli", *args]
        self.proc = subprocess.Popen(
            cmd,
            cwd=str(cwd or self.log_path.parent),
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log(f"started {name} (pid {self.proc.pid}): {' '.join(cmd[1:])}")

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def check_alive(self) -> None:
        """Raise with the tail of the log if the process has exited."""
        if not self.alive():
            raise RuntimeError(f"{self.name} exited with code {self.proc.returncode}:\n{self.tail()}")

    def tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, timeout: float = 30.0) -> int | None:
        """Terminate the process group (graceful), then kill it; the exit code."""
        if self.alive():
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                log(f"{self.name} did not stop in {timeout:.0f}s; killing it")
                try:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.proc.wait(timeout=10)
        else:
            # The leader is gone; children it left in the group (prefork pool) must not outlive us.
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        self._log.close()
        return self.proc.returncode


# --- /proc -----------------------------------------------------------------------------------


def _stat_fields(pid: int) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as fh:
            raw = fh.read()
    except OSError:
        return None
    # The command name (field 2) is in parentheses and may contain spaces.
    return raw[raw.rfind(")") + 2 :].split()


def _children(pid: int) -> list[int]:
    out: list[int] = []
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            try:
                with open(f"/proc/{pid}/task/{tid}/children", encoding="ascii") as fh:
                    out += [int(c) for c in fh.read().split()]
            except OSError:
                pass
    except OSError:
        pass
    return out


def process_tree(pid: int) -> list[int]:
    """`pid` and all its live descendants."""
    tree, todo = [], [pid]
    while todo:
        p = todo.pop()
        tree.append(p)
        todo += _children(p)
    return tree


def tree_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of `pid`'s process tree, including descendants that have exited
    and been reaped (their time is in their parent's cutime/cstime, so nothing is counted twice)."""
    total = 0
    for p in process_tree(pid):
        fields = _stat_fields(p)
        if fields:  # after ")": state(3) ... utime(14) stime(15) cutime(16) cstime(17), 0-based from field 3
            total += sum(int(fields[i]) for i in (11, 12, 13, 14))
    return total / CLK_TCK


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of one process (its threads included, children excluded)."""
    fields = _stat_fields(pid)
    return (int(fields[11]) + int(fields[12])) / CLK_TCK if fields else None


def peak_rss_mb_of(pid: int) -> float | None:
    """VmHWM (peak resident set size) of a live process, in MiB."""
    return _status_mb(pid, "VmHWM")


def rss_mb_of(pid: int) -> float | None:
    """VmRSS (resident set size now) of a live process, in MiB."""
    return _status_mb(pid, "VmRSS")


def _status_mb(pid: int, field: str) -> float | None:
    """A kB field of /proc/<pid>/status, in MiB; None when the process is gone."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as fh:
            for line in fh:
                if line.startswith(f"{field}:"):
                    return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        return None
    return None


def usable_cores() -> int:
    """CPU cores this process (and the children it starts) may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


# --- misc ------------------------------------------------------------------------------------


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free on `host` a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def percentiles(seconds: Sequence[float], qs: Sequence[int] = (50, 95, 99)) -> dict[str, float]:
    """{"p50_ms": ..., ...} of latencies given in seconds."""
    ms = np.asarray(seconds, dtype=np.float64) * 1000.0
    return {f"p{q}_ms": round(float(np.percentile(ms, q)), 2) for q in qs}


def wait_until(predicate, *, timeout: float, interval: float = 0.5, what: str = "condition", check=None) -> None:
    """Poll `predicate()` until true; TimeoutError after `timeout` s; `check()` may raise earlier."""
    deadline = time.monotonic() + timeout
    while True:
        if check is not None:
            check()
        if predicate():
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


def wait_ready(server: ServiceProcess, base_url: str, *, timeout: float) -> None:
    """Poll the service's /readyz until it answers 200; TimeoutError after `timeout` s, and the
    server's own error at once if it exits meanwhile."""
    import httpx

    def ready() -> bool:
        try:
            return httpx.get(f"{base_url}/readyz", timeout=5).status_code == 200
        except httpx.HTTPError:
            return False

    wait_until(ready, timeout=timeout, interval=1.0, what=f"{base_url}/readyz", check=server.check_alive)


def model_dim(model: str) -> int | None:
    """Output dimension of a local sentence-transformers directory, read from its files."""
    import json

    path = Path(model)
    for rel, key in (
        ("twin_info.json", "dim"),
        ("1_Pooling/config.json", "word_embedding_dimension"),
        ("config.json", "hidden_size"),
    ):
        try:
            value = json.loads((path / rel).read_text(encoding="utf-8")).get(key)
        except (OSError, ValueError):
            continue
        if value:
            return int(value)
    return None
