"""What ``glioseg train`` records about how a run was made: command, times, hardware (shipped as provenance)."""

from __future__ import annotations

import json
import sys
from datetime import datetime

import pytest
from typer.testing import CliRunner

from glioseg.artifacts.rundir import record_command
from glioseg.cli import app
from glioseg.data.layouts import find_cases
from glioseg.preprocessing.cache import preprocess_dataset

TINY_YAML = "stages:\n  - name: main\n    patch_size: [32, 32, 32]\n    model: {base_filters: 4, depth: 3}\n"


@pytest.fixture(scope="module")
def preprocessed(make_synthetic_dataset, tmp_path_factory):
    out = tmp_path_factory.mktemp("pre_prov")
    assert not preprocess_dataset(find_cases(make_synthetic_dataset(n_cases=4, shape=(32, 32, 32), seed=2)), out).failed
    return out


def test_run_records_commands_times_and_hardware(preprocessed, tmp_path, monkeypatch):
    config = tmp_path / "tiny.yaml"
    config.write_text(TINY_YAML)
    run = tmp_path / "run"
    args = ["train", str(preprocessed), str(run), "--fold", "all", "--config", str(config), "--epochs", "1",
            "--iterations", "1", "--device", "cpu", "--no-progress"]
    monkeypatch.setattr(sys, "argv", ["/venv/bin/glioseg", *args])
    assert CliRunner().invoke(app, args).exit_code == 0
    info = json.loads((run / "run.json").read_text())
    assert info["command"] == "glioseg " + " ".join(args)
    assert [c["command"] for c in info["commands"]] == [info["command"]]
    started, finished = (datetime.fromisoformat(info[k]) for k in ("started", "finished"))
    assert started <= finished
    assert info["hardware"]["cores"] >= 1 and info["hardware"]["gpus"] == []
    again = ["train", str(preprocessed), str(run), "--fold", "all", "--no-progress"]
    monkeypatch.setattr(sys, "argv", ["glioseg", *again])
    assert CliRunner().invoke(app, again).exit_code == 0  # resumed (finished): the first command and start stay
    info2 = json.loads((run / "run.json").read_text())
    assert info2["command"] == info["command"] and info2["started"] == info["started"]
    assert [c["command"] for c in info2["commands"]] == [info["command"], "glioseg " + " ".join(again)]


def test_record_command_needs_an_existing_run(tmp_path):
    record_command(tmp_path / "nowhere", ["glioseg", "train"])
    assert not (tmp_path / "nowhere").exists()
