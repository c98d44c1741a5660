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
    scored: list[tuple[float, float, bool]] = []  # (Dice, HD95, matched) per scored lesion
    for lesion_id in np.unique(lesions[lesions > 0]):
        lesion = lesions == lesion_id
        hits = _matching_predictions(lesion, pred_ids, dilation)
        matched.update(hits)
        if int(lesion.sum()) > min_lesion_voxels:
            scored.append((*_score_lesion(lesion, pred_ids, hits, sampling, miss_distance), bool(hits)))
    n_fp = len(set(np.unique(pred_ids[pred_ids > 0]).tolist()) - matched)
    return _lesion_summary(scored, n_fp, miss_distance)


def _score_lesion(lesion: np.ndarray, pred_ids: np.ndarray, hits: set[int], sampling: Sequence[float],
                  miss_distance: float) -> tuple[float, float]:
    """Dice and HD95 of one ground-truth lesion against the union of its matching predicted lesions."""
    if not hits:
        return 0.0, miss_distance
    chosen = np.isin(pred_ids, list(hits))
    return dice(chosen, lesion), hd95(chosen, lesion, sampling, empty_distance=miss_distance)


def _lesion_summary(scored: list[tuple[float, float, bool]], n_fp: int, miss_distance: float) -> LesionScores:
    """Means over the scored lesions plus one Dice 0 / ``miss_distance`` entry per false positive."""
    count = len(scored) + n_fp
    if count == 0:
        return LesionScores(1.0, 0.0, 0, 0, 0)
    n_tp = sum(hit for _, _, hit in scored)
    mean_dice = sum(d for d, _, _ in scored) / count
    mean_hd95 = (sum(h for _, h, _ in scored) + n_fp * miss_distance) / count
    return LesionScores(mean_dice, mean_hd95, n_tp, n_fp, len(scored) - n_tp)


def _matching_predictions(lesion: np.ndarray, pred_ids: np.ndarray, dilation: int) -> set[int]:
    """Ids of the predicted components that touch ``lesion`` dilated ``dilation`` times."""
    box = bounding_box(lesion, margin=dilation)
    assert box is not None  # internal: lesion is non-empty by construction
    grown = lesion[box]
    if dilation:
        grown = ndimage.binary_dilation(grown, structure=_STRUCT18, iterations=dilation)
    ids = pred_ids[box][grown]
    return set(np.unique(ids[ids > 0]).tolist())


