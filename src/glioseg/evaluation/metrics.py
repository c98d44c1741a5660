"""Segmentation metrics by the BraTS rules: Dice, HD95, sensitivity, specificity, volumes,
BraTS 2023 lesion-wise Dice/HD95, and the seed's pooled Dice.

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
  area (DeepMind ``surface-distance``); both can differ from this by a fraction of a voxel.
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
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field

import cc3d
import numpy as np
from scipy import ndimage

from glioseg.labels import ED, ET, NCR, REGION_LABELS, REGIONS, Region

HD95_EMPTY_MM = 373.13  # BraTS 2017-2021 value when exactly one mask is empty
LESION_MISS_HD95_MM = 374.0  # BraTS 2023 value for missed and false-positive lesions
LESION_DILATION = 3
LESION_MIN_VOXELS = 50
REGION_METRICS: tuple[str, ...] = ("dice", "hd95", "sensitivity", "specificity",
                                   "volume_pred_ml", "volume_true_ml")
LESION_METRICS: tuple[str, ...] = ("lesion_dice", "lesion_hd95", "lesion_tp", "lesion_fp", "lesion_fn")
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

_CROSS = ndimage.generate_binary_structure(3, 1)
_STRUCT18 = ndimage.generate_binary_structure(3, 2)


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
    """BraTS 2023 lesion-wise scores of one region of one case.

    Attributes:
        lesion_dice: mean lesion Dice with false positives counted as 0.
        lesion_hd95: mean lesion HD95 in mm with false positives counted as 374.
        lesion_tp: scored ground-truth lesions that were matched.
        lesion_fp: predicted lesions that match no ground-truth lesion.
        lesion_fn: scored ground-truth lesions that were missed.
    """

    lesion_dice: float
    lesion_hd95: float
    lesion_tp: int
    lesion_fp: int
    lesion_fn: int


@dataclass
class CaseScores:
    """All scores of one case.

    Attributes:
        case_id: identifier.
        regions: region -> scores.
        pooled_dice: the seed's pooled Dice.
        lesion: region -> lesion-wise scores, or None when not computed.
        status: ``"ok"``, ``"missing"`` (no prediction) or ``"error"`` (unreadable input).
        message: what went wrong, for failures.
    """

    case_id: str
    regions: dict[Region, RegionScores]
    pooled_dice: float
    lesion: dict[Region, LesionScores] | None = None
    status: str = "ok"
    message: str = ""

    @property
    def failed(self) -> bool:
        """True for a missing or unreadable prediction."""
        return self.status != "ok"

    @property
    def mean_dice(self) -> float:
        """Mean Dice over the regions (used to rank cases)."""
        return float(np.mean([s.dice for s in self.regions.values()]))

    def to_row(self) -> dict[str, object]:
        """Flat dict for one CSV row: ``case_id, status, <metric>_<region>..., pooled_dice, message``."""
        row: dict[str, object] = {"case_id": self.case_id, "status": self.status}
        for name in REGION_METRICS:
            for region, scores in self.regions.items():
                row[f"{name}_{region.value}"] = getattr(scores, name)
        if self.lesion is not None:
            for name in LESION_METRICS:
                for region, lesion in self.lesion.items():
                    row[f"{name}_{region.value}"] = getattr(lesion, name)
        row["pooled_dice"] = self.pooled_dice
        row["message"] = self.message
        return row


# ----------------------------------------------------------------------------- helpers


def _check_pair(pred: np.ndarray, gt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pred, gt = np.asarray(pred, dtype=bool), np.asarray(gt, dtype=bool)
    if pred.shape != gt.shape:
        raise ValueError(f"prediction shape {pred.shape} != ground-truth shape {gt.shape}")
    return pred, gt


def _spacing(spacing: float | Sequence[float] | None, ndim: int) -> tuple[float, ...]:
    if spacing is None:
        return (1.0,) * ndim
    values = (float(spacing),) * ndim if np.isscalar(spacing) else tuple(float(s) for s in spacing)  # type: ignore[arg-type,union-attr]
    if len(values) != ndim or not all(math.isfinite(s) and s > 0 for s in values):
        raise ValueError(f"spacing {spacing} must be {ndim} positive numbers (mm)")
    return values


def bounding_box(mask: np.ndarray, margin: int = 0) -> tuple[slice, ...] | None:
    """Slices of the smallest box holding every True voxel, grown by ``margin`` and clipped.

    Args:
        mask: bool array of any dimensionality.
        margin: voxels added on each side (clipped at the array's edges).

    Returns:
        One slice per axis, or None for an empty mask.
    """
    slices = []
    for axis in range(mask.ndim):
        hit = np.flatnonzero(mask.any(axis=tuple(a for a in range(mask.ndim) if a != axis)))
        if hit.size == 0:
            return None
        slices.append(slice(max(int(hit[0]) - margin, 0), min(int(hit[-1]) + 1 + margin, mask.shape[axis])))
    return tuple(slices)


def _union_box(pred: np.ndarray, gt: np.ndarray, margin: int) -> tuple[slice, ...] | None:
    """Bounding box of ``pred | gt`` from per-axis projections (no full-size union array)."""
    slices = []
    for axis in range(pred.ndim):
        others = tuple(a for a in range(pred.ndim) if a != axis)
        hit = np.flatnonzero(pred.any(axis=others) | gt.any(axis=others))
        if hit.size == 0:
            return None
        slices.append(slice(max(int(hit[0]) - margin, 0), min(int(hit[-1]) + 1 + margin, pred.shape[axis])))
    return tuple(slices)


# ----------------------------------------------------------------------------- overlap metrics


def dice(pred: np.ndarray, gt: np.ndarray) -> float:
    """Dice coefficient ``2|P & G| / (|P| + |G|)``; 1 when both masks are empty.

    Args:
        pred, gt: bool-like masks of equal shape.

    Returns:
        Dice in [0, 1].
    """
    pred, gt = _check_pair(pred, gt)
    total = int(pred.sum()) + int(gt.sum())
    return 1.0 if total == 0 else 2.0 * int(np.count_nonzero(pred & gt)) / total


def sensitivity_specificity(pred: np.ndarray, gt: np.ndarray) -> tuple[float, float]:
    """Voxel sensitivity TP/(TP+FN) and specificity TN/(TN+FP) over the whole image.

    Args:
        pred, gt: bool-like masks of equal shape.

    Returns:
        ``(sensitivity, specificity)``; sensitivity is 1 when both masks are empty and 0 when
        only the ground truth is; specificity is 1 when there is no background voxel.
    """
    pred, gt = _check_pair(pred, gt)
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
    pred, gt = _check_pair(pred, gt)
    sampling = _spacing(spacing, pred.ndim)
    box = _union_box(pred, gt, margin=1)
    if box is None or not pred.any() or not gt.any():
        raise ValueError("surface distances need two non-empty masks")
    surf_pred, surf_gt = surface(pred[box]), surface(gt[box])
    # The crop keeps one background voxel around both masks (or the image edge, which counts as
    # background too), so surfaces and nearest-surface distances equal those of the full image.
    to_gt = ndimage.distance_transform_edt(~surf_gt, sampling=sampling)[surf_pred]
    to_pred = ndimage.distance_transform_edt(~surf_pred, sampling=sampling)[surf_gt]
    return to_gt, to_pred


def hd95(pred: np.ndarray, gt: np.ndarray, spacing: float | Sequence[float] | None = None,
         percentile: float = 95.0, empty_distance: float = HD95_EMPTY_MM) -> float:
    """Robust Hausdorff distance: max of the two directed ``percentile``-th surface distances.

    Args:
        pred, gt: bool-like masks of equal shape.
        spacing: voxel size in mm per axis (or one number); 1 mm when None.
        percentile: in [0, 100]; 100 gives the classical Hausdorff distance.
        empty_distance: value when exactly one mask is empty (BraTS: 373.13 mm).

    Returns:
        Distance in mm; 0 when both masks are empty.
    """
    pred, gt = _check_pair(pred, gt)
    if not 0 <= percentile <= 100:
        raise ValueError(f"percentile must be in [0, 100], got {percentile}")
    has_pred, has_gt = bool(pred.any()), bool(gt.any())
    if not has_pred and not has_gt:
        return 0.0
    if has_pred != has_gt:
        return float(empty_distance)
    to_gt, to_pred = surface_distances(pred, gt, spacing)
    return float(max(np.percentile(to_gt, percentile), np.percentile(to_pred, percentile)))


# ----------------------------------------------------------------------------- one region


def score_region(pred: np.ndarray, gt: np.ndarray, spacing: float | Sequence[float] | None = None,
                 n_voxels: int | None = None) -> RegionScores:
    """Dice, HD95, sensitivity, specificity and volumes of one binary region.

    Args:
        pred, gt: bool masks ``(X, Y, Z)`` of equal shape.
        spacing: voxel size in mm; 1 mm when None.
        n_voxels: voxels of the whole image when ``pred``/``gt`` are a crop of it holding every
            mask voxel (sets the true negatives of the specificity); ``pred.size`` when None.

    Returns:
        The region's scores, with the BraTS 2017-2021 empty-mask conventions.
    """
    pred, gt = _check_pair(pred, gt)
    sampling = _spacing(spacing, pred.ndim)
    voxel_ml = float(np.prod(sampling)) / 1000.0
    total = pred.size if n_voxels is None else int(n_voxels)
    box = _union_box(pred, gt, margin=1)
    if box is None:
        return RegionScores(1.0, 0.0, 1.0, 1.0, 0.0, 0.0)
    p, g = pred[box], gt[box]
    tp, n_pred, n_gt = int(np.count_nonzero(p & g)), int(p.sum()), int(g.sum())
    sens, spec = _sens_spec(tp, n_pred - tp, n_gt - tp, total - n_pred - n_gt + tp)
    return RegionScores(
        dice=2.0 * tp / (n_pred + n_gt),
        hd95=hd95(p, g, sampling),
        sensitivity=sens,
        specificity=spec,
        volume_pred_ml=n_pred * voxel_ml,
        volume_true_ml=n_gt * voxel_ml,
    )


# ----------------------------------------------------------------------------- lesion-wise


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
    pred, gt = _check_pair(pred, gt)
    sampling = _spacing(spacing, pred.ndim)
    box = _union_box(pred, gt, margin=dilation + 1)
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


# ----------------------------------------------------------------------------- one case


def compute_brats_metrics(pred_labels: np.ndarray, gt_labels: np.ndarray,
                          spacing: float | Sequence[float] | None = None, lesion_wise: bool = False,
                          case_id: str = "") -> CaseScores:
    """Every BraTS metric of one case, per region WT, TC, ET.

    Args:
        pred_labels, gt_labels: uint8 canonical label maps ``(X, Y, Z)`` on the same grid.
        spacing: voxel size in mm along the arrays' axes; 1 mm when None.
        lesion_wise: also compute the BraTS 2023 lesion-wise scores.
        case_id: identifier stored in the result.

    Returns:
        The case's scores.

    Raises:
        ValueError: shapes differ or the spacing is invalid.
    """
    pred_labels, gt_labels = np.asarray(pred_labels), np.asarray(gt_labels)
    if pred_labels.shape != gt_labels.shape:
        raise ValueError(f"case {case_id}: prediction shape {pred_labels.shape} != ground truth "
                         f"shape {gt_labels.shape}")
    sampling = _spacing(spacing, pred_labels.ndim)
    n_voxels = pred_labels.size
    # Every region lies inside the labelled voxels: crop once (margin for erosion and dilation).
    box = _union_box(pred_labels > 0, gt_labels > 0, margin=LESION_DILATION + 1)
    if box is not None:
        pred_labels, gt_labels = pred_labels[box], gt_labels[box]
    pred_labels, gt_labels = pred_labels.astype(np.uint8, copy=False), gt_labels.astype(np.uint8, copy=False)
    pooled = pooled_dice(pred_labels, gt_labels)
    lesion: dict[Region, LesionScores] | None = {} if lesion_wise else None
    regions = {}
    for region in REGIONS:
        lut = np.zeros(256, dtype=bool)
        lut[list(REGION_LABELS[region])] = True
        pred, gt = lut[pred_labels], lut[gt_labels]
        regions[region] = score_region(pred, gt, sampling, n_voxels)
        if lesion is not None:
            lesion[region] = lesion_wise_scores(pred, gt, sampling)
    return CaseScores(case_id, regions, pooled, lesion)


def failed_case(case_id: str, status: str, message: str, volume_true_ml: dict[Region, float] | None = None,
                lesion_wise: bool = False) -> CaseScores:
    """Scores of a case whose prediction is missing or unreadable: the worst value everywhere.

    Args:
        case_id: identifier.
        status: ``"missing"`` or ``"error"``.
        message: what went wrong.
        volume_true_ml: ground-truth volumes when known.
        lesion_wise: also fill lesion-wise scores (Dice 0, HD95 374).

    Returns:
        Dice 0, HD95 373.13, sensitivity 0 and specificity 0 in every region.
    """
    known = volume_true_ml or {}
    regions = {r: RegionScores(0.0, HD95_EMPTY_MM, 0.0, 0.0, math.nan, known.get(r, math.nan)) for r in REGIONS}
    lesion = {r: LesionScores(0.0, LESION_MISS_HD95_MM, 0, 0, 0) for r in REGIONS} if lesion_wise else None
    return CaseScores(case_id, regions, 0.0, lesion, status, message)


# ----------------------------------------------------------------------------- aggregation


def describe(values: Iterable[float]) -> dict[str, float]:
    """Summary statistics of finite values: n, mean, std (ddof=0), median, q1, q3, min, max."""
    arr = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=np.float64)
    if arr.size == 0:
        return {"n": 0, **{k: math.nan for k in ("mean", "std", "median", "q1", "q3", "min", "max")}}
    q1, median, q3 = np.percentile(arr, [25, 50, 75])
    return {"n": int(arr.size), "mean": float(arr.mean()), "std": float(arr.std()), "median": float(median),
            "q1": float(q1), "q3": float(q3), "min": float(arr.min()), "max": float(arr.max())}


def summarize(cases: Sequence[CaseScores]) -> dict[str, dict[str, dict[str, float]]]:
    """Per region and metric summary over cases.

    Args:
        cases: scored cases, failures included.

    Returns:
        ``{region: {metric: describe(...)}}`` plus ``{"all": {"pooled_dice": ...}}``.
    """
    out: dict[str, dict[str, dict[str, float]]] = {}
    for region in REGIONS:
        per_metric = {m: describe(getattr(c.regions[region], m) for c in cases) for m in REGION_METRICS}
        lesion_cases = [c for c in cases if c.lesion is not None]
        if lesion_cases:
            per_metric.update({m: describe(float(getattr(c.lesion[region], m)) for c in lesion_cases)  # type: ignore[index]
                               for m in LESION_METRICS})
        out[region.value] = per_metric
    out["all"] = {"pooled_dice": describe(c.pooled_dice for c in cases)}
    return out


@dataclass
class BraTSMetric:
    """Stateful accumulator of :func:`compute_brats_metrics` over cases (cf. MONAI's DiceMetric).

    Call it once per case, then :meth:`aggregate`; :meth:`reset` starts over.

    Attributes:
        spacing: default voxel size in mm when a call gives none.
        lesion_wise: also compute the BraTS 2023 lesion-wise scores.
        cases: the scored cases, in call order.
    """

    spacing: float | Sequence[float] | None = None
    lesion_wise: bool = False
    cases: list[CaseScores] = field(default_factory=list)

    def __call__(self, pred_labels: np.ndarray, gt_labels: np.ndarray,
                 spacing: float | Sequence[float] | None = None, case_id: str = "") -> CaseScores:
        """Score one case (label maps ``(X, Y, Z)`` uint8 canonical) and remember it."""
        scores = compute_brats_metrics(pred_labels, gt_labels, spacing if spacing is not None else self.spacing,
                                       self.lesion_wise, case_id or f"case_{len(self.cases)}")
        self.cases.append(scores)
        return scores

    def add(self, scores: CaseScores) -> None:
        """Remember a case scored elsewhere (e.g. in a worker process, or a failure)."""
        self.cases.append(scores)

    def aggregate(self) -> dict[str, dict[str, dict[str, float]]]:
        """Summary over the cases so far (see :func:`summarize`)."""
        return summarize(self.cases)

    def reset(self) -> None:
        """Forget every case."""
        self.cases.clear()

    def rows(self) -> list[dict[str, object]]:
        """One flat dict per case, for a CSV."""
        return [c.to_row() for c in self.cases]


def scores_to_dict(scores: RegionScores | LesionScores) -> dict[str, float]:
    """Plain dict of one region's scores (JSON-able)."""
    return {k: float(v) for k, v in asdict(scores).items()}
