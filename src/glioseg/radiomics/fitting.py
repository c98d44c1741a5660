"""Fit the survival and grade models on a features table and write what the fit found.

``fit_survival_folder`` writes into its output folder:

- ``model.json``: the shipped-format model (the CV winner refitted on every patient);
- ``cv_table.csv`` / ``cv_table.md``: every model's cross-validated metrics side by side;
- ``cv_predictions.csv``: each patient's held-out predicted days per model;
- ``predicted_vs_actual.png``: held-out predicted vs actual days of each model, with the class
  boundaries.

``fit_grade_folder`` writes ``model.json``, ``cv_table.csv`` / ``cv_table.md`` (model vs majority
baseline with Wilson intervals and the exact McNemar p-value) and ``cv_predictions.csv``.
Every file is written atomically; the inputs are only read.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from glioseg.radiomics.clinical import LONG_DAYS, SHORT_DAYS, read_grade_table, read_survival_table, survival_class
from glioseg.radiomics.features import read_features_csv
from glioseg.radiomics.grade import GradeData, fit_grade_model, grade_metrics, join_grades, loo_grade, mcnemar_exact
from glioseg.radiomics.models_io import FittedModel, save_model
from glioseg.radiomics.survival import BASELINE, MODELS, REFERENCE_ONLY, CrossValidation, cross_validate, join_survival
from glioseg.utils import atomic_write

SURVIVAL_COLUMNS: tuple[str, ...] = ("accuracy", "mse", "median_se", "spearman")


@dataclass
class SurvivalFit:
    """What :func:`fit_survival_folder` did: the CV, the shipped model, the patients used and left out."""

    cv: CrossValidation
    model: FittedModel
    case_ids: list[str]
    left_out: dict[str, str]
    censored: int


def _write_text(path: Path, text: str) -> Path:
    return atomic_write(path, lambda p: p.write_text(text))


def _csv_text(header: list[str], rows: list[list[Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue()


def survival_table_markdown(cv: CrossValidation) -> str:
    """The CV table as Markdown (mean +- sd over repeats), the shipped model marked."""
    where = "leave-one-out" if cv.scheme == "loo" else f"{cv.folds}-fold CV x {cv.repeats} repeats"
    lines = [f"Survival, {where} (mean +- sd over repeats; deceased patients only)", "",
             "| model | accuracy | MSE (days^2) | median SE (days^2) | Spearman rho |", "|---|---|---|---|---|"]
    for name, m in cv.metrics.items():
        s = cv.spread[name]
        mark = " (shipped)" if name == cv.winner else " (reference only)" if name in REFERENCE_ONLY else ""
        lines.append(f"| {name}{mark} | {m['accuracy']:.3f} +- {s['accuracy']:.3f} | {m['mse']:.4g} +- {s['mse']:.2g} "
                     f"| {m['median_se']:.4g} +- {s['median_se']:.2g} | {m['spearman']:.3f} +- {s['spearman']:.3f} |")
    return "\n".join(lines) + "\n"


def plot_predicted_vs_actual(cv: CrossValidation, days: np.ndarray, event: np.ndarray, path: Path) -> Path:
    """Scatter of held-out predicted vs actual days per model, with the 300/450-day class boundaries."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(cv.predictions)
    fig, axes = plt.subplots(1, len(names), figsize=(3.6 * len(names), 3.6), squeeze=False)
    top = float(max(days.max(), np.nanmax([np.nanmax(p) for p in cv.predictions.values()]))) * 1.05
    for ax, name in zip(axes[0], names, strict=True):
        ax.scatter(days[event], cv.predictions[name][event], s=18)
        ax.plot([0, top], [0, top], color="grey", lw=0.8)
        for b in (SHORT_DAYS, LONG_DAYS):
            ax.axvline(b, color="grey", ls=":", lw=0.8)
            ax.axhline(b, color="grey", ls=":", lw=0.8)
        m = cv.metrics[name]
        ax.set(xlim=(0, top), ylim=(0, top), xlabel="actual days", title=f"{name}\nacc {m['accuracy']:.2f}, "
               f"rho {m['spearman']:.2f}")
    axes[0][0].set_ylabel("held-out predicted days")
    fig.tight_layout()
    atomic_write(path, lambda p: fig.savefig(p, dpi=110, format="png"))
    plt.close(fig)
    return path


