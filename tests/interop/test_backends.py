"""`predict --backend onnxruntime|openvino`: the same Predictor with the network call swapped; parity with
torch fp32 on synthetic cases (cascade, two folds, mirroring), the graph cache, and the refusals."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from typer.testing import CliRunner

from glioseg.cli import app
from glioseg.data.layouts import find_cases
from glioseg.data.nifti import read_case
from glioseg.interop.backends import BackendNetwork, cached_export, load_backend_predictor
from glioseg.interop.runners import ExportError

runner = CliRunner()
PROB_ATOL = 2e-3
"""fp32 everywhere, but the kernels sum in another order: with the tiny networks' large (x3) weights and
instance norms over a few voxels that moves probabilities by up to ~5e-4 (measured)."""
GRAPH_BACKENDS = ("onnxruntime", "openvino")


@pytest.fixture(scope="module")
def case(make_synthetic_dataset):
    return read_case(find_cases(make_synthetic_dataset(layout="brats2017", n_cases=1, shape=(48, 48, 48)))[0])


@pytest.mark.parametrize("backend", GRAPH_BACKENDS)
def test_backend_predictions_match_torch_fp32(backend, tiny_folds, case, graph_cache):
    pytest.importorskip(backend)
    options = {"tta": 2, "cascade": True}
    ref = load_backend_predictor(tiny_folds, "torch", precision="fp32", device="cpu", **options)
    got = load_backend_predictor(tiny_folds, backend, cache_dir=graph_cache, **options)
    assert all(isinstance(m, BackendNetwork) for s in got.stages.values() for m in s.models)
    assert [len(s.models) for s in got.stages.values()] == [2, 2]  # both folds of both stages
    assert got.postprocess == ref.postprocess  # the tuned thresholds travel in model.json
    a, b = (p.predict_case(case, return_probabilities=True) for p in (ref, got))
    assert a.stages == b.stages == ["low", "high"]
    np.testing.assert_allclose(b.probabilities, a.probabilities, rtol=0, atol=PROB_ATOL)
    assert (a.labels == b.labels).mean() >= 0.999 and len(np.unique(a.labels)) > 1


def test_folds_select_the_networks(tiny_folds, case, graph_cache):
    pytest.importorskip("onnxruntime")
    one = load_backend_predictor(tiny_folds, "onnxruntime", folds=[1], cache_dir=graph_cache, cascade=False)
    ref = load_backend_predictor(tiny_folds, "torch", folds=[1], precision="fp32", device="cpu", cascade=False)
    assert len(one.stages["high"].models) == 1
    a, b = (p.predict_case(case, return_probabilities=True).probabilities for p in (ref, one))
    np.testing.assert_allclose(b, a, rtol=0, atol=PROB_ATOL)
    with pytest.raises(ExportError, match="no network of folds"):
        load_backend_predictor(tiny_folds, "onnxruntime", folds=[7], cache_dir=graph_cache)


def test_graphs_are_exported_once_and_cached_by_sha256(tiny_folds, tiny_onnx, graph_cache, tmp_path,
                                                       monkeypatch):
    pytest.importorskip("onnxruntime")
    entry = tiny_onnx  # exported by the first cached_export of the session
    assert entry.parent == graph_cache and entry.name.endswith("-onnx")

    def no_export(*args, **kwargs):
        raise AssertionError("exported again")

    monkeypatch.setattr("glioseg.interop.backends.export_graphs", no_export)
    assert cached_export(tiny_folds, "onnxruntime", graph_cache) == entry
    load_backend_predictor(tiny_folds, "onnxruntime", cache_dir=graph_cache)
    assert [p.name for p in graph_cache.iterdir() if p.name.endswith("-onnx")] == [entry.name]
    assert not [p for p in graph_cache.iterdir() if p.name.startswith(".")]  # no temporary folder left
    model = Path(shutil.copytree(tiny_folds, tmp_path / "other" / "model"))
    weights = model / "fold_0" / "low" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-1] + b"\x02")  # other weights: another entry
    with pytest.raises(AssertionError, match="exported again"):
        cached_export(model, "onnxruntime", tmp_path)


def test_cache_entry_of_an_older_exporter_is_rebuilt(tiny_folds, tiny_onnx, tmp_path):
    import json

    entry = Path(shutil.copytree(tiny_onnx, tmp_path / tiny_onnx.name))
    spec = json.loads((entry / "model.json").read_text())
    spec.pop("exporter_version")
    (entry / "model.json").write_text(json.dumps(spec))
    assert cached_export(tiny_folds, "onnxruntime", tmp_path) == entry
    assert "exporter_version" in json.loads((entry / "model.json").read_text())  # re-exported, verified again
    assert len(load_backend_predictor(tiny_folds, "onnxruntime", cache_dir=tmp_path).stages["low"].models) == 2


def test_tampered_cache_entry_is_refused(tiny_folds, tiny_onnx, tmp_path):
    pytest.importorskip("onnxruntime")
    entry = Path(shutil.copytree(tiny_onnx, tmp_path / tiny_onnx.name))
    graph = entry / "low" / "fold_0.onnx"
    data = bytearray(graph.read_bytes())
    data[len(data) // 2] ^= 0x01
    graph.write_bytes(bytes(data))
    with pytest.raises(ExportError, match=r"fold_0\.onnx: sha256 does not match"):
        load_backend_predictor(tiny_folds, "onnxruntime", cache_dir=tmp_path)


def test_export_folder_predicts_directly_but_not_with_torch(tiny_onnx, case):
    pytest.importorskip("onnxruntime")
    p = load_backend_predictor(tiny_onnx, "onnxruntime", cascade=False)
    assert p.predict_case(case).labels.shape == case.label.shape
    with pytest.raises(ExportError, match="an exported model; predict with --backend onnxruntime or openvino"):
        load_backend_predictor(tiny_onnx, "torch")


def test_openvino_reads_onnx_exports_but_onnxruntime_no_openvino_ir(tiny_folds, tiny_onnx, graph_cache):
    pytest.importorskip("openvino")
    assert len(load_backend_predictor(tiny_onnx, "openvino").stages["low"].models) == 2
    ir = cached_export(tiny_folds, "openvino", graph_cache)
    assert ir.name.endswith("-openvino") and (ir / "low" / "fold_0.xml").is_file()
    with pytest.raises(ExportError, match="openvino graphs cannot run on --backend onnxruntime"):
        load_backend_predictor(ir, "onnxruntime")


def test_openvino_bf16_is_as_close_as_torch_bf16_and_onnxruntime_refuses_it(tiny_folds, tiny_onnx, case,
                                                                              graph_cache):
    pytest.importorskip("openvino")
    runs = {name: load_backend_predictor(tiny_folds, backend, precision=precision, device="cpu", cascade=False,
                                         cache_dir=graph_cache)
            for name, backend, precision in (("fp32", "torch", "fp32"), ("torch-bf16", "torch", "bf16"),
                                             ("openvino-bf16", "openvino", "bf16"))}
    assert runs["openvino-bf16"].tile_predictors["high"].precision == "fp32"  # no torch autocast around the graph
    out = {name: p.predict_case(case, return_probabilities=True) for name, p in runs.items()}
    error = {name: float(np.abs(out[name].probabilities - out["fp32"].probabilities).mean()) for name in out}
    agree = {name: float((out[name].labels == out["fp32"].labels).mean()) for name in out}
    assert error["openvino-bf16"] <= 2 * error["torch-bf16"] + 1e-4, error  # the yardstick: torch's own bf16
    assert agree["openvino-bf16"] >= agree["torch-bf16"] - 0.005, agree
    with pytest.raises(ExportError, match="--backend onnxruntime runs fp32, not bf16"):
        load_backend_predictor(tiny_onnx, "onnxruntime", precision="bf16")


def test_mc_dropout_and_unknown_backend_refused(tiny_folds, tmp_path):
    with pytest.raises(ExportError, match="MC dropout needs the torch networks"):
        load_backend_predictor(tiny_folds, "onnxruntime", cache_dir=tmp_path, mc_samples=2)
    with pytest.raises(ExportError, match=r"unknown backend 'tensorrt'; choose one of \['torch'"):
        load_backend_predictor(tiny_folds, "tensorrt", cache_dir=tmp_path)


# ----------------------------------------------------------------------------- CLI


@pytest.fixture()
def no_model(monkeypatch):
    def load(*args, **kwargs):
        raise AssertionError("the model was loaded before the backend was checked")

    monkeypatch.setattr("glioseg.cli.predict._load_predictor", load)


@pytest.mark.parametrize("flags,words", [
    (["--backend", "tensorrt"], ["--backend", "tensorrt", "onnxruntime"]),
    (["--backend", "onnxruntime", "--device", "cuda"], ["runs on the CPU", "--device cuda"]),
    (["--backend", "openvino", "--mc-dropout", "2"], ["--mc-dropout", "--backend torch"]),
    (["--backend", "onnxruntime", "--precision", "bf16"], ["--backend onnxruntime runs fp32", "not bf16"]),
    (["--backend", "openvino", "--precision", "fp16"], ["--backend openvino runs fp32 or bf16", "not fp16"]),
])
def test_cli_backend_options_checked_before_loading(flags, words, synthetic_dataset, tmp_path, no_model,
                                                    one_line_error):
    one_line_error(runner.invoke(app, ["predict", "-i", str(synthetic_dataset), "-o", str(tmp_path / "o"), *flags]),
                   *words)


@pytest.mark.parametrize("backend,extra", [("onnxruntime", "onnx"), ("openvino", "openvino")])
def test_cli_missing_backend_package_is_one_line(backend, extra, synthetic_dataset, tmp_path, monkeypatch, no_model,
                                                 one_line_error):
    monkeypatch.setitem(sys.modules, backend, None)  # simulate an uninstalled package
    result = runner.invoke(app, ["predict", "-i", str(synthetic_dataset), "-o", str(tmp_path / "o"),
                                 "--backend", backend])
    one_line_error(result, f"--backend {backend}", f"pip install 'glioseg[{extra}]'", "--backend torch")


def test_cli_predict_onnxruntime_writes_the_torch_labels(tiny_folds, tiny_onnx, graph_cache, make_synthetic_dataset,
                                                         tmp_path):
    pytest.importorskip("onnxruntime")
    dataset = make_synthetic_dataset(layout="brats2017", n_cases=1, shape=(48, 48, 48))
    case_id = find_cases(dataset)[0].case_id
    labels = []
    for name, backend, model, flags in (
            ("torch", "torch", tiny_folds, ["--precision", "fp32", "--device", "cpu"]),
            ("onnxruntime", "onnxruntime", tiny_folds, ["--graph-cache", str(graph_cache)]),
            ("exported", "onnxruntime", tiny_onnx, [])):  # an export-model folder given to -m
        result = runner.invoke(app, ["predict", "-i", str(dataset), "-o", str(tmp_path / name), "-m", str(model),
                                     "--backend", backend, "--threads", "1", *flags])
        assert result.exit_code == 0, result.output
        labels.append(np.asarray(nib.load(tmp_path / name / f"{case_id}.nii.gz").dataobj))
    assert (labels[0] == labels[1]).mean() >= 0.999 and len(np.unique(labels[0])) > 1
    np.testing.assert_array_equal(labels[1], labels[2])
    assert [p for p in graph_cache.iterdir() if p.name.endswith("-onnx")] == [tiny_onnx]  # the cached graphs
