"""Data in and out: NIfTI case I/O (`nifti`), dataset layouts (`layouts`), input checks (`checks`)
and synthetic phantoms (`synthetic`). numpy + affines only; no torch."""
