"""Making a bundle from trained runs: one run, or a fold ensemble, with a provenance that is true.

A single run becomes a flat bundle (``config.yaml``, ``run.json``, ``<stage>/model.safetensors``,
``postprocess.json``, ``manifest.json``). A folder of ``fold_<k>/`` runs (``glioseg train
--all-folds``) becomes a *fold-ensemble bundle*::

    BUNDLE/manifest.json                      sha256 and size of every member below
    BUNDLE/postprocess.json                   tuned on all folds (copied from the runs' folder, if there)
    BUNDLE/fold_<k>/config.yaml, run.json, <stage>/model.safetensors

which :class:`glioseg.inference.predictor.Predictor` loads as the ensemble of its folds after
verifying every member (:func:`glioseg.artifacts.folds.run_folders`). Weights are stored as float16
and their total is capped (:data:`MAX_WEIGHTS_BYTES`, 100 MB); a run whose preprocessing record is
missing or not what this code does is refused (:mod:`glioseg.artifacts.preprocess_record`).

Provenance is read from what the runs record (cases, fold, training seconds and epochs, versions,
config hashes, config changes); what they do not record (training command, start and end times,
hardware) is ``null`` unless the caller states it, never guessed.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from glioseg.artifacts.bundles import BundleError, sha256_file, verify_bundle, write_manifest
from glioseg.artifacts.folds import fold_runs
from glioseg.artifacts.preprocess_record import PreprocessingMismatch, stage_preprocessing
from glioseg.config import ConfigError, load_config, to_dict

MAX_WEIGHTS_BYTES = 100 * 1000**2
RUNTIME_KEYS = ("device", "threads", "num_workers", "checkpoint_minutes")  # may change on resume; not the recipe
UNRECORDED = ("command", "started", "finished", "hardware")  # run.json fields that older runs lack


def recipe_sha256(config_path: Path) -> str:
    """sha256 of a run's resolved config without the runtime knobs: equal for the folds of one recipe."""
    config = to_dict(load_config(config_path))
    recipe = {k: v for k, v in config.items() if k not in RUNTIME_KEYS}
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()


def run_provenance(run_dir: Path, info: dict[str, Any], stages: Sequence[str]) -> dict[str, Any]:
    """What one run records about how it was made (unrecorded fields are None)."""
    split = info.get("split") or {}
    recorded = info.get("stages") or {}
    return {
        "fold": split.get("fold"), "train_cases": split.get("train"), "val_cases": split.get("val"),
        "config_sha256": sha256_file(run_dir / "config.yaml"), "recipe_sha256": recipe_sha256(run_dir / "config.yaml"),
        "train_seconds": {s: recorded.get(s, {}).get("train_seconds") for s in stages},
        "epochs_done": {s: recorded.get(s, {}).get("epochs_done") for s in stages},
        "versions": info.get("versions"), "config_changes": info.get("config_changes", []),
        **{key: info.get(key) for key in UNRECORDED},
    }


def _members(run_dir: Path, folds: Sequence[int] | None) -> list[tuple[str, Path]]:
    """``("", run)`` for a single run, else ``("fold_<k>", run)`` per fold.

    Raises:
        BundleError: no run, or a requested fold is missing.
    """
    if (run_dir / "run.json").is_file():
        if folds:
            raise BundleError(f"{run_dir}: a single run (no fold_<k>/ sub-runs); drop the folds")
        return [("", run_dir)]
    found = fold_runs(run_dir)
    wanted = list(folds) if folds else sorted(found)
    missing = [f for f in wanted if f not in found]
    if not found or missing:
        raise BundleError(f"{run_dir}: no run.json and folds {missing or 'none'} missing (found {sorted(found)}); "
                          "give a run directory or a folder of fold_<k> runs made by `glioseg train`")
    return [(found[f].name, found[f]) for f in wanted]


def _check_member(run: Path, stages: Sequence[str] | None) -> tuple[dict[str, Any], list[str]]:
    """The run's ``run.json`` and the stages to ship; its preprocessing must be this code's.

    Raises:
        BundleError: missing files, no trained stage, or a preprocessing record that inference would refuse.
    """
    for name in ("config.yaml", "run.json"):
        if not (run / name).is_file():
            raise BundleError(f"{run}: {name} missing; give a run directory made by `glioseg train`")
    info = json.loads((run / "run.json").read_text())
    names = list(stages or [s for s in info.get("stage_order", []) if (run / s / "model.safetensors").is_file()])
    missing = [s for s in names if not (run / s / "model.safetensors").is_file()]
    if not names or missing:
        raise BundleError(f"{run}: no model.safetensors for stage(s) {missing or 'any'}; train first")
    try:
        spacings = {s.name: s.spacing_mm for s in load_config(run / "config.yaml").stages}
    except ConfigError as exc:
        raise BundleError(f"cannot ship: {exc}") from exc
    for name in names:
        if name not in spacings:
            raise BundleError(f"{run}: stage {name!r} is not in its config.yaml (stages: {sorted(spacings)})")
        try:
            stage_preprocessing(info, name, spacings[name], spacings, str(run))
        except PreprocessingMismatch as exc:
            raise BundleError(f"cannot ship: {exc}") from exc
    return info, names


def _strip_local_paths(info: dict[str, Any]) -> dict[str, Any]:
    """run.json without the trainer's machine-local paths (they mean nothing elsewhere)."""
    info = json.loads(json.dumps(info))
    info.pop("preprocessed", None)
    if isinstance(info.get("split"), dict):
        info["split"].pop("splits_file", None)
    return info


