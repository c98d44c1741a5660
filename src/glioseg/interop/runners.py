"""Run exported graphs with only numpy and ONNX Runtime or OpenVINO: no torch import.

An *export folder* (written by :func:`glioseg.interop.export.export_graphs`) holds::

    model.json       format, graph format, label scheme, normalisation, post-processing, and per
                     stage its spacing, patch size, target, divisor and networks (one per fold)
    <stage>/<net>.onnx | .xml + .bin | .pt
    manifest.json    {"format": "glioseg-export/1", "files": {name: sha256}, "sizes": {name: bytes}}

:func:`read_export` checks every file against the manifest before anything is loaded, so a
tampered or truncated graph is refused. A runner is a function ``float32 (B, 4, X, Y, Z) ->
float32 logits (B, K, X, Y, Z)``, X/Y/Z multiples of the stage's divisor.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from types import ModuleType
from typing import Any

import numpy as np

from glioseg.artifacts.bundles import sha256_file
from glioseg.utils import one_line

EXPORT_FORMAT = "glioseg-export/1"
SPEC_FILE = "model.json"
MANIFEST = "manifest.json"
BACKENDS = ("torch", "onnxruntime", "openvino")
"""``glioseg predict --backend`` choices; all but torch run the graphs in float32."""
BACKEND_EXTRAS = {"onnxruntime": "onnx", "openvino": "openvino", "onnx": "onnx", "nncf": "int8"}
BACKEND_PRECISIONS = {"onnxruntime": ("fp32",), "openvino": ("fp32", "bf16")}
"""What each graph backend runs; fp32 is each one's default."""
OPENVINO_PRECISION = {"fp32": "f32", "bf16": "bf16"}
Runner = Callable[[np.ndarray], np.ndarray]


class ExportError(Exception):
    """An export folder is missing, tampered with or unusable, or a backend is not installed."""


def import_backend(name: str) -> ModuleType:
    """Import a backend package (``onnxruntime``, ``openvino``, ``onnx``).

    Raises:
        ExportError: the package is not installed (names the pip extra to install).
    """
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        extra = BACKEND_EXTRAS.get(name, name)
        raise ExportError(f"backend package {name!r} is not installed ({one_line(exc)}); "
                          f"pip install 'glioseg[{extra}]', or use --backend torch") from exc


def read_export(folder: Path | str) -> dict[str, Any]:
    """Verify an export folder against its manifest and return its ``model.json``.

    Args:
        folder: written by ``glioseg export-model --format onnx|openvino|torchscript``.

    Returns:
        The parsed ``model.json``.

    Raises:
        ExportError: no manifest, a missing, unlisted or modified file, or an invalid ``model.json``.
    """
    folder = Path(folder)
    manifest = _read_json(folder / MANIFEST, f"{folder}: not a glioseg export folder (no {MANIFEST})")
    if manifest.get("format") != EXPORT_FORMAT or not isinstance(manifest.get("files"), dict):
        raise ExportError(f"{folder / MANIFEST}: not a {EXPORT_FORMAT} manifest; re-export the model")
    _verify_files(folder, manifest)
    spec = _read_json(folder / SPEC_FILE, f"{folder}: {SPEC_FILE} missing; re-export the model")
    if spec.get("format") != EXPORT_FORMAT or not isinstance(spec.get("stages"), dict) or not spec["stages"]:
        raise ExportError(f"{folder / SPEC_FILE}: not a {EXPORT_FORMAT} model description; re-export the model")
    return spec


def _read_json(path: Path, missing: str) -> dict[str, Any]:
    if not path.is_file():
        raise ExportError(missing)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ExportError(f"{path}: not valid JSON ({one_line(exc)}); re-export the model") from exc
    if not isinstance(data, dict):
        raise ExportError(f"{path}: expected a JSON object; re-export the model")
    return data


