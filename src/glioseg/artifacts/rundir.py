"""The run directory: resolved config, run.json, split, and loading a run for inference.

::

    RUN/config.yaml                 resolved TrainConfig
    RUN/run.json                    label scheme, preprocessing/normalisation, split, versions, stages
    RUN/splits.json                 the split used (kept so that every stage and resume agree)
    RUN/<stage>/model.safetensors   best weights (by mean validation Dice)
    RUN/<stage>/last.safetensors    latest weights; state.pt: optimiser, progress, RNG
    RUN/<stage>/log.csv, curve.png, tb/   per-epoch log and curve (glioseg.training.curves), TensorBoard

``glioseg train --all-folds`` makes one such run per fold in ``RUN/fold_<k>/``. ``glioseg train
--fold all`` trains on every preprocessed case with no validation: ``splits.json`` holds one split
``{"fold": "all", "train": [every case], "val": []}`` (a resumed run keeps that list), and
``model.safetensors`` is the last epoch's weights.
"""

from __future__ import annotations

import fcntl
import json
import platform
import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from torch import nn

from glioseg.artifacts.resume import ConfigChange, check_resume
from glioseg.artifacts.weights import TrainError, load_weights
from glioseg.config import StageConfig, TrainConfig, load_config, save_config, to_dict
from glioseg.labels import output_channels
from glioseg.networks import build_model
from glioseg.runtime import hardware_summary, select_device
from glioseg.utils import atomic_write

RUN_FORMAT = "glioseg-run/1"
FOLD_ALL = "all"  # --fold all: train on every case, validate on none
NO_VALIDATION = "none: --fold all trains on every case; model.safetensors is the last epoch"


@dataclass
class StageModel:
    """A trained stage ready for inference: ``model`` in eval mode, on the CPU.

    Attributes:
        patch_size: sliding-window tile for inference: the tile the run recorded in ``run.json``
            (the one its validation predicted with: the whole padded case for a patch-trained stage,
            see :func:`glioseg.training.validation.validation_window`), else the stage's
            ``val_window`` when set, else its training patch.
        target: ``regions`` (sigmoid WT/TC/ET) or ``labels`` (softmax BG/NCR/ED/ET).
    """

    name: str
    model: nn.Module
    spacing_mm: float | None
    patch_size: tuple[int, int, int]
    target: str
    config: StageConfig


@dataclass
class RunBundle:
    """Everything prediction needs from a run directory."""

    run_dir: Path
    config: TrainConfig
    info: dict[str, Any]
    stages: dict[str, StageModel]

    @property
    def label_scheme(self) -> str | None:
        """Label scheme of the training segmentations (for writing predictions)."""
        return self.info.get("label_scheme")


def build_stage_model(stage: StageConfig) -> nn.Module:
    """The network of a stage (output channels from its target)."""
    return build_model(stage.model.name, **stage.model.kwargs(output_channels(stage.target)))


