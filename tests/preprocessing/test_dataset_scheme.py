"""preprocess and predict decide the label scheme once per dataset, as check and evaluate do."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
from typer.testing import CliRunner

from glioseg.cli import app
from glioseg.data.layouts import find_cases
from glioseg.data.synthetic import write_synthetic_dataset
from glioseg.inference.cases import decide_output_scheme
from glioseg.labels import ET, RC, LabelSchemeError
from glioseg.preprocessing.cache import load_preprocessed, preprocess_dataset

SHAPE = (24, 24, 24)
runner = CliRunner()


def brats2023_names_with_2017_labels(root):
    """BraTS 2023+ file names holding 1/2/4 labels: read per case, 4 became resection cavity."""
    write_synthetic_dataset(root, 2, layout="brats2023", scheme="brats2017", shape=SHAPE, seed=0)
    return find_cases(root)


def add_cavity(seg, drop_et: bool = False) -> None:
    """Write a resection cavity (BraTS 2024 label 4) into a segmentation, optionally without its ET."""
    img = nib.load(seg)
    data = np.asarray(img.dataobj).copy()
    if drop_et:
        data[data == 3] = 1
    data[:2, :2, :2] = 4
    nib.save(nib.Nifti1Image(data, img.affine, img.header), seg)


def test_preprocess_refuses_labels_that_contradict_the_layout(tmp_path):
    cases = brats2023_names_with_2017_labels(tmp_path / "data")
    with pytest.raises(LabelSchemeError, match="--label-scheme"):
        preprocess_dataset(cases, tmp_path / "pre")
    assert not (tmp_path / "pre").exists()  # refused before anything is written


def test_preprocess_reads_every_case_with_the_given_scheme(tmp_path):
    cases = brats2023_names_with_2017_labels(tmp_path / "data")
    preprocess_dataset(cases, tmp_path / "pre", label_scheme="brats2017")
    label = load_preprocessed(tmp_path / "pre", cases[0].case_id).label
    assert ET in np.unique(label) and RC not in np.unique(label)


def test_preprocess_cli_refusal_is_one_line(tmp_path):
    brats2023_names_with_2017_labels(tmp_path / "data")
    result = runner.invoke(app, ["preprocess", str(tmp_path / "data"), str(tmp_path / "pre")])
    assert result.exit_code == 1
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "--label-scheme" in lines[0] and "Traceback" not in result.output


def test_a_case_without_et_is_read_with_the_dataset_decision(tmp_path):
    # BraTS 2024 (1/2/3/4): a case with a cavity (4) but no ET (3) is 2024 only in the dataset's light
    write_synthetic_dataset(tmp_path / "data", 2, layout="brats2023", scheme="brats2024", shape=SHAPE, seed=1)
    cases = find_cases(tmp_path / "data")
    add_cavity(cases[0].label)
    add_cavity(cases[1].label, drop_et=True)  # this case: a cavity but no ET
    result = preprocess_dataset(cases, tmp_path / "pre")
    assert not result.failed, [r.error for r in result.failed]
    assert RC in np.unique(load_preprocessed(tmp_path / "pre", cases[1].case_id).label)


def test_predict_output_scheme_is_decided_for_the_dataset(tmp_path):
    cases = brats2023_names_with_2017_labels(tmp_path / "data")
    with pytest.raises(LabelSchemeError, match="--label-scheme"):
        decide_output_scheme(cases)
    assert decide_output_scheme(cases, label_scheme="brats2017") == "brats2017"
    assert decide_output_scheme(cases, output_label_scheme="msd") == "msd"
    write_synthetic_dataset(tmp_path / "d24", 2, layout="brats2023", scheme="brats2024", shape=SHAPE, seed=2)
    d24 = find_cases(tmp_path / "d24")
    add_cavity(d24[0].label)  # 3 and 4 together: BraTS 2024 post-treatment
    assert decide_output_scheme(d24) == "brats2024"


def test_predict_cli_refuses_contradicting_labels_before_loading_a_model(tmp_path):
    brats2023_names_with_2017_labels(tmp_path / "data")
    result = runner.invoke(app, ["predict", "-i", str(tmp_path / "data"), "-o", str(tmp_path / "out"),
                                 "-m", str(tmp_path / "no-such-model")])
    assert result.exit_code == 1
    assert "--label-scheme" in result.output and "--output-label-scheme" in result.output
    assert "no-such-model" not in result.output  # refused before the model is looked for
    assert not (tmp_path / "out" / "manifest.jsonl").exists()
