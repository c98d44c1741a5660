"""Ctrl-C while training: a first SIGINT asks the loop to stop at the next step boundary and write
a checkpoint; the loop then raises :class:`TrainingInterrupted`, which names the checkpoint."""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any

from glioseg.training.checkpoint import Progress


class TrainingInterrupted(KeyboardInterrupt):
    """Training stopped by Ctrl-C (a KeyboardInterrupt); the stage can be resumed from ``checkpoint``.

    A KeyboardInterrupt, so that code not expecting it stops as on any Ctrl-C.

    Attributes:
        stage_dir: the stage folder (``state.pt`` and ``last.safetensors``).
        progress: where training stopped.
        saved: whether a checkpoint was written at ``progress`` (False when the interrupt came
            in the middle of a weight update; the previous checkpoint, if any, is kept).
    """

    def __init__(self, stage_dir: Path, progress: Progress, saved: bool) -> None:
        self.stage_dir, self.progress, self.saved = stage_dir, progress, saved
        super().__init__(self.describe())

    @property
    def checkpoint(self) -> Path | None:
        """``state.pt`` to resume from, or None when the stage has none (it would start over)."""
        path = self.stage_dir / "state.pt"
        return path if path.is_file() else None

    def describe(self) -> str:
        """One line: where training stopped and which checkpoint a resume starts from."""
        p = self.progress
        where = f"epoch {p.epoch}, iteration {p.iteration}, step {p.global_step}"
        if self.saved:
            return f"interrupted at {where}; checkpoint written to {self.checkpoint}"
        if self.checkpoint is not None:
            return (f"interrupted at {where} in the middle of a weight update; the previous checkpoint "
                    f"{self.checkpoint} is kept")
        return f"interrupted at {where} in the middle of a weight update; no checkpoint, the stage starts over"


class _StopRequest:
    """SIGINT while training: the first one is recorded (the loop stops at the next step boundary),
    a second one raises KeyboardInterrupt at once. Installed in the main thread only."""

    def __init__(self, note: Callable[[str], None]) -> None:
        self.requested = False
        self._note = note
        self._previous: Any = None

    def __enter__(self) -> _StopRequest:
        # main thread only; an ignored SIGINT (nohup, background jobs) stays ignored
        if threading.current_thread() is threading.main_thread() \
                and signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        self._note("Ctrl-C: stopping after this step and writing a checkpoint (Ctrl-C again to stop at once)")


