"""Every input check fires on a crafted bad case, names case and file, and spares the other cases."""

import gzip
import json
import re

import nibabel as nib
import numpy as np
import pytest

from glioseg.data.checks import check_case, check_dataset
from glioseg.data.layouts import find_cases
from glioseg.data.reports import report_lines, write_report_json
from glioseg.data.synthetic import default_affine, write_synthetic_dataset

SHAPE = (24, 24, 24)
GOOD, BAD = "Brats18_SYN_000_1", "Brats18_SYN_001_1"


@pytest.fixture
def dataset(tmp_path):
    """Two fresh 24^3 brats2017 cases that a test may damage."""
    root = tmp_path / "data"
    write_synthetic_dataset(root, 2, layout="brats2017", shape=SHAPE, seed=7)
    return root


def path_of(root, suffix, case_id=BAD):
    return root / case_id / f"{case_id}_{suffix}.nii.gz"


def save(path, data, affine=None):
    """Replace a file by new voxels (fresh header), keeping its affine unless given."""
    old_affine = nib.load(path).affine if path.exists() and path.stat().st_size else default_affine(SHAPE)
    nib.save(nib.Nifti1Image(data, old_affine if affine is None else affine), str(path))


def edit_voxels(path, change, affine=None):
    """Replace a file's voxels by ``change(old voxels)`` (fresh header); returns the path."""
    save(path, change(np.asarray(nib.load(path).dataobj)), affine)
    return path


def shift_origin(path, mm):
    """Move a file's origin by ``mm`` along every axis, voxels unchanged; returns the path."""
    affine = nib.load(path).affine.copy()
    affine[:3, 3] += mm
    return edit_voxels(path, lambda voxels: voxels, affine)


def nnunet_with_open_scheme(root, n_cases, case_id):
    """nnU-Net cases whose ``case_id`` has ET relabelled NCR: alone, values {0, 1, 2} leave the scheme open."""
    write_synthetic_dataset(root, n_cases, layout="nnunet", shape=SHAPE)
    (root / "dataset.json").write_text('{"channel_names": {"0": "FLAIR", "1": "T1", "2": "T1ce", "3": "T2"}}')
    edit_voxels(root / "labelsTr" / f"{case_id}.nii.gz", lambda seg: np.where(seg == 3, 1, seg).astype(seg.dtype))


def truncate(root):
    p = path_of(root, "t1ce")
    p.write_bytes(p.read_bytes()[: int(p.stat().st_size * 0.6)])
    return p


def truncate_uncompressed(root):
    gz = path_of(root, "t2")
    p = gz.with_suffix("")  # .nii
    nib.save(nib.load(gz), str(p))
    gz.unlink()
    p.write_bytes(p.read_bytes()[:2000])
    return p


def garbage(root):
    p = path_of(root, "flair")
    p.write_bytes(np.random.default_rng(0).bytes(5000))
    return p


def text_in_gzip(root):
    p = path_of(root, "flair")
    p.write_bytes(gzip.compress(b"this is not an image\n" * 40))
    return p


def zero_bytes(root):
    p = path_of(root, "t2")
    p.write_bytes(b"")
    return p


def two_d(root):
    return edit_voxels(path_of(root, "t1"), lambda _: np.ones(SHAPE[:2], np.int16))


def four_d(root):
    return edit_voxels(path_of(root, "t1"), lambda _: np.ones((*SHAPE, 2), np.int16))


def shape_mismatch(root):
    return edit_voxels(path_of(root, "t2"), lambda _: np.ones((24, 24, 20), np.int16))


def affine_mismatch(root):
    return shift_origin(path_of(root, "t2"), 2.0)


def nan_voxels(root):
    def poison(flair):
        flair = flair.astype(np.float32)
        flair[3, 4, 5], flair[6, 7, 8] = np.nan, np.inf
        return flair

    return edit_voxels(path_of(root, "flair"), poison)


def all_zero(root):
    return edit_voxels(path_of(root, "t1ce"), lambda _: np.zeros(SHAPE, np.int16))


def label_three(root):
    return edit_voxels(path_of(root, "seg"), lambda seg: np.where(seg == 4, 3, seg).astype(seg.dtype))


def float_labels(root):
    return edit_voxels(path_of(root, "seg"), lambda seg: np.where(seg == 4, 1.5, seg).astype(np.float32))


def seg_shape(root):
    return edit_voxels(path_of(root, "seg"), lambda _: np.zeros((24, 24, 23), np.uint8))


def missing(root):
    p = path_of(root, "t1ce")
    p.unlink()
    return p.parent


def duplicate(root):
    p = path_of(root, "t1")
    nib.save(nib.load(p), str(p.with_suffix("")))  # X_t1.nii next to X_t1.nii.gz


