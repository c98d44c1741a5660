"""DICOM series <-> volumes with exact geometry.

- :func:`read_series`: the voxels and the exact voxel-to-world affine of a single-frame series
  (slices sorted along the slice normal; one orientation, one pixel grid and evenly spaced,
  collinear slice positions are required, so the affine reproduces every slice's
  ImagePositionPatient within :data:`POSITION_TOLERANCE_MM`).
- :func:`map_to_grid`: a volume moved onto a grid with the same voxels in another axis order or
  direction (a NIfTI label map onto its DICOM reference series), exactly.

Voxel ``(i, j, k)`` of a series is column ``i``, row ``j`` of its ``k``-th slice along the normal;
affines are NIfTI RAS (DICOM's LPS with x and y negated).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from glioseg.utils import one_line

if TYPE_CHECKING:
    from glioseg.interop.dicom import SeriesInfo

POSITION_TOLERANCE_MM = 1e-2  # slice positions off the affine's line by more than this are refused
ORIENTATION_TOLERANCE = 1e-4
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


class DicomError(ValueError):
    """DICOM input glioseg cannot use as it is; one line naming the study or file and the fix."""



@dataclass
class SeriesVolume:
    """A series read: voxels, exact geometry and its slices in volume order.

    Attributes:
        data: float32 ``(I, J, K)``: column, row, slice (rescale slope/intercept applied).
        affine: voxel-to-world RAS affine, 4x4 float64.
        files: the slice files, ``files[k]`` is slice ``k``.
        sop_uids: SOPInstanceUID of each slice, in the same order.
    """

    data: np.ndarray
    affine: np.ndarray
    files: list[Path]
    sop_uids: list[str]


def _slice_geometry(headers: list[Any], where: str) -> tuple[np.ndarray, np.ndarray]:
    """Order of the slices along the normal and the LPS affine, checked to fit every slice exactly."""
    orientations = np.array([[float(v) for v in h.ImageOrientationPatient] for h in headers])
    if np.abs(orientations - orientations[0]).max() > ORIENTATION_TOLERANCE:
        raise DicomError(f"{where}: slices with different ImageOrientationPatient (several stacks in one series); "
                         "export each stack as its own series")
    row, col = orientations[0, :3], orientations[0, 3:]
    normal = np.cross(row, col)
    positions = np.array([[float(v) for v in h.ImagePositionPatient] for h in headers])
    order = np.argsort(positions @ normal, kind="stable")
    positions = positions[order]
    spacing = [float(v) for v in headers[0].PixelSpacing]  # (between rows, between columns)
    step = (positions[-1] - positions[0]) / max(len(headers) - 1, 1) if len(headers) > 1 else normal
    if len(headers) > 1 and np.linalg.norm(step) < POSITION_TOLERANCE_MM:
        raise DicomError(f"{where}: slices share one ImagePositionPatient (several echoes or times in one "
                         "series); export one 3-D volume per series")
    expected = positions[0] + np.arange(len(headers))[:, None] * step
    off = float(np.abs(positions - expected).max())
    if off > POSITION_TOLERANCE_MM:
        raise DicomError(f"{where}: slice positions are not evenly spaced on one line (off by {off:.3f} mm: "
                         "missing slices or mixed stacks); export the complete series")
    lps = np.eye(4)
    lps[:3, 0], lps[:3, 1], lps[:3, 2], lps[:3, 3] = row * spacing[1], col * spacing[0], step, positions[0]
    return order, lps


def read_series(series: SeriesInfo, where: str | None = None) -> SeriesVolume:
    """Read a single-frame MR series into a volume with its exact affine.

    Args:
        series: the series (from :func:`find_series`).
        where: the case, for messages.

    Returns:
        The volume, its RAS affine and its slices in volume order.

    Raises:
        DicomError: multi-frame objects, mixed pixel grids or orientations, unevenly spaced or
            duplicated slice positions, or pixel data that cannot be decoded.
    """
    import pydicom

    where = f"{where or 'series'} [{series.files[0].parent}]: series {series.label()}"
    if series.multiframe:
        raise DicomError(f"{where}: enhanced multi-frame objects are not read; export the series as classic "
                         "single-frame MR images")
    headers = [pydicom.dcmread(p, stop_before_pixels=True) for p in series.files]
    grids = {(int(h.Rows), int(h.Columns), tuple(float(v) for v in h.PixelSpacing)) for h in headers}
    if len(grids) > 1:
        raise DicomError(f"{where}: slices with different sizes or pixel spacings {sorted(grids)}; "
                         "export one 3-D volume per series")
    order, lps = _slice_geometry(headers, where)
    files = [series.files[i] for i in order]
    planes = [_read_pixels(p, where) for p in files]
    data = np.stack([plane.T for plane in planes], axis=-1).astype(np.float32, copy=False)
    return SeriesVolume(data, LPS_TO_RAS @ lps, files, [str(headers[i].SOPInstanceUID) for i in order])


def _read_pixels(path: Path, where: str) -> np.ndarray:
    """One slice's pixels ``(rows, columns)`` as float32, rescale slope and intercept applied."""
    import pydicom

    try:
        ds = pydicom.dcmread(path)
        pixels = ds.pixel_array.astype(np.float32)
    except Exception as exc:  # decoders raise many types; the message says what to do
        raise DicomError(f"{where}: cannot decode {path.name} ({type(exc).__name__}: {one_line(exc, 200)}); "
                         "decompress the series (e.g. gdcmconv --raw) or install pylibjpeg") from exc
    if pixels.ndim != 2:
        raise DicomError(f"{where}: {path.name} holds pixel data of shape {pixels.shape}, expected one "
                         "grey-level slice; export classic single-frame MR images")
    slope, intercept = float(ds.get("RescaleSlope", 1) or 1), float(ds.get("RescaleIntercept", 0) or 0)
    return pixels * np.float32(slope) + np.float32(intercept)


