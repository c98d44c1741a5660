"""HGG vs LGG from the radiomics features: an L2 logistic regression on a few features selected
inside the cross-validation loop, against the majority-class baseline, with Wilson intervals.

The model: the :data:`TOP_K` features with the largest absolute Spearman correlation with the
0/1 grade in the training fold, without redundant pairs (:mod:`glioseg.radiomics.selection`),
standardised, logistic regression with ``C`` = :data:`C` and balanced class weights (sklearn,
lbfgs); ``eta`` is the log-odds of HGG.

The baseline predicts the majority class of the training fold for everyone. Both are scored by
leave-one-out accuracy with a Wilson 95 % interval, plus balanced accuracy, the pooled held-out
ROC AUC and the log-loss (the baseline's probability is the training fold's HGG share). With
27 HGG and 4 LGG shared cases the intervals are wide and overlap: see the model card.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from glioseg.radiomics.errors import RadiomicsError
from glioseg.radiomics.features import FeatureTable
from glioseg.radiomics.models_io import FittedModel
from glioseg.radiomics.selection import select_columns

TOP_K = 3
C = 1.0
Z95 = 1.959963984540054


@dataclass
class GradeData:
    """Cases with features and a grade.

    Attributes:
        case_ids: one per row.
        names: feature columns of ``x``.
        x: float64 ``(N, F)``.
        hgg: bool ``(N,)``.
        left_out: case ID -> why it has no grade.
    """

    case_ids: list[str]
    names: list[str]
    x: np.ndarray
    hgg: np.ndarray
    left_out: dict[str, str] = field(default_factory=dict)


def join_grades(features: FeatureTable, grades: dict[str, str]) -> GradeData:
    """Rows of ``features`` with a grade.

    Raises:
        RadiomicsError: no case of either grade (nothing to learn from).
    """
    rows = [i for i, c in enumerate(features.case_ids) if c in grades]
    left = {c: "not in the grade table" for c in features.case_ids if c not in grades}
    hgg = np.array([grades[features.case_ids[i]] == "HGG" for i in rows], dtype=bool)
    if hgg.all() or not hgg.any():
        raise RadiomicsError(f"the {len(rows)} graded cases are all {'HGG' if hgg.any() else 'LGG'}; fitting a grade "
                             "model needs both grades: check that BraTS18ID matches the features' case_id")
    return GradeData([features.case_ids[i] for i in rows], list(features.names), features.values[rows], hgg, left)


def wilson_interval(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval of a proportion ``successes / n`` (``(0, 1)`` when n is 0)."""
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def select_grade_features(x: np.ndarray, hgg: np.ndarray, k: int = TOP_K) -> list[int]:
    """The ``k`` columns most rank-correlated with the grade, without redundant pairs (see
    :mod:`glioseg.radiomics.selection`)."""
    return select_columns(x, hgg.astype(np.float64), k)


def fit_grade_model(x: np.ndarray, hgg: np.ndarray, names: Sequence[str]) -> FittedModel:
    """Select, standardise and fit the logistic model on these rows (both grades must be present)."""
    from sklearn.linear_model import LogisticRegression

    cols = select_grade_features(x, hgg)
    sub = x[:, cols]
    mean, scale = sub.mean(axis=0), sub.std(axis=0)
    scale = np.where(scale > 1e-12, scale, 1.0)
    clf = LogisticRegression(C=C, class_weight="balanced", max_iter=1000).fit((sub - mean) / scale, hgg)
    return FittedModel("grade", "logistic", "logistic_radiomics", [names[j] for j in cols],
                       [float(v) for v in mean], [float(v) for v in scale], [float(v) for v in clf.coef_[0]],
                       float(clf.intercept_[0]), "log_odds_hgg", info={"C": C, "class_weight": "balanced"})


def predict_hgg(model: FittedModel, x: np.ndarray) -> np.ndarray:
    """P(HGG) float64 ``(N,)`` for inputs ``x`` ``(N, len(model.inputs))``."""
    return 1.0 / (1.0 + np.exp(-model.linear_predictor(x)))


def inputs_of(model: FittedModel, names: Sequence[str], x: np.ndarray) -> np.ndarray:
    """The columns of ``x`` (named ``names``) the model reads, in its order."""
    return x[:, [list(names).index(n) for n in model.inputs]]


def loo_grade(data: GradeData) -> tuple[np.ndarray, np.ndarray]:
    """Leave-one-out P(HGG) of the model and of the majority baseline (training-fold HGG share)."""
    n = len(data.hgg)
    model_p, base_p = np.zeros(n), np.zeros(n)
    for i in range(n):
        train = np.arange(n) != i
        base_p[i] = float(data.hgg[train].mean())
        if data.hgg[train].all() or not data.hgg[train].any():
            model_p[i] = base_p[i]  # one grade left: nothing to fit, fall back to the prior
            continue
        model = fit_grade_model(data.x[train], data.hgg[train], data.names)
        model_p[i] = predict_hgg(model, inputs_of(model, data.names, data.x[i:i + 1]))[0]
    return model_p, base_p


def mcnemar_exact(a_correct: np.ndarray, b_correct: np.ndarray) -> float:
    """Two-sided exact McNemar p-value of two classifiers' paired correctness (1.0 without discordant pairs)."""
    b = int((a_correct & ~b_correct).sum())
    c = int((~a_correct & b_correct).sum())
    n = b + c
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(min(b, c) + 1)) / 2**n
    return min(1.0, 2 * tail)


def grade_metrics(p_hgg: np.ndarray, hgg: np.ndarray, constant: bool = False) -> dict[str, float]:
    """Accuracy (threshold 0.5) with its Wilson 95 % interval, sensitivity / specificity (with the
    specificity's interval: it rests on the few LGG cases), balanced accuracy, ROC AUC, log-loss.

    Args:
        p_hgg: float ``(N,)`` held-out P(HGG).
        hgg: bool ``(N,)`` truth.
        constant: the scores come from a constant classifier (the majority baseline): its AUC is
            0.5 by definition (LOO training shares would otherwise rank the held-out case).
    """
    from sklearn.metrics import roc_auc_score

    predicted = p_hgg >= 0.5
    correct = int((predicted == hgg).sum())
    low, high = wilson_interval(correct, len(hgg))
    sens = float(predicted[hgg].mean()) if hgg.any() else float("nan")
    spec = float((~predicted[~hgg]).mean()) if (~hgg).any() else float("nan")
    auc = float(roc_auc_score(hgg, p_hgg)) if np.ptp(p_hgg) > 0 and not constant else 0.5
    spec_low, spec_high = wilson_interval(int((~predicted[~hgg]).sum()), int((~hgg).sum()))
    eps = 1e-6
    p = np.clip(p_hgg, eps, 1 - eps)
    logloss = float(-np.mean(np.where(hgg, np.log(p), np.log(1 - p))))
    return {"accuracy": correct / len(hgg), "accuracy_ci_low": low, "accuracy_ci_high": high,
            "correct": float(correct), "n": float(len(hgg)), "sensitivity_hgg": sens, "specificity_lgg": spec,
            "specificity_ci_low": spec_low, "specificity_ci_high": spec_high,
            "balanced_accuracy": 0.5 * (sens + spec), "auc": auc, "log_loss": logloss}