def _verify_files(folder: Path, manifest: dict[str, Any]) -> None:
    """Every listed file present with its size and sha256; no file that is not listed."""
    fix = "the file was modified or corrupted; re-export the model (or delete the cache folder)"
    sizes = manifest.get("sizes", {})
    for name, expected in manifest["files"].items():
        rel = PurePosixPath(name)
        if rel.is_absolute() or ".." in rel.parts:
            raise ExportError(f"{folder / MANIFEST}: unsafe path {name!r}; re-export the model")
        path = folder / rel
        if not path.is_file():
            raise ExportError(f"{path}: listed in the manifest but missing; re-export the model")
        if name in sizes and path.stat().st_size != sizes[name]:
            raise ExportError(f"{path}: {path.stat().st_size} bytes, the manifest declares {sizes[name]}; {fix}")
        if sha256_file(path) != expected:
            raise ExportError(f"{path}: sha256 does not match the manifest; {fix}")
    listed = set(manifest["files"]) | {MANIFEST}
    for path in folder.rglob("*"):
        if path.is_file() and path.relative_to(folder).as_posix() not in listed:
            raise ExportError(f"{path}: not listed in the manifest; remove it or re-export the model")


def onnx_runner(path: Path | str, threads: int = 1) -> Runner:
    """An ONNX Runtime CPU session as a function ``float32 (B, C, X, Y, Z) -> float32 (B, K, X, Y, Z)``.

    Args:
        path: ``.onnx`` graph with input ``image`` and output ``logits``.
        threads: intra-op threads (the same as torch's, for a fair comparison).
    """
    ort = import_backend("onnxruntime")
    options = ort.SessionOptions()
    options.intra_op_num_threads = int(threads)
    options.inter_op_num_threads = 1
    options.log_severity_level = 3  # warnings about unused initialisers are noise to users
    session = ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name

    def run(x: np.ndarray) -> np.ndarray:
        return np.asarray(session.run(None, {name: np.ascontiguousarray(x, dtype=np.float32)})[0])

    return run


def openvino_runner(path: Path | str, threads: int = 1, precision: str = "fp32") -> Runner:
    """An OpenVINO CPU compiled model as a function like :func:`onnx_runner`.

    Args:
        path: ``.xml`` IR (with its ``.bin``) or an ``.onnx`` graph.
        threads: inference threads.
        precision: ``fp32``, or ``bf16`` (convolutions in bfloat16 where the CPU has bf16 units; the
            counterpart of torch's bf16 autocast). Inputs and outputs stay float32.
    """
    ov = import_backend("openvino")
    core = ov.Core()
    # the hint is always set: on CPUs with bf16/AMX units OpenVINO would otherwise pick bf16 itself
    config = {"INFERENCE_NUM_THREADS": int(threads), "INFERENCE_PRECISION_HINT": OPENVINO_PRECISION[precision],
              "PERFORMANCE_HINT": "LATENCY"}
    compiled = core.compile_model(core.read_model(str(path)), "CPU", config)
    request = compiled.create_infer_request()

    def run(x: np.ndarray) -> np.ndarray:
        request.infer({0: np.ascontiguousarray(x, dtype=np.float32)})
        return np.array(request.get_output_tensor(0).data, dtype=np.float32, copy=True)

    return run


RUNNERS: dict[str, Callable[..., Runner]] = {"onnxruntime": onnx_runner, "openvino": openvino_runner}


def check_backend_precision(backend: str, precision: str) -> None:
    """Refuse a precision the graph backend does not run (ONNX Runtime: fp32; OpenVINO: fp32, bf16).

    Raises:
        ExportError: one line naming the backend, the precision and the choices.
    """
    choices = BACKEND_PRECISIONS.get(backend, ("fp32",))
    if precision not in choices:
        raise ExportError(f"--backend {backend} runs {' or '.join(choices)}, not {precision}; "
                          f"pass --precision {choices[0]} or use --backend torch")


def make_runner(backend: str, path: Path | str, threads: int = 1, precision: str = "fp32") -> Runner:
    """The runner of one graph on ``backend`` (``onnxruntime`` or ``openvino``).

    Raises:
        ExportError: unknown backend (lists the valid ones), a precision it does not run, or the
            backend package not installed.
    """
    if backend not in RUNNERS:
        raise ExportError(f"unknown graph backend {backend!r}; choose one of {sorted(RUNNERS)}")
    check_backend_precision(backend, precision)
    if backend == "openvino":
        return openvino_runner(path, threads, precision)
    return RUNNERS[backend](path, threads)


def stage_graphs(spec: dict[str, Any], folder: Path | str, stage: str) -> list[Path]:
    """The graph files of one stage (one per fold), in the order the ensemble uses them.

    Raises:
        ExportError: no such stage.
    """
    if stage not in spec["stages"]:
        raise ExportError(f"{folder}: no stage {stage!r} (stages: {sorted(spec['stages'])})")
    return [Path(folder) / net["file"] for net in spec["stages"][stage]["networks"]]
