"""The ``evaluate`` command: score predictions against ground truth."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from glioseg.cli.app import check_label_scheme, fail
from glioseg.cli.paths import check_output_dir, writing

if TYPE_CHECKING:  # annotations only: the modules are imported inside the commands

    from glioseg.evaluation.evaluate import EvaluationResult
    from glioseg.evaluation.scores import CaseScores


PROTOCOL_HELP = ("Scoring rules, named by the BraTS year whose official code they reproduce: brats2021 = CaPTk "
                 "BraTS 2017-2021 legacy Dice/HD95 (default); brats2023 = rachitsaluja/BraTS-2023-Metrics "
                 "lesion-wise (GLI); brats2024 = rachitsaluja/BraTS-2024-Metrics lesion-wise (GLI); brats2025 = "
                 "brats-evaluation 0.0.10 on panoptica 2.1.7 (one-to-one lesions, F1, empty cases dropped).")


def evaluate(
    pred: Path = typer.Option(..., "--pred", help="Folder of predictions <ID>.nii.gz (or <ID>_seg / <ID>-seg)."),
    gt: Path = typer.Option(..., "--gt", help="Ground truths: a dataset folder, an nnU-Net labelsTr/labelsTs "
                            "folder, or a folder of <ID>[_seg|-seg].nii.gz files."),
    protocol: str = typer.Option("brats2021", "--protocol", help=PROTOCOL_HELP),
    label_scheme: str | None = typer.Option(None, "--label-scheme",
                                            help="Label scheme of the input ground truths (--gt) \\[detected]."),
    pred_label_scheme: str | None = typer.Option(
        None, "--pred-label-scheme", help="Label scheme of the predictions (--pred) \\[detected, preferring "
        "the ground truths']."),
    lesion_wise: bool = typer.Option(False, "--lesion-wise", help="Also BraTS 2023 lesion-wise Dice/HD95 "
                                     "(implied by --protocol brats2023/2024/2025)."),
    out: Path | None = typer.Option(None, "-o", "--out", help="Report folder (default PRED/evaluation)."),
    workers: int = typer.Option(1, "--workers", min=1, help="Processes scoring cases in parallel."),
    thumbnails: bool = typer.Option(True, "--thumbnails/--no-thumbnails", help="Embed best/median/worst pictures."),
    viewer: bool = typer.Option(False, "--viewer", help="Also write a NiiVue viewer page per case into "
                                "REPORT/viewer/ (12-15 MB each for BraTS-sized cases; needs --gt to be a dataset "
                                "folder with images) and link each case of the report to it."),
) -> None:
    """Score predictions by the BraTS rules of one protocol: CSV, JSON summary and an HTML report."""
    from glioseg.data.naming import DatasetError
    from glioseg.evaluation.evaluate import evaluate_folder
    from glioseg.evaluation.protocols import ProtocolError, get_protocol
    from glioseg.evaluation.report import write_report
    from glioseg.labels import LabelSchemeError
    from glioseg.runtime import tune_allocator

    try:
        get_protocol(protocol)
    except ProtocolError as exc:
        fail(f"--protocol: {exc}")
    check_label_scheme(label_scheme)
    check_label_scheme(pred_label_scheme, "--pred-label-scheme")
    report_dir = out if out is not None else pred / "evaluation"
    check_output_dir(report_dir, "-o")
    tune_allocator()
    try:
        result = evaluate_folder(pred, gt, label_scheme, pred_label_scheme, lesion_wise, workers, _echo_progress,
                                 protocol)
    except (DatasetError, FileNotFoundError, LabelSchemeError, ValueError) as exc:
        fail(str(exc))
    with writing(report_dir, "-o"):
        paths = write_report(result, report_dir, thumbnails=thumbnails,
                             viewer=_viewer_writer(result) if viewer else None)
    _print_summary(result, paths)
    if result.failed:
        fail(f"{len(result.missing)} missing predictions {result.missing}, {len(result.errors)} unreadable: "
             + "; ".join(f"{k}: {v}" for k, v in result.errors.items()))


def _viewer_writer(result: EvaluationResult) -> Callable[[str, Path], Path]:
    """Writes one case's viewer page from the evaluation's files (its prediction and its ground truth)."""
    from glioseg.data.nifti import CaseError
    from glioseg.interop.viewer import write_case_viewer

    total, done = len(result.pred_paths), [0]

    def write(case_id: str, path: Path) -> Path:
        files = result.gt_files.get(case_id)
        if files is None or not files.images:
            raise CaseError(case_id, "the ground truths come without images; give --gt the dataset folder "
                            "(images and segmentations) to get viewer pages")
        page = write_case_viewer(files, path, pred=result.pred_paths[case_id], label_scheme=result.label_scheme,
                                 pred_label_scheme=result.pred_label_scheme)
        done[0] += 1
        typer.echo(f"[viewer {done[0]}/{total}] {case_id} ({page.stat().st_size / 1e6:.1f} MB)")
        return page

    return write


def _echo_progress(scores: CaseScores, done: int, total: int) -> None:
    dice = "  ".join(f"{r.value} {s.dice:.3f}" for r, s in scores.regions.items())
    note = "" if not scores.failed else f"  FAILED ({scores.status}): {scores.message}"
    typer.echo(f"[{done}/{total}] {scores.case_id}  {dice}{note}")


def _print_summary(result: EvaluationResult, paths: dict[str, Path]) -> None:
    """Mean Dice and HD95 per region, the pooled Dice, where the report went, ignored files."""
    typer.echo(f"protocol {result.protocol}")
    for region, stats in result.summary.items():
        if region not in ("all", "provenance"):
            typer.echo(f"{region}: Dice {stats['dice']['mean']:.4f} +- {stats['dice']['std']:.4f}  "
                       f"HD95 {stats['hd95']['mean']:.2f} mm (median {stats['hd95']['median']:.2f})")
    typer.echo(f"pooled Dice (seed's number) {result.summary['all']['pooled_dice']['mean']:.4f}; "
               f"{len(result.cases)} cases in {result.seconds:.1f} s")
    typer.echo(f"report: {paths['html']}  csv: {paths['csv']}  json: {paths['json']}"
               + (f"  viewer pages: {paths['viewer']}" if "viewer" in paths else ""))
    if result.unmatched_predictions:
        typer.echo(f"ignored {len(result.unmatched_predictions)} prediction files matching no case: "
                   f"{', '.join(result.unmatched_predictions[:5])}")
