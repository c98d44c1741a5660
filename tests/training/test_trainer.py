"""Trainer: checkpoints, exact resume, run directory, CLI, and learning on synthetic cases."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from glioseg.artifacts.rundir import load_run, resolve_split
from glioseg.artifacts.weights import TrainError
from glioseg.config import ConfigError, ModelConfig, StageConfig, TrainConfig
from glioseg.data.layouts import find_cases
from glioseg.preprocessing.cache import preprocess_dataset
from glioseg.training.schedule import lr_at
from glioseg.training.trainer import fit, train_stage

TINY = ModelConfig(base_filters=4, depth=3)


def tiny_config(**stage_changes) -> TrainConfig:
    stage = StageConfig(name="main", patch_size=(32, 32, 32), batch_size=2, model=TINY, epochs=2,
                        iterations=3, val_every=1, fg_fraction=0.5)
    return TrainConfig(preset="test", stages=(replace(stage, **stage_changes),), device="cpu",
                       deterministic=True, seed=3, threads=1)


def weights(path: Path) -> dict[str, torch.Tensor]:
    return load_file(str(path))


def test_checkpoint_reload_gives_identical_logits(preprocessed, tmp_path):
    result = fit(tiny_config(epochs=1), preprocessed, tmp_path / "run", show_progress=False)
    assert result.finished and result.progress.global_step == 3
    bundle = load_run(tmp_path / "run")
    stage = bundle.stages["main"]
    assert stage.target == "regions" and stage.patch_size == (32, 32, 32) and stage.spacing_mm is None
    assert bundle.label_scheme == "brats2017"
    x = torch.randn(1, 4, 32, 32, 32)
    result.model.eval()
    with torch.no_grad():
        torch.testing.assert_close(stage.model(x), result.model(x), rtol=0, atol=0)
    # the optimiser state and RNG are loadable with weights_only=True
    state = torch.load(tmp_path / "run" / "main" / "state.pt", weights_only=True)
    assert state["progress"]["global_step"] == 3 and "exp_avg" in state["optimizer"]["state"][0]


@pytest.mark.parametrize("stop_at", [4, 3])
def test_kill_and_resume_equals_uninterrupted(preprocessed, tmp_path, stop_at):
    config = tiny_config()
    full = fit(config, preprocessed, tmp_path / "full", show_progress=False)
    part = fit(config, preprocessed, tmp_path / "resumed", show_progress=False, max_steps=stop_at)
    assert not part.finished and part.progress.global_step == stop_at
    resumed = fit(config, preprocessed, tmp_path / "resumed", show_progress=False)
    assert resumed.finished and resumed.progress.global_step == full.progress.global_step == 6
    a, b = weights(tmp_path / "full/main/last.safetensors"), weights(tmp_path / "resumed/main/last.safetensors")
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0, msg=key)
    assert [r["train_loss"] for r in full.progress.history] == [r["train_loss"] for r in resumed.progress.history]


def test_no_resume_starts_over(preprocessed, tmp_path):
    fit(tiny_config(epochs=1), preprocessed, tmp_path / "run", show_progress=False)
    again = fit(tiny_config(epochs=1), preprocessed, tmp_path / "run", show_progress=False, resume=False)
    assert again.progress.global_step == 3 and len(again.progress.history) == 1


def test_wall_time_checkpoints_mid_epoch(preprocessed, tmp_path, monkeypatch):
    import glioseg.training.trainer as train_module

    steps = []
    original = train_module.save_checkpoint
    monkeypatch.setattr(train_module, "save_checkpoint",
                        lambda d, m, o, s, p, st: (steps.append(p.global_step), original(d, m, o, s, p, st)))
    config = replace(tiny_config(epochs=1), checkpoint_minutes=1e-9)
    fit(config, preprocessed, tmp_path / "run", show_progress=False)
    assert steps == [1, 2, 3, 3]  # after every step (tiny interval), then at the end of the epoch


def test_run_directory_contents(preprocessed, tmp_path):
    run = tmp_path / "run"
    fit(tiny_config(epochs=1), preprocessed, run, show_progress=False)
    info = json.loads((run / "run.json").read_text())
    assert info["label_scheme"] == "brats2017" and info["format"] == "glioseg-run/1"
    assert len(info["split"]["val"]) == 1 and len(info["split"]["train"]) == 3
    assert info["stages"]["main"]["epochs_done"] == 1
    assert set(info["stages"]["main"]["best_validation"]) == {"dice_WT", "dice_TC", "dice_ET", "dice_mean"}
    for name in ("config.yaml", "splits.json", "main/model.safetensors", "main/last.safetensors",
                 "main/state.pt", "main/log.csv", "main/curve.png"):
        assert (run / name).is_file(), name
    assert any((run / "main" / "tb").iterdir())
    header = (run / "main" / "log.csv").read_text().splitlines()[0]
    assert header.startswith("epoch,step,lr,train_loss") and "dice_WT" in header


def test_labels_target_trains_four_channels(preprocessed, tmp_path):
    fit(tiny_config(epochs=1, iterations=1, target="labels"), preprocessed, tmp_path / "run", show_progress=False)
    model = load_run(tmp_path / "run").stages["main"].model
    with torch.no_grad():
        assert model(torch.zeros(1, 4, 32, 32, 32)).shape[1] == 4


def test_resume_with_other_network_is_refused(preprocessed, tmp_path):
    fit(tiny_config(epochs=1, iterations=1), preprocessed, tmp_path / "run", show_progress=False, max_steps=0)
    other = tiny_config(epochs=1, model=ModelConfig(base_filters=2, depth=3))
    ids = resolve_split(preprocessed, tmp_path / "run", other)
    with pytest.raises(TrainError, match=r"different.*model.*--no-resume"):
        train_stage(other, "main", preprocessed, tmp_path / "run", ids["train"], ids["val"], show_progress=False)


def test_trained_stage_settings_are_protected(preprocessed, tmp_path):
    fit(tiny_config(epochs=1, iterations=1), preprocessed, tmp_path / "run", show_progress=False)
    with pytest.raises(ConfigError, match=r"trained with other settings: stages\[0\]\.model\.base_filters: 4 -> 2"):
        fit(tiny_config(epochs=1, iterations=1, model=ModelConfig(base_filters=2, depth=3)), preprocessed,
            tmp_path / "run", show_progress=False, resume=False)


def test_corrupt_checkpoint_and_missing_run(preprocessed, tmp_path):
    fit(tiny_config(epochs=1, iterations=1), preprocessed, tmp_path / "run", show_progress=False)
    (tmp_path / "run" / "main" / "state.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(TrainError, match=r"cannot read the checkpoint.*--no-resume"):
        fit(tiny_config(epochs=1, iterations=1), preprocessed, tmp_path / "run", show_progress=False)
    with pytest.raises(TrainError, match=r"config\.yaml missing"):
        load_run(tmp_path / "nothing")


def test_spacing_mismatch_is_explained(preprocessed, tmp_path):
    with pytest.raises(TrainError, match=r"trains at 2.0 mm.*--spacing 2"):
        fit(tiny_config(spacing_mm=2.0), preprocessed, tmp_path / "run", show_progress=False)


def test_fp16_on_cpu_is_refused(preprocessed, tmp_path):
    with pytest.raises(ValueError, match="fp16 needs a CUDA device"):
        fit(tiny_config(precision="fp16"), preprocessed, tmp_path / "run", show_progress=False)


def test_bf16_training_runs(preprocessed, tmp_path):
    result = fit(tiny_config(epochs=1, iterations=1, precision="bf16"), preprocessed, tmp_path / "run",
                 show_progress=False)
    assert result.finished and torch.isfinite(torch.tensor(result.progress.history[0]["train_loss"]))


def test_learning_rate_schedules():
    stage = StageConfig(epochs=100)
    assert lr_at(stage, 0) == pytest.approx(5e-4)
    assert lr_at(stage, 10) == pytest.approx(5e-4 * 0.985**10)
    assert lr_at(replace(stage, optim=replace(stage.optim, schedule="poly")), 50) == pytest.approx(5e-4 * 0.5**0.9)
    assert lr_at(replace(stage, optim=replace(stage.optim, schedule="cosine")), 50) == pytest.approx(2.5e-4)
    assert lr_at(replace(stage, optim=replace(stage.optim, schedule="constant")), 99) == pytest.approx(5e-4)


def test_cli_train_end_to_end(preprocessed, tmp_path):
    from glioseg.cli import app

    yaml_file = tmp_path / "small.yaml"
    yaml_file.write_text("stages:\n  - name: main\n    patch_size: [32, 32, 32]\n"
                         "    model: {base_filters: 4, depth: 3}\n    val_window: [32, 32, 32]\n")
    run = tmp_path / "run"
    args = ["train", str(preprocessed), str(run), "--config", str(yaml_file), "--epochs", "1",
            "--iterations", "2", "--device", "cpu", "--no-progress"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "1 epochs" in result.output and "best validation epoch 0" in result.output
    assert load_run(run).config.stage("main").iterations == 2
    # re-running resumes from the saved config (here: already finished)
    result = CliRunner().invoke(app, ["train", str(preprocessed), str(run), "--no-progress"])
    assert result.exit_code == 0, result.output
    assert json.loads((run / "run.json").read_text())["stages"]["main"]["epochs_done"] == 1
    bad = CliRunner().invoke(app, ["train", str(preprocessed), str(run), "--preset", "cpu"])
    assert bad.exit_code == 1 and "made with preset 'isensee2017'" in bad.output
    bad = CliRunner().invoke(app, ["train", str(preprocessed), str(tmp_path / "r2"), "--stage", "nope"])
    assert bad.exit_code == 1 and "unknown stage 'nope'" in bad.output


@pytest.mark.slow
def test_small_network_learns_synthetic_tumours(make_synthetic_dataset, tmp_path):
    """Trained on 6 synthetic cases (with augmentation), WT Dice >= 0.8 on 2 held-out cases."""
    import numpy as np

    from glioseg.labels import labels_to_regions, probabilities_to_labels
    from glioseg.preprocessing.cache import load_preprocessed
    from glioseg.utils import dice

    raw = make_synthetic_dataset(n_cases=8, shape=(32, 32, 32), seed=5)
    pre = tmp_path / "pre"
    assert not preprocess_dataset(find_cases(raw), pre).failed
    stage = StageConfig(name="main", patch_size=(32, 32, 32), whole_volume=True, batch_size=2,
                        model=ModelConfig(base_filters=8, depth=3), optim=replace(StageConfig().optim, lr=3e-3),
                        epochs=8, iterations=10, val_every=4)
    config = TrainConfig(preset="test", stages=(stage,), device="cpu", threads=1, val_fraction=0.25)
    fit(config, pre, tmp_path / "run", show_progress=False)
    bundle = load_run(tmp_path / "run")
    held_out = bundle.info["split"]["val"]
    assert len(held_out) == 2 and not set(held_out) & set(bundle.info["split"]["train"])
    scores = []
    for case_id in held_out:
        case = load_preprocessed(pre, case_id, mmap=False)
        shape = case.image.shape[1:]
        padded = np.zeros((4, *[-(-s // 4) * 4 for s in shape]), dtype=np.float32)
        padded[:, :shape[0], :shape[1], :shape[2]] = case.image
        with torch.no_grad():
            logits = bundle.stages["main"].model(torch.from_numpy(padded)[None])
        pred = probabilities_to_labels(torch.sigmoid(logits[0]).numpy())[:shape[0], :shape[1], :shape[2]]
        scores.append(dice(labels_to_regions(pred)[0], labels_to_regions(case.label)[0]))
    print(f"held-out WT Dice: {scores}")
    assert min(scores) >= 0.8


def test_without_validation_cases_the_model_is_the_latest_epoch(preprocessed, tmp_path):
    config = tiny_config(epochs=2, val_every=1)
    ids = resolve_split(preprocessed, tmp_path / "run", config)
    everything = ids["train"] + ids["val"]
    train_stage(config, "main", preprocessed, tmp_path / "run", everything, [], show_progress=False)
    best, last = weights(tmp_path / "run/main/model.safetensors"), weights(tmp_path / "run/main/last.safetensors")
    for key in last:
        torch.testing.assert_close(best[key], last[key], rtol=0, atol=0)


def test_resume_with_other_settings_is_refused_and_nothing_written(preprocessed, tmp_path):
    run = tmp_path / "run"
    fit(tiny_config(epochs=2), preprocessed, run, show_progress=False, max_steps=1)
    saved, info = (run / "config.yaml").read_bytes(), (run / "run.json").read_bytes()
    with pytest.raises(ConfigError, match=r"config\.yaml: this run was trained with other settings: "
                                          r"seed: 3 -> 4; stages\[0\]\.epochs: 2 -> 4; "):
        fit(replace(tiny_config(epochs=4), seed=4), preprocessed, run, show_progress=False)
    assert (run / "config.yaml").read_bytes() == saved and (run / "run.json").read_bytes() == info


def test_free_fields_may_change_on_resume_and_are_recorded(preprocessed, tmp_path):
    run = tmp_path / "run"
    fit(tiny_config(epochs=1), preprocessed, run, show_progress=False, max_steps=1)
    seen = []
    result = fit(replace(tiny_config(epochs=1), threads=2, checkpoint_minutes=1.0), preprocessed, run,
                 show_progress=False, on_changes=lambda where, changes: seen.append((where, changes)))
    assert result.finished and result.progress.global_step == 3
    assert [(w, [str(c) for c in cs]) for w, cs in seen] == [(run, ["checkpoint_minutes: 5.0 -> 1.0",
                                                                    "threads: 1 -> 2"])]
    record = json.loads((run / "run.json").read_text())["config_changes"]
    assert [(r["stage"], r["resume"], r["changes"]) for r in record] == [
        ("main", True, ["checkpoint_minutes: 5.0 -> 1.0", "threads: 1 -> 2"])]
    assert load_run(run).config.threads == 2


def test_unstarted_stage_of_a_run_may_be_set_up_later(preprocessed, tmp_path):
    run = tmp_path / "run"
    two = replace(tiny_config(epochs=1), stages=(tiny_config().stage(), replace(tiny_config().stage(), name="b")))
    fit(two, preprocessed, run, "main", show_progress=False, max_steps=1)
    fit(two.with_stage("b", epochs=3), preprocessed, run, "b", show_progress=False, max_steps=0)
    assert json.loads((run / "run.json").read_text())["config_changes"][0]["changes"] == ["stages[1].epochs: 2 -> 3"]
    with pytest.raises(ConfigError, match=r"stages\[0\]\.iterations: 3 -> 5"):
        fit(two.with_stage("b", epochs=3).with_stage("main", iterations=5), preprocessed, run, "b",
            show_progress=False, max_steps=0)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_unavailable_device_fails_before_anything_is_written(preprocessed, tmp_path):
    from glioseg.cli import app

    with pytest.raises(ValueError, match="CUDA is not available"):
        fit(replace(tiny_config(), device="cuda"), preprocessed, tmp_path / "new", show_progress=False)
    assert not (tmp_path / "new").exists()
    run = tmp_path / "run"
    fit(tiny_config(epochs=1, iterations=1), preprocessed, run, show_progress=False)
    saved, info = (run / "config.yaml").read_bytes(), (run / "run.json").read_bytes()
    for target in (tmp_path / "new", run):
        result = CliRunner().invoke(app, ["train", str(preprocessed), str(target), "--device", "cuda", "--no-progress"])
        assert result.exit_code == 1
        assert result.output.strip().splitlines() == [
            "error: device 'cuda' requested but CUDA is not available; use --device cpu"]
    assert not (tmp_path / "new").exists()
    assert (run / "config.yaml").read_bytes() == saved and (run / "run.json").read_bytes() == info
    # the run is untouched: a CPU run resumes it
    result = CliRunner().invoke(app, ["train", str(preprocessed), str(run), "--no-progress"])
    assert result.exit_code == 0, result.output


def test_cli_resume_refuses_changed_options_and_notes_allowed_ones(preprocessed, tmp_path):
    from glioseg.cli import app

    run = tmp_path / "run"
    yaml_file = tmp_path / "small.yaml"
    yaml_file.write_text("stages:\n  - name: main\n    patch_size: [32, 32, 32]\n"
                         "    model: {base_filters: 4, depth: 3}\n")
    base = ["train", str(preprocessed), str(run), "--no-progress"]
    result = CliRunner().invoke(app, [*base, "--config", str(yaml_file), "--epochs", "1", "--iterations", "1",
                                      "--device", "cpu"])
    assert result.exit_code == 0, result.output
    saved = (run / "config.yaml").read_bytes()
    other = tmp_path / "lr.yaml"
    other.write_text("stages:\n  - name: main\n    optim: {lr: 1e-3}\n")
    for extra, field in ((["--epochs", "2"], "stages[0].epochs: 1 -> 2"),
                         (["--config", str(other)], "stages[0].optim.lr: 0.0005 -> 0.001"),
                         (["--seed", "9"], "seed: 0 -> 9")):
        bad = CliRunner().invoke(app, [*base, *extra])
        assert bad.exit_code == 1, bad.output
        lines = bad.output.strip().splitlines()
        assert len(lines) == 1 and field in lines[0] and "config.yaml" in lines[0], bad.output
    assert (run / "config.yaml").read_bytes() == saved
    ok = CliRunner().invoke(app, [*base, "--device", "auto"])
    assert ok.exit_code == 0, ok.output
    assert "changed the run's settings (recorded in run.json): device: 'cpu' -> 'auto'" in ok.output
    assert json.loads((run / "run.json").read_text())["config_changes"][0]["changes"] == ["device: 'cpu' -> 'auto'"]
