"""`glioseg predict --dicom`, `--output-format dicom-seg`, `--reference`, and `check` / `info --dicom`
(issue 16, parts 1-3) end to end through the CLI: the SEG read back equals the NIfTI output voxel for
voxel (axial, oblique and slice-reversed series), ambiguous series give one line naming them and the
--series fix, and nothing is ever written among the inputs."""

import hashlib
import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from typer.testing import CliRunner

from glioseg.cli import app
from glioseg.data.synthetic import default_affine, make_synthetic_case
from glioseg.inference.predictor import Prediction
from glioseg.interop.dicom import find_series
from glioseg.interop.dicom_seg import read_dicom_seg, read_dicom_seg_geometry
from glioseg.interop.dicom_volume import map_to_grid, read_series, write_series, write_study
from glioseg.labels import ED, ET, NCR, get_scheme

runner = CliRunner()
SHAPE = (30, 26, 18)
MODS = ("t1", "t1ce", "t2", "flair")


class FakePredictor:
    """Asymmetric blobs on the canonical grid: any flip or axis swap on the way to the SEG shows."""

    target = "regions"

    def predict_case(self, case, return_probabilities=False):
        labels = np.zeros(case.geometry.canonical_shape, dtype=np.uint8)
        labels[3:9, 4:8, 2:6] = NCR
        labels[9:20, 4:14, 2:9] = ED
        labels[20:23, 15:19, 10:12] = ET
        return Prediction(case.case_id, labels, None, timings={"total": 0.01})


@pytest.fixture()
def fake(monkeypatch) -> FakePredictor:
    predictor = FakePredictor()
    monkeypatch.setattr("glioseg.cli.predict._load_predictor", lambda *args, **kwargs: predictor)
    return predictor


def _affine(kind: str) -> np.ndarray:
    if kind == "axial":
        return default_affine(SHAPE)
    affine = np.eye(4)
    if kind == "oblique":
        a = np.deg2rad(20)
        affine[:3, :3] = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]]) * 1.2
    else:  # "las": slices stacked against the DICOM normal
        affine[:3, :3] = np.diag([-1.0, 1.0, 2.0])
    affine[:3, 3] = [12.0, -30.0, 7.5]
    return affine


def _dicom_study(root: Path, kind: str = "axial", seed: int = 0) -> Path:
    image, _ = make_synthetic_case(SHAPE, seed=seed)
    write_study({m: np.round(image[i]) for i, m in enumerate(MODS)}, _affine(kind), root)
    return root


def _digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _seg_equals_nifti(out: Path, case_id: str, series_dir: Path) -> None:
    """The SEG read back (by references and by its plane positions) == the NIfTI label map, voxel for voxel."""
    [series] = find_series(series_dir)
    source = read_series(series)
    img = nib.load(str(out / f"{case_id}.nii.gz"))
    nifti = get_scheme("brats2017").to_canonical(np.asarray(img.dataobj))
    expected = map_to_grid(nifti, img.affine, source.data.shape, source.affine)
    assert expected.any() and set(np.unique(expected)) == {0, NCR, ED, ET}
    path = out / f"{case_id}.seg.dcm"
    assert np.array_equal(read_dicom_seg(path, source), expected)
    labels, affine = read_dicom_seg_geometry(path)
    assert np.array_equal(map_to_grid(labels, affine, source.data.shape, source.affine, inside=True), expected)


@pytest.mark.parametrize("kind", ["axial", "oblique", "las"])
def test_predict_dicom_writes_nifti_stats_and_seg(tmp_path: Path, fake, kind: str) -> None:
    dicom = _dicom_study(tmp_path / "patient7", kind)
    before = _digest(dicom)
    out = tmp_path / "out"
    result = runner.invoke(app, ["predict", "--dicom", str(dicom), "-o", str(out), "--output-format", "dicom-seg"])
    assert result.exit_code == 0, result.output
    assert "patient7: series assigned" in result.output and "  flair = " in result.output
    assert sorted(p.name for p in out.iterdir()) == ["manifest.jsonl", "patient7.json", "patient7.nii.gz",
                                                     "patient7.seg.dcm"]
    _seg_equals_nifti(out, "patient7", dicom / "t1ce")
    stats = json.loads((out / "patient7.json").read_text())
    assert stats["regions"]["NCR"]["voxels"] == 6 * 4 * 4 and stats["regions"]["TC"]["components"] == 2
    record = json.loads((out / "manifest.jsonl").read_text().splitlines()[-1])
    assert {"patient7.nii.gz", "patient7.json", "patient7.seg.dcm"} <= set(record["files"])
    assert _digest(dicom) == before, "the DICOM input is untouched"
    seg = pydicom.dcmread(out / "patient7.seg.dcm")
    t1ce = pydicom.dcmread(next((dicom / "t1ce").iterdir()))
    assert seg.StudyInstanceUID == t1ce.StudyInstanceUID and seg.PatientID == t1ce.PatientID


