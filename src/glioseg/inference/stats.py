"""Tumour statistics of one prediction: the ``<ID>.json`` written next to every label map.

Volumes in ml of the three labels (NCR, ED, ET) and the two composite regions (TC = NCR + ET,
WT = NCR + ED + ET), the number of connected components of each (26-connectivity, as the BraTS
lesion-wise metrics count lesions), each one's bounding box in world coordinates (NIfTI RAS mm and
DICOM LPS mm, of the extreme voxel centres) and in voxel indices of the written label map, the
model's name and sha256, and the time each step took. :data:`SCHEMA` names the layout, so that a
reader can refuse a file it does not know.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import numpy as np

from glioseg.data.nifti import Geometry
from glioseg.labels import ED, ET, NCR, RC
from glioseg.utils import atomic_write, bounding_box

SCHEMA = "glioseg.prediction-stats/1"
CONNECTIVITY: Literal[26] = 26
STATS_REGIONS: dict[str, tuple[int, ...]] = {"NCR": (NCR,), "ED": (ED,), "ET": (ET,), "TC": (NCR, ET),
                                             "WT": (NCR, ED, ET)}
_LPS_FROM_RAS = np.diag([-1.0, -1.0, 1.0])


def stats_path(out: Path, case_id: str) -> Path:
    """``OUT/<ID>.json``, next to ``OUT/<ID>.nii.gz``."""
    return Path(out) / f"{case_id}.json"


def voxel_volume_ml(geometry: Geometry) -> float:
    """Volume of one voxel in ml (|det| of the affine's 3x3 part, mm^3 / 1000): right for oblique grids too."""
    return float(abs(np.linalg.det(geometry.affine[:3, :3]))) / 1000.0


def count_components(mask: np.ndarray) -> int:
    """Number of 26-connected components of a bool mask ``(X, Y, Z)``; 0 for an empty mask."""
    import cc3d

    if not mask.any():
        return 0
    _, n = cc3d.connected_components(mask.astype(np.uint8, copy=False), connectivity=CONNECTIVITY,
                                     return_N=True)
    return int(n)


def world_box(mask: np.ndarray, geometry: Geometry) -> dict[str, Any] | None:
    """Bounding box of a canonical mask in on-disk voxel indices and in world coordinates.

    Args:
        mask: bool ``(X, Y, Z)`` on the canonical grid of ``geometry``.
        geometry: the case's geometry.

    Returns:
        ``{"voxels": {"min", "max"}, "ras_mm": {"min", "max"}, "lps_mm": {"min", "max"}}``: voxel
        indices (inclusive) of the written label map ``(I, J, K)``, and the axis-aligned world box
        of the extreme voxel centres (for an oblique grid, the box of the voxel box's 8 corners);
        None for an empty mask.
    """
    box = bounding_box(geometry.from_canonical(mask.astype(np.uint8, copy=False)))
    if box is None:
        return None
    low = np.array([s.start for s in box], dtype=np.float64)
    high = np.array([s.stop - 1 for s in box], dtype=np.float64)
    corners = np.array([[hi if (c >> a) & 1 else lo for a, (lo, hi) in enumerate(zip(low, high, strict=True))]
                        for c in range(8)])
    ras = corners @ geometry.affine[:3, :3].T + geometry.affine[:3, 3]
    lps = ras @ _LPS_FROM_RAS

    def pair(points: np.ndarray) -> dict[str, list[float]]:
        return {"min": [round(float(v), 3) for v in points.min(axis=0)],
                "max": [round(float(v), 3) for v in points.max(axis=0)]}

    return {"voxels": {"min": low.astype(int).tolist(), "max": high.astype(int).tolist()},
            "ras_mm": pair(ras), "lps_mm": pair(lps)}


def region_stats(labels: np.ndarray, geometry: Geometry) -> dict[str, dict[str, Any]]:
    """Voxels, ml, connected components and bounding box of NCR, ED, ET, TC and WT (and RC when present).

    Args:
        labels: uint8 ``(X, Y, Z)`` canonical labels on the canonical grid of ``geometry``.
        geometry: the case's geometry.

    Returns:
        Region name -> ``{"voxels", "volume_ml", "components", "bbox"}`` (``bbox`` as :func:`world_box`).
    """
    if tuple(labels.shape) != geometry.canonical_shape:
        raise ValueError(f"label map shape {labels.shape} != case shape {geometry.canonical_shape}")
    regions = dict(STATS_REGIONS)
    if (labels == RC).any():
        regions["RC"] = (RC,)
    ml = voxel_volume_ml(geometry)
    out: dict[str, dict[str, Any]] = {}
    for name, values in regions.items():
        mask = np.isin(labels, values)
        voxels = int(np.count_nonzero(mask))
        out[name] = {"voxels": voxels, "volume_ml": round(voxels * ml, 4), "components": count_components(mask),
                     "bbox": world_box(mask, geometry)}
    return out


def prediction_stats(case_id: str, labels: np.ndarray, geometry: Geometry, *, label_map: str,
                     model: Mapping[str, Any] | None = None,
                     timings: Mapping[str, float] | None = None) -> dict[str, Any]:
    """The statistics document of one prediction.

    Args:
        case_id: the case.
        labels: uint8 ``(X, Y, Z)`` canonical labels on the canonical grid of ``geometry``.
        geometry: the case's geometry (that of the written label map).
        label_map: file name of the label map the statistics describe (``<ID>.nii.gz``).
        model: ``{"name", "sha256", ...}`` of the model (:func:`glioseg.artifacts.bundles.model_identity`),
            or None when unknown.
        timings: seconds per step (read, preprocess, network, ...).

    Returns:
        A JSON-serialisable dict (see the module docstring and :data:`SCHEMA`).
    """
    model_info = None if model is None else {"name": model.get("name"), "sha256": model.get("sha256"),
                                             "kind": model.get("kind")}
    return {
        "schema": SCHEMA, "case_id": case_id, "label_map": label_map,
        "grid": {"shape": list(geometry.shape), "spacing_mm": [round(s, 6) for s in geometry.spacing],
                 "orientation": "".join(geometry.axcodes), "voxel_ml": voxel_volume_ml(geometry)},
        "connectivity": CONNECTIVITY,
        "regions": region_stats(labels, geometry),
        "model": model_info,
        "timings_s": {k: round(float(v), 4) for k, v in (timings or {}).items()},
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


_NUMBER_LIST = re.compile(r"\[\s*([-+0-9.eE,\s]+?)\s*\]")


def write_stats(stats: Mapping[str, Any], path: Path | str) -> Path:
    """Write a statistics document as indented JSON (lists of numbers on one line), atomically."""
    text = json.dumps(stats, indent=2)
    text = _NUMBER_LIST.sub(lambda m: "[" + ", ".join(v.strip() for v in m.group(1).split(",")) + "]", text)
    return atomic_write(Path(path), lambda tmp: tmp.write_text(text + "\n"))
