"""The preprocessed-dataset cache: writing, reading and refreshing it, case by case.

A preprocessed dataset is a folder::

    OUT/dataset.json                 cases, spacing, label scheme, preprocessing parameters
    OUT/<case_id>/image.npy          float32 (4, x, y, z), z-scored, background 0
    OUT/<case_id>/label.npy          uint8 (x, y, z) canonical labels (absent without a label)
    OUT/<case_id>/fg.npz             foreground voxel coordinates per canonical class (sampling)
    OUT/<case_id>/meta.json          bbox, shapes, spacings, statistics, geometry, sources, dataset

Several dataset folders may feed one cache (``glioseg preprocess DATA1 DATA2 OUT``): each case's
``meta.json`` records the folder it came from (``dataset``) and ``dataset.json`` lists them all
(``datasets``, and ``case_datasets``: case ID -> folder).

Images are stored as float32 ``.npy`` so that they can be memory-mapped and sliced without a
conversion per patch; a 1 mm BraTS case takes ~50 MB, so float16 would save disk only. A case is
redone only when its sources or the parameters changed; one bad case is reported and skipped,
but a full or read-only output disk stops the batch (every later case would fail the same way).
"""

from __future__ import annotations

import errno
import json
import math
import multiprocessing
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from glioseg.data.nifti import MODALITIES, CaseFiles, failure_message, read_case
from glioseg.data.schemes import decide_dataset_scheme
from glioseg.preprocessing.normalize import (
    CLIP_PERCENTILES,
    CROP_MARGIN,
    PREPROCESS_VERSION,
    PreprocessedCase,
    PreprocessError,
    preprocess_case,
)
from glioseg.utils import atomic_write

FG_LOCATIONS_MAX = 50_000
# errors of the output disk rather than of a case: the batch stops instead of failing every case
DISK_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS})


@dataclass
class CaseResult:
    """Outcome of preprocessing one case in a batch: ``status`` is done, skipped or failed."""

    case_id: str
    status: str
    seconds: float = 0.0
    error: str | None = None


@dataclass
class DatasetResult:
    """Outcome of :func:`preprocess_dataset`."""

    results: list[CaseResult] = field(default_factory=list)

    @property
    def failed(self) -> list[CaseResult]:
        """Cases that raised an error."""
        return [r for r in self.results if r.status == "failed"]


def foreground_locations(label: np.ndarray, max_per_class: int = FG_LOCATIONS_MAX,
                         seed: int = 0) -> dict[str, np.ndarray]:
    """Voxel coordinates of each foreground class, subsampled for a small cache.

    Args:
        label: uint8 canonical labels ``(x, y, z)``.
        max_per_class: keep at most this many coordinates per class (random, seeded).
        seed: subsampling seed.

    Returns:
        ``{"<class>": int32 (n, 3)}`` for each class > 0 present.
    """
    rng = np.random.default_rng(seed)
    out = {}
    for value in np.unique(label):
        if value == 0:
            continue
        coords = np.argwhere(label == value).astype(np.int32)
        if len(coords) > max_per_class:
            coords = coords[np.sort(rng.choice(len(coords), max_per_class, replace=False))]
        out[str(int(value))] = coords
    return out


def source_stats(files: CaseFiles) -> dict[str, list[int]]:
    """Size and mtime (ns) of each of a case's files, keyed by path, for up-to-date checks."""
    paths = sorted({str(s.path) for s in files.images.values()} | ({str(files.label)} if files.label else set()))
    out = {}
    for p in paths:
        st = os.stat(p)
        out[p] = [int(st.st_size), int(st.st_mtime_ns)]
    return out


def _params(spacing_mm: float | None, label_scheme: str | None) -> dict[str, Any]:
    return {"version": PREPROCESS_VERSION, "target_spacing": spacing_mm,
            "requested_label_scheme": label_scheme, "percentiles": list(CLIP_PERCENTILES),
            "margin": CROP_MARGIN}


