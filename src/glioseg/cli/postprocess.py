"""The ``tune-postprocess`` command: choose the postprocessing rules on validation folds."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

from glioseg.cli.app import fail

if TYPE_CHECKING:  # annotations only: the modules are imported inside the command
    from glioseg.inference.postprocess import TuneResult


def tune_postprocess_cmd(
    run_dir: Path = typer.Argument(..., help="Run directory (or folder of fold_<k> runs)."),
    preprocessed: Path = typer.Argument(..., help="Preprocessed dataset at the full-resolution stage's spacing."),
    splits: Path | None = typer.Option(None, "--splits", help="splits.json \\[the runs' recorded splits]."),
    thresholds: bool = typer.Option(False, "--thresholds/--no-thresholds", help="Also tune the WT/TC/ET thresholds."),
    candidates: str = typer.Option("0,10,25,50,100,200,300,500,750,1000,1500", "--candidates",
                                   help="Small-ET thresholds (voxels) to try."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or cuda:N."),
    precision: str = typer.Option("bf16", "--precision", help="bf16, fp16 (CUDA) or fp32."),
) -> None:
    """Choose the small-ET rule (and thresholds) on validation folds; write RUN_DIR/postprocess.json."""
    from glioseg.artifacts.weights import TrainError
    from glioseg.inference.postprocess import save_postprocess, tune_postprocess
    from glioseg.inference.tuning import validation_probabilities
    from glioseg.preprocessing.normalize import PreprocessError
    from glioseg.preprocessing.splits import SplitError
    from glioseg.runtime import tune_allocator

    tune_allocator()
    values = _parse_candidates(candidates)
    try:
        pairs = validation_probabilities(run_dir, preprocessed, splits, {"device": device, "precision": precision},
                                         on_case=lambda cid: typer.echo(f"  {cid}"))
        target = "labels" if pairs[0][0].shape[0] != 3 else "regions"
        result = tune_postprocess(pairs, target, values, thresholds)
    except (FileNotFoundError, ValueError, TrainError, PreprocessError, SplitError) as exc:
        fail(str(exc))
    path = save_postprocess(result.config, run_dir, {"tuning": result.to_dict()})
    _print_tuning(result)
    typer.echo(f"wrote {path}")


def _parse_candidates(text: str) -> list[int]:
    try:
        return [int(v) for v in text.replace(" ", "").split(",") if v]
    except ValueError:
        fail(f"--candidates {text!r}: give whole numbers of voxels separated by commas")


def _print_tuning(result: TuneResult) -> None:
    """Mean Dice per region before and after tuning, and the chosen settings."""
    names = ("WT", "TC", "ET")
    base = "  ".join(f"{n} {d:.4f}" for n, d in zip(names, result.baseline_dice, strict=True))
    tuned = "  ".join(f"{n} {d:.4f}" for n, d in zip(names, result.mean_dice, strict=True))
    typer.echo(f"{result.n_cases} validation cases; default Dice {base}")
    typer.echo(f"min_et_voxels {result.config.min_et_voxels}, thresholds {result.config.thresholds}: Dice {tuned}")
