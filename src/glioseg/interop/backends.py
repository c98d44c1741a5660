"""``glioseg predict --backend torch|onnxruntime|openvino``: the same Predictor, another network call.

A backend network (:class:`BackendNetwork`) is an ``nn.Module`` whose ``forward`` hands the tile
to an ONNX Runtime or OpenVINO runner (:mod:`glioseg.interop.runners`) as float32 numpy and
returns the logits as a tensor; preprocessing, cascade, ensembles, mirroring TTA, stitching and
paste-back stay glioseg's own. Graph backends run float32 by default (bf16 autocast is torch's);
OpenVINO can run bf16 convolutions when asked (``precision="bf16"``).

For a run or bundle the graphs are exported on first use into a cache folder entry named by the
model's sha256 (:func:`glioseg.interop.export.weights_key`), atomically, and verified against their
manifest each time they are loaded; repeated predictions reuse them. An export folder made by
``glioseg export-model`` can be given directly.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from glioseg.artifacts.preprocess_record import PreprocessingSpec
from glioseg.inference.postprocess import PostprocessConfig
from glioseg.inference.predictor import Predictor, Stage
from glioseg.interop.export import EXPORTER_VERSION, export_graphs, weights_key
from glioseg.interop.runners import (
    BACKENDS,
    EXPORT_FORMAT,
    MANIFEST,
    SPEC_FILE,
    ExportError,
    Runner,
    check_backend_precision,
    import_backend,
    make_runner,
    read_export,
)

GRAPH_OF_BACKEND = {"onnxruntime": "onnx", "openvino": "openvino"}
"""The graph format each backend caches (OpenVINO also runs ``.onnx`` exports)."""
READABLE = {"onnxruntime": ("onnx",), "openvino": ("openvino", "onnx")}


def default_cache_dir() -> Path:
    """Where exported graphs are cached unless told otherwise."""
    return Path.home() / ".glioseg" / "cache" / "graphs"


def check_backend(backend: str) -> None:
    """Refuse an unknown backend, or one whose package is not installed.

    Raises:
        ExportError: one line naming the backend and the fix.
    """
    if backend not in BACKENDS:
        raise ExportError(f"unknown backend {backend!r}; choose one of {list(BACKENDS)}")
    if backend != "torch":
        import_backend(backend)


def is_export_folder(folder: Path) -> bool:
    """True for a folder written by ``glioseg export-model --format onnx|openvino|torchscript``."""
    import json

    try:
        return json.loads((folder / MANIFEST).read_text(encoding="utf-8")).get("format") == EXPORT_FORMAT
    except (OSError, ValueError, AttributeError):
        return False


class BackendNetwork(nn.Module):
    """A network evaluated by a non-torch runner: ``(B, C, X, Y, Z)`` -> float32 logits ``(B, K, X, Y, Z)``.

    Args:
        runner: float32 numpy in, float32 numpy out (:func:`glioseg.interop.runners.make_runner`).
        divisor: spatial sizes must be multiples of this.
        name: what it runs (for ``repr``).
    """

    def __init__(self, runner: Runner, divisor: int = 16, name: str = "graph") -> None:
        super().__init__()
        self.runner, self.divisor, self.name = runner, int(divisor), name

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Run the graph on a tile; autocast does not reach it (float32 throughout)."""
        out = self.runner(x.detach().to("cpu", torch.float32).numpy())
        return torch.from_numpy(out).to(x.device)

    def extra_repr(self) -> str:
        return f"{self.name}, divisor={self.divisor}"


def cached_export(model_dir: Path, backend: str, cache_dir: Path) -> Path:
    """The cache entry of a model's graphs for ``backend``, exported now when absent.

    Returns:
        ``cache_dir/<sha256 key>-<format>``, an export folder.
    """
    fmt = GRAPH_OF_BACKEND[backend]
    entry = Path(cache_dir) / f"{weights_key(model_dir)}-{fmt}"
    stale = entry.is_dir() and _exporter_version(entry) != EXPORTER_VERSION
    if stale or not entry.is_dir():
        try:
            export_graphs(model_dir, entry, fmt, overwrite=stale)
        except ExportError:
            if not entry.is_dir():  # another process finished the same export first: use it
                raise
    return entry


