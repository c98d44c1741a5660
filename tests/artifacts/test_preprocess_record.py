"""The inference preprocessing check: a run's record against what this code does."""

import json
import shutil

import pytest

from glioseg.artifacts.bundles import default_model_dir, write_manifest
from glioseg.artifacts.folds import run_folders
from glioseg.artifacts.preprocess_record import (
    CODE_RULES,
    PreprocessingMismatch,
    PreprocessingSpec,
    code_record,
    stage_preprocessing,
)

RECORD = {"method": "z-score inside the brain after percentile clipping", "version": 1, "target_spacing": 2.0,
          "requested_label_scheme": None, "percentiles": [0.5, 99.5], "margin": 2}


def _info(**changes):
    record = {**RECORD, **changes}
    return {"normalisation": {k: v for k, v in record.items() if v != "DROP"}, "stages": {"low": {"spacing_mm": 2.0}}}


def test_matching_record_gives_the_spec():
    spec = stage_preprocessing(_info(), "low", 2.0, {"low": 2.0}, "RUN")
    assert spec == PreprocessingSpec(2.0, (0.5, 99.5), 2)
    assert code_record()["version"] == 1 and set(CODE_RULES) <= set(code_record())
    stated = _info(**CODE_RULES)  # a record that states the rules explicitly
    assert stage_preprocessing(stated, "low", 2.0, {"low": 2.0}, "RUN") == spec


@pytest.mark.parametrize("changes, setting", [
    ({"percentiles": [1.0, 99.0]}, "percentiles"),
    ({"margin": 4}, "margin"),
    ({"version": 2}, "version"),
    ({"mask": "otsu"}, "mask"),
    ({"padding": "edge"}, "padding"),
    ({"crop": "none"}, "crop"),
    ({"target_spacing": 1.5}, "target_spacing"),
    ({"percentiles": "DROP"}, "percentiles"),
    ({"target_spacing": "DROP"}, "target_spacing"),
])
def test_altered_record_refused_naming_model_and_setting(changes, setting):
    with pytest.raises(PreprocessingMismatch, match=rf"^model /runs/r1: .*{setting}.*re-train") as err:
        stage_preprocessing(_info(**changes), "low", 2.0, {"low": 2.0}, "/runs/r1")
    assert "\n" not in str(err.value)


def test_missing_record_refused():
    with pytest.raises(PreprocessingMismatch, match=r"model R: run.json records no preprocessing \('normalisation'\)"):
        stage_preprocessing({"stages": {}}, "low", 2.0, {"low": 2.0}, "R")


def test_spacing_must_agree_between_config_and_run_json():
    info = _info()
    info["stages"]["low"]["spacing_mm"] = 3.0
    with pytest.raises(PreprocessingMismatch, match=r"2\.0 mm in config\.yaml but 3\.0 mm in run\.json"):
        stage_preprocessing(info, "low", 2.0, {"low": 2.0}, "R")


def test_run_wide_record_of_a_cascade_and_per_stage_records():
    info = _info(target_spacing=1.0)  # written when the high stage was prepared last
    info["stages"]["high"] = {"spacing_mm": 1.0}
    spacings = {"low": 2.0, "high": 1.0}
    assert stage_preprocessing(info, "low", 2.0, spacings, "R").spacing_mm == 2.0
    info["stages"]["low"]["preprocessing"] = {**RECORD, "target_spacing": 1.0}  # a per-stage record is exact
    with pytest.raises(PreprocessingMismatch, match=r"target_spacing 1\.0 mm, but predicts at 2\.0 mm"):
        stage_preprocessing(info, "low", 2.0, spacings, "R")


def test_shipped_model_passes():
    from glioseg.inference.predictor import Predictor

    info = json.loads((run_folders(default_model_dir())[0] / "run.json").read_text())  # a fold ensemble: fold_0
    assert stage_preprocessing(info, "low", 2.0, {"low": 2.0, "high": 1.0}, "default") == \
        PreprocessingSpec(2.0, (0.5, 99.5), 2)
    predictor = Predictor.from_run(default_model_dir(), device="cpu")
    assert predictor.stages["low"].preprocessing == PreprocessingSpec(2.0, (0.5, 99.5), 2)


def test_shipped_model_refused_when_the_code_preprocesses_otherwise(monkeypatch):
    from glioseg.inference.predictor import Predictor

    monkeypatch.setattr("glioseg.artifacts.preprocess_record.PREPROCESS_VERSION", 2)
    with pytest.raises(PreprocessingMismatch, match=r"stage low was trained with preprocessing version 1, this "
                                                    r"glioseg preprocesses with 2"):
        Predictor.from_run(default_model_dir(), device="cpu")


def test_rehashed_bundle_with_other_percentiles_refused(tmp_path):
    """A consistent manifest does not make a foreign preprocessing acceptable."""
    from glioseg.inference.predictor import Predictor

    bundle = tmp_path / "bundle"
    shutil.copytree(default_model_dir(), bundle)
    member = bundle / run_folders(default_model_dir())[0].relative_to(default_model_dir())  # "." or fold_0
    info = json.loads((member / "run.json").read_text())
    info["normalisation"]["percentiles"] = [1.0, 99.0]
    (member / "run.json").write_text(json.dumps(info))
    manifest = json.loads((bundle / "manifest.json").read_text())
    (bundle / "manifest.json").unlink()
    write_manifest(bundle, {k: v for k, v in manifest.items() if k not in ("format", "files", "sizes")})
    with pytest.raises(PreprocessingMismatch, match=rf"model {member}: stage low .*percentiles \[1.0, 99.0\]"):
        Predictor.from_run(bundle, device="cpu")
