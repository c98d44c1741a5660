"""Per-case claims in an output folder, so that concurrent ``glioseg predict`` runs never do a
case twice or write its files at the same time.

A claim is an exclusive, non-blocking ``flock`` on ``OUT/.<ID>.lock``. The kernel drops it when
its process dies, so a lock file left by ``kill -9`` is simply claimed again by the next run.
The holder removes the lock file when it is done, while still holding the lock; a claimant
that locked a file removed meanwhile notices (another inode at the path) and tries again.
"""

from __future__ import annotations

import fcntl
import os
import socket
from pathlib import Path
from types import TracebackType


def lock_path(out: Path, case_id: str) -> Path:
    """``OUT/.<ID>.lock``."""
    return out / f".{case_id}.lock"


class CaseClaim:
    """A held claim on one case; release it with :meth:`release` or as a context manager."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self._fd: int | None = fd

    def release(self) -> None:
        """Remove the lock file and drop the lock (idempotent)."""
        if self._fd is None:
            return
        try:
            self.path.unlink(missing_ok=True)
        finally:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> CaseClaim:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.release()


def _same_file(fd: int, path: Path) -> bool:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return False
    own = os.fstat(fd)
    return (own.st_dev, own.st_ino) == (st.st_dev, st.st_ino)


def try_claim(out: Path, case_id: str) -> CaseClaim | None:
    """Claim a case for this process without waiting.

    Args:
        out: the output folder (must exist).
        case_id: the case.

    Returns:
        The claim, or None when another process holds it.

    Raises:
        OSError: the lock file cannot be created or locked (permissions, no locking on the
            file system).
    """
    path = lock_path(out, case_id)
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        except BaseException:
            os.close(fd)
            raise
        if _same_file(fd, path):
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()} {socket.gethostname()}\n".encode())
            return CaseClaim(path, fd)
        os.close(fd)  # its holder removed it between our open and our lock: take the new one


def holder(out: Path, case_id: str) -> str:
    """Who holds a case's claim, as its lock file says (``pid 123 on host``), for messages."""
    try:
        pid, host = lock_path(out, case_id).read_text().split()[:2]
    except (OSError, ValueError):
        return "another process"
    return f"pid {pid} on {host}"
