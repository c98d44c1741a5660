"""``--fold all``: train on every case with no validation, recorded as such, resumable, and served by predict."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import nibabel as nib
import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from glioseg.artifacts.rundir import FOLD_ALL, load_run, parse_fold, resolve_split
from glioseg.artifacts.weights import TrainError
from glioseg.cli import app
from glioseg.config import ModelConfig, StageConfig, TrainConfig
from glioseg.data.layouts import find_cases
from glioseg.preprocessing.cache import list_preprocessed, preprocess_dataset
from glioseg.training.trainer import fit

TINY_YAML = "stages:\n  - name: main\n    patch_size: [32, 32, 32]\n    model: {base_filters: 4, depth: 3}\n"


def tiny_config(**stage_changes) -> TrainConfig:
    stage = StageConfig(name="main", patch_size=(32, 32, 32), batch_size=2, model=ModelConfig(base_filters=4, depth=3),
                        epochs=2, iterations=2, val_every=1, fg_fraction=0.5)
    return TrainConfig(preset="test", stages=(replace(stage, **stage_changes),), device="cpu",
                       deterministic=True, seed=3, threads=1)


@pytest.fixture(scope="module")
def raw(make_synthetic_dataset) -> Path:
    return make_synthetic_dataset(n_cases=4, shape=(32, 32, 32), seed=1)


@pytest.fixture(scope="module")
def preprocessed(raw, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("pre_all")
    assert not preprocess_dataset(find_cases(raw), out).failed
    return out


def test_fold_all_trains_on_every_case_and_says_so(preprocessed, tmp_path):
    run = tmp_path / "run"
    result = fit(tiny_config(), preprocessed, run, fold=FOLD_ALL, show_progress=False)
    assert result.finished and result.progress.best_epoch == -1
    cases = list_preprocessed(preprocessed)
    info = json.loads((run / "run.json").read_text())
    assert info["split"]["fold"] == "all" and info["split"]["train"] == cases and info["split"]["val"] == []
    assert info["split"]["validation"].startswith("none: --fold all")
    stage = info["stages"]["main"]
    assert stage["model_epoch"] == 1 and stage["model_selection"] == "last epoch (no validation)"
    assert stage["best_validation"] == {}
    assert json.loads((run / "splits.json").read_text())["splits"] == [{"fold": "all", "train": cases, "val": []}]
    best, last = load_file(str(run / "main/model.safetensors")), load_file(str(run / "main/last.safetensors"))
    for key in last:
        torch.testing.assert_close(best[key], last[key], rtol=0, atol=0, msg=key)
    assert "dice_mean" not in (run / "main" / "log.csv").read_text()  # nothing was validated


def test_fold_all_resumes_exactly_on_the_recorded_cases(preprocessed, tmp_path):
    pre = tmp_path / "pre"
    shutil.copytree(preprocessed, pre)
    full = fit(tiny_config(), pre, tmp_path / "full", fold="all", show_progress=False)
    part = fit(tiny_config(), pre, tmp_path / "resumed", fold="all", show_progress=False, max_steps=3)
    assert not part.finished and part.progress.global_step == 3
    shutil.copytree(pre / "Brats18_SYN_000_1", pre / "Brats18_NEW_1")  # a case added after the start
    resumed = fit(tiny_config(), pre, tmp_path / "resumed", fold="all", show_progress=False)
    assert resumed.finished and resumed.progress.global_step == full.progress.global_step == 4
    a = load_file(str(tmp_path / "full/main/last.safetensors"))
    b = load_file(str(tmp_path / "resumed/main/last.safetensors"))
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0, msg=key)
    recorded = json.loads((tmp_path / "resumed" / "run.json").read_text())["split"]["train"]
    assert "Brats18_NEW_1" not in recorded and len(recorded) == 4


def test_fold_all_and_fold_runs_do_not_mix(preprocessed, tmp_path):
    fit(tiny_config(epochs=1, iterations=1), preprocessed, tmp_path / "all", fold="all", show_progress=False)
    with pytest.raises(TrainError, match=r"trains on every case \(--fold all\); give --fold all"):
        fit(tiny_config(epochs=1, iterations=1), preprocessed, tmp_path / "all", fold=0, show_progress=False)
    with pytest.raises(TrainError, match="trains on every case"):
        resolve_split(preprocessed, tmp_path / "all", tiny_config())  # no fold: the default split
    two_folds = replace(tiny_config(epochs=1, iterations=1), folds=2)
    fit(two_folds, preprocessed, tmp_path / "fold0", fold=0, show_progress=False)
    with pytest.raises(TrainError, match="train --fold all into a new run directory"):
        fit(two_folds, preprocessed, tmp_path / "fold0", fold="all", show_progress=False)
    with pytest.raises(TrainError, match="leave out --splits"):
        resolve_split(preprocessed, tmp_path / "new", tiny_config(), tmp_path / "fold0" / "splits.json", "all")
    assert not (tmp_path / "new").exists()


@pytest.mark.parametrize("value,expected", [(None, None), ("all", "all"), ("2", 2), (0, 0)])
def test_parse_fold(value, expected):
    assert parse_fold(value) == expected


@pytest.mark.parametrize("value", ["ALL", "-1", "x", -1, "1.5"])
def test_parse_fold_refuses_other_values(value):
    with pytest.raises(ValueError, match=r"fold number .* or 'all'"):
        parse_fold(value)


def test_cli_fold_all_then_predict_with_the_run(preprocessed, raw, tmp_path):
    config = tmp_path / "tiny.yaml"
    config.write_text(TINY_YAML)
    run = tmp_path / "run"
    args = ["train", str(preprocessed), str(run), "--fold", "all", "--config", str(config), "--epochs", "1",
            "--iterations", "2", "--device", "cpu", "--no-progress"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    assert "no validation, model = last epoch (0)" in res.output
    res = CliRunner().invoke(app, ["train", str(preprocessed), str(run), "--fold", "all", "--no-progress"])
    assert res.exit_code == 0, res.output  # re-run: resumes (already finished)
    assert load_run(run).info["split"]["fold"] == "all"
    case = find_cases(raw)[0]
    res = CliRunner().invoke(app, ["predict", "-i", str(raw / case.case_id), "-o", str(tmp_path / "out"), "-m",
                                   str(run), "--device", "cpu", "--precision", "fp32"])
    assert res.exit_code == 0, res.output
    written = nib.load(tmp_path / "out" / f"{case.case_id}.nii.gz")
    assert written.shape == nib.load(case.label).shape


def test_cli_fold_values(preprocessed, tmp_path):
    res = CliRunner().invoke(app, ["train", str(preprocessed), str(tmp_path / "r"), "--fold", "every"])
    assert res.exit_code == 2 and "neither a fold number (0, 1, ...) nor 'all'" in res.output
    res = CliRunner().invoke(app, ["train", str(preprocessed), str(tmp_path / "r"), "--fold", "all", "--all-folds"])
    assert res.exit_code == 1 and "give either --fold all or --all-folds" in res.output
    assert not (tmp_path / "r").exists()
