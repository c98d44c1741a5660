"""Univariate feature selection with a redundancy filter, used inside every CV training fold.

Candidates are ranked by ``|Spearman rho|`` with the target on the rows given (the training fold
only); constant columns are skipped; a candidate whose ``|rho|`` with an already chosen feature
exceeds :data:`MAX_REDUNDANCY` is skipped too (e.g. ``ratio_NCR_TC`` and ``ratio_ET_TC``, which
sum to 1, are never chosen together). Ties keep column order, so the selection is deterministic.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

MAX_REDUNDANCY = 0.9


def _rho(a: np.ndarray, b: np.ndarray) -> float:
    from scipy.stats import spearmanr

    value = spearmanr(a, b).statistic
    return abs(float(value)) if np.isfinite(value) else 0.0


def select_columns(x: np.ndarray, y: np.ndarray, k: int, skip: Sequence[int] = (),
                   max_redundancy: float = MAX_REDUNDANCY) -> list[int]:
    """Indices of up to ``k`` columns of ``x`` ``(N, F)`` most rank-correlated with ``y`` ``(N,)``.

    Args:
        x: float ``(N, F)`` training rows.
        y: float ``(N,)`` target (days, or 0/1 grade).
        k: how many to choose.
        skip: columns never chosen (e.g. ``age``, which a model always keeps).
        max_redundancy: largest ``|rho|`` allowed between two chosen columns.

    Returns:
        Column indices, strongest first.
    """
    scores = sorted((-_rho(x[:, j], y), j) for j in range(x.shape[1])
                    if j not in skip and np.ptp(x[:, j]) > 1e-12)
    chosen: list[int] = []
    for _, j in scores:
        if len(chosen) == k:
            break
        if all(_rho(x[:, j], x[:, c]) <= max_redundancy for c in chosen):
            chosen.append(j)
    return chosen
