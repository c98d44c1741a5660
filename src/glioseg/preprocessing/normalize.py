"""Preprocessing of one case: brain mask, bounding-box crop, per-channel z-score inside the brain
and optional resampling to an isotropic spacing.

The cache of preprocessed cases is :mod:`glioseg.preprocessing.cache`; the inverse (back to the
case grid) is :mod:`glioseg.preprocessing.restore`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from types import EllipsisType
from typing import Any

import numpy as np

from glioseg.data.nifti import MODALITIES, Case, CaseError, Geometry
from glioseg.utils import bounding_box

PREPROCESS_VERSION = 1  # bump when the cached arrays change meaning
CLIP_PERCENTILES: tuple[float, float] = (0.5, 99.5)
CROP_MARGIN = 2

BBox = tuple[tuple[int, int], tuple[int, int], tuple[int, int]]


class PreprocessError(Exception):
    """A preprocessed folder is missing, incomplete or inconsistent."""


@dataclass
class PreprocessedCase:
    """One preprocessed case.

    Attributes:
        case_id: identifier.
        image: float32 ``(4, x, y, z)`` z-scored (background 0), cropped and resampled.
        label: uint8 ``(x, y, z)`` canonical labels on the same grid, or None.
        meta: JSON-able description (see :func:`preprocess_case`).
    """

    case_id: str
    image: np.ndarray
    label: np.ndarray | None
    meta: dict[str, Any]


def brain_mask(image: np.ndarray) -> np.ndarray:
    """Voxels non-zero in any channel.

    Args:
        image: ``(C, X, Y, Z)`` any dtype.

    Returns:
        bool ``(X, Y, Z)``.
    """
    return np.any(image != 0, axis=0)


def brain_bbox(mask: np.ndarray, margin: int = CROP_MARGIN) -> BBox:
    """Half-open bounding box of a mask, grown by ``margin`` voxels and clipped to the volume.

    Args:
        mask: bool ``(X, Y, Z)``; must hold at least one voxel.
        margin: voxels added on each side.

    Returns:
        ``((x0, x1), (y0, y1), (z0, z1))``.

    Raises:
        ValueError: the mask is empty.
    """
    box = bounding_box(mask, margin)
    if box is None:
        raise ValueError("the image is zero everywhere in every modality; nothing to crop to")
    return tuple((s.start, s.stop) for s in box)  # type: ignore[return-value]


def crop(array: np.ndarray, bbox: BBox) -> np.ndarray:
    """Crop the last three axes of ``array`` (``(..., X, Y, Z)``) to ``bbox``; returns a copy."""
    index: tuple[EllipsisType | slice, ...] = (Ellipsis, *(slice(a, b) for a, b in bbox))
    return np.ascontiguousarray(array[index])


def zscore_in_mask(image: np.ndarray, mask: np.ndarray,
                   percentiles: tuple[float, float] = CLIP_PERCENTILES) -> tuple[np.ndarray, dict[str, list[float]]]:
    """Clip each channel to its in-mask percentiles, then z-score it inside the mask.

    Args:
        image: float32 ``(C, X, Y, Z)``.
        mask: bool ``(X, Y, Z)``, non-empty.
        percentiles: lower/upper clipping percentiles (Isensee et al. 2017 style).

    Returns:
        float32 ``(C, X, Y, Z)`` with mean 0 / std 1 inside the mask and 0 outside, and the
        statistics ``{"clip_low", "clip_high", "mean", "std"}`` (one value per channel).
    """
    out = np.zeros(image.shape, dtype=np.float32)
    stats: dict[str, list[float]] = {"clip_low": [], "clip_high": [], "mean": [], "std": []}
    for c in range(image.shape[0]):
        values = image[c][mask]
        low, high = np.percentile(values, percentiles)
        values = np.clip(values, low, high)
        mean, std = float(values.mean()), float(values.std())
        std = std if std > 1e-8 else 1.0  # a constant channel becomes 0, not NaN
        out[c][mask] = (values - mean) / std
        for key, v in zip(stats, (low, high, mean, std), strict=True):
            stats[key].append(float(v))
    return out, stats


def resampled_shape(shape: Sequence[int], spacing: Sequence[float], target_mm: float) -> tuple[int, int, int]:
    """Grid size after resampling ``shape`` at ``spacing`` mm to isotropic ``target_mm``."""
    return tuple(max(1, round(n * s / target_mm)) for n, s in zip(shape, spacing, strict=True))  # type: ignore[return-value]


def resample_image(image: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """Trilinear resampling (voxel centres aligned, ``align_corners=False``).

    Args:
        image: float ``(C, X, Y, Z)``.
        shape: target spatial shape.

    Returns:
        float32 ``(C, *shape)``.
    """
    import torch
    import torch.nn.functional as F

    if tuple(image.shape[1:]) == tuple(shape):
        return np.ascontiguousarray(image, dtype=np.float32)
    t = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))[None]
    return F.interpolate(t, size=tuple(shape), mode="trilinear", align_corners=False)[0].numpy()


def resample_labels(label: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """Resample a label map by trilinear interpolation of its one-hot encoding, then argmax.

    Smoother and less biased against thin structures than nearest neighbour.

    Args:
        label: integer ``(X, Y, Z)`` with values in 0..255.
        shape: target spatial shape.

    Returns:
        uint8 ``(*shape)``.
    """
    if tuple(label.shape) == tuple(shape):
        return np.ascontiguousarray(label, dtype=np.uint8)
    present = [int(v) for v in np.unique(label)]
    best = np.full(tuple(shape), -1.0, dtype=np.float32)
    out = np.zeros(tuple(shape), dtype=np.uint8)
    for value in present:  # one class at a time keeps memory at two volumes
        prob = resample_image((label == value)[None].astype(np.float32), shape)[0]
        better = prob > best
        best[better] = prob[better]
        out[better] = value
    return out


def _grid_affine(canonical_affine: np.ndarray, bbox: BBox, cropped: Sequence[int],
                 shape: Sequence[int]) -> np.ndarray:
    """Voxel-to-world affine of the preprocessed grid (crop offset, then zoom with centred voxels)."""
    offset = np.eye(4)
    offset[:3, 3] = [b[0] for b in bbox]
    scale = np.array([c / s for c, s in zip(cropped, shape, strict=True)])
    zoom = np.eye(4)
    zoom[:3, :3] = np.diag(scale)
    zoom[:3, 3] = (scale - 1.0) / 2.0
    return canonical_affine @ offset @ zoom


def preprocess_case(case: Case, spacing_mm: float | None = None, margin: int = CROP_MARGIN,
                    percentiles: tuple[float, float] = CLIP_PERCENTILES) -> PreprocessedCase:
    """Crop to the brain, z-score each channel inside it, and optionally resample.

    Args:
        case: a case from :func:`glioseg.data.nifti.read_case` (image float32 ``(4, X, Y, Z)``).
        spacing_mm: isotropic target spacing in mm, or None to keep the case's spacing.
        margin: voxels kept around the brain bounding box.
        percentiles: clipping percentiles before the z-score.

    Returns:
        The preprocessed case; ``meta`` holds ``case_id``, ``bbox`` (half-open, canonical grid),
        ``canonical_shape``, ``cropped_shape``, ``shape``, ``spacing`` (original canonical),
        ``target_spacing``, ``effective_spacing``, ``normalization``, ``label_scheme``,
        ``geometry`` and ``affine`` (world affine of the preprocessed grid).

    Raises:
        CaseError: the image is empty, or the spacing is not positive.
    """
    if spacing_mm is not None and not spacing_mm > 0:
        raise CaseError(case.case_id, f"target spacing must be > 0 mm, got {spacing_mm}")
    bbox, image, label, stats = _crop_and_normalize(case, margin, percentiles)
    spacing = case.geometry.canonical_spacing
    cropped_shape = tuple(image.shape[1:])
    shape = cropped_shape if spacing_mm is None else resampled_shape(cropped_shape, spacing, spacing_mm)
    if shape != cropped_shape:
        image = resample_image(image, shape)
        label = resample_labels(label, shape) if label is not None else None
    meta = {
        "case_id": case.case_id,
        "version": PREPROCESS_VERSION,
        "bbox": [list(b) for b in bbox],
        "canonical_shape": list(case.geometry.canonical_shape),
        "cropped_shape": list(cropped_shape),
        "shape": list(shape),
        "spacing": list(spacing),
        "target_spacing": spacing_mm,
        "effective_spacing": [c * s / n for c, s, n in zip(cropped_shape, spacing, shape, strict=True)],
        "normalization": {"method": "zscore_in_brain", "percentiles": list(percentiles),
                          "channels": list(MODALITIES), **stats},
        "label_scheme": case.scheme.name if case.scheme is not None else None,
        "has_label": label is not None,
        **_geometry_meta(case.geometry, bbox, cropped_shape, shape),
    }
    return PreprocessedCase(case.case_id, image.astype(np.float32, copy=False), label, meta)


def _crop_and_normalize(case: Case, margin: int, percentiles: tuple[float, float]
                        ) -> tuple[BBox, np.ndarray, np.ndarray | None, dict[str, list[float]]]:
    """Crop image and label to the brain box and z-score the image inside the brain.

    Returns:
        ``(bbox, image float32 (4, x, y, z), label uint8 (x, y, z) or None, statistics)``.

    Raises:
        CaseError: the image is zero everywhere.
    """
    mask = brain_mask(case.image)
    try:
        bbox = brain_bbox(mask, margin)
    except ValueError as exc:
        raise CaseError(case.case_id, f"{exc}; check the image files") from exc
    image, stats = zscore_in_mask(crop(case.image, bbox), crop(mask, bbox), percentiles)
    label = crop(case.label, bbox) if case.label is not None else None
    return bbox, image, label, stats


def _geometry_meta(geo: Geometry, bbox: BBox, cropped_shape: Sequence[int], shape: Sequence[int]
                   ) -> dict[str, Any]:
    """The ``geometry`` (on-disk case) and ``affine`` (preprocessed grid) entries of the meta."""
    return {
        "geometry": {"shape": list(geo.shape), "axcodes": list(geo.axcodes),
                     "affine": geo.affine.tolist(), "canonical_affine": geo.canonical_affine.tolist()},
        "affine": _grid_affine(geo.canonical_affine, bbox, cropped_shape, shape).tolist(),
    }
