"""From network probabilities to a BraTS label map: thresholds / argmax, the small-ET rule,
paste-back into the case grid, and tuning of the rule on validation predictions.

Targets:

- ``"regions"``: sigmoid probabilities of WT, TC, ET ``(3, X, Y, Z)``; each region is
  thresholded and the hierarchy (ET inside TC inside WT) is resolved by
  :func:`glioseg.labels.regions_to_labels`.
- ``"labels"``: softmax probabilities of the canonical labels ``(K, X, Y, Z)`` (channel k is
  canonical label k); argmax.

Small-ET rule (BraTS practice): a predicted enhancing tumour smaller than ``min_et_voxels`` is
most often a false positive in a case without ET, and an ET false positive in such a case
costs a Dice of 0 instead of 1, so it is relabelled NCR (the tumour core is unchanged).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from glioseg.labels import ET, NCR, check_target, probabilities_to_labels
from glioseg.utils import atomic_write, region_dice

POSTPROCESS_FILE = "postprocess.json"
DEFAULT_MIN_ET_CANDIDATES: tuple[int, ...] = (0, 10, 25, 50, 100, 200, 300, 500, 750, 1000, 1500)
DEFAULT_THRESHOLD_GRID: tuple[float, ...] = (0.3, 0.4, 0.5, 0.6, 0.7)


@dataclass(frozen=True)
class PostprocessConfig:
    """How probabilities become labels.

    Attributes:
        thresholds: probability thresholds of WT, TC, ET (region targets only), each in (0, 1).
        min_et_voxels: relabel ET as NCR when the predicted ET has fewer voxels (0: never).
    """

    thresholds: tuple[float, float, float] = (0.5, 0.5, 0.5)
    min_et_voxels: int = 0

    def __post_init__(self) -> None:
        if len(self.thresholds) != 3 or not all(0.0 < float(t) < 1.0 for t in self.thresholds):
            raise ValueError(f"thresholds must be three values in (0, 1) for WT, TC, ET; got {self.thresholds}")
        if int(self.min_et_voxels) < 0:
            raise ValueError(f"min_et_voxels must be >= 0; got {self.min_et_voxels}")
        object.__setattr__(self, "thresholds", tuple(float(t) for t in self.thresholds))
        object.__setattr__(self, "min_et_voxels", int(self.min_et_voxels))

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form."""
        return {"thresholds": list(self.thresholds), "min_et_voxels": self.min_et_voxels}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PostprocessConfig:
        """Inverse of :meth:`to_dict` (unknown keys are ignored, missing ones take defaults)."""
        kwargs: dict[str, Any] = {}
        if "thresholds" in data:
            kwargs["thresholds"] = tuple(data["thresholds"])
        if "min_et_voxels" in data:
            kwargs["min_et_voxels"] = int(data["min_et_voxels"])
        return cls(**kwargs)


def load_postprocess(run_dir: Path | str) -> PostprocessConfig:
    """The tuned ``postprocess.json`` of a run directory, or the defaults without one.

    Raises:
        ValueError: the file exists but is not valid (names the file and the fix).
    """
    path = Path(run_dir) / POSTPROCESS_FILE
    if not path.is_file():
        return PostprocessConfig()
    try:
        return PostprocessConfig.from_dict(json.loads(path.read_text()))
    except (json.JSONDecodeError, UnicodeDecodeError, ValueError, TypeError) as exc:
        raise ValueError(f"{path}: invalid post-processing settings ({exc}); delete it or run "
                         "`glioseg tune-postprocess` again") from exc


def save_postprocess(config: PostprocessConfig, run_dir: Path | str, extra: dict[str, Any] | None = None) -> Path:
    """Write ``postprocess.json`` into a run directory atomically (``extra`` adds a report)."""
    data = {**config.to_dict(), **(extra or {})}
    return atomic_write(Path(run_dir) / POSTPROCESS_FILE, lambda tmp: tmp.write_text(json.dumps(data, indent=2) + "\n"))


def apply_small_et_rule(labels: np.ndarray, min_et_voxels: int) -> np.ndarray:
    """Relabel the whole predicted ET as NCR when it has fewer than ``min_et_voxels`` voxels.

    Args:
        labels: uint8 ``(X, Y, Z)`` canonical labels.
        min_et_voxels: volume threshold in voxels (0 disables the rule).

    Returns:
        uint8 ``(X, Y, Z)``; the input when unchanged, otherwise a modified copy.
    """
    if min_et_voxels <= 0:
        return labels
    et = labels == ET
    count = int(et.sum())
    if count == 0 or count >= min_et_voxels:
        return labels
    out = labels.copy()
    out[et] = NCR
    return out


def postprocess_probabilities(probs: np.ndarray, target: str = "regions",
                              config: PostprocessConfig = PostprocessConfig()) -> np.ndarray:
    """Thresholds/argmax, then the small-ET rule.

    Args:
        probs: float ``(K, X, Y, Z)`` (see :func:`probabilities_to_labels`).
        target: ``"regions"`` or ``"labels"``.
        config: thresholds and small-ET threshold.

    Returns:
        uint8 ``(X, Y, Z)`` canonical labels.
    """
    labels = probabilities_to_labels(probs, target, config.thresholds)
    return apply_small_et_rule(labels, config.min_et_voxels)


