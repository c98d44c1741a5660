"""The out-of-fold table of a cross-validation: scoring ``glioseg cv``'s predictions with the library
of ``glioseg evaluate`` (:func:`glioseg.evaluation.evaluate.evaluate_folder`), then summarising them.

Before scoring, each prediction is checked to be the one its fold wrote (``OUT/cv.json``, the
fold's manifest line and the file's sha256), so that the table is out-of-fold by construction.

The table, per region WT / TC / ET: mean, sd (sample standard deviation, n - 1), median and min
Dice over all cases; the cases with WT Dice < 0.6; and the same per fold, per institution group
and, given a grade table, per grade. A case whose prediction is missing or unreadable is scored
Dice 0 (``glioseg evaluate``'s rule) and listed.

Institution groups come from the case ID (:func:`institution_group`): BraTS 2017-2020 IDs
``BraTS<yy>_<inst>_...`` (any case) name the contributing site: ``2013`` (the BraTS 2013 cases),
``CBICA`` and ``TCIA<nn>`` (all TCIA collections, one group); every other ID is ``other``.
"""

from __future__ import annotations

import csv
import json
import math
import os
import re
import shutil
import statistics
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from glioseg.evaluation.crossval import fold_manifest, read_record
from glioseg.evaluation.crossval_folds import CrossValError
from glioseg.evaluation.evaluate import EvaluationResult, evaluate_folder
from glioseg.evaluation.scores import CaseScores, summarize
from glioseg.inference.manifest import MANIFEST_GLOB, read_records, sha256_file
from glioseg.inference.outputs import label_path
from glioseg.labels import REGIONS

LOW_WT_DICE = 0.6
INSTITUTIONS = ("2013", "CBICA", "TCIA")
OTHER = "other"
UNKNOWN_GRADE = "unknown"
REGION_NAMES = tuple(r.value for r in REGIONS)
_INSTITUTION_ID = re.compile(r"^brats\d{2}_(2013|cbica|tcia\d*)_", re.IGNORECASE)
TABLE_FILES = ("cv_table.md", "cv_table.csv", "cv_table.json", "cv_cases.csv")

__all__ = ["LOW_WT_DICE", "CaseRow", "CrossValScores", "build_table", "institution_group", "render_markdown",
           "score_crossval", "write_table"]


def institution_group(case_id: str) -> str:
    """The institution group of a case ID (see the module docstring), e.g. ``Brats18_TCIA01_201_1`` -> ``TCIA``.

    Returns:
        ``2013``, ``CBICA`` or ``TCIA`` for a ``BraTS<yy>_<inst>_...`` ID (any case), else ``other``.
    """
    match = _INSTITUTION_ID.match(case_id)
    if match is None:
        return OTHER
    inst = match.group(1).upper()
    return "TCIA" if inst.startswith("TCIA") else inst


@dataclass(frozen=True)
class CaseRow:
    """One case of the table: its fold, groups, status and Dice per region (``{"WT": ..., ...}``)."""

    case_id: str
    fold: int
    institution: str
    grade: str
    status: str
    dice: dict[str, float]


@dataclass
class CrossValScores:
    """Outcome of :func:`score_crossval`: the evaluation (all dataset folders merged) and the rows."""

    evaluation: EvaluationResult
    rows: list[CaseRow]
    record: dict[str, Any]


# ----------------------------------------------------------------------------- scoring


def _merge(results: Sequence[EvaluationResult], keep: set[str] | None = None) -> EvaluationResult:
    """One evaluation over several dataset folders scored against the same prediction folder
    (only the cases in ``keep``, when given)."""
    cases: list[CaseScores] = sorted((c for r in results for c in r.cases if keep is None or c.case_id in keep),
                                     key=lambda c: c.case_id)
    unmatched = set(results[0].unmatched_predictions).intersection(*(r.unmatched_predictions for r in results))
    roots = [str(r.gt_root) for r in results]
    summary: dict[str, Any] = summarize(cases)
    if "provenance" in results[0].summary:  # protocol, schemes and model are those of every folder's scoring
        summary["provenance"] = results[0].summary["provenance"]
    return replace(results[0], cases=cases, summary=summary,
                   missing=sorted(c.case_id for c in cases if c.status == "missing"),
                   errors={c.case_id: c.message for c in cases if c.status == "error"},
                   unmatched_predictions=sorted(unmatched),
                   no_ground_truth=sorted(n for r in results for n in r.no_ground_truth),
                   gt_root=Path(roots[0] if len(roots) == 1 else os.path.commonpath(roots)),
                   seconds=sum(r.seconds for r in results),
                   gt_files={k: v for r in results for k, v in r.gt_files.items()},
                   pred_paths={k: v for r in results for k, v in r.pred_paths.items()})


