"""``evaluate`` by each protocol, from each ground-truth form, with its provenance."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from typer.testing import CliRunner

from glioseg.cli import app
from glioseg.data.layouts import find_cases
from glioseg.evaluation.evaluate import evaluate_folder
from glioseg.evaluation.protocols import PROTOCOLS
from glioseg.inference.manifest import append_record

runner = CliRunner()


@pytest.fixture()
def dataset(make_synthetic_dataset) -> Path:
    return make_synthetic_dataset("brats2017", n_cases=2, shape=(32, 32, 32), seed=5)


def _perfect_predictions(dataset: Path, pred: Path) -> list[str]:
    pred.mkdir()
    ids = []
    for case in find_cases(dataset):
        shutil.copy(case.label, pred / f"{case.case_id}.nii.gz")  # type: ignore[arg-type]
        ids.append(case.case_id)
    return ids


def _ground_truth_form(dataset: Path, form: str, root: Path) -> Path:
    """The dataset's segmentations rewritten in one ground-truth form; returns what --gt gets."""
    if form == "dataset":
        return dataset
    target = root / "Dataset001" / "labelsTr" if form == "nnunet" else root / "flat"
    target.mkdir(parents=True)
    suffix = {"flat_plain": "", "flat_seg": "_seg", "nnunet": ""}[form]
    for case in find_cases(dataset):
        shutil.copy(case.label, target / f"{case.case_id}{suffix}.nii.gz")  # type: ignore[arg-type]
    return target.parent if form == "nnunet" else target


@pytest.mark.parametrize("form", ["dataset", "flat_plain", "flat_seg", "nnunet"])
def test_every_ground_truth_form(dataset, tmp_path, form):
    ids = _perfect_predictions(dataset, tmp_path / "pred")
    gt = _ground_truth_form(dataset, form, tmp_path)
    result = evaluate_folder(tmp_path / "pred", gt, protocol="brats2023")
    assert [c.case_id for c in result.cases] == ids and not result.failed
    assert all(s.dice == 1.0 for c in result.cases for s in c.regions.values())
    provenance = result.summary["provenance"]
    assert provenance["ground_truth_form"] == {"dataset": "brats2017", "flat_plain": "labels", "flat_seg": "labels",
                                               "nnunet": "nnunet-labels"}[form]
    assert provenance["label_schemes"]["ground_truth"]["scheme"] == "brats2017"  # decided from the values (4)
    assert provenance["label_schemes"]["predictions"]["scheme"] == "brats2017"


def test_predictions_in_another_scheme_are_converted_and_recorded(dataset, tmp_path):
    pred = tmp_path / "pred"
    pred.mkdir()
    for case in find_cases(dataset):
        img = nib.load(case.label)  # type: ignore[arg-type]
        data = np.asarray(img.dataobj).astype(np.uint8)
        data[data == 4] = 3  # BraTS 2023 labels
        nib.save(nib.Nifti1Image(data, img.affine, img.header), pred / f"{case.case_id}-seg.nii.gz")
    result = evaluate_folder(pred, dataset, pred_label_scheme="brats2023", protocol="brats2025")
    assert all(s.dice == 1.0 for c in result.cases for s in c.regions.values())
    schemes = result.summary["provenance"]["label_schemes"]
    assert schemes["ground_truth"]["scheme"] == "brats2017" and schemes["predictions"]["scheme"] == "brats2023"
    assert schemes["predictions"]["evidence"]  # what decided it is recorded, not only the name
    with pytest.raises(ValueError, match="pred-label-scheme"):  # not silently read as 2017 labels (3 is no label)
        evaluate_folder(pred, dataset, protocol="brats2025")


@pytest.mark.parametrize("protocol", list(PROTOCOLS))
def test_cli_each_protocol_writes_its_provenance(dataset, tmp_path, protocol):
    import pandas as pd

    _perfect_predictions(dataset, tmp_path / "pred")
    out = tmp_path / "report"
    result = runner.invoke(app, ["evaluate", "--pred", str(tmp_path / "pred"), "--gt", str(dataset), "-o", str(out),
                                 "--protocol", protocol, "--no-thumbnails"])
    assert result.exit_code == 0, result.output
    assert f"protocol {protocol}" in result.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["protocol"] == protocol
    provenance = summary["summary"]["provenance"]
    assert provenance["protocol"] == protocol and provenance["model"] is None
    assert provenance["protocol_parameters"]["official_code"] == PROTOCOLS[protocol].official_code
    assert protocol in summary["conventions"]["protocol"]
    table = pd.read_csv(out / "cases.csv")  # plain CSV: pandas reads it without options
    assert (table["protocol"] == protocol).all() and len(table) == 2
    assert ("lesion_f1_WT" in table.columns) == (protocol == "brats2025")
    assert ("lesion_dice_ET" in table.columns) == (protocol != "brats2021")


def test_cli_bad_protocol_is_one_line(dataset, tmp_path):
    _perfect_predictions(dataset, tmp_path / "pred")
    result = runner.invoke(app, ["evaluate", "--pred", str(tmp_path / "pred"), "--gt", str(dataset),
                                 "--protocol", "brats2022"])
    assert result.exit_code != 0
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert lines == ["error: --protocol: unknown protocol 'brats2022'; choose one of brats2021, brats2023, "
                     "brats2024, brats2025"]
    assert not (tmp_path / "pred" / "evaluation").exists()


def _record(pred: Path, case_id: str, **extra: object) -> None:
    append_record(pred / "manifest.jsonl", {"id": case_id, "status": "done", "finished": 1.0, "run": "r1", **extra})


def test_provenance_reads_the_predict_manifest(dataset, tmp_path):
    ids = _perfect_predictions(dataset, tmp_path / "pred")
    pred = tmp_path / "pred"
    _record(pred, ids[0])  # an old manifest: no model recorded
    model = evaluate_folder(pred, dataset).summary["provenance"]["model"]
    assert model["name"] is None and "records no model" in model["note"] and model["cases_recorded"] == 1
    options = {"label_scheme": None, "output_label_scheme": "brats2017", "save_probabilities": False}
    for case_id in ids:
        _record(pred, case_id, model={"name": "default", "sha256": "ab" * 32}, options=options)
    model = evaluate_folder(pred, dataset).summary["provenance"]["model"]
    assert (model["name"], model["sha256"], model["options"]) == ("default", "ab" * 32, options)
    assert model["manifest"] == ["manifest.jsonl"] and model["runs"] == ["r1"] and "note" not in model
    _record(pred, ids[1], model={"name": "other", "sha256": "cd" * 32}, options=options)
    model = evaluate_folder(pred, dataset).summary["provenance"]["model"]
    assert model["name"] is None and len(model["models"]) == 2 and "2 different models" in model["note"]
