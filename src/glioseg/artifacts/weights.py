"""Network weights as safetensors: atomic save, checked load, and the settings they depend on.

A stage's ``model.safetensors`` (best) and ``last.safetensors`` (latest) hold a plain state dict
(no pickle) plus string metadata (stage, epoch, global step, score). Training writes them
(:mod:`glioseg.training.checkpoint`); :func:`glioseg.artifacts.rundir.load_run` reads them.
"""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path
from typing import Any

from torch import Tensor, nn

from glioseg.utils import atomic_write, one_line

INFERENCE_KEYS: tuple[str, ...] = ("model", "target", "spacing_mm", "patch_size", "val_window")
"""Stage settings that a stage's weights and their use at inference depend on."""

MAX_HEADER_BYTES = 100 * 1024**2
"""Largest safetensors header accepted (the safetensors library's own limit)."""

DTYPE_BYTES: dict[str, int] = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "I16": 2, "U16": 2,
                               "F16": 2, "BF16": 2, "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8}
"""Bytes per element of each safetensors dtype."""


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


def safetensors_problem(path: Path) -> str | None:
    """What makes ``path`` not a well-formed safetensors file, or None; reads only its header.

    Checks the 8-byte header length, that the header is a JSON object, every tensor's dtype, shape
    and data offsets, and that the tensors cover the data exactly (as the format requires), so a
    pickle, random bytes, a truncated file or a header that lies about sizes are all caught.
    """
    size = path.stat().st_size
    if size < 8:
        return f"{size} bytes, too short for the 8-byte header length"
    with open(path, "rb") as fh:
        (length,) = struct.unpack("<Q", fh.read(8))
        if length > min(size - 8, MAX_HEADER_BYTES):
            return f"header length {length} does not fit a {size}-byte file (a pickle or random bytes?)"
        raw = fh.read(length)
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        return "the header is not JSON"
    if not isinstance(header, dict):
        return "the header is not a JSON object"
    return _tensors_problem(header, size - 8 - length)


def _tensors_problem(header: dict[str, Any], data_bytes: int) -> str | None:
    """What is wrong with a parsed safetensors header whose data part holds ``data_bytes``, or None."""
    metadata = header.pop("__metadata__", {})
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        return "__metadata__ is not a map of strings"
    spans = []
    for name, entry in header.items():
        if problem := _entry_problem(entry):
            return f"tensor {name!r}: {problem}"
        spans.append((entry["data_offsets"][0], entry["data_offsets"][1]))
    end = 0
    for begin, stop in sorted(spans):
        if begin != end:
            return "tensor data overlaps or leaves gaps"
        end = stop
    if end != data_bytes:
        return f"the header describes {end} bytes of tensor data but the file holds {data_bytes} (truncated?)"
    return None


def _is_size(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _entry_problem(entry: object) -> str | None:
    """What is wrong with one tensor entry (dtype, shape, data_offsets) of a safetensors header, or None."""
    if not isinstance(entry, dict) or not {"dtype", "shape", "data_offsets"} <= set(entry):
        return "needs dtype, shape and data_offsets"
    dtype, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
    if dtype not in DTYPE_BYTES:
        return f"unknown dtype {dtype!r}"
    if not isinstance(shape, list) or not all(_is_size(d) for d in shape):
        return f"shape {shape!r} is not a list of sizes"
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(_is_size(o) for o in offsets)
            and offsets[0] <= offsets[1]):
        return f"data_offsets {offsets!r} is not [begin, end]"
    needed = math.prod(shape) * DTYPE_BYTES[dtype]
    if offsets[1] - offsets[0] != needed:
        return f"shape {shape} of {dtype} needs {needed} bytes but data_offsets span {offsets[1] - offsets[0]}"
    return None


def check_safetensors(path: Path) -> None:
    """Refuse a file that is not well-formed safetensors (see :func:`safetensors_problem`).

    Raises:
        TrainError: missing or malformed file; the message names it and the fix.
    """
    if not path.is_file():
        raise TrainError(f"{path}: weights not found; train this stage first (`glioseg train`)")
    if problem := safetensors_problem(path):
        raise TrainError(f"{path}: not a valid safetensors file ({problem}); "
                         "train the stage again or get a fresh copy of the model")


def _fit_problem(model: nn.Module, state: dict[str, Tensor]) -> str | None:
    """How a state dict does not fit a network (missing, unknown, other shape), in one short line, or None."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unknown = [k for k in state if k not in expected]
    reshaped = [k for k in expected if k in state and state[k].shape != expected[k].shape]
    parts = []
    if missing:
        parts.append(f"{len(missing)} of the network's tensors missing, e.g. {missing[0]!r}")
    if unknown:
        parts.append(f"{len(unknown)} unknown to it, e.g. {unknown[0]!r}")
    if reshaped:
        k = reshaped[0]
        parts.append(f"{len(reshaped)} of another shape, e.g. {k!r} is {tuple(state[k].shape)} "
                     f"in the file, {tuple(expected[k].shape)} in the network")
    return "; ".join(parts) or None


def load_weights(model: nn.Module, path: Path) -> dict[str, str]:
    """Load safetensors weights into a network; returns the file's metadata.

    The file is checked first (:func:`check_safetensors`), so a corrupt or fake file is a one-line
    error, never a traceback.

    Raises:
        TrainError: missing, corrupt or fake file, or weights that do not fit the network.
    """
    from safetensors import SafetensorError, safe_open
    from safetensors.torch import load_file

    check_safetensors(path)
    try:
        state = load_file(str(path))
        with safe_open(str(path), framework="pt") as fh:
            metadata = dict(fh.metadata() or {})
    except (SafetensorError, OSError, ValueError) as exc:
        raise TrainError(f"{path}: cannot read the weights ({one_line(exc, limit=200)}); "
                         "train the stage again or get a fresh copy of the model") from exc
    fit = "the config.yaml next to it must be the one it was trained with"
    if problem := _fit_problem(unwrap(model), state):
        raise TrainError(f"{path}: weights do not fit the configured network ({problem}); {fit}")
    try:
        unwrap(model).load_state_dict(state)
    except RuntimeError as exc:
        reason = one_line(exc, limit=200)
        raise TrainError(f"{path}: weights do not fit the configured network ({reason}); {fit}") from exc
    return metadata