def test_two_flair_series_one_line_error_then_series_fix(tmp_path: Path, fake) -> None:
    dicom = _dicom_study(tmp_path / "study")
    ds = pydicom.dcmread(next((dicom / "t1").iterdir()))
    study = {"StudyInstanceUID": ds.StudyInstanceUID, "FrameOfReferenceUID": ds.FrameOfReferenceUID,
             "PatientID": ds.PatientID}
    image, _ = make_synthetic_case(SHAPE, seed=5)
    write_series(np.round(image[3]), _affine("axial"), dicom / "flair2", description="AX FLAIR repeat",
                 study=study, series_number=12)
    [first] = [s.uid for s in find_series(dicom) if s.files[0].parent.name == "flair"]
    [second] = [s.uid for s in find_series(dicom) if s.files[0].parent.name == "flair2"]
    out = tmp_path / "out"
    result = runner.invoke(app, ["predict", "--dicom", str(dicom), "-o", str(out)])
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit)
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in result.output
    assert first in lines[0] and second in lines[0] and "--series flair=" in lines[0]
    assert not out.exists()
    result = runner.invoke(app, ["predict", "--dicom", str(dicom), "-o", str(out), "--series", f"flair={second}"])
    assert result.exit_code == 0, result.output
    assert f"  flair = {second} ('AX FLAIR repeat', #12)" in result.output and (out / "study.nii.gz").is_file()


@pytest.mark.parametrize(("args", "message"), [
    (["--series", "t1=1.2.3"], "--series assigns the series of a --dicom folder"),
    (["--output-format", "dicom-seg"], "needs the source series"),
    (["--output-format", "png"], "--output-format 'png'"),
    (["--reference", "x"], "add --output-format dicom-seg"),
])
def test_option_errors(tmp_path: Path, fake, synthetic_dataset: Path, args: list[str], message: str) -> None:
    result = runner.invoke(app, ["predict", "-i", str(synthetic_dataset), "-o", str(tmp_path / "out"), *args])
    assert result.exit_code == 1 and message in result.output and "Traceback" not in result.output
    assert not (tmp_path / "out").exists()


def test_bad_series_text_and_output_inside_the_dicom_folder(tmp_path: Path, fake) -> None:
    dicom = _dicom_study(tmp_path / "p")
    before = _digest(dicom)
    result = runner.invoke(app, ["predict", "--dicom", str(dicom), "-o", str(tmp_path / "o"), "--series", "t9=1"])
    assert result.exit_code == 1 and "modality=SeriesInstanceUID" in result.output
    result = runner.invoke(app, ["predict", "--dicom", str(dicom), "-o", str(dicom / "out")])
    assert result.exit_code == 1 and "inside the DICOM input folder" in result.output
    assert _digest(dicom) == before and not (dicom / "out").exists()


def _flipped_reference(case_dir: Path, case_id: str, target: Path) -> None:
    """The case's T1ce as a DICOM series in another axis order and direction (i reversed, j and k swapped)."""
    img = nib.load(str(case_dir / f"{case_id}_t1ce.nii.gz"))
    data = np.asarray(img.dataobj)[::-1].transpose(0, 2, 1)
    affine = img.affine @ np.array([[-1, 0, 0, img.shape[0] - 1], [0, 0, 1, 0], [0, 1, 0, 0], [0, 0, 0, 1]])
    write_series(np.round(data), affine, target, description="T1 post Gd", series_number=3,
                 study={"StudyInstanceUID": "1.2.3.4", "FrameOfReferenceUID": "1.2.3.5", "PatientID": "P"})


def test_nifti_input_with_a_flipped_reference_series(tmp_path: Path, fake, synthetic_dataset: Path) -> None:
    case_dir = sorted(p for p in synthetic_dataset.iterdir() if p.is_dir())[0]
    case_id = case_dir.name
    _flipped_reference(case_dir, case_id, tmp_path / "ref")
    out = tmp_path / "out"
    result = runner.invoke(app, ["predict", "-i", str(case_dir), "-o", str(out), "--output-format", "dicom-seg",
                                 "--reference", str(tmp_path / "ref")])
    assert result.exit_code == 0, result.output
    _seg_equals_nifti(out, case_id, tmp_path / "ref")


