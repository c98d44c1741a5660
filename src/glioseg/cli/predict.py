"""The ``predict`` command."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from glioseg.cli.app import CaseBar, check_label_scheme, check_tta_and_precision, fail
from glioseg.cli.dicom_inputs import (
    SEG_REFERENCE,
    check_outside_dicom,
    dicom_cases,
    reference_series,
    scratch_folder,
    series_option,
)

if TYPE_CHECKING:  # annotations only: the modules are imported inside the commands
    from glioseg.data.nifti import CaseFiles
    from glioseg.inference.batch import CaseOutcome, ExtraOutputs
    from glioseg.inference.predictor import Predictor
    from glioseg.interop.dicom import SeriesInfo


def _parse_folds(text: str | None) -> list[int] | None:
    """``--folds 0,1,2`` -> [0, 1, 2] (None: all folds); exit naming the flag when malformed."""
    if not text:
        return None
    items = [f for f in text.replace(" ", "").split(",") if f]
    if not items or not all(f.isdigit() for f in items) or len(set(map(int, items))) != len(items):
        fail(f"--folds {text!r}: give distinct fold numbers (0, 1, ...) separated by commas, e.g. --folds 0,1,2")
    return [int(f) for f in items]


def _check_options(overlap: float, margin: float, tta: str, precision: str, num_shards: int,
                   shard_id: int) -> None:
    """Exit with one line naming the flag when a value is out of range (before anything is read)."""
    from glioseg.inference.cases import shard_problem

    if not 0.0 <= overlap < 1.0:
        fail(f"--overlap {overlap:g}: must be in [0, 1) (the share of a window that neighbouring tiles "
             "overlap), e.g. --overlap 0.5")
    if margin < 0:
        fail(f"--margin {margin:g}: must be >= 0 mm (the cascade's margin around the tumour), e.g. --margin 16")
    check_tta_and_precision(tta, precision)
    problem = shard_problem(num_shards, shard_id)
    if problem is not None:
        fail(problem)


OUTPUT_FORMATS = ("nifti", "dicom-seg")


def _check_dicom_options(input_: Path | None, files: tuple[Path | None, ...], dicom: Path | None,
                         series: str | None, output_format: str, reference: Path | None) -> None:
    """Exit with one line for --dicom / --series / --output-format / --reference given together wrongly."""
    if output_format not in OUTPUT_FORMATS:
        fail(f"--output-format {output_format!r}: choose one of {list(OUTPUT_FORMATS)}")
    series_option(series, dicom)
    if dicom is not None and (input_ is not None or any(f is not None for f in files)):
        fail("give either --dicom DIR or -i INPUT / --t1 --t1ce --t2 --flair, not both")
    if reference is not None and dicom is not None:
        fail("--reference is for NIfTI input; with --dicom the SEG references the study's own T1ce series")
    if reference is not None and output_format != "dicom-seg":
        fail("--reference names the series a DICOM-SEG references; add --output-format dicom-seg")
    if output_format == "dicom-seg" and dicom is None and reference is None:
        fail("--output-format dicom-seg needs the source series: give --dicom DIR, or --reference SERIES_DIR "
             "(the DICOM series the NIfTI case was made from)")


def _seg_references(dicom_studies: list[Any] | None, reference: Path | None, cases: list[CaseFiles],
                    output_format: str) -> dict[str, SeriesInfo] | None:
    """Case ID -> the series its DICOM-SEG references (None without --output-format dicom-seg)."""
    if output_format != "dicom-seg":
        return None
    if dicom_studies is not None:
        return {study.case_id: study.series[SEG_REFERENCE] for study in dicom_studies}
    assert reference is not None  # internal: _check_dicom_options demands one of them
    return reference_series(reference, cases)


def _extra_outputs(references: dict[str, SeriesInfo] | None, record: dict[str, Any]) -> ExtraOutputs | None:
    """The DICOM-SEG writer (:class:`glioseg.interop.dicom_seg.SegOutputs`), when asked for."""
    if references is None:
        return None
    from glioseg.interop.dicom_seg import SegOutputs

    return SegOutputs(references, record.get("model"))


def _predict_inputs(input_: Path | None, t1: Path | None, t1ce: Path | None, t2: Path | None,
                    flair: Path | None, case_id: str | None) -> list[CaseFiles]:
    """Cases from -i (case or dataset folder) or from the four files given one by one."""
    from glioseg.data.layouts import case_from_files, find_cases
    from glioseg.data.naming import DatasetError
    from glioseg.inference.outputs import case_id_problem

    if any(f is not None for f in (t1, t1ce, t2, flair)):
        if input_ is not None or t1 is None or t1ce is None or t2 is None or flair is None:
            fail("give either -i INPUT or all four of --t1 --t1ce --t2 --flair")
        problem = None if case_id is None else case_id_problem(case_id)
        if problem is not None:
            fail(f"--case-id {case_id!r}: {problem}; give a plain name such as --case-id patient7")
        try:
            return [case_from_files(t1, t1ce, t2, flair, case_id=case_id)]
        except DatasetError as exc:
            fail(str(exc))
    if case_id is not None:
        fail("--case-id names a case given as --t1 --t1ce --t2 --flair; with -i the IDs come from the dataset")
    if input_ is None:
        fail("no input: give -i CASE_OR_DATASET_FOLDER, --t1 --t1ce --t2 --flair, or --dicom DICOM_FOLDER")
    try:
        return find_cases(input_)
    except DatasetError as exc:
        fail(str(exc))


def _output_scheme(cases: list[CaseFiles], output_label_scheme: str | None, label_scheme: str | None) -> str:
    """The dataset's output scheme, decided before the model loads; exit with one line on contradictions."""
    from glioseg.inference.cases import decide_output_scheme
    from glioseg.labels import LabelSchemeError

    try:
        return decide_output_scheme(cases, output_label_scheme, label_scheme)
    except LabelSchemeError as exc:
        fail(f"{exc}; or give the output's scheme with --output-label-scheme")


