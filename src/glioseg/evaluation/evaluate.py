"""Evaluating a folder of predicted label maps against a dataset's ground truths, by one protocol.

Ground truths come as a dataset, an nnU-Net ``labelsTr``/``labelsTs`` folder or a flat folder of
``<ID>[_seg|-seg].nii.gz`` files (:func:`glioseg.data.labelsets.find_ground_truths`). The protocol
(:mod:`glioseg.evaluation.protocols`, default ``brats2021``) sets the rules; the summary records it
with the label schemes and the model under ``summary["provenance"]``
(:mod:`glioseg.evaluation.provenance`).

Predictions are paired with ground-truth cases by ID: ``<ID>.nii.gz`` (BraTS submission naming),
``<ID>_seg.nii.gz`` or ``<ID>-seg.nii.gz`` (``.nii`` too). Only label files are read. A missing
or unreadable prediction is scored as a failure (see :func:`glioseg.evaluation.scores.failed_case`) and
listed; the other cases go on.

Label schemes are decided once before scoring: the ground truths' for the whole dataset
(:func:`glioseg.data.schemes.decide_dataset_scheme`), then the predictions' for the whole folder,
expected to be the ground truths' (1/2/4 predictions against BraTS 2023 ground truths are refused,
not scored as ET = resection cavity).
"""

from __future__ import annotations

import csv
import json
import math
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from glioseg.data.labelsets import find_ground_truths
from glioseg.data.naming import strip_nii
from glioseg.data.nifti import CaseError, CaseFiles, Geometry, load_nifti, read_array
from glioseg.data.schemes import decide_dataset_scheme, decide_files_scheme
from glioseg.evaluation.metrics import CONVENTIONS, REGION_METRICS
from glioseg.evaluation.protocols import DEFAULT_PROTOCOL, Protocol, get_protocol
from glioseg.evaluation.provenance import evaluation_provenance
from glioseg.evaluation.scores import CaseScores, compute_brats_metrics, failed_case, summarize
from glioseg.labels import REGIONS, LabelScheme, LabelSchemeError, Region, get_scheme, labels_to_regions
from glioseg.scheme_rules import SchemeDecision, detect_scheme
from glioseg.utils import atomic_write

PREDICTION_SUFFIXES: tuple[str, ...] = ("", "_seg", "-seg")


@dataclass(frozen=True)
class EvaluationTask:
    """One case to score: ground truth and (maybe) prediction files."""

    case_id: str
    gt_path: Path
    pred_path: Path | None
    gt_scheme: str | None
    gt_scheme_hint: str | None
    pred_scheme: str | None
    lesion_wise: bool
    protocol: str = DEFAULT_PROTOCOL


@dataclass
class EvaluationResult:
    """Outcome of :func:`evaluate_folder`.

    Attributes:
        cases: scores per case, sorted by ID (failures included).
        summary: per region and metric statistics (:func:`glioseg.evaluation.scores.summarize`).
        missing: case IDs without a prediction.
        errors: case ID -> message for unreadable or mismatched files.
        unmatched_predictions: prediction files whose ID is not a ground-truth case.
        no_ground_truth: dataset case IDs without a segmentation (not scored).
        pred_dir, gt_root: inputs.
        lesion_wise: whether lesion-wise scores were computed.
        seconds: wall time of the evaluation.
        gt_files: case ID -> the dataset's files (for pictures).
        pred_paths: case ID -> prediction file.
        label_scheme, pred_label_scheme: the schemes the ground truths and the predictions were
            read with (given, or decided once for all of them); None when nothing decided one.
        scheme_evidence, pred_scheme_evidence: what decided them.
        protocol: name of the scoring protocol.
    """

    cases: list[CaseScores]
    summary: dict
    missing: list[str]
    errors: dict[str, str]
    unmatched_predictions: list[str]
    no_ground_truth: list[str]
    pred_dir: Path
    gt_root: Path
    lesion_wise: bool
    seconds: float = 0.0
    gt_files: dict[str, CaseFiles] = field(default_factory=dict)
    pred_paths: dict[str, Path] = field(default_factory=dict)
    label_scheme: str | None = None
    pred_label_scheme: str | None = None
    conventions: dict[str, str] = field(default_factory=lambda: dict(CONVENTIONS))
    scheme_evidence: str = ""
    pred_scheme_evidence: str = ""
    protocol: str = DEFAULT_PROTOCOL

    @property
    def failed(self) -> bool:
        """True when any case is missing or could not be scored."""
        return bool(self.missing or self.errors)


