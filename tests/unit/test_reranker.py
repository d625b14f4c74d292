"""The cross-encoder reranker on a small twin: batching invariants, windows around highlights,
agreement with plain `CrossEncoder.predict`, load failures and the settings group. No timed
assertions."""

from __future__ import annotations

import logging
import random
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from config.profiles import get_reranker_profile
from services.embedding.reranker import Reranker, choose_window
from services.embedding.twin import build_twin, builtin_corpus
from services.errors import ModelUnavailable

PROFILE = get_reranker_profile("bge-reranker-v2-m3-ko")
QUERY = "지방자치단체는 이행계획을 언제 수립해야 하나요?"


@pytest.fixture(scope="module")
def twin(tmp_path_factory) -> Path:
    return build_twin(PROFILE, tmp_path_factory.mktemp("reranker") / "bge-reranker-small", small=True)


@pytest.fixture(scope="module")
def reranker(twin: Path) -> Reranker:
    return Reranker(str(twin), PROFILE, device="cpu", max_tokens=128, max_batch_tokens=600)


def _passages(n: int, seed: int = 0) -> list[str]:
    """Korean passages of varied lengths, most within a 128-token pair, some far beyond it."""
    lines = builtin_corpus()
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        k = rng.choice([1, 1, 2, 3, 8])
        start = rng.randrange(len(lines))
        out.append(" ".join(lines[start : start + k]))
    return out


# --- choose_window (pure) -------------------------------------------------------------------------


def _offsets(n: int) -> list[tuple[int, int]]:
    return [(3 * i, 3 * i + 2) for i in range(n)]  # two-character tokens, one space between


@settings(max_examples=300, deadline=None)
@given(
    n=st.integers(min_value=1, max_value=400),
    budget=st.integers(min_value=1, max_value=120),
    marks=st.lists(st.tuples(st.integers(0, 1300), st.integers(1, 12)), max_size=6),
)
def test_window_is_in_range_and_holds_a_highlight_that_fits(n, budget, marks):
    offsets = _offsets(n)
    highlights = [(start, start + length) for start, length in marks]
    first = choose_window(offsets, highlights, budget)
    assert 0 <= first <= max(0, n - budget)
    if n <= budget:
        assert first == 0
        return
    # Each highlight as the tokens it overlaps (brute force); one that fits must be in the window.
    token_ranges = []
    for s, e in highlights:
        touched = [t for t, (a, b) in enumerate(offsets) if a < e and b > s]
        if touched:
            token_ranges.append((touched[0], touched[-1]))
    if any(hi - lo < budget for lo, hi in token_ranges):
        assert any(first <= lo and hi < first + budget for lo, hi in token_ranges)


def test_window_prefers_the_most_highlights_and_centres_them():
    offsets = _offsets(100)
    # one highlight at token 10, three close together around tokens 70-74
    marks = [(30, 32), (210, 212), (216, 218), (222, 224)]
    first = choose_window(offsets, marks, 20)
    assert first <= 70 and first + 20 > 74
    assert abs((first + 9.5) - 72) <= 1  # centred on tokens 70..74
    assert choose_window(offsets, [], 20) == 0  # no highlight: the beginning
    assert choose_window(offsets, [(5000, 5010)], 20) == 0  # outside the passage: the beginning
    assert choose_window(offsets, [(290, 299)], 20) == 80  # at the end: the last window


# --- the model ------------------------------------------------------------------------------------


def test_scores_agree_with_plain_cross_encoder_predict(twin, reranker):
    from sentence_transformers import CrossEncoder

    passages = [p for p in _passages(40, seed=1) if len(reranker._backend.encode(p).ids) < 80][:24]
    assert len(passages) >= 12
    plain = CrossEncoder(str(twin), max_length=128, device="cpu")
    expected = plain.predict([(QUERY, p) for p in passages], batch_size=8)
    got = reranker.rerank(QUERY, passages)
    assert isinstance(got, list) and all(isinstance(s, float) for s in got)
    np.testing.assert_allclose(got, expected, atol=2e-6, rtol=0)
    assert np.ptp(expected) > 1e-5  # the twin's scores differ enough to reveal a mix-up


def test_every_pair_scored_once_in_input_order_within_the_budget(reranker):
    passages = _passages(60, seed=2)
    seen: list[int] = []
    shapes: list[tuple[int, int]] = []
    forward = reranker._forward

    def spy(batch):
        seen.extend(batch.indices.tolist())
        shapes.append(tuple(batch.input_ids.shape))
        return forward(batch)

    reranker._forward = spy
    try:
        together = reranker.rerank(QUERY, passages)
    finally:
        del reranker._forward
    assert sorted(seen) == list(range(len(passages)))  # each pair exactly once
    assert len(shapes) > 3
    assert all(rows * width <= reranker.max_batch_tokens or rows == 1 for rows, width in shapes)
    assert max(width for _, width in shapes) <= reranker.max_tokens
    alone = [reranker.rerank(QUERY, [p])[0] for p in passages[:10]]
    np.testing.assert_allclose(together[:10], alone, atol=2e-6, rtol=0)
    shuffled = list(range(len(passages)))
    random.Random(3).shuffle(shuffled)
    again = reranker.rerank(QUERY, [passages[i] for i in shuffled])
    np.testing.assert_allclose(again, [together[i] for i in shuffled], atol=2e-6, rtol=0)


