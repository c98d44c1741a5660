"""Where the tumour lies: centroid relative to the brain's bounding box, distance to the midline,
hemisphere.

Everything is measured in world coordinates (RAS mm, from the case's affine), so a case stored
with a flipped axis and the matching affine gives the same answer, and left/right are the
patient's. The arrays are the canonical ``(X, Y, Z)`` arrays of :func:`glioseg.data.nifti.read_case`
with their ``canonical_affine``; x grows towards the patient's right.

- Brain: voxels non-zero in any modality (:func:`glioseg.preprocessing.normalize.brain_mask`).
- Midline: the sagittal plane through the middle of the brain's left-right extent (world x of
  the brain's bounding box). This is an approximation of the mid-sagittal plane that assumes the
  head is not rolled or yawed much, as in the co-registered BraTS data.
- Centroid relative: ``(c - lo) / (hi - lo)`` per world axis, with ``lo``/``hi`` the world
  bounding box of the brain: 0 = left / posterior / inferior edge, 1 = right / anterior / superior.
- Midline distance: signed (positive to the right) world-x distance of the tumour centroid to the
  midline plane; ``midline_min_distance_mm`` is the distance of the tumour voxel nearest to the
  plane (0 when the tumour touches or crosses it); ``right_fraction`` is the share of the tumour
  volume right of the plane and ``hemisphere_right`` is 1 when the centroid is right of it.
"""

from __future__ import annotations

import numpy as np

LOCATION_STATS: tuple[str, ...] = ("centroid_rel_x", "centroid_rel_y", "centroid_rel_z", "midline_signed_mm",
                                   "midline_distance_mm", "midline_min_distance_mm", "right_fraction",
                                   "hemisphere_right")


def world_points(index: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """Voxel indices ``(N, 3)`` -> world coordinates ``(N, 3)`` in mm."""
    return np.asarray(index, dtype=np.float64) @ affine[:3, :3].T + affine[:3, 3]


def _world_box(brain: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """World-coordinate lower and upper corners of the brain's voxel-centre bounding box."""
    idx = np.argwhere(brain)
    corners = np.array([[a, b, c] for a in (idx[:, 0].min(), idx[:, 0].max())
                        for b in (idx[:, 1].min(), idx[:, 1].max()) for c in (idx[:, 2].min(), idx[:, 2].max())])
    world = world_points(corners, affine)
    return world.min(axis=0), world.max(axis=0)


def location_features(tumour: np.ndarray, brain: np.ndarray, affine: np.ndarray) -> dict[str, float]:
    """Every :data:`LOCATION_STATS` entry of the tumour (usually WT).

    Args:
        tumour: bool ``(X, Y, Z)``.
        brain: bool ``(X, Y, Z)`` brain mask, non-empty.
        affine: 4x4 voxel-to-world affine of these arrays.

    Returns:
        stat name -> value; all 0 when the tumour is empty.
    """
    if not tumour.any():
        return dict.fromkeys(LOCATION_STATS, 0.0)
    lo, hi = _world_box(brain, affine)
    points = world_points(np.argwhere(tumour), affine)
    centroid = points.mean(axis=0)
    rel = (centroid - lo) / np.where(hi > lo, hi - lo, 1.0)
    midline = 0.5 * (lo[0] + hi[0])
    offsets = points[:, 0] - midline
    crosses = offsets.min() <= 0 <= offsets.max()
    signed = float(centroid[0] - midline)
    return {
        "centroid_rel_x": float(rel[0]),
        "centroid_rel_y": float(rel[1]),
        "centroid_rel_z": float(rel[2]),
        "midline_signed_mm": signed,
        "midline_distance_mm": abs(signed),
        "midline_min_distance_mm": 0.0 if crosses else float(np.abs(offsets).min()),
        "right_fraction": float((offsets > 0).mean()),
        "hemisphere_right": 1.0 if signed > 0 else 0.0,
    }
