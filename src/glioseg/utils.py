"""Small helpers every stage uses: atomic file writes, bounding boxes, and the Dice coefficient
(training-time validation, postprocessing tuning and evaluation share this one implementation)."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from glioseg.labels import REGIONS, labels_to_regions


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path: Path, write: Callable[[Path], object]) -> Path:
    """Call ``write(tmp_path)`` on a temporary file next to ``path``, then rename it into place.

    The temporary name keeps the file's suffixes so that writers that dispatch on them work.
    Nothing is left at ``path`` if ``write`` fails.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = "".join(path.suffixes)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name.split('.')[0]}.", suffix=f".tmp{suffix}", dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        os.chmod(tmp, 0o666 & ~_current_umask())  # mkstemp makes 0600; give the usual file mode
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def bounding_box(mask: np.ndarray, margin: int | Sequence[int] = 0) -> tuple[slice, ...] | None:
    """Slices of the smallest box holding every non-zero voxel, grown by ``margin`` and clipped.

    The one bounding-box implementation: the brain crop, the metrics' crops, the lesion matching
    and the GIF sweep all use it. Computed from per-axis projections (no coordinate arrays).

    Args:
        mask: bool-like array of any dimensionality, e.g. ``(X, Y, Z)`` or ``(H, W)``.
        margin: voxels added on each side, one number for every axis or one per axis; the box
            is clipped to the array's shape.

    Returns:
        One half-open slice per axis (``mask[box]`` is the crop), or None for an empty mask.

    Raises:
        ValueError: ``margin`` has not one value per axis.
    """
    margins = [int(margin)] * mask.ndim if isinstance(margin, int | np.integer) else [int(m) for m in margin]
    if len(margins) != mask.ndim:
        raise ValueError(f"margin {margin} must be one number or {mask.ndim} (one per axis)")
    slices = []
    for axis, grow in enumerate(margins):
        hit = np.flatnonzero(mask.any(axis=tuple(a for a in range(mask.ndim) if a != axis)))
        if hit.size == 0:
            return None
        slices.append(slice(max(int(hit[0]) - grow, 0), min(int(hit[-1]) + 1 + grow, mask.shape[axis])))
    return tuple(slices)


def check_mask_pair(pred: np.ndarray, gt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both masks as bool arrays; ValueError when their shapes differ."""
    pred, gt = np.asarray(pred, dtype=bool), np.asarray(gt, dtype=bool)
    if pred.shape != gt.shape:
        raise ValueError(f"prediction shape {pred.shape} != ground-truth shape {gt.shape}")
    return pred, gt


def dice(pred: np.ndarray, gt: np.ndarray) -> float:
    """Dice coefficient ``2|P & G| / (|P| + |G|)``; 1 when both masks are empty.

    Args:
        pred, gt: bool-like masks of equal shape.

    Returns:
        Dice in [0, 1].
    """
    pred, gt = check_mask_pair(pred, gt)
    total = int(pred.sum()) + int(gt.sum())
    return 1.0 if total == 0 else 2.0 * int(np.count_nonzero(pred & gt)) / total


def region_dice(pred: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Dice of WT, TC, ET between two canonical label maps, BraTS conventions.

    A region empty in both maps scores 1; empty in one only scores 0.

    Args:
        pred: uint8 ``(X, Y, Z)`` canonical labels.
        truth: uint8 ``(X, Y, Z)`` canonical labels, same shape.

    Returns:
        float64 ``(3,)`` in the order WT, TC, ET.
    """
    if pred.shape != truth.shape:
        raise ValueError(f"prediction shape {pred.shape} != ground-truth shape {truth.shape}")
    p, t = labels_to_regions(pred), labels_to_regions(truth)
    return np.array([dice(p[i], t[i]) for i in range(len(REGIONS))])


def one_line(exc: BaseException, limit: int | None = None) -> str:
    """An exception's message on one line (its type name when it has none), cut at ``limit`` characters."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if limit is None or len(text) <= limit else text[:limit] + "..."
