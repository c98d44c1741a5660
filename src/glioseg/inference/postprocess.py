"""From network probabilities to a BraTS label map: thresholds / argmax, then two volume rules
whose thresholds are physical volumes in mm^3, so that one setting means the same lesion on any grid.

Targets:

- ``"regions"``: sigmoid probabilities of WT, TC, ET ``(3, X, Y, Z)``; each region is
  thresholded and the hierarchy (ET inside TC inside WT) is resolved by
  :func:`glioseg.labels.regions_to_labels`.
- ``"labels"``: softmax probabilities of the canonical labels ``(K, X, Y, Z)`` (channel k is
  canonical label k); argmax.

Rules, in this order (both off by default; chosen on validation folds by
:func:`glioseg.inference.tuning.tune_postprocess`):

1. *Small components per region*: connected components (26-connectivity) of WT, TC or ET smaller
   than that region's ``min_component_mm3`` are removed; a removed WT part takes its TC and ET
   with it (they become background), a removed TC part becomes edema, a removed ET part NCR.
2. *Small ET* (BraTS practice): when the whole predicted enhancing tumour is smaller than
   ``min_et_mm3`` it is most often a false positive in a case without ET (which costs a Dice of 0
   instead of 1), so it is relabelled NCR; the tumour core is unchanged.

``postprocess.json`` stores ``min_et_mm3``. Files written before the rule was physical store
``min_et_voxels``, counted on the grid they were tuned on: the full-resolution stage's grid
(``glioseg tune-postprocess`` always tuned there). :func:`load_postprocess` converts them with
that grid's voxel volume (``spacing_mm ** 3``) and refuses them when the grid is not known.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np

from glioseg.labels import ET, NCR, probabilities_to_labels, regions_to_labels
from glioseg.utils import atomic_write, bounding_box

POSTPROCESS_FILE = "postprocess.json"
CONNECTIVITY: Final = 26
REGION_NAMES = ("WT", "TC", "ET")


@dataclass(frozen=True)
class PostprocessConfig:
    """How probabilities become labels.

    Attributes:
        thresholds: probability thresholds of WT, TC, ET (region targets only), each in (0, 1).
        min_et_mm3: relabel the whole predicted ET as NCR when its volume is below this (0: never).
        min_component_mm3: per region (WT, TC, ET), remove connected components below this
            volume (0: keep every component).
    """

    thresholds: tuple[float, float, float] = (0.5, 0.5, 0.5)
    min_et_mm3: float = 0.0
    min_component_mm3: tuple[float, float, float] = (0.0, 0.0, 0.0)

    def __post_init__(self) -> None:
        if len(self.thresholds) != 3 or not all(0.0 < float(t) < 1.0 for t in self.thresholds):
            raise ValueError(f"thresholds must be three values in (0, 1) for WT, TC, ET; got {self.thresholds}")
        if not _volume_ok(self.min_et_mm3):
            raise ValueError(f"min_et_mm3 must be a volume in mm^3 >= 0; got {self.min_et_mm3}")
        if len(self.min_component_mm3) != 3 or not all(_volume_ok(v) for v in self.min_component_mm3):
            raise ValueError("min_component_mm3 must be three volumes in mm^3 >= 0 for WT, TC, ET; "
                             f"got {self.min_component_mm3}")
        object.__setattr__(self, "thresholds", tuple(float(t) for t in self.thresholds))
        object.__setattr__(self, "min_et_mm3", float(self.min_et_mm3))
        object.__setattr__(self, "min_component_mm3", tuple(float(v) for v in self.min_component_mm3))

    @property
    def uses_volumes(self) -> bool:
        """Whether a volume rule is on (the voxel spacing is then needed)."""
        return self.min_et_mm3 > 0 or any(v > 0 for v in self.min_component_mm3)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form."""
        return {"thresholds": list(self.thresholds), "min_et_mm3": self.min_et_mm3,
                "min_component_mm3": list(self.min_component_mm3)}

    @classmethod
    def from_dict(cls, data: dict[str, Any], tuned_spacing_mm: float | None = None) -> PostprocessConfig:
        """Inverse of :meth:`to_dict` (unknown keys are ignored, missing ones take defaults).

        Args:
            data: the settings.
            tuned_spacing_mm: isotropic spacing of the grid an old ``min_et_voxels`` was tuned on.

        Raises:
            ValueError: invalid values, both ``min_et_mm3`` and ``min_et_voxels``, or a non-zero
                ``min_et_voxels`` without the grid it was counted on.
        """
        if not isinstance(data, dict):
            raise ValueError(f"expected a JSON object, got {type(data).__name__}")
        kwargs: dict[str, Any] = {}
        if "thresholds" in data:
            kwargs["thresholds"] = tuple(data["thresholds"])
        if "min_component_mm3" in data:
            kwargs["min_component_mm3"] = tuple(data["min_component_mm3"])
        if "min_et_voxels" in data:
            if "min_et_mm3" in data:
                raise ValueError("both min_et_mm3 and min_et_voxels are set; keep min_et_mm3 only")
            kwargs["min_et_mm3"] = voxels_to_mm3(data["min_et_voxels"], tuned_spacing_mm)
        elif "min_et_mm3" in data:
            kwargs["min_et_mm3"] = data["min_et_mm3"]
        return cls(**kwargs)


