"""Process-level runtime settings: CPU allocator, device choice, mixed precision, seeding.

Nothing here reads environment variables or argv; callers pass every choice explicitly.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import random
from typing import Any

import numpy as np
import torch

from glioseg.config import PRECISIONS

# glibc mallopt parameter numbers (malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
# Keep freed memory in the heap: big 3D activations are freed and re-allocated every step.
DEFAULT_TRIM_THRESHOLD = 1 << 30

_ALLOCATOR_STATE: dict[str, bool] = {"tuned": False}


def tune_allocator(trim_threshold: int = DEFAULT_TRIM_THRESHOLD) -> bool:
    """Stop glibc from returning big activation buffers to the OS after every step.

    By default glibc serves allocations above ~128 KiB with ``mmap`` and unmaps them on
    ``free``, so each training step page-faults its activations in again (1.4-2.1x slower on
    CPU). This sets ``M_MMAP_MAX=0`` (heap only) and a large ``M_TRIM_THRESHOLD``.
    Idempotent; a no-op where the C library is not glibc.

    Args:
        trim_threshold: bytes of free heap top kept before trimming.

    Returns:
        True when the setting is in effect (now or from an earlier call), False off glibc.
    """
    if _ALLOCATOR_STATE["tuned"]:
        return True
    libc = _load_glibc()
    if libc is None:
        return False
    ok = libc.mallopt(_M_MMAP_MAX, 0) == 1
    ok = libc.mallopt(_M_TRIM_THRESHOLD, int(trim_threshold)) == 1 and ok
    _ALLOCATOR_STATE["tuned"] = ok
    return ok


def _load_glibc() -> Any | None:
    """Return the process's C library when it is glibc (it has ``mallopt`` and ``gnu_get_libc_version``)."""
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        libc = ctypes.CDLL(name)
        libc.gnu_get_libc_version  # noqa: B018  (raises AttributeError off glibc)
        libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
        libc.mallopt.restype = ctypes.c_int
    except (OSError, AttributeError):
        return None
    return libc


def select_device(name: str = "auto") -> torch.device:
    """Turn a device name into a ``torch.device``, checking that it exists.

    Args:
        name: ``"auto"`` (CUDA when available, else CPU), ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.

    Returns:
        The device.

    Raises:
        ValueError: unknown name, CUDA requested but unavailable, or index out of range.
    """
    key = name.strip().lower()
    if key == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if key == "cpu":
        return torch.device("cpu")
    if key == "cuda" or key.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise ValueError(f"device {name!r} requested but CUDA is not available; use --device cpu")
        index_text = key.partition(":")[2]
        if index_text and (not index_text.isdigit() or int(index_text) >= torch.cuda.device_count()):
            raise ValueError(
                f"device {name!r}: no such GPU (found {torch.cuda.device_count()}); "
                f"use cuda:0..cuda:{torch.cuda.device_count() - 1}"
            )
        return torch.device(key)
    raise ValueError(f"unknown device {name!r}; use 'auto', 'cpu', 'cuda' or 'cuda:N'")


def check_precision(device: torch.device, precision: str) -> None:
    """Raise ValueError when ``precision`` is unknown or unsupported on ``device``."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; choose one of {list(PRECISIONS)}")
    if precision == "fp16" and device.type != "cuda":
        raise ValueError("precision fp16 needs a CUDA device; on CPU use bf16 or fp32")


def autocast_context(device: torch.device | str, precision: str) -> contextlib.AbstractContextManager[Any]:
    """Context manager running the forward pass in the requested precision.

    Args:
        device: where the model runs.
        precision: ``"fp32"`` (no autocast), ``"bf16"`` (CPU or CUDA) or ``"fp16"`` (CUDA only;
            pair it with ``torch.amp.GradScaler``).

    Returns:
        A context manager (``torch.autocast`` or a null context for fp32).

    Raises:
        ValueError: unknown precision, or fp16 on CPU.
    """
    device = torch.device(device)
    check_precision(device, precision)
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def seed_everything(seed: int) -> None:
    """Seed Python's, numpy's global and torch's (CPU and CUDA) generators."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def set_deterministic(enabled: bool) -> None:
    """Best-effort deterministic kernels (warns instead of failing where none exists).

    Sets cuDNN to deterministic, disables its autotuner and asks torch for deterministic
    algorithms. CUBLAS_WORKSPACE_CONFIG must be set by the launcher for cuBLAS on CUDA >= 10.2.
    """
    torch.use_deterministic_algorithms(enabled, warn_only=True)
    torch.backends.cudnn.deterministic = enabled
    torch.backends.cudnn.benchmark = not enabled


def rng_state() -> dict[str, Any]:
    """Snapshot of Python, numpy and torch generator states, as weights_only-loadable objects.

    Returns:
        dict with ``python`` (list), ``numpy`` (dict of plain values), ``torch`` (uint8 tensor)
        and ``cuda`` (list of uint8 tensors, empty without CUDA).
    """
    version, internal, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "python": [version, list(internal), gauss],
        "numpy": {"kind": kind, "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
                  "pos": int(pos), "has_gauss": int(has_gauss), "cached": float(cached)},
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore generator states saved by :func:`rng_state`."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    np_state = state["numpy"]
    np.random.set_state((np_state["kind"], np_state["keys"].numpy().astype(np.uint32),
                         np_state["pos"], np_state["has_gauss"], np_state["cached"]))
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def cpu_count() -> int:
    """CPU cores this process may use (affinity-aware)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def hardware_summary() -> dict[str, Any]:
    """What this process trains or predicts on: CPU model, usable cores, torch threads, GPUs.

    Returns:
        ``{"cpu", "cores", "torch_threads", "gpus", "platform"}``; ``cpu`` is None where
        ``/proc/cpuinfo`` does not name it (not Linux).
    """
    import platform

    cuda = torch.cuda.is_available()
    gpus = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if cuda else []
    return {"cpu": _cpu_model(), "cores": cpu_count(), "torch_threads": torch.get_num_threads(), "gpus": gpus,
            "platform": platform.platform()}


def _cpu_model() -> str | None:
    try:
        with open("/proc/cpuinfo") as handle:
            names = [line.split(":", 1)[1].strip() for line in handle if line.startswith("model name")]
    except OSError:
        return None
    return names[0] if names else None