def _exporter_version(entry: Path) -> Any:
    """The exporter version a cache entry was written by (None when unreadable: verified later anyway)."""
    import json

    try:
        return json.loads((entry / SPEC_FILE).read_text(encoding="utf-8")).get("exporter_version")
    except (OSError, ValueError, AttributeError):
        return None


def stages_from_export(folder: Path, backend: str, folds: Sequence[int] | None = None,
                       threads: int | None = None,
                       precision: str = "fp32") -> tuple[dict[str, Stage], PostprocessConfig]:
    """Predictor stages whose networks run the folder's graphs on ``backend``.

    Raises:
        ExportError: tampered folder, a graph format the backend cannot read, or missing folds.
    """
    spec = read_export(folder)
    if spec.get("graph_format") not in READABLE[backend]:
        raise ExportError(f"{folder}: {spec.get('graph_format')} graphs cannot run on --backend {backend}; "
                          f"export with --format {GRAPH_OF_BACKEND[backend]}")
    n_threads = threads or torch.get_num_threads()
    stages: dict[str, Stage] = {}
    for name, entry in spec["stages"].items():
        nets = [n for n in entry["networks"] if folds is None or n["fold"] in set(folds)]
        if not nets:
            raise ExportError(f"{folder}: stage {name} has no network of folds {list(folds or [])} "
                              f"(folds: {[n['fold'] for n in entry['networks']]}); drop or change --folds")
        models: list[nn.Module] = [BackendNetwork(make_runner(backend, Path(folder) / n["file"], n_threads, precision),
                                                  entry["divisor"], f"{backend}:{n['file']}") for n in nets]
        stages[name] = Stage(name, models, entry["spacing_mm"], tuple(entry["patch_size"]), entry["target"],
                             int(entry["divisor"]), _preprocessing(entry, name, folder))
    return stages, PostprocessConfig.from_dict(spec["postprocess"])


def _preprocessing(entry: dict[str, Any], stage: str, folder: Path) -> PreprocessingSpec:
    """The stage's recorded preprocessing; refused when this code preprocesses by other rules."""
    from glioseg.preprocessing.normalize import PREPROCESS_VERSION

    record = entry.get("preprocessing")
    if not isinstance(record, dict) or record.get("version") != PREPROCESS_VERSION:
        raise ExportError(f"{folder}: stage {stage} records preprocessing version "
                          f"{(record or {}).get('version')!r}, this glioseg does version {PREPROCESS_VERSION}; "
                          "re-export the model with this glioseg")
    low, high = (float(p) for p in record["percentiles"])
    return PreprocessingSpec(entry["spacing_mm"], (low, high), int(record["margin"]))


def load_backend_predictor(model_dir: Path, backend: str = "torch", folds: Sequence[int] | None = None,
                           cache_dir: Path | None = None, threads: int | None = None,
                           **options: Any) -> Predictor:
    """A :class:`Predictor` of a run, bundle or export folder whose networks run on ``backend``.

    Args:
        model_dir: run directory or bundle (graphs from the cache), or an export folder.
        backend: ``torch``, ``onnxruntime`` or ``openvino``.
        folds: folds to ensemble (all by default).
        cache_dir: graph cache (default :func:`default_cache_dir`).
        threads: backend threads (default torch's thread count).
        **options: :class:`Predictor` options. Graph backends run on the CPU; their ``precision``
            is ``fp32`` unless given (OpenVINO also runs ``bf16``), applied inside the backend.

    Raises:
        ExportError: unknown or missing backend, MC dropout with a graph backend, tampered graphs.
    """
    check_backend(backend)
    model_dir = Path(model_dir)
    exported = is_export_folder(model_dir)
    if backend == "torch":
        if exported:
            raise ExportError(f"{model_dir}: an exported model; predict with --backend onnxruntime or openvino")
        return Predictor.from_run(model_dir, folds, **options)
    if options.get("mc_samples"):
        raise ExportError(f"MC dropout needs the torch networks (exported graphs have dropout off); "
                          f"drop --mc-dropout or use --backend torch, not {backend}")
    precision = options.get("precision", "fp32")
    check_backend_precision(backend, precision)
    folder = model_dir if exported else cached_export(model_dir, backend, cache_dir or default_cache_dir())
    stages, tuned = stages_from_export(folder, backend, folds, threads, precision)
    options.setdefault("postprocess", tuned)
    return Predictor(stages, **{**options, "device": "cpu", "precision": "fp32"})
