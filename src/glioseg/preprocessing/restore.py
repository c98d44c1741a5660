"""Every inverse of preprocessing: arrays on the preprocessed grid back to the case's grid.

:func:`restore_to_case_grid` undoes the resampling (linear or nearest) and the brain crop (exact);
:func:`restore_probabilities` does the same for a stack of channels ``(K, x, y, z)``;
:func:`paste_box` brings values computed on a box of the preprocessed grid back into case-grid
values (the cascade's high-resolution box).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from glioseg.preprocessing.normalize import resample_image, resample_labels

Box = tuple[tuple[int, int], tuple[int, int], tuple[int, int]]
"""A half-open box on a grid: ``((x0, x1), (y0, y1), (z0, z1))``."""


def restore_to_case_grid(array: np.ndarray, meta: dict[str, Any], order: int = 1,
                         fill: float = 0) -> np.ndarray:
    """Undo the resampling and the crop: bring an array back onto the case's canonical grid.

    Args:
        array: ``(C, x, y, z)`` or ``(x, y, z)`` on the preprocessed grid (``meta["shape"]``).
        meta: the case's meta (from :func:`preprocess_case` or ``meta.json``).
        order: 0 for label maps (one-hot linear + argmax when resampled, so labels stay labels),
            1 for continuous values (trilinear).
        fill: value outside the brain bounding box.

    Returns:
        ``(C, X, Y, Z)`` or ``(X, Y, Z)`` on the canonical grid ``meta["canonical_shape"]``, the
        dtype of ``array`` for order 0, float32 for order 1. Exact when no resampling was done.

    Raises:
        ValueError: the array's spatial shape is not ``meta["shape"]``, or order is not 0/1.
    """
    if order not in (0, 1):
        raise ValueError(f"order must be 0 (labels) or 1 (linear), got {order}")
    shape, cropped = tuple(meta["shape"]), tuple(meta["cropped_shape"])
    if tuple(array.shape[-3:]) != shape or array.ndim not in (3, 4):
        raise ValueError(f"case {meta.get('case_id')}: array shape {array.shape} does not match the "
                         f"preprocessed grid {shape}; pass the network output for this case")
    stacked = array if array.ndim == 4 else array[None]
    if shape != cropped and order == 0:
        stacked = np.stack([resample_labels(a, cropped).astype(array.dtype) for a in stacked])
    elif shape != cropped:
        stacked = resample_image(stacked, cropped)
    dtype = array.dtype if order == 0 else np.float32
    out = np.full((stacked.shape[0], *meta["canonical_shape"]), fill, dtype=dtype)
    sl = tuple(slice(a, b) for a, b in meta["bbox"])
    out[(slice(None), *sl)] = stacked
    return out if array.ndim == 4 else out[0]


def restore_probabilities(probs: np.ndarray, meta: dict[str, Any]) -> np.ndarray:
    """Paste probabilities from the preprocessed grid back into the case's canonical grid.

    Undoes the resampling (trilinear) and the brain crop; outside the crop every channel is 0,
    which thresholding and argmax (ties go to channel 0) both turn into background.

    Args:
        probs: float32 ``(K, x, y, z)`` on the preprocessed grid ``meta["shape"]``.
        meta: the case's preprocessing meta.

    Returns:
        float32 ``(K, X, Y, Z)`` on ``meta["canonical_shape"]``.
    """
    return restore_to_case_grid(np.asarray(probs, dtype=np.float32), meta, order=1, fill=0.0)


def paste_box(case_probs: np.ndarray, box_probs: np.ndarray, sub: Box, meta: dict[str, Any]) -> np.ndarray:
    """Replace the case-grid probabilities inside a preprocessed-grid box by ``box_probs``.

    Without resampling the box maps voxel to voxel; with resampling, the box's values and its
    coverage are restored to the case grid together and blended linearly at its border.

    Args:
        case_probs: float32 ``(K, X, Y, Z)`` on the canonical grid (modified in place).
        box_probs: float32 ``(K, bx, by, bz)`` on the preprocessed grid, inside ``sub``.
        sub: the box on the preprocessed grid.
        meta: preprocessing meta of that grid.

    Returns:
        ``case_probs``, updated.
    """
    shape = tuple(meta["shape"])
    if shape == tuple(meta["cropped_shape"]):
        sl = tuple(slice(b0 + a, b0 + b) for (a, b), (b0, _) in zip(sub, meta["bbox"], strict=True))
        case_probs[(slice(None), *sl)] = box_probs
        return case_probs
    grid = np.zeros((box_probs.shape[0] + 1, *shape), dtype=np.float32)
    sl = tuple(slice(a, b) for a, b in sub)
    grid[(slice(None, -1), *sl)] = box_probs
    grid[(slice(-1, None), *sl)] = 1.0  # the box's coverage, restored alongside as the blending weight
    restored = restore_to_case_grid(grid, meta, order=1)
    case_probs *= 1.0 - restored[-1]
    case_probs += restored[:-1]
    return case_probs
