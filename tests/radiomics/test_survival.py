"""Survival models: the baseline against a hand computation, Cox prediction, no leakage across
CV folds, the metrics, the choice of the shipped model, and the JSON round trip."""

from __future__ import annotations

import numpy as np
import pytest

from glioseg.radiomics import survival
from glioseg.radiomics.errors import RadiomicsError
from glioseg.radiomics.models_io import FittedModel, load_model, save_model, shipped_model_path
from glioseg.radiomics.survival import (
    SurvivalData,
    breslow,
    choose_winner,
    cross_validate,
    cv_splits,
    fit_age_linear,
    heldout_predictions,
    predict_days,
    select_features,
    survival_metrics,
)


def _data(n: int = 20, seed: int = 0) -> SurvivalData:
    """Age, one informative feature (survival falls with it), three noise features."""
    rng = np.random.default_rng(seed)
    age = rng.uniform(40, 80, n)
    signal = rng.uniform(0, 1, n)
    days = np.round(200 + 900 * (1 - signal) + rng.normal(0, 60, n)).clip(30)
    x = np.column_stack([age, signal, rng.normal(size=(n, 3))])
    return SurvivalData([f"c{i}" for i in range(n)], ["age", "signal", "n1", "n2", "n3"], x, days,
                        np.ones(n, dtype=bool))


def test_age_baseline_equals_least_squares_by_hand():
    age = np.array([40.0, 50.0, 60.0, 70.0])
    days = np.array([700.0, 500.0, 450.0, 200.0])
    data = SurvivalData(list("abcd"), ["age"], age[:, None], days, np.ones(4, dtype=bool))
    model = fit_age_linear(data)
    # slope = cov(age, days) / var(age) = (-15 * 237.5 ...) computed by hand: sum((a-55)(d-462.5)) / sum((a-55)^2)
    slope = ((-15) * 237.5 + (-5) * 37.5 + 5 * (-12.5) + 15 * (-262.5)) / (225 + 25 + 25 + 225)
    intercept = 462.5 - slope * 55
    assert slope == pytest.approx(-15.5)
    assert predict_days(model, np.array([[55.0], [65.0]])) == pytest.approx([intercept + slope * 55,
                                                                             intercept + slope * 65])


def test_baseline_uses_only_deceased_patients():
    data = SurvivalData(list("abc"), ["age"], np.array([[40.0], [60.0], [50.0]]), np.array([800.0, 200.0, 10.0]),
                        np.array([True, True, False]))
    model = fit_age_linear(data)
    assert predict_days(model, np.array([[50.0]]))[0] == pytest.approx(500.0)  # the censored 10 days is ignored


def test_breslow_with_zero_risk_is_nelson_aalen_and_the_median_follows():
    times, cumhaz = breslow(np.zeros(3), np.array([1.0, 2.0, 3.0]), np.ones(3, dtype=bool))
    assert times.tolist() == [1.0, 2.0, 3.0]
    assert cumhaz == pytest.approx([1 / 3, 1 / 3 + 1 / 2, 1 / 3 + 1 / 2 + 1])
    model = FittedModel("survival", "cox", "cox", ["age"], [0.0], [1.0], [1.0], 0.0, "log_hazard",
                        baseline_times=times.tolist(), baseline_cumhaz=cumhaz.tolist())
    # S(t) = exp(-H0(t) e^eta) first <= 0.5 at t = 2 for eta = 0; a higher risk dies sooner
    assert predict_days(model, np.array([[0.0], [1.0], [-3.0]])).tolist() == [2.0, 1.0, 3.0]


def test_selection_keeps_age_and_finds_the_informative_feature():
    data = _data()
    cols = select_features(data.x, data.days, data.names, k=1)
    assert [data.names[c] for c in cols] == ["age", "signal"]


