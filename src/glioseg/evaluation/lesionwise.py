"""Lesion-wise Dice and HD95: the BraTS 2023/2024 rules and the one-to-one rules of brats2025.

BraTS 2023/2024 (:func:`lesion_wise_scores`): ground-truth lesions are the 26-connected
components of the ground truth dilated 3 times (18-connected structuring element), restricted to
the ground truth; predicted lesions are the 26-connected components of the prediction. A
predicted lesion matches a ground-truth lesion when it touches that lesion dilated 3 times. Each
ground-truth lesion is scored (Dice, HD95) against the union of its matches; lesions of <= 50
mm^3 (2024: 20, ET 10) are not scored; missed lesions score Dice 0 / HD95 374 mm and every
unmatched predicted lesion adds a Dice 0 / HD95 374 entry. Nothing to score -> Dice 1 / HD95 0.

brats2025 = brats-evaluation 0.0.10 on panoptica (:func:`matched_lesion_scores`): lesions are the
26-connected components of both masks (no dilation, no size threshold), matched one to one by
maximum bipartite matching on Dice (scipy's ``linear_sum_assignment`` on cost ``1 - Dice``, pairs
without overlap cost ``1 + 1e-6`` and never match). Dice and pooled HD95 are averaged over the
matched pairs only; the F1 ``TP / (TP + (FP + FN) / 2)`` scores detection. No match: Dice 0, HD95
inf, F1 0; no lesion in either mask: all NaN.

Arrays are ``(X, Y, Z)`` bool masks.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import cc3d
import numpy as np
from scipy import ndimage
from scipy.optimize import linear_sum_assignment

from glioseg.evaluation.metrics import LesionScores, hd95, voxel_spacing
from glioseg.utils import bounding_box, check_mask_pair, dice

LESION_MISS_HD95_MM = 374.0  # BraTS 2023 value for missed and false-positive lesions
LESION_DILATION = 3
LESION_MIN_MM3 = 50.0  # BraTS 2023 GLI: ground-truth lesions up to this volume are not scored
_NO_MATCH_COST = 1.0 + 1e-6  # panoptica's cost of a pair below the matching threshold
_MATCH_MIN_DICE = 1e-6  # brats-evaluation's matching threshold (Dice >= it may match)
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
                       dilation: int = LESION_DILATION, min_lesion_mm3: float = LESION_MIN_MM3,
                       miss_distance: float = LESION_MISS_HD95_MM) -> LesionScores:
    """BraTS 2023/2024 lesion-wise Dice and HD95 of one region.

    Args:
        pred, gt: bool masks ``(X, Y, Z)`` of equal shape.
        spacing: voxel size in mm; 1 mm when None.
        dilation: dilation iterations for grouping and matching lesions.
        min_lesion_mm3: ground-truth lesions of at most this volume (mm^3, as the official code's
            voxel count x voxel volume) are not scored.
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
    voxel_mm3 = float(np.prod(sampling))
    lesions = ground_truth_lesions(gt, dilation)
    pred_ids = cc3d.connected_components(pred.astype(np.uint8), connectivity=26)
    matched: set[int] = set()
    scored: list[tuple[float, float, bool]] = []  # (Dice, HD95, matched) per scored lesion
    for lesion_id in np.unique(lesions[lesions > 0]):
        lesion = lesions == lesion_id
        hits = _matching_predictions(lesion, pred_ids, dilation)
        matched.update(hits)
        if int(lesion.sum()) * voxel_mm3 > min_lesion_mm3:
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


def matched_lesion_scores(pred: np.ndarray, gt: np.ndarray,
                          spacing: float | Sequence[float] | None = None) -> LesionScores:
    """brats2025 (brats-evaluation 0.0.10 / panoptica) lesion-wise scores of one region.

    Args:
        pred, gt: bool masks ``(X, Y, Z)`` of equal shape.
        spacing: voxel size in mm; 1 mm when None.

    Returns:
        Mean Dice and pooled HD95 over the one-to-one matched lesion pairs, TP/FP/FN counts and
        the detection F1 (see the module docstring for the empty cases).
    """
    pred, gt = check_mask_pair(pred, gt)
    sampling = voxel_spacing(spacing, pred.ndim)
    box = bounding_box(pred | gt, margin=1)
    if box is None:
        return LesionScores(math.nan, math.nan, 0, 0, 0, math.nan)
    ref_ids, n_ref = cc3d.connected_components(gt[box].astype(np.uint8), connectivity=26, return_N=True)
    pred_ids, n_pred = cc3d.connected_components(pred[box].astype(np.uint8), connectivity=26, return_N=True)
    pairs = _one_to_one(ref_ids, pred_ids, int(n_ref), int(n_pred))
    if not pairs:
        return LesionScores(0.0, math.inf, 0, int(n_pred), int(n_ref), 0.0)
    scores = [_pair_scores(ref_ids == r, pred_ids == p, sampling) for r, p in pairs]
    tp = len(pairs)
    f1 = tp / (tp + 0.5 * (n_pred - tp) + 0.5 * (n_ref - tp))
    return LesionScores(float(np.mean([d for d, _ in scores])), float(np.mean([h for _, h in scores])),
                        tp, int(n_pred) - tp, int(n_ref) - tp, float(f1))


def _one_to_one(ref_ids: np.ndarray, pred_ids: np.ndarray, n_ref: int, n_pred: int) -> list[tuple[int, int]]:
    """``(ref id, pred id)`` pairs of the maximum bipartite matching on Dice (panoptica's rule)."""
    if n_ref == 0 or n_pred == 0:
        return []
    both = (ref_ids > 0) & (pred_ids > 0)
    codes, overlap = np.unique(pred_ids[both].astype(np.int64) * (n_ref + 1) + ref_ids[both], return_counts=True)
    ref_area = np.bincount(ref_ids.ravel(), minlength=n_ref + 1)
    pred_area = np.bincount(pred_ids.ravel(), minlength=n_pred + 1)
    cost = np.full((n_ref, n_pred), _NO_MATCH_COST)
    for code, inter in zip(codes.tolist(), overlap.tolist(), strict=True):
        r, p = code % (n_ref + 1), code // (n_ref + 1)
        score = 2.0 * inter / (ref_area[r] + pred_area[p])
        if score >= _MATCH_MIN_DICE:
            cost[r - 1, p - 1] = 1.0 - score
    rows, cols = linear_sum_assignment(cost)
    return [(int(i) + 1, int(j) + 1) for i, j in zip(rows, cols, strict=True) if cost[i, j] < 1.0]


def _pair_scores(ref: np.ndarray, pred: np.ndarray, sampling: Sequence[float]) -> tuple[float, float]:
    """Dice and pooled HD95 of one matched lesion pair (both non-empty and overlapping)."""
    return dice(pred, ref), hd95(pred, ref, sampling, pooled=True)


def _matching_predictions(lesion: np.ndarray, pred_ids: np.ndarray, dilation: int) -> set[int]:
    """Ids of the predicted components that touch ``lesion`` dilated ``dilation`` times."""
    box = bounding_box(lesion, margin=dilation)
    assert box is not None  # internal: lesion is non-empty by construction
    grown = lesion[box]
    if dilation:
        grown = ndimage.binary_dilation(grown, structure=_STRUCT18, iterations=dilation)
    ids = pred_ids[box][grown]
    return set(np.unique(ids[ids > 0]).tolist())


