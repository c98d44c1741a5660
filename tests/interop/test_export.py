"""`export-model --format onnx|torchscript|openvino`: every stage and fold, dynamic shapes, model.json,
sha256 manifest, atomic output; the errors a user can hit."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from glioseg.artifacts.rundir import load_run
from glioseg.cli import app
from glioseg.interop.export import export_graphs, weights_key
from glioseg.interop.runners import ExportError, make_runner, read_export, stage_graphs

runner = CliRunner()
LOGIT_ATOL = 1e-4
"""Tiny fp32 networks: backends agree with torch fp32 to float rounding (relative 1e-4 of the logits)."""
SHAPES = ((1, 4, 32, 32, 32), (2, 4, 16, 24, 40))  # the traced tile, and another batch / anisotropic size


def _torch_logits(tiny_folds: Path, stage: str, fold: int, x: np.ndarray) -> np.ndarray:
    model = load_run(tiny_folds / f"fold_{fold}").stages[stage].model.eval()
    with torch.inference_mode():
        return model(torch.from_numpy(x)).numpy()


def _close(out: np.ndarray, ref: np.ndarray) -> None:
    assert out.shape == ref.shape and out.dtype == np.float32
    np.testing.assert_allclose(out, ref, rtol=0, atol=LOGIT_ATOL * max(1.0, float(np.abs(ref).max())))


def test_onnx_export_has_every_stage_and_fold_and_the_parameters(tiny_folds, tiny_onnx):
    spec = read_export(tiny_onnx)
    assert spec["graph_format"] == "onnx" and spec["cascade"]["order"] == ["low", "high"]
    assert spec["postprocess"]["thresholds"] == [0.4, 0.5, 0.6]
    assert spec["label_scheme"] == "brats2017" and spec["input"]["channels"] == ["t1", "t1ce", "t2", "flair"]
    for name, spacing, window in (("low", 2.0, [32] * 3), ("high", 1.0, [48] * 3)):
        entry = spec["stages"][name]
        assert (entry["spacing_mm"], entry["patch_size"], entry["divisor"]) == (spacing, window, 4)
        assert (entry["target"], entry["activation"]) == ("regions", "sigmoid")
        assert [n["fold"] for n in entry["networks"]] == [0, 1]
        assert entry["preprocessing"]["percentiles"] == [0.5, 99.5] and entry["preprocessing"]["margin"] == 2
    manifest = json.loads((tiny_onnx / "manifest.json").read_text())
    assert set(manifest["files"]) == {"model.json", "low/fold_0.onnx", "low/fold_1.onnx", "high/fold_0.onnx",
                                      "high/fold_1.onnx"}


@pytest.mark.parametrize("shape", SHAPES)
def test_onnx_graphs_match_torch_fp32_on_dynamic_shapes(tiny_folds, tiny_onnx, shape):
    pytest.importorskip("onnxruntime")
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    spec = read_export(tiny_onnx)
    for stage in ("low", "high"):
        for fold, graph in enumerate(stage_graphs(spec, tiny_onnx, stage)):
            _close(make_runner("onnxruntime", graph)(x), _torch_logits(tiny_folds, stage, fold, x))


def test_folds_differ_so_the_ensemble_is_real(tiny_folds, tiny_onnx):
    pytest.importorskip("onnxruntime")
    x = np.random.default_rng(1).standard_normal(SHAPES[0]).astype(np.float32)
    a, b = (make_runner("onnxruntime", g)(x) for g in stage_graphs(read_export(tiny_onnx), tiny_onnx, "low"))
    assert np.abs(a - b).max() > 0.1


def test_openvino_export_matches_torch_fp32(tiny_folds, tmp_path):
    pytest.importorskip("openvino")
    out = export_graphs(tiny_folds, tmp_path / "ov", "openvino", folds=[1])
    spec = read_export(out)
    assert sorted(p.name for p in (out / "low").iterdir()) == ["fold_1.bin", "fold_1.xml"]
    for shape in SHAPES:
        x = np.random.default_rng(2).standard_normal(shape).astype(np.float32)
        _close(make_runner("openvino", stage_graphs(spec, out, "high")[0])(x), _torch_logits(tiny_folds, "high", 1, x))


def test_torchscript_export_matches_torch_on_another_shape(tiny_folds, tmp_path):
    out = export_graphs(tiny_folds / "fold_0", tmp_path / "ts", "torchscript")
    spec = read_export(out)  # verified before loading: TorchScript files hold code
    assert [n["file"] for n in spec["stages"]["low"]["networks"]] == ["low/model.pt"]
    net = torch.jit.load(str(out / "low" / "model.pt"))
    x = np.random.default_rng(3).standard_normal(SHAPES[1]).astype(np.float32)
    with torch.inference_mode():
        _close(net(torch.from_numpy(x)).numpy(), _torch_logits(tiny_folds, "low", 0, x))


# ----------------------------------------------------------------------------- refusals


def test_tampered_graph_is_refused(tiny_onnx, tmp_path):
    copy = Path(shutil.copytree(tiny_onnx, tmp_path / "copy"))
    graph = copy / "high" / "fold_1.onnx"
    data = bytearray(graph.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size, other weights
    graph.write_bytes(bytes(data))
    with pytest.raises(ExportError, match=r"fold_1.onnx: sha256 does not match the manifest"):
        read_export(copy)
    graph.write_bytes(bytes(data[:-10]))
    with pytest.raises(ExportError, match=r"fold_1.onnx: \d+ bytes, the manifest declares \d+"):
        read_export(copy)


def test_unlisted_or_missing_files_refused(tiny_onnx, tmp_path):
    copy = Path(shutil.copytree(tiny_onnx, tmp_path / "copy"))
    (copy / "low" / "extra.onnx").write_bytes(b"x")
    with pytest.raises(ExportError, match=r"extra\.onnx: not listed in the manifest"):
        read_export(copy)
    (copy / "low" / "extra.onnx").unlink()
    (copy / "low" / "fold_0.onnx").unlink()
    with pytest.raises(ExportError, match=r"fold_0\.onnx: listed in the manifest but missing"):
        read_export(copy)
    with pytest.raises(ExportError, match="not a glioseg export folder"):
        read_export(tmp_path)


def test_existing_out_refused_and_overwrite_replaces(tiny_folds, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(ExportError, match="already exists; choose a new folder or pass --overwrite"):
        export_graphs(tiny_folds / "fold_0", out, "onnx")
    assert (out / "keep.txt").read_text() == "mine"
    export_graphs(tiny_folds / "fold_0", out, "onnx", overwrite=True)
    assert not (out / "keep.txt").exists() and read_export(out)["stages"]["low"]["networks"][0]["fold"] is None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no temporary or old folder left


def test_failed_export_leaves_nothing(tiny_folds, tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("exporter crashed")

    monkeypatch.setattr("glioseg.interop.export.export_network", broken)
    with pytest.raises(RuntimeError, match="exporter crashed"):
        export_graphs(tiny_folds, tmp_path / "out", "onnx")
    assert list(tmp_path.iterdir()) == []


def test_export_never_writes_into_the_model_folder(tiny_folds, tmp_path):
    model = Path(shutil.copytree(tiny_folds, tmp_path / "model"))
    for out in (model, model / "exported", tmp_path):
        with pytest.raises(ExportError, match="inside the model folder"):
            export_graphs(model, out, "onnx", overwrite=True)
    assert (model / "fold_0" / "low" / "model.safetensors").is_file()


def test_run_preprocessed_otherwise_is_not_exported(tiny_folds, tmp_path):
    from glioseg.artifacts.preprocess_record import PreprocessingMismatch

    run = Path(shutil.copytree(tiny_folds / "fold_0", tmp_path / "run"))
    info = json.loads((run / "run.json").read_text())
    info["normalisation"]["percentiles"] = [1.0, 99.0]
    (run / "run.json").write_text(json.dumps(info))
    with pytest.raises(PreprocessingMismatch, match="percentiles"):
        export_graphs(run, tmp_path / "out", "onnx")
    assert not (tmp_path / "out").exists()


def test_weights_key_follows_the_weights(tiny_folds, tmp_path):
    model = Path(shutil.copytree(tiny_folds, tmp_path / "model"))
    key = weights_key(model)
    assert key == weights_key(tiny_folds) and len(key) == 24
    weights = model / "fold_1" / "high" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-1] + b"\x01")
    assert weights_key(model) != key


# ----------------------------------------------------------------------------- CLI


def test_cli_unknown_format_is_one_line(tiny_folds, tmp_path, one_line_error):
    result = runner.invoke(app, ["export-model", str(tiny_folds), str(tmp_path / "o"), "--format", "tflite"])
    one_line_error(result, "--format", "tflite", "onnx")
    assert not (tmp_path / "o").exists()


def test_cli_existing_out_is_one_line(tiny_folds, tmp_path, one_line_error):
    (tmp_path / "o").mkdir()
    one_line_error(runner.invoke(app, ["export-model", str(tiny_folds), str(tmp_path / "o"), "--format", "onnx"]),
                   "already exists", "--overwrite")


def test_cli_missing_backend_package_is_one_line(tiny_folds, tmp_path, monkeypatch, one_line_error):
    monkeypatch.setitem(sys.modules, "openvino", None)  # import openvino now raises ImportError
    result = runner.invoke(app, ["export-model", str(tiny_folds), str(tmp_path / "o"), "--format", "openvino"])
    one_line_error(result, "openvino", "pip install 'glioseg[openvino]'")
    assert not (tmp_path / "o").exists()


def test_cli_export_onnx_of_a_fold_run(tiny_folds, tmp_path):
    pytest.importorskip("onnx")
    result = runner.invoke(app, ["export-model", str(tiny_folds / "fold_1"), str(tmp_path / "o"), "--format", "onnx"])
    assert result.exit_code == 0, result.output
    assert "--backend onnxruntime" in result.stdout
    assert set(read_export(tmp_path / "o")["stages"]) == {"low", "high"}


def test_cli_zip_stays_the_default_and_refuses_an_existing_zip(tmp_path, one_line_error):
    result = runner.invoke(app, ["export-model", "default", str(tmp_path / "m.zip")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "m.zip").stat().st_size > 1_000_000
    one_line_error(runner.invoke(app, ["export-model", "default", str(tmp_path / "m.zip")]), "already exists")
