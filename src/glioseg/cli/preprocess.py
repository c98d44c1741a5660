"""Commands that prepare training data: ``preprocess``, ``split``."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from glioseg.cli.app import CaseBar, check_label_scheme, fail
from glioseg.cli.paths import check_output_dir, check_output_file, check_outside_inputs, writing

if TYPE_CHECKING:  # annotations only: the modules are imported inside the commands
    from glioseg.data.nifti import CaseFiles


def preprocess(
    datasets: list[Path] = typer.Argument(..., help="Dataset folder(s) (any supported layout); several "
                                          "folders (e.g. releases) go into one cache.", show_default=False),
    out: Path = typer.Argument(..., help="Output folder for the preprocessed cases."),
    spacing: float | None = typer.Option(None, "--spacing", help="Isotropic target spacing in mm \\[keep]."),
    workers: int = typer.Option(1, "--workers", min=1, help="Parallel processes."),
    label_scheme: str | None = typer.Option(None, "--label-scheme",
                                            help="Label scheme of the input segmentations \\[detected]."),
    force: bool = typer.Option(False, "--force", help="Redo cases that are already up to date."),
) -> None:
    """Crop to the brain, z-score each modality in the brain, optionally resample; cache as .npy.

    Cases of several DATA folders go into one cache (one label scheme for all; each case's folder
    is recorded in its meta.json and in OUT/dataset.json). A case ID in two folders is refused.
    """
    from glioseg.data.layouts import find_cases_in
    from glioseg.data.naming import DatasetError
    from glioseg.data.schemes import decide_dataset_scheme
    from glioseg.labels import LabelSchemeError
    from glioseg.preprocessing.cache import check_target_spacing, preprocess_dataset
    from glioseg.runtime import tune_allocator

    check_label_scheme(label_scheme)
    try:
        check_target_spacing(spacing)
    except ValueError as exc:
        fail(f"--spacing: {exc}; leave it out to keep each case's spacing")
    check_output_dir(out, "OUT")
    tune_allocator()
    try:
        cases, sources = find_cases_in(datasets)
    except DatasetError as exc:
        fail(str(exc))
    check_outside_inputs(out, _input_files(cases), "OUT")
    try:  # the dataset's label scheme, decided once before any case is read
        decided = decide_dataset_scheme(cases, label_scheme, workers=workers).scheme
    except LabelSchemeError as exc:
        fail(str(exc))
    with writing(out, "OUT"), CaseBar("preprocess", len(cases)) as bar:
        result = preprocess_dataset(cases, out, spacing, workers, decided.name if decided else None, force,
                                    lambda r: bar.advance(r.case_id, r.status, r.error), sources)
    counts = {s: sum(r.status == s for r in result.results) for s in ("done", "skipped", "failed")}
    typer.echo(f"{counts['done']} done, {counts['skipped']} up to date, {counts['failed']} failed -> {out}")
    if result.failed:
        fail(f"{len(result.failed)} case(s) failed: {', '.join(r.case_id for r in result.failed)}")


def _input_files(cases: Sequence[CaseFiles]) -> Iterator[Path]:
    """Every image and label file of ``cases``."""
    for case in cases:
        yield from (source.path for source in case.images.values())
        if case.label is not None:
            yield case.label


def _check_not_a_case_file(path: Path, preprocessed: Path) -> None:
    """Exit with a one-line error when ``-o`` would replace the preprocessed dataset's ``dataset.json``
    or a file inside one of its case folders."""
    root, target = preprocessed.resolve(), path.resolve()
    if target == root / "dataset.json" or (root in target.parents and target.parent != root):
        fail(f"-o: {path} is inside the preprocessed dataset's own files; give e.g. {preprocessed / 'splits.json'}")


def split(
    preprocessed: Path = typer.Argument(..., help="Preprocessed dataset folder."),
    folds: int = typer.Option(5, "--folds", help="Folds (1 = a single train/val split)."),
    seed: int = typer.Option(0, "--seed", help="Shuffling seed."),
    mapping: list[Path] | None = typer.Option(
        None, "--mapping", help="ID-mapping CSV: brats2020_name_mapping.csv or brats2021_name_mapping.csv layout; "
        "repeat for several (IDs of all releases in them are grouped by patient).", show_default=False),
    grades: Path | None = typer.Option(None, "--grades", help="Grade CSV (ID column + Grade) to stratify."),
    val_fraction: float = typer.Option(0.2, "--val-fraction", help="Val share when --folds 1."),
    output: Path | None = typer.Option(None, "-o", "--output", help="Output \\[PREPROCESSED/splits.json]."),
) -> None:
    """Make k-fold / train-val splits that never put one patient on both sides."""
    from glioseg.preprocessing.cache import list_preprocessed
    from glioseg.preprocessing.normalize import PreprocessError
    from glioseg.preprocessing.splits import SplitError, make_splits, save_splits

    path = output or preprocessed / "splits.json"
    check_output_file(path, "-o")
    _check_not_a_case_file(path, preprocessed)
    try:
        result = make_splits(list_preprocessed(preprocessed), folds, seed, mapping or None, grades, val_fraction)
    except (PreprocessError, SplitError) as exc:
        fail(str(exc))
    with writing(path, "-o"):
        save_splits(result, path)
    for s in result["splits"]:
        typer.echo(f"fold {s['fold']}: {len(s['train'])} train, {len(s['val'])} val")
    typer.echo(f"{result['n_cases']} cases, {result['n_patients']} patients -> {path}")