def map_to_grid(array: np.ndarray, affine: np.ndarray, shape: tuple[int, int, int], target: np.ndarray, *,
                inside: bool = False) -> np.ndarray:
    """An array moved onto another grid that has the same voxels in another axis order or direction.

    Args:
        array: ``(I, J, K)`` on the grid of ``affine``.
        affine: voxel-to-world of ``array``, 4x4.
        shape: shape of the target grid.
        target: voxel-to-world of the target grid, 4x4 (same world convention).
        inside: ``array`` may cover only part of the target grid (the rest is filled with 0);
            by default both grids must cover the same voxels.

    Returns:
        ``array`` on the target grid, same dtype (axis permutations, flips and an integer shift:
        exact, no interpolation).

    Raises:
        ValueError: the grids' voxels differ (other spacing, rotation, sub-voxel offset) or
            ``array`` reaches outside the target grid.
    """
    index = np.linalg.solve(np.asarray(target, float), np.asarray(affine, float))  # array index -> target index
    perm = np.abs(index[:3, :3]).argmax(axis=0)  # target axis of each array axis
    signed = np.zeros((3, 3))
    signed[perm, range(3)] = np.sign(index[perm, range(3)])
    offset = np.round(index[:3, 3])
    if (len(set(perm.tolist())) != 3 or not np.allclose(index[:3, :3], signed, atol=1e-4)
            or not np.allclose(index[:3, 3], offset, atol=1e-3)):
        raise ValueError("the grids differ (voxel size, rotation or a sub-voxel offset); resample the label map "
                         "onto the reference series first")
    corners = np.stack([offset, signed @ (np.array(array.shape) - 1) + offset])
    low, high = corners.min(axis=0).astype(int), corners.max(axis=0).astype(int)
    full = (low == 0).all() and (high == np.array(shape) - 1).all()
    if (low < 0).any() or (high > np.array(shape) - 1).any() or not (full or inside):
        raise ValueError(f"the grids cover different regions (voxels {low.tolist()}..{high.tolist()} of a "
                         f"{tuple(shape)} grid); resample the label map onto the reference series first")
    moved = np.transpose(array, np.argsort(perm))
    flips = tuple(axis for axis in range(3) if signed[axis].sum() < 0)
    moved = np.flip(moved, axis=flips) if flips else moved
    out = np.zeros(tuple(shape), dtype=array.dtype)
    out[low[0]:high[0] + 1, low[1]:high[1] + 1, low[2]:high[2] + 1] = moved
    return out


def write_series(volume: np.ndarray, affine: np.ndarray, folder: Path | str, *, description: str,
                 study: dict[str, str], series_number: int = 1, contrast_agent: str | None = None,
                 series_uid: str | None = None) -> list[Path]:
    """Write a volume as a classic single-frame MR series (one file per slice), for tests and demos.

    Intensities are stored as int16 (exactly when the volume holds integers in int16's range,
    else linearly scaled with RescaleSlope/RescaleIntercept).

    Args:
        volume: ``(I, J, K)`` voxels; slice ``k`` is ``volume[:, :, k]`` (columns ``i``, rows ``j``).
        affine: RAS voxel-to-world, 4x4, with orthogonal first two columns.
        folder: new or empty folder for the slice files ``IM0001.dcm`` ...
        description: SeriesDescription (what :func:`glioseg.interop.dicom.classify` reads).
        study: ``StudyInstanceUID``, ``FrameOfReferenceUID``, ``PatientID`` shared by the study's series.
        series_number: SeriesNumber.
        contrast_agent: ContrastBolusAgent, when set.
        series_uid: SeriesInstanceUID (new when None).

    Returns:
        The slice files, in slice order.

    Raises:
        ValueError: a 3-D volume is not given, or the in-plane axes are not orthogonal.
    """
    from pydicom.uid import generate_uid

    if volume.ndim != 3:
        raise ValueError(f"expected a 3-D volume (I, J, K), got shape {volume.shape}")
    lps = np.diag([-1.0, -1.0, 1.0]) @ np.asarray(affine, dtype=np.float64)[:3]
    spacing = np.linalg.norm(lps[:, :2], axis=0)
    row, col = lps[:, 0] / spacing[0], lps[:, 1] / spacing[1]
    if abs(float(row @ col)) > ORIENTATION_TOLERANCE:
        raise ValueError("the affine's first two axes are not orthogonal; DICOM needs orthogonal rows and columns")
    stored, slope, intercept = _to_int16(volume)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    series_uid = series_uid or generate_uid()
    paths = []
    for k in range(volume.shape[2]):
        ds = _mr_slice(stored[:, :, k].T, study, series_uid, series_number, description, contrast_agent)
        ds.ImageOrientationPatient = [f"{v:.10g}" for v in (*row, *col)]
        ds.ImagePositionPatient = [f"{v:.10g}" for v in lps[:, 3] + k * lps[:, 2]]
        ds.PixelSpacing = [f"{spacing[1]:.10g}", f"{spacing[0]:.10g}"]
        ds.SliceThickness = f"{float(np.linalg.norm(lps[:, 2])):.10g}"
        ds.RescaleSlope, ds.RescaleIntercept = f"{slope:.10g}", f"{intercept:.10g}"
        ds.InstanceNumber = k + 1
        path = folder / f"IM{k + 1:04d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def _to_int16(volume: np.ndarray) -> tuple[np.ndarray, float, float]:
    """int16 voxels and the slope/intercept that give the volume back."""
    lo, hi = float(volume.min()), float(volume.max())
    if np.array_equal(volume, np.round(volume)) and lo >= -32768 and hi <= 32767:
        return volume.astype(np.int16), 1.0, 0.0
    slope = (hi - lo) / 65535.0 or 1.0
    return np.round((volume - lo) / slope - 32768).astype(np.int16), slope, lo + 32768 * slope


