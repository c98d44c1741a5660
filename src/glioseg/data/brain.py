"""Where the brain is, and whether an image is one the model can serve.

The model was trained on skull-stripped BraTS images: exactly 0 outside the brain, one brain
inside. "Brain" here is not "any non-zero voxel": the *background* is the value that fills the
image's border shell (its outer voxels), the *foreground* is what lies clearly off it, and the
*brain* is the foreground's largest connected part. An image looks servable when its border is
(nearly) one constant value, that value is 0, and the foreground is one brain-sized part: no
scalp or noise shell around it, not a whole head.

Thresholds were set on the real BraTS 2018 cases (border >= 98.5 % constant, < 0.2 % of the
foreground apart from the brain, brains < 1750 ml), with wide margins.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

BORDER_WIDTH = 2  # voxels of each face that make the border shell
CONSTANT_BORDER_SHARE = 0.9  # skull-stripped: at least this share of the border is exactly the background
FOREGROUND_SHARE = 0.1  # foreground: off the background by more than this share of the 99th-percentile offset
MAX_DETACHED_SHARE = 0.05  # foreground apart from the brain, relative to the brain's volume
MAX_BRAIN_ML = 2800.0  # more than any adult brain: a whole head
ANALYSIS_VOXELS = 2_000_000  # analyse every k-th voxel per axis so that about this many remain
BACKGROUND_CHECK = "background-offset"
SKULL_CHECK = "not-skull-stripped"
SKULL_FIX = "skull-strip it (e.g. HD-BET or SynthStrip) with 0 outside the brain, as in BraTS"


@dataclass(frozen=True)
class BrainSurvey:
    """What an image's border and foreground look like.

    Attributes:
        background: value of the border shell (its mode), with the file's scaling applied.
        border_share: share of the border shell that is exactly that value.
        brain_ml: volume of the brain (the largest foreground part), in ml.
        detached_share: volume of the foreground apart from the brain, relative to the brain.
    """

    background: float
    border_share: float
    brain_ml: float
    detached_share: float


def border_values(volume: np.ndarray, width: int = BORDER_WIDTH) -> np.ndarray:
    """The voxels within ``width`` of any face of a 3-D volume, flattened."""
    inner = np.ones(volume.shape, dtype=bool)
    inner[tuple(slice(width, max(width, n - width)) for n in volume.shape)] = False
    return volume[inner]


def _mode(values: np.ndarray) -> tuple[float, float]:
    """Most frequent value and its share (0 for an empty array)."""
    if not values.size:
        return 0.0, 0.0
    unique, counts = np.unique(values, return_counts=True)
    top = int(counts.argmax())
    return float(unique[top]), float(counts[top]) / values.size


def _foreground(volume: np.ndarray, background: float, step: int) -> np.ndarray:
    """Voxels (every ``step``-th per axis) clearly off the background, as a bool array."""
    small = volume[::step, ::step, ::step].astype(np.float32)
    offset = np.abs(np.nan_to_num(small, nan=background, posinf=background, neginf=background) - background)
    positive = offset[offset > 0]
    if not positive.size:
        return np.zeros(small.shape, dtype=bool)
    return offset > FOREGROUND_SHARE * float(np.percentile(positive, 99))


def _parts(foreground: np.ndarray) -> np.ndarray:
    """Voxel counts of the foreground's connected parts (6-connectivity), largest first."""
    labels, n = ndimage.label(foreground)
    return np.sort(np.bincount(labels.ravel(), minlength=n + 1)[1:])[::-1]


def survey_brain(volume: np.ndarray, spacing: Sequence[float], slope: float = 1.0,
                 inter: float = 0.0) -> BrainSurvey:
    """Survey one image's border and brain.

    Args:
        volume: 3-D image ``(X, Y, Z)`` in stored (unscaled) values, any dtype.
        spacing: voxel size in mm per axis.
        slope, inter: the file's scaling (``scl_slope``, ``scl_inter``): value = stored * slope + inter.

    Returns:
        The survey (background in scaled values).
    """
    raw_background, share = _mode(border_values(volume))
    step = max(1, math.ceil((volume.size / ANALYSIS_VOXELS) ** (1 / 3)))
    sizes = _parts(_foreground(volume, raw_background, step))
    voxel_ml = float(np.prod(spacing)) * step**3 / 1000.0
    brain = int(sizes[0]) if sizes.size else 0
    detached = float(sizes[1:].sum()) / brain if brain else 0.0
    return BrainSurvey(raw_background * slope + inter, share, brain * voxel_ml, detached)


def brain_mask(volume: np.ndarray) -> np.ndarray:
    """The brain of a 3-D image: the largest part clearly off the border's background value.

    Args:
        volume: 3-D image ``(X, Y, Z)``.

    Returns:
        bool ``(X, Y, Z)``, all False for an image without foreground.
    """
    foreground = _foreground(volume, _mode(border_values(volume))[0], 1)
    labels, n = ndimage.label(foreground)
    if n == 0:
        return foreground
    return labels == int(np.bincount(labels.ravel())[1:].argmax()) + 1


def unservable_problems(volume: np.ndarray, spacing: Sequence[float], name: str, slope: float = 1.0,
                        inter: float = 0.0) -> list[tuple[str, str]]:
    """Why the model cannot serve an image: a background that is not 0, or no skull-stripping.

    Args:
        volume: 3-D image in stored values; spacing, slope, inter: as :func:`survey_brain`.
        name: the modality, named in the messages.

    Returns:
        ``(check, message)`` pairs (:data:`BACKGROUND_CHECK`, :data:`SKULL_CHECK`); empty when it
        looks like BraTS.
    """
    survey = survey_brain(volume, spacing, slope, inter)
    if survey.border_share < CONSTANT_BORDER_SHARE:
        return [(SKULL_CHECK, f"{name} does not look skull-stripped: only {survey.border_share:.0%} of the image "
                              "border is one background value (noise or head tissue around the brain); " + SKULL_FIX)]
    problems = []
    if survey.background != 0.0:
        cause = f" (the header's scl_inter is {inter:g})" if inter else ""
        fix = "reset scl_slope/scl_inter so that it reads 0" if inter else f"subtract {survey.background:g}"
        problems.append((BACKGROUND_CHECK, f"{name} background is {survey.background:g}, not 0{cause}: the model "
                                           f"expects 0 outside the brain; {fix} and re-export"))
    if survey.detached_share > MAX_DETACHED_SHARE:
        problems.append((SKULL_CHECK, f"{name} does not look skull-stripped: {survey.detached_share:.0%} of the "
                                      "brain's volume again lies off the background apart from it (e.g. a scalp or "
                                      f"skull shell around it); {SKULL_FIX}"))
    elif survey.brain_ml > MAX_BRAIN_ML:
        problems.append((SKULL_CHECK, f"{name} does not look skull-stripped: the part off the background is "
                                      f"{survey.brain_ml:.0f} ml, more than a brain (< {MAX_BRAIN_ML:.0f} ml), like "
                                      f"a whole head; {SKULL_FIX}"))
    return problems
