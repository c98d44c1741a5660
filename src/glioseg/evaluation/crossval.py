"""Out-of-fold predictions of a cross-validation: every case predicted by the one fold model that
did not train on it, from the raw NIfTI files, through the library path of ``glioseg predict``
(:func:`glioseg.inference.batch.predict_dataset`).

The cross-validation root holds one ``glioseg train`` run per fold, ``ROOT/fold_<k>/``; the cases
each run validated on decide which fold predicts a case (:mod:`glioseg.evaluation.crossval_folds`).

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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from glioseg.data.layouts import find_cases_in
from glioseg.data.nifti import CaseFiles
from glioseg.evaluation.crossval_folds import CrossValError, FoldRun, assign_cases, find_fold_runs
from glioseg.inference.batch import CaseOutcome, predict_dataset
from glioseg.inference.cases import decide_output_scheme
from glioseg.inference.outputs import check_case_ids, check_output_location
from glioseg.utils import atomic_write

CV_FORMAT = "glioseg-cv/1"
CV_FILE = "cv.json"
# predictor options that do not change the label maps: not part of what a resumed run must match
UNRECORDED_OPTIONS = frozenset({"device", "tile_batch", "single_threaded_tiles"})

__all__ = ["CV_FILE", "CrossValPlan", "FoldOutcome", "find_dataset_cases", "fold_manifest", "plan_crossval",
           "predict_crossval", "read_record", "run_crossval"]


@dataclass
class FoldOutcome:
    """The outcome of one case of :func:`predict_crossval`, with the fold that predicted it."""

    fold: int
    outcome: CaseOutcome


def fold_manifest(out: Path | str, fold: int) -> Path:
    """``OUT/manifest.fold-<k>.jsonl``: the predict manifest of fold ``k``'s cases."""
    return Path(out) / f"manifest.fold-{fold}.jsonl"


# ----------------------------------------------------------------------------- the dataset


def find_dataset_cases(roots: Sequence[Path | str]) -> list[CaseFiles]:
    """The cases of one or several raw dataset folders, sorted by ID (:func:`find_cases_in`).

    Raises:
        CrossValError: no folder, a folder without cases, or one case ID in two folders with
            different files.
    """
    from glioseg.data.naming import DatasetError

    if not roots:
        raise CrossValError("no dataset folder given; give the raw dataset folder(s) the folds were trained on")
    try:
        return find_cases_in(roots)[0]
    except DatasetError as exc:
        raise CrossValError(str(exc)) from exc


# ----------------------------------------------------------------------------- the record


def _record(cv_root: Path, runs: Sequence[FoldRun], assignment: dict[str, int], options: dict[str, Any],
            dataset_cases: int) -> dict[str, Any]:
    folds = [{"fold": r.fold, "run_dir": str(r.run_dir.resolve()), "weights": r.weights,
              "unfinished": list(r.unfinished), "val": sorted(r.val)} for r in runs]
    return {"format": CV_FORMAT, "cv_root": str(cv_root.resolve()), "folds": folds,
            "cases": dict(sorted(assignment.items())), "options": options,
            "dataset_cases": dataset_cases, "partial": len(assignment) < dataset_cases}


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


def _check_record(out: Path, record: dict[str, Any]) -> None:
    """An existing ``OUT/cv.json`` must describe the same cross-validation (resume); CrossValError otherwise."""
    path = out / CV_FILE
    if path.is_file():
        changed = _differences(read_record(out), record)
        if changed:
            raise CrossValError(f"{out}: holds the predictions of another cross-validation ({'; '.join(changed)} "
                                f"differ from {path}); give a new -o folder, or remove {out} to start over")


def _write_record(out: Path, record: dict[str, Any]) -> None:
    """Write ``OUT/cv.json`` unless it exists (checked by :func:`_check_record`)."""
    path = out / CV_FILE
    if not path.is_file():
        out.mkdir(parents=True, exist_ok=True)
        text = json.dumps(record, indent=1)
        atomic_write(path, lambda tmp: tmp.write_text(text))


# ----------------------------------------------------------------------------- predicting


@dataclass
class CrossValPlan:
    """A checked cross-validation, ready to predict (:func:`plan_crossval`).

    Attributes:
        out: the output folder.
        cases: every case of the dataset folders.
        runs: the fold runs.
        assignment: case ID -> fold.
        output_label_scheme: the scheme of the written label maps (decided once for all cases).
        label_scheme: the input's scheme, when given.
        predictors: fold -> its loaded :class:`glioseg.inference.predictor.Predictor`.
        record: what ``OUT/cv.json`` holds.
    """

    out: Path
    cases: list[CaseFiles]
    runs: list[FoldRun]
    assignment: dict[str, int]
    output_label_scheme: str
    label_scheme: str | None
    predictors: dict[int, Any]
    record: dict[str, Any]