def _update_run_json(run_dir: Path, update: Any) -> dict[str, Any]:
    """Read-modify-write ``run.json`` under a file lock (stages may train concurrently)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    with (run_dir / ".run.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        path = run_dir / "run.json"
        info = json.loads(path.read_text()) if path.is_file() else {}
        update(info)
        text = json.dumps(info, indent=1)
        atomic_write(path, lambda tmp: tmp.write_text(text))
    return info


def record_stage(run_dir: Path, stage: StageConfig, history: list[dict[str, float]], best_epoch: int,
                 seconds: float, window: Sequence[int] | None = None) -> None:
    """Store a stage's inference settings and best validation scores in ``run.json``.

    Args:
        run_dir: the run directory.
        stage: the stage's config.
        history: one row per finished epoch (``epoch``, losses, ``dice_*`` when validated).
        best_epoch: the epoch of best mean validation Dice (-1: no validation); it is the epoch of
            ``model.safetensors`` only with ``model_selection: best`` (else the latest epoch is).
        seconds: training wall time so far.
        window: the tile validation used, recorded as the inference ``patch_size`` (default:
            ``val_window``, else ``patch_size``).
    """
    best = next((r for r in history if r["epoch"] == best_epoch), {})
    chosen_by_validation = best_epoch >= 0 and stage.model_selection == "best"

    def update(info: dict[str, Any]) -> None:
        info.setdefault("stages", {})[stage.name] = {
            "spacing_mm": stage.spacing_mm, "patch_size": list(window or stage.val_window or stage.patch_size),
            "target": stage.target, "model": to_dict(stage.model), "cascade_from": stage.cascade_from,
            "epochs_done": len(history), "epochs": stage.epochs, "train_seconds": round(seconds, 1),
            "best_epoch": best_epoch, "best_validation": {k: v for k, v in best.items() if k.startswith("dice_")},
            "model_epoch": best_epoch if chosen_by_validation else len(history) - 1,
            "model_selection": "best mean validation Dice" if chosen_by_validation else
            "last epoch" if best_epoch >= 0 else "last epoch (no validation)",
        }
        if len(history) >= stage.epochs:
            info["finished"] = _now()  # the latest stage to finish

    _update_run_json(run_dir, update)


def prepare_run(config: TrainConfig, preprocessed: Path | str, run_dir: Path | str, split: dict[str, Any],
                stage: str | None = None, resume: bool = True) -> list[ConfigChange]:
    """Check the config against the run's, then write ``splits.json`` (when new), ``config.yaml`` and
    the run-wide part of ``run.json`` (main process only).

    Args:
        config: the resolved config.
        preprocessed: the preprocessed dataset (its ``dataset.json`` gives label scheme and normalisation).
        run_dir: the run directory (created).
        split: :func:`resolve_split`'s result.
        stage: the stage about to be trained (the first when None).
        resume: False when that stage starts over (see :mod:`glioseg.artifacts.resume`).

    Returns:
        The changes to the run's saved settings that were allowed; they are appended to
        ``run.json`` under ``config_changes``.

    Raises:
        ConfigError: changes that would alter trained work (nothing is written).
    """
    from glioseg.preprocessing.splits import save_splits

    run_dir, stage = Path(run_dir), stage or config.stage().name
    changes = check_resume(run_dir, config, stage, resume)
    if not (run_dir / "splits.json").is_file():
        save_splits(split["splits"], run_dir / "splits.json")
    save_config(config, run_dir / "config.yaml")
    run_wide = _run_wide_info(config, Path(preprocessed), {k: v for k, v in split.items() if k != "splits"})

    def update(info: dict[str, Any]) -> None:
        info.update(run_wide)
        info.setdefault("started", _now())
        info["hardware"] = hardware_summary()  # of the latest session; a resumed run may move
        info.setdefault("stages", {})
        if changes:
            info.setdefault("config_changes", []).append({
                "time": _now(), "stage": stage,
                "resume": resume, "changes": [str(c) for c in changes]})

    _update_run_json(run_dir, update)
    return changes


def _run_wide_info(config: TrainConfig, root: Path, split: dict[str, Any]) -> dict[str, Any]:
    """The run-wide fields of ``run.json``: preset, label scheme, normalisation, split, versions."""
    dataset_json = root / "dataset.json"
    preprocessing = json.loads(dataset_json.read_text()) if dataset_json.is_file() else {}
    versions = {"glioseg": _version(), "torch": torch.__version__, "python": platform.python_version()}
    scheme = (preprocessing.get("label_schemes") or [None])[0]
    return {"format": RUN_FORMAT, "preset": config.preset, "label_scheme": scheme,
            "normalisation": {"method": "z-score inside the brain after percentile clipping",
                              **preprocessing.get("params", {})},
            "preprocessed": str(root.resolve()), "split": split, "versions": versions,
            "stage_order": [s.name for s in config.stages]}


def record_command(run_dir: Path | str, argv: Sequence[str]) -> None:
    """Append one training command to ``run.json`` (``commands``; ``command`` keeps the first).

    Args:
        run_dir: an existing run directory (nothing is written without its ``run.json``).
        argv: the command line as the shell received it, program name first.
    """
    run_dir = Path(run_dir)
    if not (run_dir / "run.json").is_file():
        return
    line = shlex.join(argv)

    def update(info: dict[str, Any]) -> None:
        info.setdefault("command", line)
        info.setdefault("commands", []).append({"time": _now(), "command": line})

    _update_run_json(run_dir, update)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _version() -> str:
    from glioseg import __version__

    return __version__


def parse_fold(text: str | int | None) -> int | str | None:
    """A ``--fold`` value: None, a fold number >= 0, or :data:`FOLD_ALL`.

    Raises:
        ValueError: anything else (the message says what is accepted).
    """
    if text is None or (isinstance(text, int) and text >= 0) or text == FOLD_ALL:
        return text
    if isinstance(text, str) and text.strip().isdigit():
        return int(text)
    raise ValueError(f"--fold must be a fold number (0, 1, ...) or '{FOLD_ALL}' (train on every case), got {text!r}")


def resolve_split(preprocessed: Path | str, run_dir: Path | str, config: TrainConfig,
                  splits_path: Path | str | None = None, fold: int | str | None = None) -> dict[str, Any]:
    """The train/val case lists of a run: from ``splits_path``, the run's own ``splits.json``,
    ``PREPROCESSED/splits.json`` (``glioseg split``), or new splits (``config.folds`` folds when
    ``fold`` is given, else one ``val_fraction`` split). ``fold="all"`` trains on every case of
    ``preprocessed`` (those the run recorded, when it resumes) and validates on none.

    Returns:
        ``{"fold", "train", "val", "splits", "splits_file"}`` (``splits``: the whole splits file;
        ``"validation"`` too for ``fold="all"``).

    Raises:
        TrainError: no preprocessed cases, split cases that are not preprocessed, a ``--fold all``
            run given fold splits (or the other way round), or ``splits_path`` with ``--fold all``.
        ValueError: ``fold`` is neither a fold number nor ``"all"``.
    """
    from glioseg.preprocessing.cache import list_preprocessed
    from glioseg.preprocessing.splits import get_fold

    fold = parse_fold(fold)
    cases = list_preprocessed(preprocessed)
    if not cases:
        raise TrainError(f"{preprocessed}: no preprocessed cases; run `glioseg preprocess` first")
    own = Path(run_dir) / "splits.json"
    if fold == FOLD_ALL:
        return _split_all(cases, preprocessed, own, config, splits_path)
    splits, splits_path = _find_splits(cases, splits_path, [own, Path(preprocessed) / "splits.json"], config,
                                       fold is not None)
    if splits.get("folds") == FOLD_ALL:
        raise TrainError(f"{splits_path}: this run trains on every case (--fold all); give --fold all, or "
                         "train folds into a new run directory")
    train, val = get_fold(splits, int(fold or 0))
    _check_preprocessed(preprocessed, train + val, cases)
    return {"fold": fold or 0, "train": train, "val": val, "splits": splits,
            "splits_file": str(splits_path or own)}


def _check_preprocessed(preprocessed: Path | str, ids: list[str], cases: list[str]) -> None:
    """TrainError naming the split's cases that ``preprocessed`` lacks."""
    missing = sorted(set(ids) - set(cases))
    if missing:
        raise TrainError(f"{preprocessed}: split cases {missing[:5]} are not preprocessed; preprocess "
                         "them or make the splits from this folder")


