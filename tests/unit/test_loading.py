"""Model loading helpers: the cached tokenizer, the Rust tokenizer copies, device and precision."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.embedding.loading import Precision, load_tokenizer, rust_tokenizer


def test_load_tokenizer_is_cached_and_knows_max_length(small_twin: Path):
    path = str(small_twin)
    tok = load_tokenizer(path)
    assert load_tokenizer(path) is tok
    assert tok.is_fast and tok.model_max_length == 512  # the twin's sentence_bert_config.json
    enc = tok("근로자가 퇴직한 경우", return_offsets_mapping=True, add_special_tokens=False)
    assert len(enc["offset_mapping"]) == len(enc["input_ids"]) > 0


def test_rust_tokenizer_copies_truncate_as_asked(small_twin: Path):
    tok = load_tokenizer(str(small_twin))
    long = "근로자가 퇴직한 경우에는 그 지급 사유가 발생한 때부터 14일 이내에 지급하여야 한다. " * 20
    full = len(rust_tokenizer(tok, max_length=None).encode(long).ids)
    assert full > 64
    assert len(rust_tokenizer(tok, max_length=64).encode(long).ids) == 64
    assert len(tok(long)["input_ids"]) == full  # the shared tokenizer is left as it was


def test_precision_defaults_and_choices():
    cpu = Precision.resolve("cpu", None)
    assert (cpu.device, cpu.name, cpu.is_cuda) == ("cpu", "fp32", False)
    assert cpu.model_kwargs() == {}
    assert Precision.resolve("cpu", "int8").name == "int8"
    with pytest.raises(ValueError, match="not available on cpu"):
        Precision.resolve("cpu", "fp16")
    with pytest.raises(ValueError, match="not available on cuda"):
        Precision.resolve("cuda", "int8")


def test_int8_quantizes_linear_layers_only_when_asked():
    import torch

    def model() -> torch.nn.Module:
        return torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.LayerNorm(8))

    plain = Precision.resolve("cpu", "fp32").prepare(model())
    assert type(plain[0]) is torch.nn.Linear
    quantized = Precision.resolve("cpu", "int8").prepare(model())
    assert type(quantized[0]) is not torch.nn.Linear and type(quantized[1]) is torch.nn.LayerNorm
