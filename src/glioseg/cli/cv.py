"""The ``cv`` command: out-of-fold predictions of a cross-validation and their table.

One command, two steps: (1) predict every case of the dataset folders with the fold model that did
not train on it (resumable: complete outputs are kept), (2) score them as ``glioseg evaluate``
does and write the table (``cv_table.md/.csv/.json``, ``cv_cases.csv``, and evaluate's report).
``--no-predict`` only scores what is in OUT.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from glioseg.cli.app import CaseBar, check_label_scheme, check_tta_and_precision, fail
from glioseg.cli.paths import check_output_dir, writing

if TYPE_CHECKING:  # annotations only: the modules are imported inside the command
    from glioseg.evaluation.crossval import FoldOutcome


def cv(
    cv_root: Path = typer.Argument(..., help="Cross-validation root: fold_0 .. fold_<K-1> runs "
                                   "(`glioseg train --all-folds`)."),
    data: list[Path] = typer.Argument(..., help="Raw dataset folder(s) with the NIfTI images and ground truths."),
    out: Path = typer.Option(..., "-o", "--out", help="Output folder: <ID>.nii.gz per case, cv.json, "
                             "manifest.fold-<k>.jsonl."),
    report: Path | None = typer.Option(None, "--report", help="Folder of the table \\[OUT/report]."),
    grades: Path | None = typer.Option(None, "--grades", help="Grade table (CSV: BraTS18ID,Grade) for the "
                                       "means per grade."),
    predict: bool = typer.Option(True, "--predict/--no-predict", help="Predict the cases not written yet; "
                                 "--no-predict only scores OUT."),
    redo: bool = typer.Option(False, "--redo", help="Predict again cases whose outputs are complete."),
    allow_unfinished: bool = typer.Option(False, "--allow-unfinished", help="Use fold runs still training "
                                          "(their best weights so far)."),
    folds: str | None = typer.Option(None, "--folds", help="Only these folds and their validation cases, "
                                     "e.g. 0,1: a partial table \\[all]."),
    tta: str = typer.Option("none", "--tta", help="Mirroring test-time augmentation: none, all (8 flips) or N."),
    cascade: bool = typer.Option(True, "--cascade/--no-cascade", help="Low-res whole brain, high-res tumour box."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or cuda:N."),
    precision: str = typer.Option("bf16", "--precision", help="bf16, fp16 (CUDA) or fp32."),
    threads: int | None = typer.Option(None, "--threads", min=1, help="CPU threads \\[one per core]."),
    force: bool = typer.Option(False, "--force", help="Predict inputs the model cannot serve instead of "
                               "refusing them."),
    label_scheme: str | None = typer.Option(None, "--label-scheme", help="Label scheme of the dataset "
                                            "\\[the one its layout implies]."),
    workers: int = typer.Option(1, "--workers", min=1, help="Processes scoring cases in parallel."),
    postprocess: Path | None = typer.Option(None, "--postprocess", help="postprocess.json, or the folder holding "
                                            "it (CV_ROOT after `glioseg tune-postprocess CV_ROOT`), applied to "
                                            "every fold's predictions \\[each fold run's own]."),
) -> None:
    """Cross-validation: predict each case with the fold that did not train on it, then print its table."""
    from glioseg.evaluation.crossval import CV_FILE

    check_label_scheme(label_scheme)
    check_tta_and_precision(tta, precision)
    check_output_dir(out, "-o/--out")
    report_dir = report if report is not None else out / "report"
    check_output_dir(report_dir, "--report")
    fold_list = _parse_folds(folds)
    if grades is not None and not grades.is_file():
        fail(f"--grades: {grades} is not a file; give a CSV table with an ID column and a Grade column")
    if postprocess is not None and not predict:
        fail("--postprocess applies to predicting; --no-predict re-scores OUT as it was predicted (cv.json "
             "records its settings): drop one of the two")
    failed: list[str] = []
    if predict:
        _set_threads(threads)
        options: dict[str, Any] = {"tta": tta, "cascade": cascade, "device": device, "precision": precision}
        if postprocess is not None:
            options["postprocess"] = _read_postprocess(postprocess)
        failed = _predict(cv_root, data, out, allow_unfinished, fold_list, label_scheme, force, not redo, options)
    elif not (out / CV_FILE).is_file():
        fail(f"-o/--out: {out / CV_FILE} missing: nothing predicted there yet; run without --no-predict")
    _report(out, data, grades, label_scheme, workers, report_dir)
    if failed:
        fail(f"{len(failed)} case(s) could not be predicted (scored Dice 0): {', '.join(failed)}; see "
             f"{out}/manifest.fold-<k>.jsonl")


def _parse_folds(text: str | None) -> list[int] | None:
    """``--folds 0,1`` -> [0, 1] (None: every fold); exit naming the flag when malformed."""
    if not text:
        return None
    items = [f for f in text.replace(" ", "").split(",") if f]
    if not items or not all(f.isdigit() for f in items) or len(set(items)) != len(items):
        fail(f"--folds {text!r}: give distinct fold numbers (0, 1, ...) separated by commas, e.g. --folds 0,1")
    return [int(f) for f in items]


def _read_postprocess(path: Path) -> Any:
    """The settings of ``--postprocess`` (a file, or the folder holding one); exit naming it when unusable."""
    import json

    from glioseg.inference.postprocess import POSTPROCESS_FILE, PostprocessConfig

    file = path / POSTPROCESS_FILE if path.is_dir() else path
    if not file.is_file():
        fail(f"--postprocess: {file} not found; give the {POSTPROCESS_FILE} written by `glioseg tune-postprocess` "
             "or the folder holding it")
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        return PostprocessConfig.from_dict(data)
    except (UnicodeDecodeError, ValueError) as exc:
        fail(f"--postprocess: {file}: not usable post-processing settings ({exc}); give the {POSTPROCESS_FILE} "
             "written by `glioseg tune-postprocess`")


def _set_threads(threads: int | None) -> None:
    if threads is not None:
        import torch

        torch.set_num_threads(threads)


def _predict(cv_root: Path, data: list[Path], out: Path, allow_unfinished: bool, folds: list[int] | None,
             label_scheme: str | None, force: bool, skip_existing: bool, options: dict[str, Any]) -> list[str]:
    """Predict the cases; exit with one line when the folds or the folder are unusable; the failed IDs."""
    from glioseg.artifacts.bundles import BundleError
    from glioseg.artifacts.weights import TrainError
    from glioseg.evaluation.crossval import plan_crossval, run_crossval
    from glioseg.evaluation.crossval_folds import CrossValError
    from glioseg.inference.outputs import OutputError
    from glioseg.labels import LabelSchemeError
    from glioseg.runtime import tune_allocator

    tune_allocator()
    try:
        plan = plan_crossval(cv_root, data, out, allow_unfinished=allow_unfinished, folds=folds,
                             label_scheme=label_scheme, **options)
    except (CrossValError, OutputError, LabelSchemeError, BundleError, TrainError, FileNotFoundError,
            ValueError) as exc:
        fail(str(exc))

    with CaseBar("cv predict", len(plan.cases)) as bar, writing(out, "-o/--out"):
        def show(r: FoldOutcome) -> None:
            o = r.outcome
            bar.advance(o.case_id, o.status, o.error, f" fold {r.fold} {o.seconds:.1f}s")

        results = run_crossval(plan, skip_existing=skip_existing, force=force, on_result=show)
    counts = {s: sum(r.outcome.status == s for r in results) for s in ("done", "skipped", "failed")}
    typer.echo(f"{counts['done']} predicted, {counts['skipped']} skipped, {counts['failed']} failed -> {out}")
    return [r.outcome.case_id for r in results if r.outcome.status == "failed"]


def _report(out: Path, data: list[Path], grades: Path | None, label_scheme: str | None, workers: int,
            report_dir: Path) -> None:
    """Score OUT, write the table and evaluate's report into ``report_dir``, print the Markdown table."""
    from glioseg.data.naming import DatasetError
    from glioseg.evaluation.crossval_folds import CrossValError
    from glioseg.evaluation.crossval_report import build_table, render_markdown, score_crossval, write_table
    from glioseg.evaluation.report import write_report
    from glioseg.labels import LabelSchemeError

    try:
        scores = score_crossval(out, data, grades, label_scheme, workers)
    except (CrossValError, DatasetError, FileNotFoundError, LabelSchemeError, ValueError) as exc:
        fail(str(exc))
    table = build_table(scores.rows, with_grades=grades is not None,
                        dataset_cases=int(scores.record.get("dataset_cases", len(scores.rows))))
    with writing(report_dir, "--report"):
        write_report(scores.evaluation, report_dir, thumbnails=False)
        paths = write_table(scores, table, report_dir)
    typer.echo(render_markdown(table))
    typer.echo(f"table: {paths['cv_table.md']}  csv: {paths['cv_table.csv']}  json: {paths['cv_table.json']}  "
               f"cases: {paths['cv_cases.csv']}  report: {report_dir / 'report.html'}")
