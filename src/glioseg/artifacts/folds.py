"""A folder of fold runs: ``ROOT/fold_<k>/`` run directories (what ``glioseg train --all-folds``
writes) and fold-ensemble bundles (the same layout with one ``manifest.json`` at ``ROOT``).

Whatever asks for the runs of a folder gets them through :func:`run_folders`, which verifies the
fold-ensemble bundle they belong to (sha256 and size of every member) before returning them, so a
tampered member is refused however the folds are reached (the bundle or one ``fold_<k>`` in it).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from glioseg.artifacts.bundles import MANIFEST, verify_bundle

FOLD_PREFIX = "fold_"


def fold_runs(root: Path | str) -> dict[int, Path]:
    """Fold number -> ``root/fold_<k>`` for every such folder holding ``run.json``."""
    root = Path(root)
    return {int(p.name[len(FOLD_PREFIX):]): p for p in root.glob(f"{FOLD_PREFIX}*")
            if p.name[len(FOLD_PREFIX):].isdigit() and (p / "run.json").is_file()}


def enclosing_bundle(folder: Path | str) -> Path | None:
    """The bundle that holds a run folder: the folder itself or, for a fold of a fold-ensemble
    bundle, its parent whose manifest lists the fold's ``run.json``; None for a plain run."""
    folder = Path(folder)
    if (folder / MANIFEST).is_file():
        return folder
    parent = folder.parent / MANIFEST
    if not parent.is_file():
        return None
    try:
        files = json.loads(parent.read_text(encoding="utf-8")).get("files", {})
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
        return folder.parent  # verify_bundle names what is wrong with it
    return folder.parent if isinstance(files, dict) and f"{folder.name}/run.json" in files else None


def run_folders(run_dir: Path | str, folds: Sequence[int] | None = None) -> list[Path]:
    """The run folders to load: the folder itself, or its ``fold_<k>`` sub-runs; the bundle they
    belong to is verified first.

    Args:
        run_dir: a run directory / bundle (holds ``run.json``), or a folder of ``fold_<k>/`` runs
            (a fold-ensemble bundle when it holds ``manifest.json``).
        folds: fold numbers to keep (all when None).

    Returns:
        Folders holding ``run.json``.

    Raises:
        FileNotFoundError: no run found, or a requested fold is missing.
        glioseg.artifacts.bundles.BundleError: a member of the bundle is missing, unlisted or tampered with.
    """
    run_dir = Path(run_dir)
    if (run_dir / "run.json").is_file():
        if folds:
            raise FileNotFoundError(f"{run_dir}: a single run (no fold_<k>/ sub-runs); drop --folds")
        found = [run_dir]
    else:
        runs = fold_runs(run_dir)
        if not runs:
            raise FileNotFoundError(f"{run_dir}: no run.json and no fold_<k>/run.json; give a run directory "
                                    "made by `glioseg train` or a model bundle")
        wanted = sorted(runs) if not folds else list(folds)
        missing = [f for f in wanted if f not in runs]
        if missing:
            raise FileNotFoundError(f"{run_dir}: folds {missing} not found (available: {sorted(runs)})")
        found = [runs[f] for f in wanted]
    for bundle in sorted({b for f in found if (b := enclosing_bundle(f)) is not None and b != f}):
        verify_bundle(bundle)  # load_run verifies a bundle folder itself; a fold's bundle is its parent
    return found
