"""DICOM-SEG output: a label map as a DICOM Segmentation on its source series, and back.

:func:`write_dicom_seg` writes one BINARY segment per sub-region (NCR, ED, ET) with highdicom:
category "Morphologically Abnormal Structure" (SCT 49755003) and the types of DICOM's brain
lesion context group CID 7168 (Necrosis SCT 6574001, Edema SCT 79654002, Enhancing Lesion NCIt
C113842: CID 7168 has no SNOMED CT concept for enhancement), the usual BraTS colours (NCR red,
ED green, ET yellow) as recommended CIELab display colours, and an automatic-algorithm
identification naming glioseg and the model. Each frame references the source slice it lies on
(SOP instance, frame of reference and plane position copied from the source series), so viewers
(OHIF, 3D Slicer) overlay it on the series it was predicted from.

:func:`read_dicom_seg` rebuilds the label volume on the source series' grid from the frames'
source-instance references; :func:`read_dicom_seg_geometry` rebuilds it from the frames' own
plane positions alone, which is what tests compare to catch orientation mistakes.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from glioseg.labels import CANONICAL_NAMES, ED, ET, NCR, RC
from glioseg.utils import atomic_write

if TYPE_CHECKING:
    from glioseg.data.nifti import Case
    from glioseg.inference.predictor import Prediction
    from glioseg.interop.dicom import SeriesInfo
    from glioseg.interop.dicom_volume import SeriesVolume

SEG_SUFFIX = ".seg.dcm"
# canonical label -> (segment label, property type (scheme, value, meaning), display colour RGB 0..255)
SEGMENTS: dict[int, tuple[str, tuple[str, str, str], tuple[int, int, int]]] = {
    NCR: ("NCR", ("SCT", "6574001", "Necrosis"), (255, 0, 0)),
    ED: ("ED", ("SCT", "79654002", "Edema"), (0, 204, 0)),
    ET: ("ET", ("NCIt", "C113842", "Enhancing Lesion"), (255, 230, 0)),
}
CATEGORY = ("SCT", "49755003", "Morphologically Abnormal Structure")


def seg_path(out: Path, case_id: str) -> Path:
    """``OUT/<ID>.seg.dcm``, next to ``OUT/<ID>.nii.gz``."""
    return Path(out) / f"{case_id}{SEG_SUFFIX}"


def _segment_descriptions(model: dict[str, Any] | None, manual: bool = False) -> list[Any]:
    import highdicom as hd
    from pydicom.sr.codedict import codes
    from pydicom.sr.coding import Code

    from glioseg import __version__

    name = str((model or {}).get("name") or "glioseg")
    algorithm = hd.AlgorithmIdentificationSequence(
        name=f"glioseg {name}"[:64], family=codes.cid7162.ArtificialIntelligence, version=__version__,
        parameters={"model_sha256": str((model or {}).get("sha256") or "unknown")})
    kind = hd.seg.SegmentAlgorithmTypeValues.MANUAL if manual else hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC
    return [hd.seg.SegmentDescription(
        segment_number=number, segment_label=label, segmented_property_category=Code(CATEGORY[1], CATEGORY[0],
                                                                                     CATEGORY[2]),
        segmented_property_type=Code(code[1], code[0], code[2]),
        algorithm_type=kind, algorithm_identification=None if manual else algorithm,
        tracking_id=f"{label} ({CANONICAL_NAMES[canon]})", tracking_uid=hd.UID(),
        display_color=hd.color.CIELabColor.from_rgb(*colour))
        for number, (canon, (label, code, colour)) in enumerate(SEGMENTS.items(), start=1)]


def build_dicom_seg(labels: np.ndarray, source: SeriesVolume, *, model: dict[str, Any] | None = None,
                    series_description: str = "glioseg tumour segmentation", series_number: int = 900,
                    manual: bool = False) -> Any:
    """The DICOM Segmentation of a label map on its source series.

    Args:
        labels: uint8 ``(I, J, K)`` canonical labels on the source series' grid (voxel ``(i, j, k)``
            is column ``i``, row ``j`` of slice ``source.files[k]``).
        source: the series read with :func:`glioseg.interop.dicom_volume.read_series`.
        model: ``{"name", "sha256"}`` of the model, recorded in the algorithm identification.
        series_description: SeriesDescription of the SEG.
        series_number: SeriesNumber of the SEG.
        manual: the segments were drawn by hand (algorithm type MANUAL, no algorithm identification).

    Returns:
        A ``highdicom.seg.Segmentation`` (BINARY, one segment per sub-region, empty frames left out).

    Raises:
        ValueError: the label map is not on the source grid, or holds a label without a segment.
    """
    import highdicom as hd
    import pydicom

    from glioseg import __version__

    if tuple(labels.shape) != tuple(source.data.shape):
        raise ValueError(f"label map shape {labels.shape} != source series shape {source.data.shape}; "
                         "give the label map on the series' grid")
    unknown = sorted(set(np.unique(labels).tolist()) - {0, *SEGMENTS})
    if unknown:
        names = [CANONICAL_NAMES.get(v, str(v)) for v in unknown]
        raise ValueError(f"labels {names} have no DICOM-SEG segment (only NCR, ED, ET); "
                         f"{'RC is written in the NIfTI label map only' if RC in unknown else 'check the label map'}")
    segment_of = np.zeros(256, dtype=np.uint8)
    for number, canon in enumerate(SEGMENTS, start=1):
        segment_of[canon] = number
    frames = np.ascontiguousarray(segment_of[labels].transpose(2, 1, 0))  # (slices, rows, columns)
    images = [pydicom.dcmread(p, stop_before_pixels=True) for p in source.files]
    return hd.seg.Segmentation(
        source_images=images, pixel_array=frames, segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=_segment_descriptions(model, manual), series_instance_uid=hd.UID(),
        series_number=series_number, sop_instance_uid=hd.UID(), instance_number=1, manufacturer="glioseg",
        manufacturer_model_name=str((model or {}).get("name") or "glioseg")[:64], software_versions=__version__,
        device_serial_number=str((model or {}).get("sha256") or "unknown")[:64], content_label="TUMOUR",
        content_description=series_description[:64], series_description=series_description[:64],
        omit_empty_frames=bool(frames.any()))


def write_dicom_seg(labels: np.ndarray, source: SeriesVolume, path: Path | str, *,
                    model: dict[str, Any] | None = None, manual: bool = False) -> Path:
    """Write :func:`build_dicom_seg`'s Segmentation to ``path`` atomically; return the path."""
    seg = build_dicom_seg(labels, source, model=model, manual=manual)
    return atomic_write(Path(path), lambda tmp: seg.save_as(tmp))


