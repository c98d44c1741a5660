"""Radiomics features of one case and of a dataset, and the features CSV.

A case's features come from its canonical image ``(4, X, Y, Z)`` and a canonical label map
``(X, Y, Z)`` (ground truth, a given segmentation, or one predicted by the shipped model; see
:mod:`glioseg.radiomics.dataset`). The columns and their meaning are
:data:`glioseg.radiomics.catalog.FEATURES`; the computation is deterministic (no sampling, no
threads whose order matters), so the same inputs give the same CSV byte for byte.

Intensities are z-scored inside the brain with the preprocessing stage's own functions
(:func:`glioseg.preprocessing.normalize.brain_mask`, :func:`~glioseg.preprocessing.normalize.zscore_in_mask`).
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from glioseg.data.nifti import MODALITIES
from glioseg.labels import ED, ET, NCR
from glioseg.preprocessing.normalize import brain_mask, zscore_in_mask
from glioseg.radiomics.catalog import (
    FEATURE_NAMES,
    INTENSITY_REGIONS,
    RATIOS,
    SHAPE_REGIONS,
    TEXTURE_REGIONS,
    VOLUME_REGIONS,
)
from glioseg.radiomics.errors import RadiomicsError
from glioseg.radiomics.intensity import intensity_features
from glioseg.radiomics.location import location_features
from glioseg.radiomics.shape import shape_features
from glioseg.radiomics.texture import texture_features
from glioseg.utils import atomic_write

ID_COLUMN = "case_id"
SOURCE_COLUMN = "segmentation"  # where the label map came from: ground truth, a file, or the model


def region_masks(labels: np.ndarray) -> dict[str, np.ndarray]:
    """Canonical labels ``(X, Y, Z)`` -> bool masks of NCR, ED, ET, TC and WT."""
    ncr, ed, et = labels == NCR, labels == ED, labels == ET
    return {"NCR": ncr, "ED": ed, "ET": et, "TC": ncr | et, "WT": ncr | ed | et}


def case_features(image: np.ndarray, labels: np.ndarray, spacing: Sequence[float],
                  affine: np.ndarray) -> dict[str, float]:
    """Every feature of :data:`FEATURE_NAMES` for one case, in that order.

    Args:
        image: float32 ``(4, X, Y, Z)`` raw intensities, channels T1, T1ce, T2, FLAIR (canonical).
        labels: uint8 ``(X, Y, Z)`` canonical labels on the same grid.
        spacing: voxel size in mm along X, Y, Z.
        affine: 4x4 voxel-to-world affine of the canonical arrays.

    Returns:
        feature name -> value (finite floats).

    Raises:
        ValueError: the image is zero everywhere (no brain), or shapes differ.
    """
    if labels.shape != image.shape[1:]:
        raise ValueError(f"label map shape {labels.shape} differs from the image's {image.shape[1:]}")
    brain = brain_mask(image)
    if not brain.any():
        raise ValueError("the image is zero everywhere in every modality; no brain to measure")
    masks = region_masks(labels)
    masks["brain"] = brain
    normalised, _ = zscore_in_mask(image.astype(np.float32, copy=False), brain)
    out = _volumes(masks, spacing)
    for region in SHAPE_REGIONS:
        out.update({f"shape_{region}_{k}": v for k, v in shape_features(masks[region], spacing).items()})
    out.update({f"loc_WT_{k}": v for k, v in location_features(masks["WT"], brain, affine).items()})
    for region in INTENSITY_REGIONS:
        for c, modality in enumerate(MODALITIES):
            stats = intensity_features(normalised[c][masks[region]])
            out.update({f"int_{region}_{modality}_{k}": v for k, v in stats.items()})
    for region in TEXTURE_REGIONS:
        for c, modality in enumerate(MODALITIES):
            stats = texture_features(normalised[c], masks[region])
            out.update({f"glcm_{region}_{modality}_{k}": v for k, v in stats.items()})
    return {name: out[name] for name in FEATURE_NAMES}


def _volumes(masks: dict[str, np.ndarray], spacing: Sequence[float]) -> dict[str, float]:
    """Volumes in ml and the volume ratios (0 when the denominator is empty)."""
    voxel_ml = float(np.prod(spacing)) / 1000.0
    vols = {r: float(masks[r].sum()) * voxel_ml for r in (*VOLUME_REGIONS, "brain")}
    out = {f"vol_{r}_ml": v for r, v in vols.items()}
    out.update({f"ratio_{a}_{b}": vols[a] / vols[b] if vols[b] > 0 else 0.0 for a, b in RATIOS})
    return out


# ----------------------------------------------------------------------------- a dataset


@dataclass
class FeatureRow:
    """One case's features, or why it has none.

    Attributes:
        case_id: the case.
        source: the segmentation it was measured on.
        values: feature name -> value (empty when it failed).
        error: one line naming the case, the file and the fix, when it failed.
    """

    case_id: str
    source: str
    values: dict[str, float]
    error: str | None = None


def write_features_csv(rows: Iterable[FeatureRow], path: Path) -> Path:
    """Write the successful rows (``case_id, segmentation, <FEATURE_NAMES>``) atomically.

    Values are written with 10 significant digits, so the file is deterministic and readable.
    """
    good = [r for r in rows if r.error is None]

    def write(tmp: Path) -> None:
        with tmp.open("w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow([ID_COLUMN, SOURCE_COLUMN, *FEATURE_NAMES])
            for r in good:
                writer.writerow([r.case_id, r.source, *(format(r.values[n], ".10g") for n in FEATURE_NAMES)])

    return atomic_write(Path(path), write)


@dataclass
class FeatureTable:
    """A features CSV in memory.

    Attributes:
        case_ids: row order.
        names: feature columns (:data:`FEATURE_NAMES`).
        values: float64 ``(N, F)``.
        sources: each row's segmentation source.
    """

    case_ids: list[str]
    names: tuple[str, ...]
    values: np.ndarray
    sources: list[str]

    def column(self, name: str) -> np.ndarray:
        """Float ``(N,)`` values of one feature."""
        return self.values[:, self.names.index(name)]


def read_features_csv(path: Path | str) -> FeatureTable:
    """Read a features CSV written by :func:`write_features_csv` (``glioseg features``).

    Raises:
        RadiomicsError: missing file, missing columns, non-numeric or non-finite values, repeated IDs.
    """
    path = Path(path)
    if not path.is_file():
        raise RadiomicsError(f"{path}: features file not found; write it with `glioseg features -i DATA -o {path}`")
    try:
        with path.open(newline="") as fh:
            reader = csv.DictReader(fh)
            header = reader.fieldnames or []
            missing = [c for c in (ID_COLUMN, *FEATURE_NAMES) if c not in header]
            rows = [] if missing else list(reader)
    except (UnicodeDecodeError, csv.Error) as exc:
        raise RadiomicsError(f"{path}: not a text CSV ({type(exc).__name__}); give the features table "
                             "`glioseg features -o` wrote") from None
    if missing:
        raise RadiomicsError(f"{path}: not a glioseg features table (missing columns {_short(missing)}); "
                             "recreate it with `glioseg features` of this version")
    ids = [r[ID_COLUMN] for r in rows]
    repeated = sorted({i for i in ids if ids.count(i) > 1})
    if repeated:
        raise RadiomicsError(f"{path}: case IDs {repeated} appear more than once; keep one row per case")
    values = np.array([[_number(r, n, path) for n in FEATURE_NAMES] for r in rows], dtype=np.float64)
    return FeatureTable(ids, FEATURE_NAMES, values.reshape(len(rows), len(FEATURE_NAMES)),
                        [r.get(SOURCE_COLUMN) or "" for r in rows])


def _number(row: dict[str, str], name: str, path: Path) -> float:
    """One finite float cell; RadiomicsError naming the file, case and column otherwise."""
    try:
        value = float(row[name])
    except (TypeError, ValueError):
        value = math.nan
    if not math.isfinite(value):
        raise RadiomicsError(f"{path}: case {row[ID_COLUMN]}: column {name} is {row[name]!r}, not a finite number; "
                             "recreate the table with `glioseg features`")
    return value


def _short(names: Sequence[str], limit: int = 5) -> str:
    """``['a', 'b', ...]`` with at most ``limit`` names and the count of the rest."""
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")
