"""Preprocessing: brain crop, z-score and resampling (`normalize`), the on-disk cache, the inverse back
to the case grid, and cross-validation splits (`splits`)."""
