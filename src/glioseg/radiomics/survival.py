"""Overall-survival prediction from age and radiomics features: the models, their cross-validation
(repeated k-fold by default, or leave-one-out) with the BraTS metrics, and the model to ship.

Models (:data:`MODELS`), all linear in standardised inputs (:class:`~glioseg.radiomics.models_io.FittedModel`):

- ``age_linear``: ordinary least squares of days on age alone, the BraTS 2018 baseline that
  placed third of 26 in the challenge.
- ``ridge_radiomics``: age plus the :data:`TOP_K` radiomics features with the largest absolute
  Spearman correlation with survival *in the training fold*, skipping redundant ones
  (:mod:`glioseg.radiomics.selection`); ridge regression of log-days with the
  penalty chosen by leave-one-out inside the training fold (sklearn ``RidgeCV``); predicts
  ``exp``.
- ``cox_radiomics``: the same selection; Cox proportional hazards with a ridge penalty
  :data:`COX_ALPHA` (scikit-survival), censored patients used as censored; the predicted days
  are the median of the predicted survival curve (Breslow baseline), or the last event time when
  the curve stays above 0.5.
- ``median_days`` (reference only, never shipped): the training fold's median survival.

Feature selection and every fitted parameter are inside the CV loop: the held-out patients are
never seen. The default CV is 5-fold repeated 20 times (seeded): leave-one-out biases Spearman's
rho strongly negative for models that barely depend on the inputs (leaving out a long survivor
lowers the training mean the model predicts for it). Metrics on the held-out predictions of
deceased patients, per repeat, then averaged: 3-class accuracy
(:func:`glioseg.radiomics.clinical.survival_class`), MSE and median squared error (days^2),
Spearman's rho. The shipped model is the one with the best accuracy (ties: higher rho, then
lower MSE); the baseline wins ties, so a radiomics model is shipped only if it beats age alone.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from glioseg.radiomics.clinical import Patient, survival_class
from glioseg.radiomics.errors import RadiomicsError
from glioseg.radiomics.features import FeatureTable
from glioseg.radiomics.models_io import FittedModel
from glioseg.radiomics.selection import select_columns

AGE = "age"
TOP_K = 5
COX_ALPHA = 1.0
RIDGE_ALPHAS: tuple[float, ...] = tuple(float(a) for a in np.logspace(-2, 3, 11))
BASELINE = "age_linear"
MIN_PATIENTS = 5


@dataclass
class SurvivalData:
    """Patients with features, age and survival.

    Attributes:
        case_ids: one per row.
        names: columns of ``x``: ``age`` then the feature names.
        x: float64 ``(N, 1 + F)``.
        days: float64 ``(N,)`` survival (a lower bound when not ``event``).
        event: bool ``(N,)``: True = deceased at ``days``.
        left_out: case ID -> why it is not in the data (no survival, no features, ...).
    """

    case_ids: list[str]
    names: list[str]
    x: np.ndarray
    days: np.ndarray
    event: np.ndarray
    left_out: dict[str, str] = field(default_factory=dict)


def join_survival(features: FeatureTable, patients: dict[str, Patient]) -> SurvivalData:
    """Rows of ``features`` whose case is in the clinical table with a known survival.

    Raises:
        RadiomicsError: fewer than :data:`MIN_PATIENTS` deceased patients remain.
    """
    rows, left = [], {}
    for i, case_id in enumerate(features.case_ids):
        p = patients.get(case_id)
        if p is None:
            left[case_id] = "not in the clinical table"
        elif p.days is None:
            left[case_id] = "survival unknown (NA)"
        else:
            rows.append((i, p))
    if sum(p.event for _, p in rows) < MIN_PATIENTS:
        raise RadiomicsError(f"only {sum(p.event for _, p in rows)} deceased patients have both features and a "
                             f"survival; fitting needs >= {MIN_PATIENTS}: check that the BraTS18ID column matches the "
                             "features' case_id")
    x = np.array([[p.age, *features.values[i]] for i, p in rows], dtype=np.float64)
    return SurvivalData([p.case_id for _, p in rows], [AGE, *features.names], x,
                        np.array([p.days for _, p in rows], dtype=np.float64),
                        np.array([p.event for _, p in rows], dtype=bool), left)


def _standardise(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(z, mean, scale)``; a constant column gets scale 1 (it is then all zeros)."""
    mean = x.mean(axis=0)
    scale = x.std(axis=0)
    scale = np.where(scale > 1e-12, scale, 1.0)
    return (x - mean) / scale, mean, scale


def select_features(x: np.ndarray, y: np.ndarray, names: Sequence[str], k: int = TOP_K) -> list[int]:
    """Column indices: ``age`` plus ``k`` others chosen by :func:`glioseg.radiomics.selection.select_columns`
    on these rows only (the training fold)."""
    age = [names.index(AGE)] if AGE in names else []
    return [*age, *select_columns(x, y, k, skip=age)]


