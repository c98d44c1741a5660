"""Ctrl-C in training: a checkpoint is written, its place and the resume command are named, exit 130;
a full disk while training is one line."""

from __future__ import annotations

import errno
import shlex
import signal
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

import glioseg.training.trainer as trainer
from glioseg.cli import app
from glioseg.training.interrupt import TrainingInterrupted
from glioseg.training.trainer import fit

sys.path.insert(0, str(Path(__file__).parent))
from test_trainer import tiny_config

SMALL_YAML = ("stages:\n  - name: main\n    patch_size: [32, 32, 32]\n"
              "    model: {base_filters: 4, depth: 3}\n    val_window: [32, 32, 32]\n")


@pytest.fixture(scope="module")
def uninterrupted(preprocessed, tmp_path_factory) -> trainer.StageResult:
    """The tiny config (2 epochs x 3 steps) trained without interruption."""
    return fit(tiny_config(), preprocessed, tmp_path_factory.mktemp("full") / "run", show_progress=False)


def _interrupt_on_call(monkeypatch, name: str, call: int, before: bool = True) -> dict[str, int]:
    """Make ``trainer.<name>`` raise KeyboardInterrupt on its ``call``-th call (before or after the real work)."""
    real = getattr(trainer, name)
    calls = {"n": 0}

    def wrapped(*args, **kwargs):
        calls["n"] += 1
        if before and calls["n"] == call:
            raise KeyboardInterrupt
        out = real(*args, **kwargs)
        if not before and calls["n"] == call:
            raise KeyboardInterrupt
        return out

    monkeypatch.setattr(trainer, name, wrapped)
    return calls


def _same_weights(a: Path, b: Path) -> None:
    wa, wb = load_file(str(a)), load_file(str(b))
    for key in wa:
        torch.testing.assert_close(wa[key], wb[key], rtol=0, atol=0, msg=key)


def test_ctrl_c_after_a_step_checkpoints_and_resumes_exactly(preprocessed, uninterrupted, tmp_path, monkeypatch):
    run = tmp_path / "run"
    _interrupt_on_call(monkeypatch, "train_step", 3)  # two steps done, Ctrl-C before the third
    with pytest.raises(TrainingInterrupted) as info:
        fit(tiny_config(), preprocessed, run, show_progress=False)
    stopped = info.value
    assert isinstance(stopped, KeyboardInterrupt) and stopped.saved
    assert stopped.checkpoint == run / "main" / "state.pt"
    assert str(stopped.checkpoint) in str(stopped) and "step 2" in str(stopped)
    state = torch.load(stopped.checkpoint, weights_only=True)
    assert state["progress"]["global_step"] == 2 and state["progress"]["iteration"] == 2
    monkeypatch.undo()
    calls = _interrupt_on_call(monkeypatch, "train_step", -1)  # count only
    resumed = fit(tiny_config(), preprocessed, run, show_progress=False)
    assert resumed.finished and resumed.progress.global_step == 6 and calls["n"] == 4  # resumed from step 2
    _same_weights(uninterrupted.stage_dir / "last.safetensors", run / "main" / "last.safetensors")
    assert [r["train_loss"] for r in resumed.progress.history] == \
        [r["train_loss"] for r in uninterrupted.progress.history]


@pytest.fixture()
def sigint_default():
    """SIGINT as in an interactive shell (CI may start the tests with it ignored); restored after."""
    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, before)


def test_ignored_sigint_stays_ignored(preprocessed, tmp_path):
    before = signal.signal(signal.SIGINT, signal.SIG_IGN)  # as under nohup
    try:
        assert fit(tiny_config(), preprocessed, tmp_path / "run", show_progress=False).finished
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, before)


def test_sigint_during_a_step_stops_after_that_step(preprocessed, uninterrupted, tmp_path, monkeypatch,
                                                    sigint_default):
    real = trainer._backward_and_step
    calls = {"n": 0}

    def step(*args):
        calls["n"] += 1
        if calls["n"] == 2:
            signal.raise_signal(signal.SIGINT)  # a real Ctrl-C while the weights are being updated
        real(*args)

    monkeypatch.setattr(trainer, "_backward_and_step", step)
    run = tmp_path / "run"
    with pytest.raises(TrainingInterrupted) as info:
        fit(tiny_config(), preprocessed, run, show_progress=False)
    assert info.value.saved and info.value.progress.global_step == 2  # the step in flight was finished
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the handler is put back
    monkeypatch.undo()
    assert fit(tiny_config(), preprocessed, run, show_progress=False).progress.global_step == 6
    _same_weights(uninterrupted.stage_dir / "last.safetensors", run / "main" / "last.safetensors")


def test_interrupt_inside_a_weight_update_keeps_the_previous_checkpoint(preprocessed, uninterrupted, tmp_path,
                                                                        monkeypatch):
    run = tmp_path / "run"
    _interrupt_on_call(monkeypatch, "_backward_and_step", 5, before=False)  # epoch 1: updated, not yet counted
    with pytest.raises(TrainingInterrupted) as info:
        fit(tiny_config(), preprocessed, run, show_progress=False)
    assert not info.value.saved and "previous checkpoint" in str(info.value)
    assert torch.load(run / "main" / "state.pt", weights_only=True)["progress"]["global_step"] == 3  # epoch 0's
    monkeypatch.undo()
    assert fit(tiny_config(), preprocessed, run, show_progress=False).progress.global_step == 6
    _same_weights(uninterrupted.stage_dir / "last.safetensors", run / "main" / "last.safetensors")