def save_preprocessed(pc: PreprocessedCase, root: Path | str, extra_meta: dict[str, Any] | None = None) -> Path:
    """Write a preprocessed case into ``root/<case_id>/`` atomically (temp folder + rename).

    Returns:
        The case folder.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{pc.case_id}.", suffix=".tmp", dir=root))
    try:
        _write_case_files(pc, tmp, extra_meta)
        _replace_folder(tmp, root / pc.case_id)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return root / pc.case_id


def _write_case_files(pc: PreprocessedCase, folder: Path, extra_meta: dict[str, Any] | None) -> None:
    """``image.npy``, ``label.npy`` + ``fg.npz`` (with a label) and ``meta.json`` into ``folder``."""
    np.save(folder / "image.npy", pc.image)
    if pc.label is not None:
        np.save(folder / "label.npy", pc.label)
        np.savez(folder / "fg.npz", allow_pickle=False, **foreground_locations(pc.label))
    (folder / "meta.json").write_text(json.dumps({**pc.meta, **(extra_meta or {})}, indent=1))


def _replace_folder(new: Path, final: Path) -> None:
    """Rename ``new`` to ``final``; a stale ``final`` is moved aside first so a crash leaves one of them."""
    if not final.exists():
        new.rename(final)
        return
    old = final.parent / f".{final.name}.old"
    shutil.rmtree(old, ignore_errors=True)
    final.rename(old)
    new.rename(final)
    shutil.rmtree(old, ignore_errors=True)


def read_meta(root: Path | str, case_id: str) -> dict[str, Any]:
    """The ``meta.json`` of a preprocessed case.

    Raises:
        PreprocessError: missing or unreadable.
    """
    path = Path(root) / case_id / "meta.json"
    try:
        return json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise PreprocessError(f"case {case_id} [{path}]: not preprocessed; run `glioseg preprocess`") from exc
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise PreprocessError(f"case {case_id} [{path}]: corrupt meta.json ({exc}); delete the case "
                              "folder and run `glioseg preprocess` again") from exc


def load_preprocessed(root: Path | str, case_id: str, mmap: bool = True) -> PreprocessedCase:
    """Load a preprocessed case.

    Args:
        root: preprocessed dataset folder.
        case_id: case identifier (a sub-folder of ``root``).
        mmap: memory-map the arrays (read-only) instead of reading them.

    Returns:
        The case: image float32 ``(4, x, y, z)``, label uint8 ``(x, y, z)`` or None, meta.

    Raises:
        PreprocessError: the case is missing or incomplete.
    """
    meta = read_meta(root, case_id)
    folder = Path(root) / case_id
    mode: Literal["r"] | None = "r" if mmap else None
    try:
        image = np.load(folder / "image.npy", mmap_mode=mode)
        label = np.load(folder / "label.npy", mmap_mode=mode) if meta.get("has_label") else None
    except (FileNotFoundError, ValueError, OSError) as exc:
        raise PreprocessError(f"case {case_id} [{folder}]: incomplete or corrupt arrays ({exc}); "
                              "delete the folder and run `glioseg preprocess` again") from exc
    if tuple(image.shape[1:]) != tuple(meta["shape"]):
        raise PreprocessError(f"case {case_id} [{folder}]: image shape {image.shape} != meta shape "
                              f"{meta['shape']}; re-run `glioseg preprocess`")
    return PreprocessedCase(case_id, image, label, meta)


def list_preprocessed(root: Path | str) -> list[str]:
    """IDs of the complete preprocessed cases under ``root``, sorted.

    Raises:
        PreprocessError: ``root`` is not a folder.
    """
    root = Path(root)
    if not root.is_dir():
        raise PreprocessError(f"{root}: not a folder; run `glioseg preprocess DATASET {root}` first")
    return sorted(p.name for p in root.iterdir()
                  if p.is_dir() and not p.name.startswith(".") and (p / "meta.json").is_file()
                  and (p / "image.npy").is_file())


def is_up_to_date(root: Path | str, files: CaseFiles, spacing_mm: float | None,
                  label_scheme: str | None = None) -> bool:
    """Whether ``root/<case_id>`` exists, is complete and was made from the same files and settings."""
    folder = Path(root) / files.case_id
    try:
        meta = json.loads((folder / "meta.json").read_text())
        sources = source_stats(files)
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return False
    complete = (folder / "image.npy").is_file() and (not meta.get("has_label") or (folder / "label.npy").is_file())
    return complete and meta.get("sources") == sources and meta.get("params") == _params(spacing_mm, label_scheme)


def _dataset_entry(dataset: Path | str | None) -> str | None:
    """How ``meta.json`` records a case's dataset folder: its absolute path (None: not known)."""
    return str(Path(dataset).absolute()) if dataset is not None else None


