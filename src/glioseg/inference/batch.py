"""Predict many cases with one loaded :class:`glioseg.inference.predictor.Predictor`.

Shards split a dataset between processes. Before any work, case IDs must be unique and the
output folder must not hold inputs (:mod:`glioseg.inference.outputs`). Then each case is
isolated (a failing case is recorded and the batch goes on) and goes through:

1. a claim (:mod:`glioseg.inference.claims`): a case another process is doing is skipped, and
   what a killed run left of it is removed;
2. a case finished by another process since this run started is skipped; with
   ``skip_existing`` so is a case whose outputs are complete (:func:`outputs.is_complete`);
3. the error-level input checks of ``glioseg check`` (and the findings in
   ``glioseg.data.checks.UNSERVABLE_CHECKS`` unless ``force``): a case that fails them is
   reported and not predicted;
4. prediction; every output (the label map, its statistics ``<ID>.json`` from
   :mod:`glioseg.inference.stats`, and any extra outputs such as a DICOM-SEG) is written to
   ``OUT/.<ID>.tmp/``, the outcome (with each file's sha256) is appended to the JSON-lines
   manifest (:mod:`glioseg.inference.manifest`), then the files are moved into place, the label
   map last.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from glioseg.data.nifti import Case, CaseFiles, failure_message, read_case, write_image, write_seg
from glioseg.inference import claims
from glioseg.inference import manifest as manifests
from glioseg.inference.cases import decide_output_scheme, input_findings, output_scheme
from glioseg.inference.manifest import ManifestIndex, manifest_path, sha256_file
from glioseg.inference.outputs import (
    OutputWriteError,
    StagedOutputs,
    check_case_ids,
    check_output_location,
    expected_maps,
    is_complete,
    label_path,
    probability_names,
    probability_path,
    remove_leftovers,
    uncertainty_path,
)
from glioseg.inference.stats import prediction_stats, stats_path, write_stats
from glioseg.labels import get_scheme

if TYPE_CHECKING:
    from glioseg.inference.predictor import Prediction, Predictor



class ExtraOutputs(Protocol):
    """More files per case (e.g. a DICOM-SEG), staged and committed with the label map."""

    def files(self, out: Path, case_id: str) -> list[Path]:
        """The files a complete case has (``--skip-existing`` redoes a case that lacks one)."""

    def writers(self, case: Case, pred: Prediction, out: Path) -> dict[Path, Callable[[Path], object]]:
        """Final path -> ``writer(staged_path)``; raise here (before anything is staged) to fail the case."""


OTHER_PROCESS = ("being predicted by", "done by")  # how the reasons of cases left to another process start

__all__ = ["OTHER_PROCESS", "CaseOutcome", "ExtraOutputs", "predict_dataset", "predict_files", "stage_case"]


@dataclass
class CaseOutcome:
    """One line of the prediction manifest: ``status`` is done, skipped or failed.

    Attributes:
        case_id: the case.
        status: ``done``, ``skipped`` or ``failed``.
        seconds: time spent on the case.
        output: the label map, when there is one.
        error: one line naming the case, the file and the fix, when it failed.
        timings: seconds per step of a prediction.
        reason: why it was skipped.
        files: path relative to the output folder -> sha256, of every file a done case wrote.
        warnings: input-check warnings that did not stop the case.
    """

    case_id: str
    status: str
    seconds: float = 0.0
    output: str | None = None
    error: str | None = None
    timings: dict[str, float] = field(default_factory=dict)
    reason: str | None = None
    files: dict[str, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


# ----------------------------------------------------------------------------- one case


def stage_case(predictor: Predictor, files: CaseFiles, out: Path, *, label_scheme: str | None = None,
               output_label_scheme: str | None = None, save_probabilities: bool = False,
               model: dict[str, Any] | None = None,
               extra_outputs: ExtraOutputs | None = None) -> tuple[StagedOutputs, CaseOutcome]:
    """Read and predict one case; write its outputs into ``OUT/.<ID>.tmp/`` (nothing in place yet).

    Args:
        predictor: the loaded model.
        files: the input case.
        out: output folder.
        label_scheme: the input's label scheme (default: the one its layout implies).
        output_label_scheme: scheme of the written label map (default: the input's, see
            :func:`output_scheme`).
        save_probabilities: also write probabilities (and uncertainty).
        model: the model's identity (``{"name", "sha256"}``) for the statistics ``<ID>.json``.
        extra_outputs: more files to write for the case (e.g. a DICOM-SEG), staged with the others.

    Returns:
        The staged files (move them with ``commit(label_path)``) and the outcome (``done``, with
        each file's sha256).

    Raises:
        Exception: anything reading or predicting raises; OutputWriteError for a failed write.
    """
    start = time.perf_counter()
    scheme = get_scheme(output_scheme(files, output_label_scheme, label_scheme))
    case = read_case(files, read_label=False)
    t_read = time.perf_counter() - start
    pred = predictor.predict_case(case, return_probabilities=save_probabilities)
    staged = StagedOutputs(out, case.case_id)
    label = label_path(out, case.case_id)
    try:
        _stage_maps(staged, pred, case, out, predictor.target)
        for final, writer in (extra_outputs.writers(case, pred, out) if extra_outputs is not None else {}).items():
            staged.write(final, writer)
        timings = {"read": t_read, **pred.timings}
        stats = prediction_stats(case.case_id, pred.labels, case.geometry, label_map=label.name, model=model,
                                 timings={**timings, "case": time.perf_counter() - start})
        staged.write(stats_path(out, case.case_id), partial(write_stats, stats))
        staged.write(label, lambda p: write_seg(pred.labels, case.geometry, p, scheme))
        shas = {str(final.relative_to(out)): sha256_file(path) for path, final in staged.staged_files()}
    except BaseException:
        staged.discard()
        raise
    return staged, CaseOutcome(case.case_id, "done", time.perf_counter() - start, str(label), None, timings,
                               files=shas)


def predict_files(predictor: Predictor, files: CaseFiles, out: Path, *, label_scheme: str | None = None,
                  output_label_scheme: str | None = None, save_probabilities: bool = False,
                  model: dict[str, Any] | None = None, extra_outputs: ExtraOutputs | None = None) -> CaseOutcome:
    """Read, predict and write one case (``OUT/<ID>.nii.gz``, in the input's geometry).

    With ``save_probabilities`` the probabilities go to ``OUT/probabilities/<ID>_<channel>.nii.gz``;
    an MC-dropout uncertainty map goes to ``OUT/uncertainty/<ID>.nii.gz``. All are moved into place
    together at the end, the label map last, so a finished label map means a finished case and a
    failing case leaves none of them.

    Args:
        predictor: the loaded model.
        files: the input case.
        out: output folder.
        label_scheme, output_label_scheme, save_probabilities, model, extra_outputs: as :func:`stage_case`.

    Returns:
        The outcome (status ``done``).

    Raises:
        Exception: anything reading, predicting or writing raises (see :func:`predict_dataset`).
    """
    staged, outcome = stage_case(predictor, files, out, label_scheme=label_scheme,
                                 output_label_scheme=output_label_scheme, save_probabilities=save_probabilities,
                                 model=model, extra_outputs=extra_outputs)
    staged.commit(label_path(out, files.case_id))
    return outcome


def _stage_maps(staged: StagedOutputs, pred: Prediction, case: Case, out: Path, target: str) -> None:
    """Stage the probabilities (one file per channel) and the uncertainty map, when present."""
    if pred.probabilities is not None:
        names = probability_names(target, pred.probabilities.shape[0]) or []
        for name, channel in zip(names, pred.probabilities, strict=True):
            staged.write(probability_path(out, case.case_id, name), partial(write_image, channel, case.geometry))
    if pred.uncertainty is not None:
        staged.write(uncertainty_path(out, case.case_id), partial(write_image, pred.uncertainty, case.geometry))


# ----------------------------------------------------------------------------- the batch


@dataclass
class _Batch:
    """What every case of one :func:`predict_dataset` call shares."""

    predictor: Predictor
    out: Path
    manifest: Path
    options: dict[str, Any]
    skip_existing: bool
    force: bool
    index: ManifestIndex
    started: float = field(default_factory=time.time)
    extra: dict[str, Any] = field(default_factory=dict)
    extra_outputs: ExtraOutputs | None = None
    pid: int = field(default_factory=os.getpid)
    host: str = field(default_factory=socket.gethostname)

    @property
    def run_id(self) -> str:
        return f"{self.host}:{self.pid}:{self.started:.6f}"

    def record(self, outcome: CaseOutcome) -> CaseOutcome:
        """Append the outcome to the manifest; an outcome that cannot be recorded becomes failed."""
        try:
            manifests.append_record(self.manifest, self.line(outcome))
        except OSError as exc:
            note = (f"case {outcome.case_id}: cannot append to the manifest {self.manifest} "
                    f"({exc.strerror or exc}); free disk space or fix the permissions, then rerun")
            return replace(outcome, status="failed", error=note if outcome.error is None else
                           f"{outcome.error}; {note}")
        return outcome

    def line(self, result: CaseOutcome) -> dict[str, Any]:
        line: dict[str, Any] = {  # the extra fields first: they never replace the outcome's own
            **self.extra, "id": result.case_id, "status": result.status, "seconds": round(result.seconds, 3),
            "output": result.output, "error": result.error,
            "timings": {k: round(v, 3) for k, v in result.timings.items()},
            "finished": round(time.time(), 6), "run": self.run_id, "pid": self.pid, "host": self.host}
        if result.status == "done":
            line["sha256"] = result.files.get(Path(result.output or "").name)
            line["files"] = result.files
        if result.reason is not None:
            line["reason"] = result.reason
        if result.warnings:
            line["warnings"] = result.warnings
        return line

    def done_elsewhere(self, case_id: str) -> str | None:
        """Who finished ``case_id`` since this run started, when another run did."""
        self.index.refresh()
        record = self.index.latest_done(case_id)
        if record is None or record.get("run") == self.run_id:
            return None
        finished = record.get("finished")
        if not isinstance(finished, int | float) or finished < self.started:
            return None
        return f"done by pid {record.get('pid')} on {record.get('host')} since this run started"

    def uncertainty(self) -> bool:
        tiles = getattr(self.predictor, "tile_predictors", {})
        return any(getattr(t, "mc_samples", 0) > 0 for t in tiles.values())


def predict_dataset(predictor: Predictor, cases: Sequence[CaseFiles], out: Path | str, *,
                    label_scheme: str | None = None, output_label_scheme: str | None = None,
                    skip_existing: bool = False, save_probabilities: bool = False, manifest: Path | None = None,
                    on_result: Callable[[CaseOutcome], object] | None = None, force: bool = False,
                    started: float | None = None, record: dict[str, Any] | None = None,
                    extra_outputs: ExtraOutputs | None = None,
                    unread: Mapping[str, str] | None = None) -> list[CaseOutcome]:
    """Predict many cases; a failing case is recorded and the others go on.

    Args:
        predictor: the loaded model.
        cases: the cases' files (from :func:`glioseg.data.layouts.find_cases`).
        out: output folder (``<ID>.nii.gz`` per case).
        label_scheme: the input dataset's label scheme (default: the one its layout implies).
        output_label_scheme: scheme of the written label maps (default: the input dataset's,
            else brats2017; see :func:`decide_output_scheme`).
        skip_existing: do not redo cases whose outputs are complete (see
            :func:`glioseg.inference.outputs.is_complete`).
        save_probabilities: also write probabilities (and uncertainty).
        manifest: JSONL file a line per case is appended to as it finishes (default
            ``OUT/manifest.jsonl``).
        on_result: called with each :class:`CaseOutcome` (progress display).
        force: predict inputs whose findings are in ``glioseg.data.checks.UNSERVABLE_CHECKS``.
        started: when the run began (``time.time()``; default: now). Cases another process
            finishes after it are not redone.
        record: more fields for every manifest line, e.g. ``{"model": {"name", "sha256"},
            "options": {...}}`` (what ``glioseg evaluate`` reports as the predictions' provenance);
            its ``model`` also goes into each case's statistics ``<ID>.json``.
        extra_outputs: more files per case (see :class:`ExtraOutputs`), e.g. a DICOM-SEG.
        unread: case ID -> one-line reason, for cases that could not even be turned into files
            (a DICOM study whose series failed): each is recorded as failed, before the others.

    Returns:
        One outcome per case: the unread ones first, then ``cases`` in input order.

    Raises:
        glioseg.inference.outputs.OutputError: unusable or repeated case IDs, or an output folder
            among the inputs (before anything is written).
        LabelSchemeError: the input dataset's label evidence contradicts itself and no
            ``output_label_scheme`` was given.
    """
    out = Path(out)
    check_case_ids(cases)
    check_output_location(out, cases, save_probabilities)
    output_label_scheme = decide_output_scheme(cases, output_label_scheme, label_scheme)
    out.mkdir(parents=True, exist_ok=True)
    options = {"label_scheme": label_scheme, "output_label_scheme": output_label_scheme,
               "save_probabilities": save_probabilities}
    log = manifest or manifest_path(out)
    batch = _Batch(predictor, out, log, options, skip_existing, force, ManifestIndex(out, [log]),
                   started if started is not None else time.time(), dict(record or {}), extra_outputs)
    results = []
    for case_id, why in (unread or {}).items():
        results.append(batch.record(_failed(case_id, time.perf_counter(), why)))
        if on_result is not None:
            on_result(results[-1])
    for files in cases:
        result = _claim_and_run(batch, files)
        results.append(result)
        if on_result is not None:
            on_result(result)
    return results


def _failed(case_id: str, start: float, exc: BaseException | str, warnings: list[str] | None = None) -> CaseOutcome:
    error = exc if isinstance(exc, str) else failure_message(case_id, exc)
    return CaseOutcome(case_id, "failed", time.perf_counter() - start, None, error, warnings=warnings or [])


def _claim_and_run(batch: _Batch, files: CaseFiles) -> CaseOutcome:
    """One case under its claim; a case another process holds is skipped."""
    start = time.perf_counter()
    try:
        claim = claims.try_claim(batch.out, files.case_id)
    except OSError as exc:
        return batch.record(_failed(files.case_id, start, f"case {files.case_id}: cannot lock it in {batch.out} "
                                    f"({exc.strerror or exc}); check the folder's permissions and file system"))
    if claim is None:
        reason = f"being predicted by {claims.holder(batch.out, files.case_id)}"
        return batch.record(CaseOutcome(files.case_id, "skipped", reason=reason))
    with claim:
        remove_leftovers(batch.out, files.case_id)
        return _run_claimed(batch, files, start)


def _skip_reason(batch: _Batch, files: CaseFiles) -> str | None:
    elsewhere = batch.done_elsewhere(files.case_id)
    if elsewhere is not None or not batch.skip_existing:
        return elsewhere
    maps = expected_maps(batch.out, files.case_id, batch.predictor.target, batch.options["save_probabilities"],
                         batch.uncertainty())
    if maps is not None and batch.extra_outputs is not None:
        maps = [*maps, *batch.extra_outputs.files(batch.out, files.case_id)]
    if is_complete(files, batch.out, maps, batch.index.latest_done(files.case_id)):
        return "complete outputs exist (--skip-existing)"
    return None


def _run_claimed(batch: _Batch, files: CaseFiles, start: float) -> CaseOutcome:
    """Skip, refuse or predict a claimed case; its outcome is recorded before its files move into place."""
    reason = _skip_reason(batch, files)
    if reason is not None:
        output = str(label_path(batch.out, files.case_id))
        return batch.record(CaseOutcome(files.case_id, "skipped", time.perf_counter() - start, output, reason=reason))
    warnings: list[str] = []
    try:
        refusals, warnings = input_findings(files, batch.force)
        if refusals:
            return batch.record(_failed(files.case_id, start, "; ".join(refusals), warnings))
        staged, outcome = stage_case(batch.predictor, files, batch.out, model=batch.extra.get("model"),
                                     extra_outputs=batch.extra_outputs, **batch.options)
    except Exception as exc:  # noqa: BLE001 (isolate the case: report it and let the batch go on)
        return batch.record(_failed(files.case_id, start, exc, warnings))
    outcome.warnings = warnings
    recorded = batch.record(outcome)
    if recorded.status != "done":
        staged.discard()
        return recorded
    try:
        staged.commit(label_path(batch.out, files.case_id))
    except OutputWriteError as exc:
        return batch.record(_failed(files.case_id, start, exc, warnings))
    return recorded