def test_interrupt_during_validation_redoes_the_epoch_end(preprocessed, uninterrupted, tmp_path, monkeypatch):
    run = tmp_path / "run"
    _interrupt_on_call(monkeypatch, "validate", 1)
    with pytest.raises(TrainingInterrupted) as info:
        fit(tiny_config(), preprocessed, run, show_progress=False)
    p = info.value.progress
    assert info.value.saved and (p.epoch, p.iteration, p.global_step, p.history) == (0, 3, 3, [])
    monkeypatch.undo()
    resumed = fit(tiny_config(), preprocessed, run, show_progress=False)
    assert [r["epoch"] for r in resumed.progress.history] == [0, 1]
    assert [r["dice_mean"] for r in resumed.progress.history] == \
        [r["dice_mean"] for r in uninterrupted.progress.history]


def _train_args(preprocessed: Path, run: Path, tmp_path: Path) -> list[str]:
    config = tmp_path / "small.yaml"
    config.write_text(SMALL_YAML)
    return ["train", str(preprocessed), str(run), "--config", str(config), "--epochs", "2", "--iterations", "3",
            "--device", "cpu", "--no-progress"]


def test_cli_ctrl_c_names_the_checkpoint_and_the_resume_command(preprocessed, tmp_path, monkeypatch):
    run = tmp_path / "run"
    _interrupt_on_call(monkeypatch, "train_step", 3)
    result = CliRunner().invoke(app, _train_args(preprocessed, run, tmp_path))
    assert result.exit_code == 130, result.output
    assert "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if "interrupted" in line]
    assert len(lines) == 1, result.output
    checkpoint = run / "main" / "state.pt"
    assert checkpoint.is_file() and f"checkpoint written to {checkpoint}" in lines[0]
    command = lines[0].split("resume with: ", 1)[1]
    assert command == shlex.join(["glioseg", "train", str(preprocessed), str(run), "--stage", "main"])
    monkeypatch.undo()
    calls = _interrupt_on_call(monkeypatch, "train_step", -1)
    again = CliRunner().invoke(app, shlex.split(command)[1:])  # the command exactly as printed
    assert again.exit_code == 0, again.output
    assert calls["n"] == 4 and "2 epochs" in again.output  # resumed at step 2, not started over


def test_cli_ctrl_c_before_training_starts(preprocessed, tmp_path, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(trainer, "fit", interrupted)
    result = CliRunner().invoke(app, [*_train_args(preprocessed, tmp_path / "run", tmp_path), "--stage", "main"])
    assert result.exit_code == 130 and "Traceback" not in result.output
    line = next(line for line in result.output.splitlines() if "interrupted" in line)
    assert line.endswith(f"run `glioseg train {preprocessed} {tmp_path / 'run'} --stage main` to start again")


def test_cli_disk_full_while_training_is_one_line(preprocessed, tmp_path, monkeypatch):
    def disk_full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(trainer, "save_checkpoint", disk_full)
    run = tmp_path / "run"
    result = CliRunner().invoke(app, _train_args(preprocessed, run, tmp_path))
    assert result.exit_code == 1 and "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1 and lines[0].startswith(f"error: RUN: {run}: cannot write: No space left on device")
    assert not (run / "main" / "state.pt").exists()


def _ddp_worker(rank: int, world: int, pre: str, run: str, out: str, init: str) -> None:
    """Rank 1 alone gets Ctrl-C during its second step; both ranks must stop after that step."""
    import json
    from dataclasses import replace

    import torch.distributed as dist

    from glioseg.training.distributed import DistInfo, init_distributed

    signal.signal(signal.SIGINT, signal.default_int_handler)  # a spawned rank inherits an ignored SIGINT
    info = DistInfo(rank, world, 0, init)
    assert init_distributed(info, "cpu")
    real, calls = trainer._backward_and_step, {"n": 0}

    def step(*args):
        calls["n"] += 1
        if rank == 1 and calls["n"] == 2:
            signal.raise_signal(signal.SIGINT)
        real(*args)

    trainer._backward_and_step = step
    try:
        fit(replace(tiny_config(epochs=1, iterations=4), deterministic=False), pre, run, dist=info,
            show_progress=False)
        stopped = None
    except TrainingInterrupted as exc:
        stopped = {"step": exc.progress.global_step, "saved": exc.saved}
    finally:
        dist.destroy_process_group()
    Path(out, f"rank{rank}.json").write_text(json.dumps(stopped))


@pytest.mark.skipif(not torch.distributed.is_available() or not torch.distributed.is_gloo_available(),
                    reason="torch built without gloo")
def test_ctrl_c_on_one_rank_stops_every_rank_at_the_same_step(preprocessed, tmp_path):
    import json

    import torch.multiprocessing as mp

    run = tmp_path / "run"
    mp.spawn(_ddp_worker, args=(2, str(preprocessed), str(run), str(tmp_path), f"file://{tmp_path}/pg"),
             nprocs=2, join=True)
    stops = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert stops == [{"step": 2, "saved": True}] * 2
    assert torch.load(run / "main" / "state.pt", weights_only=True)["progress"]["global_step"] == 2
