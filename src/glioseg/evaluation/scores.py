"""Per-case BraTS scores and their summaries: every region's voxel-wise and lesion-wise metrics
of one case by one protocol (:func:`compute_brats_metrics`, rules in
:mod:`glioseg.evaluation.protocols`), the record of a failed case, the summary over cases, and
the stateful :class:`BraTSMetric` accumulator.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from glioseg.evaluation.lesionwise import LESION_DILATION, lesion_wise_scores, matched_lesion_scores
from glioseg.evaluation.metrics import (
    LESION_METRICS,
    MATCHED_LESION_METRICS,
    REGION_METRICS,
    LesionScores,
    RegionScores,
    pooled_dice,
    score_region,
    voxel_spacing,
)
from glioseg.evaluation.protocols import DEFAULT_PROTOCOL, Protocol, get_protocol
from glioseg.labels import REGION_LABELS, REGIONS, Region
from glioseg.utils import bounding_box


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
        protocol: name of the protocol it was scored by.
    """

    case_id: str
    regions: dict[Region, RegionScores]
    pooled_dice: float
    lesion: dict[Region, LesionScores] | None = None
    status: str = "ok"
    message: str = ""
    protocol: str = DEFAULT_PROTOCOL

    @property
    def failed(self) -> bool:
        """True for a missing or unreadable prediction."""
        return self.status != "ok"

    @property
    def mean_dice(self) -> float:
        """Mean Dice over the regions (used to rank cases; NaN regions of brats2025 left out)."""
        values = [s.dice for s in self.regions.values() if not math.isnan(s.dice)]
        return float(np.mean(values)) if values else 1.0

    def to_row(self) -> dict[str, object]:
        """Flat dict for one CSV row: ``case_id, status, <metric>_<region>..., pooled_dice, message``."""
        row: dict[str, object] = {"case_id": self.case_id, "status": self.status}
        for name in REGION_METRICS:
            for region, scores in self.regions.items():
                row[f"{name}_{region.value}"] = getattr(scores, name)
        if self.lesion is not None:
            for name in lesion_metrics(self.protocol):
                for region, lesion in self.lesion.items():
                    row[f"{name}_{region.value}"] = getattr(lesion, name)
        row["pooled_dice"] = self.pooled_dice
        row["message"] = self.message
        return row


def lesion_metrics(protocol: str | Protocol) -> tuple[str, ...]:
    """The lesion-wise metric names a protocol reports (brats2025 adds ``lesion_f1``)."""
    return MATCHED_LESION_METRICS if get_protocol(protocol).matching == "one-to-one" else LESION_METRICS


def compute_brats_metrics(pred_labels: np.ndarray, gt_labels: np.ndarray,
                          spacing: float | Sequence[float] | None = None, lesion_wise: bool = False,
                          case_id: str = "", protocol: str | Protocol = DEFAULT_PROTOCOL) -> CaseScores:
    """Every BraTS metric of one case, per region WT, TC, ET, by one protocol.

    Args:
        pred_labels, gt_labels: uint8 canonical label maps ``(X, Y, Z)`` on the same grid.
        spacing: voxel size in mm along the arrays' axes; 1 mm when None.
        lesion_wise: also compute lesion-wise scores (always on for protocols that have them).
        case_id: identifier stored in the result.
        protocol: a name of :data:`glioseg.evaluation.protocols.PROTOCOLS` (or the row).

    Returns:
        The case's scores.

    Raises:
        ValueError: shapes differ or the spacing is invalid. ProtocolError: unknown protocol.
    """
    rules = get_protocol(protocol)
    pred_labels, gt_labels = np.asarray(pred_labels), np.asarray(gt_labels)
    if pred_labels.shape != gt_labels.shape:
        raise ValueError(f"case {case_id}: prediction shape {pred_labels.shape} != ground truth "
                         f"shape {gt_labels.shape}")
    sampling = voxel_spacing(spacing, pred_labels.ndim)
    n_voxels = pred_labels.size
    pred_labels, gt_labels = _crop_to_labels(pred_labels, gt_labels)
    pooled = pooled_dice(pred_labels, gt_labels)
    lesion: dict[Region, LesionScores] | None = {} if lesion_wise or rules.lesion_wise else None
    regions = {}
    for region in REGIONS:
        pred, gt = _region_mask(pred_labels, region), _region_mask(gt_labels, region)
        regions[region] = _score_region(pred, gt, sampling, n_voxels, rules)
        if lesion is not None:
            lesion[region] = _score_lesions(pred, gt, sampling, rules, region)
    return CaseScores(case_id, regions, pooled, lesion, protocol=rules.name)


def _score_region(pred: np.ndarray, gt: np.ndarray, sampling: Sequence[float], n_voxels: int,
                  rules: Protocol) -> RegionScores:
    """Case-level scores of one region; brats2025 (panoptica's global metrics): both empty -> NaN,
    no overlap -> Dice 0 and HD95 373 (brats-evaluation's replacement of panoptica's inf)."""
    one_to_one = rules.matching == "one-to-one"
    scores = score_region(pred, gt, sampling, n_voxels, rules.hd95_one_empty_mm, pooled=rules.hd95 == "pooled-p95")
    if not one_to_one:
        return scores
    if not pred.any() and not gt.any():
        return replace(scores, dice=math.nan, hd95=math.nan)
    if not np.any(pred & gt):
        return replace(scores, dice=0.0, hd95=rules.hd95_one_empty_mm)
    return scores


