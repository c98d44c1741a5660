"""Commands on raw datasets: ``check``, ``info``, ``synth``."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

from glioseg.cli.app import check_label_scheme, console, fail, read_one_case
from glioseg.cli.dicom_inputs import dicom_cases, scratch_folder, series_option
from glioseg.cli.paths import check_output_dir, check_output_file, writing

if TYPE_CHECKING:  # annotations only: the modules are imported inside the commands
    from collections.abc import Sequence

    import numpy as np

    from glioseg.data.nifti import Case
    from glioseg.data.reports import DatasetReport
    from glioseg.labels import LabelScheme


def check(
    dataset: Path = typer.Argument(..., help="Dataset folder (any layout) or one case folder."),
    label_scheme: str | None = typer.Option(None, "--label-scheme", help="Label scheme of the input "
                                            "segmentations \\[detected]."),
    json_report: Path | None = typer.Option(None, "--json", help="Also write a JSON report here."),
    layout: str | None = typer.Option(None, "--layout", help="Force a layout: brats2017, "
                                      "brats2023, msd or nnunet."),
    workers: int = typer.Option(1, "--workers", min=1, help="Cases read in parallel."),
    dicom: bool = typer.Option(False, "--dicom", help="DATASET is a folder of DICOM MR series (one study, or one "
                               "sub-folder per study): check the series assignment and the converted volumes."),
    series: str | None = typer.Option(None, "--series", help="With --dicom: assign series by hand, e.g. "
                                      "t1=UID,flair=UID."),
) -> None:
    """Check every case's files (modalities, dimensions, geometry, values, labels); exit 1 if any fails."""
    from glioseg.data.checks import check_dataset

    check_label_scheme(label_scheme)
    series_option(series, dataset if dicom else None)
    if json_report is not None:
        check_output_file(json_report, "--json")
        _check_not_an_input(json_report, dataset, "--json", dicom)
    if dicom:
        with scratch_folder(True) as scratch:
            assert scratch is not None  # internal: asked for
            _print_report(_check_dicom(dataset, series, scratch), json_report)
        return
    _print_report(check_dataset(dataset, label_scheme=label_scheme, layout=layout, workers=workers), json_report)


def _check_dicom(dataset: Path, series: str | None, scratch: Path) -> DatasetReport:
    """The checks of ``glioseg check`` on the studies of a DICOM folder (converted into ``scratch``)."""
    import time

    from glioseg.data.checks import inspect_case
    from glioseg.data.reports import CaseReport, DatasetReport

    start = time.perf_counter()
    inputs = dicom_cases(dataset, series, scratch)
    reports = [inspect_case(case) for case in inputs.cases]
    for case_id, why in inputs.failed.items():  # a study that could not be read is a failed case, not a stop
        reports.append(CaseReport(case_id, "dicom"))
        reports[-1].error("dicom", why)
    report = DatasetReport(dataset, "dicom", sorted(reports, key=lambda r: r.case_id))
    report.seconds = time.perf_counter() - start
    return report


def _print_report(report: DatasetReport, json_report: Path | None) -> None:
    """The table, the findings, the JSON report and a summary line; exit 1 when a case failed."""
    from glioseg.data.reports import report_lines, report_table, write_report_json

    if report.cases:
        console().print(report_table(report))
    for line in report_lines(report):
        typer.echo(line)
    if json_report is not None:
        with writing(json_report, "--json"):
            write_report_json(report, json_report)
    n = len(report.cases)
    typer.echo(f"{n - report.n_failed}/{n} cases passed in {report.seconds:.1f} s"
               + ("" if report.ok else "; fix the errors above"))
    if not report.ok:
        raise typer.Exit(1)


def _check_not_an_input(path: Path, dataset: Path, option: str, dicom: bool = False) -> None:
    """Exit with a one-line error when ``path`` is one of the dataset's own files (an image, a label,
    an MSD/nnU-Net ``dataset.json``, any file of a DICOM folder), which writing a report there would replace."""
    inside = dataset.resolve() in path.resolve().parents
    name = path.name.lower()
    if path.is_file() and inside and (dicom or name == "dataset.json" or name.endswith((".nii", ".nii.gz"))):
        fail(f"{option}: {path} is a file of the dataset {dataset}; give a path for a new report")


def info(
    case: Path = typer.Argument(..., help="A case folder (any layout) or a dataset folder."),
    label_scheme: str | None = typer.Option(None, "--label-scheme", help="Label scheme of the input "
                                            "segmentation \\[detected]."),
    dicom: bool = typer.Option(False, "--dicom", help="CASE is a folder holding one study's DICOM MR series."),
    series: str | None = typer.Option(None, "--series", help="With --dicom: assign series by hand, e.g. "
                                      "t1=UID,flair=UID."),
) -> None:
    """Print modalities, shape, spacing, orientation, intensity ranges and label volumes."""
    from glioseg.data.naming import DatasetError
    from glioseg.data.nifti import CaseError
    from glioseg.labels import LabelSchemeError

    series_option(series, case if dicom else None)
    if dicom:
        with scratch_folder(True) as scratch:
            assert scratch is not None  # internal: asked for
            _info_dicom(case, series, scratch)
        return
    try:
        c = read_one_case(case, check_label_scheme(label_scheme))
    except (DatasetError, CaseError, LabelSchemeError) as exc:
        fail(str(exc))
    _echo_case(c, {m: src.path.name for m, src in c.files.images.items()})


