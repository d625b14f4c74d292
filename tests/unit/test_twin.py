"""Architecture twins: every profile builds a small twin that the real loading path accepts."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from config.profiles import PROFILES, RERANKER_PROFILES, get_profile, get_reranker_profile
from services.embedding.twin import (
    TWIN_INFO,
    build_twin,
    builtin_corpus,
    ensure_twin,
    read_corpus_files,
    read_twin_info,
    twin_config,
    twin_max_seq_length,
    twin_profile,
)

pytestmark = pytest.mark.slow

KOREAN = [
    "지방은행이 시중은행으로 전환하면 어떤 점이 달라지나요?",
    "임차인은 계약갱신요구권을 1회에 한하여 행사할 수 있다.",
    "오늘 서울의 최고 기온은 31.5°C로 예보되었습니다. API v2.3",
]


@pytest.fixture(scope="module")
def twins(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("twins")
    return {name: build_twin(p, root / name, small=True) for name, p in PROFILES.items()}


def test_corpus_is_korean_and_sizeable():
    path = Path(__file__).resolve().parents[2] / "services" / "embedding" / "twin_corpus_ko.txt"
    assert 30_000 <= path.stat().st_size <= 60_000
    lines = builtin_corpus()
    assert len(lines) >= 300
    text = "".join(lines)
    hangul = sum(1 for c in text if "가" <= c <= "힣")
    assert hangul / len(text) > 0.5
    assert any(c.isascii() and c.isalpha() for c in text) and any(c.isdigit() for c in text)


@pytest.mark.parametrize("name", list(PROFILES))
def test_small_twin_loads_and_encodes(twins, name):
    from sentence_transformers import SentenceTransformer

    profile = PROFILES[name]
    path = twins[name]
    info = read_twin_info(path)
    assert info["profile"] == name and info["small"] is True and info["seed"] == 0
    assert info["architecture"] == profile.architecture

    model = SentenceTransformer(str(path), device="cpu")
    auto = model[0].auto_model
    assert type(auto).__name__ == profile.architecture
    assert auto.config.num_hidden_layers == 2 and auto.config.hidden_size == 64
    assert model.max_seq_length == twin_max_seq_length(profile, small=True)
    assert model.max_seq_length <= profile.max_seq_length

    vectors = model.encode(KOREAN, convert_to_numpy=True, show_progress_bar=False)
    assert vectors.shape == (len(KOREAN), 64)  # small twins: the model's hidden size, not profile.dim
    assert np.isfinite(vectors).all()
    norms = np.linalg.norm(vectors, axis=1)
    if profile.normalize:
        np.testing.assert_allclose(norms, 1.0, atol=1e-5)
    else:
        assert not np.allclose(norms, 1.0, atol=1e-3)
    pooling = model[1]
    assert pooling.pooling_mode == profile.pooling


@pytest.mark.parametrize("name", list(PROFILES))
def test_twin_tokenizer_family_specials_and_offsets(twins, name):
    from transformers import AutoTokenizer

    profile = PROFILES[name]
    tok = AutoTokenizer.from_pretrained(str(twins[name]))
    assert tok.is_fast
    assert len(tok) <= profile.config["vocab_size"]
    # Pad id agrees with the model config (RoBERTa derives position ids from it).
    assert tok.pad_token_id == profile.config["pad_token_id"]
    backend = json.loads(tok.backend_tokenizer.to_str())
    if profile.tokenizer_kind == "unigram":
        assert backend["model"]["type"] == "Unigram"
        assert "Metaspace" in json.dumps(backend["pre_tokenizer"])
        assert (tok.cls_token, tok.sep_token, tok.pad_token, tok.unk_token, tok.mask_token) == (
            "<s>",
            "</s>",
            "<pad>",
            "<unk>",
            "<mask>",
        )
        assert [tok.convert_tokens_to_ids(t) for t in ("<s>", "<pad>", "</s>", "<unk>")] == [0, 1, 2, 3]
    else:
        assert backend["model"]["type"] == "WordPiece"
        assert (tok.cls_token, tok.sep_token, tok.pad_token, tok.unk_token, tok.mask_token) == (
            "[CLS]",
            "[SEP]",
            "[PAD]",
            "[UNK]",
            "[MASK]",
        )

    text = KOREAN[0]
    enc = tok(text, return_offsets_mapping=True)
    ids, offsets = enc["input_ids"], enc["offset_mapping"]
    assert ids[0] == tok.cls_token_id and ids[-1] == tok.sep_token_id
    inner = offsets[1:-1]
    assert all(0 <= a < b <= len(text) for a, b in inner)
    assert [a for a, _ in inner] == sorted(a for a, _ in inner)
    covered = {i for a, b in inner for i in range(a, b)}
    assert covered >= {i for i, ch in enumerate(text) if not ch.isspace()}
    # Korean is mostly in-vocabulary (common syllables are seeded into the alphabet).
    assert ids.count(tok.unk_token_id) == 0


def test_full_size_config_keeps_profile_shapes():
    for profile in PROFILES.values():
        cfg = twin_config(profile, small=False, tokenizer_vocab=5000)
        for key in (
            "hidden_size",
            "num_hidden_layers",
            "num_attention_heads",
            "intermediate_size",
            "vocab_size",
            "max_position_embeddings",
        ):
            assert cfg[key] == profile.config[key]
        assert cfg["architectures"] == [profile.architecture]
        assert twin_max_seq_length(profile, small=False) == profile.max_seq_length
    assert twin_max_seq_length(get_profile("bge-m3-ko"), small=True) == 512
    assert twin_max_seq_length(get_profile("ko-sroberta-multitask"), small=True) == 128
    assert twin_max_seq_length(get_profile("kf-deberta-multitask"), small=True) == 128
    with pytest.raises(ValueError):
        twin_config(get_profile("ko-sroberta-multitask"), small=False, tokenizer_vocab=10**6)


def test_seed_determinism_and_existing_dir(tmp_path):
    from sentence_transformers import SentenceTransformer

    profile = get_profile("ko-sroberta-multitask")
    a = build_twin(profile, tmp_path / "a", small=True, seed=7)
    b = build_twin(profile, tmp_path / "b", small=True, seed=7)
    c = build_twin(profile, tmp_path / "c", small=True, seed=8)
    va, vb, vc = (SentenceTransformer(str(p), device="cpu").encode(KOREAN, show_progress_bar=False) for p in (a, b, c))
    np.testing.assert_array_equal(va, vb)
    assert not np.allclose(va, vc)

    with pytest.raises(FileExistsError):
        build_twin(profile, a, small=True)
    build_twin(profile, a, small=True, seed=9, overwrite=True)
    assert read_twin_info(a)["seed"] == 9
    assert not any(p.name.startswith(".a.") for p in tmp_path.iterdir())  # no temp dirs left behind


def test_extra_corpus_extends_tokenizer(tmp_path):
    from transformers import AutoTokenizer

    profile = get_profile("bge-m3-ko")
    word = "뷁"  # not a KS X 1001 syllable and not in the bundled corpus
    extra = tmp_path / "extra.txt"
    extra.write_text("\n".join(f"{word}{word} 문장 {i}" for i in range(50)), encoding="utf-8")
    plain = AutoTokenizer.from_pretrained(str(build_twin(profile, tmp_path / "plain", small=True)))
    grown = AutoTokenizer.from_pretrained(
        str(build_twin(profile, tmp_path / "grown", small=True, corpus=read_corpus_files([extra])))
    )
    assert plain.unk_token_id in plain(word)["input_ids"]
    assert grown.unk_token_id not in grown(word)["input_ids"]


def test_ensure_twin_builds_once(tmp_path):
    profile = get_profile("kf-deberta-multitask")
    first = ensure_twin(profile, tmp_path, small=True)
    stamp = (first / TWIN_INFO).stat().st_mtime_ns
    again = ensure_twin(profile, tmp_path, small=True)
    assert again == first and (again / TWIN_INFO).stat().st_mtime_ns == stamp


@pytest.mark.parametrize("name", list(RERANKER_PROFILES))
def test_small_reranker_twin_loads_as_a_cross_encoder(tmp_path, name):
    from sentence_transformers import CrossEncoder
    from transformers import AutoTokenizer

    profile = get_reranker_profile(name)
    path = build_twin(profile, tmp_path / name, small=True)
    info = read_twin_info(path)
    assert info is not None and info["kind"] == "reranker" and info["profile"] == name
    assert not (path / "modules.json").exists()  # a plain transformers repository, like the real ones

    model = CrossEncoder(str(path), device="cpu")
    assert model.model is not None and type(model.model).__name__ == profile.architecture
    assert model.num_labels == 1 and model.model.config.hidden_size == 64
    scores = model.predict([(KOREAN[0], KOREAN[1]), (KOREAN[0], KOREAN[2])])
    assert scores.shape == (2,) and np.isfinite(scores).all()

    tok = AutoTokenizer.from_pretrained(str(path))
    assert tok.model_max_length == twin_max_seq_length(profile, small=True) == 512
    pair = tok(KOREAN[0], KOREAN[1])["input_ids"]
    assert pair[0] == 0 and pair[-1] == 2 and pair.count(2) == 3  # <s> q </s></s> p </s>, as XLM-R


def test_reranker_full_size_config_is_xlm_roberta_large_with_one_label():
    for profile in RERANKER_PROFILES.values():
        cfg = twin_config(profile, small=False, tokenizer_vocab=5000)
        assert cfg["architectures"] == ["XLMRobertaForSequenceClassification"] and cfg["num_labels"] == 1
        assert (cfg["hidden_size"], cfg["num_hidden_layers"], cfg["vocab_size"]) == (1024, 24, 250002)
        assert twin_max_seq_length(profile, small=False) == 8192


def test_twin_profile_finds_both_tables():
    assert twin_profile("bge-m3-ko") is PROFILES["bge-m3-ko"]
    assert twin_profile("bge-reranker-v2-m3") is RERANKER_PROFILES["bge-reranker-v2-m3"]
    with pytest.raises(ValueError, match="reranker profiles"):
        twin_profile("bge-reranker-large")
