"""The training log of a stage (``log.csv``) and its one plotter (loss, validation Dice, lr).

The trainer rewrites ``RUN/<stage>/log.csv`` and ``RUN/<stage>/curve.png`` after every epoch
(:func:`write_training_log`); ``glioseg plot-curves`` draws every log of a run into one PNG
(:func:`plot_training_curves`). Both go through :func:`curves_figure`.

Columns the trainer writes: ``epoch, step, lr, train_loss, seconds`` every epoch and
``dice_WT, dice_TC, dice_ET, dice_mean`` on validated epochs (empty cells on the others).
matplotlib is imported inside the functions and drawn on the Agg canvas (no pyplot state).
"""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from glioseg.utils import atomic_write

if TYPE_CHECKING:
    from matplotlib.figure import Figure

LOG_NAME, CURVE_NAME = "log.csv", "curve.png"
PANELS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("loss", ("train_loss", "val_loss")),
    ("validation Dice", ("dice_WT", "dice_TC", "dice_ET", "dice_mean")),
    ("learning rate", ("lr",)),
)

Columns = dict[str, np.ndarray]


class CurveLogError(ValueError):
    """A training log cannot be found or read; the message names the file and the line."""


def write_training_log(stage_dir: Path, history: Sequence[Mapping[str, float]]) -> None:
    """Rewrite ``log.csv`` and ``curve.png`` of a stage from its per-epoch history (atomic).

    Args:
        stage_dir: ``RUN/<stage>``.
        history: one row per finished epoch; keys become CSV columns in order of appearance.
    """
    if not history:
        return
    keys = list(dict.fromkeys(k for row in history for k in row))

    def write_csv(tmp: Path) -> None:
        with tmp.open("w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=keys)
            writer.writeheader()
            writer.writerows(history)

    atomic_write(stage_dir / LOG_NAME, write_csv)
    figure = curves_figure({stage_dir.name: history_columns(history, str(stage_dir / LOG_NAME))})
    save_png(figure, stage_dir / CURVE_NAME)


def history_columns(rows: Sequence[Mapping[str, Any]], where: str, first_line: int = 2) -> Columns:
    """Rows of a log -> float64 columns (empty or missing cells become NaN).

    Args:
        rows: mappings column -> number or numeric text; row ``i`` is line ``first_line + i``.
        where: file named in errors.
        first_line: line number of the first row (2: after a CSV header).

    Returns:
        Column name -> float64 array, rows in order.

    Raises:
        CurveLogError: a non-numeric cell, or an epoch that is not a finite number.
    """
    names = list(dict.fromkeys(k for row in rows for k in row))
    columns = {name: np.array([_number(row.get(name), where, first_line + i, name) for i, row in enumerate(rows)])
               for name in names}
    bad = np.flatnonzero(~np.isfinite(columns.get("epoch", np.zeros(0))))
    if bad.size:
        raise CurveLogError(f"{where}: line {first_line + int(bad[0])}: column 'epoch' needs a number")
    return columns


def _number(value: Any, where: str, line: int, column: str) -> float:
    """A cell as float: NaN when empty; CurveLogError naming the file, line and column otherwise."""
    if value is None or value == "":
        return math.nan
    try:
        return float(value)
    except (TypeError, ValueError):
        raise CurveLogError(f"{where}: line {line}: column {column!r} holds {str(value)[:40]!r}, "
                            "not a number; fix or remove that row") from None


def find_training_logs(run_dir: Path | str) -> list[Path]:
    """CSV training logs under a run directory (or the file itself): files with an ``epoch`` column.

    Raises:
        CurveLogError: nothing found (a single file given: it has no ``epoch`` column).
    """
    run_dir = Path(run_dir)
    if run_dir.is_file():
        if "epoch" not in _header(run_dir):
            raise CurveLogError(f"{run_dir}: not a training log (needs a CSV header with an 'epoch' column)")
        return [run_dir]
    logs = [p for p in sorted(run_dir.rglob("*.csv")) if "epoch" in _header(p)] if run_dir.is_dir() else []
    if not logs:
        raise CurveLogError(f"{run_dir}: no CSV training log with an 'epoch' column; give a run directory "
                            "written by glioseg train or the log file itself")
    return logs


def _header(path: Path) -> list[str]:
    """Stripped column names of a CSV file; empty when it cannot be read as CSV text."""
    try:
        with open(path, newline="") as fh:
            return [h.strip() for h in next(csv.reader(fh), [])]
    except (OSError, UnicodeDecodeError, csv.Error):
        return []


def read_training_log(path: Path | str) -> Columns:
    """Read a CSV training log into columns.

    Args:
        path: CSV with a header; ``epoch`` required, other columns optional; empty cells become NaN.

    Returns:
        Column name -> float64 array, rows in file order.

    Raises:
        CurveLogError: unreadable file, no ``epoch`` column, no rows, a row with more cells than
            the header, or a non-numeric cell (the one-line message names the file and line).
    """
    try:
        with open(path, newline="") as fh:
            lines = list(csv.reader(fh))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        reason = (str(exc).splitlines() or [""])[0][:120]
        raise CurveLogError(f"{path}: cannot read the training log ({type(exc).__name__}: {reason})") from exc
    header = [h.strip() for h in lines[0]] if lines else []
    rows = [(n, cells) for n, cells in enumerate(lines[1:], start=2) if cells]
    if "epoch" not in header or not rows:
        raise CurveLogError(f"{path}: needs a header with 'epoch' and at least one row")
    for n, cells in rows:
        if len(cells) > len(header):
            raise CurveLogError(f"{path}: line {n} has {len(cells)} cells but the header has {len(header)}")
    return history_columns([dict(zip(header, cells, strict=False)) for _, cells in rows], str(path))


def curves_figure(logs: Mapping[str, Columns]) -> Figure:
    """Loss, validation Dice per region and learning rate against epoch.

    Args:
        logs: log name (e.g. stage) -> columns (:func:`read_training_log`, :func:`history_columns`).

    Returns:
        A Figure with one panel per group of :data:`PANELS` present; NaN cells (epochs without
        validation) are skipped, so each line joins the epochs that have a value. Line labels
        are the column names (``"<log>: <column>"`` with several logs).
    """
    panels = [(title, [c for c in columns if any(c in log for log in logs.values())]) for title, columns in PANELS]
    panels = [p for p in panels if p[1]] or [("(no known columns)", [])]
    fig = _new_figure(4.5 * len(panels), 3.6)
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (title, columns) in zip(axes, panels, strict=True):
        for log_name, log in logs.items():
            for column in columns:
                _plot_column(ax, log, column, column if len(logs) == 1 else f"{log_name}: {column}")
        _style_panel(ax, title)
    fig.tight_layout()
    return fig


def _plot_column(ax: Any, log: Columns, column: str, label: str) -> None:
    """One line of ``column`` against ``epoch`` over its finite values (nothing when there are none)."""
    values = log.get(column)
    if values is None:
        return
    keep = np.isfinite(values)
    if keep.any():
        ax.plot(log["epoch"][keep], values[keep], marker=".", label=label)


def _style_panel(ax: Any, title: str) -> None:
    ax.set_title(title)
    ax.set_xlabel("epoch")
    ax.grid(alpha=0.3)
    if title == "validation Dice":
        ax.set_ylim(0, 1)
    values = [y for line in ax.get_lines() for y in line.get_ydata()]
    if title == "learning rate" and values and min(values) > 0:
        ax.set_yscale("log")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)


def _new_figure(width: float, height: float) -> Figure:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)
    return fig


def save_png(fig: Figure, path: Path | str, dpi: int = 100) -> Path:
    """Write a figure as PNG, atomically."""
    return atomic_write(Path(path), lambda tmp: fig.savefig(tmp, format="png", dpi=dpi))


def plot_training_curves(run_dir: Path | str, out: Path | str | None = None) -> Path:
    """Read every CSV training log of a run and write one PNG of its curves.

    Args:
        run_dir: run directory (logs found recursively) or one CSV log.
        out: PNG path; ``RUN_DIR/curves.png`` (next to the log for a file) when None.

    Returns:
        The written PNG.

    Raises:
        CurveLogError: no log, or a log that cannot be read.
    """
    run_dir = Path(run_dir)
    paths = find_training_logs(run_dir)
    base = run_dir if run_dir.is_dir() else run_dir.parent
    logs = {str(p.relative_to(base).with_suffix("")): read_training_log(p) for p in paths}
    return save_png(curves_figure(logs), Path(out) if out is not None else base / "curves.png")
