"""Helpers every stage uses: the one bounding box and atomic writes."""

import os
import stat

import numpy as np
import pytest

from glioseg.utils import atomic_write, bounding_box


def mask_with(shape, *voxels):
    mask = np.zeros(shape, bool)
    for v in voxels:
        mask[v] = True
    return mask


def test_bounding_box_3d():
    mask = np.zeros((10, 10, 10), bool)
    mask[2:5, 3:6, 4:7] = True
    assert bounding_box(mask) == (slice(2, 5), slice(3, 6), slice(4, 7))
    assert bounding_box(mask, margin=3) == (slice(0, 8), slice(0, 9), slice(1, 10))
    assert mask[bounding_box(mask)].all()


def test_bounding_box_2d():
    mask = mask_with((6, 8), (1, 2), (3, 5))
    assert bounding_box(mask) == (slice(1, 4), slice(2, 6))
    assert bounding_box(mask, margin=1) == (slice(0, 5), slice(1, 7))


@pytest.mark.parametrize("shape", [(3, 3, 3), (4, 5), (7,)])
def test_bounding_box_of_an_empty_mask_is_none(shape):
    assert bounding_box(np.zeros(shape, bool)) is None
    assert bounding_box(np.zeros(shape, bool), margin=2) is None


def test_bounding_box_margin_clipped_at_both_borders():
    mask = mask_with((10, 10, 10), (0, 4, 9), (0, 5, 8))
    assert bounding_box(mask, margin=2) == (slice(0, 3), slice(2, 8), slice(6, 10))
    assert bounding_box(mask, margin=50) == (slice(0, 10),) * 3  # never beyond the array


def test_bounding_box_margin_per_axis():
    mask = mask_with((10, 10, 10), (4, 4, 4))
    assert bounding_box(mask, margin=(0, 2, 9)) == (slice(4, 5), slice(2, 7), slice(0, 10))
    assert bounding_box(mask, margin=np.array([1, 1, 1])) == bounding_box(mask, margin=1)
    with pytest.raises(ValueError, match="one per axis"):
        bounding_box(mask, margin=(1, 2))


def test_bounding_box_of_a_non_bool_mask():
    labels = np.zeros((5, 5, 5), np.uint8)
    labels[1, 2, 3] = 4
    assert bounding_box(labels) == (slice(1, 2), slice(2, 3), slice(3, 4))


def test_atomic_write(tmp_path):
    target = tmp_path / "sub" / "x.nii.gz"

    def broken(tmp):
        tmp.write_bytes(b"half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        atomic_write(target, broken)
    assert not target.exists() and list(target.parent.iterdir()) == []
    atomic_write(target, lambda tmp: tmp.write_bytes(b"ok"))
    atomic_write(target, lambda tmp: tmp.write_bytes(b"new"))
    assert target.read_bytes() == b"new" and [p.name for p in target.parent.iterdir()] == ["x.nii.gz"]


def test_atomic_write_gives_normal_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        out = atomic_write(tmp_path / "a.txt", lambda tmp: tmp.write_text("x"))
    finally:
        os.umask(old)
    assert stat.S_IMODE(out.stat().st_mode) == 0o644
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]