def _score_lesions(pred: np.ndarray, gt: np.ndarray, sampling: Sequence[float], rules: Protocol,
                   region: Region) -> LesionScores:
    """Lesion-wise scores of one region by the protocol's matching rule."""
    if rules.matching == "one-to-one":
        return matched_lesion_scores(pred, gt, sampling)
    return lesion_wise_scores(pred, gt, sampling, rules.dilation, rules.min_lesion(region), rules.lesion_miss_hd95_mm)


def _crop_to_labels(pred_labels: np.ndarray, gt_labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both label maps (as uint8) inside the box of their labelled voxels.

    Every region lies inside it; the margin leaves room for the erosion of the surfaces and the
    dilation of the lesion matching, so every score equals that of the full maps.
    """
    box = bounding_box((pred_labels > 0) | (gt_labels > 0), margin=LESION_DILATION + 1)
    if box is not None:
        pred_labels, gt_labels = pred_labels[box], gt_labels[box]
    return pred_labels.astype(np.uint8, copy=False), gt_labels.astype(np.uint8, copy=False)


def _region_mask(labels: np.ndarray, region: Region) -> np.ndarray:
    """bool mask of a region in a uint8 canonical label map (same shape)."""
    lut = np.zeros(256, dtype=bool)
    lut[list(REGION_LABELS[region])] = True
    return lut[labels]


def failed_case(case_id: str, status: str, message: str, volume_true_ml: dict[Region, float] | None = None,
                lesion_wise: bool = False, protocol: str | Protocol = DEFAULT_PROTOCOL) -> CaseScores:
    """Scores of a case whose prediction is missing or unreadable: the worst value everywhere.

    Args:
        case_id: identifier.
        status: ``"missing"`` or ``"error"``.
        message: what went wrong.
        volume_true_ml: ground-truth volumes when known.
        lesion_wise: also fill lesion-wise scores (always for protocols that have them).
        protocol: the protocol whose penalties apply.

    Returns:
        Dice 0, the protocol's failure HD95 (brats2021: 373.13 mm, brats2023/2024: 374,
        brats2025: 373 as brats-evaluation's metrics_parser), sensitivity 0 and specificity 0 in
        every region; lesion-wise Dice 0, HD95 the same penalty, F1 0 (brats2025).
    """
    rules = get_protocol(protocol)
    known = volume_true_ml or {}
    worst = rules.failure_hd95_mm
    regions = {r: RegionScores(0.0, worst, 0.0, 0.0, math.nan, known.get(r, math.nan)) for r in REGIONS}
    lesion_worst = worst if rules.lesion_wise else rules.lesion_miss_hd95_mm
    f1 = 0.0 if rules.matching == "one-to-one" else math.nan
    lesion = ({r: LesionScores(0.0, lesion_worst, 0, 0, 0, f1) for r in REGIONS}
              if lesion_wise or rules.lesion_wise else None)
    return CaseScores(case_id, regions, 0.0, lesion, status, message, rules.name)


def describe(values: Iterable[float]) -> dict[str, float]:
    """Summary statistics: n, mean, std (ddof=0), median, q1, q3, min, max.

    NaN and None are left out (brats2025 marks regions with both masks empty NaN, as pandas'
    ``mean`` in brats-evaluation skips them); ``inf`` stays in, as it does there.
    """
    arr = np.asarray([v for v in values if v is not None and not math.isnan(v)], dtype=np.float64)
    if arr.size == 0:
        return {"n": 0, **{k: math.nan for k in ("mean", "std", "median", "q1", "q3", "min", "max")}}
    q1, median, q3 = (_quantile(np.sort(arr), q) for q in (0.25, 0.5, 0.75))
    with np.errstate(invalid="ignore"):  # the std of values holding inf is NaN, as in pandas
        std = float(arr.std())
    return {"n": int(arr.size), "mean": float(arr.mean()), "std": std, "median": float(median),
            "q1": float(q1), "q3": float(q3), "min": float(arr.min()), "max": float(arr.max())}


def _quantile(ordered: np.ndarray, q: float) -> float:
    """Linear-interpolation quantile of sorted values (numpy's default) that keeps ``inf`` where
    pandas does (numpy's interpolation turns ``inf - inf`` into NaN)."""
    pos = q * (ordered.size - 1)
    lo, hi = math.floor(pos), math.ceil(pos)
    if lo == hi or ordered[lo] == ordered[hi]:
        return float(ordered[lo])
    return float(ordered[lo] + (pos - lo) * (ordered[hi] - ordered[lo]))


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
                               for m in lesion_metrics(lesion_cases[0].protocol)})
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
        protocol: the scoring protocol (name in :data:`glioseg.evaluation.protocols.PROTOCOLS`).
    """

    spacing: float | Sequence[float] | None = None
    lesion_wise: bool = False
    cases: list[CaseScores] = field(default_factory=list)
    protocol: str = DEFAULT_PROTOCOL

    def __call__(self, pred_labels: np.ndarray, gt_labels: np.ndarray,
                 spacing: float | Sequence[float] | None = None, case_id: str = "") -> CaseScores:
        """Score one case (label maps ``(X, Y, Z)`` uint8 canonical) and remember it."""
        scores = compute_brats_metrics(pred_labels, gt_labels, spacing if spacing is not None else self.spacing,
                                       self.lesion_wise, case_id or f"case_{len(self.cases)}", self.protocol)
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