def _canonical_of_segments(seg: Any, path: Path) -> dict[int, int]:
    """Segment number -> canonical label, by each segment's property type code (not its number)."""
    by_code = {(code[0], code[1]): canon for canon, (_, code, _) in SEGMENTS.items()}
    mapping = {}
    for number in seg.segment_numbers:
        kind = seg.get_segment_description(number).segmented_property_type
        canon = by_code.get((str(kind.scheme_designator), str(kind.value)))
        if canon is None:
            raise ValueError(f"{path}: segment {number} ({kind.meaning}) is none of NCR, ED, ET; "
                             "give a SEG written by glioseg or with the CID 7168 codes")
        mapping[number] = canon
    return mapping


def read_dicom_seg(path: Path | str, source: SeriesVolume) -> np.ndarray:
    """The label map of a SEG on its source series' grid, by the frames' source-instance references.

    Args:
        path: the SEG file.
        source: its source series (:func:`glioseg.interop.dicom_volume.read_series`).

    Returns:
        uint8 ``(I, J, K)`` canonical labels on the source grid.

    Raises:
        ValueError: a segment that is none of NCR, ED, ET, or frames referencing no slice of ``source``.
    """
    import highdicom as hd

    seg = hd.seg.segread(str(path))
    mapping = _canonical_of_segments(seg, Path(path))
    frames = seg.get_pixels_by_source_instance(source_sop_instance_uids=source.sop_uids, combine_segments=True,
                                               relabel=False, assert_missing_frames_are_empty=True)
    lut = np.zeros(max(mapping, default=0) + 1, dtype=np.uint8)
    for number, canon in mapping.items():
        lut[number] = canon
    return np.ascontiguousarray(lut[np.asarray(frames, dtype=np.int64)].transpose(2, 1, 0))


def read_dicom_seg_geometry(path: Path | str) -> tuple[np.ndarray, np.ndarray]:
    """The label volume of a SEG from its own plane positions and orientation (no references used).

    Returns:
        ``(labels, affine)``: uint8 canonical labels on the SEG's volume grid and its RAS
        voxel-to-world affine (map onto a series with :func:`glioseg.interop.dicom_volume.map_to_grid`).
    """
    import highdicom as hd

    from glioseg.interop.dicom_volume import LPS_TO_RAS

    seg = hd.seg.segread(str(path))
    mapping = _canonical_of_segments(seg, Path(path))
    volume = seg.get_volume(combine_segments=True, relabel=False)
    lut = np.zeros(max(mapping, default=0) + 1, dtype=np.uint8)
    for number, canon in mapping.items():
        lut[number] = canon
    return lut[np.asarray(volume.array, dtype=np.int64)], LPS_TO_RAS @ np.asarray(volume.affine, dtype=np.float64)


class SegOutputs:
    """The ``extra_outputs`` of :func:`glioseg.inference.batch.predict_dataset` that add ``OUT/<ID>.seg.dcm``.

    The label map is moved from the case's grid onto its reference series' grid (axis order and
    direction only: :func:`glioseg.interop.dicom_volume.map_to_grid`) and the SEG is built before
    anything is staged, so a case whose grid is not its series' fails with nothing written.

    Args:
        references: case ID -> the series its SEG references (cases without one get no SEG).
        model: the model's identity, recorded in the SEG.
    """

    def __init__(self, references: dict[str, SeriesInfo], model: dict[str, Any] | None = None) -> None:
        self.references = references
        self.model = model

    def files(self, out: Path, case_id: str) -> list[Path]:
        """``[OUT/<ID>.seg.dcm]`` for a case with a reference series, else ``[]``."""
        return [seg_path(out, case_id)] if case_id in self.references else []

    def writers(self, case: Case, pred: Prediction, out: Path) -> dict[Path, Callable[[Path], object]]:
        """The SEG of ``pred`` on the case's reference series, built now, saved by the returned writer.

        Raises:
            ValueError: the case's grid is not the series' grid (naming both), or labels without a segment.
            DicomError: the reference series cannot be read.
        """
        from glioseg.interop.dicom_volume import map_to_grid, read_series

        series = self.references.get(case.case_id)
        if series is None:
            return {}
        source = read_series(series, f"case {case.case_id} (DICOM-SEG reference)")
        geometry = case.geometry
        try:
            labels = map_to_grid(geometry.from_canonical(pred.labels), geometry.affine, source.data.shape,
                                 source.affine)
        except ValueError as exc:
            raise ValueError(f"case {case.case_id}: its grid is not that of the reference series "
                             f"{series.label()}: {exc}") from exc
        seg = build_dicom_seg(labels, source, model=self.model)
        return {seg_path(out, case.case_id): lambda path: seg.save_as(path)}
