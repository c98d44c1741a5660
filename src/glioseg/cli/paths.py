"""Output paths checked up front: every command that writes refuses an unusable path in one line,
before it loads a model or reads a dataset; a write that fails later (disk full, read-only) is one
line too (:func:`writing`)."""

from __future__ import annotations

import errno
import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
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


# what to do about the OSErrors a write meets; others get the generic hint
_WRITE_HINTS: dict[int, str] = {
    errno.ENOSPC: "free some space or give a path on another disk",
    errno.EDQUOT: "free some space (disk quota exceeded) or give a path on another disk",
    errno.EROFS: "the file system is read-only; give a writable path",
    errno.EACCES: "no permission to write there; give a writable path",
    errno.EPERM: "no permission to write there; give a writable path",
}


def os_error_message(path: Path, exc: OSError, option: str) -> str:
    """One line saying that writing ``path`` (given with ``option``) failed, why, and what to do."""
    reason = exc.strerror or str(exc) or type(exc).__name__
    inner = f" ({exc.filename})" if exc.filename and Path(exc.filename) != Path(path) else ""
    hint = _WRITE_HINTS.get(exc.errno or -1, "check the path and the disk, then run again")
    return f"{option}: {path}: cannot write{inner}: {reason}; {hint}"


@contextmanager
def writing(path: Path, option: str) -> Iterator[None]:
    """Turn an OSError raised inside the block (disk full, read-only, permissions) into a one-line error
    naming ``path`` and ``option``, instead of a traceback."""
    try:
        yield
    except OSError as exc:
        fail(os_error_message(path, exc, option))


def check_outside_inputs(path: Path, inputs: Iterable[Path], option: str) -> None:
    """Exit with a one-line error when the output folder ``path`` holds (or is) one of the ``inputs``.

    Outputs written into such a folder could replace the inputs (e.g. ``preprocess DATA DATA``).
    """
    out = path.resolve()
    for source in inputs:
        if out == source.resolve() or out in source.resolve().parents:
            fail(f"{option}: {path} holds the input {source}; give an output folder outside the input data")