@dataclass
class TuneResult:
    """Outcome of :func:`tune_postprocess`.

    Attributes:
        config: the chosen settings.
        mean_dice: mean over cases of the WT/TC/ET Dice with the chosen settings, ``(3,)``.
        baseline_dice: the same with default settings (thresholds 0.5, no small-ET rule).
        min_et_scores: mean Dice (over cases and regions) for each candidate ``min_et_voxels``.
        n_cases: cases used.
    """

    config: PostprocessConfig
    mean_dice: list[float]
    baseline_dice: list[float]
    min_et_scores: dict[int, float] = field(default_factory=dict)
    n_cases: int = 0

    def to_dict(self) -> dict[str, Any]:
        """JSON-able report."""
        data = asdict(self)
        data["config"] = self.config.to_dict()
        data["min_et_scores"] = {str(k): v for k, v in self.min_et_scores.items()}
        return data


def _mean_dice(cases: Sequence[tuple[np.ndarray, np.ndarray]], target: str, config: PostprocessConfig) -> np.ndarray:
    scores = [region_dice(postprocess_probabilities(np.asarray(p), target, config), np.asarray(t)) for p, t in cases]
    return np.mean(scores, axis=0)


def _tune_thresholds(cases: Sequence[tuple[np.ndarray, np.ndarray]],
                     grid: Sequence[float]) -> tuple[float, float, float]:
    """Coordinate ascent over the three region thresholds (WT, then TC, then ET)."""
    best = PostprocessConfig()
    best_score = float(_mean_dice(cases, "regions", best).mean())
    for region in range(3):
        for value in grid:
            thresholds = list(best.thresholds)
            thresholds[region] = float(value)
            trial = replace(best, thresholds=tuple(thresholds))  # type: ignore[arg-type]
            score = float(_mean_dice(cases, "regions", trial).mean())
            if score > best_score + 1e-12:
                best, best_score = trial, score
    return best.thresholds


def _min_et_scores(cases: Sequence[tuple[np.ndarray, np.ndarray]], target: str,
                   thresholds: tuple[float, float, float], candidates: Sequence[int]) -> dict[int, float]:
    """Mean Dice for each small-ET threshold; only the ET Dice depends on it."""
    per_case = []
    for probs, truth in cases:
        labels = probabilities_to_labels(np.asarray(probs), target, thresholds)
        truth = np.asarray(truth)
        dice = region_dice(labels, truth)
        et_pred = int((labels == ET).sum())
        et_truth_empty = not bool((truth == ET).any())
        per_case.append((dice, et_pred, et_truth_empty))
    scores = {}
    for t in candidates:
        total = 0.0
        for dice, et_pred, truth_empty in per_case:
            et = dice[2] if not (0 < et_pred < t) else (1.0 if truth_empty else 0.0)
            total += (dice[0] + dice[1] + et) / 3.0
        scores[int(t)] = total / len(per_case)
    return scores


def tune_postprocess(cases: Sequence[tuple[np.ndarray, np.ndarray]], target: str = "regions",
                     min_et_candidates: Sequence[int] = DEFAULT_MIN_ET_CANDIDATES,
                     tune_thresholds: bool = False,
                     threshold_grid: Sequence[float] = DEFAULT_THRESHOLD_GRID) -> TuneResult:
    """Choose the small-ET threshold (and optionally the region thresholds) that maximise the
    mean validation Dice (BraTS rules: ET empty in both = 1).

    Args:
        cases: ``(probabilities, truth)`` pairs on the same grid: float ``(K, X, Y, Z)``
            (memory-mapped arrays are fine) and uint8 ``(X, Y, Z)`` canonical labels.
        target: ``"regions"`` or ``"labels"``.
        min_et_candidates: small-ET thresholds in voxels to try (0 = rule off).
        tune_thresholds: also tune the WT/TC/ET thresholds (regions only), before the rule.
        threshold_grid: threshold values tried per region.

    Returns:
        The chosen settings with their scores; ties go to the smaller ``min_et_voxels``.

    Raises:
        ValueError: no cases, unknown target, or no candidates.
    """
    check_target(target)
    if not cases:
        raise ValueError("no validation cases to tune on; check the run's splits and the preprocessed folder")
    if not min_et_candidates:
        raise ValueError("give at least one min_et_voxels candidate")
    thresholds = PostprocessConfig().thresholds
    if tune_thresholds and target == "regions":
        thresholds = _tune_thresholds(cases, threshold_grid)
    scores = _min_et_scores(cases, target, thresholds, sorted({int(c) for c in min_et_candidates}))
    best_t = max(scores, key=lambda t: (scores[t], -t))
    config = PostprocessConfig(thresholds, best_t)
    return TuneResult(config, _mean_dice(cases, target, config).tolist(),
                      _mean_dice(cases, target, PostprocessConfig()).tolist(), scores, len(cases))