def find_predictions(pred_dir: Path | str,
                     case_ids: Sequence[str]) -> tuple[dict[str, Path], dict[str, str], list[str]]:
    """Pair prediction files with case IDs.

    Args:
        pred_dir: folder of predictions (files directly inside it).
        case_ids: ground-truth case IDs.

    Returns:
        ``(found, ambiguous, unmatched)``: case ID -> file; case ID -> message when several
        files claim one case; names of NIfTI files that match no case.

    Raises:
        FileNotFoundError: ``pred_dir`` is not a folder.
    """
    pred_dir = Path(pred_dir)
    if not pred_dir.is_dir():
        raise FileNotFoundError(f"{pred_dir}: prediction folder not found; "
                                "give the folder that holds <ID>.nii.gz files")
    claims, unmatched = _claims(pred_dir, set(case_ids))
    found = {cid: paths[0] for cid, paths in claims.items() if len(paths) == 1}
    ambiguous = {cid: f"several prediction files for one case: {[p.name for p in paths]}; keep one"
                 for cid, paths in claims.items() if len(paths) > 1}
    return found, ambiguous, unmatched


def _claims(pred_dir: Path, wanted: set[str]) -> tuple[dict[str, list[Path]], list[str]]:
    """NIfTI files of ``pred_dir`` by the case they name, and the names of those naming none."""
    claims: dict[str, list[Path]] = {}
    unmatched = []
    for path in sorted(p for p in pred_dir.iterdir() if p.is_file() and not p.name.startswith(".")):
        stem = strip_nii(path.name)
        if stem is None:
            continue
        case_id = _claimed_case(stem, wanted)
        if case_id is None:
            unmatched.append(path.name)
        else:
            claims.setdefault(case_id, []).append(path)
    return claims, unmatched


def _claimed_case(stem: str, wanted: set[str]) -> str | None:
    """The case a prediction file stem names: ``<ID>``, else ``<ID>_seg`` / ``<ID>-seg``; None for no case."""
    if stem in wanted:
        return stem
    return next((stem[: len(stem) - len(s)] for s in PREDICTION_SUFFIXES
                 if s and stem.endswith(s) and stem[: len(stem) - len(s)] in wanted), None)


def read_label_file(path: Path, case_id: str, scheme: str | LabelScheme | None, hint: str | None,
                    flag: str = "--label-scheme") -> tuple[np.ndarray, Geometry, LabelScheme]:
    """Read one label file as canonical labels in its on-disk orientation.

    Args:
        path: NIfTI label map.
        case_id: named in errors.
        scheme: its label scheme, or None to detect it from the values and ``hint``.
        hint: scheme the layout (or the ground truth) suggests.
        flag: the CLI option named in the error when the scheme cannot be decided.

    Returns:
        ``(labels uint8 (I, J, K) canonical values, geometry, scheme)``.

    Raises:
        CaseError: unreadable file, non-integer values, or labels that fit no scheme.
    """
    img = load_nifti(path, case_id)
    raw = read_array(img, path, case_id, dtype=None)  # type: ignore[arg-type]
    if raw.dtype.kind == "f" and (not np.isfinite(raw).all() or not np.array_equal(raw, np.round(raw))):
        raise CaseError(case_id, "label map holds non-integer values; expected integer labels", path)
    context = f"case {case_id} [{path}]"
    try:
        chosen = get_scheme(scheme) if scheme is not None else detect_scheme(np.unique(raw).tolist(), hint, context)
        labels = chosen.to_canonical(raw, context)
    except LabelSchemeError as exc:
        raise CaseError(case_id, str(exc).replace(context + ": ", "").replace("--label-scheme", flag), path) from exc
    return labels, Geometry.from_image(img), chosen


def _true_volumes(labels: np.ndarray, geometry: Geometry) -> dict[Region, float]:
    voxel_ml = float(np.prod(geometry.spacing)) / 1000.0
    regions = labels_to_regions(labels)
    return {r: float(regions[i].sum()) * voxel_ml for i, r in enumerate(REGIONS)}


def evaluate_task(task: EvaluationTask) -> CaseScores:
    """Score one case from its files; never raises for bad input (returns a failure instead).

    Args:
        task: the case's files and options.

    Returns:
        The case's scores; status ``missing`` or ``error`` for a failure.
    """
    try:
        gt, gt_geo, gt_scheme = read_label_file(task.gt_path, task.case_id, task.gt_scheme, task.gt_scheme_hint)
    except CaseError as exc:
        return failed_case(task.case_id, "error", f"ground truth: {exc}", lesion_wise=task.lesion_wise,
                           protocol=task.protocol)
    if task.pred_path is None:
        return failed_case(task.case_id, "missing", "no prediction file", _true_volumes(gt, gt_geo), task.lesion_wise,
                           task.protocol)
    try:
        pred, pred_geo, _ = read_label_file(task.pred_path, task.case_id, task.pred_scheme, gt_scheme.name,
                                            flag="--pred-label-scheme")
        if not pred_geo.matches(gt_geo):
            raise _geometry_mismatch(task, pred_geo, gt_geo)
    except CaseError as exc:
        return failed_case(task.case_id, "error", str(exc), _true_volumes(gt, gt_geo), task.lesion_wise, task.protocol)
    return compute_brats_metrics(pred, gt, gt_geo.spacing, task.lesion_wise, task.case_id, task.protocol)


