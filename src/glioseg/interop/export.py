"""``glioseg export-model --format onnx|torchscript|openvino``: every stage and fold as a graph.

The graphs take ``image`` float32 ``(B, 4, X, Y, Z)`` (t1, t1ce, t2, flair, z-scored as
``model.json`` says) and return ``logits`` float32 ``(B, K, X, Y, Z)``; batch and spatial sizes are
dynamic (X, Y, Z multiples of the stage's divisor, at least twice it along one axis). Beside them
``model.json`` carries what a runner needs outside glioseg (stage spacing, patch size, target and
activation, label scheme, normalisation, post-processing thresholds, cascade order) and
``manifest.json`` the sha256 of every file (see :mod:`glioseg.interop.runners`, which reads it
without torch). The folder is written under a temporary name and renamed into place.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from glioseg.artifacts.bundles import default_models_home, resolve_model, sha256_file
from glioseg.artifacts.rundir import RunBundle, load_run
from glioseg.inference.postprocess import POSTPROCESS_FILE, load_postprocess
from glioseg.inference.predictor import DEFAULT_MARGIN_MM, run_folders
from glioseg.interop.runners import EXPORT_FORMAT, MANIFEST, SPEC_FILE, ExportError, import_backend

GRAPH_FORMATS = ("onnx", "torchscript", "openvino")
"""``--format`` choices besides ``zip`` (the bundle zip of :func:`glioseg.artifacts.install.export_model`)."""
SUFFIX = {"onnx": ".onnx", "torchscript": ".pt", "openvino": ".xml"}
OPSET = 17
INPUT, OUTPUT = "image", "logits"
EXPORTER_VERSION = 2
"""Bumped when the graphs written for the same weights change (part of the cache key)."""


def resolve_export_source(spec: str | Path | None) -> Path:
    """The model folder named by ``MODEL``: a folder, an installed model, ``default`` (the shipped one).

    Raises:
        BundleError: nothing of that name.
    """
    if spec is not None and str(spec) != "default":
        return resolve_model(str(spec))
    if spec is not None and (Path("default").exists() or (default_models_home() / "default").is_dir()):
        return resolve_model(str(spec))  # a folder or an installed model called "default" wins
    return resolve_model(None)


def load_folds(model_dir: Path, folds: Sequence[int] | None = None) -> list[tuple[int | None, RunBundle]]:
    """The runs of a model folder with their fold number (None for a single run), in ensemble order.

    Raises:
        FileNotFoundError: no run, or a requested fold is missing.
        glioseg.artifacts.weights.TrainError, BundleError: files missing or tampered with.
    """
    out: list[tuple[int | None, RunBundle]] = []
    for folder in run_folders(Path(model_dir), folds):
        fold = int(folder.name.split("_", 1)[1]) if folder != Path(model_dir) else None
        out.append((fold, load_run(folder)))
    return out


def weights_key(model_dir: Path, folds: Sequence[int] | None = None) -> str:
    """A short hex key of the model: sha256 over its weights, configs and post-processing (cache key)."""
    import hashlib

    digest = hashlib.sha256(f"glioseg-export/{EXPORTER_VERSION}".encode())
    files = [Path(model_dir) / POSTPROCESS_FILE]
    for folder in run_folders(Path(model_dir), folds):
        files += [folder / "config.yaml", folder / "run.json", folder / POSTPROCESS_FILE,
                  *sorted(folder.glob("*/model.safetensors"))]
    for path in files:
        if path.is_file():
            digest.update(f"{path.relative_to(model_dir).as_posix()}:{sha256_file(path)};".encode())
    return digest.hexdigest()[:24]


def export_network(model: nn.Module, patch_size: Sequence[int], path: Path, fmt: str,
                   in_channels: int = 4) -> None:
    """Write one network as a graph with dynamic batch and spatial sizes.

    Args:
        model: eval-mode network ``(B, C, X, Y, Z) -> (B, K, X, Y, Z)``.
        patch_size: the tile traced (any valid size: the graph is shape-generic).
        path: output file (``.onnx``, ``.pt`` or ``.xml``; OpenVINO also writes the ``.bin``).
        fmt: one of :data:`GRAPH_FORMATS`.
        in_channels: input channels.
    """
    model = model.eval().float()
    dummy = torch.zeros(1, in_channels, *(int(p) for p in patch_size))
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # tracer and deprecation warnings: the export is checked by the tests
        if fmt == "torchscript":
            torch.jit.trace(model, dummy, check_trace=False).save(str(path))
            return
        onnx_path = path if fmt == "onnx" else path.with_suffix(".onnx")
        axes = {0: "batch", 2: "x", 3: "y", 4: "z"}
        torch.onnx.export(model, (dummy,), str(onnx_path), input_names=[INPUT], output_names=[OUTPUT],
                          dynamic_axes={INPUT: axes, OUTPUT: axes}, opset_version=OPSET, dynamo=False)
    if fmt == "openvino":
        ov = import_backend("openvino")
        # Core.read_model, not convert_model: the converter tool reports telemetry
        ov.save_model(ov.Core().read_model(str(onnx_path)), str(path), compress_to_fp16=False)
        onnx_path.unlink()


def _preprocessing(run: RunBundle, name: str) -> dict[str, Any]:
    """The stage's preprocessing as its run records it (refused when this code would do otherwise)."""
    from glioseg.artifacts.preprocess_record import stage_preprocessing
    from glioseg.preprocessing.normalize import PREPROCESS_VERSION

    spacings = {s.name: s.spacing_mm for s in run.config.stages}
    spec = stage_preprocessing(run.info, name, run.stages[name].spacing_mm, spacings, str(run.run_dir))
    return {"version": PREPROCESS_VERSION, "spacing_mm": spec.spacing_mm, "percentiles": list(spec.percentiles),
            "margin": spec.margin, "mask": "nonzero in any channel", "crop": "mask bounding box + margin voxels",
            "normalise": "clip to the percentiles inside the mask, then z-score inside the mask; 0 outside",
            "padding": "zeros"}


