"""Distributed data parallel training: process-group membership, joining it, devices per rank.

The CLI reads torchrun's ``RANK`` / ``WORLD_SIZE`` / ``LOCAL_RANK`` into a :class:`DistInfo`;
nothing here reads the environment. Every rank trains the same stage on its share of each
epoch's samples (:class:`glioseg.training.dataset.StepSampler`); only rank 0 writes files.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from glioseg.runtime import select_device


@dataclass(frozen=True)
class DistInfo:
    """Process group membership (from torchrun's RANK/WORLD_SIZE/LOCAL_RANK, read by the CLI)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    init_method: str = "env://"

    @property
    def is_main(self) -> bool:
        """Only the main process writes files."""
        return self.rank == 0


def init_distributed(dist: DistInfo, device_name: str) -> bool:
    """Join the process group (NCCL on CUDA, gloo on CPU); False when not distributed.

    Raises:
        ValueError: ``device_name`` is unknown or not available (:func:`glioseg.runtime.select_device`).
    """
    if dist.world_size <= 1 or torch.distributed.is_initialized():
        return False
    cuda = select_device(device_name).type == "cuda"
    torch.distributed.init_process_group("nccl" if cuda else "gloo", init_method=dist.init_method,
                                         rank=dist.rank, world_size=dist.world_size)
    return True


def rank_device(device_name: str, dist: DistInfo) -> torch.device:
    """The device of this rank: ``device_name`` checked, and ``cuda:LOCAL_RANK`` under multi-GPU DDP.

    Raises:
        ValueError: unknown or unavailable device; the message says which to use instead.
    """
    device = select_device(device_name)
    if device.type == "cuda" and dist.world_size > 1:
        device = torch.device("cuda", dist.local_rank)
        torch.cuda.set_device(device)
    return device


def wrap_ddp(model: nn.Module, device: torch.device, dist: DistInfo) -> nn.Module:
    """The model in a DistributedDataParallel wrapper when there are several ranks (else as is)."""
    if dist.world_size <= 1:
        return model
    ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids)
