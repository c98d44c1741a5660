"""Validation probabilities for tuning post-processing (:func:`glioseg.inference.postprocess.tune_postprocess`).

Each fold's run predicts its own validation cases on the preprocessed grid of its
full-resolution stage; the probabilities are cached next to the run, keyed by the stage's weights
and the predictor options, so that tuning again (other candidates, thresholds) costs no inference
and re-training in the same folder never reuses stale probabilities.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from glioseg.artifacts.rundir import RunBundle, load_run
from glioseg.inference.predictor import Predictor, Stage, run_folders
from glioseg.preprocessing.cache import load_preprocessed
from glioseg.preprocessing.normalize import PreprocessedCase
from glioseg.preprocessing.splits import get_fold, load_splits
from glioseg.utils import atomic_write

VALIDATION_DIR = "validation_probabilities"


def validation_cases(bundle: RunBundle, splits_path: Path | str | None = None) -> list[str]:
    """Validation case IDs of a loaded run: from ``splits_path`` (at the run's fold) or ``run.json``.

    Raises:
        ValueError: the run records no validation cases and no splits file is given.
    """
    split = bundle.info.get("split") or {}
    if splits_path is not None:
        return get_fold(load_splits(splits_path), int(split.get("fold", 0)))[1]
    if not split.get("val"):
        raise ValueError(f"{bundle.run_dir}: run.json records no validation cases; pass --splits SPLITS_JSON")
    return list(split["val"])


def validation_probabilities(run_dir: Path | str, preprocessed: Path | str, splits_path: Path | str | None = None,
                             predictor_options: dict[str, Any] | None = None,
                             on_case: Callable[[str], object] | None = None) -> list[tuple[np.ndarray, np.ndarray]]:
    """Predict (or reuse) each fold's validation cases on the preprocessed grid.

    Probabilities are cached as float16 ``RUN/<fold run>/validation_probabilities/<key>/<ID>.npy``,
    ``key`` a digest of the stage's weights and the predictor options.

    Args:
        run_dir: run directory (or folder of ``fold_<k>`` runs).
        preprocessed: preprocessed dataset at the full-resolution stage's spacing.
        splits_path: splits file overriding the runs' recorded splits.
        predictor_options: options of :class:`Predictor` (device, precision, tta, ...).
        on_case: called with each case ID as it is done.

    Returns:
        ``(probabilities float16 (K, x, y, z) memory-mapped, truth uint8 (x, y, z))`` pairs.

    Raises:
        ValueError: spacing mismatch, missing labels, or no validation cases.
    """
    pairs = []
    for folder in run_folders(Path(run_dir)):
        pairs += _fold_pairs(folder, preprocessed, splits_path, predictor_options, on_case)
    if not pairs:
        raise ValueError(f"{run_dir}: no validation cases to tune on")
    return pairs


def _fold_pairs(folder: Path, preprocessed: Path | str, splits_path: Path | str | None,
                predictor_options: dict[str, Any] | None,
                on_case: Callable[[str], object] | None) -> list[tuple[np.ndarray, np.ndarray]]:
    """``(probabilities, truth)`` of one fold run's validation cases, predicted once and cached."""
    bundle = load_run(folder)
    predictor = Predictor.from_run(bundle, **{"device": "cpu", **(predictor_options or {}), "cascade": False})
    stage = predictor.full_stage
    cache = folder / VALIDATION_DIR / _cache_key(folder / stage.name / "model.safetensors", predictor_options)
    pairs = []
    for case_id in validation_cases(bundle, splits_path):
        pc = load_preprocessed(preprocessed, case_id)
        _check_tuning_case(pc, stage, preprocessed)
        path = cache / f"{case_id}.npy"
        if not path.is_file():
            _save_npy(path, predictor.predict_preprocessed(np.asarray(pc.image), stage.name).astype(np.float16))
        pairs.append((np.load(path, mmap_mode="r"), np.asarray(pc.label)))
        if on_case is not None:
            on_case(case_id)
    return pairs


def _cache_key(weights: Path, predictor_options: dict[str, Any] | None) -> str:
    """Digest of the weights file and the predictor options that shape the probabilities."""
    from glioseg.artifacts.bundles import sha256_file

    options = json.dumps(predictor_options or {}, sort_keys=True, default=str)
    return hashlib.sha256(f"{sha256_file(weights)}|{options}".encode()).hexdigest()[:16]


def _check_tuning_case(pc: PreprocessedCase, stage: Stage, root: Path | str) -> None:
    if pc.label is None:
        raise ValueError(f"case {pc.case_id} [{Path(root) / pc.case_id}]: no label; tuning needs the ground truth")
    target = pc.meta.get("target_spacing")
    if stage.spacing_mm is not None and (target is None or abs(float(target) - stage.spacing_mm) > 1e-3):
        raise ValueError(f"case {pc.case_id} [{Path(root) / pc.case_id}]: preprocessed at spacing {target} mm, "
                         f"but stage {stage.name} expects {stage.spacing_mm} mm; preprocess with "
                         f"--spacing {stage.spacing_mm}")


def _save_npy(path: Path, array: np.ndarray) -> Path:
    return atomic_write(path, lambda tmp: np.save(tmp, array))
