"""The prediction manifest: one JSON line per case outcome, safe to share between processes.

``OUT/manifest.jsonl`` (or one file per shard) is a log: every run appends to it, never
truncates it. Each line is written by one ``write`` on a file opened with ``O_APPEND`` while an
exclusive ``flock`` is held, so lines from concurrent processes never interleave; a line cut
short by a killed process is skipped by the readers and closed by the next writer.

A ``done`` line records the sha256 of every file the case wrote, so a later run can tell that
an output on disk is the one that run finished (:class:`ManifestIndex`).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

MANIFEST_NAME = "manifest.jsonl"
MANIFEST_GLOB = "manifest*.jsonl"
_CHUNK = 1 << 20


def manifest_path(out: Path, num_shards: int = 1, shard_id: int = 0) -> Path:
    """``OUT/manifest.jsonl``, or one file per shard (``manifest.shard-K-of-N.jsonl``)."""
    if num_shards == 1:
        return out / MANIFEST_NAME
    return out / f"manifest.shard-{shard_id}-of-{num_shards}.jsonl"


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def append_record(path: Path, record: dict[str, Any]) -> None:
    """Append one JSON line to ``path`` atomically with respect to other glioseg processes.

    Args:
        path: the manifest (created when missing).
        record: JSON-able dict.

    Raises:
        OSError: the file cannot be opened or written (disk full, permissions).
    """
    line = (json.dumps(record) + "\n").encode()
    fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        size = os.fstat(fd).st_size
        if size and os.pread(fd, 1, size - 1) != b"\n":  # a line cut short by a killed writer
            line = b"\n" + line
        _write_all(fd, line)
    finally:
        os.close(fd)  # releases the lock


def parse_lines(text: bytes) -> list[dict[str, Any]]:
    """The records of complete manifest lines; lines that are not a JSON object are skipped."""
    records = []
    for raw in text.splitlines():
        try:
            record = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError):
            continue
        if isinstance(record, dict) and isinstance(record.get("id"), str):
            records.append(record)
    return records


def read_records(path: Path) -> list[dict[str, Any]]:
    """Every readable record of one manifest, in file order (empty when it does not exist)."""
    try:
        return parse_lines(path.read_bytes())
    except FileNotFoundError:
        return []


class ManifestIndex:
    """The latest ``done`` record per case over every manifest in an output folder.

    Reads only what was appended since the last :meth:`refresh`, so that checking each case of a
    large batch stays cheap while other processes keep appending.

    Args:
        out: the output folder.
        extra: manifests kept elsewhere that count too.
    """

    def __init__(self, out: Path, extra: Sequence[Path] = ()) -> None:
        self.out = Path(out)
        self.extra = [Path(p) for p in extra]
        self._offsets: dict[Path, int] = {}
        self._done: dict[str, dict[str, Any]] = {}

    def refresh(self) -> None:
        """Read the complete lines appended to ``OUT/manifest*.jsonl`` since the last call."""
        for path in sorted({*self.out.glob(MANIFEST_GLOB), *(p for p in self.extra if p.is_file())}):
            try:
                self._read_new(path)
            except OSError:
                continue  # an unreadable manifest only means fewer cases are known as done

    def _read_new(self, path: Path) -> None:
        offset = self._offsets.get(path, 0)
        if path.stat().st_size < offset:  # replaced by something shorter: read it again
            offset = 0
        with open(path, "rb") as f:
            f.seek(offset)
            data = f.read()
        end = data.rfind(b"\n") + 1  # a line still being written is read next time
        self._offsets[path] = offset + end
        for record in parse_lines(data[:end]):
            if record.get("status") == "done":
                previous = self._done.get(record["id"])
                if previous is None or record.get("finished", 0) >= previous.get("finished", 0):
                    self._done[record["id"]] = record

    def latest_done(self, case_id: str) -> dict[str, Any] | None:
        """The most recent ``done`` record of ``case_id`` read so far, or None."""
        return self._done.get(case_id)
