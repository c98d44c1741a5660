"""Optional int8: NNCF post-training quantisation of an OpenVINO export, calibrated on the tiles the networks see."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
from typer.testing import CliRunner

from glioseg.cli import app
from glioseg.data.layouts import find_cases
from glioseg.data.nifti import read_case
from glioseg.interop.backends import cached_export, load_backend_predictor
from glioseg.interop.runners import ExportError, read_export

runner = CliRunner()


@pytest.fixture(scope="module")
def cases(make_synthetic_dataset):
    dataset = make_synthetic_dataset(layout="brats2017", n_cases=2, shape=(48, 48, 48))
    return [read_case(f) for f in find_cases(dataset)]


def test_int8_export_is_quantised_recorded_and_close(tiny_folds, graph_cache, cases, tmp_path):
    pytest.importorskip("nncf")
    from glioseg.interop.quantize import quantize_export

    fp32 = cached_export(tiny_folds, "openvino", graph_cache)
    out = quantize_export(fp32, tmp_path / "int8", cases[:1])
    spec = read_export(out)  # manifest written and verified
    assert spec["quantization"]["calibration_cases"] == [cases[0].case_id]
    assert min(spec["quantization"]["calibration_tiles"].values()) >= 1 and len(spec["stages"]) == 2
    xml = (out / "low" / "fold_0.xml").read_text()
    assert "FakeQuantize" in xml and "FakeQuantize" not in (fp32 / "low" / "fold_0.xml").read_text()
    a, b = (load_backend_predictor(folder, "openvino", cascade=False).predict_case(cases[1], return_probabilities=True)
            for folder in (fp32, out))
    # random 4-filter networks quantise coarsely (measured: mean |dp| 0.06); the shipped model's Dice is
    # checked on real cases in test_int8_shipped_model_keeps_dice
    assert np.abs(a.probabilities - b.probabilities).mean() < 0.1
    assert (a.labels == b.labels).mean() >= 0.8, (a.labels == b.labels).mean()


def test_int8_refusals(tiny_onnx, tiny_folds, graph_cache, cases, tmp_path, monkeypatch):
    pytest.importorskip("openvino")
    from glioseg.interop.quantize import quantize_export

    with pytest.raises(ExportError, match="needs an export made with --format openvino"):
        quantize_export(tiny_onnx, tmp_path / "a", cases)
    fp32 = cached_export(tiny_folds, "openvino", graph_cache)
    with pytest.raises(ExportError, match="no calibration case"):
        quantize_export(fp32, tmp_path / "b", [])
    monkeypatch.setitem(sys.modules, "nncf", None)
    with pytest.raises(ExportError, match=r"'nncf' is not installed.*pip install 'glioseg\[int8\]'"):
        quantize_export(fp32, tmp_path / "c", cases)
    assert list(tmp_path.iterdir()) == []


def test_cli_int8_needs_openvino_format(tiny_folds, synthetic_dataset, tmp_path):
    result = runner.invoke(app, ["export-model", str(tiny_folds), str(tmp_path / "o"), "--format", "onnx",
                                 "--int8-calibration", str(synthetic_dataset)])
    assert result.exit_code == 1 and len(result.stderr.strip().splitlines()) == 1
    assert "--int8-calibration quantises OpenVINO graphs; use --format openvino" in result.stderr
    assert not (tmp_path / "o").exists()


def test_cli_int8_export(tiny_folds, synthetic_dataset, tmp_path):
    pytest.importorskip("nncf")
    result = runner.invoke(app, ["export-model", str(tiny_folds / "fold_0"), str(tmp_path / "o"), "--format",
                                 "openvino", "--int8-calibration", str(synthetic_dataset), "--calibration-cases", "1"])
    assert result.exit_code == 0, result.output
    assert len(json.loads((tmp_path / "o" / "model.json").read_text())["quantization"]["calibration_cases"]) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o"]  # the fp32 intermediate is gone


@pytest.mark.realdata
@pytest.mark.slow
def test_int8_shipped_model_keeps_dice(shared_brats18, tmp_path):
    """Calibrated on 4 training cases, scored on the 7 cases of brats18_extra (never trained on): mean Dice
    within 0.005 of OpenVINO fp32 in every region (the issue's bar for keeping int8)."""
    pytest.importorskip("nncf")
    from glioseg.artifacts.bundles import default_model_dir
    from glioseg.interop.quantize import quantize_export
    from glioseg.utils import region_dice

    extra = shared_brats18.parent / "brats18_extra"
    if not extra.is_dir():
        pytest.skip(f"no held-out cases at {extra}")
    fp32 = cached_export(default_model_dir(), "openvino", tmp_path / "cache")
    int8 = quantize_export(fp32, tmp_path / "int8", [read_case(f) for f in find_cases(shared_brats18)[:4]])
    held_out = [read_case(f) for f in find_cases(extra)]
    dice = {}
    for name, folder in (("fp32", fp32), ("int8", int8)):
        predictor = load_backend_predictor(folder, "openvino")
        dice[name] = np.mean([region_dice(predictor.predict_case(c).labels, c.label) for c in held_out], axis=0)
    print(f"held-out mean Dice WT/TC/ET fp32 {np.round(dice['fp32'], 4)} int8 {np.round(dice['int8'], 4)}")
    assert np.all(dice["fp32"] - dice["int8"] < 0.005), dice
