"""Input checks: find everything wrong with a dataset's cases before any work is done on them.

Each file is opened and read once. Every problem becomes a
:class:`~glioseg.data.reports.Finding` (an error or a warning) whose one-line message names the
case, the file and what to do; a broken case never stops the check of the others.
:func:`check_dataset` decides the label scheme once for the whole dataset
(:func:`glioseg.data.schemes.decide_dataset_scheme`: the layout, dataset.json, the values of all
segmentations together and their anatomy), and refuses contradictions. Images the model cannot
serve (background not 0, not skull-stripped; :mod:`glioseg.data.brain`) get warnings whose checks
are in :data:`UNSERVABLE_CHECKS`. The report types and their renderings are in
:mod:`glioseg.data.reports`.
"""

from __future__ import annotations

import time
import zlib
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np

from glioseg.data.brain import BACKGROUND_CHECK, SKULL_CHECK, unservable_problems
from glioseg.data.layouts import find_cases
from glioseg.data.naming import DatasetError
from glioseg.data.nifti import (
    AFFINE_TOLERANCE_MM,
    MODALITIES,
    CaseError,
    CaseFiles,
    Geometry,
    ImageSource,
    load_nifti,
)
from glioseg.data.reports import CaseReport, DatasetReport
from glioseg.data.schemes import decide_dataset_scheme
from glioseg.labels import ED, NCR, LabelScheme, LabelSchemeError, get_scheme
from glioseg.scheme_rules import SchemeDecision, label_stats, looks_swapped

EXPECTED_SPACING_MM = 1.0
SPACING_TOLERANCE = 0.25  # warn when a voxel side is off 1 mm by more than this fraction
# warnings for inputs the model cannot serve (background not 0, not skull-stripped): predict refuses
# cases with one of these unless forced
UNSERVABLE_CHECKS: frozenset[str] = frozenset({BACKGROUND_CHECK, SKULL_CHECK})


@dataclass
class _Volume:
    """A file read once: its geometry, raw voxels (None when they could not be read) and scaling."""

    path: Path
    geometry: Geometry
    data: np.ndarray | None
    shape: tuple[int, ...]
    slope: float = 1.0
    inter: float = 0.0


def _open_image(path: Path, report: CaseReport) -> nib.Nifti1Image | None:
    """Open one file and check it is at least 3-D; record why not on failure."""
    try:
        img = load_nifti(path, report.case_id)
    except CaseError as exc:
        check = "missing-file" if not path.is_file() else "empty-file" if "0 bytes" in str(exc) else "unreadable"
        report.error(check, exc.message, path)
        return None
    shape = tuple(int(s) for s in img.shape)
    if len(shape) < 3:
        report.error("dimensions", f"{len(shape)}-D image of shape {shape}; expected a 3-D volume "
                     "(X, Y, Z): re-export the full volume", path)
        return None
    return img


def _raw_voxels(img: nib.Nifti1Image, path: Path, report: CaseReport) -> np.ndarray | None:
    """All voxels, unscaled (no float64 copy of integer data; NaN/inf can only hide in float files)."""
    try:
        return np.asarray(img.dataobj.get_unscaled()) if hasattr(img.dataobj, "get_unscaled") \
            else np.asarray(img.dataobj)
    except (EOFError, OSError, ValueError, zlib.error) as exc:
        report.error("truncated", f"data are truncated or corrupt ({type(exc).__name__}: {exc}); "
                     "re-export or re-download the file", path)
        return None


def _read_file(path: Path, report: CaseReport) -> _Volume | None:
    """Open and read one file completely; record why not on failure."""
    img = _open_image(path, report)
    if img is None:
        return None
    try:
        geometry = Geometry.from_image(img)
    except ValueError as exc:
        report.error("affine", str(exc), path)
        return None
    slope, inter = (float(getattr(img.dataobj, name, default)) for name, default in (("slope", 1.0), ("inter", 0.0)))
    return _Volume(path, geometry, _raw_voxels(img, path, report), tuple(int(s) for s in img.shape), slope, inter)


def _channel(volume: _Volume, index: int | None, name: str, report: CaseReport) -> np.ndarray | None:
    """The 3-D array of a modality from its file (one volume of a 4-D file when ``index`` is set)."""
    shape = volume.shape
    if index is None:
        if len(shape) == 4 and shape[3] == 1:
            return None if volume.data is None else volume.data[..., 0]
        if len(shape) != 3:
            report.error("dimensions", f"{name}: {len(shape)}-D image of shape {shape}; expected a 3-D "
                         "volume: give one 3-D file per modality", volume.path)
            return None
        return volume.data
    if len(shape) != 4 or index >= shape[3]:
        report.error("dimensions", f"{name}: expected a 4-D file with >= {index + 1} volumes, got shape "
                     f"{shape}; check the dataset.json channel order", volume.path)
        return None
    return None if volume.data is None else volume.data[..., index]


