"""Query micro-batching: concurrent questions share forward passes and each caller gets its own
vector. The small bge-m3-ko twin; no timed assertions."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

from config.profiles import get_profile
from services.embedding.encoder import Encoder
from services.embedding.query_encoder import QueryEncoder
from services.embedding.twin import builtin_corpus


@pytest.fixture(scope="module")
def bge_encoder(small_twin: Path) -> Encoder:
    enc = Encoder(str(small_twin), get_profile("bge-m3-ko"), device="cpu")
    enc.warmup()
    return enc


@pytest.mark.slow
def test_query_encoder_concurrent_callers_get_their_own_vectors(bge_encoder):
    questions = [f"질문 {i}: " + line for i, line in enumerate(builtin_corpus()[:24])]
    alone = {q: bge_encoder.encode_queries([q])[0] for q in questions}
    results: dict[str, np.ndarray] = {}
    errors: list[BaseException] = []
    barrier = threading.Barrier(len(questions))

    def ask(q: str) -> None:
        try:
            barrier.wait()
            results[q] = qe.encode(q)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    # A long wait with max_batch = the number of callers: all of them share one forward pass.
    qe = QueryEncoder(bge_encoder, max_wait_ms=5000, max_batch=len(questions))
    try:
        threads = [threading.Thread(target=ask, args=(q,)) for q in questions]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        qe.close()
    assert not errors
    assert qe.batches_run == 1
    for q in questions:
        assert results[q].shape == (bge_encoder.dim,)
        np.testing.assert_allclose(results[q], alone[q], atol=2e-5)
    with pytest.raises(RuntimeError):
        qe.encode("닫힌 뒤의 질문")


@pytest.mark.slow
def test_query_encoder_many_threads_default_wait(bge_encoder):
    questions = list(builtin_corpus()[100:160])
    out: list[tuple[str, np.ndarray]] = []
    lock = threading.Lock()

    def ask(chunk: list[str]) -> None:
        for q in chunk:
            v = qe.encode(q)
            with lock:
                out.append((q, v))

    with QueryEncoder(bge_encoder, max_wait_ms=2.0, max_batch=8) as qe:
        threads = [threading.Thread(target=ask, args=(questions[i::6],)) for i in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert len(out) == len(questions)
    assert 1 <= qe.batches_run <= len(questions)
    for q, v in out:
        np.testing.assert_allclose(v, bge_encoder.encode_queries([q])[0], atol=2e-5)


def test_query_encoder_submit_returns_a_future_of_the_same_vector(bge_encoder):
    questions = ["서울의 인구는?", "한국어 형태소 분석기는 무엇인가요?", "KLUE 벤치마크"]
    with QueryEncoder(bge_encoder, max_wait_ms=50, max_batch=8) as qe:
        futures = [qe.submit(q) for q in questions]  # submitted together: one forward pass
        vectors = [f.result(timeout=60) for f in futures]
    for q, v in zip(questions, vectors):
        np.testing.assert_allclose(v, bge_encoder.encode_queries([q])[0], atol=2e-5)


def test_query_encoder_propagates_errors():
    class Broken:
        dim = 4

        def encode_queries(self, texts):
            raise RuntimeError("model exploded")

    with QueryEncoder(Broken(), max_wait_ms=0) as qe:
        with pytest.raises(RuntimeError, match="exploded"):
            qe.encode("질문")
        with pytest.raises(TypeError):
            qe.encode(["목록"])  # one string, not a list
