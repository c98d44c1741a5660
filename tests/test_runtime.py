"""Runtime helpers: allocator tuning, device choice, autocast, seeding and RNG snapshots."""

from __future__ import annotations

import io
import random

import numpy as np
import pytest
import torch

from glioseg.runtime import (
    autocast_context,
    rng_state,
    seed_everything,
    select_device,
    set_rng_state,
    tune_allocator,
)


def test_tune_allocator_is_idempotent():
    first = tune_allocator()
    assert tune_allocator() == first
    import platform

    if platform.libc_ver()[0] == "glibc":
        assert first is True


def test_select_device():
    assert select_device("cpu") == torch.device("cpu")
    assert select_device("auto").type in ("cpu", "cuda")
    with pytest.raises(ValueError, match="unknown device 'tpu'"):
        select_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available; use --device cpu"):
            select_device("cuda:0")


def test_autocast_context():
    with autocast_context("cpu", "bf16"):
        assert torch.mm(torch.ones(2, 2), torch.ones(2, 2)).dtype == torch.bfloat16
    with autocast_context("cpu", "fp32"):
        assert torch.mm(torch.ones(2, 2), torch.ones(2, 2)).dtype == torch.float32
    with pytest.raises(ValueError, match="fp16 needs a CUDA device"):
        autocast_context("cpu", "fp16")
    with pytest.raises(ValueError, match="unknown precision 'fp8'"):
        autocast_context("cpu", "fp8")


def test_rng_state_round_trip_through_weights_only_load():
    seed_everything(11)
    buffer = io.BytesIO()
    torch.save(rng_state(), buffer)
    expected = (random.random(), np.random.rand(), torch.rand(1).item())
    buffer.seek(0)
    set_rng_state(torch.load(buffer, weights_only=True))
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == expected
