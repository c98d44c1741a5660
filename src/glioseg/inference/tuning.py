"""Choosing the post-processing on validation folds: the validation probabilities, then the search.

Each fold's run predicts its own validation cases on the preprocessed grid of its
full-resolution stage; the probabilities are cached next to the run, keyed by the stage's weights
and the predictor options, so that tuning again (other candidates, thresholds) costs no inference
and re-training in the same folder never reuses stale probabilities. :func:`tune_postprocess` then
chooses the rules of :mod:`glioseg.inference.postprocess` (volumes in mm^3, measured on each case's
own grid) that maximise the mean validation Dice.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from glioseg.artifacts.rundir import RunBundle, load_run
from glioseg.inference.postprocess import (
    REGION_NAMES,
    PostprocessConfig,
    apply_volume_rules,
    remove_small_components,
    voxel_volume,
)
from glioseg.inference.predictor import Predictor, Stage, run_folders
from glioseg.labels import ET, check_target, probabilities_to_labels
from glioseg.preprocessing.cache import load_preprocessed
from glioseg.preprocessing.normalize import PREPROCESS_VERSION, PreprocessedCase
from glioseg.preprocessing.splits import get_fold, load_splits
from glioseg.utils import atomic_write, region_dice

VALIDATION_DIR = "validation_probabilities"
DEFAULT_MIN_ET_MM3: tuple[float, ...] = (0, 100, 250, 500, 1000, 2000, 4000, 8000)
DEFAULT_COMPONENT_MM3: tuple[float, ...] = (0, 50, 100, 250, 500, 1000, 2000)
DEFAULT_THRESHOLD_GRID: tuple[float, ...] = (0.3, 0.4, 0.5, 0.6, 0.7)


class TuningCase(NamedTuple):
    """One validation case for tuning.

    Attributes:
        probabilities: float ``(K, x, y, z)`` (memory-mapped arrays are fine).
        truth: uint8 ``(x, y, z)`` canonical labels on the same grid.
        spacing: voxel size of that grid in mm ``(sx, sy, sz)``.
    """

    probabilities: np.ndarray
    truth: np.ndarray
    spacing: tuple[float, float, float]


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
                             on_case: Callable[[str], object] | None = None) -> list[TuningCase]:
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
        One :class:`TuningCase` per case: probabilities float16 ``(K, x, y, z)`` memory-mapped,
        truth uint8 ``(x, y, z)``, and the preprocessed grid's spacing.

    Raises:
        ValueError: spacing mismatch, missing labels, or no validation cases.
    """
    pairs: list[TuningCase] = []
    for folder in run_folders(Path(run_dir)):
        pairs += _fold_pairs(folder, preprocessed, splits_path, predictor_options, on_case)
    if not pairs:
        raise ValueError(f"{run_dir}: no validation cases to tune on")
    return pairs


def _fold_pairs(folder: Path, preprocessed: Path | str, splits_path: Path | str | None,
                predictor_options: dict[str, Any] | None,
                on_case: Callable[[str], object] | None) -> list[TuningCase]:
    """Probabilities, truth and spacing of one fold run's validation cases, predicted once and cached."""
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
        spacing = tuple(float(v) for v in pc.meta["effective_spacing"])
        pairs.append(TuningCase(np.load(path, mmap_mode="r"), np.asarray(pc.label), spacing))  # type: ignore[arg-type]
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
    spec = stage.preprocessing
    norm = pc.meta.get("normalization") or {}
    made = {"version": pc.meta.get("version"), "percentiles": norm.get("percentiles"),
            "margin": (pc.meta.get("params") or {}).get("margin")}
    wanted = {"version": PREPROCESS_VERSION, "percentiles": list(spec.percentiles) if spec else None,
              "margin": spec.margin if spec else None}
    for key, value in made.items():
        if value is not None and wanted[key] is not None and value != wanted[key]:
            raise ValueError(f"case {pc.case_id} [{Path(root) / pc.case_id}]: preprocessed with {key} {value}, but "
                             f"stage {stage.name} was trained with {wanted[key]}; run `glioseg preprocess` again")


