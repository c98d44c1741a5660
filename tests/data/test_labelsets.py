"""Ground-truth discovery for evaluation: datasets, nnU-Net labels folders, flat label folders."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from glioseg.data.labelsets import find_ground_truths
from glioseg.data.layouts import find_cases
from glioseg.data.naming import DatasetError
from glioseg.data.schemes import decide_dataset_scheme
from glioseg.labels import LabelSchemeError


@pytest.fixture()
def labels(make_synthetic_dataset) -> list[tuple[str, Path]]:
    cases = find_cases(make_synthetic_dataset("brats2017", n_cases=2, shape=(24, 24, 24), seed=3))
    return [(c.case_id, c.label) for c in cases]  # type: ignore[misc]


def test_dataset_is_found_as_find_cases_does(make_synthetic_dataset):
    root = make_synthetic_dataset("brats2017", n_cases=2, shape=(24, 24, 24), seed=3)
    found = find_ground_truths(root)
    assert [c.case_id for c in found] == [c.case_id for c in find_cases(root)]
    assert all(c.layout == "brats2017" and c.images for c in found)


@pytest.mark.parametrize(("suffix", "hint"), [("", None), ("_seg", "brats2017"), ("-seg", "brats2023")])
def test_flat_folder_of_label_files(labels, tmp_path, suffix, hint):
    for case_id, path in labels:
        shutil.copy(path, tmp_path / f"{case_id}{suffix}.nii.gz")
    (tmp_path / "notes.txt").write_text("not a label")
    found = find_ground_truths(tmp_path)
    assert [c.case_id for c in found] == [cid for cid, _ in labels]
    assert all(c.layout == "labels" and c.images == {} and c.scheme_hint == hint for c in found)


def test_flat_folder_mixing_namings_is_refused_when_the_scheme_is_decided(labels, tmp_path):
    shutil.copy(labels[0][1], tmp_path / f"{labels[0][0]}_seg.nii.gz")
    shutil.copy(labels[1][1], tmp_path / f"{labels[1][0]}-seg.nii.gz")
    with pytest.raises(LabelSchemeError, match="different label schemes"):
        decide_dataset_scheme(find_ground_truths(tmp_path))


@pytest.mark.parametrize("folder", ["labelsTr", "labelsTs"])
def test_nnunet_labels_folder_given_or_inside_the_dataset(labels, tmp_path, folder):
    target = tmp_path / "Dataset001_BraTS" / folder
    target.mkdir(parents=True)
    for case_id, path in labels:
        shutil.copy(path, target / f"{case_id}.nii.gz")
    (target.parent / "dataset.json").write_text(json.dumps(
        {"labels": {"background": 0, "necrosis": 1, "edema": 2, "enhancing tumour": 4}}))
    for root in (target, target.parent):
        found = find_ground_truths(root)
        assert [c.case_id for c in found] == [cid for cid, _ in labels]
        assert all(c.layout == "nnunet-labels" and c.label.parent == target for c in found)  # type: ignore[union-attr]
    assert found[0].scheme_hint == "brats2017" and "dataset.json" in found[0].scheme_evidence


def test_bad_ground_truth_folders(tmp_path):
    with pytest.raises(DatasetError, match="not a folder"):
        find_ground_truths(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="labelsTr/labelsTs folder or a folder of <ID>"):
        find_ground_truths(tmp_path / "empty")
    (tmp_path / "labelsTr").mkdir()
    with pytest.raises(DatasetError, match=r"no \.nii\.gz label files"):
        find_ground_truths(tmp_path / "labelsTr")


def test_repeated_ids_are_refused(labels, tmp_path):
    shutil.copy(labels[0][1], tmp_path / "A_seg.nii.gz")
    shutil.copy(labels[0][1], tmp_path / "A.nii.gz")
    with pytest.raises(DatasetError, match="appears twice"):
        find_ground_truths(tmp_path)
