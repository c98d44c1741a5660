"""What a person watching training sees: TensorBoard scalars and a rich progress bar (main rank only)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from glioseg.training.checkpoint import Progress

LOG_WIDTH = 10_000  # columns of the progress line when output goes to a file or CI log


class Monitor:
    """TensorBoard scalars in ``RUN/<stage>/tb`` and a progress bar on the main process; silent elsewhere.

    Args:
        stage_dir: the stage folder.
        progress: where training starts (a resumed run continues its scalars and bar).
        total: steps of the whole stage.
        enabled: write TensorBoard scalars (the main process).
        show: show the progress bar too.
    """

    def __init__(self, stage_dir: Path, progress: Progress, total: int, enabled: bool, show: bool) -> None:
        self.tb: Any = None
        self.bar: Any = None
        if not enabled:
            return
        from torch.utils.tensorboard import SummaryWriter

        self.tb = SummaryWriter(str(stage_dir / "tb"), purge_step=progress.global_step or None)
        if show:
            self._start_bar(progress, total)

    def _start_bar(self, progress: Progress, total: int) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn
        from rich.progress import Progress as Bar

        console = Console()
        if not console.is_terminal:  # a log file or CI: the bar's line is not cut at 80 columns
            console = Console(width=LOG_WIDTH, soft_wrap=True)
        self.bar = Bar(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                       TimeElapsedColumn(), TimeRemainingColumn(), console=console)
        self.bar.start()
        self.task = self.bar.add_task("train", total=total, completed=progress.global_step)

    def step(self, progress: Progress, loss: float, lr: float) -> None:
        """Record one optimisation step's loss."""
        if self.tb is not None:
            self.tb.add_scalar("train/loss", loss, progress.global_step)
        if self.bar is not None:
            self.bar.update(self.task, completed=progress.global_step,
                            description=f"epoch {progress.epoch} loss {loss:.4f} lr {lr:.2e}")

    def note(self, text: str) -> None:
        """Tell the person watching something (above the bar when there is one; main process only)."""
        if self.bar is not None:
            self.bar.console.print(text, markup=False, highlight=False)
        elif self.tb is not None:
            print(text, file=sys.stderr, flush=True)

    def epoch(self, row: dict[str, float]) -> None:
        """Record one epoch's log row (losses, lr, validation Dice)."""
        if self.tb is None:
            return
        for key, value in row.items():
            if key not in ("epoch", "step"):
                self.tb.add_scalar(f"epoch/{key}", value, int(row["epoch"]))
        self.tb.flush()

    def close(self) -> None:
        """Stop the bar and close the TensorBoard writer."""
        if self.bar is not None:
            self.bar.stop()
        if self.tb is not None:
            self.tb.close()
