"""Features of a whole dataset: where each case's segmentation comes from, and the batch loop.

Three sources of the label map (:class:`SegmentationSource`):

- :func:`ground_truth_source`: the dataset's own segmentation files (``<ID>_seg.nii.gz``);
- :func:`folder_source`: a folder of segmentations, e.g. what ``glioseg predict -o SEGS`` wrote
  (``SEGS/<ID>.nii.gz``; also ``<ID>_seg.nii.gz`` and ``<ID>/<ID>_seg.nii.gz``);
- :func:`model_source`: a loaded :class:`glioseg.inference.predictor.Predictor` (the shipped model
  by default in the CLI) segments each case, as ``glioseg predict`` does.

A failing case (unreadable file, label values of no scheme, a model error) is recorded with its
one-line error and the batch goes on, as in ``glioseg predict``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from glioseg.data.nifti import Case, CaseError, CaseFiles, failure_message, read_case
from glioseg.radiomics.features import FeatureRow, case_features

if TYPE_CHECKING:
    from glioseg.inference.predictor import Predictor

SEG_NAMES: tuple[str, ...] = ("{id}.nii.gz", "{id}.nii", "{id}_seg.nii.gz", "{id}_seg.nii", "{id}/{id}_seg.nii.gz")


@dataclass(frozen=True)
class SegmentationSource:
    """How to read a case together with its canonical label map.

    Attributes:
        name: what the features CSV's ``segmentation`` column says.
        read: ``CaseFiles -> (case, labels uint8 (X, Y, Z))``; raises CaseError for a case it cannot serve.
    """

    name: str
    read: Callable[[CaseFiles], tuple[Case, np.ndarray]]


def ground_truth_source() -> SegmentationSource:
    """The dataset's own segmentation of each case."""

    def read(files: CaseFiles) -> tuple[Case, np.ndarray]:
        if files.label is None:
            raise CaseError(files.case_id, "has no ground-truth segmentation file (<ID>_seg.nii.gz); give "
                            "--seg SEGS, or drop --ground-truth to segment with the model")
        case = read_case(files)
        assert case.label is not None  # internal: read_case reads the label file it was given
        return case, case.label

    return SegmentationSource("ground truth", read)


def find_segmentation(segs: Path, case_id: str) -> Path:
    """The segmentation of ``case_id`` in folder ``segs`` (first of :data:`SEG_NAMES` that exists).

    Raises:
        CaseError: none of the names exists.
    """
    for pattern in SEG_NAMES:
        path = segs / pattern.format(id=case_id)
        if path.is_file():
            return path
    raise CaseError(case_id, f"no segmentation in {segs} (looked for {case_id}.nii.gz and {case_id}_seg.nii.gz); "
                    "give the folder `glioseg predict -o` wrote, or drop --seg to segment with the model")


def folder_source(segs: Path) -> SegmentationSource:
    """Segmentations from a folder, checked against the case's image geometry like ground truth."""

    def read(files: CaseFiles) -> tuple[Case, np.ndarray]:
        case = read_case(replace(files, label=find_segmentation(segs, files.case_id)))
        assert case.label is not None  # internal: a label file was given
        return case, case.label

    return SegmentationSource(f"file {segs}", read)


def model_source(predictor: Predictor, name: str) -> SegmentationSource:
    """Segment each case with ``predictor`` (``name`` identifies the model in the CSV)."""

    def read(files: CaseFiles) -> tuple[Case, np.ndarray]:
        case = read_case(files, read_label=False)
        return case, predictor.predict_case(case).labels

    return SegmentationSource(f"predicted by {name}", read)


def extract_dataset(cases: Sequence[CaseFiles], source: SegmentationSource,
                    on_result: Callable[[FeatureRow], None] | None = None) -> list[FeatureRow]:
    """Features of every case; a case that fails gets a row with its error and no values.

    Args:
        cases: the cases (from :func:`glioseg.data.layouts.find_cases`).
        source: where the label maps come from.
        on_result: called with each row as it is done (progress).

    Returns:
        One row per case, in the order given.
    """
    rows = []
    for files in cases:
        try:
            case, labels = source.read(files)
            geo = case.geometry
            row = FeatureRow(case.case_id, source.name,
                             case_features(case.image, labels, geo.canonical_spacing, geo.canonical_affine))
        except Exception as exc:  # noqa: BLE001 (isolate the case: report it and let the batch go on, as predict does)
            row = FeatureRow(files.case_id, source.name, {}, failure_message(files.case_id, exc))
        rows.append(row)
        if on_result is not None:
            on_result(row)
    return rows