def _record_dataset(folder: Path, dataset: str | None) -> None:
    """Set ``dataset`` in an up-to-date case's ``meta.json`` (same files reached through another folder)."""
    meta = json.loads((folder / "meta.json").read_text())
    if meta.get("dataset") != dataset:
        meta["dataset"] = dataset
        atomic_write(folder / "meta.json", lambda tmp: tmp.write_text(json.dumps(meta, indent=1)))


def preprocess_files(files: CaseFiles, out: Path | str, spacing_mm: float | None = None,
                     label_scheme: str | None = None, force: bool = False,
                     dataset: Path | str | None = None) -> CaseResult:
    """Read, preprocess and save one case unless it is already up to date.

    Args:
        files: the case's files.
        out: the cache folder.
        spacing_mm, label_scheme, force: see :func:`preprocess_dataset`.
        dataset: the dataset folder the case was found in, recorded in ``meta.json``.

    Raises:
        CaseError: the case cannot be read or preprocessed.
    """
    start = time.perf_counter()
    if not force and is_up_to_date(out, files, spacing_mm, label_scheme):
        if dataset is not None:
            _record_dataset(Path(out) / files.case_id, _dataset_entry(dataset))
        return CaseResult(files.case_id, "skipped")
    sources = source_stats(files)  # before reading: a file changed meanwhile makes it stale
    pc = preprocess_case(read_case(files, label_scheme), spacing_mm)
    save_preprocessed(pc, out, {"sources": sources, "params": _params(spacing_mm, label_scheme),
                                "dataset": _dataset_entry(dataset)})
    return CaseResult(files.case_id, "done", time.perf_counter() - start)


def is_disk_error(exc: BaseException) -> bool:
    """Whether ``exc`` is a full, over-quota or read-only output disk (not a problem of one case)."""
    return isinstance(exc, OSError) and exc.errno in DISK_ERRNOS


def check_target_spacing(spacing_mm: float | None) -> None:
    """ValueError unless ``spacing_mm`` is None (keep each case's spacing) or a finite number > 0."""
    if spacing_mm is not None and not (math.isfinite(spacing_mm) and spacing_mm > 0):
        raise ValueError(f"target spacing must be a number of mm > 0, got {spacing_mm}")


def _run_isolated(files: CaseFiles, out: Path, spacing_mm: float | None, label_scheme: str | None,
                  force: bool, dataset: Path | None = None, one_thread: bool = False) -> CaseResult:
    """Preprocess one case, turning its errors into a failed result (one bad case must not stop a batch).

    Raises:
        OSError: the output disk is full or read-only (:func:`is_disk_error`).
    """
    if one_thread:  # process-pool workers: parallelism comes from the processes
        import torch

        torch.set_num_threads(1)
    try:
        return preprocess_files(files, out, spacing_mm, label_scheme, force, dataset)
    except Exception as exc:
        if is_disk_error(exc):
            raise
        return CaseResult(files.case_id, "failed", error=failure_message(files.case_id, exc))


