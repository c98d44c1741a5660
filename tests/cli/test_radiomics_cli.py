"""The radiomics commands end to end through typer's CliRunner, and their one-line refusals."""

from __future__ import annotations

import csv
import gzip
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from glioseg.cli import app

runner = CliRunner()


def _ok(args: list[str]) -> str:
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result.output


def _refused(args: list[str], *needles: str) -> str:
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit)  # a clean exit, not an exception
    assert "Traceback" not in result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, result.output
    for needle in needles:
        assert needle in errors[0], errors[0]
    return errors[0]


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from glioseg.data.synthetic import write_synthetic_dataset

    root = tmp_path_factory.mktemp("radiomics_data")
    write_synthetic_dataset(root, 6, layout="brats2017", shape=(32, 32, 32), seed=4)
    return root


@pytest.fixture(scope="module")
def features_csv(dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("features") / "features.csv"
    assert "6 case(s), 197 features" in _ok(["features", "-i", dataset, "--ground-truth", "-o", out])
    return out


@pytest.fixture(scope="module")
def clinical(features_csv: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Survival falls with the WT volume; one patient is censored (ALIVE text)."""
    rows = _rows(features_csv)
    path = tmp_path_factory.mktemp("clinical") / "survival.csv"
    lines = ["BraTS18ID,Age,Survival,ResectionStatus"]
    for i, r in enumerate(rows):
        days = int(1500 - 8 * float(r["vol_WT_ml"]) * 10 - 50 * i)
        survival = f"ALIVE ({days} days later)" if i == 0 else str(days)
        lines.append(f"{r['case_id']},{50 + 3 * i},{survival},GTR")
    path.write_text("\n".join(lines) + "\n")
    return path


def test_features_are_reproducible_and_a_seg_folder_gives_the_same_values(dataset, features_csv, tmp_path):
    again = tmp_path / "again.csv"
    _ok(["features", "-i", dataset, "--ground-truth", "-o", again])
    assert again.read_bytes() == features_csv.read_bytes()
    segs = tmp_path / "segs"
    segs.mkdir()
    for seg in dataset.glob("*/*_seg.nii.gz"):
        shutil.copy(seg, segs / seg.name.replace("_seg", ""))  # <ID>.nii.gz, as `glioseg predict` names them
    from_folder = tmp_path / "from_folder.csv"
    _ok(["features", "-i", dataset, "--seg", segs, "-o", from_folder])
    a, b = _rows(features_csv), _rows(from_folder)
    assert [r["segmentation"] for r in b] == [f"file {segs}"] * 6
    for ra, rb in zip(a, b, strict=True):
        ra.pop("segmentation"), rb.pop("segmentation")
        assert ra == rb


def test_survival_fit_then_predict_round_trip(features_csv, clinical, tmp_path):
    from glioseg.radiomics.models_io import load_model
    from glioseg.radiomics.survival import AGE, predict_days

    model_dir = tmp_path / "model"
    output = _ok(["survival", "fit", features_csv, clinical, "-o", model_dir, "--cv", "loo"])
    assert "age_linear" in output and "5 patients" not in output and "6 patients (1 censored" in output
    for name in ("model.json", "cv_table.csv", "cv_table.md", "cv_predictions.csv", "predicted_vs_actual.png"):
        assert (model_dir / name).is_file(), name
    table = _rows(model_dir / "cv_table.csv")
    assert [r["model"] for r in table] == ["age_linear", "ridge_radiomics", "cox_radiomics", "median_days"]
    assert sum(r["shipped"] == "yes" for r in table) == 1
    model = load_model(model_dir, "survival")
    out = tmp_path / "survival.csv"
    _ok(["survival", "predict", "--features", features_csv, "--clinical", clinical, "-m", model_dir, "-o", out])
    predicted = _rows(out)
    features = {r["case_id"]: r for r in _rows(features_csv)}
    ages = {r["BraTS18ID"]: float(r["Age"]) for r in _rows(clinical)}
    for row in predicted:
        values = {AGE: ages[row["case_id"]], **{k: float(v) for k, v in features[row["case_id"]].items()
                                               if k not in ("case_id", "segmentation")}}
        expected = predict_days(model, np.array([[values[n] for n in model.inputs]]))[0]
        assert float(row["predicted_days"]) == pytest.approx(round(expected))
        assert row["predicted_class"] in ("short", "mid", "long") and row["model"] == model.name


def test_survival_predict_from_images_with_the_shipped_model_needs_only_age(dataset, features_csv, tmp_path):
    ages = tmp_path / "ages.csv"
    ages.write_text("BraTS18ID,Age\n" + "".join(f"{r['case_id']},60\n" for r in _rows(features_csv)))
    out = tmp_path / "s.csv"
    _ok(["survival", "predict", "-i", dataset, "--ground-truth", "--clinical", ages, "-o", out])
    rows = _rows(out)
    assert len(rows) == 6 and {r["model"] for r in rows} == {"age_linear"}
    assert len({r["predicted_days"] for r in rows}) == 1  # the shipped baseline reads the age only
    assert {r["segmentation"] for r in rows} == {"not needed (age-only model)"}  # so nothing was segmented


def test_a_clinical_file_without_the_survival_column_is_refused_in_one_line(features_csv, tmp_path):
    bad = tmp_path / "clinical.csv"
    bad.write_text("BraTS18ID,Age\nx,50\n")
    _refused(["survival", "fit", features_csv, bad, "-o", tmp_path / "m"], str(bad), "lacks column(s) Survival",
             "BraTS18ID,Age,Survival")
    assert not (tmp_path / "m" / "model.json").exists()


def test_survival_predict_refuses_a_case_without_age(features_csv, tmp_path):
    ages = tmp_path / "ages.csv"
    ages.write_text("BraTS18ID,Age\nsomeone_else,60\n")
    _refused(["survival", "predict", "--features", features_csv, "--clinical", ages, "-o", tmp_path / "s.csv"],
             "no Age for case(s)")
    assert not (tmp_path / "s.csv").exists()


def test_grade_with_the_shipped_model_and_grade_fit(dataset, features_csv, tmp_path):
    out = tmp_path / "grade.csv"
    _ok(["grade", "-i", dataset, "--ground-truth", "-o", out])
    rows = _rows(out)
    assert len(rows) == 6 and all(0.0 <= float(r["p_hgg"]) <= 1.0 for r in rows)
    assert all(r["predicted_grade"] == ("HGG" if float(r["p_hgg"]) >= 0.5 else "LGG") for r in rows)
    grades = tmp_path / "grades.csv"
    ids = [r["case_id"] for r in _rows(features_csv)]
    grades.write_text("BraTS18ID,Grade\n" + "".join(f"{c},{'LGG' if i < 2 else 'HGG'}\n" for i, c in enumerate(ids)))
    output = _ok(["grade-fit", features_csv, grades, "-o", tmp_path / "g"])
    assert "majority class (HGG)" in output
    model = json.loads((tmp_path / "g" / "model.json").read_text())
    assert model["task"] == "grade" and len(model["inputs"]) == 3
    grades.write_text("BraTS18ID,Grade\n" + "".join(f"{c},HGG\n" for c in ids))
    _refused(["grade-fit", features_csv, grades, "-o", tmp_path / "g2"], "all HGG")


@pytest.mark.parametrize(("args", "needle"), [
    (["features", "-i", "{data}", "--ground-truth", "--seg", "{data}", "-o", "{tmp}/f.csv"], "not both"),
    (["features", "-i", "{data}", "--seg", "{tmp}/none", "-o", "{tmp}/f.csv"], "--seg"),
    (["features", "-i", "{tmp}/nothing", "--ground-truth", "-o", "{tmp}/f.csv"], "not a folder"),
    (["grade", "-o", "{tmp}/g.csv"], "no input"),
    (["grade", "--features", "{tmp}/none.csv", "-o", "{tmp}/g.csv"], "features file not found"),
    (["grade", "--features", "{tmp}/none.csv", "-m", "{tmp}", "-o", "{tmp}/g.csv"], "no grade model here"),
    (["survival", "fit", "{tmp}/none.csv", "{tmp}/c.csv", "-o", "{tmp}/m"], "features file not found"),
    (["survival", "fit", "{tmp}/none.csv", "{tmp}/c.csv", "-o", "{tmp}/m", "--cv", "bootstrap"], "--cv"),
    (["features", "-i", "{data}", "--ground-truth", "-o", "{data}/features.csv"], "inside the input folder"),
    (["grade", "--features", "{tmp}/f.csv", "-o", "{tmp}/f.csv"], "is an input"),
])
def test_bad_inputs_are_one_line_errors(dataset, tmp_path, args, needle):
    _refused([a.format(data=dataset, tmp=tmp_path) for a in args], needle)


def test_binary_tables_are_one_line_errors_naming_the_file(features_csv, tmp_path):
    """A NIfTI (gzip) file given where a CSV belongs: one line naming it, no decoding traceback."""
    binary = tmp_path / "image.nii.gz"
    binary.write_bytes(gzip.compress(b"\x00\x8b not text" * 50))
    _refused(["survival", "fit", binary, tmp_path / "c.csv", "-o", tmp_path / "m"], str(binary), "not a text CSV")
    _refused(["survival", "fit", features_csv, binary, "-o", tmp_path / "m"], str(binary), "not a text CSV",
             "BraTS18ID")


def test_a_case_that_fails_is_named_and_the_others_are_written(dataset, tmp_path):
    root = tmp_path / "data"
    shutil.copytree(dataset, root)
    victim = sorted(root.glob("*/*_seg.nii.gz"))[0]
    victim.unlink()
    out = tmp_path / "f.csv"
    _refused(["features", "-i", root, "--ground-truth", "-o", out], "1 case(s) failed",
             victim.name.removesuffix("_seg.nii.gz"))
    assert len(_rows(out)) == 5


def test_when_every_case_fails_nothing_is_written_and_the_error_says_so(dataset, tmp_path):
    root = tmp_path / "data"
    shutil.copytree(dataset, root)
    for seg in root.glob("*/*_seg.nii.gz"):
        seg.unlink()
    out = tmp_path / "f.csv"
    line = _refused(["features", "-i", root, "--ground-truth", "-o", out], "6 case(s) failed", "no case succeeded")
    assert "the others were written" not in line and not out.exists()


def test_survival_predict_with_an_imaging_model_measures_the_cases(dataset, tmp_path):
    from glioseg.radiomics.models_io import FittedModel, save_model

    model = FittedModel("survival", "linear", "wt_linear", ["age", "vol_WT_ml"], [0.0, 0.0], [1.0, 1.0],
                        [2.0, -10.0], 500.0, "days")
    save_model(model, tmp_path / "m")
    features = tmp_path / "f.csv"
    _ok(["features", "-i", dataset, "--ground-truth", "-o", features])
    ages = tmp_path / "ages.csv"
    ages.write_text("BraTS18ID,Age\n" + "".join(f"{r['case_id']},50\n" for r in _rows(features)))
    out = tmp_path / "s.csv"
    _ok(["survival", "predict", "-i", dataset, "--ground-truth", "--clinical", ages, "-m", tmp_path / "m", "-o", out])
    volumes = {r["case_id"]: float(r["vol_WT_ml"]) for r in _rows(features)}
    for row in _rows(out):
        assert float(row["predicted_days"]) == pytest.approx(round(600 - 10 * volumes[row["case_id"]]))
        assert row["segmentation"] == "ground truth"


@pytest.mark.slow
def test_without_seg_the_shipped_segmentation_model_runs_as_glioseg_predict_does(tmp_path):
    from glioseg.data.synthetic import write_synthetic_dataset

    data = tmp_path / "data"
    write_synthetic_dataset(data, 1, layout="brats2017", shape=(64, 64, 64), seed=4)  # the 2 mm model needs >= 64 mm
    predicted = tmp_path / "predicted.csv"
    _ok(["features", "-i", data, "-o", predicted, "--device", "cpu"])
    _ok(["predict", "-i", data, "-o", tmp_path / "segs", "--device", "cpu"])
    from_predict = tmp_path / "from_predict.csv"
    _ok(["features", "-i", data, "--seg", tmp_path / "segs", "-o", from_predict])
    a, b = _rows(predicted)[0], _rows(from_predict)[0]
    assert a.pop("segmentation").startswith("predicted by ") and b.pop("segmentation").startswith("file ")
    assert a == b  # the same label map as `glioseg predict` writes
