"""The ``dicom-seg`` command: an existing NIfTI label map written as a DICOM-SEG on its source series."""

from __future__ import annotations

from pathlib import Path

import typer

from glioseg.cli.app import check_label_scheme, fail
from glioseg.cli.dicom_inputs import check_outside_dicom
from glioseg.cli.paths import check_output_file, writing


def dicom_seg(
    labels: Path = typer.Argument(..., help="Label map (.nii.gz), e.g. a prediction <OUT>/<ID>.nii.gz."),
    reference: Path = typer.Option(..., "--reference", help="Folder of the DICOM series the label map was made "
                                   "from (its grid, in any axis order or direction)."),
    out: Path = typer.Option(..., "-o", "--out", help="The DICOM-SEG file to write, e.g. case.seg.dcm."),
    label_scheme: str | None = typer.Option(None, "--label-scheme", help="Label scheme of the label map "
                                            "\\[detected from its values]."),
    manual: bool = typer.Option(False, "--manual", help="The label map was drawn by hand: segments say MANUAL "
                                "instead of AUTOMATIC (glioseg)."),
) -> None:
    """Write a label map as a DICOM Segmentation (NCR, ED, ET) on the DICOM series it was made from."""
    from glioseg.data.nifti import CaseError
    from glioseg.evaluation.evaluate import read_label_file
    from glioseg.interop.dicom import DicomError, find_series
    from glioseg.interop.dicom_seg import write_dicom_seg
    from glioseg.interop.dicom_volume import map_to_grid, read_series

    check_label_scheme(label_scheme)
    check_output_file(out, "-o/--out")
    check_outside_dicom(out.parent, reference, "-o/--out")
    if out.resolve() == labels.resolve():
        fail(f"-o/--out: {out} is the input label map; give a new file, e.g. {labels.name.split('.')[0]}.seg.dcm")
    try:
        canonical, geometry, scheme = read_label_file(labels, labels.name, label_scheme, None)
        found = find_series(reference)
        if len(found) != 1:
            fail(f"--reference {reference}: holds {len(found)} series ({', '.join(s.label() for s in found)}); "
                 "give the folder of the one series the label map was made from")
        source = read_series(found[0])
    except (CaseError, DicomError, ValueError) as exc:
        fail(str(exc))
    try:
        on_series = map_to_grid(canonical, geometry.affine, source.data.shape, source.affine)
    except ValueError as exc:
        fail(f"{labels}: its grid is not that of the series {found[0].label()}: {exc}")
    try:
        with writing(out, "-o/--out"):
            write_dicom_seg(on_series, source, out, manual=manual)
    except ValueError as exc:
        fail(f"{labels}: {exc}")
    typer.echo(f"wrote {out} ({scheme.name} labels -> segments NCR, ED, ET on series {found[0].label()})")
