"""The radiomics commands: ``features``, ``survival fit``, ``survival predict``, ``grade`` and ``grade-fit``.

``survival fit`` and ``survival predict`` are the two commands of the ``survival`` group
(``glioseg.cli.COMMANDS`` names them "survival fit" and "survival predict").
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

from glioseg.cli.app import CaseBar, console, fail
from glioseg.cli.paths import check_output_dir, check_output_file, writing

if TYPE_CHECKING:  # annotations only: the modules are imported inside the commands
    from glioseg.radiomics.dataset import SegmentationSource
    from glioseg.radiomics.features import FeatureRow, FeatureTable

_INPUT_HELP = "A case or dataset folder (any layout); repeat -i to combine datasets."
_SEG_HELP = "Folder of segmentations (<ID>.nii.gz as `glioseg predict` writes) \\[segment with the model]."
_GT_HELP = "Measure on the dataset's own ground-truth segmentations (<ID>_seg.nii.gz) instead of predicting."
_MODEL_HELP = "Segmentation model for cases without --seg: run directory, bundle or name \\[shipped default]."
# the segmentation-source options features, survival predict and grade share (typer reads them as metadata)
_SEG_OPTION = typer.Option(None, "--seg", help=_SEG_HELP)
_GT_OPTION = typer.Option(False, "--ground-truth", help=_GT_HELP)
_MODEL_OPTION = typer.Option(None, "--seg-model", help=_MODEL_HELP)
_DEVICE_OPTION = typer.Option("auto", "--device", help="Device of the segmentation model: auto, cpu, cuda.")


def _source(seg: Path | None, ground_truth: bool, seg_model: str | None, device: str) -> SegmentationSource:
    """The segmentation source the flags name; the model is loaded only when it is needed."""
    from glioseg.radiomics.dataset import folder_source, ground_truth_source, model_source

    if seg is not None and ground_truth:
        fail("give either --seg SEGS or --ground-truth, not both")
    if seg is not None:
        if not seg.is_dir():
            fail(f"--seg {seg}: not a folder; give the folder of segmentations (e.g. what `glioseg predict -o` wrote)")
        return folder_source(seg)
    if ground_truth:
        return ground_truth_source()
    from glioseg.artifacts.bundles import BundleError, model_identity, resolve_model
    from glioseg.cli.predict import _load_predictor

    try:
        folder = resolve_model(seg_model)
        name = str(model_identity(folder).get("name") or folder.name)
    except (BundleError, FileNotFoundError, ValueError) as exc:
        fail(f"--seg-model: {exc}")
    predictor = _load_predictor(seg_model, None, device=device, precision="bf16", tta="none")
    return model_source(predictor, name)


def _extract(inputs: list[Path], source: SegmentationSource) -> list[FeatureRow]:
    """Feature rows of every case of ``inputs`` (failed cases carry their error), with a progress bar."""
    from glioseg.data.layouts import find_cases_in
    from glioseg.data.naming import DatasetError
    from glioseg.radiomics.dataset import extract_dataset

    try:
        cases, _ = find_cases_in(inputs)
    except DatasetError as exc:
        fail(str(exc))
    with CaseBar("features", len(cases)) as bar:
        return extract_dataset(cases, source, lambda r: bar.advance(r.case_id, "failed" if r.error else "done",
                                                                     r.error))


def _as_table(rows: list[FeatureRow]) -> FeatureTable:
    """The successful rows as a :class:`FeatureTable`."""
    import numpy as np

    from glioseg.radiomics.catalog import FEATURE_NAMES
    from glioseg.radiomics.features import FeatureTable

    good = [r for r in rows if r.error is None]
    values = np.array([[r.values[n] for n in FEATURE_NAMES] for r in good], dtype=np.float64)
    return FeatureTable([r.case_id for r in good], FEATURE_NAMES, values.reshape(len(good), len(FEATURE_NAMES)),
                        [r.source for r in good])


def _report_failures(rows: list[FeatureRow]) -> None:
    """Exit non-zero naming the cases that failed (after the outputs of the others are written)."""
    failed = [r for r in rows if r.error is not None]
    for r in failed:
        typer.echo(f"failed: {r.error}", err=True)
    if failed:
        outcome = "the others were written" if len(failed) < len(rows) else "no case succeeded"
        fail(f"{len(failed)} case(s) failed: {', '.join(r.case_id for r in failed)}; {outcome}")


def _check_output_not_input(out: Path, folders: list[Path] | None, files: list[Path | None]) -> None:
    """Exit with one line when the output file is an input file or lies inside an input folder."""
    target = out.resolve()
    for f in files:
        if f is not None and f.resolve() == target:
            fail(f"-o/--out: {out} is an input ({f}); give another output file")
    for folder in folders or []:
        if folder.resolve() in target.parents:
            fail(f"-o/--out: {out} is inside the input folder {folder}; write the output outside the input data")


def _need_inputs(inputs: list[Path] | None, features_csv: Path | None) -> None:
    if not inputs and features_csv is None:
        fail("no input: give -i DATA (repeat for several folders), or --features FEATURES.csv")
    if inputs and features_csv is not None:
        fail("give either -i DATA or --features FEATURES.csv, not both")


def _table(inputs: list[Path] | None, features_csv: Path | None, seg: Path | None, ground_truth: bool,
           seg_model: str | None, device: str) -> tuple[FeatureTable, list[FeatureRow]]:
    """The features (from --features, or extracted from -i) and the extracted rows (for failures)."""
    from glioseg.radiomics.errors import RadiomicsError
    from glioseg.radiomics.features import read_features_csv

    _need_inputs(inputs, features_csv)
    if features_csv is not None:
        try:
            return read_features_csv(features_csv), []
        except RadiomicsError as exc:
            fail(f"--features: {exc}")
    rows = _extract(list(inputs or []), _source(seg, ground_truth, seg_model, device))
    return _as_table(rows), rows


def _case_ids_only(inputs: list[Path]) -> FeatureTable:
    """The cases of ``inputs`` with no feature columns (for a model that reads the age alone)."""
    import numpy as np

    from glioseg.data.layouts import find_cases_in
    from glioseg.data.naming import DatasetError
    from glioseg.radiomics.features import FeatureTable

    try:
        cases, _ = find_cases_in(inputs)
    except DatasetError as exc:
        fail(str(exc))
    ids = [c.case_id for c in cases]
    return FeatureTable(ids, (), np.zeros((len(ids), 0)), ["not needed (age-only model)"] * len(ids))


def features(
    inputs: list[Path] = typer.Option(..., "-i", "--input", help=_INPUT_HELP),
    out: Path = typer.Option(..., "-o", "--out", help="Output CSV: case_id, segmentation, one column per feature."),
    seg: Path | None = _SEG_OPTION,
    ground_truth: bool = _GT_OPTION,
    seg_model: str | None = _MODEL_OPTION,
    device: str = _DEVICE_OPTION,
) -> None:
    """Radiomics features per case (volumes, shape, location, intensity, GLCM texture) into a CSV."""
    from glioseg.radiomics.catalog import FEATURE_NAMES
    from glioseg.radiomics.features import write_features_csv

    check_output_file(out, "-o/--out")
    _check_output_not_input(out, [*inputs, *([seg] if seg else [])], [])
    rows = _extract(inputs, _source(seg, ground_truth, seg_model, device))
    done = sum(r.error is None for r in rows)
    if done:
        with writing(out, "-o/--out"):
            write_features_csv(rows, out)
        typer.echo(f"{done} case(s), {len(FEATURE_NAMES)} features -> {out}")
    _report_failures(rows)


def survival_fit(
    features_csv: Path = typer.Argument(..., metavar="FEATURES", help="Features CSV from `glioseg features`."),
    clinical: Path = typer.Argument(..., metavar="CLINICAL", help="BraTS survival table "
                                    "(BraTS18ID,Age,Survival[,ResectionStatus])."),
    out: Path = typer.Option(..., "-o", "--out", help="Model folder: model.json, cv_table.csv/.md, "
                             "cv_predictions.csv, predicted_vs_actual.png."),
    cv: str = typer.Option("repeated-kfold", "--cv", help="repeated-kfold or loo."),
    folds: int = typer.Option(5, "--folds", min=2, help="Folds of the repeated k-fold."),
    repeats: int = typer.Option(20, "--repeats", min=1, help="Repeats of the repeated k-fold."),
    seed: int = typer.Option(0, "--seed", help="Seed of the fold shuffles."),
) -> None:
    """Cross-validate the age-only baseline and the radiomics models; ship the winner into OUT."""
    from glioseg.radiomics.errors import RadiomicsError
    from glioseg.radiomics.fitting import fit_survival_folder, survival_table_markdown

    if cv not in ("repeated-kfold", "loo"):
        fail(f"--cv {cv!r}: choose repeated-kfold or loo")
    check_output_dir(out, "-o/--out")
    try:
        with writing(out, "-o/--out"):
            result = fit_survival_folder(features_csv, clinical, out, cv, folds, repeats, seed)
    except (RadiomicsError, ValueError) as exc:
        fail(str(exc))
    console().print(survival_table_markdown(result.cv), markup=False, highlight=False)
    typer.echo(f"{len(result.case_ids)} patients ({result.censored} censored, used by Cox only); "
               f"{len(result.left_out)} feature rows without survival left out")
    typer.echo(f"shipped {result.cv.winner} -> {out / 'model.json'}")


def survival_predict(
    inputs: list[Path] | None = typer.Option(None, "-i", "--input", help=_INPUT_HELP),
    clinical: Path = typer.Option(..., "--clinical", help="CSV with BraTS18ID,Age (Survival is not needed)."),
    out: Path = typer.Option(..., "-o", "--out", help="Output CSV: case_id, age, predicted_days, predicted_class."),
    model: Path | None = typer.Option(None, "-m", "--model", help="Folder of `survival fit -o` \\[shipped model]."),
    features_csv: Path | None = typer.Option(None, "--features", help="Use this features CSV instead of -i."),
    seg: Path | None = _SEG_OPTION,
    ground_truth: bool = _GT_OPTION,
    seg_model: str | None = _MODEL_OPTION,
    device: str = _DEVICE_OPTION,
) -> None:
    """Predict overall survival (days and short/mid/long class) per case.

    Cases are segmented (--seg, --ground-truth or the segmentation model) only when the survival
    model reads imaging features; the shipped model reads the age alone.
    """
    import numpy as np

    from glioseg.radiomics.clinical import read_survival_table, survival_class
    from glioseg.radiomics.errors import RadiomicsError
    from glioseg.radiomics.models_io import load_model, shipped_model_path
    from glioseg.radiomics.survival import AGE, predict_days

    check_output_file(out, "-o/--out")
    _check_output_not_input(out, [*(inputs or []), *([seg] if seg else [])], [clinical, features_csv])
    try:
        fitted = load_model(model or shipped_model_path("survival"), "survival")
        patients = read_survival_table(clinical, need_survival=False)
    except RadiomicsError as exc:
        fail(str(exc))
    _need_inputs(inputs, features_csv)
    extracted: list[FeatureRow] = []
    if set(fitted.inputs) <= {AGE} and features_csv is None:  # an age-only model: no segmentation needed
        table = _case_ids_only(list(inputs or []))
    else:
        table, extracted = _table(inputs, features_csv, seg, ground_truth, seg_model, device)
    missing = [c for c in table.case_ids if c not in patients]
    if missing:
        fail(f"--clinical {clinical}: no Age for case(s) {', '.join(missing)}; add a row BraTS18ID,Age per case")
    rows = []
    for i, case_id in enumerate(table.case_ids):
        row = {AGE: patients[case_id].age, **dict(zip(table.names, table.values[i], strict=True))}
        days = float(predict_days(fitted, np.array([[row[n] for n in fitted.inputs]]))[0])
        rows.append([case_id, f"{row[AGE]:g}", f"{days:.0f}", survival_class(days), fitted.name, table.sources[i]])
    _write_csv(out, ["case_id", "age", "predicted_days", "predicted_class", "model", "segmentation"], rows)
    typer.echo(f"{len(rows)} case(s) -> {out} (model {fitted.name}; classes: short < 300 days, mid 300-450, "
               "long > 450)")
    _report_failures(extracted)


def grade(
    inputs: list[Path] | None = typer.Option(None, "-i", "--input", help=_INPUT_HELP),
    out: Path = typer.Option(..., "-o", "--out", help="Output CSV: case_id, p_hgg, predicted_grade."),
    model: Path | None = typer.Option(None, "-m", "--model", help="Grade model folder \\[shipped model]."),
    features_csv: Path | None = typer.Option(None, "--features", help="Use this features CSV instead of -i."),
    seg: Path | None = _SEG_OPTION,
    ground_truth: bool = _GT_OPTION,
    seg_model: str | None = _MODEL_OPTION,
    device: str = _DEVICE_OPTION,
) -> None:
    """HGG vs LGG probability per case (trained on 31 cases, 4 of them LGG: see the model card)."""
    from glioseg.radiomics.errors import RadiomicsError
    from glioseg.radiomics.grade import inputs_of, predict_hgg
    from glioseg.radiomics.models_io import load_model, shipped_model_path

    check_output_file(out, "-o/--out")
    _check_output_not_input(out, [*(inputs or []), *([seg] if seg else [])], [features_csv])
    try:
        fitted = load_model(model or shipped_model_path("grade"), "grade")
    except RadiomicsError as exc:
        fail(str(exc))
    table, extracted = _table(inputs, features_csv, seg, ground_truth, seg_model, device)
    p = predict_hgg(fitted, inputs_of(fitted, table.names, table.values)).tolist() if table.case_ids else []
    rows = [[c, f"{q:.4f}", "HGG" if q >= 0.5 else "LGG", fitted.name, s]
            for c, q, s in zip(table.case_ids, p, table.sources, strict=True)]
    _write_csv(out, ["case_id", "p_hgg", "predicted_grade", "model", "segmentation"], rows)
    typer.echo(f"{len(rows)} case(s) -> {out} (model {fitted.name})")
    _report_failures(extracted)


def grade_fit(
    features_csv: Path = typer.Argument(..., metavar="FEATURES", help="Features CSV from `glioseg features`."),
    grades: Path = typer.Argument(..., metavar="GRADES", help="Grade table (BraTS18ID,Grade with HGG/LGG)."),
    out: Path = typer.Option(..., "-o", "--out", help="Model folder: model.json, cv_table.csv/.md, "
                             "cv_predictions.csv."),
) -> None:
    """Leave-one-out the HGG/LGG model against the majority class (Wilson intervals); fit it into OUT."""
    from glioseg.radiomics.errors import RadiomicsError
    from glioseg.radiomics.fitting import fit_grade_folder, grade_table_markdown

    check_output_dir(out, "-o/--out")
    try:
        with writing(out, "-o/--out"):
            result = fit_grade_folder(features_csv, grades, out)
    except RadiomicsError as exc:
        fail(str(exc))
    console().print(grade_table_markdown(result), markup=False, highlight=False)
    typer.echo(f"model on {', '.join(result.model.inputs)} -> {out / 'model.json'}")


def _write_csv(path: Path, header: list[str], rows: list[list[str]]) -> None:
    """Write a small CSV atomically, with a one-line error when the write fails."""
    import csv

    from glioseg.utils import atomic_write

    def write(tmp: Path) -> None:
        with tmp.open("w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(header)
            writer.writerows(rows)

    with writing(path, "-o/--out"):
        atomic_write(path, write)
