"""DICOM-SEG output (issue 16, part 2): label map -> SEG on the source series -> label map, voxel for
voxel, read back both by the frames' source references and by their own plane positions, for an
axial LPS series, an oblique one (rotated direction cosines), an RAS-ordered one (rows and columns
flipped against LPS) and an LAS one (slices stacked against the DICOM slice normal, so the slice axis
comes back reversed); the segments' codes and colours; bad inputs."""

from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest

from glioseg.data.synthetic import default_affine, make_synthetic_case
from glioseg.interop.dicom import find_studies
from glioseg.interop.dicom_seg import (
    SEGMENTS,
    build_dicom_seg,
    read_dicom_seg,
    read_dicom_seg_geometry,
    write_dicom_seg,
)
from glioseg.interop.dicom_volume import map_to_grid, read_series, write_study
from glioseg.labels import ED, ET, NCR, RC

SHAPE = (32, 28, 20)


def _rotation(x_deg: float, z_deg: float) -> np.ndarray:
    a, c = np.deg2rad(x_deg), np.deg2rad(z_deg)
    rx = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
    rz = np.array([[np.cos(c), -np.sin(c), 0], [np.sin(c), np.cos(c), 0], [0, 0, 1]])
    return rz @ rx


def _affine(kind: str) -> np.ndarray:
    if kind == "axial_lps":
        return default_affine(SHAPE)
    affine = np.eye(4)
    if kind == "oblique":  # 25 deg about x, 15 deg about z, anisotropic voxels
        affine[:3, :3] = _rotation(25, 15) @ np.diag([0.9, 1.1, 2.0])
    elif kind == "ras":  # NIfTI RAS axis order: rows and columns run against DICOM's LPS
        affine[:3, :3] = np.diag([1.0, 1.0, 1.5])
    elif kind == "las_reversed":  # radiological LAS: row x column points down, slices run up
        affine[:3, :3] = np.diag([-1.0, 1.0, 1.5])
    affine[:3, 3] = [-20.0, 13.5, 40.25]
    return affine


def _study(tmp_path: Path, kind: str) -> tuple[np.ndarray, np.ndarray, dict]:
    """A synthetic case on the ``kind`` grid written as a DICOM study; returns (labels, affine, t1ce volume)."""
    image, labels = make_synthetic_case(SHAPE, seed=3)
    affine = _affine(kind)
    write_study({m: np.round(image[i]) for i, m in enumerate(("t1", "t1ce", "t2", "flair"))}, affine,
                tmp_path / "dicom")
    [study] = find_studies(tmp_path / "dicom")
    return labels, affine, read_series(study.series["t1ce"])


@pytest.mark.parametrize("kind", ["axial_lps", "oblique", "ras", "las_reversed"])
def test_round_trip_voxel_for_voxel(tmp_path: Path, kind: str) -> None:
    labels, affine, source = _study(tmp_path, kind)
    on_series = map_to_grid(labels, affine, source.data.shape, source.affine)
    if kind == "las_reversed":  # read_series sorts along the normal: the slice axis comes out reversed
        assert np.array_equal(on_series, labels[:, :, ::-1]) and not np.allclose(source.affine, affine)
    else:
        assert np.array_equal(on_series, labels) and np.allclose(source.affine, affine, atol=1e-6)
    path = write_dicom_seg(on_series, source, tmp_path / "out" / "case.seg.dcm", model={"name": "m", "sha256": "0f"})
    by_reference = read_dicom_seg(path, source)
    assert by_reference.dtype == np.uint8 and np.array_equal(by_reference, on_series)
    seg_labels, seg_affine = read_dicom_seg_geometry(path)
    assert np.array_equal(map_to_grid(seg_labels, seg_affine, source.data.shape, source.affine, inside=True),
                          on_series)
    # and back onto the original NIfTI grid: the world positions agree, voxel for voxel
    assert np.array_equal(map_to_grid(by_reference, source.affine, SHAPE, affine), labels)


def test_series_geometry_is_exact_for_an_oblique_series(tmp_path: Path) -> None:
    image, _ = make_synthetic_case(SHAPE, seed=4)
    affine = _affine("oblique")
    write_study({"t1": np.round(image[0])}, affine, tmp_path / "d")
    files = sorted((tmp_path / "d" / "t1").iterdir())
    from glioseg.interop.dicom import find_series

    [series] = find_series(tmp_path / "d")
    volume = read_series(series)
    assert np.allclose(volume.affine, affine, atol=1e-6) and np.array_equal(volume.data, np.round(image[0]))
    ds = pydicom.dcmread(files[7])
    lps = np.diag([-1.0, -1.0, 1.0]) @ (affine[:3, :3] @ [0, 0, 7] + affine[:3, 3])
    assert np.allclose([float(v) for v in ds.ImagePositionPatient], lps, atol=1e-6)