def _describe_grid(geo: Geometry) -> str:
    return f"shape {geo.shape}, spacing {tuple(round(s, 3) for s in geo.spacing)}, axes {''.join(geo.axcodes)}"


def _geometry_mismatch(task: EvaluationTask, pred_geo: Geometry, gt_geo: Geometry) -> CaseError:
    """The error of a prediction that is not on its ground truth's grid."""
    return CaseError(task.case_id, f"prediction geometry ({_describe_grid(pred_geo)}) differs from the ground "
                     f"truth's ({_describe_grid(gt_geo)}) [{task.gt_path}]; write predictions on the "
                     "ground-truth grid", task.pred_path)


def _init_worker() -> None:
    from glioseg.runtime import tune_allocator

    tune_allocator()


def evaluate_folder(pred_dir: Path | str, gt_root: Path | str, label_scheme: str | None = None,
                    pred_label_scheme: str | None = None, lesion_wise: bool = False, workers: int = 1,
                    on_case: Callable[[CaseScores, int, int], None] | None = None,
                    protocol: str | Protocol = DEFAULT_PROTOCOL) -> EvaluationResult:
    """Score every ground-truth case of a dataset against a folder of predictions.

    Args:
        pred_dir: folder of ``<ID>.nii.gz`` (or ``<ID>_seg`` / ``<ID>-seg``) predictions.
        gt_root: dataset folder, nnU-Net labels folder or flat folder of label files
            (:func:`glioseg.data.labelsets.find_ground_truths`).
        label_scheme: scheme of the ground truths; decided once for the dataset when None.
        pred_label_scheme: scheme of the predictions; the ground truths' when None, checked
            against the values of all predictions.
        lesion_wise: also compute the BraTS 2023 lesion-wise scores.
        workers: processes; 1 scores in this process.
        on_case: called as ``on_case(scores, done, total)`` after each case (progress).
        protocol: scoring protocol (:data:`glioseg.evaluation.protocols.PROTOCOLS`).

    Returns:
        The evaluation; check :attr:`EvaluationResult.failed`.

    Raises:
        DatasetError: the dataset cannot be read. FileNotFoundError: no prediction folder.
        LabelSchemeError: an unknown scheme name, or schemes that contradict the evidence (one line
            naming it and the ``--label-scheme`` / ``--pred-label-scheme`` to pass).
        ValueError: no case has a ground truth. ProtocolError (a ValueError): unknown protocol.
    """
    start = time.perf_counter()
    rules = get_protocol(protocol)
    for name in (n for n in (label_scheme, pred_label_scheme) if n is not None):
        get_scheme(name)
    cases: list[CaseFiles] = find_ground_truths(gt_root)
    scored = [c for c in cases if c.label is not None]
    if not scored:
        raise ValueError(f"{gt_root}: no case has a segmentation; give the dataset with the ground truths")
    found, ambiguous, unmatched = find_predictions(pred_dir, [c.case_id for c in scored])
    gt, pred = _decide_schemes(scored, found, gt_root, pred_dir, label_scheme, pred_label_scheme, workers)
    gt_name, pred_name = (d.scheme.name if d.scheme is not None else None for d in (gt, pred))
    tasks = [EvaluationTask(c.case_id, c.label, found.get(c.case_id), gt_name, c.scheme_hint,  # type: ignore[arg-type]
                            pred_name, lesion_wise, rules.name) for c in scored if c.case_id not in ambiguous]
    results = [failed_case(cid, "error", msg, lesion_wise=lesion_wise, protocol=rules)
               for cid, msg in ambiguous.items()]
    results = _score_all(tasks, workers, results, on_case, len(scored))
    summary: dict = summarize(results)
    schemes = {"ground_truth": {"scheme": gt_name, "evidence": gt.evidence},
               "predictions": {"scheme": pred_name, "evidence": pred.evidence}}
    summary["provenance"] = evaluation_provenance(rules, schemes, scored[0].layout, Path(pred_dir),
                                                  [c.case_id for c in scored])
    return EvaluationResult(
        cases=results, summary=summary,
        missing=[s.case_id for s in results if s.status == "missing"],
        errors={s.case_id: s.message for s in results if s.status == "error"},
        unmatched_predictions=unmatched, no_ground_truth=[c.case_id for c in cases if c.label is None],
        pred_dir=Path(pred_dir), gt_root=Path(gt_root), lesion_wise=lesion_wise or rules.lesion_wise,
        seconds=time.perf_counter() - start, gt_files={c.case_id: c for c in scored}, pred_paths=found,
        label_scheme=gt_name, pred_label_scheme=pred_name, scheme_evidence=gt.evidence,
        pred_scheme_evidence=pred.evidence, conventions=_conventions(rules), protocol=rules.name)


