"""The ``tune-postprocess`` command: choose the postprocessing rules on validation folds."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

from glioseg.cli.app import fail

if TYPE_CHECKING:  # annotations only: the modules are imported inside the command
    from glioseg.inference.tuning import TuneResult


def tune_postprocess_cmd(
    run_dir: Path = typer.Argument(..., help="Run directory (or folder of fold_<k> runs)."),
    preprocessed: Path = typer.Argument(..., help="Preprocessed dataset at the full-resolution stage's spacing."),
    splits: Path | None = typer.Option(None, "--splits", help="splits.json \\[the runs' recorded splits]."),
    thresholds: bool = typer.Option(False, "--thresholds/--no-thresholds", help="Also tune the WT/TC/ET thresholds."),
    candidates: str = typer.Option("0,100,250,500,1000,2000,4000,8000", "--candidates",
                                   help="Small-ET volumes (mm^3) to try; 0 = rule off."),
    components: str = typer.Option("0,50,100,250,500,1000,2000", "--component-candidates",
                                   help="Per-region small-component volumes (mm^3) to try; 0 = keep all."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or cuda:N."),
    precision: str = typer.Option("bf16", "--precision", help="bf16, fp16 (CUDA) or fp32."),
) -> None:
    """Choose the volume rules in mm^3 (small ET, small components per region) and optionally the
    thresholds on validation folds; write RUN_DIR/postprocess.json."""
    from glioseg.artifacts.bundles import BundleError
    from glioseg.artifacts.weights import TrainError
    from glioseg.inference.postprocess import save_postprocess
    from glioseg.inference.tuning import tune_postprocess, validation_probabilities
    from glioseg.preprocessing.normalize import PreprocessError
    from glioseg.preprocessing.splits import SplitError
    from glioseg.runtime import tune_allocator

    tune_allocator()
    et_values = _parse_volumes(candidates, "--candidates")
    component_values = _parse_volumes(components, "--component-candidates")
    try:
        pairs = validation_probabilities(run_dir, preprocessed, splits, {"device": device, "precision": precision},
                                         on_case=lambda cid: typer.echo(f"  {cid}"))
        target = "labels" if pairs[0][0].shape[0] != 3 else "regions"
        result = tune_postprocess(pairs, target, et_values, component_values, thresholds)
    except (FileNotFoundError, ValueError, TrainError, PreprocessError, SplitError, BundleError) as exc:
        fail(str(exc))
    path = save_postprocess(result.config, run_dir, {"tuning": result.to_dict()})
    _print_tuning(result)
    typer.echo(f"wrote {path}")


def _parse_volumes(text: str, option: str) -> list[float]:
    """Comma-separated volumes in mm^3 (>= 0); exits with the option's name otherwise."""
    import math

    try:
        values = [float(v) for v in text.replace(" ", "").split(",") if v]
    except ValueError:
        values = []
    if not values or not all(math.isfinite(v) and v >= 0 for v in values):
        fail(f"{option} {text!r}: give volumes in mm^3 (numbers >= 0) separated by commas, e.g. 0,100,500")
    return values


def _print_tuning(result: TuneResult) -> None:
    """Mean Dice per region before and after tuning, and the chosen settings."""
    names = ("WT", "TC", "ET")
    base = "  ".join(f"{n} {d:.4f}" for n, d in zip(names, result.baseline_dice, strict=True))
    tuned = "  ".join(f"{n} {d:.4f}" for n, d in zip(names, result.mean_dice, strict=True))
    typer.echo(f"{result.n_cases} validation cases; default Dice {base}")
    config = result.config
    components = ", ".join(f"{n} {v:g}" for n, v in zip(names, config.min_component_mm3, strict=True))
    typer.echo(f"min_et_mm3 {config.min_et_mm3:g}, min_component_mm3 ({components}), thresholds "
               f"{config.thresholds}: Dice {tuned}")
