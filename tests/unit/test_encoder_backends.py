"""The ONNX Runtime and OpenVINO encoder backends (services/embedding/backends.py) on the small twin:
vectors within the stated tolerance of fp32 PyTorch, one export per model and variant, clear errors."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from pydantic import ValidationError

from config.profiles import get_profile
from config.settings import Settings
from services.embedding.backends import BackendSpec, centred_cosine, model_key, planned_stages, variant_dir
from services.embedding.encoder import Encoder
from services.embedding.loading import cpu_supports_bf16

pytest.importorskip("onnxruntime", reason="the onnx backend needs onnxruntime (pip install 'saekin[cpu-backends]')")
pytest.importorskip("openvino", reason="the openvino backend needs openvino (pip install 'saekin[cpu-backends]')")
pytest.importorskip("onnxscript", reason="the ONNX export needs onnxscript (pip install 'saekin[cpu-backends]')")

pytestmark = pytest.mark.slow

PROFILE = get_profile("bge-m3-ko")
TEXTS = [
    "퇴직금은 언제까지 받아야 하나요?",
    "서울특별시의 인구는 얼마인가요",
    "여권 발급 신청은 본인이 직접 방문해야 합니다.",
    "짧은 질문",
    "주민참여예산 사업 제안은 3월 31일까지 접수합니다. " * 6,
    "공공기관의 정보공개에 관한 법률에 따라 청구일로부터 10일 이내에 공개 여부를 결정합니다.",
    "시청 민원실은 점심시간에도 교대 근무로 민원 업무를 봅니다.",
    "하반기 정기 안전점검을 다음과 같이 실시하오니 협조 바랍니다.",
]

# The tolerances the README states: fp32 exports compute the same function (float rounding
# only); int8 ones are compared on the text-specific part of the vectors (centred cosine).
FP32_ATOL = 1e-4
INT8_CENTRED_MIN = 0.95
BF16_CENTRED_MIN = 0.99


@pytest.fixture(scope="module")
def export_root(tmp_path_factory):
    return tmp_path_factory.mktemp("encoders")


@pytest.fixture(scope="module")
def reference(small_twin) -> tuple[np.ndarray, np.ndarray]:
    enc = Encoder(str(small_twin), PROFILE, device="cpu")
    return enc.encode_documents(TEXTS), np.concatenate([enc.encode_queries([t]) for t in TEXTS])


@pytest.mark.parametrize(
    ("backend", "precision", "level"),
    [
        ("onnx", "fp32", "O1"),
        ("onnx", "fp32", "O2"),
        ("onnx", "int8", "O2"),
        ("openvino", "fp32", None),
        ("openvino", "int8", None),
        ("openvino", "bf16", None),
    ],
)
def test_backend_vectors_agree_with_pytorch_fp32(small_twin, export_root, reference, backend, precision, level):
    docs_ref, queries_ref = reference
    enc = Encoder(
        str(small_twin), PROFILE, backend=backend, precision=precision, onnx_optimization=level, export_dir=export_root
    )
    assert (enc.backend, enc.precision, enc.device) == (backend, precision, "cpu")
    assert enc.pack_position_offset is None  # the exported graph takes a plain mask: padded batches only
    docs = enc.encode_documents(TEXTS)
    queries = np.concatenate([enc.encode_queries([t]) for t in TEXTS])
    assert docs.shape == docs_ref.shape and docs.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(docs, axis=1), 1.0, atol=1e-5)  # the model's Normalize module ran
    if precision == "fp32" or (precision == "bf16" and not cpu_supports_bf16()):  # bf16 falls back to fp32
        np.testing.assert_allclose(docs, docs_ref, atol=FP32_ATOL)
        np.testing.assert_allclose(queries, queries_ref, atol=FP32_ATOL)
    elif precision == "bf16":
        assert not np.allclose(docs, docs_ref, atol=1e-6)
        assert centred_cosine(docs, docs_ref).min() >= BF16_CENTRED_MIN
        assert centred_cosine(queries, queries_ref).min() >= BF16_CENTRED_MIN
    else:
        assert not np.allclose(docs, docs_ref, atol=1e-6)  # it really is another computation
        assert centred_cosine(docs, docs_ref).min() >= INT8_CENTRED_MIN
        assert centred_cosine(queries, queries_ref).min() >= INT8_CENTRED_MIN


def test_export_happens_once_and_is_reused(small_twin, tmp_path):
    stages: list[str] = []
    spec = BackendSpec.resolve("onnx", "int8", "O2")
    key = model_key(str(small_twin))
    assert planned_stages(tmp_path, key, spec) == ["export", "optimise", "quantize"]
    first = Encoder(
        str(small_twin), PROFILE, backend="onnx", precision="int8", export_dir=tmp_path, export_progress=stages.append
    )
    assert len(stages) == 3
    directory = variant_dir(tmp_path, key, spec)
    assert first.export_path == directory
    info = json.loads((directory / "export_info.json").read_text())
    assert info["variant"] == "onnx-O2-int8" and info["key"] == key
    stamp = (directory / "model.onnx").stat().st_mtime_ns
    assert planned_stages(tmp_path, key, spec) == []

    again: list[str] = []
    second = Encoder(
        str(small_twin), PROFILE, backend="onnx", precision="int8", export_dir=tmp_path, export_progress=again.append
    )
    assert again == []  # loaded, not exported
    assert (directory / "model.onnx").stat().st_mtime_ns == stamp
    np.testing.assert_array_equal(second.encode_queries(TEXTS[:2]), first.encode_queries(TEXTS[:2]))

    # Another variant of the same model starts from the kept base export.
    other: list[str] = []
    Encoder(str(small_twin), PROFILE, backend="openvino", export_dir=tmp_path, export_progress=other.append)
    assert other and not any(s.startswith("exporting") for s in other)
    assert sorted(p.name for p in (tmp_path / key).iterdir() if not p.name.startswith(".")) == [
        "onnx-O2-int8",
        "onnx-base",
        "openvino-fp32",
    ]
    # OpenVINO bf16 compiles that same IR for bf16 maths: nothing more is exported.
    bf16: list[str] = []
    enc = Encoder(
        str(small_twin), PROFILE, backend="openvino", precision="bf16", export_dir=tmp_path, export_progress=bf16.append
    )
    assert bf16 == [] and enc.export_path == tmp_path / key / "openvino-fp32" and enc.variant == "openvino-bf16"


def test_failed_export_leaves_nothing_half_written(small_twin, export_root, tmp_path):
    key = model_key(str(small_twin))
    # Start from a finished base export (saves exporting the PyTorch model once more).
    Encoder(str(small_twin), PROFILE, backend="onnx", onnx_optimization="O1", export_dir=export_root)
    shutil.copytree(export_root / key / "onnx-base", tmp_path / key / "onnx-base")

    def fail_at_optimise(stage: str) -> None:
        if stage.startswith("optimising"):
            raise RuntimeError("killed")

    with pytest.raises(RuntimeError, match="killed"):
        Encoder(str(small_twin), PROFILE, backend="onnx", export_dir=tmp_path, export_progress=fail_at_optimise)
    assert not variant_dir(tmp_path, key, BackendSpec.resolve("onnx", None)).exists()
    assert not [p for p in (tmp_path / key).iterdir() if ".tmp-" in p.name]
    enc = Encoder(str(small_twin), PROFILE, backend="onnx", export_dir=tmp_path)  # the next start exports it
    assert enc.encode_queries(["질문"]).shape == (1, enc.dim)


def test_bad_options_are_refused_clearly(small_twin, tmp_path):
    with pytest.raises(
        ValueError, match=r"backend 'tensorrt' is unknown; choose one of \('torch', 'onnx', 'openvino'\)"
    ):
        Encoder(str(small_twin), PROFILE, backend="tensorrt", export_dir=tmp_path)
    with pytest.raises(ValueError, match=r"precision 'bf16' is not available with backend onnx; choose one of"):
        Encoder(str(small_twin), PROFILE, backend="onnx", precision="bf16", export_dir=tmp_path)
    with pytest.raises(ValueError, match=r"optimisation level 'O4' is unknown; choose one of \('O1', 'O2', 'O3'\)"):
        Encoder(str(small_twin), PROFILE, backend="onnx", onnx_optimization="O4", export_dir=tmp_path)
    with pytest.raises(ValueError, match="runs on the CPU only, not on cuda"):
        Encoder(str(small_twin), PROFILE, backend="openvino", device="cuda", export_dir=tmp_path)
    with pytest.raises(ValueError, match="needs export_dir"):
        Encoder(str(small_twin), PROFILE, backend="onnx")
    assert not any(tmp_path.iterdir())  # nothing was exported for a refused option


def test_settings_validate_the_backend(tmp_path):
    ok = Settings(data_dir=tmp_path, embedding_backend="onnx", embedding_precision="int8")
    assert ok.encoder_export_dir == tmp_path / "encoders"
    with pytest.raises(ValidationError, match="embedding_backend"):
        Settings(data_dir=tmp_path, embedding_backend="tensorrt")
    with pytest.raises(ValidationError, match="takes SAEKIN_EMBEDDING_PRECISION fp32 or int8, not bf16"):
        Settings(data_dir=tmp_path, embedding_backend="onnx", embedding_precision="bf16")
    with pytest.raises(ValidationError, match="takes SAEKIN_EMBEDDING_PRECISION fp32 or int8 or bf16, not fp16"):
        Settings(data_dir=tmp_path, embedding_backend="openvino", embedding_precision="fp16")
    assert Settings(data_dir=tmp_path, embedding_backend="openvino", embedding_precision="bf16")
    with pytest.raises(ValidationError, match="runs on the CPU only"):
        Settings(data_dir=tmp_path, embedding_backend="onnx", embedding_device="cuda")
    with pytest.raises(ValidationError, match="embedding_onnx_optimization"):
        Settings(data_dir=tmp_path, embedding_onnx_optimization="O4")