def _latest_done(paths: Sequence[Path]) -> dict[str, dict[str, Any]]:
    """Case ID -> its latest ``done`` manifest record over ``paths`` (with ``_manifest`` added)."""
    latest: dict[str, dict[str, Any]] = {}
    for path in paths:
        for record in read_records(path):
            old = latest.get(record["id"])
            if record.get("status") == "done" and (old is None or record.get("finished", 0) >= old.get("finished", 0)):
                latest[record["id"]] = {**record, "_manifest": path}
    return latest


def _provenance_problem(out: Path, case_id: str, fold: int, path: Path, written: dict[str, Any] | None,
                        latest: dict[str, Any] | None) -> str | None:
    """Why the prediction ``path`` of ``case_id`` is not the one its fold wrote, or None."""
    if path != label_path(out, case_id):
        return f"case {case_id}: {path} is scored but fold {fold} writes {label_path(out, case_id).name}"
    if written is None:
        return f"case {case_id}: {path} was not written by fold {fold} (no done line in {fold_manifest(out, fold)})"
    if latest is not None and latest["_manifest"] != written["_manifest"]:
        return f"case {case_id}: {path} was written again after fold {fold}, by the run of {latest['_manifest']}"
    if written.get("sha256") != sha256_file(path):
        return f"case {case_id}: {path} changed after fold {fold} wrote it (sha256 differs from its manifest line)"
    return None


def check_provenance(out: Path | str, assignment: dict[str, int], pred_paths: dict[str, Path]) -> None:
    """Check that every prediction to be scored is the label map its fold wrote.

    Args:
        out: the ``glioseg cv`` output folder.
        assignment: case ID -> fold (``cv.json``).
        pred_paths: case ID -> the prediction file the evaluation pairs with it.

    Raises:
        CrossValError: a prediction not written by its fold, written again later by another run,
            or changed since (names the first such case and the fix).
    """
    out = Path(out)
    latest = _latest_done(sorted(out.glob(MANIFEST_GLOB)))
    by_fold = {k: _latest_done([fold_manifest(out, k)]) for k in set(assignment.values())}
    problems = [p for c, path in sorted(pred_paths.items()) if c in assignment
                and (p := _provenance_problem(out, c, assignment[c], path, by_fold[assignment[c]].get(c),
                                              latest.get(c))) is not None]
    if problems:
        raise CrossValError(f"{problems[0]} ({len(problems)} such case(s)); predict them again with "
                            "`glioseg cv ... --redo` so that every case is scored out-of-fold")


def _read_grades(path: Path | str | None) -> dict[str, str]:
    from glioseg.preprocessing.splits import SplitError, read_grades

    if path is None:
        return {}
    try:
        return read_grades(path)
    except SplitError as exc:
        raise CrossValError(str(exc)) from exc


def _check_cases(record: dict[str, Any], result: EvaluationResult, out: Path) -> None:
    """The dataset's cases with ground truths must be the cross-validation's cases (a partial one's:
    among them)."""
    scored, predicted = {c.case_id for c in result.cases}, set(record["cases"])
    if scored - predicted and not record.get("partial"):
        extra = sorted(scored - predicted)
        raise CrossValError(f"case {extra[0]} ({len(extra)} such case(s)) is in the dataset folders but not in "
                            f"{out / 'cv.json'}; give the dataset folders `glioseg cv` predicted")
    if predicted - scored:
        absent = sorted(predicted - scored)
        raise CrossValError(f"case {absent[0]} ({len(absent)} such case(s)) of {out / 'cv.json'} has no ground "
                            "truth in the dataset folders; give every dataset folder of the cross-validation")


