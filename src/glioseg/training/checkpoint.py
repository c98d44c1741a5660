"""Checkpoints of a training stage: safetensors weights plus a weights_only-loadable state.

``RUN/<stage>/last.safetensors`` holds the latest weights and ``state.pt`` the optimiser, grad
scaler, progress and RNG states (plain tensors, numbers, strings, lists and dicts only, so that
``torch.load(weights_only=True)`` reads it). Both are written atomically and carry the global
step, so a crash between the two writes is detected on resume.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from glioseg.artifacts.weights import INFERENCE_KEYS, TrainError, load_weights, save_weights
from glioseg.config import StageConfig, to_dict
from glioseg.runtime import rng_state, set_rng_state
from glioseg.utils import atomic_write

STATE_FORMAT = 1


@dataclass
class Progress:
    """Where training stands; saved in ``state.pt``."""

    epoch: int = 0
    iteration: int = 0
    global_step: int = 0
    epoch_loss_sum: float = 0.0
    best_score: float = -1.0
    best_epoch: int = -1
    seconds: float = 0.0
    history: list[dict[str, float]] = field(default_factory=list)


def save_checkpoint(stage_dir: Path, model: nn.Module, optimizer: torch.optim.Optimizer,
                    scaler: torch.amp.GradScaler | None, progress: Progress, stage: StageConfig) -> None:
    """Write ``last.safetensors`` then ``state.pt`` (both atomic, tied by the global step)."""
    meta = {"stage": stage.name, "epoch": str(progress.epoch), "global_step": str(progress.global_step)}
    save_weights(model, stage_dir / "last.safetensors", meta)
    state = {"format": STATE_FORMAT, "optimizer": optimizer.state_dict(),
             "scaler": scaler.state_dict() if scaler is not None else {},
             "progress": asdict(progress), "rng": rng_state(), "stage": to_dict(stage)}
    atomic_write(stage_dir / "state.pt", lambda tmp: torch.save(state, tmp))


def load_checkpoint(stage_dir: Path, model: nn.Module, optimizer: torch.optim.Optimizer,
                    scaler: torch.amp.GradScaler | None, stage: StageConfig) -> Progress:
    """Restore model, optimiser, scaler, RNG and progress from ``stage_dir``.

    Raises:
        TrainError: unreadable state, a different network/target, or weights and state from
            different steps.
    """
    state = _read_state(stage_dir / "state.pt", stage)
    meta = load_weights(model, stage_dir / "last.safetensors")
    progress = Progress(**state["progress"])
    if int(meta.get("global_step", -1)) != progress.global_step:
        raise TrainError(f"{stage_dir}: last.safetensors (step {meta.get('global_step')}) and state.pt "
                         f"(step {progress.global_step}) disagree, probably an interrupted write; "
                         "pass --no-resume to start over")
    optimizer.load_state_dict(state["optimizer"])
    if scaler is not None and state["scaler"]:
        scaler.load_state_dict(state["scaler"])
    set_rng_state(state["rng"])
    return progress


def _read_state(path: Path, stage: StageConfig) -> dict[str, Any]:
    """``state.pt`` (weights_only); TrainError when unreadable or saved for another network or target."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # any unpickling problem: tell the user how to start over
        first_line = (str(exc).splitlines() or [""])[0][:120]  # some exceptions carry no message
        reason = f"{type(exc).__name__}: {first_line}"
        raise TrainError(f"{path}: cannot read the checkpoint ({reason}); pass --no-resume to start over") from exc
    saved = state.get("stage", {})
    changed = [k for k in INFERENCE_KEYS if k != "val_window" and saved.get(k) != to_dict(stage).get(k)]
    if changed:
        raise TrainError(f"{path}: the checkpoint was trained with different {changed}; use the same "
                         "config, another run directory, or --no-resume to start over")
    return state
