"""Resume policy: which changes to a run's saved settings are refused, allowed or recorded."""

from __future__ import annotations

from dataclasses import replace

import pytest

from glioseg.artifacts.resume import ABSENT, check_resume, config_changes, started_stages
from glioseg.config import ConfigError, ModelConfig, cpu_preset, save_config


def test_changes_are_named_by_field_path():
    old = cpu_preset()
    new = replace(old.with_stage("high", epochs=80, model=ModelConfig(base_filters=8)), seed=1, threads=4)
    assert [str(c) for c in config_changes(old, new)] == [
        "seed: 0 -> 1", "threads: None -> 4", "stages[1].model.base_filters: 12 -> 8", "stages[1].epochs: 40 -> 80"]
    changes = config_changes(old, new)
    assert [(c.stage, c.key) for c in changes] == [(None, "seed"), (None, "threads"), ("high", "model"),
                                                   ("high", "epochs")]
    assert config_changes(old, old) == []
    fewer = replace(old, stages=old.stages[:1])
    assert [(c.path, c.old, c.new) for c in config_changes(old, fewer)] == [("stages[1]", "high", ABSENT)]
    assert str(config_changes(fewer, old)[0]) == "stages[1]: (absent) -> 'high'"


@pytest.fixture
def run(tmp_path):
    """A cpu-preset run whose ``low`` stage has started (a checkpoint) and ``high`` has not."""
    save_config(cpu_preset(), tmp_path / "config.yaml")
    (tmp_path / "low").mkdir()
    (tmp_path / "low" / "state.pt").write_bytes(b"")
    return tmp_path


def test_started_stage_and_run_wide_changes_are_refused(run):
    assert started_stages(run, cpu_preset()) == {"low"}
    changed = replace(cpu_preset().with_stage("low", epochs=80), seed=2)
    with pytest.raises(ConfigError, match=r"config\.yaml: this run was trained with other settings: "
                                          r"seed: 0 -> 2; stages\[0\]\.epochs: 40 -> 80; .*new run directory"):
        check_resume(run, changed, "low")


def test_free_fields_and_unstarted_stages_may_change(run):
    new = replace(cpu_preset().with_stage("high", epochs=10), device="cpu", threads=1, checkpoint_minutes=1.0)
    assert [str(c) for c in check_resume(run, new, "high")] == [
        "device: 'auto' -> 'cpu'", "checkpoint_minutes: 5.0 -> 1.0", "threads: None -> 1", "stages[1].epochs: 40 -> 10"]
    assert check_resume(run / "new", new, "low") == []  # a new run: nothing to compare


def test_no_resume_frees_the_restarted_stage_but_not_its_network(run):
    longer = cpu_preset().with_stage("low", epochs=80)
    with pytest.raises(ConfigError, match=r"epochs: 40 -> 80; .*or pass --no-resume to retrain stage low"):
        check_resume(run, longer, "low")
    assert [str(c) for c in check_resume(run, longer, "low", resume=False)] == ["stages[0].epochs: 40 -> 80"]
    (run / "low" / "model.safetensors").write_bytes(b"")
    other_net = cpu_preset().with_stage("low", model=ModelConfig(base_filters=8))
    with pytest.raises(ConfigError, match=r"stages\[0\]\.model\.base_filters: 16 -> 8"):
        check_resume(run, other_net, "low", resume=False)