def _stage_entry(name: str, runs: list[tuple[int | None, RunBundle]], fmt: str) -> dict[str, Any]:
    """``model.json``'s description of one stage; its networks' files are named by fold."""
    first = runs[0][1].stages[name]
    records = [_preprocessing(run, name) for _, run in runs if name in run.stages]
    if any(r != records[0] for r in records):
        raise ExportError(f"stage {name}: the folds were preprocessed differently; export them one by one")
    nets = [{"file": f"{name}/{'model' if fold is None else f'fold_{fold}'}{SUFFIX[fmt]}", "fold": fold,
             "weights_sha256": sha256_file(run.run_dir / name / "model.safetensors")}
            for fold, run in runs if name in run.stages]
    return {"spacing_mm": first.spacing_mm, "patch_size": list(first.patch_size), "target": first.target,
            "activation": "sigmoid" if first.target == "regions" else "softmax",
            "divisor": int(getattr(first.model, "divisor", 16)),
            "out_channels": int(getattr(first.model, "out_channels", 3)), "preprocessing": records[0],
            "networks": nets}


def _spec(model_dir: Path, runs: list[tuple[int | None, RunBundle]], fmt: str) -> dict[str, Any]:
    """The whole ``model.json``."""
    from glioseg import __version__
    from glioseg.data.nifti import MODALITIES

    info = runs[0][1].info
    tuned = model_dir if (model_dir / POSTPROCESS_FILE).is_file() else runs[0][1].run_dir
    names = [n for n in runs[0][1].stages]
    return {"format": EXPORT_FORMAT, "graph_format": fmt, "glioseg_version": __version__,
            "exporter_version": EXPORTER_VERSION,
            "source": model_dir.name, "label_scheme": runs[0][1].label_scheme,
            "normalisation": info.get("normalisation"),
            "postprocess": load_postprocess(tuned, _finest_spacing(runs[0][1])).to_dict(),
            "cascade": {"order": names, "margin_mm": DEFAULT_MARGIN_MM},
            "input": {"name": INPUT, "channels": list(MODALITIES), "dtype": "float32",
                      "shape": "(B, 4, X, Y, Z); X, Y, Z multiples of the stage's divisor"},
            "output": {"name": OUTPUT, "dtype": "float32", "shape": "(B, K, X, Y, Z) logits"},
            "opset": OPSET if fmt != "torchscript" else None,
            "stages": {n: _stage_entry(n, runs, fmt) for n in names}}


def _finest_spacing(run: RunBundle) -> float | None:
    """Spacing of the run's full-resolution stage: the grid ``tune-postprocess`` tuned on."""
    spacings = [s.spacing_mm for s in run.config.stages if s.name in run.stages]
    return None if not spacings or None in spacings else min(s for s in spacings if s is not None)


