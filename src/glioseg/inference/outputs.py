"""Where a case's predictions go, and the rules that keep them safe.

- :func:`check_case_ids`: every case has a plain, non-empty ID and no two cases share an
  output name (checked before any work).
- :func:`check_output_location`: predict never writes into a folder that holds its inputs.
- :func:`is_complete`: an output counts as done only when it is a readable NIfTI on the input's
  grid (or the manifest recorded exactly these bytes).
- :class:`StagedOutputs`: all files of a case are written into ``OUT/.<ID>.tmp/`` and moved into
  place together at the end, the label map last; a case that fails leaves none of them, and
  :func:`remove_leftovers` clears what a killed run left.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from glioseg.data.naming import case_id_problem as naming_problem
from glioseg.data.nifti import CaseError, CaseFiles, Geometry, load_nifti
from glioseg.inference.manifest import sha256_file
from glioseg.labels import REGIONS

PROBABILITIES_DIR = "probabilities"
UNCERTAINTY_DIR = "uncertainty"
MAX_ID_BYTES = 200  # output names add up to ~20 characters; file names stop at 255 bytes
_DATASET_FOLDERS = ("imagesTr", "imagesTs", "labelsTr", "labelsTs")


class OutputError(ValueError):
    """Outputs that would overwrite inputs or each other; the message names the paths and the fix."""


# ----------------------------------------------------------------------------- case IDs


def case_folder(files: CaseFiles) -> Path | None:
    """The folder of a case's first image file (where the user finds the case), or None."""
    first = next(iter(files.images.values()), None)
    return first.path.parent if first is not None else None


def case_id_problem(case_id: str) -> str | None:
    """Why ``case_id`` cannot name output files, or None: the dataset rule
    (:func:`glioseg.data.naming.case_id_problem`), plus no leading dot and a length cap."""
    problem = naming_problem(case_id)
    if problem is not None:
        return problem
    if case_id.startswith("."):
        return f"case ID {case_id!r} starts with '.' (hidden file names are glioseg's temporary files)"
    if len(case_id.encode()) > MAX_ID_BYTES:
        return f"case ID {case_id[:40]!r}... is longer than {MAX_ID_BYTES} bytes"
    return None


def check_case_ids(cases: Sequence[CaseFiles]) -> None:
    """Refuse empty or unusable case IDs and two cases with one output name.

    Output names are compared ignoring letter case: ``A.nii.gz`` and ``a.nii.gz`` are one file on
    macOS and Windows.

    Raises:
        OutputError: naming the case folder(s) and the fix.
    """
    seen: dict[str, CaseFiles] = {}
    for files in cases:
        problem = case_id_problem(files.case_id)
        if problem is not None:
            raise OutputError(f"case in {case_folder(files)}: {problem}; rename the case folder or files, "
                              "or give single cases an ID with --case-id")
        key = files.case_id.casefold()
        if key in seen:
            raise OutputError(f"cases {seen[key].case_id!r} ({case_folder(seen[key])}) and {files.case_id!r} "
                              f"({case_folder(files)}) both map to the output {files.case_id}.nii.gz; rename one")
        seen[key] = files


# ----------------------------------------------------------------------------- inputs vs outputs


def input_folders(cases: Iterable[CaseFiles]) -> dict[Path, tuple[Path, str]]:
    """Every folder holding a case's input: resolved path -> (path as found, case ID).

    The folders of the image and label files, and for MSD / nnU-Net datasets their
    ``imagesTr``, ``imagesTs``, ``labelsTr`` and ``labelsTs`` folders.
    """
    folders: dict[Path, tuple[Path, str]] = {}
    for files in cases:
        paths = [src.path for src in files.images.values()] + ([files.label] if files.label else [])
        parents = {p.parent for p in paths}
        if files.layout in ("msd", "nnunet"):
            parents |= {p.parent.parent / name for p in paths for name in _DATASET_FOLDERS
                        if (p.parent.parent / name).is_dir()}
        for parent in parents:
            folders.setdefault(parent.resolve(), (parent, files.case_id))
    return folders


def write_folders(out: Path, save_probabilities: bool) -> list[Path]:
    """The folders predict writes into: OUT, OUT/uncertainty and, when asked, OUT/probabilities."""
    return [out, out / UNCERTAINTY_DIR] + ([out / PROBABILITIES_DIR] if save_probabilities else [])


