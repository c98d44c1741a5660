"""First-order intensity statistics of one region of one normalised modality (IBSI "intensity
statistics" family, computed with numpy/scipy: pyradiomics has no wheel for this Python).

The images are z-scored inside the brain by
:func:`glioseg.preprocessing.normalize.zscore_in_mask` (clipped to the 0.5/99.5 in-brain
percentiles), the same normalisation the segmentation networks see, so values are in units of
the brain's standard deviation and comparable between scanners.

- ``mean``, ``std`` (population), ``p10``, ``median``, ``p90`` (numpy's linear interpolation),
- ``skewness`` and ``kurtosis`` (excess kurtosis, 0 for a Gaussian; both biased moment estimators
  as pyradiomics; 0 for a constant region).

An empty region has every statistic 0.
"""

from __future__ import annotations

import numpy as np

INTENSITY_STATS: tuple[str, ...] = ("mean", "std", "p10", "median", "p90", "skewness", "kurtosis")


def intensity_features(values: np.ndarray) -> dict[str, float]:
    """Every :data:`INTENSITY_STATS` entry of the voxel values of one region.

    Args:
        values: float ``(N,)`` normalised intensities inside the region (N may be 0).

    Returns:
        stat name -> value.
    """
    if values.size == 0:
        return dict.fromkeys(INTENSITY_STATS, 0.0)
    v = values.astype(np.float64)
    mean, std = float(v.mean()), float(v.std())
    p10, median, p90 = (float(p) for p in np.percentile(v, (10, 50, 90)))
    if std > 1e-12:
        z = (v - mean) / std
        skew, kurt = float((z**3).mean()), float((z**4).mean() - 3.0)
    else:
        skew, kurt = 0.0, 0.0
    return {"mean": mean, "std": std, "p10": p10, "median": median, "p90": p90, "skewness": skew,
            "kurtosis": kurt}
