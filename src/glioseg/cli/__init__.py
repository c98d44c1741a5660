"""The ``glioseg`` command line. Thin: parses arguments, calls the library, prints.

Heavy imports (torch, nibabel, matplotlib) happen inside the commands so that
``glioseg --help`` is instant.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import typer

if TYPE_CHECKING:  # annotations only: the modules are imported inside the commands
    from rich.progress import Progress

    from glioseg.data.nifti import Case, CaseFiles
    from glioseg.training.trainer import DistInfo

app = typer.Typer(
    name="glioseg",
    help="Brain tumour segmentation in multi-modal MRI (BraTS-style T1, T1ce, T2, FLAIR).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def fail(message: str, code: int = 1) -> NoReturn:
    """Print an error in red on stderr and exit non-zero."""
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


class _CaseBar:
    """Progress bar over a batch of cases: the last case's status on the right, failures printed above it."""

    def __init__(self, name: str, total: int) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        columns = (TextColumn(name), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                   TextColumn("{task.fields[last]}", markup=False))
        self.progress: Progress = Progress(*columns, transient=False)
        self.task = self.progress.add_task(name, total=total, last="")

    def __enter__(self) -> _CaseBar:
        self.progress.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.progress.stop()

    def advance(self, case_id: str, status: str, error: str | None = None, note: str = "") -> None:
        """Count one case done (``status`` done, skipped or failed); print its error when it failed."""
        from rich.markup import escape

        self.progress.update(self.task, advance=1, last=f"{case_id} {status}{note}")
        if status == "failed":
            self.progress.console.print(f"[red]failed[/red] {escape(error or '')}")


@app.callback()
def main() -> None:
    """glioseg: find, check, preprocess, train, predict and evaluate brain-tumour segmentations."""


@app.command()
def version() -> None:
    """Print the glioseg version."""
    from glioseg import __version__

    typer.echo(__version__)


def _read_one_case(folder: Path, label_scheme: str | None) -> Case:
    """Read the only case in ``folder`` (any layout); exit with an error when it holds several or none.

    Raises:
        DatasetError, CaseError, LabelSchemeError: as :func:`glioseg.data.nifti.read_case` (the caller reports them).
    """
    from glioseg.data.layouts import find_cases
    from glioseg.data.nifti import read_case

    cases = find_cases(folder)
    if len(cases) != 1:
        fail(f"{folder}: holds {len(cases)} cases; give one case folder")
    return read_case(cases[0], label_scheme)


@app.command()
def info(
    case: Path = typer.Argument(..., help="A case folder (any layout) or a dataset folder."),
    label_scheme: str | None = typer.Option(None, "--label-scheme", help="Scheme of the segmentation."),
) -> None:
    """Print modalities, shape, spacing, orientation, intensity ranges and label volumes."""
    import numpy as np

    from glioseg.data.layouts import DatasetError
    from glioseg.data.nifti import MODALITIES, CaseError
    from glioseg.labels import CANONICAL_NAMES, LabelSchemeError

    try:
        c = _read_one_case(case, label_scheme)
    except (DatasetError, CaseError, LabelSchemeError) as exc:
        fail(str(exc))
    geo = c.geometry
    typer.echo(f"case        {c.case_id}  (layout {c.files.layout})")
    typer.echo(f"shape       {geo.shape}  spacing {tuple(round(s, 3) for s in geo.spacing)} mm  "
               f"orientation {''.join(geo.axcodes)}")
    for ch, mod in zip(c.image, MODALITIES, strict=True):
        typer.echo(f"{mod:<11} {c.files.images[mod].path.name}  range [{ch.min():.1f}, {ch.max():.1f}]  "
                   f"nonzero {(ch != 0).mean() * 100:.1f}%")
    if c.label is not None and c.scheme is not None:
        voxel_ml = float(np.prod(geo.spacing)) / 1000.0
        typer.echo(f"labels      scheme {c.scheme.name}: {c.scheme.description}")
        for canon, name in CANONICAL_NAMES.items():
            n = int((c.label == canon).sum())
            if canon and n:
                typer.echo(f"  {name:<4} {n:>9d} voxels  {n * voxel_ml:8.2f} ml")


