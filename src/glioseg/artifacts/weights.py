"""Network weights as safetensors: atomic save, checked load, and the settings they depend on.

A stage's ``model.safetensors`` (best) and ``last.safetensors`` (latest) hold a plain state dict
(no pickle) plus string metadata (stage, epoch, global step, score). Training writes them
(:mod:`glioseg.training.checkpoint`); :func:`glioseg.artifacts.rundir.load_run` reads them.
"""

from __future__ import annotations

from pathlib import Path

from torch import nn

from glioseg.utils import atomic_write

INFERENCE_KEYS: tuple[str, ...] = ("model", "target", "spacing_mm", "patch_size", "val_window")
"""Stage settings that a stage's weights and their use at inference depend on."""


class TrainError(RuntimeError):
    """A run directory, its weights or its training cannot be used; the message names the file and the fix."""


def unwrap(model: nn.Module) -> nn.Module:
    """The bare network inside a DistributedDataParallel wrapper."""
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def save_weights(model: nn.Module, path: Path, metadata: dict[str, str]) -> Path:
    """Write a network's state dict (on the CPU, contiguous) as safetensors, atomically.

    Args:
        model: the network (DDP wrappers are unwrapped).
        path: the ``.safetensors`` file to write.
        metadata: string key/values stored in the file header.

    Returns:
        ``path``.
    """
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