def _split_all(cases: list[str], preprocessed: Path | str, own: Path, config: TrainConfig,
               splits_path: Path | str | None) -> dict[str, Any]:
    """:func:`resolve_split` for ``--fold all``: every case (the run's recorded list when resuming), no val."""
    from glioseg.preprocessing.splits import load_splits

    if splits_path is not None:
        raise TrainError(f"--splits {splits_path}: --fold all trains on every preprocessed case; leave out "
                         "--splits (or preprocess only the cases to train on)")
    if own.is_file():
        recorded = load_splits(own)
        if recorded.get("folds") != FOLD_ALL:
            raise TrainError(f"{own}: this run trains folds of these splits, not every case; train --fold all "
                             "into a new run directory")
        _check_preprocessed(preprocessed, list(recorded["splits"][0]["train"]), cases)
        cases = list(recorded["splits"][0]["train"])
    splits = {"folds": FOLD_ALL, "seed": config.seed, "n_cases": len(cases),
              "splits": [{"fold": FOLD_ALL, "train": cases, "val": []}]}
    return {"fold": FOLD_ALL, "train": cases, "val": [], "splits": splits, "splits_file": str(own),
            "validation": NO_VALIDATION}


def _find_splits(cases: list[str], given: Path | str | None, candidates: list[Path], config: TrainConfig,
                 k_fold: bool) -> tuple[dict[str, Any], Path | str | None]:
    """Splits from ``given``, else from the first existing of ``candidates``, else new ones of ``cases``.

    Returns:
        The splits and the file they came from (None when new).
    """
    from glioseg.preprocessing.splits import load_splits, make_splits

    path = given if given is not None else next((p for p in candidates if p.is_file()), None)
    if path is not None:
        return load_splits(path), path
    # a small dataset gets at least one validation case
    return make_splits(cases, config.folds if k_fold else 1, config.seed,
                       val_fraction=max(config.val_fraction, 1.0 / len(cases))), None