def _check_values(data: np.ndarray, name: str, path: Path, report: CaseReport) -> None:
    """NaN/inf and all-zero checks of one image channel."""
    if data.dtype.kind == "f":
        bad = int(np.count_nonzero(~np.isfinite(data)))
        if bad:
            report.error("nan", f"{name} has {bad} NaN/inf voxels; replace them (e.g. by 0) and re-export",
                         path)
    if not data.any():
        report.error("all-zero", f"{name} is all zeros; the file holds no image, re-export it", path)


def _check_geometry(geo: Geometry, ref: tuple[str, Geometry], name: str, path: Path,
                    report: CaseReport, atol: float) -> None:
    """Shape and affine of a modality (or the segmentation) against the reference modality."""
    ref_name, ref_geo = ref
    if geo.shape != ref_geo.shape:
        report.error("shape-mismatch", f"{name} shape {geo.shape} differs from {ref_name} shape "
                     f"{ref_geo.shape}; co-register / resample it onto the {ref_name} grid", path)
    elif not np.allclose(geo.affine, ref_geo.affine, rtol=0.0, atol=atol):
        diff = float(np.abs(geo.affine - ref_geo.affine).max())
        report.error("affine-mismatch", f"{name} affine differs from {ref_name}'s by up to {diff:.3g} "
                     f"(tolerance {atol:g}); co-register the modalities or fix the header", path)


def _check_spacing(geo: Geometry, path: Path, report: CaseReport) -> None:
    spacing = geo.spacing
    report.spacing = spacing
    if any(abs(s - EXPECTED_SPACING_MM) > SPACING_TOLERANCE * EXPECTED_SPACING_MM for s in spacing):
        report.warn("spacing", f"voxel size {tuple(round(s, 3) for s in spacing)} mm is not ~1 mm "
                    "isotropic like BraTS; resample to 1 mm for models trained on BraTS", path)


def _check_modality_files(files: CaseFiles, report: CaseReport) -> None:
    """Error when any of the four modalities has no file."""
    missing = [m for m in MODALITIES if m not in files.images]
    if missing:
        folder = next(iter(files.images.values())).path.parent if files.images else None
        report.error("missing-modality", f"missing modalities {missing}; every case needs "
                     f"{list(MODALITIES)} (add the files or remove the case)", folder)


def _check_modality(name: str, src: ImageSource, volume: _Volume, ref: tuple[str, Geometry] | None,
                    report: CaseReport, atol: float) -> tuple[str, Geometry]:
    """Spacing (first readable modality) or geometry against it, then the values of one modality.

    Returns:
        The reference ``(modality, geometry)``: ``ref``, or this modality's when ``ref`` is None.
    """
    if ref is None:
        ref = (name, volume.geometry)
        _check_spacing(volume.geometry, src.path, report)
    elif src.volume is None:
        _check_geometry(volume.geometry, ref, name, src.path, report, atol)
    data = _channel(volume, src.volume, name, report)
    if data is not None:
        _check_values(data, name, src.path, report)
        _check_servable(data, volume, name, src.path, report)
    return ref


def _check_servable(data: np.ndarray, volume: _Volume, name: str, path: Path, report: CaseReport) -> None:
    """Warnings (:data:`UNSERVABLE_CHECKS`) for a background that is not 0 or no skull-stripping."""
    if data.ndim != 3 or not data.any():
        return  # all zeros is an error already
    for check, message in unservable_problems(data, volume.geometry.spacing, name, volume.slope, volume.inter):
        report.warn(check, message, path)


def _check_images(files: CaseFiles, report: CaseReport, atol: float) -> Geometry | None:
    """Check the four modalities; returns the reference geometry (first readable modality)."""
    _check_modality_files(files, report)
    volumes: dict[Path, _Volume | None] = {}  # one read per file, also for 4-D stacks
    ref: tuple[str, Geometry] | None = None
    for name in (m for m in MODALITIES if m in files.images):
        src = files.images[name]
        if src.path not in volumes:
            volumes[src.path] = _read_file(src.path, report)
        volume = volumes[src.path]
        if volume is not None:
            ref = _check_modality(name, src, volume, ref, report, atol)
    if ref is None:
        return None
    report.shape = ref[1].shape
    return ref[1]


def _check_label_values(data: np.ndarray, path: Path, report: CaseReport) -> None:
    """Integer values and their stats (recorded in the report) and a non-empty segmentation."""
    if data.dtype.kind == "f":
        values = np.unique(data)
        if not (np.isfinite(values).all() and np.array_equal(values, np.round(values))):
            report.error("label-values", "segmentation holds non-integer values; save integer labels", path)
            return
    report.label_stats = label_stats(data)
    report.label_values = tuple(sorted(report.label_stats.values))
    if not any(report.label_values):
        report.warn("empty-seg", "segmentation is empty (background only); check it is the right file", path)


def _check_label(files: CaseFiles, ref: Geometry | None, report: CaseReport, atol: float) -> None:
    """Read the segmentation once; check geometry, integer values and emptiness."""
    if files.label is None:
        return
    report.label_path = files.label
    volume = _read_file(files.label, report)
    if volume is None:
        return
    data = _channel(volume, None, "segmentation", report)
    if ref is not None:
        _check_geometry(volume.geometry, ("image", ref), "segmentation", files.label, report, atol)
    if data is not None:
        _check_label_values(data, files.label, report)