def _volume_ok(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value) and value >= 0


def voxels_to_mm3(voxels: Any, spacing_mm: float | None) -> float:
    """An old ``min_et_voxels`` as mm^3: ``voxels * spacing_mm ** 3`` of the grid it was tuned on.

    Raises:
        ValueError: not a whole number >= 0, or non-zero without a known isotropic spacing.
    """
    if not isinstance(voxels, int) or isinstance(voxels, bool) or voxels < 0:
        raise ValueError(f"min_et_voxels must be a whole number >= 0; got {voxels!r}")
    if voxels == 0:
        return 0.0
    if spacing_mm is None or not spacing_mm > 0:
        raise ValueError(f"min_et_voxels {voxels} counts voxels of a grid that is not known here (the model's "
                         "finest stage keeps each case's spacing); set min_et_mm3 instead or run "
                         "`glioseg tune-postprocess` again")
    return float(voxels) * float(spacing_mm) ** 3


def load_postprocess(run_dir: Path | str, tuned_spacing_mm: float | None = None) -> PostprocessConfig:
    """The tuned ``postprocess.json`` of a run directory, or the defaults without one.

    Args:
        run_dir: run directory or bundle.
        tuned_spacing_mm: spacing of the model's full-resolution stage, the grid that
            ``tune-postprocess`` tuned on; converts an old ``min_et_voxels`` to mm^3.

    Raises:
        ValueError: the file exists but is not valid (names the file and the fix).
    """
    path = Path(run_dir) / POSTPROCESS_FILE
    if not path.is_file():
        return PostprocessConfig()
    try:
        return PostprocessConfig.from_dict(json.loads(path.read_text()), tuned_spacing_mm)
    except (json.JSONDecodeError, UnicodeDecodeError, ValueError, TypeError) as exc:
        raise ValueError(f"{path}: invalid post-processing settings ({exc}); fix or delete it, or run "
                         "`glioseg tune-postprocess` again") from exc


def save_postprocess(config: PostprocessConfig, run_dir: Path | str, extra: dict[str, Any] | None = None) -> Path:
    """Write ``postprocess.json`` into a run directory atomically (``extra`` adds a report)."""
    data = {**config.to_dict(), **(extra or {})}
    return atomic_write(Path(run_dir) / POSTPROCESS_FILE, lambda tmp: tmp.write_text(json.dumps(data, indent=2) + "\n"))


def voxel_volume(spacing: Sequence[float]) -> float:
    """Volume of one voxel in mm^3.

    Raises:
        ValueError: not three finite spacings > 0.
    """
    values = [float(s) for s in spacing]
    if len(values) != 3 or not all(math.isfinite(s) and s > 0 for s in values):
        raise ValueError(f"voxel spacing must be three sizes in mm > 0; got {list(spacing)}")
    return values[0] * values[1] * values[2]


