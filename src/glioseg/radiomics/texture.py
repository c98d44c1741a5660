"""Grey-level co-occurrence (GLCM) texture of one region (IBSI "GLCM" family, 3-D, computed with
numpy: pyradiomics has no wheel for this Python).

- Discretisation: :data:`GLCM_LEVELS` equal-width bins between the region's minimum and maximum
  normalised intensity (IBSI "fixed bin number"); a constant region is one grey level.
- Neighbours: the 13 unique 3-D directions at distance 1 voxel (26-neighbourhood); each matrix is
  symmetric (pairs counted both ways) and only pairs with both voxels in the region count.
- Aggregation: each feature is computed per direction and averaged over the directions with at
  least one pair (pyradiomics' default; IBSI "3D, averaged").
- Features (``P`` normalised to sum 1, ``i, j`` grey levels 1..Ng): ``contrast`` sum P (i-j)^2;
  ``homogeneity`` sum P / (1 + |i-j|) (inverse difference); ``energy`` sum P^2 (angular second
  moment); ``entropy`` -sum P log2 P; ``correlation`` sum P (i-mu_i)(j-mu_j) / (s_i s_j), 1 when
  the marginal variance is 0 (pyradiomics' convention for a flat region).

A region with no neighbouring pair has every feature 0.
"""

from __future__ import annotations

import itertools

import numpy as np

from glioseg.utils import bounding_box

GLCM_LEVELS = 16
GLCM_STATS: tuple[str, ...] = ("contrast", "homogeneity", "energy", "entropy", "correlation")
# the 13 directions of the 26-neighbourhood with the first non-zero component positive
DIRECTIONS: tuple[tuple[int, int, int], ...] = tuple(
    (a, b, c) for a, b, c in itertools.product((-1, 0, 1), repeat=3) if (a, b, c) > (0, 0, 0))


def quantise(values: np.ndarray, levels: int = GLCM_LEVELS) -> np.ndarray:
    """Equal-width bins 0..levels-1 between the minimum and maximum of ``values`` (int64, same shape)."""
    low, high = float(values.min()), float(values.max())
    if high - low < 1e-12:
        return np.zeros(values.shape, dtype=np.int64)
    return np.minimum(((values - low) / (high - low) * levels).astype(np.int64), levels - 1)


def _pairs(grey: np.ndarray, mask: np.ndarray, d: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Grey levels of the voxel pairs ``(v, v + d)`` with both voxels in ``mask``."""
    src = tuple(slice(max(0, -o), n - max(0, o)) for o, n in zip(d, grey.shape, strict=True))
    dst = tuple(slice(max(0, o), n - max(0, -o)) for o, n in zip(d, grey.shape, strict=True))
    both = mask[src] & mask[dst]
    return grey[src][both], grey[dst][both]


def glcm(grey: np.ndarray, mask: np.ndarray, d: tuple[int, int, int], levels: int = GLCM_LEVELS) -> np.ndarray:
    """Symmetric co-occurrence counts ``(levels, levels)`` of direction ``d`` inside ``mask``."""
    a, b = _pairs(grey, mask, d)
    counts = np.bincount(a * levels + b, minlength=levels * levels).reshape(levels, levels).astype(np.float64)
    return counts + counts.T


def glcm_stats(p: np.ndarray) -> dict[str, float]:
    """The :data:`GLCM_STATS` of one normalised matrix ``p`` (sums to 1)."""
    levels = np.arange(1, p.shape[0] + 1, dtype=np.float64)
    i, j = np.meshgrid(levels, levels, indexing="ij")
    px = p.sum(axis=1)
    mu = float((levels * px).sum())
    var = float((((levels - mu) ** 2) * px).sum())  # symmetric: both marginals are equal
    nonzero = p[p > 0]
    corr = float((p * (i - mu) * (j - mu)).sum() / var) if var > 1e-12 else 1.0
    return {"contrast": float((p * (i - j) ** 2).sum()), "homogeneity": float((p / (1 + np.abs(i - j))).sum()),
            "energy": float((p**2).sum()), "entropy": float(-(nonzero * np.log2(nonzero)).sum()),
            "correlation": corr}


def texture_features(image: np.ndarray, mask: np.ndarray, levels: int = GLCM_LEVELS) -> dict[str, float]:
    """Every :data:`GLCM_STATS` entry of ``image`` inside ``mask``, averaged over the 13 directions.

    Args:
        image: float ``(X, Y, Z)`` normalised intensities.
        mask: bool ``(X, Y, Z)`` region.
        levels: number of grey levels.

    Returns:
        stat name -> value (all 0 when no two neighbouring voxels are in the region).
    """
    box = bounding_box(mask, 1)
    if box is None:
        return dict.fromkeys(GLCM_STATS, 0.0)
    region, img = mask[box], image[box]
    grey = np.zeros(region.shape, dtype=np.int64)
    grey[region] = quantise(img[region], levels)
    per_direction = []
    for d in DIRECTIONS:
        counts = glcm(grey, region, d, levels)
        if counts.sum() > 0:
            per_direction.append(glcm_stats(counts / counts.sum()))
    if not per_direction:
        return dict.fromkeys(GLCM_STATS, 0.0)
    return {k: float(np.mean([s[k] for s in per_direction])) for k in GLCM_STATS}