def score_crossval(out: Path | str, roots: Sequence[Path | str], grades: Path | str | None = None,
                   label_scheme: str | None = None, workers: int = 1,
                   on_case: Callable[[CaseScores, int, int], None] | None = None) -> CrossValScores:
    """Score the out-of-fold predictions of ``glioseg cv`` against the dataset folders' ground truths.

    Args:
        out: the output folder of :func:`glioseg.evaluation.crossval.predict_crossval`.
        roots: the raw dataset folders (with segmentations).
        grades: grade table (``BraTS18ID,Grade`` or any table :func:`read_grades` reads), optional.
        label_scheme: the ground truths' scheme (decided per folder when None).
        workers, on_case: as :func:`evaluate_folder`.

    Returns:
        The merged evaluation and one :class:`CaseRow` per case.

    Raises:
        CrossValError: no ``cv.json``, predictions not written by their fold, dataset cases that are
            not the cross-validation's, an unreadable grade table.
        DatasetError, FileNotFoundError, LabelSchemeError, ValueError: as :func:`evaluate_folder`.
    """
    out = Path(out)
    record = read_record(out)
    grade_of = _read_grades(grades)
    if not roots:
        raise CrossValError("no dataset folder given; give the raw dataset folder(s) with the ground truths")
    results = [evaluate_folder(out, root, label_scheme, None, False, workers, on_case) for root in roots]
    _check_cases(record, _merge(results), out)
    result = _merge(results, set(record["cases"]) if record.get("partial") else None)
    assignment = {str(k): int(v) for k, v in record["cases"].items()}
    check_provenance(out, assignment, result.pred_paths)
    rows = [CaseRow(c.case_id, assignment[c.case_id], institution_group(c.case_id),
                    grade_of.get(c.case_id, UNKNOWN_GRADE), c.status,
                    {r.value: float(c.regions[r].dice) for r in REGIONS}) for c in result.cases]
    return CrossValScores(result, rows, record)


# ----------------------------------------------------------------------------- the table


def _stats(values: Sequence[float]) -> dict[str, float]:
    """n, mean, sd (n - 1; NaN below 2 values), median, min of Dice values (NaN when empty)."""
    if not values:
        return {"n": 0, "mean": math.nan, "sd": math.nan, "median": math.nan, "min": math.nan}
    return {"n": len(values), "mean": statistics.fmean(values),
            "sd": statistics.stdev(values) if len(values) > 1 else math.nan,
            "median": statistics.median(values), "min": min(values)}


def _group_row(section: str, group: str, rows: Sequence[CaseRow]) -> dict[str, Any]:
    stats = {r: _stats([row.dice[r] for row in rows]) for r in REGION_NAMES}
    return {"section": section, "group": group, "n": len(rows), "regions": stats,
            "n_wt_below": sum(row.dice["WT"] < LOW_WT_DICE for row in rows)}


def build_table(rows: Sequence[CaseRow], with_grades: bool = False, dataset_cases: int | None = None) -> dict[str, Any]:
    """The out-of-fold table of the cases' Dice.

    Args:
        rows: one per case (:func:`score_crossval`).
        with_grades: add the rows per grade.
        dataset_cases: the number of cases in the dataset folders, when the rows may cover only
            some folds' cases (``--folds``); the table then says it is partial.

    Returns:
        ``{"n_cases", "rows": [{"section", "group", "n", "regions": {region: {n, mean, sd, median,
        min}}, "n_wt_below"}], "low_wt": [{"case_id", "fold", "WT"}], "failed": [case IDs],
        "threshold", "dataset_cases", "partial"}``; sections ``all``, ``fold``, ``institution``
        (2013, CBICA, TCIA always; other when present) and ``grade``.
    """
    table_rows = [_group_row("all", "all", rows)]
    table_rows += [_group_row("fold", str(k), [r for r in rows if r.fold == k]) for k in sorted({r.fold for r in rows})]
    present = {r.institution for r in rows}
    groups = [*INSTITUTIONS, *([OTHER] if OTHER in present else [])]
    table_rows += [_group_row("institution", g, [r for r in rows if r.institution == g]) for g in groups]
    if with_grades:
        grades = sorted({r.grade for r in rows}, key=lambda g: (g == UNKNOWN_GRADE, g))
        table_rows += [_group_row("grade", g, [r for r in rows if r.grade == g]) for g in grades]
    low = sorted((r for r in rows if r.dice["WT"] < LOW_WT_DICE), key=lambda r: (r.dice["WT"], r.case_id))
    total = len(rows) if dataset_cases is None else dataset_cases
    return {"n_cases": len(rows), "dataset_cases": total, "partial": len(rows) < total,
            "threshold": LOW_WT_DICE, "rows": table_rows,
            "low_wt": [{"case_id": r.case_id, "fold": r.fold, "WT": r.dice["WT"]} for r in low],
            "failed": [r.case_id for r in rows if r.status != "ok"]}


def _f(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.3f}"


