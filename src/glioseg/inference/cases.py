"""Which cases a batch predicts, in which label scheme, and whether their inputs can be served:
shards of a dataset, the output scheme decided once per dataset, and the input checks run before a
case is predicted."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from glioseg.data import checks
from glioseg.data.nifti import CaseFiles
from glioseg.data.schemes import decide_dataset_scheme


def shard_problem(num_shards: int, shard_id: int) -> str | None:
    """Why ``--num-shards`` / ``--shard-id`` are inconsistent, or None."""
    if num_shards < 1:
        return f"--num-shards must be >= 1; got {num_shards}"
    if not 0 <= shard_id < num_shards:
        return f"--shard-id must be in 0..{num_shards - 1} (--num-shards {num_shards}); got {shard_id}"
    return None


def select_shard(cases: Sequence[Any], num_shards: int = 1, shard_id: int = 0) -> list[Any]:
    """The cases of one shard: every ``num_shards``-th case by ID, starting at ``shard_id``.

    Shards are disjoint and together cover every case exactly once.

    Raises:
        ValueError: ``num_shards < 1`` or ``shard_id`` outside ``0..num_shards-1``.
    """
    problem = shard_problem(num_shards, shard_id)
    if problem is not None:
        raise ValueError(problem)
    ordered = sorted(cases, key=lambda c: c.case_id)
    return ordered[shard_id::num_shards]


def decide_output_scheme(cases: Sequence[CaseFiles], output_label_scheme: str | None = None,
                         label_scheme: str | None = None) -> str:
    """The scheme a dataset's predictions are written in, decided once for all its cases.

    Args:
        cases: the input cases.
        output_label_scheme: the scheme asked for the output; returned as is when set.
        label_scheme: the input's scheme, if given (``--label-scheme``).

    Returns:
        ``output_label_scheme``, else the input dataset's scheme as
        :func:`glioseg.data.schemes.decide_dataset_scheme` decides it (layout, ``dataset.json``,
        the values of any segmentations), else ``"brats2017"``.

    Raises:
        LabelSchemeError: the input's evidence contradicts itself (the message names the
            ``--label-scheme`` to pass).
    """
    if output_label_scheme is not None:
        return output_label_scheme
    decided = decide_dataset_scheme(cases, label_scheme).scheme
    return decided.name if decided is not None else "brats2017"


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


def input_findings(files: CaseFiles, force: bool = False) -> tuple[list[str], list[str]]:
    """The input checks of ``glioseg check`` that decide whether a case can be predicted.

    The segmentation, which prediction does not read, is not checked.

    Args:
        files: the case.
        force: predict inputs the model cannot serve (findings in ``UNSERVABLE_CHECKS``) anyway.

    Returns:
        ``(refusals, warnings)``: one line per finding; the case is not predicted when
        ``refusals`` is not empty.
    """
    report = checks.inspect_case(replace(files, label=None))
    unservable: frozenset[str] = getattr(checks, "UNSERVABLE_CHECKS", frozenset())
    refusals, warnings = [], []
    for finding in report.findings:
        line = finding.line(files.case_id)
        if finding.severity == "error":
            refusals.append(line)
        elif finding.check in unservable and not force:
            refusals.append(f"{line} (the model cannot serve this input; predict it anyway with --force)")
        else:
            warnings.append(line)
    return refusals, warnings