def degenerate_affine(root):
    p = path_of(root, "t1")
    img = nib.Nifti1Image(np.asarray(nib.load(p).dataobj), None)
    img.header.set_sform(np.diag([1.0, 0.0, 1.0, 1.0]), code=1)  # zero voxel size along y
    nib.save(img, str(p))
    return p


BAD_CASES = [
    (truncate, "truncated", "truncated or corrupt"),
    (truncate_uncompressed, "truncated", "truncated or corrupt"),
    (garbage, "unreadable", "not a readable NIfTI"),
    (text_in_gzip, "unreadable", "not a readable NIfTI"),
    (zero_bytes, "empty-file", "0 bytes"),
    (two_d, "dimensions", "2-D image"),
    (four_d, "dimensions", "4-D image .*expected a 3-D"),
    (shape_mismatch, "shape-mismatch", r"t2 shape \(24, 24, 20\) differs from t1"),
    (affine_mismatch, "affine-mismatch", "t2 affine differs from t1's by up to 2"),
    (nan_voxels, "nan", "flair has 2 NaN/inf voxels"),
    (all_zero, "all-zero", "t1ce is all zeros"),
    (label_three, "label-values", r"unexpected label values \[3\] for scheme brats2017"),
    (float_labels, "label-values", "non-integer"),
    (seg_shape, "shape-mismatch", "segmentation shape"),
    (missing, "missing-modality", r"missing modalities \['t1ce'\]"),
    (duplicate, "duplicate", r"duplicate 't1' files"),
    (degenerate_affine, "affine", "degenerate voxel-to-world affine"),
]


@pytest.mark.parametrize("damage,check,message", BAD_CASES, ids=[b[0].__name__ for b in BAD_CASES])
def test_each_check_fires_on_its_bad_case(dataset, damage, check, message):
    path = damage(dataset)
    report = check_dataset(dataset)
    good, bad = report.cases
    assert (good.case_id, bad.case_id) == (GOOD, BAD)
    assert good.ok and good.status == "ok", good.findings
    assert not report.ok and report.n_failed == 1
    found = [f for f in bad.errors if f.check == check]
    assert found, bad.findings
    assert any(re.search(message, f.message) for f in found), [f.message for f in found]
    if path is not None:
        assert any(f.path == path for f in found)
    line = found[0].line(BAD)
    assert line.startswith(f"ERROR case {BAD}") and "\n" not in line
    assert any(BAD in line for line in report_lines(report))


def test_small_affine_difference_is_tolerated(dataset):
    shift_origin(path_of(dataset, "t2"), 1e-5)
    assert check_dataset(dataset).ok
    assert not check_dataset(dataset, atol=1e-7).ok


def test_empty_segmentation_is_a_warning(dataset):
    p = path_of(dataset, "seg")
    save(p, np.zeros(SHAPE, np.uint8))
    report = check_dataset(dataset)
    bad = report.cases[1]
    assert report.ok and bad.ok and bad.status == "warn"
    assert [f.check for f in bad.warnings] == ["empty-seg"] and bad.warnings[0].path == p


def test_unusual_spacing_is_a_warning(tmp_path):
    affine = np.diag([-1.0, -1.0, 3.0, 1.0])
    write_synthetic_dataset(tmp_path, 1, shape=SHAPE, affine=affine)
    report = check_dataset(tmp_path)
    assert report.ok and report.cases[0].status == "warn"
    assert report.cases[0].warnings[0].check == "spacing" and "3.0" in report.cases[0].warnings[0].message


def test_several_problems_in_one_case_are_all_reported(dataset):
    all_zero(dataset)
    nan_voxels(dataset)
    label_three(dataset)
    checks = {f.check for f in check_dataset(dataset).cases[1].errors}
    assert checks == {"all-zero", "nan", "label-values"}


def test_msd_stack_read_once_and_wrong_volume_count(tmp_path):
    write_synthetic_dataset(tmp_path, 2, layout="msd", shape=SHAPE)
    assert check_dataset(tmp_path).ok
    p = tmp_path / "imagesTr" / "BRATS_001.nii.gz"
    img = nib.load(p)
    nib.save(nib.Nifti1Image(np.asarray(img.dataobj)[..., :3], img.affine), str(p))
    report = check_dataset(tmp_path)
    assert report.cases[0].ok
    messages = [f.message for f in report.cases[1].errors if f.check == "dimensions"]
    assert len(messages) == 1 and "expected a 4-D file with >= 4 volumes" in messages[0]


