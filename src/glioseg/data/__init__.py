"""Data in and out: NIfTI case I/O (`nifti`), dataset layouts (`layouts`), the label-scheme decision
(`schemes`), the brain and whether an image is servable (`brain`), input checks (`checks`) and their
reports (`reports`), and synthetic phantoms (`synthetic`). numpy + affines only; no torch."""
