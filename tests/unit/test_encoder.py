"""The embedding engine: equality with the plain sentence-transformers path, packing, truncation,
CPU precision options and the CPU batch budget. Small twins only; no timed assertions."""

from __future__ import annotations

import json
import logging
import random
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest

from config.profiles import PROFILES, get_profile
from services.embedding import batching
from services.embedding.encoder import Encoder
from services.embedding.twin import build_twin, builtin_corpus

# --- twins and the plain path ------------------------------------------------------------------


@pytest.fixture(scope="session")
def twin_dirs(tmp_path_factory) -> dict[str, Path]:
    """Small twins of the four profiles plus two pooling/normalize variants."""
    root = tmp_path_factory.mktemp("encoder-twins")
    dirs = {name: build_twin(p, root / name, small=True) for name, p in PROFILES.items()}
    # CLS pooling without Normalize, and mean pooling with Normalize.
    cls_plain = root / "bge-cls-no-normalize"
    shutil.copytree(dirs["bge-m3-ko"], cls_plain)
    modules = json.loads((cls_plain / "modules.json").read_text())
    (cls_plain / "modules.json").write_text(json.dumps([m for m in modules if "Normalize" not in m["type"]]))
    mean_norm = root / "sroberta-mean-normalize"
    shutil.copytree(dirs["ko-sroberta-multitask"], mean_norm)
    modules = json.loads((mean_norm / "modules.json").read_text())
    modules.append({"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"})
    (mean_norm / "modules.json").write_text(json.dumps(modules))
    (mean_norm / "2_Normalize").mkdir()
    dirs["bge-cls-no-normalize"] = cls_plain
    dirs["sroberta-mean-normalize"] = mean_norm
    return dirs


PROFILE_OF = {name: name for name in PROFILES} | {
    "bge-cls-no-normalize": "bge-m3-ko",
    "sroberta-mean-normalize": "ko-sroberta-multitask",
}


def _texts(n: int, seed: int = 0) -> list[str]:
    """Korean texts of varied lengths, some beyond 128 tokens, with a duplicate or two."""
    lines = builtin_corpus()
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        k = rng.choice([1, 1, 1, 2, 3, 6, 12])
        start = rng.randrange(len(lines))
        out.append(" ".join(lines[start : start + k]) or lines[0])
    out[n // 2] = out[1]
    out.append("짧다")
    return out


def _plain(path: Path, texts: list[str]) -> np.ndarray:
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(path), device="cpu")
    return model.encode(texts, batch_size=16, convert_to_numpy=True, show_progress_bar=False)


@pytest.mark.slow
@pytest.mark.parametrize("variant", list(PROFILE_OF))
def test_engine_equals_plain_sentence_transformers(twin_dirs, variant):
    path = twin_dirs[variant]
    profile = get_profile(PROFILE_OF[variant])
    texts = _texts(150)  # > the inline limit: the tokenizer thread and windowing are used
    enc = Encoder(str(path), profile, device="cpu", max_batch_tokens=600)
    assert enc.device == "cpu" and enc.precision == "fp32"
    assert enc.dim == 64  # from the model, not the profile's 1024/768

    seen: list[int] = []
    shapes: list[tuple[int, int]] = []
    forward = enc._forward

    def spy(batch):
        seen.extend(batch.indices.tolist())
        shapes.append(tuple(batch.input_ids.shape))
        return forward(batch)

    enc._forward = spy
    done: list[int] = []
    got = enc.encode_documents(texts, progress=done.append)
    ref = _plain(path, texts)

    assert got.dtype == np.float32 and got.shape == (len(texts), 64)
    np.testing.assert_allclose(got, ref, atol=2e-5, rtol=1e-4)
    assert sorted(seen) == list(range(len(texts)))  # each text embedded exactly once
    assert sum(done) == len(texts)
    assert len(shapes) > 3
    assert all(b * w <= 600 or b == 1 for b, w in shapes)
    norms = np.linalg.norm(got, axis=1)
    normalized = variant in ("bge-m3-ko", "sroberta-mean-normalize")
    assert np.allclose(norms, 1.0, atol=1e-5) == normalized


@pytest.mark.parametrize("variant", list(PROFILES))
def test_short_texts_are_packed_without_padding_where_the_model_allows(twin_dirs, variant):
    """Questions of different lengths share one padding-free sequence (block-diagonal attention,
    positions restarting per text) on models with SDPA and known position ids; results equal
    encoding each text alone."""
    enc = Encoder(str(twin_dirs[variant]), get_profile(variant), device="cpu")
    packable = enc.attn_implementation == "sdpa"
    assert (enc.pack_position_offset is not None) == packable  # DeBERTa-v2 has no SDPA: padded batches
    texts = [
        "짧은 질문",
        "조금 더 긴 두 번째 질문입니다. 서울의 인구는 얼마인가요?",
        "세 번째",
        " ".join(builtin_corpus()[:40]),
    ]
    shapes: list[tuple[int, ...]] = []
    forward = enc._forward

    def spy(batch):
        shapes.append((batch.lengths is not None, *batch.input_ids.shape))
        return forward(batch)

    enc._forward = spy
    together = enc.encode_queries(texts)
    lengths = [len(x) for x in enc._tokenize(texts)]
    if packable:
        short = [n for n in lengths if n <= batching.PACK_MAX_TOKENS]
        assert (True, 1, sum(short)) in shapes  # one packed row with exactly the short texts' tokens
    else:
        assert not any(packed for packed, *_ in shapes)
    enc._forward = forward
    alone = np.stack([enc.encode_queries([t])[0] for t in texts])
    np.testing.assert_allclose(together, alone, atol=2e-5, rtol=1e-4)


