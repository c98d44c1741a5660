"""3D segmentation networks and their registry."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from glioseg.networks.isensee import Isensee2017UNet
from glioseg.networks.unet import UNet3D

MODELS: dict[str, Callable[..., nn.Module]] = {
    "isensee2017": Isensee2017UNet,
    "unet3d": UNet3D,
}


def build_model(name: str, **kwargs: Any) -> nn.Module:
    """Build a registered network by name.

    Args:
        name: a key of :data:`MODELS` (``"isensee2017"``, ``"unet3d"``).
        **kwargs: constructor arguments of that network.

    Returns:
        The network, in training mode.

    Raises:
        ValueError: unknown name (the message lists the valid ones) or bad arguments.
    """
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose one of {sorted(MODELS)}")
    try:
        return MODELS[name](**kwargs)
    except TypeError as exc:
        raise ValueError(f"model {name!r}: {exc}") from exc


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


__all__ = ["MODELS", "Isensee2017UNet", "UNet3D", "build_model", "count_parameters"]