def _mr_slice(pixels: np.ndarray, study: dict[str, str], series_uid: str, number: int, description: str,
              contrast_agent: str | None) -> Any:
    """An MR Image Storage dataset with one slice's pixels ``(rows, columns)`` int16 and the study's identity."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID, ds.SOPInstanceUID = MRImageStorage, generate_uid()
    ds.file_meta.MediaStorageSOPClassUID, ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPClassUID, ds.SOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study["StudyInstanceUID"], series_uid
    ds.FrameOfReferenceUID, ds.PatientID = study["FrameOfReferenceUID"], study["PatientID"]
    ds.PatientName, ds.PatientBirthDate, ds.PatientSex = study.get("PatientName", "Anonymous^Patient"), "", "O"
    ds.StudyDate, ds.StudyTime, ds.StudyID = study.get("StudyDate", "20260101"), "120000", "1"
    ds.AccessionNumber, ds.ReferringPhysicianName, ds.Manufacturer = "", "", "glioseg"
    ds.Modality, ds.SeriesNumber, ds.SeriesDescription = "MR", number, description
    ds.ImageType, ds.ScanningSequence, ds.SequenceVariant = ["ORIGINAL", "PRIMARY"], "SE", "NONE"
    ds.ScanOptions, ds.MRAcquisitionType = "", "3D"
    if contrast_agent:
        ds.ContrastBolusAgent = contrast_agent
    ds.Rows, ds.Columns = int(pixels.shape[0]), int(pixels.shape[1])
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    ds.PixelData = np.ascontiguousarray(pixels, dtype="<i2").tobytes()
    return ds


DEMO_DESCRIPTIONS: dict[str, tuple[str, str | None]] = {
    "t1": ("T1 SE AX pre", None), "t1ce": ("T1 SE AX post Gd", "Gadobutrol"),
    "t2": ("T2 TSE AX", None), "flair": ("T2 FLAIR AX", None)}


def write_study(images: dict[str, np.ndarray], affine: np.ndarray, folder: Path | str, *,
                patient_id: str = "GLIOSEG-DEMO",
                descriptions: dict[str, tuple[str, str | None]] | None = None) -> dict[str, str]:
    """Write a case's modalities as the MR series of one study (``folder/<modality>/IM0001.dcm`` ...).

    For tests and demos: a NIfTI case (e.g. BraTS) made into the DICOM a PACS would export.

    Args:
        images: modality -> ``(I, J, K)`` volume, all on the grid of ``affine``.
        affine: RAS voxel-to-world, 4x4.
        folder: new or empty folder.
        patient_id: PatientID of the study.
        descriptions: modality -> (SeriesDescription, ContrastBolusAgent or None)
            (default :data:`DEMO_DESCRIPTIONS`).

    Returns:
        Modality -> SeriesInstanceUID.
    """
    from pydicom.uid import generate_uid

    names = descriptions or DEMO_DESCRIPTIONS
    study = {"StudyInstanceUID": generate_uid(), "FrameOfReferenceUID": generate_uid(), "PatientID": patient_id}
    uids: dict[str, str] = {}
    for number, (modality, volume) in enumerate(images.items(), start=1):
        description, agent = names.get(modality, (modality, None))
        uids[modality] = str(generate_uid())
        write_series(volume, affine, Path(folder) / modality, description=description, study=study,
                     series_number=number, contrast_agent=agent, series_uid=uids[modality])
    return uids
