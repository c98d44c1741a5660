"""Training commands: ``train`` (also under torchrun) and ``plot-curves``."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import typer

from glioseg.cli.app import fail
from glioseg.cli.paths import check_output_dir, check_output_file, os_error_message, writing

if TYPE_CHECKING:  # annotations only: the modules are imported inside the commands
    from glioseg.config import TrainConfig
    from glioseg.training.distributed import DistInfo
    from glioseg.training.interrupt import TrainingInterrupted
    from glioseg.training.trainer import StageResult


def _torchrun_membership() -> DistInfo:
    """Process-group membership from torchrun's RANK / WORLD_SIZE / LOCAL_RANK (single process without)."""
    import os

    from glioseg.training.distributed import DistInfo

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    return DistInfo(int(os.environ.get("RANK", "0")), world, int(os.environ.get("LOCAL_RANK", "0")))


def _fold_value(value: str | None) -> str | None:
    """``--fold``: a fold number or ``all``, else a usage error (checked while parsing, before any work)."""
    if value is None or value == "all" or value.isdigit():
        return value
    raise typer.BadParameter(f"{value!r} is neither a fold number (0, 1, ...) nor 'all'")


# typer renders help with rich markup, where "[word]" is a style tag and vanishes: brackets are escaped (\[)
def train(
    preprocessed: Path = typer.Argument(
        ..., help="Preprocessed dataset at the stage's spacing (`glioseg preprocess`)."),
    run_dir: Path = typer.Argument(..., help="Run directory (created; resumed when it holds a checkpoint)."),
    preset: str | None = typer.Option(None, "--preset",
                                      help="isensee2017 (GPU) or cpu \\[the run's, else isensee2017]."),
    config_file: Path | None = typer.Option(None, "--config", help="YAML overriding the preset."),
    stage: str | None = typer.Option(None, "--stage", help="Stage to train (cpu preset: low, high) \\[first]."),
    fold: str | None = typer.Option(None, "--fold", callback=_fold_value, show_default=False,
                                    help="Cross-validation fold to train (0, 1, ...), or 'all': every case, "
                                    "no validation (the model is the last epoch)."),
    all_folds: bool = typer.Option(False, "--all-folds", help="Train every fold into RUN/fold_<k>/."),
    splits: Path | None = typer.Option(None, "--splits", help="splits.json \\[RUN's, PREPROCESSED's, or new]."),
    epochs: int | None = typer.Option(None, "--epochs", min=1, help="Override the stage's epochs."),
    iterations: int | None = typer.Option(None, "--iterations", min=1, help="Override iterations per epoch."),
    device: str | None = typer.Option(None, "--device", help="auto, cpu, cuda, cuda:N."),
    precision: str | None = typer.Option(None, "--precision", help="fp32, bf16, fp16 (CUDA)."),
    resume: bool = typer.Option(True, "--resume/--no-resume", help="Continue from the stage's checkpoint; "
                                "--no-resume retrains the stage from scratch (with the run's settings)."),
    seed: int | None = typer.Option(None, "--seed", help="Base seed."),
    deterministic: bool | None = typer.Option(None, "--deterministic/--no-deterministic",
                                              help="Best-effort deterministic kernels."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
) -> None:
    """Train one stage of a 3D U-Net (resumable; runs under torchrun for DDP).

    Re-running into an existing RUN resumes it with the settings saved in RUN/config.yaml.
    Options that would change a started stage are refused, naming the fields; --device and the
    config's threads, checkpoint_minutes and num_workers may change (printed, and recorded in
    RUN/run.json). Nothing is written when the device, precision or data are unusable.
    """
    from glioseg.artifacts.rundir import parse_fold
    from glioseg.artifacts.weights import TrainError
    from glioseg.config import ConfigError
    from glioseg.preprocessing.normalize import PreprocessError
    from glioseg.preprocessing.splits import SplitError
    from glioseg.runtime import tune_allocator
    from glioseg.training.distributed import init_distributed
    from glioseg.training.interrupt import TrainingInterrupted
    from glioseg.training.trainer import fit, fit_all_folds

    try:
        chosen = parse_fold(fold)
    except ValueError as exc:
        fail(str(exc))
    if chosen is not None and all_folds:
        fail(f"give either --fold {fold} or --all-folds, not both")
    check_output_dir(run_dir, "RUN")
    if run_dir.resolve() == preprocessed.resolve():
        fail(f"RUN: {run_dir} is the preprocessed dataset itself; give a separate run directory")
    tune_allocator()
    dist = _torchrun_membership()
    try:
        config = _resolve(preset, config_file, run_dir / "fold_0" if all_folds else run_dir, stage,
                          {"epochs": epochs, "iterations": iterations, "precision": precision},
                          {"device": device, "seed": seed, "deterministic": deterministic})
        name = config.stage(stage).name
        initialised = init_distributed(dist, config.device)
        kwargs: dict[str, Any] = {"splits_path": splits, "resume": resume, "dist": dist,
                                  "show_progress": progress and dist.is_main, "on_changes": _print_changes}
        if all_folds:
            results = fit_all_folds(config, preprocessed, run_dir, name, **kwargs)
        else:
            results = [fit(config, preprocessed, run_dir, name, fold=chosen, **kwargs)]
        _record_command(run_dir, dist.is_main)
    except (ConfigError, TrainError, PreprocessError, SplitError, ValueError) as exc:
        fail(str(exc))
    except OSError as exc:  # disk full or read-only while writing checkpoints, logs, weights
        fail(os_error_message(run_dir, exc, "RUN"))
    except KeyboardInterrupt as exc:  # Ctrl-C: say where the checkpoint is and how to go on
        stopped = exc if isinstance(exc, TrainingInterrupted) else None
        stage_name = stage if stage is not None or stopped is None else stopped.stage_dir.name
        again = _resume_command(preprocessed, run_dir, stage_name, fold, all_folds)
        _record_command(run_dir, dist.is_main)
        _interrupted(stopped, again, dist.is_main)
    if initialised:
        import torch.distributed

        torch.distributed.destroy_process_group()
    if dist.is_main:
        _print_results(results)


def _resume_command(preprocessed: Path, run_dir: Path, stage: str | None, fold: str | None,
                    all_folds: bool) -> str:
    """The ``glioseg train`` command that resumes this run (its other settings are in RUN/config.yaml)."""
    import shlex

    args = ["glioseg", "train", str(preprocessed), str(run_dir)]
    args += ["--stage", stage] if stage is not None else []
    args += ["--fold", fold] if fold is not None else []
    args += ["--all-folds"] if all_folds else []
    return shlex.join(args)


def _interrupted(stopped: TrainingInterrupted | None, again: str, is_main: bool) -> NoReturn:
    """Exit 130 after one line: where training stopped, its checkpoint, and the command that resumes it."""
    if is_main:
        if stopped is None:
            text = f"interrupted before training started; run `{again}` to start again"
        elif stopped.checkpoint is None:
            text = f"{stopped.describe()}; run `{again}` to start again"
        else:
            text = f"{stopped.describe()}; resume with: {again}"
        typer.secho(text, fg=typer.colors.YELLOW, err=True)
    raise typer.Exit(130)


def _resolve(preset: str | None, config_file: Path | None, run_dir: Path, stage: str | None,
             stage_flags: dict[str, Any], run_flags: dict[str, Any]) -> TrainConfig:
    """The run's saved config (else the preset), the YAML file on top, then the flags that were given.

    Raises:
        ConfigError: unknown preset or stage, a preset other than the run's, a bad file or value.
    """
    import dataclasses

    from glioseg.config import resolve_config

    config = resolve_config(preset, config_file, run_dir / "config.yaml")
    stage_changes = {k: v for k, v in stage_flags.items() if v is not None}
    if stage_changes:
        config = config.with_stage(config.stage(stage).name, **stage_changes)
    run_changes = {k: v for k, v in run_flags.items() if v is not None}
    return dataclasses.replace(config, **run_changes) if run_changes else config


def _print_changes(run_dir: Path, changes: list[Any]) -> None:
    """Tell which of the run's saved settings this call changed (they are recorded in run.json)."""
    typer.secho(f"note: {run_dir}: changed the run's settings (recorded in run.json): "
                f"{'; '.join(map(str, changes))}", fg=typer.colors.YELLOW, err=True)


def _print_results(results: list[StageResult]) -> None:
    """One line per trained stage: epochs, time, best epoch and its validation Dice (or: no validation)."""
    for r in results:
        best = next((row for row in r.progress.history if row["epoch"] == r.progress.best_epoch), {})
        dice = "  ".join(f"{k[5:]} {v:.3f}" for k, v in best.items() if k.startswith("dice_"))
        last = r.progress.epoch - 1
        chosen = (f"no validation, model = last epoch ({last})" if not dice else
                  f"best epoch {r.progress.best_epoch}  {dice}" if r.model_selection == "best" else
                  f"model = last epoch ({last}); best validation epoch {r.progress.best_epoch}  {dice}")
        typer.echo(f"{r.stage_dir}: {r.progress.epoch} epochs, {r.progress.seconds / 60:.1f} min; {chosen}")


def plot_curves(
    run_dir: Path = typer.Argument(..., help="Run directory (CSV logs found inside) or one CSV log."),
    out: Path | None = typer.Option(None, "-o", "--out", help="PNG path (default RUN_DIR/curves.png)."),
) -> None:
    """Plot training curves (loss, validation Dice per region, learning rate) from CSV logs."""
    from glioseg.training.curves import CurveLogError, plot_training_curves

    png = out if out is not None else (run_dir.parent if run_dir.is_file() else run_dir) / "curves.png"
    if png.suffix.lower() != ".png":  # e.g. -o RUN/main/log.csv would replace the log with a picture
        fail(f"-o: {png} does not end in .png; give a .png path")
    check_output_file(png, "-o")
    try:
        with writing(png, "-o"):
            typer.echo(f"wrote {plot_training_curves(run_dir, png)}")
    except CurveLogError as exc:
        fail(str(exc))


def _record_command(run_dir: Path, is_main: bool) -> None:
    """Write this command line into ``run.json`` (every fold's, for ``--all-folds``)."""
    import sys

    from glioseg.artifacts.rundir import record_command

    if not is_main:
        return
    for folder in [run_dir, *sorted(run_dir.glob("fold_*"))]:
        record_command(folder, ["glioseg", *sys.argv[1:]])
