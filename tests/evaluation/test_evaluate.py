import csv
import json
import shutil
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from typer.testing import CliRunner

from glioseg.cli import app
from glioseg.data.layouts import find_cases
from glioseg.data.nifti import CaseError
from glioseg.evaluation.evaluate import evaluate_folder, find_predictions, read_label_file
from glioseg.evaluation.metrics import HD95_EMPTY_MM
from glioseg.labels import SCHEMES

runner = CliRunner()


def _seg(case_dir: Path) -> Path:
    return next(case_dir.glob("*_seg.nii.gz"))


def _write_like(reference: Path, data: np.ndarray, path: Path, affine=None) -> Path:
    img = nib.load(str(reference))
    nib.save(nib.Nifti1Image(data.astype(np.uint8), img.affine if affine is None else affine, img.header), str(path))
    return path


def _read_csv(path: Path) -> dict[str, dict[str, str]]:
    with open(path, newline="") as fh:
        return {row["case_id"]: row for row in csv.DictReader(fh)}


@pytest.fixture()
def dataset(make_synthetic_dataset) -> Path:
    return make_synthetic_dataset("brats2017", n_cases=3, shape=(32, 32, 32), seed=1)


def test_find_predictions_naming(tmp_path):
    for name in ("A.nii.gz", "B_seg.nii.gz", "C-seg.nii", "D.nii.gz", "D_seg.nii.gz", "other.nii.gz", "notes.txt"):
        (tmp_path / name).write_bytes(b"x")
    found, ambiguous, unmatched = find_predictions(tmp_path, ["A", "B", "C", "D", "E"])
    assert {k: v.name for k, v in found.items()} == {"A": "A.nii.gz", "B": "B_seg.nii.gz", "C": "C-seg.nii"}
    assert list(ambiguous) == ["D"] and "keep one" in ambiguous["D"]
    assert unmatched == ["other.nii.gz"]
    with pytest.raises(FileNotFoundError, match="prediction folder"):
        find_predictions(tmp_path / "nope", ["A"])


def test_evaluate_cli_missing_corrupt_and_unmatched(dataset, tmp_path):
    cases = find_cases(dataset)
    pred = tmp_path / "pred"
    pred.mkdir()
    shutil.copy(cases[0].label, pred / f"{cases[0].case_id}.nii.gz")  # perfect
    (pred / f"{cases[1].case_id}_seg.nii.gz").write_bytes(b"not a nifti at all")  # corrupt
    shutil.copy(cases[0].label, pred / "stranger.nii.gz")  # matches no case; case 2 has no prediction
    out = tmp_path / "report"
    result = runner.invoke(app, ["evaluate", "--pred", str(pred), "--gt", str(dataset), "-o", str(out)])
    assert result.exit_code == 1, result.output
    assert "1 missing" in result.output and cases[2].case_id in result.output
    rows = _read_csv(out / "cases.csv")
    assert set(rows) == {c.case_id for c in cases}
    good, bad, gone = rows[cases[0].case_id], rows[cases[1].case_id], rows[cases[2].case_id]
    assert good["status"] == "ok" and float(good["dice_ET"]) == 1.0 and float(good["hd95_WT"]) == 0.0
    assert bad["status"] == "error" and "NIfTI" in bad["message"]
    assert gone["status"] == "missing" and float(gone["dice_WT"]) == 0.0
    assert float(gone["hd95_TC"]) == HD95_EMPTY_MM and float(gone["volume_true_ml_WT"]) > 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["missing_predictions"] == [cases[2].case_id]
    assert list(summary["errors"]) == [cases[1].case_id]
    assert summary["unmatched_predictions"] == ["stranger.nii.gz"]
    assert summary["summary"]["WT"]["dice"]["mean"] == pytest.approx(1 / 3)
    assert "373.13" in summary["conventions"]["empty_masks"]
    html = (out / "report.html").read_text()
    assert cases[2].case_id in html and "Failures (2)" in html


def test_evaluate_cli_all_good_with_lesion_wise(dataset, tmp_path):
    pred = tmp_path / "pred"
    pred.mkdir()
    for case in find_cases(dataset):
        shutil.copy(case.label, pred / f"{case.case_id}-seg.nii.gz")
    out = tmp_path / "report"
    result = runner.invoke(app, ["evaluate", "--pred", str(pred), "--gt", str(dataset), "-o", str(out),
                                 "--lesion-wise", "--no-thumbnails"])
    assert result.exit_code == 0, result.output
    for row in _read_csv(out / "cases.csv").values():
        for region in ("WT", "TC", "ET"):
            assert float(row[f"dice_{region}"]) == 1.0 and float(row[f"hd95_{region}"]) == 0.0
            assert float(row[f"lesion_dice_{region}"]) == 1.0 and float(row[f"lesion_hd95_{region}"]) == 0.0
        assert float(row["pooled_dice"]) == 1.0


def _shifted_predictions(dataset, pred, shift, axis):
    """Write every case's ground truth, rolled by ``shift`` voxels along ``axis``, as its prediction."""
    pred.mkdir()
    for case in find_cases(dataset):
        data = np.asarray(nib.load(str(case.label)).dataobj)
        _write_like(case.label, np.roll(data, shift, axis=axis), pred / f"{case.case_id}.nii.gz")
    return pred


