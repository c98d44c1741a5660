"""Building blocks shared by the 3D U-Nets: conv-norm-activation units and input checks."""

from __future__ import annotations

import torch
from torch import nn

LEAKY_SLOPE = 0.01


def conv3d(in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1) -> nn.Conv3d:
    """``same``-padded 3D convolution with bias (odd kernels only)."""
    return nn.Conv3d(in_channels, out_channels, kernel_size, stride=stride, padding=kernel_size // 2)


def make_norm(kind: str, channels: int) -> nn.Module:
    """Normalisation layer by name: ``"instance"`` (affine) or ``"batch"``.

    Raises:
        ValueError: unknown kind; the message lists the valid ones.
    """
    if kind == "instance":
        return nn.InstanceNorm3d(channels, affine=True)
    if kind == "batch":
        return nn.BatchNorm3d(channels)
    raise ValueError(f"unknown normalisation {kind!r}; choose 'instance' or 'batch'")


class NormAct(nn.Sequential):
    """InstanceNorm -> LeakyReLU(0.01); shape preserving ``(B, C, X, Y, Z)``."""

    def __init__(self, channels: int) -> None:
        super().__init__(make_norm("instance", channels), nn.LeakyReLU(LEAKY_SLOPE, inplace=True))


class ConvNormAct(nn.Sequential):
    """Conv -> norm -> activation (post-activation unit).

    Shapes: ``(B, in_channels, X, Y, Z)`` -> ``(B, out_channels, X/stride, Y/stride, Z/stride)``.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, *,
                 norm: str = "instance", activation: str = "leaky_relu") -> None:
        act: nn.Module = (nn.LeakyReLU(LEAKY_SLOPE, inplace=True) if activation == "leaky_relu"
                          else nn.ReLU(inplace=True))
        super().__init__(conv3d(in_channels, out_channels, kernel_size), make_norm(norm, channels=out_channels), act)


class Upsample(nn.Module):
    """Nearest-neighbour x2 upsampling (repeats every voxel twice along each axis)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, X, Y, Z)`` -> ``(B, C, 2X, 2Y, 2Z)``."""
        return nn.functional.interpolate(x, scale_factor=2.0, mode="nearest")


def check_input(x: torch.Tensor, in_channels: int, divisor: int, name: str) -> None:
    """Validate a network input, raising a ValueError that says how to fix it.

    Args:
        x: expected ``(B, in_channels, X, Y, Z)`` floating tensor.
        in_channels: channels the network was built for.
        divisor: every spatial size must be a multiple of this (2 ** number of poolings).
        name: network name used in the message.

    Raises:
        ValueError: wrong number of dimensions, channels or a spatial size that is not a multiple.
    """
    if x.ndim != 5:
        raise ValueError(f"{name}: expected a 5-D input (B, C, X, Y, Z), got shape {tuple(x.shape)}; "
                         "add the batch dimension with x[None]")
    if x.shape[1] != in_channels:
        raise ValueError(f"{name}: expected {in_channels} input channels, got {x.shape[1]} "
                         f"(shape {tuple(x.shape)}); stack the modalities t1, t1ce, t2, flair")
    bad = [s for s in x.shape[2:] if s % divisor or s == 0]
    if bad:
        raise ValueError(f"{name}: spatial size {tuple(x.shape[2:])} is not a multiple of {divisor} "
                         f"(2**(depth-1)); pad or crop the input to a multiple of {divisor}")
