"""DICOM input for the commands (``predict --dicom``, ``check --dicom``, ``info --dicom``): studies
found and assigned, converted into a scratch folder outside both the input and the output, and
reported as one line per study; every problem exits with one line."""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
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


@dataclass
class DicomInputs:
    """The studies of a DICOM folder that became cases, and those that could not.

    Attributes:
        cases: the converted studies (NIfTI in the scratch folder), sorted by case ID.
        studies: their DICOM studies, in the same order.
        failed: case ID -> one line naming the study, the series and the fix, for each study
            that could not be assigned or converted (batch commands report it and go on).
    """

    cases: list[CaseFiles]
    studies: list[DicomStudy]
    failed: dict[str, str] = field(default_factory=dict)


def dicom_cases(dicom: Path, series: str | None, scratch: Path, num_shards: int = 1,
                shard_id: int = 0) -> DicomInputs:
    """The studies of ``dicom`` as cases (NIfTI in ``scratch``), printing which series is which modality.

    Only the studies of shard ``shard_id`` of ``num_shards`` are converted (by case ID, as
    :func:`glioseg.inference.cases.select_shard`). A study whose series are ambiguous, incomplete
    or unreadable is left out and named in ``failed``; the others go on.

    Exits with one line when the folder holds no MR series, ``--series`` is malformed or names no
    series, or no study of the shard could be read (naming each one's problem).
    """
    from glioseg.inference.cases import select_shard
    from glioseg.interop.dicom import DicomError, convert_study, find_studies, parse_series

    failed: dict[str, str] = {}
    try:
        studies = find_studies(dicom, parse_series(series), failed)
    except DicomError as exc:
        fail(str(exc))
    mine = {s.case_id for s in select_shard([*studies, *(_Named(c) for c in failed)], num_shards, shard_id)}
    failed = {c: why for c, why in failed.items() if c in mine}
    inputs = DicomInputs([], [], failed)
    for study in (s for s in studies if s.case_id in mine):
        try:
            inputs.cases.append(convert_study(study, scratch))
        except (DicomError, OSError) as exc:
            failed[study.case_id] = str(exc) if isinstance(exc, DicomError) else \
                f"study {study.case_id}: cannot convert its series into {scratch} ({exc}); free disk space"
            continue
        inputs.studies.append(study)
        typer.echo(f"{study.case_id}: series assigned (override with --series MODALITY=UID)")
        for modality, info in study.series.items():
            typer.echo(f"  {modality:<5} = {info.label()}")
    if failed and not inputs.cases:
        fail(next(iter(failed.values())) if len(failed) == 1 else
             f"none of the {len(failed)} studies could be read: " + "; ".join(failed.values()))
    return inputs


@dataclass(frozen=True)
class _Named:
    """A study known only by its case ID (one that failed), for sharding."""

    case_id: str


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
