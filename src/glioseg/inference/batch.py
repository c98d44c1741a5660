"""Predict many cases with one loaded :class:`glioseg.inference.predictor.Predictor`.

Shards split a dataset between processes; every case is isolated (a failing case is recorded
and the batch goes on) and logged, as it finishes, to a JSON-lines manifest
(``OUT/manifest.jsonl``, one file per shard).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from glioseg.data.nifti import Case, CaseFiles, failure_message, read_case, write_image, write_seg
from glioseg.labels import REGIONS, get_scheme

if TYPE_CHECKING:
    from glioseg.inference.predictor import Prediction, Predictor

MANIFEST_NAME = "manifest.jsonl"


@dataclass
class CaseOutcome:
    """One line of the prediction manifest: ``status`` is done, skipped or failed."""

    case_id: str
    status: str
    seconds: float = 0.0
    output: str | None = None
    error: str | None = None
    timings: dict[str, float] = field(default_factory=dict)


def select_shard(cases: Sequence[Any], num_shards: int = 1, shard_id: int = 0) -> list[Any]:
    """The cases of one shard: every ``num_shards``-th case by ID, starting at ``shard_id``.

    Shards are disjoint and together cover every case exactly once.

    Raises:
        ValueError: ``num_shards < 1`` or ``shard_id`` outside ``0..num_shards-1``.
    """
    if num_shards < 1:
        raise ValueError(f"--num-shards must be >= 1; got {num_shards}")
    if not 0 <= shard_id < num_shards:
        raise ValueError(f"--shard-id must be in 0..{num_shards - 1}; got {shard_id}")
    ordered = sorted(cases, key=lambda c: c.case_id)
    return ordered[shard_id::num_shards]


def manifest_path(out: Path, num_shards: int = 1, shard_id: int = 0) -> Path:
    """``OUT/manifest.jsonl``, or one file per shard so that parallel shards never interleave."""
    if num_shards == 1:
        return out / MANIFEST_NAME
    return out / f"manifest.shard-{shard_id}-of-{num_shards}.jsonl"


def output_scheme(files: CaseFiles, output_label_scheme: str | None = None,
                  label_scheme: str | None = None) -> str:
    """Label scheme to write the predictions in.

    Args:
        files: the input case.
        output_label_scheme: the scheme asked for the output, if any.
        label_scheme: the input dataset's scheme, if given.

    Returns:
        ``output_label_scheme``, else the input's scheme (``label_scheme``, else the one its
        layout implies), else ``"brats2017"``.
    """
    return output_label_scheme or label_scheme or files.scheme_hint or "brats2017"


def predict_files(predictor: Predictor, files: CaseFiles, out: Path, *, label_scheme: str | None = None,
                  output_label_scheme: str | None = None, save_probabilities: bool = False) -> CaseOutcome:
    """Read, predict and write one case (``OUT/<ID>.nii.gz``, in the input's geometry).

    With ``save_probabilities`` the probabilities go to ``OUT/probabilities/<ID>_<channel>.nii.gz``
    and an MC-dropout uncertainty map to ``OUT/uncertainty/<ID>.nii.gz``; they are written before
    the label map, so a finished label map means a finished case.

    Args:
        predictor: the loaded model.
        files: the input case.
        out: output folder.
        label_scheme: the input's label scheme (default: the one its layout implies).
        output_label_scheme: scheme of the written label map (default: the input's, see
            :func:`output_scheme`).
        save_probabilities: also write probabilities (and uncertainty).

    Returns:
        The outcome (status ``done``).

    Raises:
        Exception: anything reading, predicting or writing raises (see :func:`predict_dataset`).
    """
    start = time.perf_counter()
    scheme = get_scheme(output_scheme(files, output_label_scheme, label_scheme))
    case = read_case(files, read_label=False)
    t_read = time.perf_counter() - start
    pred = predictor.predict_case(case, return_probabilities=save_probabilities)
    _write_maps(pred, case, out, predictor.target)
    path = write_seg(pred.labels, case.geometry, out / f"{case.case_id}.nii.gz", scheme)
    timings = {"read": t_read, **pred.timings}
    return CaseOutcome(case.case_id, "done", time.perf_counter() - start, str(path), None, timings)


def _write_maps(pred: Prediction, case: Case, out: Path, target: str) -> None:
    """Write the probabilities (one file per channel) and the uncertainty map, when present."""
    if pred.probabilities is not None:
        names = [r.value for r in REGIONS] if target == "regions" else \
            [f"label{k}" for k in range(pred.probabilities.shape[0])]
        for name, channel in zip(names, pred.probabilities, strict=True):
            write_image(channel, case.geometry, out / "probabilities" / f"{case.case_id}_{name}.nii.gz")
    if pred.uncertainty is not None:
        write_image(pred.uncertainty, case.geometry, out / "uncertainty" / f"{case.case_id}.nii.gz")


def predict_dataset(predictor: Predictor, cases: Sequence[CaseFiles], out: Path | str, *,
                    label_scheme: str | None = None, output_label_scheme: str | None = None,
                    skip_existing: bool = False, save_probabilities: bool = False, manifest: Path | None = None,
                    on_result: Callable[[CaseOutcome], object] | None = None) -> list[CaseOutcome]:
    """Predict many cases; a failing case is recorded and the others go on.

    Args:
        predictor: the loaded model.
        cases: the cases' files (from :func:`glioseg.data.layouts.find_cases`).
        out: output folder (``<ID>.nii.gz`` per case).
        label_scheme: the input dataset's label scheme (default: the one its layout implies).
        output_label_scheme: scheme of the written label maps (default: the input's, else
            brats2017; see :func:`output_scheme`).
        skip_existing: do not redo cases whose ``<ID>.nii.gz`` exists.
        save_probabilities: also write probabilities (and uncertainty).
        manifest: JSONL file written with one line per case as it finishes (default
            ``OUT/manifest.jsonl``).
        on_result: called with each :class:`CaseOutcome` (progress display).

    Returns:
        One outcome per case, in input order.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    options = {"label_scheme": label_scheme, "output_label_scheme": output_label_scheme,
               "save_probabilities": save_probabilities}
    results = []
    with open(manifest or manifest_path(out), "w") as log:
        for files in cases:
            target = out / f"{files.case_id}.nii.gz"
            if skip_existing and target.is_file():
                result = CaseOutcome(files.case_id, "skipped", 0.0, str(target))
            else:
                result = _isolated(predictor, files, out, **options)
            results.append(result)
            log.write(json.dumps(_manifest_line(result)) + "\n")
            log.flush()
            if on_result is not None:
                on_result(result)
    return results


def _manifest_line(result: CaseOutcome) -> dict[str, Any]:
    return {"id": result.case_id, "status": result.status, "seconds": round(result.seconds, 3),
            "output": result.output, "error": result.error,
            "timings": {k: round(v, 3) for k, v in result.timings.items()}}


def _isolated(predictor: Predictor, files: CaseFiles, out: Path, **options: Any) -> CaseOutcome:
    """:func:`predict_files`, with any exception turned into a ``failed`` outcome."""
    start = time.perf_counter()
    try:
        return predict_files(predictor, files, out, **options)
    except Exception as exc:  # noqa: BLE001 (isolate the case: report it and let the batch go on)
        seconds = time.perf_counter() - start
        return CaseOutcome(files.case_id, "failed", seconds, None, failure_message(files.case_id, exc))