def _means_table(title: str, rows: Sequence[dict[str, Any]]) -> list[str]:
    lines = [f"| {title} | n | " + " | ".join(REGION_NAMES) + " | WT < 0.6 |", "|---|---:|---:|---:|---:|---:|"]
    for row in rows:
        lines.append(f"| {row['group']} | {row['n']} | "
                     + " | ".join(_f(row["regions"][r]["mean"]) for r in REGION_NAMES) + f" | {row['n_wt_below']} |")
    return lines


def render_markdown(table: dict[str, Any], title: str = "Out-of-fold Dice") -> str:
    """The table as Markdown: statistics per region, the cases with WT < 0.6, means per group."""
    overall = table["rows"][0]
    folds = [r["group"] for r in table["rows"] if r["section"] == "fold"]
    cases = f"{table['n_cases']} cases, {len(folds)} folds"
    if table.get("partial"):
        cases = (f"{table['n_cases']} of {table['dataset_cases']} cases (a partial table: only folds "
                 f"{', '.join(folds)})")
    lines = [f"### {title}: {cases}", "",
             "| region | n | mean | sd | median | min |", "|---|---:|---:|---:|---:|---:|"]
    for region in REGION_NAMES:
        s = overall["regions"][region]
        lines.append(f"| {region} | {s['n']} | {_f(s['mean'])} | {_f(s['sd'])} | {_f(s['median'])} | {_f(s['min'])} |")
    low = ", ".join(f"{c['case_id']} ({c['WT']:.3f}, fold {c['fold']})" for c in table["low_wt"]) or "none"
    lines += ["", f"Cases with WT Dice < {table['threshold']}: {len(table['low_wt'])} of {table['n_cases']}: {low}."]
    for section, name in (("institution", "institution"), ("grade", "grade"), ("fold", "fold")):
        rows = [r for r in table["rows"] if r["section"] == section]
        if rows:
            lines += ["", *_means_table(name, rows)]
    failed = ", ".join(table["failed"]) or "none"
    lines += ["", f"Failed cases (no readable prediction, scored Dice 0): {failed}.",
              "sd: sample standard deviation (n - 1). Institution from the ID BraTS<yy>_<inst>_... "
              "(2013, CBICA, TCIA<nn>); other IDs: other. Group columns are mean Dice."]
    return "\n".join(lines) + "\n"


def _csv_rows(table: dict[str, Any]) -> tuple[list[str], list[dict[str, Any]]]:
    columns = ["section", "group", "n", *(f"{r}_{s}" for r in REGION_NAMES for s in ("mean", "sd", "median", "min")),
               "n_wt_below_0.6"]
    out = []
    for row in table["rows"]:
        line: dict[str, Any] = {"section": row["section"], "group": row["group"], "n": row["n"],
                                "n_wt_below_0.6": row["n_wt_below"]}
        for r in REGION_NAMES:
            line.update({f"{r}_{s}": ("" if math.isnan(v) else v)
                         for s, v in row["regions"][r].items() if s != "n"})
        out.append(line)
    return columns, out


def _write_csv(path: Path, columns: list[str], rows: list[dict[str, Any]]) -> None:
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value


def write_table(scores: CrossValScores, table: dict[str, Any], report_dir: Path | str) -> dict[str, Path]:
    """Write ``cv_table.md``, ``cv_table.csv``, ``cv_table.json`` and ``cv_cases.csv``, all or none.

    ``cv_cases.csv`` has one row per case: ID, fold, institution, grade, status, Dice per region
    (the numbers the table is computed from).

    Returns:
        File name -> path.

    Raises:
        OSError: the folder cannot be written (the files are renamed into place only once all are written).
    """
    report_dir = Path(report_dir)
    report_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".cv_table.", suffix=".tmp", dir=report_dir))
    try:
        (staging / "cv_table.md").write_text(render_markdown(table))
        _write_csv(staging / "cv_table.csv", *_csv_rows(table))
        document = {"cv_root": scores.record.get("cv_root"), "pred_dir": str(scores.evaluation.pred_dir),
                    "table": table, "cases": [asdict(r) for r in scores.rows]}
        (staging / "cv_table.json").write_text(json.dumps(_json_safe(document), indent=1))
        case_columns = ["case_id", "fold", "institution", "grade", "status", *(f"dice_{r}" for r in REGION_NAMES)]
        _write_csv(staging / "cv_cases.csv", case_columns,
                   [{**{k: v for k, v in asdict(r).items() if k != "dice"},
                     **{f"dice_{k}": v for k, v in r.dice.items()}} for r in scores.rows])
        return {name: (staging / name).replace(report_dir / name) for name in TABLE_FILES}
    finally:
        shutil.rmtree(staging, ignore_errors=True)
