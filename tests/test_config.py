"""Config: defaults, validation errors, presets, YAML round trip and overrides."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from glioseg.config import (
    ConfigError,
    ModelConfig,
    OptimConfig,
    StageConfig,
    TrainConfig,
    cpu_preset,
    dump_config,
    get_preset,
    isensee2017_preset,
    load_config,
    resolve_config,
    save_config,
)


def test_isensee2017_preset_matches_the_paper():
    stage = isensee2017_preset().stage()
    assert stage.patch_size == (128, 128, 128) and stage.batch_size == 2
    assert (stage.epochs, stage.iterations) == (300, 100)
    assert (stage.optim.lr, stage.optim.weight_decay, stage.optim.decay) == (5e-4, 1e-5, 0.985)
    assert stage.model == ModelConfig(name="isensee2017", base_filters=16, depth=5, dropout=0.3)


def test_cpu_preset_has_a_low_and_a_high_stage():
    config = cpu_preset()
    low, high = config.stage("low"), config.stage("high")
    assert (low.spacing_mm, high.spacing_mm) == (2.0, 1.0)
    assert low.whole_volume and low.precision == "bf16" and low.model.base_filters <= 16
    assert high.cascade_from == "low" and high.fg_fraction >= 0.5 and 64 <= min(high.patch_size) <= 96


@pytest.mark.parametrize("config", [isensee2017_preset(), cpu_preset()])
def test_yaml_round_trip(config, tmp_path):
    path = save_config(config, tmp_path / "config.yaml")
    assert load_config(path) == config


def test_partial_yaml_merges_stages_by_name(tmp_path):
    path = tmp_path / "override.yaml"
    path.write_text("seed: 7\nstages:\n  - name: high\n    epochs: 3\n    patch_size: [64, 64, 64]\n"
                    "    optim: {lr: 0.001}\n")
    config = load_config(path, cpu_preset())
    assert config.seed == 7 and [s.name for s in config.stages] == ["low", "high"]
    high = config.stage("high")
    assert high.epochs == 3 and high.patch_size == (64, 64, 64) and high.optim.lr == 1e-3
    assert high.optim.decay == 0.985 and config.stage("low") == cpu_preset().stage("low")


def test_resolve_config_order(tmp_path):
    yaml_file = tmp_path / "c.yaml"
    yaml_file.write_text("preset: cpu\ncheckpoint_minutes: 2\n")
    config = resolve_config(None, yaml_file)
    assert config.preset == "cpu" and config.checkpoint_minutes == 2
    assert resolve_config().preset == "isensee2017"
    saved = save_config(replace(cpu_preset(), seed=5), tmp_path / "run" / "config.yaml")
    assert resolve_config(None, None, saved).seed == 5
    with pytest.raises(ConfigError, match="made with preset 'cpu', not 'isensee2017'"):
        resolve_config("isensee2017", None, saved)


@pytest.mark.parametrize("build,match", [
    (lambda: StageConfig(patch_size=(128, 100, 128)), r"patch_size .* multiples of 16"),
    (lambda: StageConfig(patch_size=(64, 64)), "patch_size"),
    (lambda: StageConfig(val_window=(8, 8, 8), model=ModelConfig(depth=5)), "val_window"),
    (lambda: StageConfig(target="softmax"), "target 'softmax'"),
    (lambda: StageConfig(precision="int8"), "precision 'int8'"),
    (lambda: StageConfig(fg_fraction=1.5), "fg_fraction"),
    (lambda: StageConfig(name="my stage"), "identifier"),
    (lambda: OptimConfig(schedule="step"), "schedule 'step'"),
    (lambda: OptimConfig(lr=0), "lr"),
    (lambda: ModelConfig(name="vnet"), "model.name 'vnet'"),
    (lambda: TrainConfig(stages=(StageConfig(), StageConfig())), "unique"),
    (lambda: TrainConfig(checkpoint_minutes=0), "checkpoint_minutes"),
])
def test_invalid_values(build, match):
    with pytest.raises(ConfigError, match=match):
        build()


def test_bad_files(tmp_path):
    bad_key = tmp_path / "bad.yaml"
    bad_key.write_text("stages:\n  - name: main\n    epoch: 3\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: .*unknown key\(s\) \['epoch'\]"):
        load_config(bad_key)
    broken = tmp_path / "broken.yaml"
    broken.write_text("stages: [\n")
    with pytest.raises(ConfigError, match="cannot read config"):
        load_config(broken)
    with pytest.raises(ConfigError, match=r"unknown preset 'gpu'.*cpu.*isensee2017"):
        get_preset("gpu")
    with pytest.raises(ConfigError, match=r"unknown stage 'mid'.*low.*high"):
        cpu_preset().stage("mid")


def test_with_stage_revalidates():
    with pytest.raises(ConfigError, match="epochs"):
        cpu_preset().with_stage("low", epochs=0)
    assert cpu_preset().with_stage("low", epochs=2).stage("low").epochs == 2
    assert "stages:" in dump_config(cpu_preset())


def test_shipped_recipe_file_is_the_cpu_preset():
    recipe = Path(__file__).resolve().parents[1] / "configs" / "cpu_shipped.yaml"
    config = load_config(recipe, cpu_preset())
    assert config.stages == cpu_preset().stages
    assert config.threads == 1


def _stage_yaml(tmp_path, body: str) -> Path:
    path = tmp_path / "c.yaml"
    path.write_text("stages:\n  - name: main\n" + "".join(f"    {line}\n" for line in body.splitlines()))
    return path


@pytest.mark.parametrize("text,value", [("5e-4", 5e-4), ("1.0e-3", 1e-3), ("-2E2", None), (".5", 0.5), ("2", 2.0)])
def test_yaml_numbers_without_a_dot_are_numbers(tmp_path, text, value):
    path = _stage_yaml(tmp_path, f"optim: {{lr: {text}}}")
    if value is None:  # parsed as a number (-200.0), then refused by the range check, not the type check
        with pytest.raises(ConfigError, match=r"optim.lr must be > 0, got -200.0"):
            load_config(path)
        return
    lr = load_config(path).stage().optim.lr
    assert lr == value and type(lr) is float


@pytest.mark.parametrize("body,match", [
    ('optim: {lr: "5e-4"}', r"stages\[0\]\.optim\.lr: expected a number, got '5e-4' \(str\); write the number"),
    ('augment: "no"', r"stages\[0\]\.augment: expected a boolean \(true or false\), got 'no' \(str\)"),
    ('loss: {batch_dice: "false"}', r"stages\[0\]\.loss\.batch_dice: expected a boolean .*got 'false' \(str\)"),
    ("augment: 1", r"stages\[0\]\.augment: expected a boolean .*got 1 \(int\)"),
    ("patch_size: [128.9, 128, 128]", r"stages\[0\]\.patch_size\[0\]: expected an integer, got 128\.9 \(float\)"),
    ("patch_size: [128, 128]", r"stages\[0\]\.patch_size: expected a list of 3 values .*got \[128, 128\]"),
    ("epochs: true", r"stages\[0\]\.epochs: expected an integer, got True \(bool\)"),
    ("epochs: 4.0", r"stages\[0\]\.epochs: expected an integer, got 4\.0 \(float\)"),
    ("name: 5", r"stages\[0\]\.name: expected a string, got 5 \(int\)"),
    ("val_window: 64", r"stages\[0\]\.val_window: expected a list of 3 values .*got 64 \(int\)"),
    ("model: [1]", r"stages\[0\]\.model: expected a mapping, got \[1\] \(list\)"),
])
def test_yaml_values_are_checked_against_field_types(tmp_path, body, match):
    with pytest.raises(ConfigError, match=match) as info:
        load_config(_stage_yaml(tmp_path, body))
    assert str(info.value).startswith(str(tmp_path / "c.yaml"))


def test_top_level_types_and_friendly_conversions(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("threads: 2.5\n")
    with pytest.raises(ConfigError, match=r"c\.yaml: threads: expected an integer, got 2\.5"):
        load_config(path)
    path.write_text("deterministic: yes\nthreads: null\ncheckpoint_minutes: 2\nstages:\n  - name: main\n"
                    "    spacing_mm: 1\n    loss: {dice_weight: 0, bce_weight: 1}\n")
    config = load_config(path)
    assert config.deterministic is True and config.threads is None  # YAML's own booleans are fine
    assert type(config.checkpoint_minutes) is float and type(config.stage().spacing_mm) is float
    assert config.stage().loss.dice_weight == 0.0


def test_sizes_are_never_truncated_in_python_either():
    with pytest.raises(ConfigError, match=r"patch_size \(128\.9, 128, 128\) must be 3 positive integer multiples"):
        StageConfig(patch_size=(128.9, 128, 128))
    import numpy as np

    assert StageConfig(patch_size=tuple(np.array([64, 64, 64]))).patch_size == (64, 64, 64)


def test_broken_yaml_is_one_line(tmp_path):
    broken = tmp_path / "broken.yaml"
    broken.write_text("stages: [\n  - name: x\n")
    with pytest.raises(ConfigError, match=r"broken\.yaml: cannot read config") as info:
        resolve_config(None, broken)
    assert "\n" not in str(info.value)
