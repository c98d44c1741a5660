"""The cascade's box: where the high-resolution stage runs.

The low-resolution stage predicts the whole brain; :func:`tumour_box` takes the bounding box of its
whole tumour plus a margin (on the case's canonical grid) and :func:`box_on_grid` maps that box
onto the high stage's preprocessed grid, grown to the network's size divisor. The high stage's
probabilities go back into the case grid with :func:`glioseg.preprocessing.restore.paste_box`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from glioseg.preprocessing.restore import Box
from glioseg.utils import bounding_box


def tumour_box(probs: np.ndarray, target: str, threshold: float, margin_mm: float,
               spacing: Sequence[float]) -> Box | None:
    """Bounding box of the predicted whole tumour, grown by a margin, clipped to the grid.

    Args:
        probs: float32 ``(K, X, Y, Z)`` on the case grid.
        target: ``"regions"`` (WT = channel 0 >= threshold) or ``"labels"`` (argmax > 0).
        threshold: WT probability threshold (regions only).
        margin_mm: margin added on each side, in mm.
        spacing: voxel size of the grid in mm ``(sx, sy, sz)``.

    Returns:
        Half-open ``((x0, x1), (y0, y1), (z0, z1))``, or None without tumour.
    """
    tumour = probs[0] >= threshold if target == "regions" else np.argmax(probs, axis=0) > 0
    box = bounding_box(tumour, margin=[math.ceil(margin_mm / s) for s in spacing])
    if box is None:
        return None
    return tuple((sl.start, sl.stop) for sl in box)  # type: ignore[return-value]


def box_on_grid(box: Box, meta: dict[str, Any], divisor: int = 1) -> Box:
    """Map a box on the case's canonical grid onto a preprocessed grid (crop + resampling).

    The box is enlarged (when the grid allows) to a multiple of ``divisor`` so that the network
    sees image context rather than zero padding.

    Args:
        box: half-open box on the canonical grid.
        meta: preprocessing meta of the target grid (``bbox``, ``cropped_shape``, ``shape``).
        divisor: network size divisor.

    Returns:
        Half-open box on the preprocessed grid, non-empty and inside it.
    """
    out = []
    for axis, (a, b) in enumerate(box):
        b0 = meta["bbox"][axis][0]
        n, m = int(meta["shape"][axis]), int(meta["cropped_shape"][axis])
        scale = m / n  # canonical voxels per preprocessed voxel
        lo = min(max(math.floor((a - b0) / scale), 0), n - 1)
        hi = max(min(math.ceil((b - b0) / scale), n), lo + 1)
        out.append(_grow_to_multiple(lo, hi, n, divisor))
    return tuple(out)  # type: ignore[return-value]


def _grow_to_multiple(lo: int, hi: int, n: int, divisor: int) -> tuple[int, int]:
    """Grow [lo, hi) symmetrically to a multiple of divisor, staying inside [0, n)."""
    want = min(math.ceil((hi - lo) / divisor) * divisor, n)
    extra = want - (hi - lo)
    lo = max(lo - extra // 2, 0)
    hi = min(lo + want, n)
    return max(hi - want, 0), hi