def _save_npy(path: Path, array: np.ndarray) -> Path:
    return atomic_write(path, lambda tmp: np.save(tmp, array))


@dataclass
class TuneResult:
    """Outcome of :func:`tune_postprocess`.

    Attributes:
        config: the chosen settings.
        mean_dice: mean over cases of the WT/TC/ET Dice with the chosen settings, ``(3,)``.
        baseline_dice: the same with default settings (thresholds 0.5, no volume rule).
        min_et_scores: mean Dice (over cases and regions) for each candidate ``min_et_mm3``.
        component_scores: per region, mean Dice for each candidate ``min_component_mm3``.
        n_cases: cases used.
    """

    config: PostprocessConfig
    mean_dice: list[float]
    baseline_dice: list[float]
    min_et_scores: dict[float, float] = field(default_factory=dict)
    component_scores: dict[str, dict[float, float]] = field(default_factory=dict)
    n_cases: int = 0

    def to_dict(self) -> dict[str, Any]:
        """JSON-able report (volumes in mm^3)."""
        data = asdict(self)
        data["config"] = self.config.to_dict()
        data["min_et_scores"] = {f"{k:g}": v for k, v in self.min_et_scores.items()}
        data["component_scores"] = {r: {f"{k:g}": v for k, v in s.items()} for r, s in self.component_scores.items()}
        data["units"] = "mm^3"
        return data


def _threshold_dice(cases: Sequence[TuningCase], target: str, thresholds: Sequence[float]) -> np.ndarray:
    """Mean WT/TC/ET Dice over cases with these thresholds and no volume rule, ``(3,)``."""
    return np.mean([region_dice(probabilities_to_labels(np.asarray(c.probabilities), target, thresholds),
                                np.asarray(c.truth)) for c in cases], axis=0)


def _tune_thresholds(cases: Sequence[TuningCase], grid: Sequence[float]) -> tuple[float, float, float]:
    """Coordinate ascent over the three region thresholds (WT, then TC, then ET)."""
    best = PostprocessConfig().thresholds
    best_score = float(_threshold_dice(cases, "regions", best).mean())
    for region in range(3):
        for value in grid:
            trial = tuple(float(value) if r == region else t for r, t in enumerate(best))
            score = float(_threshold_dice(cases, "regions", trial).mean())
            if score > best_score + 1e-12:
                best, best_score = trial, score  # type: ignore[assignment]
    return best


def _tune_components(labels: Sequence[np.ndarray], truths: Sequence[np.ndarray], spacings: Sequence[Sequence[float]],
                     candidates: Sequence[float]) -> tuple[tuple[float, float, float], dict[str, dict[float, float]]]:
    """Coordinate search of ``min_component_mm3`` over WT, then TC, then ET (ties: the smaller volume)."""
    best = [0.0, 0.0, 0.0]
    scores: dict[str, dict[float, float]] = {}
    for region, name in enumerate(REGION_NAMES):
        per: dict[float, float] = {}
        for value in candidates:
            trial = [float(value) if r == region else b for r, b in enumerate(best)]
            per[float(value)] = float(np.mean([region_dice(remove_small_components(lab, trial, s), t).mean()
                                               for lab, t, s in zip(labels, truths, spacings, strict=True)]))
        best[region] = max(per, key=lambda v: (per[v], -v))
        scores[name] = per
    return (best[0], best[1], best[2]), scores


