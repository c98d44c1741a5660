"""Which weights become ``model.safetensors``: the final ones by default (validation only monitors, so
held-out scores of the run stay unbiased), or the best validated epoch with ``model_selection: best``."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from glioseg.config import ConfigError, TrainConfig, from_dict
from glioseg.training.trainer import fit

sys.path.insert(0, str(Path(__file__).parent))
from test_trainer import tiny_config


def _config(**stage_changes) -> TrainConfig:
    return tiny_config(epochs=3, iterations=2, **stage_changes)


@pytest.fixture()
def falling_scores(monkeypatch):
    """Validation that scores epoch 0 best and every later epoch worse."""
    scores = iter([0.9, 0.5, 0.1, 0.05])

    def validate(*args, **kwargs):
        score = next(scores)
        return {"dice_WT": score, "dice_TC": score, "dice_ET": score, "dice_mean": score}

    monkeypatch.setattr("glioseg.training.trainer.validate", validate)


def _same(a: Path, b: Path) -> bool:
    x, y = load_file(str(a)), load_file(str(b))
    return x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)


def test_by_default_the_model_is_the_final_weights_even_when_an_earlier_epoch_validated_better(
        preprocessed, tmp_path, falling_scores):
    fit(_config(), preprocessed, tmp_path / "run", show_progress=False)
    stage_dir = tmp_path / "run" / "main"
    assert _same(stage_dir / "model.safetensors", stage_dir / "last.safetensors")
    record = json.loads((tmp_path / "run" / "run.json").read_text())["stages"]["main"]
    assert record["model_selection"] == "last epoch" and record["model_epoch"] == 2
    assert record["best_epoch"] == 0 and record["best_validation"]["dice_mean"] == 0.9  # still reported


def test_best_keeps_the_best_validated_epoch(preprocessed, tmp_path, falling_scores):
    fit(_config(model_selection="best"), preprocessed, tmp_path / "run", show_progress=False)
    stage_dir = tmp_path / "run" / "main"
    assert not _same(stage_dir / "model.safetensors", stage_dir / "last.safetensors")
    assert load_file(str(stage_dir / "model.safetensors")) is not None
    record = json.loads((tmp_path / "run" / "run.json").read_text())["stages"]["main"]
    assert record["model_selection"] == "best mean validation Dice" and record["model_epoch"] == 0


def test_cli_says_which_weights_are_the_model(preprocessed, tmp_path):
    from glioseg.cli import app

    yaml_file = tmp_path / "small.yaml"
    yaml_file.write_text("stages:\n  - name: main\n    patch_size: [32, 32, 32]\n"
                         "    model: {base_filters: 4, depth: 3}\n    val_window: [32, 32, 32]\n")
    result = CliRunner().invoke(app, ["train", str(preprocessed), str(tmp_path / "run"), "--config", str(yaml_file),
                                      "--epochs", "1", "--iterations", "2", "--device", "cpu", "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "model = last epoch (0); best validation epoch 0" in result.output


def test_an_unknown_selection_is_refused_by_name():
    with pytest.raises(ConfigError, match=r"model_selection 'early'.*'last' or 'best'"):
        from_dict(TrainConfig, {"stages": [{"name": "main", "model_selection": "early"}]})