def check_output_location(out: Path, cases: Iterable[CaseFiles], save_probabilities: bool = False) -> None:
    """Refuse an output folder that is, or lies inside, a folder holding inputs.

    Any output file that would replace an input lies in such a folder, so this also refuses
    every output path equal to an input file.

    Raises:
        OutputError: naming the output folder, the input folder and its case.
    """
    inputs = input_folders(cases)
    for folder in write_folders(Path(out), save_probabilities):
        resolved = folder.resolve()
        for candidate in (resolved, *resolved.parents):
            if candidate in inputs:
                found, case_id = inputs[candidate]
                where = "is" if candidate == resolved else "lies inside"
                raise OutputError(f"{folder} {where} the input folder {found} (case {case_id}); predict never "
                                  "writes among its inputs: give an output folder outside the dataset")


# ----------------------------------------------------------------------------- complete outputs


def label_path(out: Path, case_id: str) -> Path:
    """``OUT/<ID>.nii.gz``."""
    return out / f"{case_id}.nii.gz"


def probability_names(target: str, channels: int | None = None) -> list[str] | None:
    """Channel names of the probability maps: WT/TC/ET, or ``label<k>`` (None when unknown)."""
    if target == "regions":
        return [r.value for r in REGIONS]
    return None if channels is None else [f"label{k}" for k in range(channels)]


def probability_path(out: Path, case_id: str, name: str) -> Path:
    """``OUT/probabilities/<ID>_<name>.nii.gz``."""
    return out / PROBABILITIES_DIR / f"{case_id}_{name}.nii.gz"


def uncertainty_path(out: Path, case_id: str) -> Path:
    """``OUT/uncertainty/<ID>.nii.gz``."""
    return out / UNCERTAINTY_DIR / f"{case_id}.nii.gz"


def input_geometry(files: CaseFiles) -> Geometry:
    """The geometry every output of a case must have (its first modality's header; no voxels read).

    Raises:
        glioseg.data.nifti.CaseError: the file is missing or unreadable.
        ValueError: degenerate affine, or no image.
    """
    first = next(iter(files.images.values()), None)
    if first is None:
        raise ValueError(f"case {files.case_id}: no image files")
    return Geometry.from_image(load_nifti(first.path, files.case_id))


def is_valid_nifti(path: Path, geometry: Geometry) -> bool:
    """True when ``path`` is a NIfTI whose voxels all read back, on ``geometry``'s grid (shape + affine)."""
    try:
        img = nib.load(str(path))
        if not isinstance(img, nib.Nifti1Image | nib.Nifti2Image):
            return False
        shape = tuple(int(s) for s in img.shape[:3])
        if shape != tuple(geometry.shape) or not np.allclose(img.affine, geometry.affine, rtol=0.0, atol=1e-3):
            return False
        np.asarray(img.dataobj)  # decompress everything: a truncated file fails here
    except Exception:  # noqa: BLE001 (anything unreadable is simply not a finished output)
        return False
    return True


def expected_maps(out: Path, case_id: str, target: str, save_probabilities: bool,
                  uncertainty: bool) -> list[Path] | None:
    """Probability / uncertainty maps a complete case must have (None: names unknown, look on disk)."""
    paths = [uncertainty_path(out, case_id)] if uncertainty else []
    if not save_probabilities:
        return paths
    names = probability_names(target)
    if names is None:
        found = sorted((out / PROBABILITIES_DIR).glob(f"{glob_escape(case_id)}_label*.nii.gz"))
        return paths + found if found else None
    return paths + [probability_path(out, case_id, n) for n in names]


def _recorded(paths: Sequence[Path], out: Path, record: dict[str, Any] | None) -> bool:
    """True when a manifest ``done`` record lists every path with the sha256 of its bytes now."""
    files = record.get("files") if record is not None else None
    if not isinstance(files, dict):
        return False
    try:
        return all(files.get(str(p.relative_to(out))) == sha256_file(p) for p in paths)
    except (OSError, ValueError):
        return False


def is_complete(files: CaseFiles, out: Path, maps: Sequence[Path] | None,
                record: dict[str, Any] | None = None) -> bool:
    """Whether a case's outputs in ``out`` are finished: each is recorded as done in the manifest
    with its sha256, or is a readable NIfTI on the input's grid.

    Args:
        files: the input case.
        out: the output folder.
        maps: the probability / uncertainty maps the case must also have (see
            :func:`expected_maps`); None when they cannot be complete.
        record: the case's latest ``done`` manifest record, if any.

    Returns:
        False for a missing, empty, truncated or foreign file (another grid).
    """
    label = label_path(out, files.case_id)
    if maps is None or not label.is_file():
        return False
    wanted = [label, *maps]
    if _recorded(wanted, out, record):
        return True
    try:
        geometry = input_geometry(files)
    except (CaseError, ValueError):
        return False
    return all(is_valid_nifti(p, geometry) for p in wanted)


