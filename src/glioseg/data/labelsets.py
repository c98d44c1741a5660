"""Finding ground-truth segmentations for evaluation, in every form they come in.

Forms, tried in this order:

- ``nnunet-labels``: an nnU-Net ``labelsTr`` / ``labelsTs`` folder of ``<ID>.nii.gz`` files (given
  itself, or a dataset folder holding one but no ``imagesTr`` / ``imagesTs``); the scheme hint is
  what the dataset's ``dataset.json`` labels name, if anything.
- a dataset in any layout :func:`glioseg.data.layouts.find_cases` knows (BraTS 2017-21 and 2023+
  folders, MSD, nnU-Net with images).
- ``labels``: a flat folder of ``<ID>.nii.gz``, ``<ID>_seg.nii.gz`` or ``<ID>-seg.nii.gz`` files
  (``.nii`` too). ``_seg`` names hint BraTS 2017-21 labels and ``-seg`` names BraTS 2023+, as in
  the BraTS layouts; plain ``<ID>`` names hint nothing, so the values decide. A folder mixing both
  namings is refused when the scheme is decided (:func:`glioseg.data.schemes.layout_evidence`).

Cases come back without images (``CaseFiles.images`` empty) unless the dataset has them.
"""

from __future__ import annotations

from pathlib import Path

from glioseg.data.dataset_json import _read_dataset_json, _scheme_from_labels
from glioseg.data.layouts import _check_unique_ids, find_cases
from glioseg.data.naming import BRATS_EVIDENCE, DatasetError, _nifti_files, strip_nii
from glioseg.data.nifti import CaseFiles

NNUNET_LABEL_DIRS: tuple[str, ...] = ("labelsTr", "labelsTs")
LABEL_SUFFIXES: dict[str, str] = {"_seg": "brats2017", "-seg": "brats2023"}  # file-name suffix -> scheme hint


def find_ground_truths(root: Path | str) -> list[CaseFiles]:
    """Every ground-truth case under ``root``, in any form of the module docstring.

    Args:
        root: nnU-Net labels folder, dataset folder, or flat folder of label files.

    Returns:
        Cases sorted by ID; ``label`` is set for each case that has a segmentation.

    Raises:
        DatasetError: not a folder, no form matches, or case IDs repeat (one line naming the
            folder and what was expected).
    """
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{root}: not a folder; give the ground truths as a dataset, an nnU-Net labelsTr/"
                           "labelsTs folder, or a folder of <ID>[_seg|-seg].nii.gz files")
    labels_dir = _nnunet_labels_dir(root)
    if labels_dir is not None:
        return _checked(_nnunet_label_cases(labels_dir), root)
    try:
        return find_cases(root)
    except DatasetError as exc:
        cases = _flat_label_cases(root)
        if not cases:
            raise DatasetError(f"{exc}; for ground truths alone, give an nnU-Net labelsTr/labelsTs folder or a "
                               "folder of <ID>[_seg|-seg].nii.gz files") from exc
    return _checked(cases, root)


def _checked(cases: list[CaseFiles], root: Path) -> list[CaseFiles]:
    if not cases:
        raise DatasetError(f"{root}: no .nii.gz label files found; give the folder holding the ground truths")
    cases = sorted(cases, key=lambda c: c.case_id)
    _check_unique_ids(cases)
    return cases


def _nnunet_labels_dir(root: Path) -> Path | None:
    """The nnU-Net labels folder ``root`` is, or holds without images; None otherwise."""
    if root.name in NNUNET_LABEL_DIRS:
        return root
    if any((root / d).is_dir() for d in ("imagesTr", "imagesTs")):
        return None  # a full nnU-Net/MSD dataset: find_cases reads it with its images
    return next((root / d for d in NNUNET_LABEL_DIRS if (root / d).is_dir()), None)


def _nnunet_label_cases(labels_dir: Path) -> list[CaseFiles]:
    """``<ID>.nii.gz`` files of an nnU-Net labels folder, with the hint of its dataset.json."""
    hint, evidence = _scheme_from_labels(_read_dataset_json(labels_dir.parent))
    evidence = evidence or "nnU-Net label files (no dataset.json label names)"
    return [CaseFiles(strip_nii(p.name) or p.name, {}, p, "nnunet-labels", hint, (), evidence)
            for p in _nifti_files(labels_dir)]


def _flat_label_cases(root: Path) -> list[CaseFiles]:
    """One case per NIfTI file of a flat folder, named ``<ID>``, ``<ID>_seg`` or ``<ID>-seg``."""
    cases = []
    for path in _nifti_files(root):
        stem = strip_nii(path.name) or path.name
        suffix = next((s for s in LABEL_SUFFIXES if stem.endswith(s) and len(stem) > len(s)), None)
        if suffix is None:
            cases.append(CaseFiles(stem, {}, path, "labels", None, (), "plain <ID>.nii.gz label files"))
        else:
            hint = LABEL_SUFFIXES[suffix]
            cases.append(CaseFiles(stem[: -len(suffix)], {}, path, "labels", hint, (), BRATS_EVIDENCE[hint]))
    return cases
