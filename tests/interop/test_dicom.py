"""DICOM input (issue 16, part 1): series found, assigned to T1/T1ce/T2/FLAIR by their attributes or
by explicit overrides, refused with one line when ambiguous, and read with exact geometry into a case
that read_case reads like any NIfTI case."""

import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.uid import generate_uid

from glioseg.data.nifti import read_case
from glioseg.data.synthetic import default_affine, make_synthetic_case
from glioseg.interop.dicom import (
    DicomError,
    SeriesInfo,
    classify,
    convert_study,
    find_series,
    find_studies,
)
from glioseg.interop.dicom_volume import read_series, write_series, write_study

SHAPE = (24, 24, 16)
MODS = ("t1", "t1ce", "t2", "flair")


@pytest.mark.parametrize(("description", "agent", "expected"), [
    ("t1_mprage_sag_p2_iso", "", "t1"),
    ("T1 MPRAGE POST", "", "t1ce"),
    ("AX T1 SE +C", "", "t1ce"),
    ("t1_se_tra", "Gadovist", "t1ce"),
    ("T1 pre Gd", "", "t1"),
    ("Ax T1 FSPGR BRAVO", "", "t1"),
    ("t2_tse_tra", "", "t2"),
    ("t2_tirm_tra_dark-fluid", "", "flair"),
    ("AX T2 FLAIR", "", "flair"),
    ("localizer", "", None),
    ("ep2d_diff_3scan_trace_ADC", "", None),
    ("T2* GRE AX", "", None),
    ("SWI_Images", "", None),
    ("", "", None),
])
def test_classify(description: str, agent: str, expected: str | None) -> None:
    assert classify(SeriesInfo("1.2", "1", [], description, "", 1, agent)) == expected


def _case(tmp_path: Path, affine: np.ndarray | None = None, seed: int = 0) -> tuple[np.ndarray, np.ndarray, Path]:
    image, _ = make_synthetic_case(SHAPE, seed=seed)
    affine = default_affine(SHAPE) if affine is None else affine
    root = tmp_path / "patient7"
    write_study({m: np.round(image[i]) for i, m in enumerate(MODS)}, affine, root)
    return np.round(image), affine, root


def test_one_study_assigned_and_converted_exactly(tmp_path: Path) -> None:
    image, affine, root = _case(tmp_path)
    (root / "README.txt").write_text("not DICOM")
    write_series(np.zeros((24, 24, 2)), affine, root / "loc", description="localizer", series_number=9,
                 study=_study_of(root))
    [study] = find_studies(root)
    assert study.case_id == "patient7"
    assert {m: s.files[0].parent.name for m, s in study.series.items()} == {m: m for m in MODS}
    assert [s.description for s in study.others] == ["localizer"]
    files = convert_study(study, tmp_path / "scratch")
    case = read_case(files)
    assert case.case_id == "patient7" and files.layout == "dicom"
    assert np.allclose(case.geometry.affine, affine, atol=1e-6)
    assert np.array_equal(case.geometry.from_canonical(case.image[1]), image[1])


def _study_of(root: Path) -> dict[str, str]:
    ds = pydicom.dcmread(next((root / "t1").iterdir()))
    return {"StudyInstanceUID": ds.StudyInstanceUID, "FrameOfReferenceUID": ds.FrameOfReferenceUID,
            "PatientID": ds.PatientID}


def test_two_flair_series_are_ambiguous_until_overridden(tmp_path: Path) -> None:
    image, affine, root = _case(tmp_path)
    extra = generate_uid()
    write_series(image[3], affine, root / "flair3d", description="FLAIR 3D SAG", series_number=7,
                 study=_study_of(root), series_uid=extra)
    with pytest.raises(DicomError) as err:
        find_studies(root)
    message = str(err.value)
    flair_uid = pydicom.dcmread(next((root / "flair").iterdir())).SeriesInstanceUID
    assert "2 series look like FLAIR" in message and extra in message and flair_uid in message
    assert "--series flair=" in message and "\n" not in message
    [study] = find_studies(root, {"flair": extra})
    assert study.series["flair"].uid == extra and study.series["t1"].files[0].parent.name == "t1"
    with pytest.raises(DicomError, match="names no MR series"):
        find_studies(root, {"t2": "1.2.3.4"})


def test_missing_modality_and_derived_series(tmp_path: Path) -> None:
    image, affine, root = _case(tmp_path)
    shutil.rmtree(root / "t2")
    with pytest.raises(DicomError, match=r"no series looks like T2.*--series t2=<UID>"):
        find_studies(root)
    write_series(image[2], affine, root / "t2", description="T2 TSE AX", series_number=3, study=_study_of(root))
    reformat = root / "t2_reformat"
    write_series(image[2], affine, reformat, description="T2 TSE AX MPR", series_number=30, study=_study_of(root))
    for path in reformat.iterdir():  # a derived reformat of the same series: the original one wins
        ds = pydicom.dcmread(path)
        ds.ImageType = ["DERIVED", "SECONDARY"]
        ds.save_as(path)
    [study] = find_studies(root)
    assert study.series["t2"].files[0].parent.name == "t2"


