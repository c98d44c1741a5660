"""Small helpers every stage uses: atomic file writes and bounding boxes."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path: Path, write: Callable[[Path], object]) -> Path:
    """Call ``write(tmp_path)`` on a temporary file next to ``path``, then rename it into place.

    The temporary name keeps the file's suffixes so that writers that dispatch on them work.
    Nothing is left at ``path`` if ``write`` fails.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = "".join(path.suffixes)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name.split('.')[0]}.", suffix=f".tmp{suffix}", dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        os.chmod(tmp, 0o666 & ~_current_umask())  # mkstemp makes 0600; give the usual file mode
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def bounding_box(mask: np.ndarray, margin: int = 0) -> tuple[slice, ...] | None:
    """Slices of the smallest box holding every True voxel, grown by ``margin`` and clipped.

    Args:
        mask: bool array of any dimensionality.
        margin: voxels added on each side (clipped at the array's edges).

    Returns:
        One slice per axis, or None for an empty mask.
    """
    slices = []
    for axis in range(mask.ndim):
        hit = np.flatnonzero(mask.any(axis=tuple(a for a in range(mask.ndim) if a != axis)))
        if hit.size == 0:
            return None
        slices.append(slice(max(int(hit[0]) - margin, 0), min(int(hit[-1]) + 1 + margin, mask.shape[axis])))
    return tuple(slices)