def write_export_manifest(folder: Path) -> dict[str, Any]:
    """sha256 and size of every file of an export folder, into its ``manifest.json``."""
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.name != MANIFEST)
    manifest = {"format": EXPORT_FORMAT, "files": {p.relative_to(folder).as_posix(): sha256_file(p) for p in files},
                "sizes": {p.relative_to(folder).as_posix(): p.stat().st_size for p in files}}
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def check_export_target(out: Path, fmt: str, overwrite: bool = False) -> None:
    """Refuse an unknown format or an existing ``out`` (without ``overwrite``), before any work.

    Raises:
        ExportError: the problem in one line, with the fix.
    """
    if fmt not in GRAPH_FORMATS:
        raise ExportError(f"unknown export format {fmt!r}; choose one of {['zip', *GRAPH_FORMATS]}")
    if out.exists() and not overwrite:
        raise ExportError(f"{out}: already exists; choose a new folder or pass --overwrite")
    if out.exists() and not out.is_dir():
        raise ExportError(f"{out}: is a file; an export is a folder, choose another path")


def check_not_input(out: Path, model_dir: Path) -> None:
    """Refuse an export folder that is, holds or lies inside the model folder (never write over an input).

    Raises:
        ExportError: names both folders.
    """
    a, b = out.resolve(), model_dir.resolve()
    if a == b or b in a.parents or a in b.parents:
        raise ExportError(f"{out}: is, holds or lies inside the model folder {model_dir}; choose a folder elsewhere")


def export_graphs(model: str | Path | None, out: Path | str, fmt: str = "onnx", overwrite: bool = False,
                  folds: Sequence[int] | None = None) -> Path:
    """Export every stage and fold of a model as graphs plus ``model.json`` and ``manifest.json``.

    Args:
        model: a run directory, a bundle folder, an installed model's name, or ``default``/None
            (the shipped model).
        out: export folder to create (atomically).
        fmt: ``onnx``, ``torchscript`` or ``openvino``.
        overwrite: replace an existing ``out``.
        folds: folds to export (all by default).

    Returns:
        ``out``.

    Raises:
        ExportError: unknown format, ``out`` exists, or a backend package is missing.
        glioseg.artifacts.preprocess_record.PreprocessingMismatch: the run's preprocessing is not this code's.
        BundleError, FileNotFoundError, glioseg.artifacts.weights.TrainError: the model cannot be loaded.
    """
    out = Path(out)
    check_export_target(out, fmt, overwrite)
    if fmt == "openvino":
        import_backend("openvino")
    model_dir = resolve_export_source(model)
    check_not_input(out, model_dir)
    runs = load_folds(model_dir, folds)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        spec = _spec(model_dir, runs, fmt)
        for name, entry in spec["stages"].items():
            (tmp / name).mkdir()
            nets = [run.stages[name].model for _, run in runs if name in run.stages]
            for net, item in zip(nets, entry["networks"], strict=True):
                export_network(net, entry["patch_size"], tmp / item["file"], fmt)
        (tmp / SPEC_FILE).write_text(json.dumps(spec, indent=2) + "\n")
        write_export_manifest(tmp)
        return publish_folder(tmp, out, overwrite)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def publish_folder(tmp: Path, out: Path, overwrite: bool) -> Path:
    """Rename a finished temporary folder to ``out`` (replacing it when ``overwrite``).

    Raises:
        ExportError: ``out`` appeared meanwhile and ``overwrite`` is off.
    """
    old = out.with_name(f".{out.name}.old")
    if out.exists():
        if not overwrite:
            raise ExportError(f"{out}: already exists; choose a new folder or pass --overwrite")
        shutil.rmtree(old, ignore_errors=True)
        out.rename(old)
    try:
        tmp.rename(out)
    except OSError as exc:
        if old.exists() and not out.exists():
            old.rename(out)  # put the previous export back: never leave nothing
        raise ExportError(f"{out}: cannot create it ({one_line_os(exc)}); choose another folder") from exc
    shutil.rmtree(old, ignore_errors=True)
    return out


def one_line_os(exc: OSError) -> str:
    """``strerror`` of an OSError, else its text."""
    return str(exc.strerror or exc)