def _check_outputs(cases: list[CaseFiles], out: Path, manifest: Path, save_probabilities: bool) -> None:
    """Unique case IDs, and outputs that are writable and never among the inputs; exit with one line."""
    from glioseg.cli.paths import check_output_dir, check_output_file
    from glioseg.inference.outputs import OutputError, check_case_ids, check_output_location

    check_output_dir(out, "-o/--out")
    try:
        check_case_ids(cases)
    except OutputError as exc:
        fail(str(exc))
    try:
        check_output_location(out, cases, save_probabilities)
    except OutputError as exc:
        fail(f"-o/--out: {exc}")
    check_output_file(manifest, "-o/--out")


def predict(
    input_: Path | None = typer.Option(None, "-i", "--input", help="A case folder or a dataset folder (any layout)."),
    out: Path = typer.Option(..., "-o", "--out", help="Output folder: <ID>.nii.gz per case."),
    model: str | None = typer.Option(None, "-m", "--model", help="Run directory, bundle, or installed model name "
                                     "\\[shipped default model]."),
    folds: str | None = typer.Option(None, "--folds", help="Folds to ensemble, e.g. 0,1,2 \\[all]."),
    tta: str = typer.Option("none", "--tta", help="Mirroring test-time augmentation: none, all (8 flips) or N."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or cuda:N."),
    precision: str | None = typer.Option(None, "--precision", help="bf16, fp16 (CUDA) or fp32 \\[bf16 with "
                                         "--backend torch, fp32 with the graph backends]."),
    cascade: bool = typer.Option(True, "--cascade/--no-cascade", help="Low-res whole brain, high-res tumour box."),
    margin: float = typer.Option(16.0, "--margin", help="Cascade margin around the tumour, in mm."),
    overlap: float = typer.Option(0.5, "--overlap", help="Sliding-window overlap in \\[0, 1)."),
    tile_batch: int = typer.Option(1, "--tile-batch", min=1, help="Tiles per network call."),
    num_shards: int = typer.Option(1, "--num-shards", min=1, help="Split the cases into N shards."),
    shard_id: int = typer.Option(0, "--shard-id", min=0, help="Which shard (0..N-1) this process predicts."),
    skip_existing: bool = typer.Option(False, "--skip-existing", help="Skip cases whose outputs are complete "
                                       "(readable, on the input's grid); redo empty or truncated ones."),
    save_probabilities: bool = typer.Option(False, "--save-probabilities",
                                            help="Also write OUT/probabilities/<ID>_<region>.nii.gz."),
    mc_dropout: int = typer.Option(0, "--mc-dropout", min=0, help="MC-dropout samples; writes OUT/uncertainty/."),
    threads: int | None = typer.Option(None, "--threads", min=1, help="CPU threads \\[one per core]; 1 is "
                                       "faster on a machine busy with other jobs."),
    single_threaded_tiles: bool = typer.Option(False, "--single-threaded-tiles", help="Copy, activate and stitch "
                                               "tiles on one CPU thread (the networks keep --threads); can help "
                                               "on a busy machine, see benchmarks/bench_threads.py."),
    label_scheme: str | None = typer.Option(None, "--label-scheme", help="Label scheme of the input dataset "
                                            "\\[the one its layout implies]."),
    output_label_scheme: str | None = typer.Option(None, "--output-label-scheme", help="Label scheme of the "
                                                   "written label maps \\[the input's, else brats2017]."),
    backend: str = typer.Option("torch", "--backend", help="Network backend: torch, onnxruntime or openvino "
                                "(CPU). The graph backends run float32 (bf16 autocast is torch's; openvino also "
                                "runs --precision bf16) and export the model on first use into --graph-cache."),
    graph_cache: Path | None = typer.Option(None, "--graph-cache", help="Folder of the exported graphs of "
                                            "--backend onnxruntime/openvino \\[~/.glioseg/cache/graphs]."),
    force: bool = typer.Option(False, "--force", help="Predict inputs the model cannot serve (e.g. not "
                               "skull-stripped) instead of refusing them."),
    t1: Path | None = typer.Option(None, "--t1", help="T1 file (with --t1ce --t2 --flair)."),
    t1ce: Path | None = typer.Option(None, "--t1ce", help="T1ce file."),
    t2: Path | None = typer.Option(None, "--t2", help="T2 file."),
    flair: Path | None = typer.Option(None, "--flair", help="FLAIR file."),
    case_id: str | None = typer.Option(None, "--case-id", help="ID (output name) of the case given by --t1 ... "
                                       "\\[from the T1 file name, else its folder's name]."),
    dicom: Path | None = typer.Option(None, "--dicom", help="A folder of DICOM MR series: one study, or one "
                                      "sub-folder per study (one case each); series assigned to T1/T1ce/T2/FLAIR "
                                      "by description and contrast tags."),
    series: str | None = typer.Option(None, "--series", help="With --dicom: assign series by hand, e.g. "
                                      "t1=UID,flair=UID (the others are assigned automatically)."),
    output_format: str = typer.Option("nifti", "--output-format", help="nifti, or dicom-seg: also "
                                      "<OUT>/<ID>.seg.dcm on the source series (--dicom, or --reference)."),
    reference: Path | None = typer.Option(None, "--reference", help="With --output-format dicom-seg and NIfTI "
                                          "input: the folder of the DICOM series the SEG references."),
    viewer: bool = typer.Option(False, "--viewer", help="Also write <OUT>/viewer/<ID>.html: a self-contained "
                                "NiiVue page of the four modalities with the prediction (and ground truth)."),
) -> None:
    """Segment cases with a trained model; write <OUT>/<ID>.nii.gz in each input's geometry and <OUT>/<ID>.json
    (volumes, components, bounding boxes, model, timings)."""
    import time

    started = time.time()  # cases another process finishes after this are not redone
    check_label_scheme(label_scheme)
    check_label_scheme(output_label_scheme, "--output-label-scheme")
    precision = precision or ("bf16" if backend == "torch" else "fp32")
    _check_options(overlap, margin, tta, precision, num_shards, shard_id)
    _check_backend(backend, device, mc_dropout, precision)
    fold_list = _parse_folds(folds)
    _check_dicom_options(input_, (t1, t1ce, t2, flair), dicom, series, output_format, reference)
    if dicom is not None:
        check_outside_dicom(out, dicom, "-o/--out")
    with scratch_folder(dicom is not None) as scratch:
        studies = None
        if dicom is not None and scratch is not None:  # only this shard's studies are converted
            found = dicom_cases(dicom, series, scratch, num_shards, shard_id)
            studies, inputs = found.studies, _Inputs(found.cases, sharded=True, unread=found.failed)
        else:
            inputs = _Inputs(_predict_inputs(input_, t1, t1ce, t2, flair, case_id))
        references = _seg_references(studies, reference, inputs.cases, output_format)
        _run(inputs, out, num_shards, shard_id, save_probabilities, output_label_scheme, label_scheme, threads,
             started, references, skip_existing, force, viewer, _Model(model, fold_list, backend, graph_cache, {
                 "device": device, "precision": precision, "tta": tta, "cascade": cascade, "margin_mm": margin,
                 "overlap": overlap, "tile_batch": tile_batch, "mc_samples": mc_dropout,
                 "single_threaded_tiles": single_threaded_tiles}))


@dataclass
class _Inputs:
    """The cases to predict: every shard's, or (``sharded``) this shard's only; ``unread``: case ID ->
    why a case could not even be read (a DICOM study that failed), recorded as failed."""

    cases: list[CaseFiles]
    sharded: bool = False
    unread: dict[str, str] = field(default_factory=dict)


@dataclass
class _Model:
    """What -m and the inference options say about the model to load."""

    spec: str | None
    folds: list[int] | None
    backend: str
    graph_cache: Path | None
    options: dict[str, Any]


def _run(inputs: _Inputs, out: Path, num_shards: int, shard_id: int, save_probabilities: bool,
         output_label_scheme: str | None, label_scheme: str | None, threads: int | None, started: float,
         references: dict[str, SeriesInfo] | None, skip_existing: bool, force: bool, viewer: bool,
         model: _Model) -> None:
    """Check the outputs, load the model and predict this shard's cases (and write their viewer pages)."""
    from glioseg.inference.batch import predict_dataset
    from glioseg.inference.cases import select_shard
    from glioseg.inference.manifest import manifest_path
    from glioseg.runtime import tune_allocator

    every_case = inputs.cases
    cases = every_case if inputs.sharded else select_shard(every_case, num_shards, shard_id)
    manifest = manifest_path(out, num_shards, shard_id)
    _check_outputs(every_case, out, manifest, save_probabilities)  # all shards: no shard writes among inputs
    output_label_scheme = _output_scheme(every_case, output_label_scheme, label_scheme)  # once, for all shards
    tune_allocator()
    _set_threads(threads)
    predictor = _load_predictor(model.spec, model.folds, model.backend, model.graph_cache, **model.options)
    opts = model.options
    record = _manifest_record(model.spec, {"backend": model.backend, "precision": opts["precision"],
                                           "tta": opts["tta"], "cascade": opts["cascade"], "overlap": opts["overlap"],
                                           "margin_mm": opts["margin_mm"], "mc_dropout": opts["mc_samples"],
                                           "folds": model.folds, "force": force})
    with CaseBar("predict", len(cases) + len(inputs.unread)) as bar:
        results = predict_dataset(predictor, cases, out, label_scheme=label_scheme,
                                  output_label_scheme=output_label_scheme, skip_existing=skip_existing,
                                  save_probabilities=save_probabilities, manifest=manifest, force=force,
                                  started=started, record=record, extra_outputs=_extra_outputs(references, record),
                                  unread=inputs.unread,
                                  on_result=lambda r: bar.advance(r.case_id, r.status, r.error, f" {r.seconds:.1f}s"))
    if viewer:  # here, not after predict(): --dicom's converted images live only inside its scratch folder
        _write_viewers(cases, results, out, label_scheme, output_label_scheme)
    _summarise(results, out, manifest)


def _write_viewers(cases: list[CaseFiles], results: list[CaseOutcome], out: Path, label_scheme: str | None,
                   output_label_scheme: str | None) -> None:
    """One viewer page per case with a label map (predicted now or before); a case without one is named."""
    from glioseg.interop.viewer import write_prediction_viewers

    predicted = {r.case_id for r in results if r.status != "failed"}
    try:
        pages, problems = write_prediction_viewers([c for c in cases if c.case_id in predicted], out,
                                                   label_scheme=label_scheme, pred_label_scheme=output_label_scheme)
    except OSError as exc:
        fail(f"--viewer: cannot write {out / 'viewer'}: {exc}; free space or choose another -o/--out")
    for case_id, why in problems.items():
        typer.echo(f"warning: {case_id}: no viewer page: {why}", err=True)
    typer.echo(f"{len(pages)} viewer page(s) -> {out / 'viewer'}")


def _set_threads(threads: int | None) -> None:
    """The CLI owns the process: --threads sets torch's thread count for the whole run."""
    if threads is not None:
        import torch

        torch.set_num_threads(threads)


def _check_backend(backend: str, device: str, mc_dropout: int, precision: str) -> None:
    """Exit with one line for an unknown or uninstalled backend, or options only torch has."""
    from glioseg.interop.runners import BACKENDS, ExportError, check_backend_precision, import_backend

    if backend not in BACKENDS:
        fail(f"--backend {backend!r}: choose one of {list(BACKENDS)}")
    if backend == "torch":
        return
    try:
        import_backend(backend)
        check_backend_precision(backend, precision)
    except ExportError as exc:
        fail(f"--backend {backend}: {exc}" if not str(exc).startswith("--backend") else str(exc))
    if device not in ("auto", "cpu"):
        fail(f"--backend {backend} runs on the CPU; drop --device {device} or use --backend torch")
    if mc_dropout:
        fail("--mc-dropout needs the torch networks (exported graphs have dropout off); use --backend torch")


def _load_predictor(model: str | None, folds: list[int] | None, backend: str = "torch",
                    graph_cache: Path | None = None, **options: Any) -> Predictor:
    """The model named by -m (the shipped one by default) on ``backend``; exit with its error when it cannot load."""
    from glioseg.artifacts.bundles import BundleError, resolve_model
    from glioseg.artifacts.weights import TrainError
    from glioseg.interop.backends import load_backend_predictor
    from glioseg.interop.runners import ExportError

    try:
        return load_backend_predictor(resolve_model(model), backend, folds, graph_cache, **options)
    except (BundleError, ExportError, FileNotFoundError, ValueError, TrainError) as exc:
        fail(str(exc))


def _manifest_record(model: str | None, options: dict[str, Any]) -> dict[str, Any]:
    """What every manifest line says about the model and the options (read back by ``evaluate``)."""
    from glioseg.artifacts.bundles import model_identity, resolve_model

    return {"model": model_identity(resolve_model(model)), "options": options}


def _summarise(results: list[CaseOutcome], out: Path, manifest: Path) -> None:
    """One line of counts; each failure's line on stderr; exit non-zero naming the failed cases, if any."""
    from glioseg.inference.batch import OTHER_PROCESS

    counts = {s: sum(r.status == s for r in results) for s in ("done", "skipped", "failed")}
    elsewhere = sum(r.status == "skipped" and (r.reason or "").startswith(OTHER_PROCESS) for r in results)
    note = f" ({elsewhere} by another process)" if elsewhere else ""
    typer.echo(f"{counts['done']} predicted, {counts['skipped']} skipped{note}, {counts['failed']} failed -> {out} "
               f"(manifest {manifest})")
    failed = [r for r in results if r.status == "failed"]
    for r in failed:
        typer.echo(f"failed: {r.error}", err=True)
    if failed:
        fail(f"{len(failed)} case(s) failed: {', '.join(r.case_id for r in failed)}; see {manifest}")