def _model(name: str, kind: str, names: Sequence[str], cols: Sequence[int], mean: np.ndarray, scale: np.ndarray,
           coef: np.ndarray, intercept: float, target: str, **extra: Any) -> FittedModel:
    return FittedModel("survival", kind, name, [names[j] for j in cols], [float(v) for v in mean],
                       [float(v) for v in scale], [float(v) for v in coef], float(intercept), target, **extra)


def fit_age_linear(data: SurvivalData) -> FittedModel:
    """Least squares of days on age (deceased patients only)."""
    cols = [data.names.index(AGE)]
    x, y = data.x[data.event][:, cols], data.days[data.event]
    z, mean, scale = _standardise(x)
    slope = float(np.dot(z[:, 0], y - y.mean()) / max(float(np.dot(z[:, 0], z[:, 0])), 1e-12))
    return _model(BASELINE, "linear", data.names, cols, mean, scale, np.array([slope]), float(y.mean()), "days")


def fit_median_days(data: SurvivalData) -> FittedModel:
    """The median survival of the deceased patients, whatever the inputs."""
    cols = [data.names.index(AGE)]
    return _model("median_days", "linear", data.names, cols, np.zeros(1), np.ones(1), np.zeros(1),
                  float(np.median(data.days[data.event])), "days")


def fit_ridge_radiomics(data: SurvivalData) -> FittedModel:
    """Age + top-k radiomics features (selected on these rows), ridge on log-days, alpha by inner LOO."""
    from sklearn.linear_model import RidgeCV

    x, y = data.x[data.event], np.log(np.maximum(data.days[data.event], 1.0))
    cols = select_features(x, y, data.names)
    z, mean, scale = _standardise(x[:, cols])
    ridge = RidgeCV(alphas=RIDGE_ALPHAS).fit(z, y)
    return _model("ridge_radiomics", "linear", data.names, cols, mean, scale, ridge.coef_, float(ridge.intercept_),
                  "log_days", info={"alpha": float(ridge.alpha_)})