@app.command("import-model")
def import_model_cmd(
    bundle_zip: Path = typer.Argument(..., help="Zip made by `glioseg export-model`."),
    models_home: Path | None = typer.Option(None, "--models-home", help="Install folder [~/.glioseg/models]."),
    name: str | None = typer.Option(None, "--name", help="Install name [the manifest's name]."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an installed model of that name."),
) -> None:
    """Install a model bundle safely (sha256 verified, no paths outside the target, no pickle)."""
    from glioseg.artifacts.bundles import BundleError, default_models_home, import_model

    try:
        dest = import_model(bundle_zip, models_home or default_models_home(), name, overwrite)
    except BundleError as exc:
        fail(str(exc))
    typer.echo(f"installed {dest}  (use: glioseg predict -m {dest.name} ...)")


@app.command("export-model")
def export_model_cmd(
    bundle_dir: Path = typer.Argument(..., help="Bundle folder (with manifest.json)."),
    out_zip: Path = typer.Argument(..., help="Zip to write."),
) -> None:
    """Zip a verified model bundle for sharing."""
    from glioseg.artifacts.bundles import BundleError, export_model

    try:
        typer.echo(str(export_model(bundle_dir, out_zip)))
    except BundleError as exc:
        fail(str(exc))


def _parse_shape(text: str) -> tuple[int, int, int]:
    """``"48"`` -> (48, 48, 48); ``"48,48,40"`` -> (48, 48, 40)."""
    try:
        sizes = [int(s) for s in text.replace("x", ",").split(",") if s.strip()]
    except ValueError:
        sizes = []
    if len(sizes) == 1:
        sizes *= 3
    if len(sizes) != 3:
        fail(f"--shape {text!r}: give one size (48) or three (48,48,40)")
    return sizes[0], sizes[1], sizes[2]


@app.command()
def synth(
    out: Path = typer.Argument(..., help="Dataset folder to write."),
    cases: int = typer.Option(4, "--cases", min=1, help="Number of cases."),
    layout: str = typer.Option("brats2017", "--layout", help="brats2017, brats2023, msd or nnunet."),
    label_scheme: str | None = typer.Option(None, "--label-scheme", help="Scheme of the written "
                                            "segmentations (default: the layout's)."),
    seed: int = typer.Option(0, "--seed", help="Random seed; same seed, same dataset."),
    shape: str = typer.Option("48", "--shape", help="Volume size: 48 or 48,48,40."),
    nested: bool = typer.Option(False, "--nested", help="brats2017: HGG/ and LGG/ subfolders."),
) -> None:
    """Write synthetic brain-tumour cases (phantoms) in a dataset layout and label scheme."""
    from glioseg.data.synthetic import write_synthetic_dataset

    size = _parse_shape(shape)
    try:
        written = write_synthetic_dataset(out, cases, layout=layout, scheme=label_scheme, shape=size,
                                          seed=seed, nested=nested)
    except ValueError as exc:  # unknown layout or label scheme
        fail(str(exc))
    typer.echo(f"wrote {len(written)} synthetic {layout} cases {size} to {out}")


@app.command()
def preprocess(
    dataset: Path = typer.Argument(..., help="Dataset folder (any supported layout)."),
    out: Path = typer.Argument(..., help="Output folder for the preprocessed cases."),
    spacing: float | None = typer.Option(None, "--spacing", help="Isotropic target spacing in mm [keep]."),
    workers: int = typer.Option(1, "--workers", min=1, help="Parallel processes."),
    label_scheme: str | None = typer.Option(None, "--label-scheme", help="Scheme of the segmentations [detect]."),
    force: bool = typer.Option(False, "--force", help="Redo cases that are already up to date."),
) -> None:
    """Crop to the brain, z-score each modality in the brain, optionally resample; cache as .npy."""
    from glioseg.data.layouts import DatasetError, find_cases
    from glioseg.preprocessing.normalize import preprocess_dataset
    from glioseg.runtime import tune_allocator

    tune_allocator()
    try:
        cases = find_cases(dataset)
    except DatasetError as exc:
        fail(str(exc))
    with _CaseBar("preprocess", len(cases)) as bar:
        result = preprocess_dataset(cases, out, spacing, workers, label_scheme, force,
                                    lambda r: bar.advance(r.case_id, r.status, r.error))
    counts = {s: sum(r.status == s for r in result.results) for s in ("done", "skipped", "failed")}
    typer.echo(f"{counts['done']} done, {counts['skipped']} up to date, {counts['failed']} failed -> {out}")
    if result.failed:
        fail(f"{len(result.failed)} case(s) failed: {', '.join(r.case_id for r in result.failed)}")


@app.command()
def split(
    preprocessed: Path = typer.Argument(..., help="Preprocessed dataset folder."),
    folds: int = typer.Option(5, "--folds", help="Folds (1 = a single train/val split)."),
    seed: int = typer.Option(0, "--seed", help="Shuffling seed."),
    mapping: Path | None = typer.Option(None, "--mapping", help="ID-mapping CSV (one patient per row)."),
    grades: Path | None = typer.Option(None, "--grades", help="Grade CSV (ID column + Grade) to stratify."),
    val_fraction: float = typer.Option(0.2, "--val-fraction", help="Val share when --folds 1."),
    output: Path | None = typer.Option(None, "-o", "--output", help="Output [PREPROCESSED/splits.json]."),
) -> None:
    """Make k-fold / train-val splits that never put one patient on both sides."""
    from glioseg.preprocessing.normalize import PreprocessError, list_preprocessed
    from glioseg.preprocessing.splits import SplitError, make_splits, save_splits

    try:
        result = make_splits(list_preprocessed(preprocessed), folds, seed, mapping, grades, val_fraction)
    except (PreprocessError, SplitError) as exc:
        fail(str(exc))
    path = save_splits(result, output or preprocessed / "splits.json")
    for s in result["splits"]:
        typer.echo(f"fold {s['fold']}: {len(s['train'])} train, {len(s['val'])} val")
    typer.echo(f"{result['n_cases']} cases, {result['n_patients']} patients -> {path}")


@app.command()
def evaluate(
    pred: Path = typer.Option(..., "--pred", help="Folder of predictions <ID>.nii.gz (or <ID>_seg / <ID>-seg)."),
    gt: Path = typer.Option(..., "--gt", help="Dataset folder with the ground-truth segmentations."),
    label_scheme: str | None = typer.Option(None, "--label-scheme", help="Scheme of the ground truths."),
    pred_label_scheme: str | None = typer.Option(
        None, "--pred-label-scheme", help="Scheme of the predictions (default: detected, preferring the GT's)."),
    lesion_wise: bool = typer.Option(False, "--lesion-wise", help="Also BraTS 2023 lesion-wise Dice/HD95."),
    out: Path | None = typer.Option(None, "-o", "--out", help="Report folder (default PRED/evaluation)."),
    workers: int = typer.Option(1, "--workers", min=1, help="Processes scoring cases in parallel."),
    thumbnails: bool = typer.Option(True, "--thumbnails/--no-thumbnails", help="Embed best/median/worst pictures."),
) -> None:
    """Score predictions by the BraTS rules: CSV, JSON summary and an HTML report."""
    from glioseg.data.layouts import DatasetError
    from glioseg.evaluation.evaluate import evaluate_folder
    from glioseg.evaluation.report import write_report
    from glioseg.labels import LabelSchemeError
    from glioseg.runtime import tune_allocator

    tune_allocator()

    def progress(scores, done: int, total: int) -> None:
        dice = "  ".join(f"{r.value} {s.dice:.3f}" for r, s in scores.regions.items())
        note = "" if not scores.failed else f"  FAILED ({scores.status}): {scores.message}"
        typer.echo(f"[{done}/{total}] {scores.case_id}  {dice}{note}")

    try:
        result = evaluate_folder(pred, gt, label_scheme, pred_label_scheme, lesion_wise, workers, progress)
    except (DatasetError, FileNotFoundError, LabelSchemeError, ValueError) as exc:
        fail(str(exc))
    paths = write_report(result, out if out is not None else pred / "evaluation", thumbnails=thumbnails)
    for region, stats in result.summary.items():
        if region != "all":
            typer.echo(f"{region}: Dice {stats['dice']['mean']:.4f} +- {stats['dice']['std']:.4f}  "
                       f"HD95 {stats['hd95']['mean']:.2f} mm (median {stats['hd95']['median']:.2f})")
    typer.echo(f"pooled Dice (seed's number) {result.summary['all']['pooled_dice']['mean']:.4f}; "
               f"{len(result.cases)} cases in {result.seconds:.1f} s")
    typer.echo(f"report: {paths['html']}  csv: {paths['csv']}  json: {paths['json']}")
    if result.unmatched_predictions:
        typer.echo(f"ignored {len(result.unmatched_predictions)} prediction files matching no case: "
                   f"{', '.join(result.unmatched_predictions[:5])}")
    if result.failed:
        fail(f"{len(result.missing)} missing predictions {result.missing}, {len(result.errors)} unreadable: "
             + "; ".join(f"{k}: {v}" for k, v in result.errors.items()))


@app.command()
def show(
    case: Path = typer.Argument(..., help="A case folder (any layout)."),
    pred: Path | None = typer.Option(None, "--pred", help="Predicted label map of this case."),
    out: Path = typer.Option(..., "-o", "--out", help="Output .png file, or a folder for <ID>.png."),
    gif: bool = typer.Option(False, "--gif", help="Also write an axial slice-sweep GIF next to the PNG."),
    label_scheme: str | None = typer.Option(None, "--label-scheme", help="Scheme of the ground truth."),
    pred_label_scheme: str | None = typer.Option(None, "--pred-label-scheme", help="Scheme of the prediction."),
) -> None:
    """Picture of a case: ground truth and prediction on FLAIR and T1ce, three planes."""
    from glioseg.data.layouts import DatasetError
    from glioseg.data.nifti import CaseError
    from glioseg.evaluation.evaluate import read_label_file
    from glioseg.evaluation.figures import case_figure, save_figure, save_gif, sweep_frames
    from glioseg.labels import LabelSchemeError

    try:
        c = _read_one_case(case, label_scheme)
        labels = None
        if pred is not None:
            raw, geo, _ = read_label_file(pred, c.case_id, pred_label_scheme,
                                          c.scheme.name if c.scheme else None, "--pred-label-scheme")
            if not geo.matches(c.geometry):
                raise CaseError(c.case_id, f"prediction shape {geo.shape} / affine differ from the case's "
                                f"{c.geometry.shape}; give a prediction on the case's grid", pred)
            labels = c.geometry.to_canonical(raw)
    except (DatasetError, CaseError, LabelSchemeError) as exc:
        fail(str(exc))
    png = out if out.suffix.lower() == ".png" else out / f"{c.case_id}.png"
    fig = case_figure(c.image[3], c.image[1], c.label, labels, c.geometry.canonical_spacing, c.case_id)
    typer.echo(f"wrote {save_figure(fig, png)}")
    if gif:
        typer.echo(f"wrote {save_gif(sweep_frames(c.image[3], c.label, labels), png.with_suffix('.gif'))}")


@app.command("plot-curves")
def plot_curves(
    run_dir: Path = typer.Argument(..., help="Run directory (CSV logs found inside) or one CSV log."),
    out: Path | None = typer.Option(None, "-o", "--out", help="PNG path (default RUN_DIR/curves.png)."),
) -> None:
    """Plot training curves (loss, validation Dice per region, learning rate) from CSV logs."""
    from glioseg.evaluation.figures import CurveLogError, plot_training_curves

    try:
        typer.echo(f"wrote {plot_training_curves(run_dir, out)}")
    except (CurveLogError, OSError) as exc:
        fail(str(exc))


@app.command()
def check(
    dataset: Path = typer.Argument(..., help="Dataset folder (any layout) or one case folder."),
    label_scheme: str | None = typer.Option(None, "--label-scheme", help="Scheme of the "
                                            "segmentations (detected when omitted)."),
    json_report: Path | None = typer.Option(None, "--json", help="Also write a JSON report here."),
    layout: str | None = typer.Option(None, "--layout", help="Force a layout: brats2017, "
                                      "brats2023, msd or nnunet."),
    workers: int = typer.Option(1, "--workers", min=1, help="Cases read in parallel."),
) -> None:
    """Check every case's files (modalities, dimensions, geometry, values, labels); exit 1 if any fails."""
    from rich.console import Console

    from glioseg.data.checks import check_dataset, report_lines, report_table, write_report_json

    report = check_dataset(dataset, label_scheme=label_scheme, layout=layout, workers=workers)
    if report.cases:
        Console(width=120).print(report_table(report))
    for line in report_lines(report):
        typer.echo(line)
    if json_report is not None:
        write_report_json(report, json_report)
    n = len(report.cases)
    typer.echo(f"{n - report.n_failed}/{n} cases passed in {report.seconds:.1f} s"
               + ("" if report.ok else "; fix the errors above"))
    if not report.ok:
        raise typer.Exit(1)



def _parse_folds(text: str | None) -> list[int] | None:
    if not text:
        return None
    try:
        return [int(f) for f in text.replace(" ", "").split(",") if f]
    except ValueError:
        fail(f"--folds {text!r}: give fold numbers separated by commas, e.g. --folds 0,1,2")


def _predict_inputs(input_: Path | None, t1: Path | None, t1ce: Path | None, t2: Path | None,
                    flair: Path | None) -> list[CaseFiles]:
    """Cases from -i (case or dataset folder) or from the four files given one by one."""
    from glioseg.data.layouts import DatasetError, case_from_files, find_cases

    if any(f is not None for f in (t1, t1ce, t2, flair)):
        if input_ is not None or t1 is None or t1ce is None or t2 is None or flair is None:
            fail("give either -i INPUT or all four of --t1 --t1ce --t2 --flair")
        return [case_from_files(t1, t1ce, t2, flair)]
    if input_ is None:
        fail("no input: give -i CASE_OR_DATASET_FOLDER, or --t1 --t1ce --t2 --flair")
    try:
        return find_cases(input_)
    except DatasetError as exc:
        fail(str(exc))


@app.command()
def predict(
    input_: Path | None = typer.Option(None, "-i", "--input", help="A case folder or a dataset folder (any layout)."),
    out: Path = typer.Option(..., "-o", "--out", help="Output folder: <ID>.nii.gz per case."),
    model: str | None = typer.Option(None, "-m", "--model", help="Run directory, bundle, or installed model name "
                                     "[shipped default model]."),
    folds: str | None = typer.Option(None, "--folds", help="Folds to ensemble, e.g. 0,1,2 [all]."),
    tta: str = typer.Option("none", "--tta", help="Mirroring test-time augmentation: none, all (8 flips) or N."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or cuda:N."),
    precision: str = typer.Option("bf16", "--precision", help="bf16, fp16 (CUDA) or fp32."),
    cascade: bool = typer.Option(True, "--cascade/--no-cascade", help="Low-res whole brain, high-res tumour box."),
    margin: float = typer.Option(16.0, "--margin", help="Cascade margin around the tumour, in mm."),
    overlap: float = typer.Option(0.5, "--overlap", help="Sliding-window overlap in [0, 1)."),
    tile_batch: int = typer.Option(1, "--tile-batch", min=1, help="Tiles per network call."),
    num_shards: int = typer.Option(1, "--num-shards", min=1, help="Split the cases into N shards."),
    shard_id: int = typer.Option(0, "--shard-id", min=0, help="Which shard (0..N-1) this process predicts."),
    skip_existing: bool = typer.Option(False, "--skip-existing", help="Skip cases whose output exists."),
    save_probabilities: bool = typer.Option(False, "--save-probabilities",
                                            help="Also write OUT/probabilities/<ID>_<region>.nii.gz."),
    mc_dropout: int = typer.Option(0, "--mc-dropout", min=0, help="MC-dropout samples; writes OUT/uncertainty/."),
    threads: int | None = typer.Option(None, "--threads", min=1, help="CPU threads [one per core]; 1 is "
                                       "faster on a machine busy with other jobs."),
    label_scheme: str | None = typer.Option(None, "--label-scheme", help="Scheme of the written labels "
                                            "[the dataset's, else brats2017]."),
    t1: Path | None = typer.Option(None, "--t1", help="T1 file (with --t1ce --t2 --flair)."),
    t1ce: Path | None = typer.Option(None, "--t1ce", help="T1ce file."),
    t2: Path | None = typer.Option(None, "--t2", help="T2 file."),
    flair: Path | None = typer.Option(None, "--flair", help="FLAIR file."),
) -> None:
    """Segment cases with a trained model; write <OUT>/<ID>.nii.gz in each input's geometry."""
    from glioseg.artifacts.bundles import BundleError, resolve_model
    from glioseg.inference.batch import manifest_path, predict_dataset, select_shard
    from glioseg.inference.predictor import Predictor
    from glioseg.labels import LabelSchemeError, get_scheme
    from glioseg.runtime import tune_allocator
    from glioseg.training.trainer import TrainError

    tune_allocator()
    if threads is not None:
        import torch

        torch.set_num_threads(threads)
    try:
        if label_scheme is not None:
            get_scheme(label_scheme)
        cases = select_shard(_predict_inputs(input_, t1, t1ce, t2, flair), num_shards, shard_id)
        run_dir = resolve_model(model)
        predictor = Predictor.from_run(run_dir, _parse_folds(folds), device=device, precision=precision,
                                       tta=tta, cascade=cascade, margin_mm=margin, overlap=overlap,
                                       tile_batch=tile_batch, mc_samples=mc_dropout)
    except (BundleError, FileNotFoundError, ValueError, LabelSchemeError, TrainError) as exc:
        fail(str(exc))
    manifest = manifest_path(out, num_shards, shard_id)
    with _CaseBar("predict", len(cases)) as bar:
        results = predict_dataset(predictor, cases, out, label_scheme=label_scheme, skip_existing=skip_existing,
                                  save_probabilities=save_probabilities, manifest=manifest,
                                  on_result=lambda r: bar.advance(r.case_id, r.status, r.error, f" {r.seconds:.1f}s"))
    counts = {s: sum(r.status == s for r in results) for s in ("done", "skipped", "failed")}
    typer.echo(f"{counts['done']} predicted, {counts['skipped']} skipped, {counts['failed']} failed -> {out} "
               f"(manifest {manifest})")
    failed = [r.case_id for r in results if r.status == "failed"]
    if failed:
        fail(f"{len(failed)} case(s) failed: {', '.join(failed)}; see {manifest}")


def _torchrun_membership() -> DistInfo:
    """Process-group membership from torchrun's RANK / WORLD_SIZE / LOCAL_RANK (single process without)."""
    import os

    from glioseg.training.trainer import DistInfo

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    return DistInfo(int(os.environ.get("RANK", "0")), world, int(os.environ.get("LOCAL_RANK", "0")))


@app.command()
def train(
    preprocessed: Path = typer.Argument(
        ..., help="Preprocessed dataset at the stage's spacing (`glioseg preprocess`)."),
    run_dir: Path = typer.Argument(..., help="Run directory (created; resumed when it holds a checkpoint)."),
    preset: str | None = typer.Option(None, "--preset", help="isensee2017 (GPU) or cpu [the run's, else isensee2017]."),
    config_file: Path | None = typer.Option(None, "--config", help="YAML overriding the preset."),
    stage: str | None = typer.Option(None, "--stage", help="Stage to train (cpu preset: low, high) [first]."),
    fold: int | None = typer.Option(None, "--fold", min=0, help="Cross-validation fold to train."),
    all_folds: bool = typer.Option(False, "--all-folds", help="Train every fold into RUN/fold_<k>/."),
    splits: Path | None = typer.Option(None, "--splits", help="splits.json [RUN's, PREPROCESSED's, or new]."),
    epochs: int | None = typer.Option(None, "--epochs", min=1, help="Override the stage's epochs."),
    iterations: int | None = typer.Option(None, "--iterations", min=1, help="Override iterations per epoch."),
    device: str | None = typer.Option(None, "--device", help="auto, cpu, cuda, cuda:N."),
    precision: str | None = typer.Option(None, "--precision", help="fp32, bf16, fp16 (CUDA)."),
    resume: bool = typer.Option(True, "--resume/--no-resume", help="Continue from the stage's checkpoint."),
    seed: int | None = typer.Option(None, "--seed", help="Base seed."),
    deterministic: bool | None = typer.Option(None, "--deterministic/--no-deterministic",
                                              help="Best-effort deterministic kernels."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
) -> None:
    """Train one stage of a 3D U-Net (resumable; runs under torchrun for DDP)."""
    import dataclasses

    from glioseg.config import ConfigError, resolve_config
    from glioseg.preprocessing.normalize import PreprocessError
    from glioseg.preprocessing.splits import SplitError
    from glioseg.runtime import tune_allocator
    from glioseg.training.trainer import TrainError, fit, fit_all_folds, init_distributed

    if fold is not None and all_folds:
        fail("give either --fold K or --all-folds, not both")
    tune_allocator()
    dist = _torchrun_membership()
    try:
        saved = run_dir / "config.yaml" if not all_folds else run_dir / "fold_0" / "config.yaml"
        config = resolve_config(preset, config_file, saved if resume else None)
        name = config.stage(stage).name
        changes = {k: v for k, v in (("epochs", epochs), ("iterations", iterations), ("precision", precision))
                   if v is not None}
        if changes:
            config = config.with_stage(name, **changes)
        top: dict[str, Any] = {k: v for k, v in (("device", device), ("seed", seed), ("deterministic", deterministic))
                               if v is not None}
        config = dataclasses.replace(config, **top) if top else config
        initialised = init_distributed(dist, config.device)
        kwargs: dict[str, Any] = {"splits_path": splits, "resume": resume, "dist": dist,
                                  "show_progress": progress and dist.is_main}
        if all_folds:
            results = fit_all_folds(config, preprocessed, run_dir, name, **kwargs)
        else:
            results = [fit(config, preprocessed, run_dir, name, fold=fold, **kwargs)]
    except (ConfigError, TrainError, PreprocessError, SplitError, ValueError) as exc:
        fail(str(exc))
    if initialised:
        import torch.distributed

        torch.distributed.destroy_process_group()
    if dist.is_main:
        for r in results:
            best = next((row for row in r.progress.history if row["epoch"] == r.progress.best_epoch), {})
            dice = "  ".join(f"{k[5:]} {v:.3f}" for k, v in best.items() if k.startswith("dice_"))
            typer.echo(f"{r.stage_dir}: {r.progress.epoch} epochs, {r.progress.seconds / 60:.1f} min; "
                       f"best epoch {r.progress.best_epoch}  {dice or '(no validation)'}")


@app.command("tune-postprocess")
def tune_postprocess_cmd(
    run_dir: Path = typer.Argument(..., help="Run directory (or folder of fold_<k> runs)."),
    preprocessed: Path = typer.Argument(..., help="Preprocessed dataset at the full-resolution stage's spacing."),
    splits: Path | None = typer.Option(None, "--splits", help="splits.json [the runs' recorded splits]."),
    thresholds: bool = typer.Option(False, "--thresholds/--no-thresholds", help="Also tune the WT/TC/ET thresholds."),
    candidates: str = typer.Option("0,10,25,50,100,200,300,500,750,1000,1500", "--candidates",
                                   help="Small-ET thresholds (voxels) to try."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or cuda:N."),
    precision: str = typer.Option("bf16", "--precision", help="bf16, fp16 (CUDA) or fp32."),
) -> None:
    """Choose the small-ET rule (and thresholds) on validation folds; write RUN_DIR/postprocess.json."""
    from glioseg.inference.postprocess import save_postprocess, tune_postprocess
    from glioseg.inference.tuning import validation_probabilities
    from glioseg.preprocessing.normalize import PreprocessError
    from glioseg.preprocessing.splits import SplitError
    from glioseg.runtime import tune_allocator
    from glioseg.training.trainer import TrainError

    tune_allocator()
    try:
        values = [int(v) for v in candidates.replace(" ", "").split(",") if v]
    except ValueError:
        fail(f"--candidates {candidates!r}: give whole numbers of voxels separated by commas")
    try:
        pairs = validation_probabilities(run_dir, preprocessed, splits, {"device": device, "precision": precision},
                                         on_case=lambda cid: typer.echo(f"  {cid}"))
        target = "labels" if pairs[0][0].shape[0] != 3 else "regions"
        result = tune_postprocess(pairs, target, values, thresholds)
    except (FileNotFoundError, ValueError, TrainError, PreprocessError, SplitError) as exc:
        fail(str(exc))
    path = save_postprocess(result.config, run_dir, {"tuning": result.to_dict()})
    names = ("WT", "TC", "ET")
    base = "  ".join(f"{n} {d:.4f}" for n, d in zip(names, result.baseline_dice, strict=True))
    tuned = "  ".join(f"{n} {d:.4f}" for n, d in zip(names, result.mean_dice, strict=True))
    typer.echo(f"{result.n_cases} validation cases; default Dice {base}")
    typer.echo(f"min_et_voxels {result.config.min_et_voxels}, thresholds {result.config.thresholds}: Dice {tuned}")
    typer.echo(f"wrote {path}")


if __name__ == "__main__":
    app()
