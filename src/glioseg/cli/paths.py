"""Output paths checked up front: every command that writes refuses an unusable path in one line,
before it loads a model or reads a dataset."""

from __future__ import annotations

import os
from pathlib import Path

from glioseg.cli.app import fail


def _nearest_existing(path: Path) -> Path:
    """``path`` or its closest ancestor that exists (where a new folder would be created)."""
    current = path.absolute()
    while not current.exists() and current != current.parent:
        current = current.parent
    return current


def output_dir_problem(path: Path) -> str | None:
    """Why ``path`` cannot serve as an output folder, or None when it can.

    A folder that exists must be writable; a missing one must be creatable (its nearest existing
    ancestor is a writable folder). An existing file is refused.
    """
    if path.exists() and not path.is_dir():
        return f"{path} exists and is not a folder; give a folder path"
    base = _nearest_existing(path)
    if not base.is_dir():
        return f"{path}: {base} is a file, so the folder cannot be created; give another path"
    if not os.access(base, os.W_OK | os.X_OK):
        return f"{path}: {base} is not writable (read-only file system or permissions); give another path"
    return None


def output_file_problem(path: Path) -> str | None:
    """Why ``path`` cannot be written as an output file, or None when it can.

    An existing folder is refused; the file's folder must exist or be creatable, and be writable.
    """
    if path.is_dir():
        return f"{path} is a folder; give a file path"
    problem = output_dir_problem(path.parent)
    return None if problem is None else f"{path}: {problem}"


def check_output_dir(path: Path, option: str) -> None:
    """Exit with a one-line error naming ``option`` when ``path`` is not usable as an output folder."""
    problem = output_dir_problem(path)
    if problem is not None:
        fail(f"{option}: {problem}")


def check_output_file(path: Path, option: str) -> None:
    """Exit with a one-line error naming ``option`` when ``path`` is not usable as an output file."""
    problem = output_file_problem(path)
    if problem is not None:
        fail(f"{option}: {problem}")
