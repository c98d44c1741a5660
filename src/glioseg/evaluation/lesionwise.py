"""BraTS 2023 lesion-wise Dice and HD95.

Ground-truth lesions are the 26-connected components of the ground truth dilated 3 times
(18-connected structuring element), restricted to the ground truth; predicted lesions are the
26-connected components of the prediction. A predicted lesion matches a ground-truth lesion when it
touches that lesion dilated 3 times. Each ground-truth lesion is scored (Dice, HD95) against the
union of its matches; lesions of <= 50 voxels are not scored; missed lesions score Dice 0 / HD95
374 mm and every unmatched predicted lesion adds a Dice 0 / HD95 374 entry. Nothing to score ->
Dice 1 / HD95 0. Arrays are ``(X, Y, Z)`` bool masks.
"""

from __future__ import annotations

from collections.abc import Sequence

import cc3d
import numpy as np
from scipy import ndimage

from glioseg.evaluation.metrics import LesionScores, hd95, voxel_spacing
from glioseg.utils import bounding_box, check_mask_pair, dice

LESION_MISS_HD95_MM = 374.0  # BraTS 2023 value for missed and false-positive lesions


LESION_DILATION = 3


LESION_MIN_VOXELS = 50


_STRUCT18 = ndimage.generate_binary_structure(3, 2)


def ground_truth_lesions(gt: np.ndarray, dilation: int = LESION_DILATION) -> np.ndarray:
    """BraTS 2023 ground-truth lesions: components of the dilated mask, restricted to the mask.

    Args:
        gt: bool ``(X, Y, Z)``.
        dilation: dilation iterations (18-connected structuring element).

    Returns:
        int ``(X, Y, Z)`` lesion ids (0 background); ground-truth parts closer than the
        dilation share an id.
    """
    gt = np.asarray(gt, dtype=bool)
    grown = ndimage.binary_dilation(gt, structure=_STRUCT18, iterations=dilation) if dilation else gt
    ids = cc3d.connected_components(grown.astype(np.uint8), connectivity=26)
    return np.where(gt, ids, 0)


def lesion_wise_scores(pred: np.ndarray, gt: np.ndarray, spacing: float | Sequence[float] | None = None,
                       dilation: int = LESION_DILATION, min_lesion_voxels: int = LESION_MIN_VOXELS,
                       miss_distance: float = LESION_MISS_HD95_MM) -> LesionScores:
    """BraTS 2023 lesion-wise Dice and HD95 of one region.

    Args:
        pred, gt: bool masks ``(X, Y, Z)`` of equal shape.
        spacing: voxel size in mm; 1 mm when None.
        dilation: dilation iterations for grouping and matching lesions.
        min_lesion_voxels: ground-truth lesions of at most this many voxels are not scored.
        miss_distance: HD95 of a missed or false-positive lesion (mm).

    Returns:
        Lesion-wise scores (see :data:`CONVENTIONS`).
    """
    pred, gt = check_mask_pair(pred, gt)
    sampling = voxel_spacing(spacing, pred.ndim)
    box = bounding_box(pred | gt, margin=dilation + 1)
    if box is None:
        return LesionScores(1.0, 0.0, 0, 0, 0)
    pred, gt = pred[box], gt[box]
    lesions = ground_truth_lesions(gt, dilation)
    pred_ids = cc3d.connected_components(pred.astype(np.uint8), connectivity=26)
    matched: set[int] = set()
    dices: list[float] = []
    distances: list[float] = []
    n_tp = n_fn = 0
    for lesion_id in np.unique(lesions[lesions > 0]):
        lesion = lesions == lesion_id
        hits = _matching_predictions(lesion, pred_ids, dilation)
        matched.update(hits)
        if int(lesion.sum()) <= min_lesion_voxels:
            continue
        if not hits:
            n_fn += 1
            dices.append(0.0)
            distances.append(miss_distance)
            continue
        n_tp += 1
        chosen = np.isin(pred_ids, list(hits))
        dices.append(dice(chosen, lesion))
        distances.append(hd95(chosen, lesion, sampling, empty_distance=miss_distance))
    n_fp = len(set(np.unique(pred_ids[pred_ids > 0]).tolist()) - matched)
    count = len(dices) + n_fp
    if count == 0:
        return LesionScores(1.0, 0.0, 0, 0, 0)
    return LesionScores(sum(dices) / count, (sum(distances) + n_fp * miss_distance) / count, n_tp, n_fp, n_fn)


def _matching_predictions(lesion: np.ndarray, pred_ids: np.ndarray, dilation: int) -> set[int]:
    """Ids of the predicted components that touch ``lesion`` dilated ``dilation`` times."""
    box = bounding_box(lesion, margin=dilation)
    assert box is not None  # internal: lesion is non-empty by construction
    grown = lesion[box]
    if dilation:
        grown = ndimage.binary_dilation(grown, structure=_STRUCT18, iterations=dilation)
    ids = pred_ids[box][grown]
    return set(np.unique(ids[ids > 0]).tolist())


