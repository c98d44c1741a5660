"""One label-scheme decision per dataset, for check, preprocess, predict and evaluate alike.

The evidence is, in order: the ``--label-scheme`` the user gave; the layout (``<ID>_seg`` files are
BraTS 2017-21, ``<ID>-seg`` files BraTS 2023+) or the scheme dataset.json names (label names,
``glioseg_label_scheme``); the values of all segmentations together (3 and 4 together make BraTS
2023 naming BraTS 2024); and the anatomy (edema, not necrosis, on the tumour's outer border). The
rules themselves are :func:`glioseg.scheme_rules.resolve_scheme`; this module gathers the evidence from
the cases on disk. Contradictions are refused with one line naming the evidence and the
``--label-scheme`` to pass.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from glioseg.data.nifti import CaseError, CaseFiles, load_nifti, read_array
from glioseg.labels import LabelScheme, LabelSchemeError
from glioseg.scheme_rules import LabelStats, SchemeDecision, label_stats, resolve_scheme


def read_label_stats(path: Path, case_id: str) -> LabelStats:
    """Values and outer-border counts of one segmentation file.

    Args:
        path: NIfTI label map.
        case_id: named in errors.

    Returns:
        Its :class:`~glioseg.scheme_rules.LabelStats`.

    Raises:
        CaseError: unreadable file, or non-integer values.
    """
    img = load_nifti(path, case_id)
    raw = read_array(img, path, case_id, dtype=None)  # type: ignore[arg-type]
    if raw.dtype.kind == "f" and not (np.isfinite(raw).all() and np.array_equal(raw, np.round(raw))):
        raise CaseError(case_id, "segmentation holds non-integer values; save integer labels", path)
    return label_stats(raw)


def read_all_label_stats(paths: Mapping[str, Path], workers: int = 1) -> dict[str, LabelStats | None]:
    """:func:`read_label_stats` of every file (None for one that cannot be read), in threads.

    Args:
        paths: case ID -> segmentation file.
        workers: threads (decompression releases the GIL).

    Returns:
        Case ID -> stats, or None for an unreadable file (its error belongs to the case's own check).
    """
    def read(item: tuple[str, Path]) -> LabelStats | None:
        try:
            return read_label_stats(item[1], item[0])
        except CaseError:
            return None

    items = list(paths.items())
    if workers <= 1 or len(items) <= 1:
        return {cid: read((cid, p)) for cid, p in items}
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return dict(zip((cid for cid, _ in items), pool.map(read, items), strict=True))


def layout_evidence(cases: Sequence[CaseFiles], context: str = "") -> tuple[str | None, str]:
    """The scheme the cases' layout (or dataset.json) states, and where that comes from.

    Args:
        cases: the dataset's cases.
        context: prefix of the error message, or empty.

    Returns:
        ``(scheme name or None, evidence)``.

    Raises:
        LabelSchemeError: cases state different schemes.
    """
    by_hint: dict[str, list[CaseFiles]] = {}
    for case in cases:
        if case.scheme_hint is not None:
            by_hint.setdefault(case.scheme_hint, []).append(case)
    if len(by_hint) > 1:
        parts = " and ".join(f"{len(group)} cases {hint} by {group[0].scheme_evidence or 'their layout'} "
                             f"(e.g. {group[0].case_id})" for hint, group in sorted(by_hint.items()))
        raise LabelSchemeError(f"{context + ': ' if context else ''}the cases state different label schemes: "
                               f"{parts}; give one dataset per scheme, or pass --label-scheme for all")
    hint = next(iter(by_hint), None)
    evidence = next((c.scheme_evidence for c in cases if c.scheme_hint == hint and c.scheme_evidence), "")
    return hint, evidence


def decide_dataset_scheme(cases: Sequence[CaseFiles], label_scheme: str | LabelScheme | None = None, *,
                          stats: Mapping[str, LabelStats | None] | None = None, read_labels: bool = True,
                          workers: int = 1, context: str = "") -> SchemeDecision:
    """Decide the label scheme of a dataset once, from all its cases.

    Call it before reading any segmentation and pass the result's ``scheme`` to
    :func:`glioseg.data.nifti.read_case` (preprocess), use it as the input's scheme when writing
    outputs (predict), or to read ground truths (evaluate).

    Args:
        cases: the dataset's cases (from :func:`glioseg.data.layouts.find_cases`).
        label_scheme: the scheme the user gave (``--label-scheme``); it wins when set.
        stats: case ID -> stats of its segmentation when already read (``glioseg check``);
            read from the files when None.
        read_labels: read the segmentations for their values; False decides from the layout alone.
        workers: threads reading segmentations.
        context: prefix of error messages (e.g. ``"ground truth /data"``), or empty.

    Returns:
        ``(scheme, evidence)``; scheme None when nothing decides it (no segmentation and a layout
        that names no scheme, e.g. plain ``t1.nii.gz`` folders).

    Raises:
        LabelSchemeError: an unknown ``label_scheme``, or evidence that contradicts itself (the
            message names the evidence and the ``--label-scheme`` to pass).
    """
    if label_scheme is not None:
        return resolve_scheme([], label_scheme=label_scheme)
    hint, evidence = layout_evidence(cases, context)
    if stats is None:
        labelled = {c.case_id: c.label for c in cases if c.label is not None} if read_labels else {}
        stats = read_all_label_stats(labelled, workers)
    found = [s for s in stats.values() if s is not None]
    if len(found) < len(stats):
        evidence += f"{'; ' if evidence else ''}{len(stats) - len(found)} unreadable segmentation(s) left out"
    return resolve_scheme(found, hint, evidence, context=context)


def decide_files_scheme(paths: Mapping[str, Path], hint: str | None, hint_evidence: str,
                        label_scheme: str | LabelScheme | None = None, flag: str = "--label-scheme",
                        workers: int = 1, context: str = "", anatomy: bool = True) -> SchemeDecision:
    """Decide one scheme for loose label files (e.g. a folder of predictions).

    Args:
        paths: case ID -> label file.
        hint: scheme they should have (e.g. the ground truth's), or None.
        hint_evidence: where ``hint`` comes from, for messages.
        label_scheme: the scheme the user gave for these files, or None.
        flag: the option named in messages (e.g. ``"--pred-label-scheme"``).
        workers: threads reading files.
        context: prefix of error messages, or empty.
        anatomy: apply the swapped-NCR/ED check (off for predictions: they are being judged).

    Returns:
        ``(scheme, evidence)``.

    Raises:
        LabelSchemeError: as :func:`glioseg.scheme_rules.resolve_scheme`.
    """
    if label_scheme is not None:
        return resolve_scheme([], label_scheme=label_scheme, flag=flag)
    found = [s for s in read_all_label_stats(paths, workers).values() if s is not None]
    return resolve_scheme(found, hint, hint_evidence, flag=flag, context=context, anatomy=anatomy)