def test_reference_on_another_grid_fails_the_case_with_nothing_written(tmp_path: Path, fake,
                                                                      synthetic_dataset: Path) -> None:
    case_dir = sorted(p for p in synthetic_dataset.iterdir() if p.is_dir())[0]
    img = nib.load(str(case_dir / f"{case_dir.name}_t1ce.nii.gz"))
    shifted = img.affine.copy()
    shifted[:3, 3] += 0.5
    write_series(np.round(np.asarray(img.dataobj)), shifted, tmp_path / "ref", description="T1 post",
                 study={"StudyInstanceUID": "1.2.3", "FrameOfReferenceUID": "1.2.4", "PatientID": "P"})
    out = tmp_path / "out"
    result = runner.invoke(app, ["predict", "-i", str(case_dir), "-o", str(out), "--output-format", "dicom-seg",
                                 "--reference", str(tmp_path / "ref")])
    assert result.exit_code == 1 and "grid is not that of the reference series" in result.output
    assert sorted(p.name for p in out.iterdir()) == ["manifest.jsonl"]
    result = runner.invoke(app, ["predict", "-i", str(synthetic_dataset), "-o", str(tmp_path / "o2"),
                                 "--output-format", "dicom-seg", "--reference", str(tmp_path / "ref")])
    assert result.exit_code == 1 and "of one case" in result.output


def test_check_and_info_on_dicom(tmp_path: Path) -> None:
    dicom = _dicom_study(tmp_path / "patient9", "oblique")
    before = _digest(dicom)
    report = tmp_path / "report.json"
    result = runner.invoke(app, ["check", "--dicom", str(dicom), "--json", str(report)])
    assert result.exit_code == 0, result.output
    assert "patient9: series assigned" in result.output and "1/1 cases passed" in result.output
    assert json.loads(report.read_text())
    result = runner.invoke(app, ["info", "--dicom", str(dicom)])
    assert result.exit_code == 0, result.output
    assert f"shape       {SHAPE}" in result.output and "series #4 'T2 FLAIR AX'" in result.output
    shutil.rmtree(dicom / "t2")
    result = runner.invoke(app, ["check", "--dicom", str(dicom)])
    assert result.exit_code == 1 and "no series looks like T2" in result.output and "Traceback" not in result.output
    result = runner.invoke(app, ["check", "--dicom", str(dicom), "--json", str(next((dicom / "t1").iterdir()))])
    assert result.exit_code == 1 and "is a file of the dataset" in result.output
    assert _digest(dicom) == {k: v for k, v in before.items() if not k.startswith("t2/")}


def test_check_dicom_reports_a_series_on_another_grid(tmp_path: Path) -> None:
    dicom = _dicom_study(tmp_path / "p")
    shutil.rmtree(dicom / "t2")
    image, _ = make_synthetic_case(SHAPE, seed=0)
    ds = pydicom.dcmread(next((dicom / "t1").iterdir()))
    shifted = _affine("axial")
    shifted[:3, 3] += 3.0  # not co-registered
    write_series(np.round(image[2]), shifted, dicom / "t2", description="T2 TSE AX", series_number=3,
                 study={"StudyInstanceUID": ds.StudyInstanceUID, "FrameOfReferenceUID": ds.FrameOfReferenceUID,
                        "PatientID": ds.PatientID})
    result = runner.invoke(app, ["check", "--dicom", str(dicom)])
    assert result.exit_code == 1 and "0/1 cases passed" in result.output


@pytest.mark.realdata
@pytest.mark.slow
def test_real_case_as_dicom_with_the_shipped_model(tmp_path: Path, shared_brats18: Path) -> None:
    case_dir = sorted(p for p in shared_brats18.iterdir() if p.is_dir())[0]
    imgs = {m: nib.load(str(case_dir / f"{case_dir.name}_{m}.nii.gz")) for m in MODS}
    dicom = tmp_path / "dicom" / case_dir.name
    write_study({m: np.asarray(img.dataobj) for m, img in imgs.items()}, imgs["t1"].affine, dicom)
    out = tmp_path / "out"
    result = runner.invoke(app, ["predict", "--dicom", str(dicom), "-o", str(out), "--output-format", "dicom-seg"])
    assert result.exit_code == 0, result.output
    _seg_equals_nifti(out, case_dir.name, dicom / "t1ce")
    truth = np.asarray(nib.load(str(case_dir / f"{case_dir.name}_seg.nii.gz")).dataobj)
    pred = np.asarray(nib.load(str(out / f"{case_dir.name}.nii.gz")).dataobj)
    from_nifti = runner.invoke(app, ["predict", "-i", str(case_dir), "-o", str(tmp_path / "out_nifti")])
    assert from_nifti.exit_code == 0, from_nifti.output
    nifti_img = nib.load(str(tmp_path / "out_nifti" / f"{case_dir.name}.nii.gz"))
    np.testing.assert_array_equal(pred, np.asarray(nifti_img.dataobj))  # the DICOM path changes nothing
    np.testing.assert_allclose(nib.load(str(out / f"{case_dir.name}.nii.gz")).affine, nifti_img.affine, atol=1e-4)
    both = np.count_nonzero((truth > 0) & (pred > 0))
    assert 2 * both / (np.count_nonzero(truth) + np.count_nonzero(pred)) > 0.7, "whole-tumour Dice on the DICOM path"


