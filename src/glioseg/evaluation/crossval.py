"""Out-of-fold predictions of a cross-validation: every case predicted by the one fold model that
did not train on it, from the raw NIfTI files, through the library path of ``glioseg predict``
(:func:`glioseg.inference.batch.predict_dataset`).

The cross-validation root holds one ``glioseg train`` run per fold, ``ROOT/fold_<k>/`` for
``k = 0 .. K-1`` (``glioseg train --all-folds``, or ``--fold k`` into ``ROOT/fold_<k>``). Each run
records the cases it validated on (``run.json`` ``split.val``); that list decides which fold
predicts a case. ``K`` comes from the folds' ``splits.json`` (and ``ROOT/splits.json``).

The output folder::

    OUT/<ID>.nii.gz              label map, as ``glioseg predict`` writes it
    OUT/manifest.fold-<k>.jsonl  the predict manifest of the cases fold k predicted
    OUT/cv.json                  which fold predicts which case, each fold's run and the sha256 of
                                 its weights, and the prediction options

A second run into the same folder skips the cases whose outputs are complete (resume); it is
refused when the folds' weights, the assignment or the options differ from ``cv.json``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from glioseg.data.layouts import find_cases
from glioseg.data.nifti import CaseFiles
from glioseg.inference.batch import CaseOutcome, predict_dataset
from glioseg.inference.cases import decide_output_scheme
from glioseg.inference.manifest import sha256_file
from glioseg.inference.outputs import check_case_ids, check_output_location
from glioseg.utils import atomic_write

CV_FORMAT = "glioseg-cv/1"
CV_FILE = "cv.json"
FOLD_PREFIX = "fold_"
# predictor options that do not change the label maps: not part of what a resumed run must match
UNRECORDED_OPTIONS = frozenset({"device", "tile_batch", "single_threaded_tiles"})

__all__ = ["CV_FILE", "CrossValError", "FoldOutcome", "FoldRun", "assign_cases", "find_dataset_cases",
           "find_fold_runs", "fold_manifest", "predict_crossval", "read_record"]


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


@dataclass
class FoldOutcome:
    """The outcome of one case of :func:`predict_crossval`, with the fold that predicted it."""

    fold: int
    outcome: CaseOutcome


def fold_manifest(out: Path | str, fold: int) -> Path:
    """``OUT/manifest.fold-<k>.jsonl``: the predict manifest of fold ``k``'s cases."""
    return Path(out) / f"manifest.fold-{fold}.jsonl"


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


