"""Fixtures of the training tests: the small preprocessed dataset most of them train on."""

from __future__ import annotations

from pathlib import Path

import pytest

from glioseg.data.layouts import find_cases
from glioseg.preprocessing.cache import preprocess_dataset


@pytest.fixture(scope="module")
def preprocessed(make_synthetic_dataset, tmp_path_factory) -> Path:
    """4 synthetic 32^3 cases (seed 1), preprocessed; modules that need other cases define their own."""
    raw = make_synthetic_dataset(n_cases=4, shape=(32, 32, 32), seed=1)
    out = tmp_path_factory.mktemp("pre")
    assert not preprocess_dataset(find_cases(raw), out).failed
    return out