def test_scheme_decided_from_all_cases(tmp_path):
    write_synthetic_dataset(tmp_path, 2, layout="brats2023", shape=SHAPE)
    seg = tmp_path / "BraTS-GLI-00001-000" / "BraTS-GLI-00001-000-seg.nii.gz"
    edit_voxels(seg, lambda seg: np.where(seg == 3, 4, seg).astype(seg.dtype))  # a resection cavity, no ET
    alone = check_case(find_cases(tmp_path)[1])  # 4 without any 3: BraTS 2017-21's ET? refused, not guessed
    assert not alone.ok and "--label-scheme brats2017" in alone.errors[0].message
    report = check_dataset(tmp_path)  # the other case has ET 3: BraTS 2024 for both
    assert report.ok and report.scheme == "brats2024" and "values 1,2,3,4" in report.scheme_evidence
    assert not check_dataset(tmp_path, label_scheme="brats2023").ok


def test_one_swapped_segmentation_among_good_ones_is_a_warning(tmp_path):
    write_synthetic_dataset(tmp_path, 3, layout="brats2017", shape=SHAPE, seed=7)
    swapped = path_of(tmp_path, "seg", "Brats18_SYN_002_1")
    edit_voxels(swapped, lambda seg: np.array([0, 2, 1, 3, 4], seg.dtype)[seg])  # 1 and 2 exchanged
    report = check_dataset(tmp_path)
    assert report.ok and report.scheme == "brats2017"  # the dataset as a whole decides
    assert [c.status for c in report.cases] == ["ok", "ok", "warn"]
    warning = report.cases[2].warnings[0]
    assert warning.check == "label-anatomy" and "look swapped" in warning.message and warning.path == swapped


def test_values_that_two_schemes_read_differently_are_refused(tmp_path):
    nnunet_with_open_scheme(tmp_path, 2, "BraTS_00001")  # no label names: 1/2/3 is BraTS 2023 or MSD
    report = check_dataset(tmp_path)
    assert not report.ok and "--label-scheme brats2023 or msd" in report.errors[0]
    assert all(c.errors[0].check == "label-scheme" for c in report.cases)
    assert check_dataset(tmp_path, label_scheme="brats2023").ok
    assert not check_dataset(tmp_path, label_scheme="brats2017").ok


def test_undecidable_scheme_is_a_dataset_error(tmp_path):
    nnunet_with_open_scheme(tmp_path, 1, "BraTS_00000")
    report = check_dataset(tmp_path)
    assert not report.ok and "--label-scheme" in report.errors[0]
    assert report.cases[0].errors[0].check == "label-scheme"
    assert check_dataset(tmp_path, label_scheme="brats2023").ok


def test_dataset_level_errors(tmp_path):
    report = check_dataset(tmp_path / "nowhere")
    assert not report.ok and "not a folder" in report.errors[0] and report.cases == []
    (tmp_path / "empty").mkdir()
    assert "no cases found" in check_dataset(tmp_path / "empty").errors[0]
    write_synthetic_dataset(tmp_path / "ok", 1, shape=SHAPE)
    assert "unknown label scheme" in check_dataset(tmp_path / "ok", label_scheme="nope").errors[0]


def test_json_report(dataset, tmp_path):
    label_three(dataset)
    report = check_dataset(dataset)
    out = write_report_json(report, tmp_path / "out" / "report.json")
    data = json.loads(out.read_text())
    assert data["ok"] is False and data["n_cases"] == 2 and data["n_failed"] == 1
    assert data["scheme"] == "brats2017" and data["layout"] == "brats2017"
    bad = data["cases"][1]
    assert bad["case_id"] == BAD and bad["status"] == "fail" and bad["label_values"] == [0, 1, 2, 3]
    assert bad["errors"][0]["check"] == "label-values" and bad["errors"][0]["path"].endswith("_seg.nii.gz")
    assert data["cases"][0]["status"] == "ok" and data["cases"][0]["shape"] == list(SHAPE)


def test_internal_error_is_isolated(dataset, monkeypatch):
    from glioseg.data import checks

    real = checks._check_values

    def boom(data, name, path, report):
        if report.case_id == BAD:
            raise RuntimeError("kaboom")
        real(data, name, path, report)

    monkeypatch.setattr(checks, "_check_values", boom)
    report = check_dataset(dataset, workers=2)
    assert report.cases[0].ok
    assert report.cases[1].errors[0].check == "internal" and "kaboom" in report.cases[1].errors[0].message


def test_workers_give_the_same_report(dataset):
    label_three(dataset)
    one, two = check_dataset(dataset), check_dataset(dataset, workers=2)

    def strip(report):
        return [{k: v for k, v in c.to_dict().items() if k != "seconds"} for c in report.cases]

    assert strip(one) == strip(two)


def test_each_file_read_once(dataset, monkeypatch):
    from glioseg.data import checks

    calls = []
    real = checks.load_nifti
    monkeypatch.setattr(checks, "load_nifti", lambda p, c: calls.append(p) or real(p, c))
    check_dataset(dataset)
    assert len(calls) == 10 and len(set(calls)) == 10
