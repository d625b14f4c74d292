"""Token counters: tiktoken from a local file only, the embedding tokenizer as the noted fallback."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from services.context.tokens import HFCounter, cache_key, encoding_file, resolve_counter


@pytest.fixture(scope="module")
def embedding(small_twin: Path) -> HFCounter:
    from services.embedding.loading import load_tokenizer

    return HFCounter(load_tokenizer(str(small_twin)), "small twin")


@pytest.fixture
def no_tiktoken_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path / "empty-cache"))


def test_without_the_encoding_file_the_embedding_tokenizer_counts_and_the_note_says_how_to_fix_it(
    embedding, tmp_path, no_tiktoken_cache
):
    resolved = resolve_counter("o200k_base", directory=tmp_path, embedding=embedding)
    assert resolved.tokenizer == "embedding" and resolved.counter is embedding
    assert "o200k_base" in resolved.note and str(tmp_path / "o200k_base.tiktoken") in resolved.note
    assert "small twin" in resolved.note
    assert resolved.counter.count("지방자치단체는 이행계획을 수립한다.") > 0


def test_embedding_is_used_as_asked_without_a_note(embedding, tmp_path):
    resolved = resolve_counter("embedding", directory=tmp_path, embedding=embedding)
    assert resolved.tokenizer == "embedding" and resolved.note is None


def test_counts_equal_the_tokenizer_without_special_tokens(embedding, small_twin):
    from services.embedding.loading import load_tokenizer

    tok = load_tokenizer(str(small_twin))
    texts = ["탄소중립 기본법은 기후위기에 대응한다.", "", "abc 123"]
    expected = [len(tok(t, add_special_tokens=False)["input_ids"]) for t in texts]
    assert embedding.count_many(texts) == expected == [embedding.count(t) for t in texts]


def _byte_level_file(path: Path) -> None:
    """A tiny encoding in tiktoken's file format: the 256 bytes plus one merge (b'ab')."""
    lines = [f"{base64.b64encode(bytes([b])).decode()} {b}" for b in range(256)]
    lines.append(f"{base64.b64encode(b'ab').decode()} 256")
    path.write_text("\n".join(lines) + "\n")


@pytest.mark.parametrize("named", ["plain", "cache"])
def test_an_encoding_file_in_the_configured_directory_is_used_offline(embedding, tmp_path, named, no_tiktoken_cache):
    name = "cl100k_base"
    file = tmp_path / (f"{name}.tiktoken" if named == "plain" else cache_key(name))
    _byte_level_file(file)
    assert encoding_file(name, tmp_path) == file
    resolved = resolve_counter(name, directory=tmp_path, embedding=embedding)
    assert resolved.tokenizer == name and resolved.note is None
    # byte-level ranks with one merge: 'ab' is one token, every other byte one
    assert resolved.counter.count("abab") == 2
    assert resolved.counter.count("가") == 3  # three UTF-8 bytes
    assert resolved.counter.count_many(["ab", "x"]) == [1, 1]


def test_a_damaged_encoding_file_falls_back_with_a_note(embedding, tmp_path, no_tiktoken_cache):
    (tmp_path / "o200k_base.tiktoken").write_text("not a tiktoken file\n")
    resolved = resolve_counter("o200k_base", directory=tmp_path, embedding=embedding)
    assert resolved.tokenizer == "embedding" and "could not be read" in resolved.note
