"""The fold runs of a cross-validation root and which fold predicts which case.

``ROOT/fold_<k>/`` for ``k = 0 .. K-1`` are ``glioseg train`` runs (``--all-folds``, or
``--fold k`` into ``ROOT/fold_<k>``). Each run records the cases it validated on (``run.json``
``split.val``); that list decides which fold predicts a case. ``K`` comes from the folds'
``splits.json`` (and ``ROOT/splits.json``). A fold is usable when its run is finished: every stage
it records has its ``model.safetensors`` and has trained all its epochs.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from glioseg.inference.manifest import sha256_file

FOLD_PREFIX = "fold_"

__all__ = ["CrossValError", "FoldRun", "assign_cases", "find_fold_runs"]


class CrossValError(ValueError):
    """The cross-validation cannot be predicted or scored (one line naming the case, file and fix)."""


@dataclass(frozen=True)
class FoldRun:
    """One fold's training run.

    Attributes:
        fold: fold number ``k``.
        run_dir: ``ROOT/fold_<k>``.
        train, val: the case IDs the run trained and validated on (``run.json`` ``split``).
        weights: stage name -> sha256 of its ``model.safetensors``.
        unfinished: ``"<stage> <done>/<epochs> epochs"`` per stage still training.
    """

    fold: int
    run_dir: Path
    train: tuple[str, ...]
    val: tuple[str, ...]
    weights: dict[str, str]
    unfinished: tuple[str, ...] = ()


# ----------------------------------------------------------------------------- the folds


def _fold_dirs(root: Path) -> dict[int, Path]:
    """Fold number -> ``root/fold_<k>`` for every such folder (with or without a run in it)."""
    return {int(p.name[len(FOLD_PREFIX):]): p for p in root.glob(f"{FOLD_PREFIX}*")
            if p.is_dir() and p.name[len(FOLD_PREFIX):].isdigit()}


def _splits_folds(path: Path) -> int | None:
    """Number of folds in a ``splits.json`` (None when there is none)."""
    if not path.is_file():
        return None
    try:
        return len(json.loads(path.read_text())["splits"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CrossValError(f"{path}: not a readable splits.json ({exc}); make it again with `glioseg split`") from exc


def _expected_folds(root: Path, dirs: dict[int, Path]) -> int:
    """K: from the splits files of the root and of every fold run (they must agree), else the folders."""
    counts = {p: n for p in [root / "splits.json", *(d / "splits.json" for d in dirs.values())]
              if (n := _splits_folds(p)) is not None}
    if len(set(counts.values())) > 1:
        listed = ", ".join(f"{p} ({n})" for p, n in counts.items())
        raise CrossValError(f"{root}: the splits files disagree on the number of folds: {listed}; train every "
                            "fold from one splits.json (`glioseg train --all-folds` or --splits)")
    return next(iter(counts.values()), max(dirs) + 1)


def find_fold_runs(cv_root: Path | str, allow_unfinished: bool = False,
                   folds: Sequence[int] | None = None) -> list[FoldRun]:
    """Every fold run of a cross-validation root (or the ``folds`` asked for), in fold order.

    Args:
        cv_root: folder with ``fold_0 .. fold_<K-1>`` run directories.
        allow_unfinished: accept runs whose stages are still training (their best weights so far).
        folds: only these fold numbers (the others need not exist yet); all ``0 .. K-1`` when None.

    Returns:
        One :class:`FoldRun` per fold.

    Raises:
        CrossValError: no fold folders, a missing or extra fold, a fold without a finished run
            (``run.json``, a recorded validation split, trained weights), folds with different stages.
    """
    root = Path(cv_root)
    if not root.is_dir():
        raise CrossValError(f"{root}: not a folder; give the cross-validation root holding fold_<k>/ runs")
    dirs = _fold_dirs(root)
    if not dirs:
        raise CrossValError(f"{root}: no fold_<k>/ run folders; train them with "
                            f"`glioseg train PREPROCESSED {root} --all-folds`")
    k = _expected_folds(root, dirs)
    wanted = list(range(k)) if folds is None else sorted(set(folds))
    outside = [f for f in wanted if not 0 <= f < k]
    if outside or not wanted:
        raise CrossValError(f"{root}: fold {outside[0] if outside else '(none)'} asked for, but the splits have "
                            f"folds 0..{k - 1}; give fold numbers among them")
    missing = [f for f in wanted if f not in dirs]
    if missing:
        raise CrossValError(f"{root}: fold_{missing[0]} missing (the splits have {k} folds, found "
                            f"{sorted(dirs)}); train it with `glioseg train PREPROCESSED {root / f'fold_{missing[0]}'} "
                            f"--fold {missing[0]} --splits SPLITS`")
    extra = [f for f in sorted(dirs) if f >= k]
    if extra:
        raise CrossValError(f"{root}: fold_{extra[0]} is beyond the {k} folds of the splits; move it out of {root}")
    runs = [_read_fold(f, dirs[f], allow_unfinished) for f in wanted]
    _check_same_stages(runs)
    return runs


def _run_info(fold: int, run_dir: Path) -> dict[str, Any]:
    """``run.json`` of a fold run; CrossValError when it is missing or unreadable."""
    path = run_dir / "run.json"
    if not path.is_file() or not (run_dir / "config.yaml").is_file():
        raise CrossValError(f"fold {fold}: {run_dir} holds no finished run (run.json or config.yaml missing); "
                            f"train it with `glioseg train PREPROCESSED {run_dir} --fold {fold} --splits SPLITS`")
    try:
        info = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise CrossValError(f"fold {fold}: {path} is not readable JSON ({exc}); train the fold again") from exc
    if not isinstance(info, dict):
        raise CrossValError(f"fold {fold}: {path} is not a run.json object; train the fold again")
    return info


def _split_of(fold: int, path: Path, info: dict[str, Any]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The (train, val) case IDs a run recorded; CrossValError when absent or of another fold."""
    split = info.get("split")
    if not isinstance(split, dict) or not isinstance(split.get("val"), list) or not split["val"]:
        raise CrossValError(f"fold {fold}: {path} records no validation cases (split.val); train the fold "
                            "with `glioseg train --fold K` so that it records its split")
    if split.get("fold", fold) != fold:
        raise CrossValError(f"fold {fold}: {path} was trained as fold {split.get('fold')}; put each run in "
                            f"the fold_<k> folder of its own fold")
    return tuple(map(str, split.get("train") or ())), tuple(map(str, split["val"]))