def test_long_passage_is_scored_on_the_window_with_its_highlight(reranker, caplog):
    filler = " ".join(builtin_corpus()[:30])
    key = "지방자치단체는 5년마다 이행계획을 수립해야 한다."
    passage = filler + " " + key + " " + filler
    start = passage.index(key)
    highlights = [(start, start + 6), (start + 17, start + 21)]  # 지방자치단체, 이행계획
    assert len(reranker._backend.encode(passage).ids) > 4 * reranker.max_tokens

    (span,) = reranker.windows(QUERY, [passage], [highlights])
    assert span[0] > 0 and span[0] <= start and start + 21 <= span[1]  # not the beginning; holds both
    window_tokens = len(reranker._backend.encode(passage[span[0] : span[1]], add_special_tokens=False).ids)
    query_tokens = len(reranker._backend.encode(QUERY, add_special_tokens=False).ids)
    assert window_tokens + query_tokens + 4 <= reranker.max_tokens + 2  # re-tokenizing may differ at the edges

    short = "짧은 문단입니다."
    spans = reranker.windows(QUERY, [short, passage, passage], [[], highlights, []])
    assert spans[0] == (0, len(short)) and spans[1] == span and spans[2][0] == 0
    with caplog.at_level(logging.INFO, logger="services.embedding.reranker"):
        scores = reranker.rerank(QUERY, [short, passage, passage], [[], highlights, []])
    assert "1 passage(s)" in caplog.text and "no highlight" in caplog.text  # the beginning, but said so
    assert len(scores) == 3 and scores[1] != scores[2]


def test_inputs_are_checked(reranker):
    assert reranker.rerank(QUERY, []) == []
    with pytest.raises(TypeError):
        reranker.rerank(QUERY, "한 문단")
    with pytest.raises(ValueError, match="highlight lists"):
        reranker.rerank(QUERY, ["가", "나"], [[]])
    long_query = " ".join(builtin_corpus()[:10])
    (score,) = reranker.rerank(long_query, ["짧은 문단"])  # the question is cut, not the call refused
    assert np.isfinite(score)


def test_int8_scores_stay_close_to_fp32(twin, reranker):
    passages = _passages(12, seed=4)
    import torch

    int8 = Reranker(str(twin), PROFILE, device="cpu", precision="int8", max_tokens=128)
    assert int8.precision == "int8"
    classifier = int8.model.model
    assert classifier is not None
    kinds = {type(m) for m in classifier.base_model.modules()}
    assert torch.nn.Linear not in kinds  # the transformer body's linear layers are quantized...
    assert type(classifier.classifier.out_proj) is torch.nn.Linear  # ...the one-label head is not
    np.testing.assert_allclose(int8.rerank(QUERY, passages), reranker.rerank(QUERY, passages), atol=1e-2)


def test_a_model_that_fails_to_load_says_which_and_why(tmp_path, small_twin):
    missing = tmp_path / "no-such-reranker"
    with pytest.raises(ModelUnavailable, match=r"no-such-reranker.*could not be loaded"):
        Reranker(str(missing), PROFILE, device="cpu")
    # An embedding model is not a reranker: a fresh two-label head would score nonsense.
    with pytest.raises(ModelUnavailable, match="not a reranker"):
        Reranker(str(small_twin), PROFILE, device="cpu")


def test_budget_and_precision_are_checked(twin):
    with pytest.raises(ValueError, match="reads"):
        Reranker(str(twin), PROFILE, device="cpu", max_tokens=1024)  # the small twin reads 512
    with pytest.raises(ValueError, match="not available on cpu"):
        Reranker(str(twin), PROFILE, device="cpu", precision="fp16")


# --- settings -------------------------------------------------------------------------------------


def test_reranking_is_off_unless_configured(make_settings, monkeypatch):
    from services.runtime import Runtime

    for name in ("PROFILE", "MODEL", "DEVICE", "PRECISION", "MAX_TOKENS", "MAX_BATCH_TOKENS"):
        monkeypatch.delenv(f"SAEKIN_RERANK_{name}", raising=False)
    base = make_settings()
    assert base.reranker_profile is None and base.reranker_name_or_path is None
    rt = Runtime(base)
    try:
        assert rt.reranker is None
    finally:
        rt.close()

    only_model = make_settings(rerank_model="/models/reranker")
    assert only_model.reranker_profile is not None and only_model.reranker_profile.name == "bge-reranker-v2-m3-ko"
    assert only_model.reranker_name_or_path == "/models/reranker"
    assert make_settings(rerank_profile="bge-reranker-v2-m3").reranker_name_or_path == "BAAI/bge-reranker-v2-m3"
    with pytest.raises(ValidationError, match="unknown reranker profile"):
        make_settings(rerank_profile="bge-reranker-large")
    with pytest.raises(ValidationError):
        make_settings(rerank_precision="fp8")
    with pytest.raises(ValidationError):
        make_settings(rerank_max_tokens=8)


def test_runtime_loads_the_configured_reranker_once(make_settings, twin):
    from services.runtime import Runtime

    rt = Runtime(make_settings(rerank_model=str(twin), rerank_device="cpu", rerank_max_tokens=256))
    try:
        reranker = rt.reranker
        assert reranker is not None and rt.reranker is reranker
        assert reranker.profile.name == "bge-reranker-v2-m3-ko" and reranker.max_tokens == 256
    finally:
        rt.close()