def apply_small_et_rule(labels: np.ndarray, min_et_mm3: float, spacing: Sequence[float]) -> np.ndarray:
    """Relabel the whole predicted ET as NCR when its volume is below ``min_et_mm3``.

    Args:
        labels: uint8 ``(X, Y, Z)`` canonical labels.
        min_et_mm3: volume threshold in mm^3 (0 disables the rule).
        spacing: voxel size of the grid in mm ``(sx, sy, sz)``.

    Returns:
        uint8 ``(X, Y, Z)``; the input when unchanged, otherwise a modified copy.
    """
    if min_et_mm3 <= 0:
        return labels
    et = labels == ET
    count = int(et.sum())
    if count == 0 or count * voxel_volume(spacing) >= min_et_mm3:
        return labels
    out = labels.copy()
    out[et] = NCR
    return out


def remove_small_components(labels: np.ndarray, min_mm3: Sequence[float], spacing: Sequence[float]) -> np.ndarray:
    """Remove the connected components of WT, TC and ET below each region's volume.

    Args:
        labels: uint8 ``(X, Y, Z)`` canonical labels.
        min_mm3: thresholds in mm^3 for WT, TC, ET (0: keep every component of that region).
        spacing: voxel size of the grid in mm.

    Returns:
        uint8 ``(X, Y, Z)``: the input when nothing is removed, else a copy (labels other than
        BG/NCR/ED/ET are kept as they are).
    """
    if not any(t > 0 for t in min_mm3):
        return labels
    voxel = voxel_volume(spacing)
    box = bounding_box((labels >= NCR) & (labels <= ET))
    if box is None:
        return labels
    crop = labels[box]  # the work is on the tumour's bounding box: a small part of a 1 mm case
    et = crop == ET
    regions = np.stack([(crop >= NCR) & (crop <= ET), (crop == NCR) | et, et])  # WT, TC, ET without np.isin
    changed = False
    for r, threshold in enumerate(min_mm3):
        if threshold > 0 and regions[r].any():
            changed |= _drop_components(regions[r], threshold / voxel)
    if not changed:
        return labels
    regions[1] &= regions[0]  # a removed WT part takes its TC and ET; a removed TC part its ET
    regions[2] &= regions[1]
    new = regions_to_labels(regions)
    other = crop > ET  # RC and any label in no region
    new[other] = crop[other]
    out = labels.copy()
    out[box] = new
    return out


def _drop_components(mask: np.ndarray, min_voxels: float) -> bool:
    """Clear (in place) the 26-connected components of ``mask`` with fewer than ``min_voxels``; whether any was."""
    import cc3d

    components, n = cc3d.connected_components(mask, connectivity=CONNECTIVITY, return_N=True)
    small = np.bincount(components[mask], minlength=n + 1) < min_voxels  # counting inside the mask is fast
    small[0] = False
    if not small.any():
        return False
    mask[small[components]] = False
    return True


def apply_volume_rules(labels: np.ndarray, config: PostprocessConfig, spacing: Sequence[float] | None) -> np.ndarray:
    """Small components per region, then the small-ET rule (see the module docstring).

    Raises:
        ValueError: a volume rule is on and ``spacing`` is None.
    """
    if not config.uses_volumes:
        return labels
    if spacing is None:
        raise ValueError("the post-processing's volume rules (mm^3) need the voxel spacing of the grid")
    labels = remove_small_components(labels, config.min_component_mm3, spacing)
    return apply_small_et_rule(labels, config.min_et_mm3, spacing)


def postprocess_probabilities(probs: np.ndarray, target: str = "regions",
                              config: PostprocessConfig = PostprocessConfig(),
                              spacing: Sequence[float] | None = None) -> np.ndarray:
    """Thresholds/argmax, then the volume rules.

    Args:
        probs: float ``(K, X, Y, Z)`` (see :func:`probabilities_to_labels`).
        target: ``"regions"`` or ``"labels"``.
        config: thresholds and volume rules.
        spacing: voxel size of the grid of ``probs`` in mm; needed when a volume rule is on.

    Returns:
        uint8 ``(X, Y, Z)`` canonical labels.

    Raises:
        ValueError: a volume rule is on without ``spacing``.
    """
    labels = probabilities_to_labels(probs, target, config.thresholds)
    return apply_volume_rules(labels, config, spacing)