def _stage_progress(run_dir: Path, info: dict[str, Any]) -> tuple[dict[str, str], list[str]]:
    """Stage -> sha256 of its best weights, and the stages still training (``"low 40/160 epochs"``)."""
    weights, unfinished = {}, []
    for name, stage in (info.get("stages") or {}).items():
        path = run_dir / name / "model.safetensors"
        stage = stage if isinstance(stage, dict) else {}
        done, epochs = stage.get("epochs_done"), stage.get("epochs")
        if path.is_file():
            weights[name] = sha256_file(path)
        if not path.is_file() or (isinstance(done, int) and isinstance(epochs, int) and done < epochs):
            unfinished.append(f"{name} {done if done is not None else 0}/{epochs if epochs is not None else '?'} "
                              "epochs")
    return weights, unfinished


def _read_fold(fold: int, run_dir: Path, allow_unfinished: bool) -> FoldRun:
    """One fold's run, checked: a recorded split, trained weights, finished unless allowed."""
    info = _run_info(fold, run_dir)
    train, val = _split_of(fold, run_dir / "run.json", info)
    weights, unfinished = _stage_progress(run_dir, info)
    if not weights:
        raise CrossValError(f"fold {fold}: {run_dir} has no trained stage (no <stage>/model.safetensors); "
                            "let `glioseg train` write its weights first")
    if unfinished and not allow_unfinished:
        raise CrossValError(f"fold {fold}: {run_dir} is unfinished ({', '.join(unfinished)}); let `glioseg train` "
                            "finish it, or pass --allow-unfinished to use its best weights so far")
    return FoldRun(fold, run_dir, train, val, weights, tuple(unfinished))


def _check_same_stages(runs: Sequence[FoldRun]) -> None:
    """CrossValError when the folds' trained stages differ (one fold with a cascade, another without)."""
    stages = {r.fold: sorted(r.weights) for r in runs}
    if len({tuple(s) for s in stages.values()}) > 1:
        listed = "; ".join(f"fold {f}: {s}" for f, s in stages.items())
        raise CrossValError(f"the folds have different trained stages ({listed}); train the same stages in "
                            "every fold so that every case is predicted the same way")


def assign_cases(case_ids: Sequence[str], runs: Sequence[FoldRun]) -> dict[str, int]:
    """The fold that predicts each case: the one whose run validated on it (and did not train on it).

    Args:
        case_ids: the dataset's cases.
        runs: the fold runs (:func:`find_fold_runs`).

    Returns:
        ``{case_id: fold}`` for every case.

    Raises:
        CrossValError: a case in no fold's validation set, in several, in its fold's training set,
            or a validation case that is not in the dataset folders.
    """
    owners: dict[str, list[int]] = {}
    for run in runs:
        both = sorted(set(run.val) & set(run.train))
        if both:
            raise CrossValError(f"case {both[0]}: fold {run.fold} trained and validated on it "
                                f"({run.run_dir / 'run.json'}); retrain the fold from a valid splits.json")
        for case_id in run.val:
            owners.setdefault(case_id, []).append(run.fold)
    several = {c: f for c, f in owners.items() if len(f) > 1}
    if several:
        case_id, folds = sorted(several.items())[0]
        raise CrossValError(f"case {case_id} is in the validation sets of folds {folds} ({len(several)} such "
                            "case(s)): the folds were trained from different splits; train every fold from "
                            "one splits.json")
    _check_coverage(list(case_ids), owners, runs)
    return {c: owners[c][0] for c in case_ids}


def _check_coverage(case_ids: list[str], owners: dict[str, list[int]], runs: Sequence[FoldRun]) -> None:
    """CrossValError for a dataset case no fold held out, or a held-out case absent from the dataset."""
    none = [c for c in case_ids if c not in owners]
    if none:
        more = f" (and {len(none) - 1} more)" if len(none) > 1 else ""
        raise CrossValError(f"case {none[0]}{more} is in no fold's validation set: no fold model is unseen by "
                            "it; remove it from the dataset folders or retrain the folds with splits that hold it")
    absent = sorted(set(owners) - set(case_ids))
    if absent:
        fold = owners[absent[0]][0]
        run_json = next(r.run_dir for r in runs if r.fold == fold) / "run.json"
        raise CrossValError(f"case {absent[0]}: fold {fold} validated on it ({run_json}) "
                            f"but no dataset folder holds it ({len(absent)} such case(s)); give every dataset "
                            "folder the folds were trained on")