def load_run(run_dir: Path | str, device: str = "cpu") -> RunBundle:
    """Load the trained stages of a run directory (or bundle) for inference.

    Args:
        run_dir: folder with ``config.yaml``, ``run.json`` and ``<stage>/model.safetensors``.
        device: where to put the networks.

    Returns:
        The bundle; ``stages`` holds every stage that has weights, in the config's order.

    Raises:
        TrainError: missing files or no trained stage.
        glioseg.artifacts.bundles.BundleError: a bundle whose files do not match its manifest.
    """
    from glioseg.artifacts.bundles import MANIFEST, verify_bundle

    run_dir = Path(run_dir)
    for name in ("config.yaml", "run.json"):
        if not (run_dir / name).is_file():
            raise TrainError(f"{run_dir}: {name} missing; give a run directory made by `glioseg train`")
    if (run_dir / MANIFEST).is_file():
        verify_bundle(run_dir)  # a bundle: every file must match its sha256 before anything is loaded
    config = load_config(run_dir / "config.yaml")
    info = json.loads((run_dir / "run.json").read_text())
    stages = {s.name: _load_stage(run_dir, s, device, info) for s in config.stages
              if (run_dir / s.name / "model.safetensors").is_file()}
    if not stages:
        raise TrainError(f"{run_dir}: no stage has model.safetensors yet; train one with `glioseg train`")
    return RunBundle(run_dir, config, info, stages)


def _load_stage(run_dir: Path, stage: StageConfig, device: str, info: dict[str, Any]) -> StageModel:
    """One stage's network with its ``model.safetensors``, in eval mode on ``device``.

    The inference tile is the one the run recorded (what validation predicted with), so that
    ``glioseg predict`` scores as the training log did; runs without a record fall back to the config.
    """
    model = build_stage_model(stage)
    load_weights(model, run_dir / stage.name / "model.safetensors")
    model.to(select_device(device)).eval()
    recorded = (info.get("stages") or {}).get(stage.name, {}).get("patch_size")
    tile = tuple(int(p) for p in recorded) if recorded else tuple(stage.val_window or stage.patch_size)
    return StageModel(stage.name, model, stage.spacing_mm, tile, stage.target, stage)  # type: ignore[arg-type]
