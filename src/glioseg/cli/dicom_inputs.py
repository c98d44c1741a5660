"""DICOM input for the commands (``predict --dicom``, ``check --dicom``, ``info --dicom``): studies
found and assigned, converted into a scratch folder outside both the input and the output, and
reported as one line per study; every problem exits with one line."""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from glioseg.cli.app import fail

if TYPE_CHECKING:  # annotations only: the modules are imported inside the functions
    from glioseg.data.nifti import CaseFiles
    from glioseg.interop.dicom import DicomStudy, SeriesInfo

SEG_REFERENCE = "t1ce"  # the series a DICOM-SEG of a DICOM study references (ET and TC are read on it)


@contextlib.contextmanager
def scratch_folder(needed: bool) -> Iterator[Path | None]:
    """A temporary folder for the converted series (removed at the end, also on errors), or None."""
    if not needed:
        yield None
        return
    with tempfile.TemporaryDirectory(prefix="glioseg-dicom-") as folder:
        yield Path(folder)


def dicom_cases(dicom: Path, series: str | None, scratch: Path) -> tuple[list[CaseFiles], list[DicomStudy]]:
    """The studies of ``dicom`` as cases (NIfTI in ``scratch``), printing which series is which modality.

    Exits with one line when the folder holds no MR series, ``--series`` is malformed or names no
    series, a modality's series is ambiguous or missing, or a series cannot be read exactly.
    """
    from glioseg.interop.dicom import DicomError, convert_study, find_studies, parse_series

    try:
        studies = find_studies(dicom, parse_series(series))
        cases = [convert_study(study, scratch) for study in studies]
    except DicomError as exc:
        fail(str(exc))
    for study in studies:
        typer.echo(f"{study.case_id}: series assigned (override with --series MODALITY=UID)")
        for modality, info in study.series.items():
            typer.echo(f"  {modality:<5} = {info.label()}")
    return cases, studies


def series_option(series: str | None, dicom: Path | None) -> None:
    """Exit when ``--series`` is given without ``--dicom``."""
    if series is not None and dicom is None:
        fail("--series assigns the series of a --dicom folder; give --dicom DIR with it")


def check_outside_dicom(out: Path, dicom: Path, option: str) -> None:
    """Exit when an output path is, or lies inside, the DICOM input folder."""
    resolved, source = out.resolve(), dicom.resolve()
    if resolved == source or source in resolved.parents:
        fail(f"{option}: {out} lies inside the DICOM input folder {dicom}; glioseg never writes among its "
             "inputs: give an output folder outside it")


def reference_series(reference: Path, cases: list[CaseFiles]) -> dict[str, SeriesInfo]:
    """``--reference``: the one MR series in ``reference``, for the one case predicted.

    Exits when the folder holds no or several series, or several cases are predicted.
    """
    from glioseg.interop.dicom import DicomError, find_series

    if len(cases) != 1:
        fail(f"--reference gives the DICOM series of one case, but the input holds {len(cases)} cases; "
             "predict that case alone (-i CASE_FOLDER or --t1 --t1ce --t2 --flair)")
    try:
        found = find_series(reference)
    except DicomError as exc:
        fail(f"--reference: {exc}")
    if len(found) != 1:
        fail(f"--reference {reference}: holds {len(found)} series ({', '.join(s.label() for s in found)}); "
             "give the folder of the one series the SEG should reference")
    return {cases[0].case_id: found[0]}