def test_studies_in_sub_folders_are_cases(tmp_path: Path) -> None:
    root = tmp_path / "export"
    for name, seed in (("anna", 0), ("bert", 1)):
        image, _ = make_synthetic_case(SHAPE, seed=seed)
        write_study({m: np.round(image[i]) for i, m in enumerate(MODS)}, default_affine(SHAPE), root / name)
    assert [s.case_id for s in find_studies(root)] == ["anna", "bert"]


def test_no_dicom_and_not_a_folder(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "a.nii.gz").write_bytes(b"\x1f\x8b not dicom")
    with pytest.raises(DicomError, match="no MR image series"):
        find_series(tmp_path / "empty")
    with pytest.raises(DicomError, match="not a folder"):
        find_series(tmp_path / "missing")


def test_broken_series_are_refused(tmp_path: Path) -> None:
    _, _, root = _case(tmp_path)
    [series] = [s for s in find_series(root) if s.files[0].parent.name == "t1"]
    gap = sorted(series.files)[5]
    gap.unlink()
    series.files.remove(gap)
    with pytest.raises(DicomError, match="not evenly spaced"):
        read_series(series)
    [t2] = [s for s in find_series(root) if s.files[0].parent.name == "t2"]
    tilted = pydicom.dcmread(t2.files[3])
    tilted.ImageOrientationPatient = [1, 0, 0, 0, 0.8, 0.6]
    tilted.save_as(t2.files[3])
    with pytest.raises(DicomError, match="different ImageOrientationPatient"):
        read_series(t2)
    [flair] = [s for s in find_series(root) if s.files[0].parent.name == "flair"]
    twin = pydicom.dcmread(flair.files[0])
    twin.SOPInstanceUID = generate_uid()
    twin.save_as(root / "flair" / "twin.dcm")
    for f in flair.files[1:]:
        f.unlink()
    [flair] = [s for s in find_series(root) if s.files[0].parent.name == "flair"]
    with pytest.raises(DicomError, match="share one ImagePositionPatient"):
        read_series(flair)


def test_parse_series() -> None:
    from glioseg.interop.dicom import parse_series

    assert parse_series("T1=1.2.3, flair=1.2.4") == {"t1": "1.2.3", "flair": "1.2.4"}
    assert parse_series(None) == {}
    for bad in ("t1", "t1=", "dwi=1.2", "t1=1.2,t1=1.3", "t1=1.2,t2=1.2"):
        with pytest.raises(DicomError, match="--series"):
            parse_series(bad)


@pytest.mark.parametrize("kind", ["oblique", "las"])
def test_read_series_agrees_with_simpleitk_gdcm(tmp_path: Path, kind: str) -> None:
    """An independent reader (SimpleITK's GDCM series reader) gives the same voxels and geometry."""
    sitk = pytest.importorskip("SimpleITK")
    affine = np.eye(4)
    if kind == "oblique":
        a, b = np.deg2rad(18), np.deg2rad(-27)
        rx = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
        ry = np.array([[np.cos(b), 0, np.sin(b)], [0, 1, 0], [-np.sin(b), 0, np.cos(b)]])
        affine[:3, :3] = ry @ rx @ np.diag([0.8, 0.9, 2.2])
    else:
        affine[:3, :3] = np.diag([-1.0, 1.0, 1.5])
    affine[:3, 3] = [3.0, -40.0, 17.0]
    image, _ = make_synthetic_case(SHAPE, seed=2)
    write_study({"t1": np.round(image[0])}, affine, tmp_path / "d")
    [series] = find_series(tmp_path / "d")
    ours = read_series(series)
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(tmp_path / "d" / "t1")))
    theirs = reader.Execute()
    lps = np.eye(4)
    lps[:3, :3] = np.asarray(theirs.GetDirection()).reshape(3, 3) * np.asarray(theirs.GetSpacing())
    lps[:3, 3] = theirs.GetOrigin()
    assert np.allclose(np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps, ours.affine, atol=1e-4)
    assert np.array_equal(sitk.GetArrayFromImage(theirs).transpose(2, 1, 0), ours.data)


def test_undecodable_pixel_data_names_the_file_and_the_fix(tmp_path: Path) -> None:
    from pydicom.uid import JPEG2000Lossless

    _, _, root = _case(tmp_path)
    [series] = [s for s in find_series(root) if s.files[0].parent.name == "t1"]
    broken = sorted(series.files)[2]
    ds = pydicom.dcmread(broken)
    ds.file_meta.TransferSyntaxUID = JPEG2000Lossless  # claims JPEG 2000, holds garbage
    ds.PixelData = pydicom.encaps.encapsulate([b"\x00\x01 not a codestream"])
    ds.save_as(broken, enforce_file_format=True)
    with pytest.raises(DicomError, match=rf"cannot decode {broken.name}.*decompress the series") as err:
        read_series(series)
    assert "\n" not in str(err.value)