def breslow(eta: np.ndarray, days: np.ndarray, event: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Breslow baseline cumulative hazard: ``(event times ascending, H0 at each)``."""
    times = np.unique(days[event])
    risk = np.exp(eta)
    increments = [event[days == t].sum() / risk[days >= t].sum() for t in times]
    return times, np.cumsum(increments)


def fit_cox_radiomics(data: SurvivalData) -> FittedModel:
    """Age + top-k radiomics features (selected on the deceased rows), ridge-penalised Cox PH."""
    from sksurv.linear_model import CoxPHSurvivalAnalysis
    from sksurv.util import Surv

    dead = data.event
    cols = select_features(data.x[dead], data.days[dead], data.names)
    z, mean, scale = _standardise(data.x[:, cols])
    cox = CoxPHSurvivalAnalysis(alpha=COX_ALPHA, ties="breslow").fit(z, Surv.from_arrays(data.event, data.days))
    times, cumhaz = breslow(z @ cox.coef_, data.days, data.event)
    return _model("cox_radiomics", "cox", data.names, cols, mean, scale, cox.coef_, 0.0, "log_hazard",
                  baseline_times=[float(t) for t in times], baseline_cumhaz=[float(h) for h in cumhaz],
                  info={"alpha": COX_ALPHA})


MODELS: dict[str, Callable[[SurvivalData], FittedModel]] = {
    BASELINE: fit_age_linear,
    "ridge_radiomics": fit_ridge_radiomics,
    "cox_radiomics": fit_cox_radiomics,
    "median_days": fit_median_days,
}
REFERENCE_ONLY = ("median_days",)


def predict_days(model: FittedModel, x: np.ndarray) -> np.ndarray:
    """Predicted survival in days for inputs ``x`` float ``(N, len(model.inputs))`` -> float64 ``(N,)``."""
    eta = model.linear_predictor(x)
    if model.kind == "cox":
        times, cumhaz = np.asarray(model.baseline_times), np.asarray(model.baseline_cumhaz)
        survival = np.exp(-np.outer(np.exp(eta), cumhaz))  # (N, T)
        below = survival <= 0.5
        return np.where(below.any(axis=1), times[np.argmax(below, axis=1)], times[-1])
    if model.target == "log_days":
        return np.exp(eta)
    return np.maximum(eta, 0.0)  # days cannot be negative


def subset(data: SurvivalData, rows: np.ndarray) -> SurvivalData:
    """The rows ``rows`` (bool or index array) of ``data``."""
    return SurvivalData([data.case_ids[i] for i in np.arange(len(data.case_ids))[rows]], data.names, data.x[rows],
                        data.days[rows], data.event[rows])


def inputs_of(model: FittedModel, data: SurvivalData) -> np.ndarray:
    """The columns of ``data.x`` the model reads, in its order."""
    return data.x[:, [data.names.index(n) for n in model.inputs]]


def cv_splits(n: int, scheme: str = "repeated-kfold", folds: int = 5, repeats: int = 20,
              seed: int = 0) -> list[list[np.ndarray]]:
    """Test-index arrays per repeat: ``loo`` (one repeat of ``n`` folds) or shuffled ``repeated-kfold``.

    Raises:
        ValueError: an unknown scheme, or fewer patients than folds.
    """
    if scheme == "loo":
        return [[np.array([i]) for i in range(n)]]
    if scheme != "repeated-kfold":
        raise ValueError(f"unknown CV scheme {scheme!r}; choose 'loo' or 'repeated-kfold'")
    if n < folds:
        raise ValueError(f"{n} patients cannot be split into {folds} folds; use fewer folds or 'loo'")
    rng = np.random.default_rng(seed)
    return [np.array_split(rng.permutation(n), folds) for _ in range(repeats)]


def heldout_predictions(data: SurvivalData, fit: Callable[[SurvivalData], FittedModel],
                        splits: Sequence[np.ndarray]) -> np.ndarray:
    """Held-out predicted days of one repeat: each fold predicted by a model fitted on the other folds."""
    out = np.full(len(data.days), np.nan)
    for test in splits:
        train = np.ones(len(data.days), dtype=bool)
        train[test] = False
        model = fit(subset(data, train))
        out[test] = predict_days(model, inputs_of(model, subset(data, test)))
    return out


def survival_metrics(predicted: np.ndarray, actual: np.ndarray) -> dict[str, float]:
    """BraTS metrics: ``accuracy`` (3 classes), ``mse``, ``median_se`` (days^2), ``spearman``."""
    from scipy.stats import spearmanr

    se = (predicted - actual) ** 2
    same = [survival_class(p) == survival_class(a) for p, a in zip(predicted, actual, strict=True)]
    rho = spearmanr(predicted, actual).statistic if np.ptp(predicted) > 0 else np.nan
    return {"accuracy": float(np.mean(same)), "mse": float(se.mean()), "median_se": float(np.median(se)),
            "spearman": float(rho) if np.isfinite(rho) else float("nan")}


METRICS: tuple[str, ...] = ("accuracy", "mse", "median_se", "spearman")


@dataclass
class CrossValidation:
    """The cross-validated results of every model.

    Attributes:
        scheme: ``loo`` or ``repeated-kfold`` (with ``folds`` x ``repeats``).
        metrics: model name -> metric -> mean over repeats (:func:`survival_metrics` of each repeat's
            pooled held-out predictions of the deceased patients).
        spread: model name -> metric -> standard deviation over repeats (0 for LOO).
        predictions: model name -> float ``(N,)`` held-out days averaged over repeats.
        winner: the model to ship (see the module docstring).
    """

    scheme: str
    folds: int
    repeats: int
    metrics: dict[str, dict[str, float]]
    spread: dict[str, dict[str, float]]
    predictions: dict[str, np.ndarray]
    winner: str


def choose_winner(metrics: dict[str, dict[str, float]]) -> str:
    """Best accuracy, then higher Spearman, then lower MSE; the baseline first among equals."""
    def key(name: str) -> tuple[float, float, float, int]:
        m = metrics[name]
        rho = m["spearman"] if np.isfinite(m["spearman"]) else -1.0
        return (-round(m["accuracy"], 9), -rho, m["mse"], 0 if name == BASELINE else 1)

    return min((n for n in metrics if n not in REFERENCE_ONLY), key=key)


def cross_validate(data: SurvivalData, models: Sequence[str] = tuple(MODELS), scheme: str = "repeated-kfold",
                   folds: int = 5, repeats: int = 20, seed: int = 0) -> CrossValidation:
    """Cross-validate ``models`` (names of :data:`MODELS`); censored rows train (Cox) but are not scored.

    Args:
        data: the patients.
        models: model names.
        scheme: ``repeated-kfold`` (default: 5 folds x 20 repeats, seeded) or ``loo``.
        folds, repeats, seed: of the repeated k-fold.

    Raises:
        ValueError: unknown model or scheme.
    """
    unknown = [m for m in models if m not in MODELS]
    if unknown:
        raise ValueError(f"unknown survival models {unknown}; choose from {list(MODELS)}")
    repeats_splits = cv_splits(len(data.days), scheme, folds, repeats, seed)
    dead = data.event
    metrics, spread, predictions = {}, {}, {}
    for m in models:
        runs = [heldout_predictions(data, MODELS[m], splits) for splits in repeats_splits]
        per_repeat = [survival_metrics(p[dead], data.days[dead]) for p in runs]
        metrics[m] = {k: float(np.nanmean([r[k] for r in per_repeat])) for k in METRICS}
        spread[m] = {k: float(np.nanstd([r[k] for r in per_repeat])) for k in METRICS}
        predictions[m] = np.mean(runs, axis=0)
    n_folds = len(repeats_splits[0])
    return CrossValidation(scheme, n_folds, len(repeats_splits), metrics, spread, predictions, choose_winner(metrics))