def write_dataset_json(out: Path | str, spacing_mm: float | None, label_scheme: str | None) -> Path:
    """Write ``out/dataset.json`` listing the complete cases, their dataset folders and the settings."""
    out = Path(out)
    cases = list_preprocessed(out)
    metas = {c: read_meta(out, c) for c in cases}
    schemes = sorted({s for m in metas.values() if (s := m.get("label_scheme"))})
    case_datasets = {c: m.get("dataset") for c, m in metas.items()}
    info = {"cases": cases, "n_cases": len(cases), "target_spacing": spacing_mm,
            "datasets": sorted({d for d in case_datasets.values() if d}), "case_datasets": case_datasets,
            "label_schemes": schemes, "requested_label_scheme": label_scheme,
            "channels": list(MODALITIES), "labels": "canonical (0 BG, 1 NCR, 2 ED, 3 ET, 4 RC)",
            "params": _params(spacing_mm, label_scheme)}
    return atomic_write(out / "dataset.json", lambda tmp: tmp.write_text(json.dumps(info, indent=1)))


def preprocess_dataset(cases: Sequence[CaseFiles], out: Path | str, spacing_mm: float | None = None,
                       workers: int = 1, label_scheme: str | None = None, force: bool = False,
                       on_result: Callable[[CaseResult], None] | None = None,
                       datasets: Mapping[str, Path] | None = None) -> DatasetResult:
    """Preprocess many cases in parallel; a failing case is reported and the others go on.

    Args:
        cases: the cases' files (:func:`glioseg.data.layouts.find_cases`).
        out: output folder.
        spacing_mm: isotropic target spacing, or None to keep the original.
        workers: processes; 1 runs in this process.
        label_scheme: scheme of the segmentations; when None it is decided once for the whole
            dataset (:func:`glioseg.data.schemes.decide_dataset_scheme`) and every case is read
            with that decision.
        force: redo cases that are up to date.
        on_result: called with each case's result as it finishes (progress display).
        datasets: case ID -> the dataset folder it came from (:func:`glioseg.data.layouts.find_cases_in`),
            recorded in each case's ``meta.json`` and in ``dataset.json``.

    Returns:
        Per-case results (done / skipped / failed with message), in completion order.

    Raises:
        ValueError: ``spacing_mm`` not > 0 (checked before any case is read).
        LabelSchemeError: the dataset's segmentations contradict each other or the layout
            (before any case is written; the message names the ``--label-scheme`` to pass).
        OSError: ``out`` cannot be created, or its disk is full or read-only (the batch stops;
            the cases written so far are complete, none is half-written).
    """
    check_target_spacing(spacing_mm)
    decided = decide_dataset_scheme(cases, label_scheme, workers=workers).scheme
    read_scheme = decided.name if decided is not None else None
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    result = DatasetResult()

    def record(r: CaseResult) -> None:
        result.results.append(r)
        if on_result is not None:
            on_result(r)

    if workers <= 1:
        for files in cases:
            record(_run_isolated(files, out, spacing_mm, read_scheme, force, (datasets or {}).get(files.case_id)))
    else:
        _run_in_processes(cases, out, spacing_mm, read_scheme, force, workers, record, datasets or {})
    write_dataset_json(out, spacing_mm, label_scheme)
    return result


def _run_in_processes(cases: Sequence[CaseFiles], out: Path, spacing_mm: float | None, label_scheme: str | None,
                      force: bool, workers: int, record: Callable[[CaseResult], None],
                      datasets: Mapping[str, Path]) -> None:
    """:func:`_run_isolated` in a pool of ``workers`` processes; ``record`` gets each result as it finishes."""
    ctx = multiprocessing.get_context("spawn")  # no fork of a process that may hold torch threads
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
        futures = {pool.submit(_run_isolated, f, out, spacing_mm, label_scheme, force, datasets.get(f.case_id), True): f
                   for f in cases}
        for fut in as_completed(futures):
            try:
                record(fut.result())
            except Exception as exc:
                if is_disk_error(exc):
                    pool.shutdown(wait=True, cancel_futures=True)
                    raise
                record(CaseResult(futures[fut].case_id, "failed", error=f"worker crashed: {exc}"))
