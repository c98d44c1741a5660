"""The learning curve of the cross-validated recipe: validation Dice per region against iterations.

    python scripts/learning_curve.py models/cv_p64/fold_*_log.csv [--heldout models/cv_p64/heldout.csv] \\
        -o docs/images/learning_curve.png

Each LOG is a fold's training log (``glioseg train`` writes ``RUN/<stage>/log.csv``; the shipped
folds' logs are committed as ``models/cv_p64/fold_<k>_log.csv``): its validation Dice (at the
stage's 2 mm, on the fold's held-out cases) is drawn against the iteration (``step``), one thin
line per log and, where several logs validated at the same iterations, their mean as a thick line.
``--heldout`` adds points measured the way the product is used (``glioseg predict`` from the raw
1 mm NIfTI files, scored by ``glioseg evaluate``): a CSV with ``label,iterations,WT,TC,ET``.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np

from glioseg.training.curves import read_training_log, save_png

REGIONS = ("WT", "TC", "ET")


def _validated(path: Path) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Iterations and Dice per region of the validated epochs of one log."""
    log = read_training_log(path)
    if not all(f"dice_{r}" in log for r in REGIONS):  # not validated yet
        return np.zeros(0), {r: np.zeros(0) for r in REGIONS}
    keep = np.isfinite(log["dice_WT"])
    return log["step"][keep], {r: log[f"dice_{r}"][keep] for r in REGIONS}


def draw(logs: list[Path], heldout: Path | None, out: Path) -> Path:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(13.5, 4.0))
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(REGIONS), sharey=True)
    curves = {p.name.removesuffix(".csv").removesuffix("_log"): _validated(p) for p in logs}
    by_steps: dict[tuple[float, ...], list[dict[str, np.ndarray]]] = {}
    for steps, dice in curves.values():
        if len(steps) == 0:
            continue
        by_steps.setdefault(tuple(steps), []).append(dice)
    points = list(csv.DictReader(heldout.open())) if heldout is not None else []
    for ax, region in zip(axes, REGIONS, strict=True):
        for name, (steps, dice) in curves.items():
            ax.plot(steps, dice[region], lw=0.8, alpha=0.6, marker=".", label=f"{name} (2 mm validation)")
        for steps, group in by_steps.items():
            if len(group) > 1:
                mean = np.mean([d[region] for d in group], axis=0)
                ax.plot(steps, mean, lw=2.5, color="black", label=f"mean of {len(group)} folds")
        for row in points:
            ax.plot(float(row["iterations"]), float(row[region]), marker="*", ms=12, ls="none",
                    label=f"{row['label']} (1 mm, predict + evaluate)")
        ax.set_title(f"{region} Dice on held-out cases")
        ax.set_xlabel("iterations (batch 2)")
        ax.grid(alpha=0.3)
        ax.set_ylim(0.3, 1.0)
    axes[0].set_ylabel("Dice")
    axes[-1].legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    return save_png(fig, out, dpi=90)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("logs", nargs="+", type=Path, help="training logs (CSV with step and dice_* columns)")
    parser.add_argument("--heldout", type=Path, help="CSV label,iterations,WT,TC,ET of 1 mm held-out scores")
    parser.add_argument("-o", "--out", type=Path, required=True, help="PNG to write")
    args = parser.parse_args()
    print(f"wrote {draw(args.logs, args.heldout, args.out)}")


if __name__ == "__main__":
    main()