def test_segments_codes_colours_and_references(tmp_path: Path) -> None:
    labels, affine, source = _study(tmp_path, "oblique")
    on_series = map_to_grid(labels, affine, source.data.shape, source.affine)
    seg = build_dicom_seg(on_series, source, model={"name": "glioseg-default", "sha256": "ab" * 32})
    assert seg.Modality == "SEG" and seg.SegmentationType == "BINARY"
    assert seg.FrameOfReferenceUID == pydicom.dcmread(source.files[0]).FrameOfReferenceUID
    segments = {s.SegmentLabel: s for s in seg.SegmentSequence}
    assert list(segments) == ["NCR", "ED", "ET"]
    types = {k: (s.SegmentedPropertyTypeCodeSequence[0].CodingSchemeDesignator,
                 s.SegmentedPropertyTypeCodeSequence[0].CodeValue) for k, s in segments.items()}
    assert types == {"NCR": ("SCT", "6574001"), "ED": ("SCT", "79654002"), "ET": ("NCIt", "C113842")}
    assert all(s.SegmentedPropertyCategoryCodeSequence[0].CodeValue == "49755003" for s in segments.values())
    assert all(s.SegmentAlgorithmType == "AUTOMATIC" for s in segments.values())
    import highdicom as hd

    red = hd.color.CIELabColor.from_rgb(255, 0, 0).value
    assert list(segments["NCR"].RecommendedDisplayCIELabValue) == list(red)
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == pydicom.dcmread(source.files[0]).SeriesInstanceUID
    # every frame lies on the slice it references (the mirror bug class: frames re-ordered against positions)
    position = {uid: [float(v) for v in pydicom.dcmread(f).ImagePositionPatient]
                for uid, f in zip(source.sop_uids, source.files, strict=True)}
    for frame in seg.PerFrameFunctionalGroupsSequence:
        uid = frame.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
        plane = [float(v) for v in frame.PlanePositionSequence[0].ImagePositionPatient]
        assert np.allclose(plane, position[uid], atol=1e-4)
    frames = sum(int(np.count_nonzero((on_series == canon).any(axis=(0, 1)))) for canon in SEGMENTS)
    assert int(seg.NumberOfFrames) == frames  # one frame per segment and slice it appears on, empty ones left out


def test_empty_label_map_gives_a_readable_empty_seg(tmp_path: Path) -> None:
    _, _, source = _study(tmp_path, "axial_lps")
    empty = np.zeros(source.data.shape, np.uint8)
    path = write_dicom_seg(empty, source, tmp_path / "empty.seg.dcm")
    assert not read_dicom_seg(path, source).any()


def test_bad_inputs(tmp_path: Path) -> None:
    labels, affine, source = _study(tmp_path, "axial_lps")
    with pytest.raises(ValueError, match="shape"):
        build_dicom_seg(labels[:-1], source)
    with_rc = map_to_grid(labels, affine, source.data.shape, source.affine).copy()
    with_rc[0, 0, 0] = RC
    with pytest.raises(ValueError, match="RC"):
        build_dicom_seg(with_rc, source)
    half = affine.copy()
    half[:3, 3] += 0.5  # half a voxel off: not the same grid
    with pytest.raises(ValueError, match="grids differ"):
        map_to_grid(labels, half, source.data.shape, source.affine)
    bigger = np.zeros((SHAPE[0] + 2, *SHAPE[1:]), np.uint8)
    with pytest.raises(ValueError, match="different regions"):
        map_to_grid(bigger, affine, source.data.shape, source.affine)
    assert not (tmp_path / "out").exists(), "nothing written for refused inputs"


def test_segment_table_is_the_canonical_sub_regions() -> None:
    assert list(SEGMENTS) == [NCR, ED, ET]


@pytest.mark.realdata
@pytest.mark.parametrize("kind", ["as_is", "oblique"])
def test_real_case_round_trip(tmp_path: Path, shared_brats18: Path, kind: str) -> None:
    case = sorted(p for p in shared_brats18.iterdir() if p.is_dir())[0]
    seg_img = nib.load(str(case / f"{case.name}_seg.nii.gz"))
    t1ce = np.asarray(nib.load(str(case / f"{case.name}_t1ce.nii.gz")).dataobj)
    affine = seg_img.affine.copy()
    if kind == "oblique":
        affine[:3, :3] = _rotation(12, -20) @ affine[:3, :3]
    truth = np.asarray(seg_img.dataobj).astype(np.uint8)
    canonical = np.select([truth == 1, truth == 2, truth == 4], [NCR, ED, ET], 0).astype(np.uint8)
    write_study({"t1ce": t1ce}, affine, tmp_path / "dicom")
    from glioseg.interop.dicom import find_series

    [series] = find_series(tmp_path / "dicom")
    source = read_series(series)
    on_series = map_to_grid(canonical, affine, source.data.shape, source.affine)
    path = write_dicom_seg(on_series, source, tmp_path / "real.seg.dcm")
    assert np.array_equal(map_to_grid(read_dicom_seg(path, source), source.affine, truth.shape, affine), canonical)
    seg_labels, seg_affine = read_dicom_seg_geometry(path)
    assert np.array_equal(map_to_grid(seg_labels, seg_affine, source.data.shape, source.affine, inside=True),
                          on_series)