def find_fold_runs(cv_root: Path | str, allow_unfinished: bool = False) -> list[FoldRun]:
    """Every fold run of a cross-validation root, in fold order.

    Args:
        cv_root: folder with ``fold_0 .. fold_<K-1>`` run directories.
        allow_unfinished: accept runs whose stages are still training (their best weights so far).

    Returns:
        One :class:`FoldRun` per fold ``0 .. K-1``.

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
    missing = [f for f in range(k) if f not in dirs]
    if missing:
        raise CrossValError(f"{root}: fold_{missing[0]} missing (the splits have {k} folds, found "
                            f"{sorted(dirs)}); train it with `glioseg train PREPROCESSED {root / f'fold_{missing[0]}'} "
                            f"--fold {missing[0]} --splits SPLITS`")
    extra = [f for f in sorted(dirs) if f >= k]
    if extra:
        raise CrossValError(f"{root}: fold_{extra[0]} is beyond the {k} folds of the splits; move it out of {root}")
    runs = [_read_fold(f, dirs[f], allow_unfinished) for f in range(k)]
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


# ----------------------------------------------------------------------------- cases and folds


def find_dataset_cases(roots: Sequence[Path | str]) -> list[CaseFiles]:
    """The cases of one or several raw dataset folders, sorted by ID.

    Raises:
        CrossValError: no folder, a folder without cases, or one case ID in two folders (unless
            both reach the very same files, e.g. a folder of symbolic links).
    """
    from glioseg.data.naming import DatasetError

    if not roots:
        raise CrossValError("no dataset folder given; give the raw dataset folder(s) the folds were trained on")
    found: dict[str, tuple[CaseFiles, Path]] = {}
    for root in map(Path, roots):
        try:
            cases = find_cases(root)
        except DatasetError as exc:
            raise CrossValError(str(exc)) from exc
        for case in cases:
            key = case.case_id.casefold()
            if key in found and _real_files(found[key][0]) != _real_files(case):
                raise CrossValError(f"case {case.case_id} is in two dataset folders ({found[key][1]} and {root}) "
                                    "with different files; keep one of them")
            found.setdefault(key, (case, root))
    return sorted((c for c, _ in found.values()), key=lambda c: c.case_id)


def _real_files(case: CaseFiles) -> set[Path]:
    return {s.path.resolve() for s in case.images.values()}


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
        raise CrossValError(f"case {absent[0]}: fold {fold} validated on it ({runs[fold].run_dir / 'run.json'}) "
                            f"but no dataset folder holds it ({len(absent)} such case(s)); give every dataset "
                            "folder the folds were trained on")


# ----------------------------------------------------------------------------- the record


def _record(cv_root: Path, runs: Sequence[FoldRun], assignment: dict[str, int],
            options: dict[str, Any]) -> dict[str, Any]:
    folds = [{"fold": r.fold, "run_dir": str(r.run_dir.resolve()), "weights": r.weights,
              "unfinished": list(r.unfinished), "val": sorted(r.val)} for r in runs]
    return {"format": CV_FORMAT, "cv_root": str(cv_root.resolve()), "folds": folds,
            "cases": dict(sorted(assignment.items())), "options": options}


def read_record(out: Path | str) -> dict[str, Any]:
    """``OUT/cv.json``.

    Raises:
        CrossValError: missing or unreadable (the folder was not written by ``glioseg cv``).
    """
    path = Path(out) / CV_FILE
    try:
        record = json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise CrossValError(f"{path} missing: {out} was not predicted by `glioseg cv`; predict it first") from exc
    except (OSError, ValueError) as exc:
        raise CrossValError(f"{path}: not readable JSON ({exc}); predict into a new folder") from exc
    if not isinstance(record, dict) or record.get("format") != CV_FORMAT or not isinstance(record.get("cases"), dict):
        raise CrossValError(f"{path}: not a {CV_FORMAT} record; predict into a new folder with `glioseg cv`")
    return record


def _differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """What makes an existing record another cross-validation than ``new`` (empty: the same one)."""
    weights = {f["fold"]: f.get("weights") for f in old.get("folds", [])}
    changed = [f"fold {f['fold']}'s weights" for f in new["folds"] if weights.get(f["fold"]) != f["weights"]]
    if len(weights) != len(new["folds"]):
        changed.append(f"the number of folds ({len(weights)} -> {len(new['folds'])})")
    if old.get("cases") != new["cases"]:
        changed.append("the cases or their folds")
    if old.get("options") != new["options"]:
        changed.append(f"the options ({old.get('options')} -> {new['options']})")
    return changed


def _write_record(out: Path, record: dict[str, Any]) -> None:
    """Write ``OUT/cv.json``; an existing one must describe the same cross-validation (resume)."""
    path = out / CV_FILE
    if path.is_file():
        changed = _differences(read_record(out), record)
        if changed:
            raise CrossValError(f"{out}: holds the predictions of another cross-validation ({'; '.join(changed)} "
                                f"differ from {path}); give a new -o folder, or remove {out} to start over")
        return
    out.mkdir(parents=True, exist_ok=True)
    text = json.dumps(record, indent=1)
    atomic_write(path, lambda tmp: tmp.write_text(text))


# ----------------------------------------------------------------------------- predicting


@dataclass
class _Plan:
    """Everything checked before anything is written."""

    cases: list[CaseFiles]
    runs: list[FoldRun]
    assignment: dict[str, int]
    output_label_scheme: str
    predictors: dict[int, Any] = field(default_factory=dict)


def _plan(cv_root: Path, roots: Sequence[Path | str], out: Path, allow_unfinished: bool,
          label_scheme: str | None, output_label_scheme: str | None) -> _Plan:
    cases = find_dataset_cases(roots)
    runs = find_fold_runs(cv_root, allow_unfinished)
    assignment = assign_cases([c.case_id for c in cases], runs)
    check_case_ids(cases)
    check_output_location(out, cases, False)
    scheme = decide_output_scheme(cases, output_label_scheme, label_scheme)  # once, for every fold's cases
    return _Plan(cases, runs, assignment, scheme)


def predict_crossval(cv_root: Path | str, roots: Sequence[Path | str], out: Path | str, *,
                     allow_unfinished: bool = False, label_scheme: str | None = None,
                     output_label_scheme: str | None = None, skip_existing: bool = True, force: bool = False,
                     on_result: Callable[[FoldOutcome], object] | None = None,
                     **predictor_options: Any) -> list[FoldOutcome]:
    """Predict every case of the dataset folders with the fold model that validated on it.

    Every check (folds, assignment, output folder, label scheme, loading each fold's model, the
    existing ``cv.json``) happens before anything is written. Then each fold predicts its cases
    with :func:`glioseg.inference.batch.predict_dataset` (a failing case is recorded and the others
    go on) into ``OUT``, logging to ``OUT/manifest.fold-<k>.jsonl``.

    Args:
        cv_root: folder of ``fold_<k>/`` runs.
        roots: raw dataset folders (NIfTI images; ground truths are not read).
        out: output folder.
        allow_unfinished: accept fold runs still training.
        label_scheme, output_label_scheme, force: as :func:`predict_dataset`.
        skip_existing: skip cases whose outputs are complete (resume).
        on_result: called with each case's :class:`FoldOutcome` (progress).
        **predictor_options: options of :class:`glioseg.inference.predictor.Predictor` (device,
            precision, tta, cascade, ...); they must be JSON-able (recorded in ``cv.json``).

    Returns:
        One outcome per case, fold by fold.

    Raises:
        CrossValError: see :func:`find_fold_runs`, :func:`assign_cases`, :func:`find_dataset_cases`,
            or an output folder holding another cross-validation.
        glioseg.inference.outputs.OutputError: bad case IDs or an output folder among the inputs.
        LabelSchemeError: contradicting label evidence. FileNotFoundError, ValueError,
            glioseg.artifacts.weights.TrainError: a fold's model cannot be loaded.
    """
    from glioseg.inference.predictor import Predictor

    cv_root, out = Path(cv_root), Path(out)
    started = time.time()  # cases another process finishes after this are not redone
    plan = _plan(cv_root, roots, out, allow_unfinished, label_scheme, output_label_scheme)
    plan.predictors = {r.fold: Predictor.from_run(r.run_dir, **predictor_options) for r in plan.runs}
    _write_record(out, _record(cv_root, plan.runs, plan.assignment,
                               {**{k: v for k, v in sorted(predictor_options.items()) if k not in UNRECORDED_OPTIONS},
                                "output_label_scheme": plan.output_label_scheme}))
    results: list[FoldOutcome] = []
    for run in plan.runs:
        cases = [c for c in plan.cases if plan.assignment[c.case_id] == run.fold]

        def report(outcome: CaseOutcome, fold: int = run.fold) -> None:
            results.append(FoldOutcome(fold, outcome))
            if on_result is not None:
                on_result(results[-1])

        predict_dataset(plan.predictors[run.fold], cases, out, label_scheme=label_scheme,
                        output_label_scheme=plan.output_label_scheme, skip_existing=skip_existing,
                        manifest=fold_manifest(out, run.fold), on_result=report, force=force, started=started)
    return results
