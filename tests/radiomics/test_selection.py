"""Feature selection: strongest first, constant and redundant columns skipped, training rows only."""

from __future__ import annotations

import numpy as np

from glioseg.radiomics.selection import select_columns


def test_strongest_first_and_redundant_or_constant_columns_skipped():
    rng = np.random.default_rng(0)
    y = rng.normal(size=40)
    strong = y + rng.normal(0, 0.1, 40)
    twin = 1 - strong  # rank-identical to strong (|rho| = 1): redundant
    weak = y + rng.normal(0, 1.5, 40)
    x = np.column_stack([weak, np.ones(40), twin, strong, rng.normal(size=40)])
    chosen = select_columns(x, y, k=2)
    assert chosen[0] in (2, 3) and 5 - chosen[0] not in chosen  # one of the twins, never both
    assert chosen[1] == 0 and 1 not in chosen


def test_skip_and_k_larger_than_the_candidates():
    x = np.column_stack([np.arange(5.0), np.arange(5.0) ** 2, np.zeros(5)])
    assert select_columns(x, np.arange(5.0), k=5, skip=[0]) == [1]