def test_skip_existing_redoes_a_case_without_its_seg(tmp_path: Path, fake) -> None:
    dicom = _dicom_study(tmp_path / "patient3")
    out = tmp_path / "out"
    args = ["predict", "--dicom", str(dicom), "-o", str(out), "--output-format", "dicom-seg", "--skip-existing"]
    assert runner.invoke(app, args).exit_code == 0
    result = runner.invoke(app, args)
    assert result.exit_code == 0 and "0 predicted, 1 skipped" in result.output
    (out / "patient3.seg.dcm").unlink()
    result = runner.invoke(app, args)
    assert result.exit_code == 0 and "1 predicted, 0 skipped" in result.output
    _seg_equals_nifti(out, "patient3", dicom / "t1ce")


def test_study_not_like_brats_input_is_refused_unless_forced(tmp_path: Path, fake) -> None:
    image, _ = make_synthetic_case(SHAPE, seed=0)
    image[3] += 50.0  # FLAIR background 50, not 0: not what the model was trained on
    dicom = tmp_path / "p"
    write_study({m: np.round(image[i]) for i, m in enumerate(MODS)}, _affine("axial"), dicom)
    out = tmp_path / "out"
    result = runner.invoke(app, ["predict", "--dicom", str(dicom), "-o", str(out)])
    assert result.exit_code == 1 and "flair background is 50, not 0" in result.output and "--force" in result.output
    assert not (out / "p.nii.gz").exists()
    result = runner.invoke(app, ["predict", "--dicom", str(dicom), "-o", str(out), "--force"])
    assert result.exit_code == 0 and (out / "p.nii.gz").is_file() and (out / "p.json").is_file()


def test_dicom_seg_command_converts_an_existing_label_map(tmp_path: Path, synthetic_dataset: Path) -> None:
    case_dir = sorted(p for p in synthetic_dataset.iterdir() if p.is_dir())[0]
    _flipped_reference(case_dir, case_dir.name, tmp_path / "ref")
    label = case_dir / f"{case_dir.name}_seg.nii.gz"
    before = _digest(tmp_path / "ref")
    out = tmp_path / "case.seg.dcm"
    result = runner.invoke(app, ["dicom-seg", str(label), "--reference", str(tmp_path / "ref"), "-o", str(out),
                                 "--manual"])
    assert result.exit_code == 0, result.output
    segments = pydicom.dcmread(out).SegmentSequence
    assert [s.SegmentAlgorithmType for s in segments] == ["MANUAL"] * 3
    assert not any("SegmentationAlgorithmIdentificationSequence" in s for s in segments)
    [series] = find_series(tmp_path / "ref")
    source = read_series(series)
    img = nib.load(str(label))
    expected = map_to_grid(get_scheme("brats2017").to_canonical(np.asarray(img.dataobj)), img.affine,
                           source.data.shape, source.affine)
    assert expected.any() and np.array_equal(read_dicom_seg(out, source), expected)
    assert _digest(tmp_path / "ref") == before
    inside = tmp_path / "ref" / "x.seg.dcm"
    result = runner.invoke(app, ["dicom-seg", str(label), "--reference", str(tmp_path / "ref"), "-o", str(inside)])
    assert result.exit_code == 1 and "inside the DICOM input folder" in result.output and not inside.exists()
    other = tmp_path / "other"
    write_series(np.zeros((8, 8, 4)), np.eye(4), other, description="T1",
                 study={"StudyInstanceUID": "1.2", "FrameOfReferenceUID": "1.3", "PatientID": "P"})
    result = runner.invoke(app, ["dicom-seg", str(label), "--reference", str(other), "-o", str(tmp_path / "b.dcm")])
    assert result.exit_code == 1 and "grid is not that of the series" in result.output
    assert not (tmp_path / "b.dcm").exists() and "Traceback" not in result.output
