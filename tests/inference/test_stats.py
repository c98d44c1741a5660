"""The per-prediction statistics ``<ID>.json`` (issue 16, part 3): volumes, components and world
bounding boxes computed by hand, oblique grids, empty predictions, and the file predict writes."""

import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from glioseg.data.layouts import find_cases
from glioseg.data.nifti import Geometry
from glioseg.inference.batch import predict_dataset
from glioseg.inference.predictor import Prediction
from glioseg.inference.stats import SCHEMA, prediction_stats, region_stats, stats_path, world_box
from glioseg.labels import ED, ET, NCR


def _geometry(shape, affine) -> Geometry:
    return Geometry.from_image(nib.Nifti1Image(np.zeros(shape, dtype=np.float32), np.asarray(affine, float)))


LPS_AFFINE = np.array([[-1.0, 0, 0, 50], [0, -1.5, 0, 40], [0, 0, 2.0, -30], [0, 0, 0, 1]])


def test_volumes_components_and_world_box_by_hand() -> None:
    geo = _geometry((20, 20, 10), LPS_AFFINE)  # voxel 1 x 1.5 x 2 = 3 mm^3, on-disk LPS
    disk = np.zeros((20, 20, 10), dtype=np.uint8)
    disk[2:4, 3:5, 1:3] = ET  # 8 voxels
    disk[10:12, 10:11, 5:6] = ET  # 2 voxels, a second ET component
    disk[2:4, 5:6, 1:3] = NCR  # 4 voxels touching the first ET blob
    disk[15:18, 15:18, 7:9] = ED  # 18 voxels, apart
    stats = region_stats(geo.to_canonical(disk), geo)
    assert {k: v["voxels"] for k, v in stats.items()} == {"NCR": 4, "ED": 18, "ET": 10, "TC": 14, "WT": 32}
    assert stats["WT"]["volume_ml"] == pytest.approx(32 * 3 / 1000)
    assert {k: v["components"] for k, v in stats.items()} == {"NCR": 1, "ED": 1, "ET": 2, "TC": 2, "WT": 3}
    box = stats["ED"]["bbox"]
    assert box["voxels"] == {"min": [15, 15, 7], "max": [17, 17, 8]}
    # world x = 50 - i, y = 40 - 1.5 j, z = -30 + 2 k (voxel centres), RAS; LPS negates x and y
    assert box["ras_mm"] == {"min": [33.0, 14.5, -16.0], "max": [35.0, 17.5, -14.0]}
    assert box["lps_mm"] == {"min": [-35.0, -17.5, -16.0], "max": [-33.0, -14.5, -14.0]}


def test_oblique_grid_volume_and_box() -> None:
    angle = np.deg2rad(30)
    rot = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]])
    affine = np.eye(4)
    affine[:3, :3] = rot @ np.diag([1.0, 1.0, 2.5])
    geo = _geometry((8, 8, 8), affine)
    disk = np.zeros((8, 8, 8), dtype=np.uint8)
    disk[1:3, 1:3, 1:2] = ED
    stats = region_stats(geo.to_canonical(disk), geo)
    assert stats["ED"]["volume_ml"] == pytest.approx(4 * 2.5 / 1000)
    corners = np.array([[i, j, 1] for i in (1, 2) for j in (1, 2)], float) @ affine[:3, :3].T
    assert stats["ED"]["bbox"]["ras_mm"]["min"] == pytest.approx(corners.min(axis=0).tolist(), abs=1e-3)
    assert stats["ED"]["bbox"]["ras_mm"]["max"] == pytest.approx(corners.max(axis=0).tolist(), abs=1e-3)


def test_empty_prediction_and_bad_shape() -> None:
    geo = _geometry((6, 6, 6), LPS_AFFINE)
    stats = prediction_stats("c", np.zeros((6, 6, 6), np.uint8), geo, label_map="c.nii.gz",
                             model={"name": "m", "sha256": "ab" * 32}, timings={"total": 1.23456})
    assert stats["schema"] == SCHEMA and stats["model"] == {"name": "m", "sha256": "ab" * 32, "kind": None}
    assert all(r == {"voxels": 0, "volume_ml": 0.0, "components": 0, "bbox": None} for r in stats["regions"].values())
    assert stats["timings_s"] == {"total": 1.2346}
    assert world_box(np.zeros((6, 6, 6), bool), geo) is None
    with pytest.raises(ValueError, match="shape"):
        region_stats(np.zeros((6, 6, 5), np.uint8), geo)


class _Fixed:
    target = "regions"

    def predict_case(self, case, return_probabilities=False):
        labels = np.zeros(case.geometry.canonical_shape, dtype=np.uint8)
        labels[4:8, 4:8, 4:8], labels[10:12, 10:12, 10:12] = NCR, ET
        return Prediction(case.case_id, labels, None, timings={"total": 0.5})


def test_predict_writes_stats_next_to_every_label_map(tmp_path: Path, make_synthetic_dataset) -> None:
    data = tmp_path / "data"
    shutil.copytree(make_synthetic_dataset(layout="brats2017", n_cases=2, shape=(24, 24, 24)), data)
    cases = find_cases(data)
    out = tmp_path / "out"
    model = {"name": "tiny", "sha256": "cd" * 32, "kind": "bundle", "path": "/x"}
    results = predict_dataset(_Fixed(), cases, out, record={"model": model})
    assert [r.status for r in results] == ["done", "done"]
    for case in cases:
        stats = json.loads(stats_path(out, case.case_id).read_text())
        label = nib.load(str(out / f"{case.case_id}.nii.gz"))
        assert stats["label_map"] == f"{case.case_id}.nii.gz" and stats["model"]["sha256"] == "cd" * 32
        assert stats["regions"]["NCR"]["voxels"] == 64 and stats["regions"]["TC"]["components"] == 2
        voxel_ml = abs(np.linalg.det(label.affine[:3, :3])) / 1000
        assert stats["regions"]["WT"]["volume_ml"] == pytest.approx(72 * voxel_ml, abs=1e-4)
        assert stats["grid"]["shape"] == list(label.shape) and {"read", "total", "case"} <= set(stats["timings_s"])
    record = json.loads((out / "manifest.jsonl").read_text().splitlines()[0])
    assert f"{cases[0].case_id}.json" in record["files"]
    assert not list(out.glob(".*")), "no staging leftovers"


def test_failed_case_leaves_no_stats(tmp_path: Path, make_synthetic_dataset) -> None:
    class Failing(_Fixed):
        def predict_case(self, case, return_probabilities=False):
            raise RuntimeError("network exploded")

    data = tmp_path / "data"
    shutil.copytree(make_synthetic_dataset(layout="brats2017", n_cases=1, shape=(24, 24, 24)), data)
    out = tmp_path / "out"
    [result] = predict_dataset(Failing(), find_cases(data), out)
    assert result.status == "failed" and not list(out.glob("*.json"))


def test_written_json_reads_back_equal_with_compact_number_lists(tmp_path: Path) -> None:
    from glioseg.inference.stats import write_stats

    geo = _geometry((20, 20, 10), LPS_AFFINE)
    disk = np.zeros((20, 20, 10), dtype=np.uint8)
    disk[15:18, 15:18, 7:9] = ED
    stats = prediction_stats("c", geo.to_canonical(disk), geo, label_map="c.nii.gz", timings={"total": 2.0})
    path = write_stats(stats, tmp_path / "c.json")
    text = path.read_text()
    assert json.loads(text) == json.loads(json.dumps(stats)) and '"min": [15, 15, 7]' in text
    assert not list(tmp_path.glob(".*")), "no temporary file left"