def _min_et_scores(labels: Sequence[np.ndarray], truths: Sequence[np.ndarray], spacings: Sequence[Sequence[float]],
                   candidates: Sequence[float]) -> dict[float, float]:
    """Mean Dice for each small-ET volume; only the ET Dice depends on it."""
    per_case = []
    for lab, truth, spacing in zip(labels, truths, spacings, strict=True):
        et_mm3 = int((lab == ET).sum()) * voxel_volume(spacing)
        per_case.append((region_dice(lab, truth), et_mm3, not bool((truth == ET).any())))
    scores = {}
    for t in candidates:
        total = 0.0
        for dice, et_mm3, truth_empty in per_case:
            et = dice[2] if not (0 < et_mm3 < t) else (1.0 if truth_empty else 0.0)
            total += (dice[0] + dice[1] + et) / 3.0
        scores[float(t)] = total / len(per_case)
    return scores


def _candidates(values: Sequence[float], what: str) -> list[float]:
    """Sorted distinct candidate volumes; ValueError when empty or not all >= 0."""
    if not values:
        raise ValueError(f"give at least one {what} candidate in mm^3 (0 turns the rule off)")
    if not all(isinstance(v, int | float) and np.isfinite(v) and v >= 0 for v in values):
        raise ValueError(f"{what} candidates must be volumes in mm^3 >= 0; got {list(values)}")
    return sorted({float(v) for v in values})


def tune_postprocess(cases: Sequence[TuningCase], target: str = "regions",
                     min_et_candidates: Sequence[float] = DEFAULT_MIN_ET_MM3,
                     component_candidates: Sequence[float] = DEFAULT_COMPONENT_MM3,
                     tune_thresholds: bool = False,
                     threshold_grid: Sequence[float] = DEFAULT_THRESHOLD_GRID) -> TuneResult:
    """Choose the volume rules (and optionally the region thresholds) that maximise the mean
    validation Dice (BraTS rules: a region empty in both = 1).

    Order: thresholds (regions only, no volume rule), then ``min_component_mm3`` per region, then
    ``min_et_mm3`` on the cleaned labels; ties go to the smaller volume.

    Args:
        cases: :class:`TuningCase` triples (probabilities, truth, spacing in mm).
        target: ``"regions"`` or ``"labels"``.
        min_et_candidates: small-ET volumes in mm^3 to try (0 = rule off).
        component_candidates: per-region component volumes in mm^3 to try (0 = rule off).
        tune_thresholds: also tune the WT/TC/ET thresholds (regions only).
        threshold_grid: threshold values tried per region.

    Returns:
        The chosen settings with their scores.

    Raises:
        ValueError: no cases, unknown target, no or negative candidates, a case without a valid spacing.
    """
    check_target(target)
    if not cases:
        raise ValueError("no validation cases to tune on; check the run's splits and the preprocessed folder")
    et_values = _candidates(min_et_candidates, "min_et_mm3")
    component_values = _candidates(component_candidates, "min_component_mm3")
    spacings = [tuple(c.spacing) for c in cases]
    for spacing in spacings:
        voxel_volume(spacing)
    thresholds = PostprocessConfig().thresholds
    if tune_thresholds and target == "regions":
        thresholds = _tune_thresholds(cases, threshold_grid)
    labels = [probabilities_to_labels(np.asarray(c.probabilities), target, thresholds) for c in cases]
    truths = [np.asarray(c.truth) for c in cases]
    components, component_scores = _tune_components(labels, truths, spacings, component_values)
    cleaned = [remove_small_components(lab, components, s) for lab, s in zip(labels, spacings, strict=True)]
    et_scores = _min_et_scores(cleaned, truths, spacings, et_values)
    config = PostprocessConfig(thresholds, max(et_scores, key=lambda t: (et_scores[t], -t)), components)
    chosen = np.mean([region_dice(apply_volume_rules(lab, config, s), t)
                      for lab, t, s in zip(labels, truths, spacings, strict=True)], axis=0)
    return TuneResult(config, chosen.tolist(), _threshold_dice(cases, target, thresholds=(0.5, 0.5, 0.5)).tolist(),
                      et_scores, component_scores, len(cases))
