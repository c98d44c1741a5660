"""Evaluation: BraTS metrics, folder evaluation, the HTML report and figures (numpy, matplotlib)."""