def test_evaluate_shifted_prediction_scores_drop(dataset, tmp_path):
    pred = _shifted_predictions(dataset, tmp_path / "pred", shift=2, axis=1)
    result = evaluate_folder(pred, dataset)
    assert not result.failed
    for case in result.cases:
        wt = case.regions[next(iter(case.regions))]
        assert 0.3 < wt.dice < 1.0
        assert 0.0 < wt.hd95 <= 2.0 + 1e-9  # a pure 2-voxel translation moves no surface voxel further


def test_evaluate_geometry_and_label_scheme_errors(dataset, tmp_path):
    cases = find_cases(dataset)
    pred = tmp_path / "pred"
    pred.mkdir()
    gt0 = np.asarray(nib.load(str(cases[0].label)).dataobj)
    moved = nib.load(str(cases[0].label)).affine.copy()
    moved[:3, 3] += 5.0
    _write_like(cases[0].label, gt0, pred / f"{cases[0].case_id}.nii.gz", affine=moved)
    canonical = SCHEMES["brats2017"].to_canonical(np.asarray(nib.load(str(cases[1].label)).dataobj))
    _write_like(cases[1].label, SCHEMES["brats2023"].from_canonical(canonical), pred / f"{cases[1].case_id}.nii.gz")
    result = evaluate_folder(pred, dataset)
    assert "geometry" in result.errors[cases[0].case_id] and "ground-truth grid" in result.errors[cases[0].case_id]
    assert "--pred-label-scheme" in result.errors[cases[1].case_id]
    fixed = evaluate_folder(pred, dataset, pred_label_scheme="brats2023")
    assert next(c for c in fixed.cases if c.case_id == cases[1].case_id).mean_dice == 1.0


def test_evaluate_cli_bad_inputs(dataset, tmp_path):
    result = runner.invoke(app, ["evaluate", "--pred", str(tmp_path / "none"), "--gt", str(dataset)])
    assert result.exit_code == 1 and "prediction folder" in result.output
    result = runner.invoke(app, ["evaluate", "--pred", str(tmp_path), "--gt", str(tmp_path / "nogt")])
    assert result.exit_code == 1 and "not a folder" in result.output
    result = runner.invoke(app, ["evaluate", "--pred", str(tmp_path), "--gt", str(dataset), "--label-scheme", "x"])
    assert result.exit_code == 1 and "brats2017" in result.output


def test_read_label_file_rejects_fractional_labels(dataset, tmp_path):
    case = find_cases(dataset)[0]
    img = nib.load(str(case.label))
    path = tmp_path / "frac.nii.gz"
    nib.save(nib.Nifti1Image(np.full(img.shape, 0.5, np.float32), img.affine), str(path))
    with pytest.raises(CaseError, match="non-integer"):
        read_label_file(path, case.case_id, None, "brats2017")


@pytest.mark.slow
def test_evaluate_with_workers_matches_serial(dataset, tmp_path):
    pred = _shifted_predictions(dataset, tmp_path / "pred", shift=1, axis=0)
    serial, parallel = evaluate_folder(pred, dataset), evaluate_folder(pred, dataset, workers=2)
    assert [c.to_row() for c in serial.cases] == [c.to_row() for c in parallel.cases]


# ----------------------------------------------------------------------------- real data


def _shifted_copies(root: Path, out: Path, shift: int) -> None:
    out.mkdir()
    for case in find_cases(root):
        img = nib.load(str(case.label))
        data = np.asarray(img.dataobj)
        nib.save(nib.Nifti1Image(np.roll(data, shift, axis=0), img.affine, img.header),
                 str(out / f"{case.case_id}.nii.gz"))


@pytest.mark.realdata
@pytest.mark.slow
def test_real_ground_truth_against_itself_and_shifted(shared_brats18, tmp_path):
    own = tmp_path / "own"
    own.mkdir()
    for case in find_cases(shared_brats18):
        (own / f"{case.case_id}_seg.nii.gz").symlink_to(case.label)
    start = time.perf_counter()
    result = evaluate_folder(own, shared_brats18, lesion_wise=True)
    assert len(result.cases) == 24 and not result.failed
    for case in result.cases:
        assert all(s.dice == 1.0 and s.hd95 == 0.0 for s in case.regions.values()), case.case_id
        assert all(s.lesion_dice == 1.0 and s.lesion_hd95 == 0.0 for s in case.lesion.values()), case.case_id
    print(f"24 real cases against themselves (lesion-wise too): {time.perf_counter() - start:.1f} s")
    _shifted_copies(shared_brats18, tmp_path / "shifted", 3)
    shifted = evaluate_folder(tmp_path / "shifted", shared_brats18)
    assert not shifted.failed
    for case in shifted.cases:
        for region, scores in case.regions.items():
            if scores.volume_true_ml > 0:
                assert scores.dice < 1.0 and 0.0 < scores.hd95 <= 3.0 + 1e-9, (case.case_id, region)
    assert 0.75 < shifted.summary["WT"]["dice"]["mean"] < 0.95
    assert shifted.summary["ET"]["dice"]["mean"] < shifted.summary["WT"]["dice"]["mean"]  # thin ET rims suffer most