def inspect_case(files: CaseFiles, atol: float = AFFINE_TOLERANCE_MM) -> CaseReport:
    """Read every file of a case once and record all problems except the label scheme.

    Args:
        files: the case's files.
        atol: tolerance on affine differences between modalities (mm / direction units).

    Returns:
        The report; never raises for a problem of the case's files.
    """
    start = time.perf_counter()
    report = CaseReport(files.case_id, files.layout, scheme_hint=files.scheme_hint)
    for problem in files.problems:
        report.error("duplicate", problem)
    try:
        ref = _check_images(files, report, atol)
        _check_label(files, ref, report, atol)
    except Exception as exc:  # noqa: BLE001 -- isolate the case whatever went wrong
        report.error("internal", f"unexpected {type(exc).__name__}: {exc}; please report this")
    report.seconds = time.perf_counter() - start
    return report


def apply_scheme(report: CaseReport, scheme: LabelScheme) -> None:
    """Check a case's label values against a scheme (error for values it does not define)."""
    report.scheme = scheme.name
    if report.label_values is None:
        return
    unexpected = sorted(set(report.label_values) - scheme.file_values)
    if unexpected:
        report.error("label-values", f"unexpected label values {unexpected} for scheme {scheme.name} "
                     f"({scheme.description}); fix the segmentation, or pass --label-scheme if the "
                     "dataset uses another scheme", report.label_path)
    elif report.label_stats is not None and looks_swapped(scheme, [report.label_stats]):
        ncr, ed = scheme.to_file[NCR], scheme.to_file[ED]
        report.warn("label-anatomy", f"read as {scheme.name}, labels {ncr} (NCR) and {ed} (edema) look swapped in "
                    f"this segmentation: {ncr} lies on the tumour's outer border more than {ed}; check the file "
                    "(the other cases decided the scheme)", report.label_path)


def _settle_schemes(cases: Sequence[CaseFiles], reports: Sequence[CaseReport],
                    label_scheme: str | LabelScheme | None) -> tuple[list[str], SchemeDecision | None]:
    """Decide the scheme once (:func:`~glioseg.data.schemes.decide_dataset_scheme`) and check
    every case against it.

    Returns:
        ``(dataset-level errors, the decision or None when refused)``.
    """
    stats = {r.case_id: r.label_stats for r in reports if r.label_path is not None}
    try:
        decision = decide_dataset_scheme(cases, label_scheme, stats=stats)
    except LabelSchemeError as exc:
        for report in reports:
            if report.label_values is not None:
                report.error("label-scheme", str(exc), report.label_path)
        return [str(exc)], None
    if decision.scheme is not None:
        for report in reports:
            apply_scheme(report, decision.scheme)
    return [], decision


def check_case(files: CaseFiles, label_scheme: str | LabelScheme | None = None,
               atol: float = AFFINE_TOLERANCE_MM) -> CaseReport:
    """Check one case: files, dimensions, geometry, values, segmentation and its scheme.

    Args:
        files: the case's files.
        label_scheme: scheme of the segmentation (e.g. the dataset's decision); decided from this
            case alone when None.
        atol: tolerance on affine differences between modalities.

    Returns:
        The case's report (``report.ok`` False when the case cannot be used).
    """
    report = inspect_case(files, atol)
    _settle_schemes([files], [report], label_scheme)
    return report


def check_dataset(root: Path | str, label_scheme: str | LabelScheme | None = None,
                  layout: str | None = None, workers: int = 1,
                  atol: float = AFFINE_TOLERANCE_MM) -> DatasetReport:
    """Check every case of a dataset; the label scheme is decided once for all cases.

    Args:
        root: dataset folder (any layout) or one case folder.
        label_scheme: scheme of the segmentations; detected when None.
        layout: force a layout; detected when None.
        workers: threads reading cases in parallel (decompression releases the GIL).
        atol: tolerance on affine differences between modalities.

    Returns:
        The report; a dataset that cannot be read at all gives a report with ``errors`` set.
    """
    start = time.perf_counter()
    report = DatasetReport(Path(root), layout)
    try:
        cases = find_cases(root, layout)
        if label_scheme is not None:
            get_scheme(label_scheme)
    except (DatasetError, LabelSchemeError) as exc:
        report.errors.append(str(exc))
        return report
    report.layout = cases[0].layout
    report.cases = _inspect_all(cases, workers, atol)
    errors, decision = _settle_schemes(cases, report.cases, label_scheme)
    report.errors.extend(errors)
    if decision is not None:
        report.scheme = decision.scheme.name if decision.scheme is not None else None
        report.scheme_evidence = decision.evidence
    report.seconds = time.perf_counter() - start
    return report


def _inspect_all(cases: Sequence[CaseFiles], workers: int, atol: float) -> list[CaseReport]:
    if workers <= 1 or len(cases) <= 1:
        return [inspect_case(c, atol) for c in cases]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(lambda c: inspect_case(c, atol), cases))
