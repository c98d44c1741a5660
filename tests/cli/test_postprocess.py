"""`glioseg tune-postprocess` options: volumes in mm^3, checked before anything loads."""

import pytest
from typer.testing import CliRunner

from glioseg.cli import app

runner = CliRunner()


@pytest.mark.parametrize("option, value", [("--candidates", "a,b"), ("--candidates", "0,-100"),
                                           ("--component-candidates", ","), ("--component-candidates", "inf")])
def test_bad_volume_candidates_refused_naming_the_option(tmp_path, monkeypatch, option, value):
    def no_load(*args, **kwargs):
        raise AssertionError("tune-postprocess got as far as predicting")

    monkeypatch.setattr("glioseg.inference.tuning.validation_probabilities", no_load)
    result = runner.invoke(app, ["tune-postprocess", str(tmp_path), str(tmp_path), option, value])
    assert result.exit_code == 1
    message = " ".join(result.output.split())
    assert option in message and "mm^3" in message


def test_candidates_are_passed_as_mm3(tmp_path, monkeypatch):
    import numpy as np

    from glioseg.inference.tuning import TuningCase

    seen = {}
    truth = np.zeros((8, 8, 8), dtype=np.uint8)
    case = TuningCase(np.zeros((3, 8, 8, 8), dtype=np.float32), truth, (2.0, 2.0, 2.0))
    monkeypatch.setattr("glioseg.inference.tuning.validation_probabilities", lambda *a, **k: [case])

    from glioseg.inference.tuning import tune_postprocess

    def fake_tune(cases, target, et, components, thresholds):
        seen.update(et=et, components=components)
        return tune_postprocess(cases, target, et, components, thresholds)

    monkeypatch.setattr("glioseg.inference.tuning.tune_postprocess", fake_tune)
    result = runner.invoke(app, ["tune-postprocess", str(tmp_path), str(tmp_path), "--candidates", "0, 12.5",
                                 "--component-candidates", "0,300"])
    assert result.exit_code == 0, result.output
    assert seen == {"et": [0.0, 12.5], "components": [0.0, 300.0]}
    assert "min_et_mm3 0, min_component_mm3 (WT 0, TC 0, ET 0)" in result.output
    assert (tmp_path / "postprocess.json").is_file()
