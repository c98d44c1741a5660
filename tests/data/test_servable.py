"""Inputs the model cannot serve (background not 0, not skull-stripped) get a check warning naming the fix."""

import nibabel as nib
import numpy as np
import pytest

from glioseg.data import checks
from glioseg.data.checks import check_dataset
from glioseg.data.synthetic import write_synthetic_dataset

SHAPE = (40, 40, 40)
GOOD, BAD = "Brats18_SYN_000_1", "Brats18_SYN_001_1"
MODS = ("t1", "t1ce", "t2", "flair")


@pytest.fixture
def dataset(tmp_path):
    root = tmp_path / "data"
    write_synthetic_dataset(root, 2, layout="brats2017", shape=SHAPE, seed=3)
    return root


def files_of(root, case_id=BAD, with_seg=False):
    return [root / case_id / f"{case_id}_{m}.nii.gz" for m in (*MODS, *(("seg",) if with_seg else ()))]


def rewrite(path, change, affine=None, inter=None):
    """Replace a file's stored voxels by ``change(voxels)``, optionally its affine and scl_inter."""
    img = nib.load(path)
    data = change(np.asarray(img.dataobj.get_unscaled()))
    out = nib.Nifti1Image(data, img.affine if affine is None else affine, img.header)
    out.header.set_slope_inter(1.0, 0.0 if inter is None else inter)
    nib.save(out, str(path))


def findings(report, case_id=BAD):
    case = next(c for c in report.cases if c.case_id == case_id)
    return [f for f in case.findings if f.check in checks.UNSERVABLE_CHECKS]


def assert_warned(report, check, words):
    found = findings(report)
    assert {f.path.name.split("_")[-1] for f in found} == {f"{m}.nii.gz" for m in MODS}, found
    assert all(f.severity == "warning" and f.check == check and words in f.message for f in found), found
    assert all("\n" not in f.line(BAD) for f in found)
    assert findings(report, GOOD) == [] and report.ok  # warnings: the case is still usable by check's rules


def test_unservable_checks_constant():
    assert sorted(checks.UNSERVABLE_CHECKS) == ["background-offset", "not-skull-stripped"]


def test_scl_inter_background_is_flagged(dataset):
    for path in files_of(dataset):
        rewrite(path, lambda v: v, inter=100.0)  # every voxel reads +100
    report = check_dataset(dataset)
    assert_warned(report, "background-offset", "background is 100, not 0 (the header's scl_inter is 100)")
    assert "reset scl_slope/scl_inter" in findings(report)[0].message


def test_constant_offset_is_flagged(dataset):
    for path in files_of(dataset):
        rewrite(path, lambda v: (v + 100).astype(v.dtype))
    assert_warned(check_dataset(dataset), "background-offset", "subtract 100")


def test_noise_around_the_brain_is_flagged(dataset):
    rng = np.random.default_rng(0)
    for path in files_of(dataset):
        rewrite(path, lambda v: np.where(v == 0, np.abs(rng.normal(0, 30, v.shape)), v).astype(v.dtype))
    assert_warned(check_dataset(dataset), "not-skull-stripped", "image border is one background value")


def _with_scalp(v, pad=12):
    """The brain padded by ``pad`` zeros per side, with a bright shell (scalp) around it beyond a dark gap."""
    out = np.pad(v, pad)
    centre = (np.array(out.shape) - 1) / 2
    grid = np.indices(out.shape, dtype=np.float32)
    radius = np.sqrt(sum((g - c) ** 2 for g, c in zip(grid, centre, strict=True)))
    out[(radius > 26) & (radius < 29)] = 1000
    return out.astype(v.dtype)


def test_scalp_shell_around_the_brain_is_flagged(dataset):
    affine = nib.load(files_of(dataset)[0]).affine.copy()
    affine[:3, 3] -= affine[:3, :3] @ np.full(3, 12.0)  # same world position after padding
    for path in files_of(dataset, with_seg=True):
        seg = path.name.endswith("_seg.nii.gz")
        rewrite(path, (lambda v: np.pad(v, 12)) if seg else _with_scalp, affine=affine)
    report = check_dataset(dataset)
    assert_warned(report, "not-skull-stripped", "apart from it (e.g. a scalp or skull shell")


def test_whole_head_sized_foreground_is_flagged(tmp_path):
    write_synthetic_dataset(tmp_path, 1, shape=SHAPE, affine=np.diag([-6.0, -6.0, 6.0, 1.0]))
    case = check_dataset(tmp_path).cases[0]
    found = [f for f in case.findings if f.check == "not-skull-stripped"]
    assert len(found) == 4 and "like a whole head" in found[0].message


@pytest.mark.parametrize("layout", ["brats2017", "brats2023", "msd", "nnunet"])
@pytest.mark.parametrize("shape", [(16, 16, 16), (24, 32, 20), (48, 48, 48)])
def test_no_false_positive_on_phantoms(tmp_path, layout, shape):
    write_synthetic_dataset(tmp_path, 3, layout=layout, shape=shape, seed=11)
    report = check_dataset(tmp_path)
    assert report.ok and all(c.status == "ok" for c in report.cases), [c.findings for c in report.cases]


@pytest.mark.realdata
@pytest.mark.slow
def test_no_false_positive_on_real_brats18(shared_brats18):
    report = check_dataset(shared_brats18, workers=2)
    assert report.ok and len(report.cases) == 24 and report.scheme == "brats2017"
    assert [(c.case_id, f.check) for c in report.cases for f in c.findings] == []
