"""Brain bounding-box crop, per-channel z-score inside the brain, optional resampling, cache.

A preprocessed dataset is a folder::

    OUT/dataset.json                 cases, spacing, label scheme, preprocessing parameters
    OUT/<case_id>/image.npy          float32 (4, x, y, z), z-scored, background 0
    OUT/<case_id>/label.npy          uint8 (x, y, z) canonical labels (absent without a label)
    OUT/<case_id>/fg.npz             foreground voxel coordinates per canonical class (sampling)
    OUT/<case_id>/meta.json          bbox, shapes, spacings, statistics, geometry, sources

Images are stored as float32 ``.npy`` so that they can be memory-mapped and sliced without a
conversion per patch; a 1 mm BraTS case takes ~50 MB, so float16 would save disk only.
:func:`restore_to_case_grid` is the inverse of the crop (exact) and of the resampling.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from types import EllipsisType
from typing import Any, Literal

import numpy as np

from glioseg.data.nifti import MODALITIES, Case, CaseError, CaseFiles, atomic_write, failure_message, read_case

PREPROCESS_VERSION = 1
CLIP_PERCENTILES: tuple[float, float] = (0.5, 99.5)
CROP_MARGIN = 2
FG_LOCATIONS_MAX = 50_000
SPACING_TOLERANCE_MM = 1e-3

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


@dataclass
class CaseResult:
    """Outcome of preprocessing one case in a batch: ``status`` is done, skipped or failed."""

    case_id: str
    status: str
    seconds: float = 0.0
    error: str | None = None


@dataclass
class DatasetResult:
    """Outcome of :func:`preprocess_dataset`."""

    results: list[CaseResult] = field(default_factory=list)

    @property
    def failed(self) -> list[CaseResult]:
        """Cases that raised an error."""
        return [r for r in self.results if r.status == "failed"]


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
    if not mask.any():
        raise ValueError("the image is zero everywhere in every modality; nothing to crop to")
    box = []
    for axis in range(3):
        other = tuple(a for a in range(3) if a != axis)
        hit = np.flatnonzero(mask.any(axis=other))
        box.append((max(int(hit[0]) - margin, 0), min(int(hit[-1]) + 1 + margin, mask.shape[axis])))
    return tuple(box)  # type: ignore[return-value]


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
    mask = brain_mask(case.image)
    try:
        bbox = brain_bbox(mask, margin)
    except ValueError as exc:
        raise CaseError(case.case_id, f"{exc}; check the image files") from exc
    cmask = crop(mask, bbox)
    image, stats = zscore_in_mask(crop(case.image, bbox), cmask, percentiles)
    label = crop(case.label, bbox) if case.label is not None else None
    spacing = case.geometry.canonical_spacing
    cropped_shape = tuple(image.shape[1:])
    shape = cropped_shape if spacing_mm is None else resampled_shape(cropped_shape, spacing, spacing_mm)
    if shape != cropped_shape:
        image = resample_image(image, shape)
        label = resample_labels(label, shape) if label is not None else None
    geo = case.geometry
    meta = {
        "case_id": case.case_id,
        "version": PREPROCESS_VERSION,
        "bbox": [list(b) for b in bbox],
        "canonical_shape": list(geo.canonical_shape),
        "cropped_shape": list(cropped_shape),
        "shape": list(shape),
        "spacing": list(spacing),
        "target_spacing": spacing_mm,
        "effective_spacing": [c * s / n for c, s, n in zip(cropped_shape, spacing, shape, strict=True)],
        "normalization": {"method": "zscore_in_brain", "percentiles": list(percentiles),
                          "channels": list(MODALITIES), **stats},
        "label_scheme": case.scheme.name if case.scheme is not None else None,
        "has_label": label is not None,
        "geometry": {"shape": list(geo.shape), "axcodes": list(geo.axcodes),
                     "affine": geo.affine.tolist(), "canonical_affine": geo.canonical_affine.tolist()},
        "affine": _grid_affine(geo.canonical_affine, bbox, cropped_shape, shape).tolist(),
    }
    return PreprocessedCase(case.case_id, image.astype(np.float32, copy=False), label, meta)


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


def foreground_locations(label: np.ndarray, max_per_class: int = FG_LOCATIONS_MAX,
                         seed: int = 0) -> dict[str, np.ndarray]:
    """Voxel coordinates of each foreground class, subsampled for a small cache.

    Args:
        label: uint8 canonical labels ``(x, y, z)``.
        max_per_class: keep at most this many coordinates per class (random, seeded).
        seed: subsampling seed.

    Returns:
        ``{"<class>": int32 (n, 3)}`` for each class > 0 present.
    """
    rng = np.random.default_rng(seed)
    out = {}
    for value in np.unique(label):
        if value == 0:
            continue
        coords = np.argwhere(label == value).astype(np.int32)
        if len(coords) > max_per_class:
            coords = coords[np.sort(rng.choice(len(coords), max_per_class, replace=False))]
        out[str(int(value))] = coords
    return out


def source_stats(files: CaseFiles) -> dict[str, list[int]]:
    """Size and mtime (ns) of each of a case's files, keyed by path, for up-to-date checks."""
    paths = sorted({str(s.path) for s in files.images.values()} | ({str(files.label)} if files.label else set()))
    out = {}
    for p in paths:
        st = os.stat(p)
        out[p] = [int(st.st_size), int(st.st_mtime_ns)]
    return out


