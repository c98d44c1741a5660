"""The cascade's box: from the low stage's tumour to the high stage's grid, and back."""

import numpy as np

from glioseg.data.layouts import find_cases
from glioseg.data.nifti import read_case
from glioseg.inference.cascade import box_on_grid, tumour_box
from glioseg.preprocessing.normalize import preprocess_case
from glioseg.preprocessing.restore import paste_box, restore_probabilities


def test_tumour_box_margin_and_clipping():
    probs = np.zeros((3, 20, 20, 20), dtype=np.float32)
    assert tumour_box(probs, "regions", 0.5, 4.0, (1.0, 1.0, 1.0)) is None
    probs[0, 5:8, 10:11, 17:19] = 0.9
    assert tumour_box(probs, "regions", 0.5, 4.0, (1.0, 2.0, 1.0)) == ((1, 12), (8, 13), (13, 20))
    assert tumour_box(probs, "regions", 0.95, 4.0, (1.0, 1.0, 1.0)) is None  # below the threshold


def test_tumour_box_of_a_labels_target():
    probs = np.zeros((4, 10, 10, 10), dtype=np.float32)
    probs[0] = 0.6  # background wins everywhere but in one voxel
    probs[3, 4, 5, 6] = 0.9
    assert tumour_box(probs, "labels", 0.5, 0.0, (1.0, 1.0, 1.0)) == ((4, 5), (5, 6), (6, 7))


def test_box_on_grid_maps_crop_and_resampling():
    meta = {"bbox": [[10, 50], [0, 40], [5, 45]], "cropped_shape": [40, 40, 40], "shape": [20, 20, 20]}
    assert box_on_grid(((20, 30), (0, 40), (5, 9)), meta) == ((5, 10), (0, 20), (0, 2))
    assert box_on_grid(((20, 30), (0, 40), (5, 9)), meta, 4) == ((4, 12), (0, 20), (0, 4))
    assert box_on_grid(((0, 3), (0, 1), (44, 45)), meta) == ((0, 1), (0, 1), (19, 20))  # never empty


def test_paste_box_without_resampling_is_exact(synthetic_dataset):
    pc = preprocess_case(read_case(find_cases(synthetic_dataset)[0]), None)
    case_probs = np.full((3, *pc.meta["canonical_shape"]), 0.25, dtype=np.float32)
    sub = ((2, 10), (3, 9), (0, 4))
    pasted = paste_box(case_probs.copy(), np.ones((3, 8, 6, 4), dtype=np.float32), sub, pc.meta)
    inside = np.zeros(pc.meta["shape"], dtype=np.float32)
    inside[2:10, 3:9, 0:4] = 1.0
    expected = np.where(restore_probabilities(inside[None], pc.meta)[0] > 0, 1.0, 0.25)
    np.testing.assert_array_equal(pasted, np.broadcast_to(expected, pasted.shape))


def test_paste_box_with_resampling_blends_only_near_the_box(synthetic_dataset):
    pc = preprocess_case(read_case(find_cases(synthetic_dataset)[0]), 2.0)
    case_probs = np.zeros((3, *pc.meta["canonical_shape"]), dtype=np.float32)
    sub = tuple((n // 4, n // 2) for n in pc.meta["shape"])
    box_shape = tuple(b - a for a, b in sub)
    pasted = paste_box(case_probs, np.ones((3, *box_shape), dtype=np.float32), sub, pc.meta)
    assert pasted.min() >= 0.0 and pasted.max() <= 1.0 + 1e-6
    covered = pasted[0] > 0
    assert 0 < covered.sum() < covered.size
    assert np.isclose(pasted[0], 1.0).sum() > 0  # the box's interior takes its values
