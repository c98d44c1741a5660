"""Location features in world coordinates: a flipped axis with the matching affine changes nothing."""

from __future__ import annotations

import numpy as np
import pytest

from glioseg.radiomics.location import location_features, world_points

RAS = np.diag([1.0, 1.0, 1.0, 1.0])


def _brain_and_tumour(shape=(40, 30, 20), tumour_x=slice(28, 34)):
    brain = np.zeros(shape, dtype=bool)
    brain[4:36, 2:28, 2:18] = True  # x extent 4..35: midline at x = 19.5
    tumour = np.zeros(shape, dtype=bool)
    tumour[tumour_x, 10:14, 8:12] = True
    return brain, tumour


def test_tumour_right_of_the_midline_in_ras():
    brain, tumour = _brain_and_tumour()
    f = location_features(tumour, brain, RAS)
    assert f["hemisphere_right"] == 1.0
    assert f["right_fraction"] == 1.0
    assert f["midline_signed_mm"] == pytest.approx(30.5 - 19.5)  # centroid x = 30.5
    assert f["midline_min_distance_mm"] == pytest.approx(28 - 19.5)
    assert f["centroid_rel_x"] == pytest.approx((30.5 - 4) / (35 - 4))


def test_flipped_array_with_flipped_affine_gives_the_same_features():
    brain, tumour = _brain_and_tumour()
    n = brain.shape[0]
    las = np.diag([-1.0, 1.0, 1.0, 1.0])
    las[0, 3] = n - 1  # voxel i lies at world x = n - 1 - i: the same world positions, stored flipped
    flipped = location_features(tumour[::-1], brain[::-1], las)
    assert flipped == pytest.approx(location_features(tumour, brain, RAS))
    assert flipped["hemisphere_right"] == 1.0


def test_the_same_array_under_a_flipped_affine_is_in_the_other_hemisphere():
    brain, tumour = _brain_and_tumour()
    las = np.diag([-1.0, 1.0, 1.0, 1.0])
    f = location_features(tumour, brain, las)
    assert f["hemisphere_right"] == 0.0
    assert f["midline_signed_mm"] == pytest.approx(-(30.5 - 19.5))
    assert f["centroid_rel_x"] == pytest.approx(1 - (30.5 - 4) / (35 - 4))


def test_a_tumour_across_the_midline_touches_it():
    brain, tumour = _brain_and_tumour(tumour_x=slice(16, 24))
    f = location_features(tumour, brain, RAS)
    assert f["midline_min_distance_mm"] == 0.0
    assert f["right_fraction"] == pytest.approx(0.5)


def test_world_points_apply_spacing_and_origin():
    affine = np.diag([2.0, 3.0, 4.0, 1.0])
    affine[:3, 3] = (10, 20, 30)
    assert world_points(np.array([[1, 1, 1]]), affine).tolist() == [[12.0, 23.0, 34.0]]


def test_empty_tumour_gives_zeros():
    brain, _ = _brain_and_tumour()
    assert all(v == 0 for v in location_features(np.zeros_like(brain), brain, RAS).values())
