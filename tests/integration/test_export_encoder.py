"""`saekin export-encoder` as a user runs it (in this process), and a service configured with the
exported backend: it loads the export the command made instead of exporting again."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from typer.testing import Result

pytest.importorskip("onnxruntime", reason="the onnx backend needs onnxruntime (pip install 'saekin[cpu-backends]')")
pytest.importorskip("onnxscript", reason="the ONNX export needs onnxscript (pip install 'saekin[cpu-backends]')")


def failed_cleanly(result: Result) -> bool:
    return result.exit_code == 1 and isinstance(result.exception, SystemExit)


def test_export_encoder_once_then_the_runtime_loads_it(tmp_path: Path, small_twin: Path, saekin) -> None:
    env = dict(SAEKIN_DATA_DIR=str(tmp_path / "data"), SAEKIN_EMBEDDING_MODEL=str(small_twin))

    first = saekin("export-encoder", "--backend", "onnx", "--precision", "int8", "--check", "8", **env)
    assert first.exit_code == 0, first.stderr
    assert "onnx-O2-int8 exported in" in first.stdout
    agreement = re.search(r"centred cosine min (\d\.\d+)", first.stdout)
    assert agreement and float(agreement.group(1)) >= 0.95
    assert "SAEKIN_EMBEDDING_BACKEND=onnx SAEKIN_EMBEDDING_PRECISION=int8" in first.stdout
    exported = next((tmp_path / "data" / "encoders").glob("*/onnx-O2-int8/model.onnx"))
    stamp = exported.stat().st_mtime_ns

    again = saekin(
        "export-encoder", "--check", "0", SAEKIN_EMBEDDING_BACKEND="onnx", SAEKIN_EMBEDDING_PRECISION="int8", **env
    )
    assert again.exit_code == 0, again.stderr
    assert "already exported" in again.stdout and "agreement" not in again.stdout
    assert exported.stat().st_mtime_ns == stamp

    from config.settings import Settings
    from services.runtime import Runtime

    settings = Settings(
        data_dir=tmp_path / "data",
        embedding_model=str(small_twin),
        embedding_backend="onnx",
        embedding_precision="int8",
    )
    rt = Runtime(settings)
    try:
        assert rt.encoder.variant == "onnx-O2-int8" and rt.encoder.export_path == exported.parent
        assert rt.query_encoder.encode("퇴직금 지급 기한").shape == (rt.encoder.dim,)
    finally:
        rt.close()
    assert exported.stat().st_mtime_ns == stamp


def test_export_encoder_refuses_bad_options(tmp_path: Path, small_twin: Path, saekin) -> None:
    env = dict(SAEKIN_DATA_DIR=str(tmp_path / "data"), SAEKIN_EMBEDDING_MODEL=str(small_twin))
    torch = saekin("export-encoder", **env)
    assert failed_cleanly(torch) and "the torch backend needs no export" in torch.stderr
    level = saekin("export-encoder", "--backend", "onnx", "--optimization", "O7", **env)
    assert failed_cleanly(level) and "optimisation level 'O7' is unknown" in level.stderr
    precision = saekin("export-encoder", "--backend", "openvino", "--precision", "fp16", **env)
    assert failed_cleanly(precision) and "precision 'fp16' is not available with backend openvino" in precision.stderr
    setting = saekin("export-encoder", SAEKIN_EMBEDDING_BACKEND="tensorrt", **env)
    assert failed_cleanly(setting) and "invalid settings" in setting.stderr and "embedding_backend" in setting.stderr
    assert not (tmp_path / "data" / "encoders").exists()
