"""Shape of one binary region: volume, surface area, sphericity, PCA axes, extent, components.

Conventions (IBSI / pyradiomics "shape" family where one exists):

- Volume: voxel count times the voxel volume (mm^3; the feature table reports ml).
- Surface area: area of the triangle mesh that marching cubes (scikit-image, Lewiner variant) puts
  at the 0.5 level of the mask padded by one voxel, with the voxel spacing applied. This is
  pyradiomics' ``SurfaceArea``; it is smaller than the voxel-face count, which overstates a
  sphere's area by about 50 %.
- Sphericity: ``pi^(1/3) (6 V)^(2/3) / A`` with V the volume enclosed by the same mesh (signed
  tetrahedra, as pyradiomics' ``MeshVolume``), so that a sphere scores near 1 and nothing above 1.
- Elongation / flatness: ``sqrt(l2 / l1)`` and ``sqrt(l3 / l1)`` from the eigenvalues
  ``l1 >= l2 >= l3`` of the covariance of the voxel centres in mm (1 = as long in both
  directions); major axis length ``4 sqrt(l1)`` (the full axis of the equivalent ellipsoid).
- Extent: voxels in the mask over voxels in its axis-aligned bounding box (1 for a box,
  pi/6 for a sphere).
- Components: 26-connected components (cc3d); ``largest_component_fraction`` is the share of the
  volume in the largest one.

An empty mask has every shape feature 0 (volume 0, no components). Arrays are bool ``(X, Y, Z)``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from glioseg.utils import bounding_box

SHAPE_STATS: tuple[str, ...] = ("surface_mm2", "sphericity", "elongation", "flatness", "major_axis_mm", "extent",
                                "components", "largest_component_fraction")


def mesh_area_and_volume(mask: np.ndarray, spacing: Sequence[float]) -> tuple[float, float]:
    """Surface area (mm^2) and enclosed volume (mm^3) of the marching-cubes mesh of ``mask``.

    Args:
        mask: bool ``(X, Y, Z)`` with at least one voxel.
        spacing: voxel size in mm per axis.

    Returns:
        ``(area, volume)``; both > 0.
    """
    from skimage.measure import marching_cubes, mesh_surface_area

    box = bounding_box(mask)
    assert box is not None  # internal: callers pass non-empty masks
    padded = np.pad(mask[box].astype(np.float32), 1)
    verts, faces, _, _ = marching_cubes(padded, level=0.5, spacing=tuple(float(s) for s in spacing))
    area = float(mesh_surface_area(verts, faces))
    a, b, c = verts[faces[:, 0]], verts[faces[:, 1]], verts[faces[:, 2]]
    volume = abs(float(np.einsum("ij,ij->i", a, np.cross(b, c)).sum()) / 6.0)
    return area, volume


def sphericity(area_mm2: float, volume_mm3: float) -> float:
    """``pi^(1/3) (6 V)^(2/3) / A``: 1 for a sphere, less for anything else (0 when ``A`` is 0)."""
    if area_mm2 <= 0:
        return 0.0
    return math.pi ** (1 / 3) * (6 * volume_mm3) ** (2 / 3) / area_mm2


def principal_axes(mask: np.ndarray, spacing: Sequence[float]) -> tuple[float, float, float]:
    """Eigenvalues ``l1 >= l2 >= l3`` (mm^2) of the covariance of the voxel centres of ``mask``.

    Args:
        mask: bool ``(X, Y, Z)``.
        spacing: voxel size in mm per axis.

    Returns:
        The three eigenvalues, largest first (zeros for fewer than two voxels).
    """
    points = np.argwhere(mask).astype(np.float64) * np.asarray(spacing, dtype=np.float64)
    if len(points) < 2:
        return 0.0, 0.0, 0.0
    eig = np.linalg.eigvalsh(np.cov(points, rowvar=False, bias=True))
    l3, l2, l1 = (max(float(v), 0.0) for v in eig)  # eigvalsh sorts ascending; clip -0 round-off
    return l1, l2, l3


def extent(mask: np.ndarray) -> float:
    """Voxels in ``mask`` over voxels in its axis-aligned bounding box (0 when empty)."""
    box = bounding_box(mask)
    if box is None:
        return 0.0
    return float(mask[box].sum()) / float(np.prod([s.stop - s.start for s in box]))


def components(mask: np.ndarray) -> tuple[int, float]:
    """Number of 26-connected components and the largest one's share of the voxels (0, 0 when empty)."""
    import cc3d

    labels, count = cc3d.connected_components(mask.astype(np.uint8), connectivity=26, return_N=True)
    if count == 0:
        return 0, 0.0
    sizes = np.bincount(labels.ravel())[1:]
    return int(count), float(sizes.max()) / float(sizes.sum())


def shape_features(mask: np.ndarray, spacing: Sequence[float]) -> dict[str, float]:
    """Every :data:`SHAPE_STATS` entry of one region.

    Args:
        mask: bool ``(X, Y, Z)``.
        spacing: voxel size in mm per axis.

    Returns:
        stat name -> value (all 0 for an empty mask).
    """
    if not mask.any():
        return dict.fromkeys(SHAPE_STATS, 0.0)
    area, mesh_volume = mesh_area_and_volume(mask, spacing)
    l1, l2, l3 = principal_axes(mask, spacing)
    count, largest = components(mask)
    return {
        "surface_mm2": area,
        "sphericity": sphericity(area, mesh_volume),
        "elongation": math.sqrt(l2 / l1) if l1 > 0 else 0.0,
        "flatness": math.sqrt(l3 / l1) if l1 > 0 else 0.0,
        "major_axis_mm": 4.0 * math.sqrt(l1),
        "extent": extent(mask),
        "components": float(count),
        "largest_component_fraction": largest,
    }
