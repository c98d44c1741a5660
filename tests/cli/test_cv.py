"""`glioseg cv` end to end through the CLI: synth -> preprocess -> split -> train --all-folds -> cv."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from glioseg.cli import app

runner = CliRunner()
CONFIG = {"preset": "cpu", "device": "cpu", "threads": 1, "seed": 5, "folds": 2,
          "stages": [{"name": "low", "spacing_mm": 2.0, "epochs": 1, "iterations": 1, "batch_size": 1,
                      "patch_size": [16, 16, 16], "val_every": 1, "precision": "fp32",
                      "model": {"name": "isensee2017", "base_filters": 4, "depth": 3}}]}


def invoke(*args: str):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def cv_root(tmp_path_factory) -> tuple[Path, Path]:
    """A 2-fold CV root trained by `glioseg train --all-folds` (one iteration per fold) on 4 phantoms."""
    base = tmp_path_factory.mktemp("cli_cv")
    raw, pre, root = base / "raw", base / "pre", base / "cv"
    assert invoke("synth", raw, "--cases", 4, "--shape", "32", "--seed", 2).exit_code == 0
    result = invoke("preprocess", raw, pre, "--spacing", 2)
    assert result.exit_code == 0, result.output
    assert invoke("split", pre, "--folds", 2).exit_code == 0
    (base / "tiny.yaml").write_text(yaml.safe_dump(CONFIG))
    result = invoke("train", pre, root, "--config", base / "tiny.yaml", "--stage", "low", "--all-folds",
                    "--no-progress")
    assert result.exit_code == 0, result.output
    return root, raw


def test_cv_predicts_out_of_fold_and_prints_the_table(cv_root, tmp_path):
    root, raw = cv_root
    out = tmp_path / "oof"
    result = invoke("cv", root, raw, "-o", out, "--device", "cpu", "--precision", "fp32")
    assert result.exit_code == 0, result.output
    assert "4 predicted, 0 skipped, 0 failed" in result.output
    assert "| region | n | mean | sd | median | min |" in result.output and "| WT | 4 |" in result.output
    assert "| institution | n | WT | TC | ET | WT < 0.6 |" in result.output
    record = json.loads((out / "cv.json").read_text())
    for k in range(2):
        val = json.loads((root / f"fold_{k}" / "run.json").read_text())["split"]["val"]
        ids = [json.loads(line)["id"] for line in (out / f"manifest.fold-{k}.jsonl").read_text().splitlines()]
        assert sorted(ids) == sorted(val) == sorted(c for c, f in record["cases"].items() if f == k)
    for name in ("cv_table.md", "cv_table.csv", "cv_table.json", "cv_cases.csv", "cases.csv", "report.html"):
        assert (out / "report" / name).is_file(), name
    with (out / "report" / "cv_cases.csv").open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert {r["case_id"]: int(r["fold"]) for r in rows} == record["cases"]
    assert {r["institution"] for r in rows} == {"other"}  # Brats18_SYN_... names no institution
    again = invoke("cv", root, raw, "-o", out, "--device", "cpu", "--precision", "fp32")
    assert again.exit_code == 0 and "0 predicted, 4 skipped" in again.output
    partial = invoke("cv", root, raw, "-o", tmp_path / "fold1", "--folds", "1", "--device", "cpu")
    assert partial.exit_code == 0 and "2 predicted" in partial.output and "only folds 1" in partial.output
    only = invoke("cv", root, raw, "-o", out, "--no-predict", "--report", tmp_path / "r2")
    assert only.exit_code == 0 and (tmp_path / "r2" / "cv_table.md").read_text() == (
        out / "report" / "cv_table.md").read_text()


def _one_error_line(result) -> str:
    assert result.exit_code == 1, result.output
    lines = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, result.output
    return lines[0]


def test_cv_refuses_missing_and_unfinished_folds_in_one_line(cv_root, tmp_path):
    root, raw = cv_root
    copy = tmp_path / "cv"
    shutil.copytree(root, copy)
    info_path = copy / "fold_0" / "run.json"
    info = json.loads(info_path.read_text())
    info["stages"]["low"]["epochs"] = 3
    info_path.write_text(json.dumps(info))
    line = _one_error_line(invoke("cv", copy, raw, "-o", tmp_path / "out", "--device", "cpu"))
    assert "fold 0:" in line and "unfinished (low 1/3 epochs)" in line and "--allow-unfinished" in line
    shutil.rmtree(copy / "fold_1")
    result = invoke("cv", copy, raw, "-o", tmp_path / "out", "--device", "cpu")
    assert "fold_1 missing" in _one_error_line(result) and "cv predict" not in result.output  # no bar: refused first
    assert not (tmp_path / "out").exists()


def test_cv_refuses_a_case_in_no_validation_set_and_bad_options(cv_root, tmp_path):
    root, raw = cv_root
    data = tmp_path / "raw"
    shutil.copytree(raw, data)
    assert invoke("synth", tmp_path / "extra", "--cases", 5, "--shape", "32", "--seed", 3).exit_code == 0
    shutil.copytree(tmp_path / "extra" / "Brats18_SYN_004_1", data / "Brats18_SYN_004_1")
    line = _one_error_line(invoke("cv", root, data, "-o", tmp_path / "out", "--device", "cpu"))
    assert "case Brats18_SYN_004_1 is in no fold's validation set" in line
    assert "--tta" in _one_error_line(invoke("cv", root, raw, "-o", tmp_path / "out", "--tta", "sideways"))
    assert "--grades" in _one_error_line(invoke("cv", root, raw, "-o", tmp_path / "out", "--grades", tmp_path / "no"))
    assert "--folds '0,0'" in _one_error_line(invoke("cv", root, raw, "-o", tmp_path / "out", "--folds", "0,0"))
    line = _one_error_line(invoke("cv", root, raw, "-o", tmp_path / "out2", "--no-predict"))
    assert "cv.json missing" in line


def test_cv_table_script_predicts_and_reports_both_shared_folders(cv_root, tmp_path):
    import subprocess
    import sys

    root, raw = cv_root
    shared = tmp_path / "shared"
    cases = sorted(p.name for p in raw.iterdir())
    for folder, ids in (("brats18", cases[:3]), ("brats18_extra", cases[3:])):
        (shared / folder).mkdir(parents=True)
        for case_id in ids:
            (shared / folder / case_id).symlink_to(raw / case_id)
    (shared / "meta").mkdir()
    (shared / "meta" / "brats2018_grade.csv").write_text(f"BraTS18ID,Grade\n{cases[0]},LGG\n")
    script = Path(__file__).resolve().parents[2] / "scripts" / "cv_table.sh"
    env = {"PATH": "/usr/bin:/bin", "BIN": str(Path(sys.executable).parent), "SHARED": str(shared)}
    done = subprocess.run(["bash", str(script), str(root), str(tmp_path / "oof"), "--device", "cpu"],
                          capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "| LGG | 1 |" in done.stdout and "| unknown | 3 |" in done.stdout
    assert sorted(json.loads((tmp_path / "oof" / "cv.json").read_text())["cases"]) == cases
    assert (tmp_path / "oof" / "report" / "cv_table.md").is_file()


@pytest.mark.slow
@pytest.mark.realdata
def test_cv_on_real_cases_writes_what_glioseg_predict_writes(shared_brats18, tmp_path):
    """Two folds made of the shipped model (not a real CV: its numbers mean nothing), two real cases."""
    from glioseg.artifacts.bundles import default_model_dir
    from glioseg.artifacts.folds import run_folders

    shipped = run_folders(default_model_dir())[0]  # the shipped run, or fold_0 of the shipped fold ensemble
    data, root = tmp_path / "data", tmp_path / "cv"
    ids = ["Brats18_2013_11_1", "Brats18_CBICA_AME_1"]
    data.mkdir()
    for case_id in ids:
        (data / case_id).symlink_to(shared_brats18 / case_id)
    info = json.loads((shipped / "run.json").read_text())
    for k in range(2):
        shutil.copytree(shipped, root / f"fold_{k}", ignore=shutil.ignore_patterns("manifest.json"))
        info["split"] = {"fold": k, "train": [ids[1 - k]], "val": [ids[k]]}
        (root / f"fold_{k}" / "run.json").write_text(json.dumps(info))
    result = invoke("cv", root, data, "-o", tmp_path / "oof", "--threads", "1")
    assert result.exit_code == 0, result.output
    assert "| 2013 | 1 |" in result.output and "| CBICA | 1 |" in result.output
    single = invoke("predict", "-i", data / ids[1], "-m", root / "fold_1", "-o", tmp_path / "pred", "--threads", "1")
    assert single.exit_code == 0, single.output
    assert (tmp_path / "pred" / f"{ids[1]}.nii.gz").read_bytes() == (tmp_path / "oof" / f"{ids[1]}.nii.gz").read_bytes()


def test_cv_reports_a_case_it_could_not_predict_and_exits_non_zero(cv_root, tmp_path):
    root, raw = cv_root
    data = tmp_path / "raw"
    shutil.copytree(raw, data)
    bad = sorted(p.name for p in data.iterdir())[0]
    (data / bad / f"{bad}_flair.nii.gz").write_bytes(b"\x1f\x8b truncated")
    result = invoke("cv", root, data, "-o", tmp_path / "oof", "--device", "cpu")
    assert result.exit_code == 1
    assert "3 predicted, 0 skipped, 1 failed" in result.output
    assert f"Failed cases (no readable prediction, scored Dice 0): {bad}." in result.output  # the table is printed
    assert f"error: 1 case(s) could not be predicted (scored Dice 0): {bad};" in result.output
    assert (tmp_path / "oof" / "report" / "cv_table.md").is_file()


def test_cv_applies_given_postprocessing_to_every_fold_and_records_it(cv_root, tmp_path):
    """--postprocess: the ensemble's tuned settings scored out-of-fold; recorded, so a mixed OUT is refused."""
    root, raw = cv_root
    settings = tmp_path / "tuned"
    settings.mkdir()
    (settings / "postprocess.json").write_text(json.dumps({"thresholds": [0.5, 0.5, 0.5], "min_et_mm3": 0,
                                                           "min_component_mm3": [1e12, 0, 0]}))
    out = tmp_path / "oof"
    result = invoke("cv", root, raw, "-o", out, "--device", "cpu", "--postprocess", settings)  # the folder
    assert result.exit_code == 0, result.output
    import nibabel as nib

    for case in json.loads((out / "cv.json").read_text())["cases"]:
        assert not nib.load(str(out / f"{case}.nii.gz")).get_fdata().any()  # every WT component removed
    record = json.loads((out / "cv.json").read_text())
    assert record["options"]["postprocess"]["min_component_mm3"] == [1e12, 0, 0]
    again = invoke("cv", root, raw, "-o", out, "--device", "cpu", "--postprocess", settings / "postprocess.json")
    assert again.exit_code == 0 and "0 predicted, 4 skipped" in again.output  # the file: the same settings
    assert "another cross-validation" in _one_error_line(invoke("cv", root, raw, "-o", out, "--device", "cpu"))
    assert "drop one of the two" in _one_error_line(invoke("cv", root, raw, "-o", out, "--no-predict",
                                                           "--postprocess", settings))


@pytest.mark.parametrize(("content", "match"), [
    (None, "not found; give the postprocess.json written by `glioseg tune-postprocess`"),
    ("{not json", "not usable post-processing settings"),
    ("[1, 2]", "not usable post-processing settings (not a JSON object)"),
    ('{"thresholds": [2, 0.5, 0.5]}', "not usable post-processing settings"),
])
def test_cv_refuses_unusable_postprocessing_in_one_line(cv_root, tmp_path, content, match):
    root, raw = cv_root
    path = tmp_path / "pp.json"
    if content is not None:
        path.write_text(content)
    line = _one_error_line(invoke("cv", root, raw, "-o", tmp_path / "oof", "--postprocess", path))
    assert str(path) in line and match in line
    assert not (tmp_path / "oof").exists()  # refused before anything is written
