"""Tests for glioseg.preprocessing.normalize: crop, z-score, resampling, restore, cache, batch isolation."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from glioseg.cli import app
from glioseg.data.layouts import find_cases
from glioseg.data.nifti import Case, CaseError, CaseFiles
from glioseg.data.synthetic import make_synthetic_case, synthetic_geometry, write_synthetic_dataset
from glioseg.labels import get_scheme
from glioseg.preprocessing.cache import list_preprocessed, load_preprocessed, preprocess_dataset, read_meta
from glioseg.preprocessing.normalize import PreprocessError, brain_bbox, preprocess_case
from glioseg.preprocessing.restore import restore_to_case_grid

SHARED = Path(__file__).resolve().parents[3] / "shared/data/brats18"


def synthetic_case(shape=(40, 44, 36), seed=0) -> Case:
    image, label = make_synthetic_case(shape, seed=seed)
    geo = synthetic_geometry(shape)
    return Case("synth", image, label, geo, CaseFiles("synth", {}), get_scheme("brats2017"))


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    root = tmp_path / "raw"
    write_synthetic_dataset(root, 3, shape=(32, 36, 32), seed=1)
    return root


def test_crop_and_zscore_inside_brain():
    case = synthetic_case()
    pc = preprocess_case(case)
    brain = (pc.image != 0).any(0)
    for c in range(4):
        values = pc.image[c][brain]
        assert abs(values.mean()) < 1e-3
        assert abs(values.std() - 1.0) < 0.02
    assert np.all(pc.image[:, ~brain] == 0)
    mask = (case.image != 0).any(0)
    bbox = pc.meta["bbox"]
    assert mask[tuple(slice(a, b) for a, b in bbox)].sum() == mask.sum()  # nothing of the brain lost
    assert tuple(pc.image.shape[1:]) == tuple(b - a for a, b in bbox) == tuple(pc.meta["shape"])
    assert pc.image.dtype == np.float32 and pc.label.dtype == np.uint8


def test_clipping_limits_outliers():
    case = synthetic_case()
    case.image[1, 20, 22, 18] = 1e6  # one hot voxel must not dominate the statistics
    pc = preprocess_case(case)
    stats = pc.meta["normalization"]
    assert stats["clip_high"][1] < 1e5
    assert pc.image[1].max() < 10


def test_brain_bbox_margin_clipped_to_volume():
    mask = np.zeros((10, 10, 10), bool)
    mask[0, 4:6, 8:10] = True
    assert brain_bbox(mask, margin=2) == ((0, 3), (2, 8), (6, 10))


def test_meta_pastes_crop_back_exactly(tmp_path):
    case = synthetic_case(seed=3)
    pc = preprocess_case(case)
    meta = json.loads(json.dumps(pc.meta))  # what meta.json gives back
    assert np.array_equal(restore_to_case_grid(pc.label, meta, order=0), case.label)
    restored = restore_to_case_grid(pc.image, meta, order=1)
    assert restored.shape == case.image.shape
    sl = tuple(slice(a, b) for a, b in meta["bbox"])
    assert np.array_equal(restored[(slice(None), *sl)], pc.image)
    outside = np.ones(case.image.shape[1:], bool)
    outside[sl] = False
    assert not restored[:, outside].any()


def test_resample_then_restore_recovers_labels():
    case = synthetic_case(shape=(48, 48, 48), seed=2)
    pc = preprocess_case(case, spacing_mm=2.0)
    assert all(abs(s - 2.0) < 0.1 for s in pc.meta["effective_spacing"])
    assert all(abs(n - c / 2) <= 1 for n, c in zip(pc.meta["shape"], pc.meta["cropped_shape"], strict=True))
    back = restore_to_case_grid(pc.label, pc.meta, order=0)
    assert back.shape == case.label.shape
    wt, wt_back = case.label > 0, back > 0
    dice = 2 * (wt & wt_back).sum() / (wt.sum() + wt_back.sum())
    assert dice > 0.9
    assert (back == case.label).mean() > 0.97


def test_grid_affine_maps_resampled_voxels_to_world():
    case = synthetic_case(shape=(40, 40, 40))
    pc = preprocess_case(case, spacing_mm=2.0)
    affine = np.array(pc.meta["affine"])
    canon = case.geometry.canonical_affine
    x0, y0, z0 = (b[0] for b in pc.meta["bbox"])
    # centre of resampled voxel 0 lies half an original voxel inside the crop's corner (2x zoom)
    scale = np.array(pc.meta["cropped_shape"]) / np.array(pc.meta["shape"])
    expected = canon @ np.array([x0 + (scale[0] - 1) / 2, y0 + (scale[1] - 1) / 2, z0 + (scale[2] - 1) / 2, 1])
    assert np.allclose(affine @ np.array([0, 0, 0, 1]), expected)


def test_bad_inputs_raise_clear_errors():
    case = synthetic_case()
    with pytest.raises(CaseError, match=r"synth.*spacing"):
        preprocess_case(case, spacing_mm=0)
    empty = Case("empty", np.zeros_like(case.image), None, case.geometry, CaseFiles("empty", {}))
    with pytest.raises(CaseError, match=r"empty.*zero everywhere"):
        preprocess_case(empty)
    pc = preprocess_case(case)
    with pytest.raises(ValueError, match="does not match"):
        restore_to_case_grid(pc.label[1:], pc.meta, order=0)
    with pytest.raises(ValueError, match="order"):
        restore_to_case_grid(pc.label, pc.meta, order=3)


def test_dataset_roundtrip_and_mmap(dataset, tmp_path):
    out = tmp_path / "pre"
    result = preprocess_dataset(find_cases(dataset), out)
    assert [r.status for r in result.results] == ["done"] * 3
    ids = list_preprocessed(out)
    assert len(ids) == 3
    info = json.loads((out / "dataset.json").read_text())
    assert info["cases"] == ids and info["label_schemes"] == ["brats2017"]
    pc = load_preprocessed(out, ids[0])
    assert isinstance(pc.image, np.memmap) and pc.image.dtype == np.float32 and pc.image.shape[0] == 4
    assert pc.label.dtype == np.uint8 and pc.label.shape == pc.image.shape[1:]
    fg = np.load(out / ids[0] / "fg.npz")
    for cls in fg.files:
        coords = fg[cls]
        assert np.all(pc.label[coords[:, 0], coords[:, 1], coords[:, 2]] == int(cls))
        assert len(coords) == (pc.label == int(cls)).sum()
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temp folders left


def test_rerun_skips_up_to_date_and_redoes_stale(dataset, tmp_path):
    out = tmp_path / "pre"
    cases = find_cases(dataset)
    preprocess_dataset(cases, out)
    again = preprocess_dataset(cases, out)
    assert [r.status for r in again.results] == ["skipped"] * 3
    t1 = cases[1].images["t1"].path
    stamp = time.time() + 5
    os.utime(t1, (stamp, stamp))
    third = {r.case_id: r.status for r in preprocess_dataset(cases, out).results}
    assert third == {cases[0].case_id: "skipped", cases[1].case_id: "done", cases[2].case_id: "skipped"}
    resampled = preprocess_dataset(cases, out, spacing_mm=2.0)  # other settings: redo all
    assert [r.status for r in resampled.results] == ["done"] * 3
    assert read_meta(out, cases[0].case_id)["target_spacing"] == 2.0


def test_bad_case_is_isolated(dataset, tmp_path):
    cases = find_cases(dataset)
    bad = cases[1].images["flair"].path
    bad.write_bytes(b"not a nifti file at all")
    out = tmp_path / "pre"
    result = preprocess_dataset(cases, out)
    status = {r.case_id: r for r in result.results}
    assert status[cases[1].case_id].status == "failed"
    assert cases[1].case_id in status[cases[1].case_id].error and "flair" in status[cases[1].case_id].error
    assert list_preprocessed(out) == [cases[0].case_id, cases[2].case_id]
    assert not (out / cases[1].case_id).exists()
    res = CliRunner().invoke(app, ["preprocess", str(dataset), str(tmp_path / "cli")])
    assert res.exit_code == 1
    assert cases[1].case_id in res.output and "2 done" in res.output


def test_load_missing_or_corrupt_case(tmp_path):
    with pytest.raises(PreprocessError, match=r"nocase.*glioseg preprocess"):
        load_preprocessed(tmp_path, "nocase")
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "meta.json").write_text("{not json")
    with pytest.raises(PreprocessError, match=r"broken.*corrupt"):
        load_preprocessed(tmp_path, "broken")
    with pytest.raises(PreprocessError, match="not a folder"):
        list_preprocessed(tmp_path / "absent")


@pytest.mark.slow
def test_cli_parallel_workers(dataset, tmp_path):
    out = tmp_path / "pre"
    res = CliRunner().invoke(app, ["preprocess", str(dataset), str(out), "--workers", "2", "--spacing", "2"])
    assert res.exit_code == 0, res.output
    assert "3 done" in res.output
    assert len(list_preprocessed(out)) == 3
    res = CliRunner().invoke(app, ["preprocess", str(dataset), str(out), "--workers", "2", "--spacing", "2"])
    assert "3 up to date" in res.output


@pytest.mark.slow
@pytest.mark.realdata
def test_all_shared_cases_preprocess(tmp_path):
    if not SHARED.is_dir():
        pytest.skip(f"shared data not found at {SHARED}")
    start = time.perf_counter()
    result = preprocess_dataset(find_cases(SHARED), tmp_path / "pre", workers=2)
    seconds = time.perf_counter() - start
    assert not result.failed, [r.error for r in result.failed]
    assert len(list_preprocessed(tmp_path / "pre")) == 24
    print(f"\npreprocessed 24 shared cases in {seconds:.1f} s ({seconds / 24:.2f} s/case, 2 workers)")