def _copy_weights(src: Path, dst: Path, fp16: bool) -> None:
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    tensors = load_file(str(src))
    with safe_open(str(src), framework="pt") as fh:
        metadata = dict(fh.metadata() or {})
    if fp16:
        tensors = {k: v.half() if v.is_floating_point() else v for k, v in tensors.items()}
        metadata["storage"] = "fp16"
    dst.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(dst), metadata=metadata)


def _copy_run(run: Path, out: Path, info: dict[str, Any], stages: Sequence[str], fp16: bool) -> None:
    """What prediction needs from one run: config.yaml, run.json (no local paths), best weights."""
    out.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(run / "config.yaml", out / "config.yaml")
    (out / "run.json").write_text(json.dumps(_strip_local_paths(info), indent=1) + "\n")
    for name in stages:
        _copy_weights(run / name / "model.safetensors", out / name / "model.safetensors", fp16)


def _check_size(folder: Path, limit: int, where: Path) -> int:
    """Total bytes of the weights; BundleError when above ``limit``."""
    total = sum(p.stat().st_size for p in folder.rglob("*.safetensors"))
    if total > limit:
        raise BundleError(f"{where}: the weights take {total / 1e6:.2f} MB, over the {limit / 1e6:g} MB limit; "
                          "ship fewer folds or stages, or smaller networks")
    return total


def _manifest_fields(members: list[tuple[str, Path, dict[str, Any], list[str]]], total: int) -> dict[str, Any]:
    """label_scheme, normalisation, stages, ensemble and provenance of the manifest."""
    first_info, names = members[0][2], members[0][3]
    runs = [{"member": rel or ".", **run_provenance(run, info, names)} for rel, run, info, names in members]
    cases = sorted({c for r in runs for c in (r["train_cases"] or []) + (r["val_cases"] or [])})
    fields: dict[str, Any] = {
        "label_scheme": first_info.get("label_scheme"), "normalisation": first_info.get("normalisation"),
        "stages": {n: (first_info.get("stages") or {}).get(n, {}) for n in names},
        "provenance": {"runs": runs, "cases": cases, "n_cases": len(cases), "weights_bytes": total,
                       "bundled": datetime.now(timezone.utc).isoformat(timespec="seconds")},
    }
    if members[0][0]:
        fields["ensemble"] = {"members": [rel for rel, *_ in members], "folds": [r["fold"] for r in runs]}
    return fields


def make_bundle(run_dir: Path | str, out_dir: Path | str, info: dict[str, Any], fp16: bool = True,
                stages: list[str] | None = None, folds: Sequence[int] | None = None,
                max_weights_bytes: int = MAX_WEIGHTS_BYTES) -> dict[str, Any]:
    """Turn a run directory, or a folder of ``fold_<k>`` runs, into a bundle (see the module docstring).

    Args:
        run_dir: a finished ``glioseg train`` run, or a folder of fold runs (a fold ensemble).
        out_dir: bundle folder to create (must not exist or be empty); written only when complete.
        info: manifest fields (name, description, validation, and ``provenance`` fields the runs
            do not record, e.g. the training command); ``provenance`` is merged into the recorded one.
        fp16: store weights as float16 (halves the size; loaded back into float32 networks).
        stages: stages to include (default: every stage with ``model.safetensors``).
        folds: fold numbers to include (default: all found).
        max_weights_bytes: refuse when the weights take more.

    Returns:
        The manifest.

    Raises:
        BundleError: no trained stage, folds that are missing or trained with another recipe,
            a preprocessing record inference would refuse, weights over the limit, or an output
            folder that is not empty.
    """
    run_dir, out_dir = Path(run_dir), Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()):
        raise BundleError(f"{out_dir}: exists and is not empty; choose a new folder")
    members = [(rel, run, *_check_member(run, stages)) for rel, run in _members(run_dir, folds)]
    _check_same_recipe(members)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        tmp.chmod(0o755)  # mkdtemp's 0700 would make an installed bundle unreadable to other users
        for rel, run, run_info, names in members:
            _copy_run(run, tmp / rel if rel else tmp, run_info, names, fp16)
        if (run_dir / "postprocess.json").is_file():  # a fold ensemble: the settings tuned on all folds
            shutil.copyfile(run_dir / "postprocess.json", tmp / "postprocess.json")
        total = _check_size(tmp, max_weights_bytes, run_dir)
        fields = _manifest_fields(members, total)
        extra = dict(info)
        fields["provenance"].update(extra.pop("provenance", None) or {})
        write_manifest(tmp, {**fields, **extra})
        manifest = verify_bundle(tmp, label=str(out_dir))
        if out_dir.exists():
            out_dir.rmdir()
        tmp.rename(out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return manifest


def _check_same_recipe(members: list[tuple[str, Path, dict[str, Any], list[str]]]) -> None:
    """Every fold ships the same stages and was trained with the same recipe (config without runtime knobs)."""
    rel0, run0, _, names0 = members[0]
    recipe0 = recipe_sha256(run0 / "config.yaml")
    for _rel, run, _, names in members[1:]:
        if names != names0:
            raise BundleError(f"{run}: stages {names} differ from {rel0}'s {names0}; an ensemble needs the same stages")
        if recipe_sha256(run / "config.yaml") != recipe0:
            raise BundleError(f"{run}/config.yaml: another recipe than {run0}/config.yaml; an ensemble needs folds "
                              "trained with one config")