def plan_crossval(cv_root: Path | str, roots: Sequence[Path | str], out: Path | str, *,
                  allow_unfinished: bool = False, folds: Sequence[int] | None = None, label_scheme: str | None = None,
                  output_label_scheme: str | None = None, **predictor_options: Any) -> CrossValPlan:
    """Check everything and load each fold's model; nothing is written.

    Args:
        cv_root: folder of ``fold_<k>/`` runs.
        roots: raw dataset folders (NIfTI images; ground truths are not read).
        out: output folder.
        allow_unfinished: accept fold runs still training.
        folds: only these folds and the cases they validated on (a partial table, recorded as
            such in ``cv.json``); every fold and every case when None.
        label_scheme, output_label_scheme: as :func:`glioseg.inference.batch.predict_dataset`.
        **predictor_options: options of :class:`glioseg.inference.predictor.Predictor` (device,
            precision, tta, cascade, ...); JSON-able: those that change the label maps are
            recorded in ``cv.json``.

    Returns:
        The plan for :func:`run_crossval`.

    Raises:
        CrossValError: see :func:`find_fold_runs`, :func:`assign_cases`, :func:`find_dataset_cases`,
            or an output folder holding another cross-validation.
        glioseg.inference.outputs.OutputError: bad case IDs or an output folder among the inputs.
        LabelSchemeError: contradicting label evidence. FileNotFoundError, ValueError,
            glioseg.artifacts.weights.TrainError: a fold's model cannot be loaded.
    """
    from glioseg.inference.predictor import Predictor

    cv_root, out = Path(cv_root), Path(out)
    every_case = find_dataset_cases(roots)
    runs = find_fold_runs(cv_root, allow_unfinished, folds)
    held_out = {c for r in runs for c in r.val}
    cases = every_case if folds is None else [c for c in every_case if c.case_id in held_out]
    assignment = assign_cases([c.case_id for c in cases], runs)
    check_case_ids(cases)
    check_output_location(out, cases, False)
    scheme = decide_output_scheme(cases, output_label_scheme, label_scheme)  # once, for every fold's cases
    recorded = {k: (v.to_dict() if hasattr(v, "to_dict") else v)  # e.g. a PostprocessConfig
                for k, v in sorted(predictor_options.items()) if k not in UNRECORDED_OPTIONS}
    record = _record(cv_root, runs, assignment, {**recorded, "output_label_scheme": scheme}, len(every_case))
    _check_record(out, record)
    predictors = {r.fold: Predictor.from_run(r.run_dir, **predictor_options) for r in runs}
    return CrossValPlan(out, cases, runs, assignment, scheme, label_scheme, predictors, record)


def run_crossval(plan: CrossValPlan, *, skip_existing: bool = True, force: bool = False,
                 on_result: Callable[[FoldOutcome], object] | None = None) -> list[FoldOutcome]:
    """Write ``cv.json``, then let each fold predict its cases into ``OUT``.

    Each fold runs :func:`glioseg.inference.batch.predict_dataset` on its cases (a failing case
    is recorded and the others go on), logging to ``OUT/manifest.fold-<k>.jsonl``.

    Args:
        plan: from :func:`plan_crossval`.
        skip_existing: skip cases whose outputs are complete (resume).
        force: as :func:`predict_dataset`.
        on_result: called with each case's :class:`FoldOutcome` (progress).

    Returns:
        One outcome per case, fold by fold.
    """
    started = time.time()  # cases another process finishes after this are not redone
    _write_record(plan.out, plan.record)
    results: list[FoldOutcome] = []
    for run in plan.runs:
        cases = [c for c in plan.cases if plan.assignment[c.case_id] == run.fold]

        def report(outcome: CaseOutcome, fold: int = run.fold) -> None:
            results.append(FoldOutcome(fold, outcome))
            if on_result is not None:
                on_result(results[-1])

        predict_dataset(plan.predictors[run.fold], cases, plan.out, label_scheme=plan.label_scheme,
                        output_label_scheme=plan.output_label_scheme, skip_existing=skip_existing,
                        manifest=fold_manifest(plan.out, run.fold), on_result=report, force=force, started=started)
    return results


def predict_crossval(cv_root: Path | str, roots: Sequence[Path | str], out: Path | str, *,
                     allow_unfinished: bool = False, folds: Sequence[int] | None = None,
                     label_scheme: str | None = None,
                     output_label_scheme: str | None = None, skip_existing: bool = True, force: bool = False,
                     on_result: Callable[[FoldOutcome], object] | None = None,
                     **predictor_options: Any) -> list[FoldOutcome]:
    """Predict every case of the dataset folders with the fold model that validated on it:
    :func:`plan_crossval` (every check before anything is written), then :func:`run_crossval`.

    Arguments and errors are theirs.
    """
    plan = plan_crossval(cv_root, roots, out, allow_unfinished=allow_unfinished, folds=folds,
                         label_scheme=label_scheme, output_label_scheme=output_label_scheme, **predictor_options)
    return run_crossval(plan, skip_existing=skip_existing, force=force, on_result=on_result)
