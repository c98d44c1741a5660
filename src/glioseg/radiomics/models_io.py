"""Fitted radiomics models as small JSON files (no pickle): standardisation, coefficients and, for
a Cox model, the Breslow baseline cumulative hazard.

Every model is linear in standardised inputs: ``eta = ((x - mean) / scale) . coef + intercept``;
what ``eta`` means depends on ``kind``: ``linear`` (the prediction, in ``target`` units: days or
log-days), ``cox`` (log relative hazard) or ``logistic`` (log-odds of HGG). The shipped models
live in ``glioseg/weights/radiomics/`` and are written by ``scripts/fit_radiomics.sh``.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from glioseg.radiomics.catalog import FEATURE_VERSION
from glioseg.radiomics.errors import RadiomicsError
from glioseg.utils import atomic_write

MODEL_FILE = "model.json"
FORMAT_VERSION = 1
KINDS: dict[str, str] = {"linear": "survival", "cox": "survival", "logistic": "grade"}
TARGETS = ("days", "log_days", "log_hazard", "log_odds_hgg")


def shipped_model_path(task: str) -> Path:
    """The shipped model of ``task`` (``survival`` or ``grade``)."""
    return Path(__file__).resolve().parents[1] / "weights" / "radiomics" / task / MODEL_FILE


@dataclass
class FittedModel:
    """A linear model over named inputs (``age`` and feature columns).

    Attributes:
        task: ``survival`` or ``grade``.
        kind: ``linear``, ``cox`` or ``logistic``.
        name: the model's name in the CV table (e.g. ``age_linear``).
        inputs: input names, in the order of ``mean``/``scale``/``coef``.
        mean, scale: standardisation of each input (scale > 0).
        coef: one coefficient per standardised input.
        intercept: constant term.
        target: what the linear predictor is (see :data:`TARGETS`).
        baseline_times, baseline_cumhaz: Cox only, Breslow H0(t) at the event times (ascending).
        feature_version: :data:`glioseg.radiomics.catalog.FEATURE_VERSION` of the training table.
        info: free JSON: training data, CV table, selection rule (for people, not for predicting).
    """

    task: str
    kind: str
    name: str
    inputs: list[str]
    mean: list[float]
    scale: list[float]
    coef: list[float]
    intercept: float
    target: str
    baseline_times: list[float] = field(default_factory=list)
    baseline_cumhaz: list[float] = field(default_factory=list)
    feature_version: int = FEATURE_VERSION
    info: dict[str, Any] = field(default_factory=dict)

    def linear_predictor(self, x: np.ndarray) -> np.ndarray:
        """``eta`` of inputs ``x`` float ``(N, len(inputs))`` -> float64 ``(N,)``."""
        z = (np.asarray(x, dtype=np.float64) - np.asarray(self.mean)) / np.asarray(self.scale)
        return z @ np.asarray(self.coef, dtype=np.float64) + self.intercept


def check_model(model: FittedModel, where: str) -> FittedModel:
    """Return ``model`` if it is consistent; RadiomicsError naming ``where`` and the fix otherwise."""
    n = len(model.inputs)
    problems = []
    if KINDS.get(model.kind) != model.task:
        problems.append(f"kind {model.kind!r} is not a {model.task!r} model kind ({sorted(KINDS)})")
    if model.target not in TARGETS:
        problems.append(f"target {model.target!r} is not one of {list(TARGETS)}")
    if not (len(model.mean) == len(model.scale) == len(model.coef) == n) or n == 0:
        problems.append(f"inputs/mean/scale/coef lengths differ ({n}, {len(model.mean)}, {len(model.scale)}, "
                        f"{len(model.coef)})")
    numbers = [*model.mean, *model.scale, *model.coef, model.intercept, *model.baseline_times, *model.baseline_cumhaz]
    if not all(isinstance(v, int | float) and math.isfinite(v) for v in numbers):
        problems.append("a coefficient is not a finite number")
    elif any(s <= 0 for s in model.scale):
        problems.append("a scale is <= 0")
    if model.kind == "cox" and (not model.baseline_times or len(model.baseline_times) != len(model.baseline_cumhaz)):
        problems.append("a Cox model needs baseline_times and baseline_cumhaz of equal, non-zero length")
    if model.feature_version != FEATURE_VERSION:
        problems.append(f"it was fitted on features version {model.feature_version}, this glioseg computes "
                        f"version {FEATURE_VERSION}")
    if problems:
        raise RadiomicsError(f"{where}: not a usable {model.task} model ({'; '.join(problems)}); refit it with "
                             f"`glioseg survival fit` / scripts/fit_radiomics.sh")
    return model


def save_model(model: FittedModel, folder: Path) -> Path:
    """Write ``folder/model.json`` atomically; returns its path."""
    check_model(model, str(folder))
    text = json.dumps(asdict(model), indent=1, sort_keys=False) + "\n"
    return atomic_write(Path(folder) / MODEL_FILE, lambda p: p.write_text(text))


def load_model(path: Path | str, task: str) -> FittedModel:
    """Read a model folder (or its ``model.json``) written by :func:`save_model`.

    Raises:
        RadiomicsError: missing or unreadable file, another task's model, inconsistent content.
    """
    path = Path(path)
    file = path / MODEL_FILE if path.is_dir() else path
    if not file.is_file():
        raise RadiomicsError(f"{file}: no {task} model here; give the folder `glioseg survival fit -o` wrote, "
                             "or drop -m to use the shipped model")
    try:
        data = json.loads(file.read_text())
        model = FittedModel(**data)
    except (json.JSONDecodeError, TypeError, UnicodeDecodeError) as exc:
        raise RadiomicsError(f"{file}: not a glioseg radiomics model ({exc}); refit it") from None
    if model.task != task:
        raise RadiomicsError(f"{file}: a {model.task} model, not a {task} model; give the {task} model's folder")
    return check_model(model, str(file))