def _params(spacing_mm: float | None, label_scheme: str | None) -> dict[str, Any]:
    return {"version": PREPROCESS_VERSION, "target_spacing": spacing_mm,
            "requested_label_scheme": label_scheme, "percentiles": list(CLIP_PERCENTILES),
            "margin": CROP_MARGIN}


def save_preprocessed(pc: PreprocessedCase, root: Path | str, extra_meta: dict[str, Any] | None = None) -> Path:
    """Write a preprocessed case into ``root/<case_id>/`` atomically (temp folder + rename).

    Returns:
        The case folder.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    final = root / pc.case_id
    tmp = Path(tempfile.mkdtemp(prefix=f".{pc.case_id}.", suffix=".tmp", dir=root))
    try:
        np.save(tmp / "image.npy", pc.image)
        if pc.label is not None:
            np.save(tmp / "label.npy", pc.label)
            np.savez(tmp / "fg.npz", allow_pickle=False, **foreground_locations(pc.label))
        (tmp / "meta.json").write_text(json.dumps({**pc.meta, **(extra_meta or {})}, indent=1))
        if final.exists():  # replace a stale case: move it aside first so a crash leaves one of them
            old = root / f".{pc.case_id}.old"
            shutil.rmtree(old, ignore_errors=True)
            final.rename(old)
            tmp.rename(final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def read_meta(root: Path | str, case_id: str) -> dict[str, Any]:
    """The ``meta.json`` of a preprocessed case.

    Raises:
        PreprocessError: missing or unreadable.
    """
    path = Path(root) / case_id / "meta.json"
    try:
        return json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise PreprocessError(f"case {case_id} [{path}]: not preprocessed; run `glioseg preprocess`") from exc
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise PreprocessError(f"case {case_id} [{path}]: corrupt meta.json ({exc}); delete the case "
                              "folder and run `glioseg preprocess` again") from exc


def load_preprocessed(root: Path | str, case_id: str, mmap: bool = True) -> PreprocessedCase:
    """Load a preprocessed case.

    Args:
        root: preprocessed dataset folder.
        case_id: case identifier (a sub-folder of ``root``).
        mmap: memory-map the arrays (read-only) instead of reading them.

    Returns:
        The case: image float32 ``(4, x, y, z)``, label uint8 ``(x, y, z)`` or None, meta.

    Raises:
        PreprocessError: the case is missing or incomplete.
    """
    meta = read_meta(root, case_id)
    folder = Path(root) / case_id
    mode: Literal["r"] | None = "r" if mmap else None
    try:
        image = np.load(folder / "image.npy", mmap_mode=mode)
        label = np.load(folder / "label.npy", mmap_mode=mode) if meta.get("has_label") else None
    except (FileNotFoundError, ValueError, OSError) as exc:
        raise PreprocessError(f"case {case_id} [{folder}]: incomplete or corrupt arrays ({exc}); "
                              "delete the folder and run `glioseg preprocess` again") from exc
    if tuple(image.shape[1:]) != tuple(meta["shape"]):
        raise PreprocessError(f"case {case_id} [{folder}]: image shape {image.shape} != meta shape "
                              f"{meta['shape']}; re-run `glioseg preprocess`")
    return PreprocessedCase(case_id, image, label, meta)


def list_preprocessed(root: Path | str) -> list[str]:
    """IDs of the complete preprocessed cases under ``root``, sorted.

    Raises:
        PreprocessError: ``root`` is not a folder.
    """
    root = Path(root)
    if not root.is_dir():
        raise PreprocessError(f"{root}: not a folder; run `glioseg preprocess DATASET {root}` first")
    return sorted(p.name for p in root.iterdir()
                  if p.is_dir() and not p.name.startswith(".") and (p / "meta.json").is_file()
                  and (p / "image.npy").is_file())


def is_up_to_date(root: Path | str, files: CaseFiles, spacing_mm: float | None,
                  label_scheme: str | None = None) -> bool:
    """Whether ``root/<case_id>`` exists, is complete and was made from the same files and settings."""
    folder = Path(root) / files.case_id
    try:
        meta = json.loads((folder / "meta.json").read_text())
        sources = source_stats(files)
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return False
    complete = (folder / "image.npy").is_file() and (not meta.get("has_label") or (folder / "label.npy").is_file())
    return complete and meta.get("sources") == sources and meta.get("params") == _params(spacing_mm, label_scheme)


def preprocess_files(files: CaseFiles, out: Path | str, spacing_mm: float | None = None,
                     label_scheme: str | None = None, force: bool = False) -> CaseResult:
    """Read, preprocess and save one case unless it is already up to date.

    Raises:
        CaseError: the case cannot be read or preprocessed.
    """
    start = time.perf_counter()
    if not force and is_up_to_date(out, files, spacing_mm, label_scheme):
        return CaseResult(files.case_id, "skipped")
    sources = source_stats(files)  # before reading: a file changed meanwhile makes it stale
    pc = preprocess_case(read_case(files, label_scheme), spacing_mm)
    save_preprocessed(pc, out, {"sources": sources, "params": _params(spacing_mm, label_scheme)})
    return CaseResult(files.case_id, "done", time.perf_counter() - start)


def _run_isolated(files: CaseFiles, out: Path, spacing_mm: float | None, label_scheme: str | None,
                  force: bool, one_thread: bool = False) -> CaseResult:
    """Preprocess one case, turning any error into a failed result (one bad case must not stop a batch)."""
    if one_thread:  # process-pool workers: parallelism comes from the processes
        import torch

        torch.set_num_threads(1)
    try:
        return preprocess_files(files, out, spacing_mm, label_scheme, force)
    except Exception as exc:  # noqa: BLE001 (isolate the case: report and let the batch go on)
        return CaseResult(files.case_id, "failed", error=failure_message(files.case_id, exc))


def write_dataset_json(out: Path | str, spacing_mm: float | None, label_scheme: str | None) -> Path:
    """Write ``out/dataset.json`` listing the complete cases and the settings."""
    out = Path(out)
    cases = list_preprocessed(out)
    schemes = sorted({s for c in cases if (s := read_meta(out, c).get("label_scheme"))})
    info = {"cases": cases, "n_cases": len(cases), "target_spacing": spacing_mm,
            "label_schemes": schemes, "requested_label_scheme": label_scheme,
            "channels": list(MODALITIES), "labels": "canonical (0 BG, 1 NCR, 2 ED, 3 ET, 4 RC)",
            "params": _params(spacing_mm, label_scheme)}
    return atomic_write(out / "dataset.json", lambda tmp: tmp.write_text(json.dumps(info, indent=1)))


def preprocess_dataset(cases: Sequence[CaseFiles], out: Path | str, spacing_mm: float | None = None,
                       workers: int = 1, label_scheme: str | None = None, force: bool = False,
                       on_result: Callable[[CaseResult], None] | None = None) -> DatasetResult:
    """Preprocess many cases in parallel; a failing case is reported and the others go on.

    Args:
        cases: the cases' files (:func:`glioseg.data.layouts.find_cases`).
        out: output folder.
        spacing_mm: isotropic target spacing, or None to keep the original.
        workers: processes; 1 runs in this process.
        label_scheme: scheme of the segmentations, detected when None.
        force: redo cases that are up to date.
        on_result: called with each case's result as it finishes (progress display).

    Returns:
        Per-case results (done / skipped / failed with message), in completion order.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    result = DatasetResult()

    def record(r: CaseResult) -> None:
        result.results.append(r)
        if on_result is not None:
            on_result(r)

    if workers <= 1:
        for files in cases:
            record(_run_isolated(files, out, spacing_mm, label_scheme, force))
    else:
        ctx = multiprocessing.get_context("spawn")  # no fork of a process that may hold torch threads
        with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
            futures = {pool.submit(_run_isolated, f, out, spacing_mm, label_scheme, force, True): f for f in cases}
            for fut in as_completed(futures):
                try:
                    record(fut.result())
                except Exception as exc:  # noqa: BLE001 (a worker died, e.g. out of memory)
                    record(CaseResult(futures[fut].case_id, "failed", error=f"worker crashed: {exc}"))
    write_dataset_json(out, spacing_mm, label_scheme)
    return result
