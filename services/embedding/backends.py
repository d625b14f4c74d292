"""CPU inference backends for the embedding transformer: ONNX Runtime and OpenVINO.

The encoder's engine (encoder.py: tokenization, token-budgeted batches, pooling and
normalization by the model's own sentence-transformers modules) stays the same; only the
transformer's forward pass changes. With `backend="onnx"` or `"openvino"` the PyTorch model is
exported once per model and variant into a directory (the data directory's `encoders/`), and
every later start loads the exported files:

    <root>/<weights sha256[:16]>/onnx-base/model.onnx         torch.onnx (dynamo) export, fp32
    <root>/<weights sha256[:16]>/onnx-O2-fp32/model.onnx      ONNX Runtime transformer fusions
    <root>/<weights sha256[:16]>/onnx-O2-int8/model.onnx      + dynamic int8 quantization
    <root>/<weights sha256[:16]>/openvino-fp32/model.xml      OpenVINO IR
    <root>/<weights sha256[:16]>/openvino-int8/model.xml      + int8 weight compression (NNCF)

OpenVINO bf16 loads openvino-fp32 and compiles it for bf16 maths.

Why not sentence-transformers' own `backend="onnx"`/`"openvino"`: both go through Hugging Face
Optimum, whose ONNX package (optimum-onnx 0.1) requires transformers < 4.58 and whose Intel
package (optimum-intel 2.2) requires transformers < 5.6 and another torch, while
sentence-transformers 6 requires transformers >= 5. So Saekin uses the libraries Optimum wraps
directly: `torch.onnx.export` (dynamo), `onnxruntime.transformers.optimizer` (the O1-O3 levels),
`onnxruntime.quantization.quantize_dynamic`, `openvino.convert_model` and
`nncf.compress_weights`. An export is written to a temporary directory and renamed into place
under a file lock, so a crash or a second process never sees half an export.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import io
import json
import logging
import os
import shutil
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    import torch

log = logging.getLogger(__name__)

BACKENDS = ("torch", "onnx", "openvino")
EXPORT_BACKENDS = ("onnx", "openvino")
# bf16: OpenVINO compiles the fp32 model for bf16 maths (fast on CPUs with AVX-512 BF16 or AMX);
# ONNX Runtime's CPU kernels have no bf16.
BACKEND_PRECISIONS = {"onnx": ("fp32", "int8"), "openvino": ("fp32", "int8", "bf16")}
# O1: ONNX Runtime's basic graph optimisations (constant folding, redundant nodes) saved into the
# file; O2: O1 plus the transformer fusions (SkipLayerNormalization, BiasGelu, Attention where the
# graph matches), exact; O3: O2 with GELU approximated by tanh (FastGelu), not exact.
OPTIMIZATION_LEVELS = ("O1", "O2", "O3")
DEFAULT_OPTIMIZATION = "O2"
# Bumped when the export recipe changes, so that old exports are not reused.
EXPORT_FORMAT = 1
INSTALL_HINT = "pip install 'saekin[cpu-backends]' (onnx, onnxscript, onnxruntime, openvino, nncf)"

_INPUTS = ("input_ids", "attention_mask")


@dataclass(frozen=True)
class BackendSpec:
    """A validated export variant: backend, precision and (ONNX Runtime only) optimisation level."""

    backend: str  # onnx or openvino
    precision: str  # fp32, int8, or bf16 (openvino only)
    optimization: str | None  # O1-O3 for onnx, None for openvino

    @classmethod
    def resolve(cls, backend: str, precision: str | None, optimization: str | None = None) -> BackendSpec:
        """The spec, or a ValueError naming the allowed values."""
        if backend not in EXPORT_BACKENDS:
            raise ValueError(f"backend {backend!r} cannot be exported; choose one of {EXPORT_BACKENDS}")
        name = precision or "fp32"
        allowed = BACKEND_PRECISIONS[backend]
        if name not in allowed:
            raise ValueError(f"precision {name!r} is not available with backend {backend}; choose one of {allowed}")
        if backend == "openvino":
            return cls(backend, name, None)
        level = optimization or DEFAULT_OPTIMIZATION
        if level not in OPTIMIZATION_LEVELS:
            raise ValueError(f"ONNX optimisation level {level!r} is unknown; choose one of {OPTIMIZATION_LEVELS}")
        return cls(backend, name, level)

    @property
    def name(self) -> str:
        """The variant's name, e.g. onnx-O2-int8 or openvino-bf16 (export_name: its files' directory)."""
        parts = [self.backend] + ([self.optimization] if self.optimization else []) + [self.precision]
        return "-".join(parts)

    @property
    def export_name(self) -> str:
        """The directory of the exported files: OpenVINO's bf16 runs the fp32 IR (bf16 is the
        precision it is compiled for, not a different file), so the two share one export."""
        return "openvino-fp32" if self.backend == "openvino" and self.precision == "bf16" else self.name

    @property
    def model_file(self) -> str:
        return "model.xml" if self.backend == "openvino" else "model.onnx"


# --------------------------------------------------------------------------------------------
# Where exports live
# --------------------------------------------------------------------------------------------


def model_key(model_name_or_path: str) -> str:
    """The first 16 hex digits of the model weights' sha256 (services/collections/model.py), or of
    the name with the weights' sizes and times when the weights cannot be found."""
    from services.collections.model import model_ref

    ref = model_ref(model_name_or_path)
    if ref.sha256:
        return ref.sha256[:16]
    path = Path(model_name_or_path)
    stamp = [str(path.resolve()) if path.exists() else model_name_or_path]
    if path.is_dir():
        stamp += [f"{p.name}:{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in sorted(path.rglob("*")) if p.is_file()]
    return "name-" + hashlib.sha256("\n".join(stamp).encode()).hexdigest()[:11]


def variant_dir(root: Path, key: str, spec: BackendSpec) -> Path:
    return Path(root) / key / spec.export_name


def is_exported(directory: Path, spec: BackendSpec) -> bool:
    """Whether `directory` holds a finished export of `spec` in the current format."""
    info = read_export_info(directory)
    return info is not None and info.get("format") == EXPORT_FORMAT and (directory / spec.model_file).exists()


def read_export_info(directory: Path) -> dict[str, Any] | None:
    try:
        data = json.loads((Path(directory) / "export_info.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive lock on `path` (a lock file): one process exports a variant at a time."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


@contextlib.contextmanager
def _staging(target: Path) -> Iterator[Path]:
    """A fresh temporary directory beside `target`, renamed to `target` when the block succeeds
    and removed when it fails."""
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        yield tmp
        if target.exists():  # an export of an older format
            shutil.rmtree(target)
        os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def planned_stages(root: Path, key: str, spec: BackendSpec) -> list[str]:
    """The stages an export of `spec` still has to run (empty: exported already)."""
    if is_exported(variant_dir(root, key, spec), spec):
        return []
    base = Path(root) / key / "onnx-base"
    stages = [] if read_export_info(base) and (base / "model.onnx").exists() else ["export"]
    if spec.backend == "onnx":
        stages += ["optimise"] + (["quantize"] if spec.precision == "int8" else [])
    else:
        stages += ["convert"] + (["compress"] if spec.precision == "int8" else [])
    return stages


def centred_cosine(got: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """Per row, the cosine of `got` and `ref` after subtracting `ref`'s mean vector (the
    text-specific part of an embedding; random-weight twins map all texts close together)."""
    centre = ref.mean(0)
    a, b = got - centre, ref - centre
    out: np.ndarray = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    return out


def _write_info(directory: Path, **fields: Any) -> None:
    info = {"format": EXPORT_FORMAT, **fields}
    (directory / "export_info.json").write_text(json.dumps(info, indent=2), encoding="utf-8")


def _require(module: str) -> Any:
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise RuntimeError(f"the ONNX/OpenVINO encoder backends need {module}: {INSTALL_HINT}") from exc


# --------------------------------------------------------------------------------------------
# Export
# --------------------------------------------------------------------------------------------

Progress = Callable[[str], None]


def ensure_export(
    transformer: torch.nn.Module,
    spec: BackendSpec,
    *,
    root: Path,
    key: str,
    model_name: str,
    num_heads: int,
    hidden_size: int,
    progress: Progress | None = None,
    release: Callable[[], None] | None = None,
) -> Path:
    """The directory of `spec`'s export of `transformer` (fp32 PyTorch, CPU), exporting it first
    when it is not there yet. `progress(stage)` is called before each stage of an export;
    `release()` once the PyTorch model is no longer needed (after the ONNX base export), so that
    the later stages (a quantizer holds several copies of the graph) have its memory."""
    target = variant_dir(root, key, spec)
    if is_exported(target, spec):
        return target
    with _locked(Path(root) / key / ".export.lock"):
        if is_exported(target, spec):  # another process finished it while we waited
            return target
        say = progress or (lambda stage: None)
        started = time.monotonic()
        log.info("exporting %s for the %s encoder backend into %s (once per model)", model_name, spec.name, target)
        base = _ensure_base_onnx(transformer, Path(root) / key, model_name=model_name, say=say)
        if release is not None:
            release()
        with _staging(target) as tmp:
            if spec.backend == "onnx":
                _onnx_variant(base, tmp, spec, num_heads=num_heads, hidden_size=hidden_size, say=say)
            else:
                _openvino_variant(base, tmp, spec, say=say)
            _write_info(
                tmp,
                model=model_name,
                key=key,
                variant=spec.export_name,
                seconds=round(time.monotonic() - started, 1),
                versions=_versions(),
            )
        log.info("exported %s (%s) in %.0f s", model_name, spec.name, time.monotonic() - started)
        return target


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in ("torch", "transformers", "onnx", "onnxruntime", "openvino", "nncf"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            pass
    return out


def _ensure_base_onnx(transformer: torch.nn.Module, model_root: Path, *, model_name: str, say: Progress) -> Path:
    """model_root/onnx-base/model.onnx: the fp32 graph every variant starts from."""
    target = model_root / "onnx-base"
    if read_export_info(target) and (target / "model.onnx").exists():
        return target / "model.onnx"
    say("exporting the PyTorch model to ONNX")
    with _staging(target) as tmp:
        _export_onnx(transformer, tmp / "model.onnx")
        _write_info(tmp, model=model_name, variant="onnx-base", versions=_versions())
    return target / "model.onnx"


class _LastHiddenState:
    """The transformer as a function of (input_ids, attention_mask) returning last_hidden_state."""

    @staticmethod
    def wrap(transformer: torch.nn.Module) -> torch.nn.Module:
        import torch

        class Wrapped(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.inner = transformer

            def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
                out = self.inner(input_ids=input_ids, attention_mask=attention_mask, return_dict=True)
                hidden: torch.Tensor = out.last_hidden_state
                return hidden

        return Wrapped().eval()


def _export_onnx(transformer: torch.nn.Module, path: Path) -> None:
    """torch.onnx's dynamo exporter with a dynamic batch and sequence axis. (The TorchScript
    exporter freezes transformers 5's mask construction to the example's shapes: wrong vectors
    for any other length.)"""
    import torch

    _require("onnxscript")
    example = torch.tensor([[0, 100, 200, 300, 2], [0, 400, 500, 2, 1]], dtype=torch.int64)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 1, 0]], dtype=torch.int64)
    dims = {0: torch.export.Dim("batch"), 1: torch.export.Dim("sequence")}
    chatter = io.StringIO()  # the exporter prints its steps; they go to the debug log instead
    with (
        torch.inference_mode(False),
        torch.no_grad(),
        warnings.catch_warnings(),
        contextlib.redirect_stdout(chatter),
    ):
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            _LastHiddenState.wrap(transformer),
            (example, mask),
            None,
            dynamo=True,
            dynamic_shapes={"input_ids": dims, "attention_mask": dims},
            input_names=list(_INPUTS),
            output_names=["last_hidden_state"],
            verbose=False,
        )
    log.debug("torch.onnx.export: %s", chatter.getvalue())
    if program is None:  # pragma: no cover - dynamo=True always returns the program
        raise RuntimeError("torch.onnx.export returned no program")
    program.save(str(path), external_data=True)


def _onnx_variant(base: Path, out: Path, spec: BackendSpec, *, num_heads: int, hidden_size: int, say: Progress) -> None:
    _require("onnxruntime")
    from onnxruntime.transformers.fusion_options import FusionOptions
    from onnxruntime.transformers.optimizer import optimize_model

    say(f"optimising the ONNX graph ({spec.optimization})")
    options = FusionOptions("bert")
    fusions = spec.optimization in ("O2", "O3")
    for flag in (
        "enable_attention",
        "enable_skip_layer_norm",
        "enable_embed_layer_norm",
        "enable_bias_skip_layer_norm",
        "enable_bias_gelu",
        "enable_layer_norm",
        "enable_gelu",
    ):
        setattr(options, flag, fusions)
    options.enable_gelu_approximation = spec.optimization == "O3"
    optimized = optimize_model(
        str(base),
        model_type="bert",
        num_heads=num_heads,
        hidden_size=hidden_size,
        optimization_options=options,
        opt_level=1,  # ORT's basic level only: the extended levels write EP-specific nodes
        use_gpu=False,
    )
    fp32_path = out / ("model.onnx" if spec.precision == "fp32" else "model-fp32.onnx")
    optimized.save_model_to_file(str(fp32_path), use_external_data_format=True)
    if spec.precision == "int8":
        from onnxruntime.quantization import QuantType, quantize_dynamic

        say("quantizing the MatMul weights to int8")
        quantize_dynamic(
            fp32_path,
            out / "model.onnx",
            weight_type=QuantType.QInt8,
            per_channel=True,
            op_types_to_quantize=["MatMul"],
            use_external_data_format=True,
        )
        for f in out.glob("model-fp32.onnx*"):
            f.unlink()


def _openvino_variant(base: Path, out: Path, spec: BackendSpec, *, say: Progress) -> None:
    ov = _require("openvino")
    say("converting the ONNX graph to OpenVINO IR")
    model = ov.convert_model(str(base))
    if spec.precision == "int8":
        nncf = _require("nncf")
        say("compressing the weights to int8 (NNCF)")
        # The embedding tables (Gather) stay fp32: compressed, they moved the small twin's
        # vectors far (centred cosine 0.52 against 0.994 without them), and a lookup reads only
        # a few rows anyway.
        # NNCF logs its statistics table to stdout and draws a progress bar there: keep stdout
        # clean (commands and benchmarks print their results on it).
        nncf_log = logging.getLogger("nncf")
        level = nncf_log.level
        nncf_log.setLevel(logging.WARNING)
        try:
            with contextlib.redirect_stdout(io.StringIO()):
                model = nncf.compress_weights(
                    model, mode=nncf.CompressWeightsMode.INT8_ASYM, ignored_scope=nncf.IgnoredScope(types=["Gather"])
                )
        finally:
            nncf_log.setLevel(level)
    ov.save_model(model, str(out / "model.xml"), compress_to_fp16=False)


# --------------------------------------------------------------------------------------------
# Running an export
# --------------------------------------------------------------------------------------------


class _Output:
    """What the engine reads from a transformers model's output."""

    def __init__(self, last_hidden_state: torch.Tensor) -> None:
        self.last_hidden_state = last_hidden_state


class ExportedTransformer:
    """An exported transformer called like the PyTorch one: (input_ids, attention_mask) torch
    tensors in, an object with `last_hidden_state` out. Not thread-safe (the encoder calls it
    under its lock)."""

    def __init__(self, directory: Path, spec: BackendSpec, *, num_threads: int | None = None) -> None:
        self.spec = spec
        self.directory = Path(directory)
        path = self.directory / spec.model_file
        self._run: Callable[[np.ndarray, np.ndarray], np.ndarray]
        if spec.backend == "onnx":
            self._run = _onnxruntime_runner(path, num_threads)
        else:
            self._run = _openvino_runner(path, num_threads, spec.precision)

    def __call__(self, *, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, **_: Any) -> _Output:
        import torch

        ids = input_ids.numpy()
        mask = np.ones_like(ids) if attention_mask is None else attention_mask.numpy()
        hidden = self._run(ids, mask)
        return _Output(torch.from_numpy(hidden))


def _onnxruntime_runner(path: Path, num_threads: int | None) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    ort = _require("onnxruntime")
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if num_threads:
        options.intra_op_num_threads = num_threads
    # No busy-waiting between runs: in the API process the cores are shared with Kiwi and the index.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])

    def run(ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        out: np.ndarray = session.run(["last_hidden_state"], {"input_ids": ids, "attention_mask": mask})[0]
        return out

    return run


def _native_bf16() -> bool:
    from services.embedding.loading import cpu_supports_bf16

    if cpu_supports_bf16():
        return True
    log.warning("this CPU has no native bf16 (AVX-512 BF16 or AMX): OpenVINO runs the encoder in fp32")
    return False


def _openvino_runner(
    path: Path, num_threads: int | None, precision: str
) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    ov = _require("openvino")
    config: dict[str, Any] = {
        "PERFORMANCE_HINT": "LATENCY",
        # OpenVINO computes in bf16 by default on CPUs that have it: fp32 maths unless bf16 is
        # asked for (int8 means int8 weights, decompressed on the fly).
        "INFERENCE_PRECISION_HINT": "bf16" if precision == "bf16" and _native_bf16() else "f32",
    }
    if num_threads:
        config["INFERENCE_NUM_THREADS"] = num_threads
    compiled = ov.Core().compile_model(str(path), "CPU", config)
    request = compiled.create_infer_request()

    def run(ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        request.infer({"input_ids": ids, "attention_mask": mask})
        out: np.ndarray = request.get_output_tensor(0).data.copy()
        return out

    return run
