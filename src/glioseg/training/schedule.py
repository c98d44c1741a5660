"""The learning-rate schedule of a stage (constant, cosine or polynomial decay over its epochs) and
the per-step seeds that make a resumed run repeat the uninterrupted one."""

from __future__ import annotations

import math

from glioseg.config import StageConfig


def lr_at(stage: StageConfig, epoch: int) -> float:
    """Learning rate of ``epoch`` (0-based) under the stage's schedule."""
    o, frac = stage.optim, min(epoch / stage.epochs, 1.0)
    if o.schedule == "exponential":
        return o.lr * o.decay**epoch
    if o.schedule == "poly":
        return o.lr * (1.0 - frac) ** o.poly_power
    if o.schedule == "cosine":
        return o.lr * 0.5 * (1.0 + math.cos(math.pi * frac))
    return o.lr


def step_seed(seed: int, rank: int, step: int) -> int:
    """Seed of the torch generator for one step of one rank (dropout, anything stochastic)."""
    return (seed * 1_000_003 + rank * 7_919 + step * 104_729) % (2**63)