def test_every_fold_is_predicted_by_a_model_that_never_saw_it():
    data = _data()
    seen: list[set[str]] = []
    splits = cv_splits(len(data.days), "repeated-kfold", folds=4, repeats=1, seed=3)[0]

    def recording_fit(train: SurvivalData) -> FittedModel:
        seen.append(set(train.case_ids))
        return survival.fit_ridge_radiomics(train)

    heldout_predictions(data, recording_fit, splits)
    for train_ids, test in zip(seen, splits, strict=True):
        assert train_ids.isdisjoint({data.case_ids[i] for i in test})
        assert len(train_ids) == len(data.case_ids) - len(test)


def test_radiomics_models_beat_age_when_a_feature_carries_the_signal():
    cv = cross_validate(_data(30), scheme="repeated-kfold", folds=5, repeats=3)
    assert cv.metrics["ridge_radiomics"]["spearman"] > 0.7
    assert cv.metrics["cox_radiomics"]["spearman"] > 0.7
    assert cv.metrics["ridge_radiomics"]["accuracy"] > cv.metrics["age_linear"]["accuracy"]
    assert cv.winner in ("ridge_radiomics", "cox_radiomics")


def test_cv_is_deterministic():
    a, b = (cross_validate(_data(), scheme="repeated-kfold", repeats=2) for _ in range(2))
    assert a.metrics == b.metrics


def test_metrics_by_hand():
    m = survival_metrics(np.array([100.0, 400.0, 440.0]), np.array([200.0, 350.0, 1000.0]))
    assert m["accuracy"] == pytest.approx(2 / 3)  # short/short, mid/mid, mid/long
    assert m["mse"] == pytest.approx((100**2 + 50**2 + 560**2) / 3)
    assert m["median_se"] == pytest.approx(100**2)
    assert m["spearman"] == pytest.approx(1.0)


def test_winner_needs_to_beat_the_baseline():
    tie = {"age_linear": {"accuracy": 0.5, "spearman": 0.1, "mse": 9.0},
           "ridge_radiomics": {"accuracy": 0.5, "spearman": 0.1, "mse": 9.0},
           "median_days": {"accuracy": 0.9, "spearman": 0.9, "mse": 1.0}}
    assert choose_winner(tie) == "age_linear"  # ties go to the baseline; reference-only never ships
    tie["ridge_radiomics"]["accuracy"] = 0.55
    assert choose_winner(tie) == "ridge_radiomics"


def test_join_needs_enough_patients():
    from glioseg.radiomics.clinical import Patient
    from glioseg.radiomics.features import FeatureTable

    table = FeatureTable(["a", "b"], ("f",), np.zeros((2, 1)), ["gt", "gt"])
    with pytest.raises(RadiomicsError, match="only 1 deceased"):
        survival.join_survival(table, {"a": Patient("a", 50, 100, True, "NA")})


def test_model_json_round_trip_predicts_the_same(tmp_path):
    data = _data()
    for fit in (survival.fit_ridge_radiomics, survival.fit_cox_radiomics, fit_age_linear):
        model = fit(data)
        save_model(model, tmp_path / model.name)
        loaded = load_model(tmp_path / model.name, "survival")
        x = survival.inputs_of(model, data)
        assert loaded == model
        assert predict_days(loaded, x).tolist() == predict_days(model, x).tolist()


def test_a_tampered_or_foreign_model_is_refused(tmp_path):
    model = fit_age_linear(_data())
    path = save_model(model, tmp_path / "m")
    path.write_text(path.read_text().replace('"scale": [\n  ', '"scale": [\n  -'))
    with pytest.raises(RadiomicsError, match="scale is <= 0"):
        load_model(path, "survival")
    with pytest.raises(RadiomicsError, match="a grade model, not a survival model"):
        load_model(shipped_model_path("grade"), "survival")
    (tmp_path / "junk.json").write_text("{")
    with pytest.raises(RadiomicsError, match="not a glioseg radiomics model"):
        load_model(tmp_path / "junk.json", "survival")


def test_the_shipped_models_load():
    assert load_model(shipped_model_path("survival"), "survival").name == "age_linear"
    assert load_model(shipped_model_path("grade"), "grade").kind == "logistic"
