"""Grade model: Wilson intervals and McNemar by hand, LOO without leakage, model vs majority."""

from __future__ import annotations

import numpy as np
import pytest

from glioseg.radiomics.errors import RadiomicsError
from glioseg.radiomics.features import FeatureTable
from glioseg.radiomics.grade import (
    GradeData,
    fit_grade_model,
    grade_metrics,
    join_grades,
    loo_grade,
    mcnemar_exact,
    predict_hgg,
    wilson_interval,
)


def test_wilson_interval_by_hand():
    # 0 of 4: upper bound z^2 / (n + z^2)
    z2 = 1.959963984540054**2
    assert wilson_interval(0, 4) == pytest.approx((0.0, z2 / (4 + z2)))
    low, high = wilson_interval(27, 31)
    assert low < 27 / 31 < high
    assert (low, high) == pytest.approx((0.7115, 0.9487), abs=1e-4)
    assert wilson_interval(0, 0) == (0.0, 1.0)


def test_exact_mcnemar_by_hand():
    a = np.array([True] * 4 + [False] + [True] * 10)
    b = np.array([False] * 4 + [True] + [True] * 10)
    assert mcnemar_exact(a, b) == pytest.approx(2 * (1 + 5) / 32)  # 4 vs 1 discordant pairs
    assert mcnemar_exact(a, a) == 1.0


def _grade_data(n_lgg: int = 5, n_hgg: int = 20, seed: int = 0) -> GradeData:
    rng = np.random.default_rng(seed)
    hgg = np.array([False] * n_lgg + [True] * n_hgg)
    et = np.where(hgg, rng.uniform(5, 30, hgg.size), rng.uniform(0, 1, hgg.size))  # LGG: little enhancement
    x = np.column_stack([et, rng.normal(size=(hgg.size, 4))])
    return GradeData([f"c{i}" for i in range(hgg.size)], ["vol_ET_ml", "a", "b", "c", "d"], x, hgg)


def test_model_finds_the_separating_feature_and_beats_the_majority():
    data = _grade_data()
    model = fit_grade_model(data.x, data.hgg, data.names)
    assert model.inputs[0] == "vol_ET_ml"
    model_p, base_p = loo_grade(data)
    m, b = grade_metrics(model_p, data.hgg), grade_metrics(base_p, data.hgg, constant=True)
    assert b["accuracy"] == pytest.approx(20 / 25) and b["specificity_lgg"] == 0.0 and b["auc"] == 0.5
    assert m["auc"] > 0.9 and m["balanced_accuracy"] > 0.85 > b["balanced_accuracy"]
    assert m["specificity_lgg"] == 1.0
    columns = [data.names.index(n) for n in model.inputs]
    p = predict_hgg(model, data.x[:, columns])  # the model fitted on all cases separates them
    assert p[:5].max() < 0.5 and (p[5:] >= 0.5).mean() >= 0.85


def test_loo_baseline_is_the_training_fold_share():
    data = _grade_data(2, 3)
    _, base_p = loo_grade(data)
    assert base_p.tolist() == pytest.approx([3 / 4, 3 / 4, 2 / 4, 2 / 4, 2 / 4])


def test_join_needs_both_grades():
    table = FeatureTable(["a", "b", "c"], ("f",), np.zeros((3, 1)), ["gt"] * 3)
    with pytest.raises(RadiomicsError, match="all HGG"):
        join_grades(table, {"a": "HGG", "b": "HGG"})
    data = join_grades(table, {"a": "HGG", "b": "LGG"})
    assert data.case_ids == ["a", "b"] and data.left_out == {"c": "not in the grade table"}