def _info_dicom(folder: Path, series: str | None, scratch: Path) -> None:
    """``info`` of the one study in a DICOM folder (its series named instead of the converted files)."""
    from glioseg.data.nifti import CaseError, read_case

    inputs = dicom_cases(folder, series, scratch)
    names = sorted([*(c.case_id for c in inputs.cases), *inputs.failed])
    if len(names) != 1:
        fail(f"{folder}: holds {len(names)} studies ({', '.join(names)}); give one study's folder")
    try:
        c = read_case(inputs.cases[0])
    except CaseError as exc:
        fail(str(exc))
    _echo_case(c, {m: f"series #{s.number} {s.description!r}" for m, s in inputs.studies[0].series.items()})


def _echo_case(c: Case, sources: dict[str, str]) -> None:
    """Shape, spacing, orientation, each modality's source and range, and the label volumes."""
    from glioseg.data.nifti import MODALITIES

    geo = c.geometry
    typer.echo(f"case        {c.case_id}  (layout {c.files.layout})")
    typer.echo(f"shape       {geo.shape}  spacing {tuple(round(s, 3) for s in geo.spacing)} mm  "
               f"orientation {''.join(geo.axcodes)}")
    for ch, mod in zip(c.image, MODALITIES, strict=True):
        typer.echo(f"{mod:<11} {sources[mod]}  range [{ch.min():.1f}, {ch.max():.1f}]  "
                   f"nonzero {(ch != 0).mean() * 100:.1f}%")
    if c.label is not None and c.scheme is not None:
        _echo_label_volumes(c.label, c.scheme, geo.spacing)


def _echo_label_volumes(label: np.ndarray, scheme: LabelScheme, spacing: Sequence[float]) -> None:
    """The label scheme, then voxels and millilitres of each tumour label present in ``label``."""
    import numpy as np

    from glioseg.labels import CANONICAL_NAMES

    voxel_ml = float(np.prod(spacing)) / 1000.0
    typer.echo(f"labels      scheme {scheme.name}: {scheme.description}")
    for canon, name in CANONICAL_NAMES.items():
        n = int((label == canon).sum())
        if canon and n:
            typer.echo(f"  {name:<4} {n:>9d} voxels  {n * voxel_ml:8.2f} ml")


def _empty(folder: Path, remove: bool) -> None:
    """Delete what a failed ``synth`` wrote into ``folder`` (new, or empty before), and the folder if it was new."""
    import shutil

    if remove:
        shutil.rmtree(folder, ignore_errors=True)
        return
    for child in folder.iterdir() if folder.is_dir() else ():
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child, ignore_errors=True)
        else:
            child.unlink(missing_ok=True)


def _parse_shape(text: str) -> tuple[int, int, int]:
    """``"48"`` -> (48, 48, 48); ``"48,48,40"`` -> (48, 48, 40)."""
    try:
        sizes = [int(s) for s in text.replace("x", ",").split(",") if s.strip()]
    except ValueError:
        sizes = []
    if len(sizes) == 1:
        sizes *= 3
    if len(sizes) != 3:
        fail(f"--shape {text!r}: give one size (48) or three (48,48,40)")
    return sizes[0], sizes[1], sizes[2]


def synth(
    out: Path = typer.Argument(..., help="Dataset folder to write."),
    cases: int = typer.Option(4, "--cases", min=1, help="Number of cases."),
    layout: str = typer.Option("brats2017", "--layout", help="brats2017, brats2023, msd or nnunet."),
    label_scheme: str | None = typer.Option(None, "--label-scheme", help="Label scheme of the written "
                                            "dataset's segmentations \\[the layout's]."),
    seed: int = typer.Option(0, "--seed", help="Random seed; same seed, same dataset."),
    shape: str = typer.Option("48", "--shape", help="Volume size: 48 or 48,48,40."),
    nested: bool = typer.Option(False, "--nested", help="brats2017: HGG/ and LGG/ subfolders."),
) -> None:
    """Write synthetic brain-tumour cases (phantoms) in a dataset layout and label scheme.

    OUT must be new or empty: phantoms are never mixed into a dataset, and a failed run leaves OUT empty.
    """
    from glioseg.data.synthetic import write_synthetic_dataset

    size = _parse_shape(shape)
    if seed < 0:
        fail(f"--seed {seed}: give a seed >= 0")
    check_output_dir(out, "OUT")
    if out.is_dir() and any(out.iterdir()):
        fail(f"OUT: {out} is not empty; give a new or empty folder (synth never writes into a dataset)")
    fresh = not out.exists()
    try:
        with writing(out, "OUT"):
            written = write_synthetic_dataset(out, cases, layout=layout, scheme=label_scheme, shape=size,
                                              seed=seed, nested=nested)
    except ValueError as exc:  # unknown layout or label scheme
        _empty(out, fresh)
        fail(str(exc))
    except BaseException:  # a failed write (reported by writing) or Ctrl-C: no half-written dataset
        _empty(out, fresh)
        raise
    typer.echo(f"wrote {len(written)} synthetic {layout} cases {size} to {out}")