def fit_survival_folder(features: Path, clinical: Path, out: Path, scheme: str = "repeated-kfold", folds: int = 5,
                        repeats: int = 20, seed: int = 0) -> SurvivalFit:
    """Cross-validate every survival model, refit the winner on all patients, write ``out``.

    Raises:
        RadiomicsError: unusable features or clinical table, too few patients.
    """
    data = join_survival(read_features_csv(features), read_survival_table(clinical))
    cv = cross_validate(data, tuple(MODELS), scheme, folds, repeats, seed)
    model = MODELS[cv.winner](data)
    model.info.update({
        "trained_on": data.case_ids, "features_file": Path(features).name, "clinical_file": Path(clinical).name,
        "cv": {"scheme": cv.scheme, "folds": cv.folds, "repeats": cv.repeats, "seed": seed,
               "metrics": cv.metrics, "spread": cv.spread},
        "why": f"{cv.winner} has the best CV accuracy (ties: Spearman, then MSE; {BASELINE} wins ties)",
        "survival_text": "ALIVE (N days later) is parsed as censored at N days: not scored, not used by the "
                         "regressions, used as censored by the Cox model",
    })
    out.mkdir(parents=True, exist_ok=True)
    save_model(model, out)
    rows = [[n, *(f"{cv.metrics[n][k]:.6g}" for k in SURVIVAL_COLUMNS), *(f"{cv.spread[n][k]:.6g}" for k in
            SURVIVAL_COLUMNS), "yes" if n == cv.winner else "no"] for n in cv.metrics]
    _write_text(out / "cv_table.csv", _csv_text(["model", *SURVIVAL_COLUMNS, *(f"{k}_sd" for k in SURVIVAL_COLUMNS),
                                                 "shipped"], rows))
    _write_text(out / "cv_table.md", survival_table_markdown(cv))
    pred_rows = [[c, f"{data.days[i]:g}", "yes" if data.event[i] else "no", survival_class(data.days[i]),
                  *(f"{cv.predictions[n][i]:.1f}" for n in cv.predictions)] for i, c in enumerate(data.case_ids)]
    _write_text(out / "cv_predictions.csv", _csv_text(["case_id", "actual_days", "deceased", "actual_class",
                                                       *cv.predictions], pred_rows))
    plot_predicted_vs_actual(cv, data.days, data.event, out / "predicted_vs_actual.png")
    return SurvivalFit(cv, model, data.case_ids, data.left_out, int((~data.event).sum()))


@dataclass
class GradeFit:
    """What :func:`fit_grade_folder` did: the LOO metrics of the model and of the baseline, and the model."""

    model_metrics: dict[str, float]
    baseline_metrics: dict[str, float]
    mcnemar_p: float
    model: FittedModel
    data: GradeData
    heldout: np.ndarray


def grade_table_markdown(fit: GradeFit) -> str:
    """The grade CV table as Markdown."""
    lines = [f"Grade (HGG vs LGG), leave-one-out on {int(fit.model_metrics['n'])} cases "
             f"({int(fit.data.hgg.sum())} HGG, {int((~fit.data.hgg).sum())} LGG); Wilson 95 % intervals", "",
             "| model | accuracy [95 % CI] | LGG specificity [95 % CI] | HGG sensitivity | balanced acc. | AUC | "
             "log-loss |", "|---|---|---|---|---|---|---|"]
    rows = (("logistic_radiomics (shipped)", fit.model_metrics), ("majority class (HGG)", fit.baseline_metrics))
    for name, m in rows:
        lines.append(f"| {name} | {m['accuracy']:.3f} [{m['accuracy_ci_low']:.3f}, {m['accuracy_ci_high']:.3f}] | "
                     f"{m['specificity_lgg']:.3f} [{m['specificity_ci_low']:.3f}, {m['specificity_ci_high']:.3f}] | "
                     f"{m['sensitivity_hgg']:.3f} | {m['balanced_accuracy']:.3f} | {m['auc']:.3f} | "
                     f"{m['log_loss']:.3f} |")
    lines.append("")
    lines.append(f"Exact McNemar test, model vs majority (paired correctness): p = {fit.mcnemar_p:.3f}")
    return "\n".join(lines) + "\n"


def fit_grade_folder(features: Path, grades: Path, out: Path) -> GradeFit:
    """LOO the grade model and the majority baseline, refit the model on all cases, write ``out``.

    Raises:
        RadiomicsError: unusable features or grade table, a single grade.
    """
    data = join_grades(read_features_csv(features), read_grade_table(grades))
    model_p, base_p = loo_grade(data)
    model_m, base_m = grade_metrics(model_p, data.hgg), grade_metrics(base_p, data.hgg, constant=True)
    p = mcnemar_exact((model_p >= 0.5) == data.hgg, (base_p >= 0.5) == data.hgg)
    model = fit_grade_model(data.x, data.hgg, data.names)
    model.info.update({"trained_on": data.case_ids, "features_file": Path(features).name,
                       "grades_file": Path(grades).name,
                       "loo": {"model": model_m, "majority_baseline": base_m, "mcnemar_p": p}})
    fit = GradeFit(model_m, base_m, p, model, data, model_p)
    out.mkdir(parents=True, exist_ok=True)
    save_model(model, out)
    keys = sorted(model_m)
    _write_text(out / "cv_table.csv", _csv_text(["model", *keys], [["logistic_radiomics", *(f"{model_m[k]:.6g}" for k
                                                 in keys)], ["majority_class", *(f"{base_m[k]:.6g}" for k in keys)]]))
    _write_text(out / "cv_table.md", grade_table_markdown(fit))
    rows = [[c, "HGG" if data.hgg[i] else "LGG", f"{model_p[i]:.4f}", f"{base_p[i]:.4f}"]
            for i, c in enumerate(data.case_ids)]
    _write_text(out / "cv_predictions.csv", _csv_text(["case_id", "grade", "p_hgg_model", "p_hgg_majority"], rows))
    return fit