@pytest.mark.slow
def test_order_and_batch_independence(twin_dirs):
    """Each text's vector does not depend on its neighbours, batch size or position."""
    path = twin_dirs["ko-sroberta-multitask"]
    enc = Encoder(str(path), get_profile("ko-sroberta-multitask"), device="cpu", max_batch_tokens=512)
    texts = _texts(90, seed=3)
    whole = enc.encode_documents(texts)
    perm = list(range(len(texts)))
    random.Random(1).shuffle(perm)
    shuffled = enc.encode_documents([texts[i] for i in perm])
    np.testing.assert_allclose(shuffled, whole[perm], atol=2e-5)
    alone = np.stack([enc.encode_documents([t])[0] for t in texts[:12]])
    np.testing.assert_allclose(alone, whole[:12], atol=2e-5)
    assert enc.encode_documents([]).shape == (0, enc.dim)
    with pytest.raises(TypeError):
        enc.encode_documents("한 문장")


@pytest.mark.slow
def test_queries_truncate_like_plain_path(twin_dirs, caplog):
    path = twin_dirs["kf-deberta-multitask"]  # 128-token model, eager attention
    enc = Encoder(str(path), get_profile("kf-deberta-multitask"), device="cpu")
    assert enc.max_seq_length == 128
    long = " ".join(builtin_corpus()[:40])
    assert enc.count_tokens([long])[0] > 128
    queries = [long, "퇴직금은 언제까지 받아야 하나요?"]
    np.testing.assert_allclose(enc.encode_queries(queries), _plain(path, queries), atol=2e-5)
    with caplog.at_level(logging.WARNING, logger="services.embedding.encoder"):
        enc.encode_documents([long])
    assert "truncated" in caplog.text


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["bf16", "int8"])
def test_cpu_precision_options_agree_with_fp32(twin_dirs, precision):
    path = twin_dirs["bge-m3-ko"]
    profile = get_profile("bge-m3-ko")
    texts = _texts(40, seed=5)
    ref = Encoder(str(path), profile, device="cpu").encode_documents(texts)
    enc = Encoder(str(path), profile, device="cpu", precision=precision)
    assert enc.precision == precision
    got = enc.encode_documents(texts)
    cos = (got * ref).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(ref, axis=1)
    assert cos.min() > 0.9
    # Random-weight twins give similar vectors for all texts; compare the text-specific part too.
    centre = ref.mean(0)
    a, b = got - centre, ref - centre
    centred = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    assert centred.min() > 0.9


@pytest.mark.slow
def test_profile_mismatch_is_logged(twin_dirs, caplog):
    with caplog.at_level(logging.WARNING, logger="services.embedding.encoder"):
        Encoder(str(twin_dirs["bge-cls-no-normalize"]), get_profile("bge-m3-ko"), device="cpu")
    assert "profile bge-m3-ko" in caplog.text


@pytest.mark.slow
def test_concurrent_document_calls_share_one_model(twin_dirs):
    """Two threads embedding at once (the lock is per batch) each get their own results."""
    path = twin_dirs["klue-sroberta-large"]
    enc = Encoder(str(path), get_profile("klue-sroberta-large"), device="cpu", max_batch_tokens=400)
    jobs = [_texts(80, seed=s) for s in (11, 12)]
    expected = [enc.encode_documents(j) for j in jobs]
    results: list = [None, None]

    def run(k: int) -> None:
        results[k] = enc.encode_documents(jobs[k])

    threads = [threading.Thread(target=run, args=(k,)) for k in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for k in (0, 1):
        np.testing.assert_allclose(results[k], expected[k], atol=2e-5)


def test_cpu_budget_is_capped(twin_dirs, monkeypatch):
    path = str(twin_dirs["ko-sroberta-multitask"])
    profile = get_profile("ko-sroberta-multitask")
    # hidden-64 twins are below the size the cap applies to
    assert Encoder(path, profile, device="cpu", max_batch_tokens=16384).max_batch_tokens == 16384
    monkeypatch.setattr(batching, "CPU_CAP_MIN_HIDDEN", 64)
    assert (
        Encoder(path, profile, device="cpu", max_batch_tokens=16384).max_batch_tokens == batching.CPU_MAX_BATCH_TOKENS
    )
    assert (
        Encoder(path, profile, device="cpu", max_batch_tokens=16384, cpu_max_batch_tokens=None).max_batch_tokens
        == 16384
    )
