"""Shape features on phantoms whose volume, area and axes are known."""

from __future__ import annotations

import math

import numpy as np
import pytest

from glioseg.radiomics.shape import SHAPE_STATS, components, extent, shape_features


def _ball(shape, centre, radius, spacing=(1.0, 1.0, 1.0)):
    grid = np.indices(shape).astype(float)
    return sum(((g - c) * s) ** 2 for g, c, s in zip(grid, centre, spacing, strict=True)) <= radius**2


def test_sphere_is_nearly_spherical_and_its_mesh_area_is_close_to_4_pi_r2():
    r = 12
    ball = _ball((40, 40, 40), (20, 20, 20), r)
    f = shape_features(ball, (1.0, 1.0, 1.0))
    assert 0.9 < f["sphericity"] <= 1.0  # the voxel staircase inflates the mesh area by a few %
    assert f["surface_mm2"] == pytest.approx(4 * math.pi * r * r, rel=0.1)
    assert f["elongation"] == pytest.approx(1.0, abs=0.01)
    assert f["extent"] == ball.sum() / (2 * r + 1) ** 3  # its box holds 2r + 1 voxel centres per axis


def test_a_cube_is_less_spherical_than_a_sphere_and_fills_its_box():
    cube = np.zeros((30, 30, 30), dtype=bool)
    cube[5:25, 5:25, 5:25] = True
    sphere = shape_features(_ball((30, 30, 30), (15, 15, 15), 10), (1.0, 1.0, 1.0))
    f = shape_features(cube, (1.0, 1.0, 1.0))
    assert f["extent"] == 1.0
    assert f["sphericity"] == pytest.approx((math.pi / 6) ** (1 / 3), abs=0.04)  # ideal cube 0.806
    assert f["sphericity"] < sphere["sphericity"] - 0.05


def test_ellipsoid_axes_with_anisotropic_spacing_give_the_axis_ratios():
    # world semi-axes 18, 9, 6 mm on a grid of 1 x 1 x 2 mm voxels
    grid = np.indices((48, 48, 24)).astype(float)
    mask = ((grid[0] - 24) / 18) ** 2 + ((grid[1] - 24) / 9) ** 2 + ((grid[2] * 2 - 24) / 6) ** 2 <= 1
    f = shape_features(mask, (1.0, 1.0, 2.0))
    assert f["elongation"] == pytest.approx(9 / 18, abs=0.02)
    assert f["flatness"] == pytest.approx(6 / 18, abs=0.03)
    assert f["major_axis_mm"] == pytest.approx(4 * 18 / math.sqrt(5), rel=0.03)  # 4 sqrt(a^2/5)


def test_components_count_separate_blobs_and_the_largest_share():
    mask = _ball((40, 40, 40), (10, 10, 10), 5) | _ball((40, 40, 40), (30, 30, 30), 3)
    count, largest = components(mask)
    small, big = _ball((40, 40, 40), (30, 30, 30), 3).sum(), _ball((40, 40, 40), (10, 10, 10), 5).sum()
    assert count == 2
    assert largest == pytest.approx(big / (big + small))


def test_diagonal_neighbours_are_one_component_26_connected():
    mask = np.zeros((5, 5, 5), dtype=bool)
    mask[1, 1, 1] = mask[2, 2, 2] = True
    assert components(mask) == (1, 1.0)


def test_empty_mask_gives_zeros():
    f = shape_features(np.zeros((8, 8, 8), dtype=bool), (1.0, 1.0, 1.0))
    assert set(f) == set(SHAPE_STATS)
    assert all(v == 0.0 for v in f.values())
    assert extent(np.zeros((3, 3, 3), dtype=bool)) == 0.0
