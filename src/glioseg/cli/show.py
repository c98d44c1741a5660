"""The ``show`` command: a picture of one case, ground truth and prediction."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

from glioseg.cli.app import check_label_scheme, fail, read_one_case
from glioseg.cli.paths import check_output_dir, check_output_file, writing

if TYPE_CHECKING:  # annotations only: the modules are imported inside the command
    import numpy as np

    from glioseg.data.nifti import Case


def show(
    case: Path = typer.Argument(..., help="A case folder (any layout)."),
    pred: Path | None = typer.Option(None, "--pred", help="Predicted label map of this case."),
    out: Path = typer.Option(..., "-o", "--out", help="Output .png file, or a folder for <ID>.png."),
    gif: bool = typer.Option(False, "--gif", help="Also write an axial slice-sweep GIF next to the PNG."),
    label_scheme: str | None = typer.Option(None, "--label-scheme",
                                            help="Label scheme of the input case's ground truth \\[detected]."),
    pred_label_scheme: str | None = typer.Option(None, "--pred-label-scheme", help="Label scheme of the "
                                                 "prediction (--pred) \\[detected, preferring the ground truth's]."),
    convention: str = typer.Option("radiological", "--convention", help="Display convention: radiological (the "
                                   "patient's right on the image's left, as radiologists read) or neurological (the "
                                   "patient's left on the left) \\[radiological].", show_default=False),
) -> None:
    """Picture of a case: ground truth and prediction on FLAIR and T1ce, three planes.

    Every panel is marked with its orientation (R/L, A/P, S/I) and the picture names its display
    convention: radiological by default (axial and coronal views show the patient's right on the
    image's left), neurological with --convention neurological; sagittal views have the anterior
    side on the left. The GIF sweeps axial slices with titles, the slice number and a legend.
    """
    from glioseg.data.naming import DatasetError
    from glioseg.data.nifti import CaseError
    from glioseg.evaluation.figures import CONVENTIONS, case_figure, save_figure, save_gif, sweep_frames
    from glioseg.labels import LabelSchemeError

    check_label_scheme(label_scheme)
    check_label_scheme(pred_label_scheme, "--pred-label-scheme")
    if convention not in CONVENTIONS:
        fail(f"--convention {convention!r} is not a display convention; use one of {', '.join(CONVENTIONS)}")
    _check_picture_path(out, gif)
    try:
        c = read_one_case(case, label_scheme)
        labels = None if pred is None else _read_prediction(c, pred, pred_label_scheme)
    except (DatasetError, CaseError, LabelSchemeError) as exc:
        fail(str(exc))
    png = out if _is_png(out) else out / f"{c.case_id}.png"
    if not _is_png(out):  # the picture's name is known now: a folder of that name would block it
        _check_picture_path(png, gif)
    fig = case_figure(c.image[3], c.image[1], c.label, labels, c.geometry.canonical_spacing, c.case_id, convention)
    with writing(png, "-o"):
        typer.echo(f"wrote {save_figure(fig, png)}")
    if gif:
        try:
            with writing(png.with_suffix(".gif"), "-o"):
                frames = sweep_frames(c.image[3], c.label, labels, title=c.case_id, convention=convention)
                typer.echo(f"wrote {save_gif(frames, png.with_suffix('.gif'))}")
        except typer.Exit:
            png.unlink(missing_ok=True)  # all or nothing: no PNG without the GIF that was asked for
            raise


def _is_png(path: Path) -> bool:
    return path.suffix.lower() == ".png"


def _check_picture_path(out: Path, gif: bool) -> None:
    """Exit with a one-line error when ``-o`` (a ``.png`` file, else a folder) cannot be written."""
    if not _is_png(out):
        check_output_dir(out, "-o")
        return
    check_output_file(out, "-o")
    if gif:
        check_output_file(out.with_suffix(".gif"), "-o (with --gif)")


def _read_prediction(case: Case, pred: Path, pred_label_scheme: str | None) -> np.ndarray:
    """The prediction's canonical labels ``(X, Y, Z)``; CaseError when it is not on the case's grid."""
    from glioseg.data.nifti import CaseError
    from glioseg.evaluation.evaluate import read_label_file

    raw, geo, _ = read_label_file(pred, case.case_id, pred_label_scheme,
                                  case.scheme.name if case.scheme else None, "--pred-label-scheme")
    if not geo.matches(case.geometry):
        raise CaseError(case.case_id, f"prediction shape {geo.shape} / affine differ from the case's "
                        f"{case.geometry.shape}; give a prediction on the case's grid", pred)
    return case.geometry.to_canonical(raw)
