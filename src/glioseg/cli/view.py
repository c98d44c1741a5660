"""The ``view`` command: a self-contained HTML viewer (NiiVue) of one case and its label maps."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

from glioseg.cli.app import check_label_scheme, fail
from glioseg.cli.paths import check_output_file, writing

if TYPE_CHECKING:  # annotations only: the module is imported inside the command
    from glioseg.data.nifti import CaseFiles


def view(
    case: Path = typer.Argument(..., help="A case folder (any layout) holding the four modalities."),
    pred: Path | None = typer.Option(None, "--pred", help="Predicted label map of this case (on its image grid)."),
    gt: Path | None = typer.Option(None, "--gt", help="Ground-truth label map \\[the case's own segmentation, "
                                   "when it has one]."),
    out: Path = typer.Option(..., "-o", "--out", help="Output .html file."),
    label_scheme: str | None = typer.Option(None, "--label-scheme",
                                            help="Label scheme of the ground truth \\[detected]."),
    pred_label_scheme: str | None = typer.Option(None, "--pred-label-scheme", help="Label scheme of the "
                                                 "prediction (--pred) \\[detected, preferring the ground truth's]."),
    neurological: bool = typer.Option(False, "--neurological", help="Open in the neurological convention (the "
                                      "patient's left on the left) instead of the radiological one."),
) -> None:
    """Write one HTML page that shows a case in the browser, offline: the four modalities (switchable),
    the prediction and the ground truth as label overlays (NCR red, ED green, ET yellow) with an
    opacity slider, three planes or one, and the volumes in ml. NiiVue and the volumes are inside
    the page (12-15 MB for a 240 x 240 x 155 case), so it opens from file:// with no network.
    """
    from glioseg.data.naming import DatasetError
    from glioseg.data.nifti import CaseError
    from glioseg.interop.viewer import ViewerError, read_viewer_inputs, write_viewer
    from glioseg.labels import LabelSchemeError

    check_label_scheme(label_scheme)
    check_label_scheme(pred_label_scheme, "--pred-label-scheme")
    if out.suffix.lower() not in (".html", ".htm"):
        fail(f"-o {out}: the viewer is an HTML page; give a path ending in .html, e.g. -o view.html")
    check_output_file(out, "-o")
    try:
        inputs = read_viewer_inputs(_one_case(case), pred, gt, label_scheme, pred_label_scheme)
        with writing(out, "-o"):
            written = write_viewer(inputs, out, radiological=not neurological)
    except (DatasetError, CaseError, LabelSchemeError, ViewerError) as exc:
        fail(str(exc))
    overlays = ", ".join(n for n, m in (("prediction", inputs.pred), ("ground truth", inputs.gt)) if m is not None)
    typer.echo(f"wrote {written} ({written.stat().st_size / 1e6:.1f} MB; {overlays or 'no label map'})")


def _one_case(folder: Path) -> CaseFiles:
    """The only case in ``folder``; exit with one line when it is missing or holds several or none."""
    from glioseg.data.layouts import find_cases

    if not folder.exists():
        fail(f"{folder}: case folder not found; give a folder holding the case's four modalities")
    cases = find_cases(folder)
    if len(cases) != 1:
        fail(f"{folder}: holds {len(cases)} cases; give one case folder")
    return cases[0]
