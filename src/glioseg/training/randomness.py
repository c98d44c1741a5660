"""Random draws and argument checks shared by the ``Random*`` transforms, and seeded generators.

Parameters are drawn on the generator's device and moved to the CPU (they are tiny), so the
same generator state gives the same parameters wherever the tensors live.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

Batch = dict[str, Any]
"""``{"image": float (B, C, X, Y, Z), "label": uint8 (B, X, Y, Z)}`` (the label is optional)."""


def uniform(n: int, low: float, high: float, g: torch.Generator) -> torch.Tensor:
    """n samples of U(low, high), float32 on the CPU (parameters are tiny; keep them off the GPU)."""
    return low + (high - low) * torch.rand(n, generator=g, device=g.device).cpu()


def chance(n: int, p: float, g: torch.Generator) -> torch.Tensor:
    """n Bernoulli(p) draws as a bool CPU tensor."""
    return torch.rand(n, generator=g, device=g.device).cpu() < p


def check_range(name: str, r: Sequence[float], low: float = -math.inf) -> tuple[float, float]:
    """``(low, high)`` of a range argument; ValueError naming it unless ``low <= r[0] <= r[1]``."""
    lo, hi = float(r[0]), float(r[1])
    if not (low <= lo <= hi):
        raise ValueError(f"{name} range must satisfy {low} <= low <= high, got ({lo}, {hi})")
    return lo, hi


def check_p(p: float) -> float:
    """A probability argument; ValueError unless it is in [0, 1]."""
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"probability must be in [0, 1], got {p}")
    return float(p)


def seed_generator(*keys: int, device: torch.device | str = "cpu") -> torch.Generator:
    """A torch generator seeded from a tuple of integers (e.g. seed, epoch, index)."""
    seed = int(np.random.SeedSequence([int(k) % (2**63) for k in keys]).generate_state(1, np.uint64)[0])
    return torch.Generator(device=device).manual_seed(seed % (2**63))
