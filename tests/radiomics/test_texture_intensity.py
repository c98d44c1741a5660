"""GLCM texture and first-order statistics against values computed by hand."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from glioseg.radiomics.intensity import intensity_features
from glioseg.radiomics.texture import DIRECTIONS, GLCM_LEVELS, texture_features


def test_checkerboard_contrast_and_homogeneity_follow_from_the_13_directions():
    image = (np.indices((10, 10, 10)).sum(axis=0) % 2).astype(np.float32)  # parity of i + j + k
    mask = np.ones(image.shape, dtype=bool)
    f = texture_features(image, mask)
    # 3 axis and 4 body-diagonal directions join opposite parities (grey levels 1 and 16),
    # the 6 face diagonals join equal ones
    differ = sum(1 for d in DIRECTIONS if sum(abs(c) for c in d) % 2 == 1)
    assert differ == 7 and len(DIRECTIONS) == 13
    gap = GLCM_LEVELS - 1
    assert f["contrast"] == pytest.approx(differ / 13 * gap**2)
    assert f["homogeneity"] == pytest.approx((differ / (1 + gap) + (13 - differ)) / 13)


def test_constant_region_has_no_texture():
    image = np.full((6, 6, 6), 3.0, dtype=np.float32)
    f = texture_features(image, np.ones(image.shape, dtype=bool))
    assert f == {"contrast": 0.0, "homogeneity": 1.0, "energy": 1.0, "entropy": 0.0, "correlation": 1.0}


def test_texture_ignores_voxels_outside_the_region():
    rng = np.random.default_rng(0)
    image = rng.normal(size=(12, 12, 12)).astype(np.float32)
    mask = np.zeros(image.shape, dtype=bool)
    mask[3:9, 3:9, 3:9] = True
    noisy = image.copy()
    noisy[~mask] = 1000.0
    assert texture_features(noisy, mask) == texture_features(image, mask)


def test_first_order_statistics_match_scipy():
    values = np.random.default_rng(1).gamma(2.0, size=500)
    f = intensity_features(values)
    assert f["mean"] == pytest.approx(values.mean())
    assert f["std"] == pytest.approx(values.std())
    assert f["median"] == pytest.approx(np.median(values))
    assert f["p10"] == pytest.approx(np.percentile(values, 10))
    assert f["skewness"] == pytest.approx(stats.skew(values))
    assert f["kurtosis"] == pytest.approx(stats.kurtosis(values))  # excess, biased: scipy's defaults


def test_empty_and_constant_regions():
    assert all(v == 0 for v in intensity_features(np.array([])).values())
    f = intensity_features(np.full(5, 2.0))
    assert (f["mean"], f["std"], f["skewness"], f["kurtosis"]) == (2.0, 0.0, 0.0, 0.0)
