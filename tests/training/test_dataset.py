"""Tests for glioseg.training.dataset: foreground share, determinism, padding, whole volumes, errors."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from glioseg.data.nifti import Case, CaseFiles
from glioseg.data.synthetic import make_synthetic_case, synthetic_geometry
from glioseg.labels import ED, ET, NCR, get_scheme
from glioseg.preprocessing.cache import load_preprocessed, save_preprocessed
from glioseg.preprocessing.normalize import PreprocessError, preprocess_case
from glioseg.training.augment import Compose, default_augmentation
from glioseg.training.dataset import PatchDataset, crop_with_padding, whole_volume_shape
from glioseg.training.spatial import RandomSpatial


def save_case(root: Path, case_id: str, shape=(36, 32, 30), seed=0, with_label=True) -> None:
    image, label = make_synthetic_case(shape, seed=seed)
    case = Case(case_id, image, label if with_label else None, synthetic_geometry(shape),
                CaseFiles(case_id, {}), get_scheme("brats2017"))
    save_preprocessed(preprocess_case(case), root)


@pytest.fixture(scope="module")
def pre(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("pre")
    for i in range(3):
        save_case(root, f"case{i}", seed=i + 10)
    return root


IDS = ["case0", "case1", "case2"]


def test_foreground_share_and_class_balance(pre):
    ds = PatchDataset(pre, IDS, patch_size=8, fg_fraction=0.5, length=600, seed=1)
    forced = Counter()
    n_fg = 0
    for i in range(len(ds)):
        s = ds[i]
        if s["fg_class"] >= 0:
            n_fg += 1
            forced[s["fg_class"]] += 1
            assert s["label"][4, 4, 4] == s["fg_class"]  # centred on a voxel of that class
    assert abs(n_fg / len(ds) - 0.5) < 0.07
    assert set(forced) == {NCR, ED, ET}
    shares = np.array([forced[c] for c in (NCR, ED, ET)]) / n_fg
    assert np.all(np.abs(shares - 1 / 3) < 0.08)  # balanced over classes, not voxels


def test_no_oversampling_means_random_centres(pre):
    ds = PatchDataset(pre, IDS, patch_size=8, fg_fraction=0.0, length=50)
    assert all(ds[i]["fg_class"] == -1 for i in range(len(ds)))


def test_same_seed_same_batches_across_workers(pre):
    aug = default_augmentation()

    def batches(seed, workers, epoch=0):
        ds = PatchDataset(pre, IDS, patch_size=16, augment=aug, seed=seed, length=6)
        ds.set_epoch(epoch)
        return list(DataLoader(ds, batch_size=2, num_workers=workers, shuffle=False))

    a, b = batches(3, 0), batches(3, 2)
    for x, y in zip(a, b, strict=True):
        assert torch.equal(x["image"], y["image"]) and torch.equal(x["label"], y["label"])
        assert x["case_id"] == y["case_id"]
    c, d = batches(4, 0), batches(3, 0, epoch=1)
    assert not all(torch.equal(x["image"], y["image"]) for x, y in zip(a, c, strict=True))
    assert not all(torch.equal(x["image"], y["image"]) for x, y in zip(a, d, strict=True))


def test_patch_larger_than_volume_is_padded(pre):
    ds = PatchDataset(pre, ["case0"], patch_size=(48, 40, 44), fg_fraction=0.0, length=5)
    case = load_preprocessed(pre, "case0")
    s = ds[0]
    assert s["image"].shape == (4, 48, 40, 44) and s["label"].shape == (48, 40, 44)
    assert s["image"].dtype == torch.float32 and s["label"].dtype == torch.uint8
    brain_voxels = int((np.asarray(case.image) != 0).any(0).sum())
    assert int((s["image"] != 0).any(0).sum()) <= brain_voxels  # padding is zero


def test_whole_volume_mode(pre, tmp_path):
    save_case(tmp_path, "big", shape=(40, 34, 30), seed=1)
    save_case(tmp_path, "small", shape=(24, 24, 20), seed=2)
    ds = PatchDataset(tmp_path, ["big", "small"], patch_size="whole", length=4)
    shapes = [load_preprocessed(tmp_path, c).meta["shape"] for c in ("big", "small")]
    assert ds.patch_size == whole_volume_shape(shapes)
    assert all(n % 16 == 0 and n >= max(s[a] for s in shapes) for a, n in enumerate(ds.patch_size))
    for i in range(4):
        s = ds[i]
        case = load_preprocessed(tmp_path, s["case_id"])
        assert s["image"].shape == (4, *ds.patch_size)
        assert int((s["label"] > 0).sum()) == int((np.asarray(case.label) > 0).sum())  # nothing cut off
        total = float(np.abs(np.asarray(case.image, dtype=np.float64)).sum())
        assert abs(float(s["image"].abs().double().sum()) - total) < 1e-3 * total


def test_identity_spatial_grid_equals_plain_crop(pre):
    ident = Compose([RandomSpatial(rotation_deg=0, scale=(1, 1), elastic_magnitude=(0, 0), p_rotation=1)])
    for size in (16, (15, 12, 9)):
        plain = PatchDataset(pre, IDS, patch_size=size, length=5, seed=2)
        warped = PatchDataset(pre, IDS, patch_size=size, augment=ident, length=5, seed=2)
        for i in range(5):
            p, w = plain[i], warped[i]
            assert p["case_id"] == w["case_id"]
            assert torch.allclose(p["image"], w["image"], atol=1e-5) and torch.equal(p["label"], w["label"])


def test_augmented_samples_are_valid(pre):
    ds = PatchDataset(pre, IDS, patch_size=20, augment=default_augmentation("onehot"), length=8)
    for i in range(8):
        s = ds[i]
        assert s["image"].shape == (4, 20, 20, 20) and torch.isfinite(s["image"]).all()
        assert set(s["label"].unique().tolist()) <= {0, NCR, ED, ET}


def test_missing_fg_cache_is_rebuilt(pre, tmp_path):
    save_case(tmp_path, "c", seed=5)
    (tmp_path / "c" / "fg.npz").unlink()
    ds = PatchDataset(tmp_path, ["c"], patch_size=8, fg_fraction=1.0, length=20)
    assert all(ds[i]["fg_class"] > 0 for i in range(20))
    assert (tmp_path / "c" / "fg.npz").is_file()


def test_crop_with_padding():
    a = np.arange(2 * 4 * 4 * 4).reshape(2, 4, 4, 4)
    out = crop_with_padding(a, (-1, 2, 0), (3, 3, 4))
    assert out.shape == (2, 3, 3, 4)
    assert np.array_equal(out[:, 1:, :2], a[:, :2, 2:4])
    assert not out[:, 0].any() and not out[:, :, 2].any()
    assert not crop_with_padding(a, (10, 0, 0), (2, 2, 2)).any()


def test_bad_inputs(pre, tmp_path):
    with pytest.raises(PreprocessError, match="no cases"):
        PatchDataset(pre, [], patch_size=8)
    with pytest.raises(PreprocessError, match=r"nocase.*glioseg preprocess"):
        PatchDataset(pre, ["nocase"], patch_size=8)
    save_case(tmp_path, "unlabelled", with_label=False)
    with pytest.raises(PreprocessError, match=r"without a label.*unlabelled"):
        PatchDataset(tmp_path, ["unlabelled"], patch_size=8)
    with pytest.raises(ValueError, match="patch_size"):
        PatchDataset(pre, IDS, patch_size=(8, 8))
    with pytest.raises(ValueError, match="fg_fraction"):
        PatchDataset(pre, IDS, patch_size=8, fg_fraction=1.5)
    with pytest.raises(IndexError):
        PatchDataset(pre, IDS, patch_size=8, length=3)[3]
