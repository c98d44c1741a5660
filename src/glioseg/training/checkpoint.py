"""Checkpoints of a training stage: safetensors weights plus a weights_only-loadable state.

``RUN/<stage>/last.safetensors`` holds the latest weights and ``state.pt`` the optimiser, grad
scaler, progress and RNG states (plain tensors, numbers, strings, lists and dicts only, so that
``torch.load(weights_only=True)`` reads it). Both are written atomically and carry the global
step, so a crash between the two writes is detected on resume.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn

from glioseg.config import StageConfig, to_dict
from glioseg.runtime import rng_state, set_rng_state
from glioseg.utils import atomic_write

STATE_FORMAT = 1
INFERENCE_KEYS = ("model", "target", "spacing_mm", "patch_size", "val_window")


class TrainError(RuntimeError):
    """Training cannot start or resume; the message names the file and the fix."""


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


def unwrap(model: nn.Module) -> nn.Module:
    """The bare network inside a DistributedDataParallel wrapper."""
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def save_weights(model: nn.Module, path: Path, metadata: dict[str, str]) -> Path:
    """Write a network's state dict as safetensors, atomically."""
    from safetensors.torch import save_file

    weights = {k: v.detach().to("cpu").contiguous() for k, v in unwrap(model).state_dict().items()}
    return atomic_write(path, lambda tmp: save_file(weights, str(tmp), metadata=metadata))


def load_weights(model: nn.Module, path: Path) -> dict[str, str]:
    """Load safetensors weights into a network; returns the file's metadata.

    Raises:
        TrainError: missing file or weights that do not fit the network.
    """
    from safetensors import safe_open
    from safetensors.torch import load_file

    if not path.is_file():
        raise TrainError(f"{path}: weights not found; train this stage first (`glioseg train`)")
    try:
        unwrap(model).load_state_dict(load_file(str(path)))
        with safe_open(str(path), framework="pt") as fh:
            return dict(fh.metadata() or {})
    except (RuntimeError, OSError) as exc:
        raise TrainError(f"{path}: weights do not fit the configured network ({exc}); "
                         "the config.yaml next to it must be the one it was trained with") from exc


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
    path = stage_dir / "state.pt"
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
