"""A worker's metrics: pool processes record into the multiprocess directory and the main process
serves their sum on SAEKIN_WORKER_METRICS_PORT (what `saekin worker` sets up)."""

from __future__ import annotations

import socket
import subprocess
import sys
import textwrap
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

SCRIPT = textwrap.dedent(
    """
    import multiprocessing, os, sys, tempfile, time
    from services.observability import metrics

    metrics.use_multiprocess_dir(tempfile.mkdtemp())

    def pool_process(n):
        metrics.INGEST_CHUNKS.labels("embed").inc(n)
        metrics.MODEL_LOADED.labels("embedding").set(1)

    if __name__ == "__main__":
        ctx = multiprocessing.get_context("fork")
        for n in (3, 4):
            p = ctx.Process(target=pool_process, args=(n,))
            p.start(); p.join()
        metrics.serve_worker_metrics(int(sys.argv[1]), addr="127.0.0.1")
        print("ready", flush=True)
        time.sleep(60)
    """
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_the_worker_serves_the_sum_of_its_pool_processes(tmp_path):
    script = tmp_path / "worker_metrics.py"
    script.write_text(SCRIPT)
    port = free_port()
    proc = subprocess.Popen([sys.executable, str(script), str(port)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    finally:
        proc.kill()
        proc.wait()
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    assert samples[("saekin_ingest_chunks_total", (("stage", "embed"),))] == 7
    # the pool processes ended without being marked dead here: their gauge still shows
    assert any(name == "saekin_model_loaded" for name, _ in samples)
