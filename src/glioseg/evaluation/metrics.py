"""Voxel-wise segmentation metrics by the BraTS rules: Dice, HD95, sensitivity, specificity,
volumes, and the seed's pooled Dice (lesion-wise scores: :mod:`glioseg.evaluation.lesionwise`;
per-case records and summaries: :mod:`glioseg.evaluation.scores`).

Conventions (also in :data:`CONVENTIONS`, which ``glioseg evaluate`` writes into its reports):

- Regions: WT = NCR+ED+ET, TC = NCR+ET, ET = ET (:mod:`glioseg.labels`), scored on canonical
  labels so that files in any label scheme compare correctly.
- Surface of a mask: its voxels with at least one face (6-connected) neighbour outside the mask;
  voxels outside the image count as outside. This is ``mask XOR erosion(mask, 6-connected cross)``,
  the surface of medpy's ``hd95`` (which CaPTk's ``Hausdorff95`` calls) and of MONAI's
  ``compute_hausdorff_distance``.
- Surface distances: Euclidean distance in mm (voxel spacing applied) from each surface voxel of
  one mask to the nearest surface voxel of the other.
- HD95: the larger of the two directed 95th percentiles (linear interpolation between order
  statistics, numpy's default, as MONAI's ``torch.quantile``). medpy/CaPTk's CLI instead takes the
  95th percentile of both directions pooled, and the BraTS 2023 code weights distances by surfel
  area (DeepMind ``surface-distance``); both can differ from this by about a voxel.
- Empty masks (BraTS 2017-2021): both empty -> Dice 1, HD95 0; exactly one empty -> Dice 0,
  HD95 373.13 mm (the diagonal of the 240x240x155 1-mm BraTS grid). Sensitivity is 1 when the
  ground truth and the prediction are both empty, 0 when only the ground truth is; specificity is
  1 when the image has no background voxel.
- Lesion-wise (BraTS 2023 GLI): ground-truth lesions are the 26-connected components of the
  ground truth dilated 3 times (18-connected structuring element), restricted to the ground
  truth; predicted lesions are the 26-connected components of the prediction. A predicted lesion
  matches a ground-truth lesion when it touches that lesion dilated 3 times. Each ground-truth
  lesion is scored (Dice, HD95) against the union of its matches; ground-truth lesions of
  <= 50 voxels are not scored; missed lesions score Dice 0 / HD95 374 mm and every unmatched
  predicted lesion adds a Dice 0 / HD95 374 entry. Nothing to score -> Dice 1 / HD95 0.
- Pooled Dice (the seed's number): one Dice over the NCR, ED and ET one-hot channels together.

Arrays are ``(X, Y, Z)``; masks are bool, label maps uint8 canonical labels. Everything is
computed inside the bounding box (plus a margin) of the two masks, which makes HD95 on full
240x240x155 volumes cost milliseconds to a few tenths of a second.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from glioseg.labels import ED, ET, NCR
from glioseg.utils import bounding_box, check_mask_pair

HD95_EMPTY_MM = 373.13  # BraTS 2017-2021 value when exactly one mask is empty
REGION_METRICS: tuple[str, ...] = ("dice", "hd95", "sensitivity", "specificity",
                                   "volume_pred_ml", "volume_true_ml")
LESION_METRICS: tuple[str, ...] = ("lesion_dice", "lesion_hd95", "lesion_tp", "lesion_fp", "lesion_fn")
MATCHED_LESION_METRICS: tuple[str, ...] = (*LESION_METRICS, "lesion_f1")  # brats2025 adds the detection F1
CONVENTIONS: dict[str, str] = {
    "regions": "WT = NCR+ED+ET, TC = NCR+ET, ET = ET, on canonical labels",
    "surface": "mask voxels with a face (6-connected) neighbour outside the mask or the image "
               "(mask XOR 6-connected erosion), as medpy/CaPTk Hausdorff95 and MONAI",
    "hd95": "max of the two directed 95th percentiles (linear interpolation) of Euclidean "
            "surface-to-surface distances in mm, voxel spacing applied",
    "empty_masks": "BraTS 2017-2021: both empty -> Dice 1, HD95 0; one empty -> Dice 0, HD95 373.13 mm",
    "sensitivity_specificity": "TP/(TP+FN) and TN/(TN+FP) over all image voxels; sensitivity 1 "
                               "when both masks are empty, 0 when only the ground truth is",
    "lesion_wise": "BraTS 2023 GLI: GT lesions = 26-connected components after 3 dilations "
                   "(18-connected), lesions <= 50 voxels not scored, missed and false lesions "
                   "Dice 0 / HD95 374 mm, no lesion at all -> Dice 1 / HD95 0",
    "pooled_dice": "one Dice over the NCR, ED, ET one-hot channels pooled (the seed's number)",
    "failures": "missing or unreadable predictions score Dice 0, HD95 373.13 mm, sensitivity 0, "
                "specificity 0 in every region and are listed",
    "summary": "mean, std (ddof=0), median, quartiles over cases; failures included; volumes "
               "over successfully scored cases",
}

@dataclass(frozen=True)
class RegionScores:
    """Scores of one region of one case.

    Attributes:
        dice: Dice coefficient in [0, 1].
        hd95: 95th-percentile Hausdorff distance in mm.
        sensitivity: TP / (TP + FN).
        specificity: TN / (TN + FP).
        volume_pred_ml: predicted volume in ml (NaN for a failed case).
        volume_true_ml: ground-truth volume in ml (NaN when unknown).
    """

    dice: float
    hd95: float
    sensitivity: float
    specificity: float
    volume_pred_ml: float
    volume_true_ml: float


@dataclass(frozen=True)
class LesionScores:
    """Lesion-wise scores of one region of one case (BraTS 2023/2024 or brats2025 rules).

    Attributes:
        lesion_dice: mean lesion Dice with false positives counted as 0.
        lesion_hd95: mean lesion HD95 in mm with false positives counted as 374.
        lesion_tp: scored ground-truth lesions that were matched.
        lesion_fp: predicted lesions that match no ground-truth lesion.
        lesion_fn: scored ground-truth lesions that were missed.
        lesion_f1: detection F1 ``TP / (TP + (FP + FN) / 2)`` (brats2025 only; NaN otherwise).
    """

    lesion_dice: float
    lesion_hd95: float
    lesion_tp: int
    lesion_fp: int
    lesion_fn: int
    lesion_f1: float = math.nan


# ----------------------------------------------------------------------------- helpers


def voxel_spacing(spacing: float | Sequence[float] | None, ndim: int) -> tuple[float, ...]:
    """Voxel size in mm per axis from one number, one per axis, or None (1 mm).

    Raises:
        ValueError: not ``ndim`` finite positive numbers.
    """
    if spacing is None:
        return (1.0,) * ndim
    values = (float(spacing),) * ndim if np.isscalar(spacing) else tuple(float(s) for s in spacing)  # type: ignore[arg-type,union-attr]
    if len(values) != ndim or not all(math.isfinite(s) and s > 0 for s in values):
        raise ValueError(f"spacing {spacing} must be {ndim} positive numbers (mm)")
    return values


# ----------------------------------------------------------------------------- overlap metrics


def sensitivity_specificity(pred: np.ndarray, gt: np.ndarray) -> tuple[float, float]:
    """Voxel sensitivity TP/(TP+FN) and specificity TN/(TN+FP) over the whole image.

    Args:
        pred, gt: bool-like masks of equal shape.

    Returns:
        ``(sensitivity, specificity)``; sensitivity is 1 when both masks are empty and 0 when
        only the ground truth is; specificity is 1 when there is no background voxel.
    """
    pred, gt = check_mask_pair(pred, gt)
    tp, n_pred, n_gt = int(np.count_nonzero(pred & gt)), int(pred.sum()), int(gt.sum())
    return _sens_spec(tp, n_pred - tp, n_gt - tp, pred.size - n_pred - n_gt + tp)


def _sens_spec(tp: int, fp: int, fn: int, tn: int) -> tuple[float, float]:
    no_positives = 1.0 if fp == 0 else 0.0  # nothing to find: perfect unless something was found
    sens = no_positives if tp + fn == 0 else tp / (tp + fn)
    spec = 1.0 if tn + fp == 0 else tn / (tn + fp)
    return sens, spec


def pooled_dice(pred_labels: np.ndarray, gt_labels: np.ndarray) -> float:
    """The seed's Dice: NCR, ED and ET one-hot channels pooled into one number.

    Args:
        pred_labels, gt_labels: uint8 canonical label maps of equal shape.

    Returns:
        ``2 sum_c |P_c & G_c| / (sum_c |P_c| + sum_c |G_c|)`` over c in NCR, ED, ET; 1 when
        neither map has tumour.
    """
    pred_labels, gt_labels = np.asarray(pred_labels), np.asarray(gt_labels)
    if pred_labels.shape != gt_labels.shape:
        raise ValueError(f"prediction shape {pred_labels.shape} != ground-truth shape {gt_labels.shape}")
    lut = np.zeros(256, dtype=bool)
    lut[[NCR, ED, ET]] = True
    in_pred, in_gt = lut[pred_labels.astype(np.uint8, copy=False)], lut[gt_labels.astype(np.uint8, copy=False)]
    total = int(in_pred.sum()) + int(in_gt.sum())
    if total == 0:
        return 1.0
    return 2.0 * int(np.count_nonzero(in_gt & (pred_labels == gt_labels))) / total


# ----------------------------------------------------------------------------- surface distances


def surface(mask: np.ndarray) -> np.ndarray:
    """Surface voxels: mask voxels with a face neighbour outside the mask (or the image).

    Args:
        mask: bool ``(X, Y, Z)`` (any dimensionality).

    Returns:
        bool array of the same shape.
    """
    mask = np.asarray(mask, dtype=bool)
    structure = ndimage.generate_binary_structure(mask.ndim, 1)
    return mask & ~ndimage.binary_erosion(mask, structure=structure, border_value=0)


def surface_distances(pred: np.ndarray, gt: np.ndarray, spacing: float | Sequence[float] | None = None
                      ) -> tuple[np.ndarray, np.ndarray]:
    """Directed surface distances in mm, computed inside the masks' joint bounding box.

    Args:
        pred, gt: bool masks of equal shape, both non-empty.
        spacing: voxel size in mm per axis (or one number); 1 mm when None.

    Returns:
        ``(pred_to_gt, gt_to_pred)``: float64 arrays, one distance per surface voxel of the
        first-named mask to the nearest surface voxel of the other.

    Raises:
        ValueError: a mask is empty, shapes differ, or the spacing is invalid.
    """
    pred, gt = check_mask_pair(pred, gt)
    sampling = voxel_spacing(spacing, pred.ndim)
    box = bounding_box(pred | gt, margin=1)
    if box is None or not pred.any() or not gt.any():
        raise ValueError("surface distances need two non-empty masks")
    surf_pred, surf_gt = surface(pred[box]), surface(gt[box])
    # The crop keeps one background voxel around both masks (or the image edge, which counts as
    # background too), so surfaces and nearest-surface distances equal those of the full image.
    to_gt = ndimage.distance_transform_edt(~surf_gt, sampling=sampling)[surf_pred]
    to_pred = ndimage.distance_transform_edt(~surf_pred, sampling=sampling)[surf_gt]
    return to_gt, to_pred


def hd95(pred: np.ndarray, gt: np.ndarray, spacing: float | Sequence[float] | None = None,
         percentile: float = 95.0, empty_distance: float = HD95_EMPTY_MM, pooled: bool = False) -> float:
    """Robust Hausdorff distance: max of the two directed ``percentile``-th surface distances.

    Args:
        pred, gt: bool-like masks of equal shape.
        spacing: voxel size in mm per axis (or one number); 1 mm when None.
        percentile: in [0, 100]; 100 gives the classical Hausdorff distance.
        empty_distance: value when exactly one mask is empty (BraTS: 373.13 mm).
        pooled: take the percentile of both directions' distances together (medpy's CLI,
            panoptica / brats-evaluation) instead of the larger directed one.

    Returns:
        Distance in mm; 0 when both masks are empty.
    """
    pred, gt = check_mask_pair(pred, gt)
    if not 0 <= percentile <= 100:
        raise ValueError(f"percentile must be in [0, 100], got {percentile}")
    has_pred, has_gt = bool(pred.any()), bool(gt.any())
    if not has_pred and not has_gt:
        return 0.0
    if has_pred != has_gt:
        return float(empty_distance)
    to_gt, to_pred = surface_distances(pred, gt, spacing)
    if pooled:
        return float(np.percentile(np.concatenate([to_gt, to_pred]), percentile))
    return float(max(np.percentile(to_gt, percentile), np.percentile(to_pred, percentile)))


# ----------------------------------------------------------------------------- one region


def score_region(pred: np.ndarray, gt: np.ndarray, spacing: float | Sequence[float] | None = None,
                 n_voxels: int | None = None, empty_distance: float = HD95_EMPTY_MM,
                 pooled: bool = False) -> RegionScores:
    """Dice, HD95, sensitivity, specificity and volumes of one binary region.

    Args:
        pred, gt: bool masks ``(X, Y, Z)`` of equal shape.
        spacing: voxel size in mm; 1 mm when None.
        n_voxels: voxels of the whole image when ``pred``/``gt`` are a crop of it holding every
            mask voxel (sets the true negatives of the specificity); ``pred.size`` when None.
        empty_distance: HD95 when exactly one mask is empty (BraTS 2017-2021: 373.13 mm).
        pooled: pooled rather than max-directed HD95 (see :func:`hd95`).

    Returns:
        The region's scores; both masks empty -> Dice 1, HD95 0.
    """
    pred, gt = check_mask_pair(pred, gt)
    sampling = voxel_spacing(spacing, pred.ndim)
    voxel_ml = float(np.prod(sampling)) / 1000.0
    total = pred.size if n_voxels is None else int(n_voxels)
    box = bounding_box(pred | gt, margin=1)
    if box is None:
        return RegionScores(1.0, 0.0, 1.0, 1.0, 0.0, 0.0)
    p, g = pred[box], gt[box]
    tp, n_pred, n_gt = int(np.count_nonzero(p & g)), int(p.sum()), int(g.sum())
    sens, spec = _sens_spec(tp, n_pred - tp, n_gt - tp, total - n_pred - n_gt + tp)
    return RegionScores(
        dice=2.0 * tp / (n_pred + n_gt),
        hd95=hd95(p, g, sampling, empty_distance=empty_distance, pooled=pooled),
        sensitivity=sens,
        specificity=spec,
        volume_pred_ml=n_pred * voxel_ml,
        volume_true_ml=n_gt * voxel_ml,
    )