def glob_escape(text: str) -> str:
    """``text`` with glob wildcards escaped."""
    return re.sub(r"([*?\[])", r"[\1]", text)


# ----------------------------------------------------------------------------- staging


class OutputWriteError(Exception):
    """A case's outputs could not be written (disk full, permissions); one line naming the case,
    the output folder and the fix."""

    def __init__(self, case_id: str, out: Path, exc: OSError) -> None:
        reason = exc.strerror or str(exc)
        super().__init__(f"case {case_id}: cannot write its outputs in {out} ({reason}); free disk space, "
                         "fix the permissions or give another output folder")


class StagedOutputs:
    """A case's files written into ``OUT/.<ID>.tmp/`` and moved into place together.

    Args:
        out: the output folder.
        case_id: the case.
    """

    def __init__(self, out: Path, case_id: str) -> None:
        self.out = Path(out)
        self.case_id = case_id
        self.dir = staging_dir(self.out, case_id)
        self.finals: list[Path] = []

    def write(self, final: Path, writer: Callable[[Path], object]) -> Path:
        """Call ``writer(staged_path)``; :meth:`commit` moves the file to ``final``.

        Raises:
            OutputWriteError: the file could not be written.
        """
        staged = self.dir / final.relative_to(self.out)
        try:
            staged.parent.mkdir(parents=True, exist_ok=True)
            writer(staged)
        except OSError as exc:
            raise OutputWriteError(self.case_id, self.out, exc) from exc
        self.finals.append(final)
        return staged

    def staged_files(self) -> list[tuple[Path, Path]]:
        """(staged path, final path) of every file written so far, in writing order."""
        return [(self.dir / f.relative_to(self.out), f) for f in self.finals]

    def commit(self, last: Path) -> None:
        """Move every file into place, ``last`` (the label map) at the end, then remove the
        staging folder. On failure the files already moved are removed: no partial set stays.

        Raises:
            OutputWriteError: a move failed.
        """
        pairs = sorted(self.staged_files(), key=lambda pair: pair[1] == last)  # stable: ``last`` at the end
        moved: list[Path] = []
        try:
            for staged, final in pairs:
                final.parent.mkdir(parents=True, exist_ok=True)
                os.replace(staged, final)
                moved.append(final)
        except OSError as exc:
            for final in moved:
                final.unlink(missing_ok=True)
            raise OutputWriteError(self.case_id, self.out, exc) from exc
        finally:
            self.discard()

    def discard(self) -> None:
        """Remove the staging folder and whatever it holds."""
        shutil.rmtree(self.dir, ignore_errors=True)


def staging_dir(out: Path, case_id: str) -> Path:
    """``OUT/.<ID>.tmp``: where a case's outputs are written before they are moved into place."""
    return out / f".{case_id}.tmp"


def _legacy_temp(case_id: str) -> re.Pattern[str]:
    """Temporary names :func:`glioseg.utils.atomic_write` gives this case's outputs (``.<ID>.x1y2.tmp.nii.gz``)."""
    stem = re.escape(case_id)
    return re.compile(rf"^\.{stem}(_(WT|TC|ET|label\d+))?\.[A-Za-z0-9_]+\.tmp\.nii(\.gz)?$")


def remove_leftovers(out: Path, case_id: str) -> list[Path]:
    """Remove what an interrupted run left of a case: its staging folder and temporary files.

    Call it only while holding the case's claim (:mod:`glioseg.inference.claims`): then no live
    process is writing them.

    Returns:
        The removed paths.
    """
    removed: list[Path] = []
    staging = staging_dir(out, case_id)
    if staging.is_dir() and not staging.is_symlink():
        shutil.rmtree(staging, ignore_errors=True)
        removed.append(staging)
    if "." in case_id:
        return removed  # atomic_write's names cut the ID at its first dot: not this case's alone
    pattern = _legacy_temp(case_id)
    for folder in (out, out / PROBABILITIES_DIR, out / UNCERTAINTY_DIR):
        if folder.is_dir():
            for path in folder.iterdir():
                if pattern.match(path.name) and path.is_file():
                    path.unlink(missing_ok=True)
                    removed.append(path)
    return removed