def _conventions(rules: Protocol) -> dict[str, str]:
    """The metric conventions plus the protocol's row (written into the reports)."""
    return {"protocol": f"{rules.name}: reproduces {rules.official_code} ({rules.official_version}); matching "
                        f"{rules.matching}; lesion-wise average over {rules.lesion_average}; both masks empty: "
                        f"{rules.both_empty}; differences: {rules.differences}", **CONVENTIONS}


def _decide_schemes(scored: Sequence[CaseFiles], found: dict[str, Path], gt_root: Path | str, pred_dir: Path | str,
                    label_scheme: str | None, pred_label_scheme: str | None,
                    workers: int) -> tuple[SchemeDecision, SchemeDecision]:
    """The ground truths' scheme (once for the dataset), then the predictions' (the ground truths',
    checked against every prediction's values; no anatomy check: predictions are being judged)."""
    gt = decide_dataset_scheme(scored, label_scheme, workers=workers, context=f"ground truth {gt_root}")
    hint = gt.scheme.name if gt.scheme is not None else None
    pred = decide_files_scheme(found, hint, f"the ground truths' scheme {hint}" if hint else "", pred_label_scheme,
                               "--pred-label-scheme", workers, f"predictions in {pred_dir}", anatomy=False)
    return gt, pred


def _score_all(tasks: list[EvaluationTask], workers: int, results: list[CaseScores],
               on_case: Callable[[CaseScores, int, int], None] | None, total: int) -> list[CaseScores]:
    """``results`` plus the scores of every task, sorted by case ID; ``on_case`` after each one."""
    for scores in _run(tasks, workers):
        results.append(scores)
        if on_case is not None:
            on_case(scores, len(results), total)
    return sorted(results, key=lambda s: s.case_id)


def _run(tasks: list[EvaluationTask], workers: int):
    if workers <= 1 or len(tasks) <= 1:
        yield from (evaluate_task(t) for t in tasks)
        return
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")  # no fork of a process that may hold threads
    with ProcessPoolExecutor(max_workers=min(workers, len(tasks)), mp_context=ctx, initializer=_init_worker) as pool:
        yield from pool.map(evaluate_task, tasks)


def _json_safe(value: object) -> object:
    """NaN -> null; +-inf -> "inf" / "-inf" (brats2025's lesion HD95 without a match is inf)."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, float) and math.isinf(value):
        return "inf" if value > 0 else "-inf"
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value


def result_to_json(result: EvaluationResult) -> dict:
    """JSON-able summary: inputs, conventions, per-region statistics, failures, timing."""
    return _json_safe({
        "pred_dir": str(result.pred_dir), "gt_root": str(result.gt_root),
        "protocol": result.protocol,
        "n_cases": len(result.cases), "n_failed": len(result.missing) + len(result.errors),
        "lesion_wise": result.lesion_wise, "seconds": round(result.seconds, 3),
        "label_scheme": result.label_scheme, "scheme_evidence": result.scheme_evidence,
        "pred_label_scheme": result.pred_label_scheme, "pred_scheme_evidence": result.pred_scheme_evidence,
        "conventions": result.conventions, "summary": result.summary,
        "missing_predictions": result.missing, "errors": result.errors,
        "unmatched_predictions": result.unmatched_predictions, "no_ground_truth": result.no_ground_truth,
    })  # type: ignore[return-value]


def write_cases_csv(result: EvaluationResult, path: Path | str) -> Path:
    """Per-case CSV, written atomically: one header row, then one row per case.

    Columns ``case_id, status, <metric>_<region>..., pooled_dice, message, protocol``. The file
    stays plain CSV (no comment lines) so that ``pandas.read_csv`` and Excel open it as is; the
    ``protocol`` column names the rules on every row, and ``summary.json`` next to it holds the
    full provenance (protocol parameters, label schemes, model) under ``summary.provenance``.
    """
    rows = [{**c.to_row(), "protocol": c.protocol} for c in result.cases]
    region_columns = [f"{m}_{r.value}" for m in REGION_METRICS for r in REGIONS]
    columns = list(rows[0]) if rows else ["case_id", "status", *region_columns, "protocol"]

    def write(tmp: Path) -> None:
        with open(tmp, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=columns)
            writer.writeheader()
            for row in rows:
                writer.writerow({k: ("" if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items()})

    return atomic_write(Path(path), write)


def write_summary_json(result: EvaluationResult, path: Path | str) -> Path:
    """The JSON summary (:func:`result_to_json`), written atomically."""
    text = json.dumps(result_to_json(result), indent=2)
    return atomic_write(Path(path), lambda tmp: tmp.write_text(text))
