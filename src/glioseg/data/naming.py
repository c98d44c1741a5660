"""File and case naming shared by every layout: NIfTI suffixes, BraTS modality suffixes per
release, layout names, case-ID rules and the dataset error."""

from __future__ import annotations

import os
from pathlib import Path

NII = (".nii.gz", ".nii")
BRATS2017_SUFFIX = {"t1": "t1", "t1ce": "t1ce", "t2": "t2", "flair": "flair"}
BRATS2023_SUFFIX = {"t1": "t1n", "t1ce": "t1c", "t2": "t2w", "flair": "t2f"}
BRATS_NAMING: dict[str, tuple[str, dict[str, str]]] = {  # layout -> (separator, modality suffixes)
    "brats2017": ("_", BRATS2017_SUFFIX), "brats2023": ("-", BRATS2023_SUFFIX)}
PLAIN_ID = ""  # group key of plain file names (``t1.nii.gz``): a file ID is never empty
BRATS_EVIDENCE = {"brats2017": "BraTS 2017-21 file names (<ID>_seg.nii.gz)",
                  "brats2023": "BraTS 2023+ file names (<ID>-seg.nii.gz)"}
LAYOUTS: tuple[str, ...] = ("brats2017", "brats2023", "msd", "nnunet")


class DatasetError(Exception):
    """The dataset folder cannot be understood as any supported layout."""


def strip_nii(name: str) -> str | None:
    """File name without its NIfTI extension, or None if it is not a NIfTI file."""
    for ext in NII:
        if name.endswith(ext):
            return name[: -len(ext)]
    return None


def _nifti_files(folder: Path) -> list[Path]:
    """NIfTI files of a folder (hidden ones skipped); broken symlinks too, so that checks report them."""
    return sorted(p for p in folder.iterdir() if (p.is_file() or (p.is_symlink() and not p.exists()))
                  and strip_nii(p.name) is not None and not p.name.startswith("."))


def folder_name(folder: Path) -> str:
    """The name of a folder as the user means it (``.`` and ``..`` resolved, symlinks kept)."""
    return Path(os.path.abspath(folder)).name


def case_id_problem(case_id: str) -> str | None:
    """Why ``case_id`` cannot name an output file (empty, ``.``, ``..``, a path separator or NUL), or None."""
    if not case_id.strip():
        return "empty case ID"
    if "/" in case_id or "\\" in case_id or "\0" in case_id or case_id in (".", ".."):
        return f"case ID {case_id!r} is not a plain file name (no '/', '\\', '..')"
    return None


def check_case_id(case_id: str, what: str) -> None:
    """DatasetError unless ``case_id`` can name an output file (see :func:`case_id_problem`).

    Args:
        case_id: the ID.
        what: the case or option it comes from, named in the message (e.g. ``"--case-id"``).
    """
    problem = case_id_problem(case_id)
    if problem is not None:
        raise DatasetError(f"{problem}, of {what}: it cannot name an output file; rename the folder/files or "
                           "give another case ID")


