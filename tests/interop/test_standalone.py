"""Exports run in a fresh process with only numpy and the backend: no torch import for the network call."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from glioseg.artifacts.rundir import load_run

SCRIPT = textwrap.dedent("""
    import sys
    import numpy as np
    from glioseg.interop.runners import make_runner, read_export, stage_graphs

    folder, backend, out = sys.argv[1:4]
    spec = read_export(folder)  # sha256-verified
    stage = spec["stages"]["high"]
    x = np.random.default_rng(0).standard_normal((1, 4, 32, 16, 48)).astype(np.float32)
    logits = make_runner(backend, stage_graphs(spec, folder, "high")[0], threads=1)(x)
    np.save(out, logits)
    print("torch imported" if "torch" in sys.modules else "no torch", stage["activation"], stage["spacing_mm"])
""")


@pytest.mark.parametrize("backend,fmt", [("onnxruntime", "onnx"), ("openvino", "openvino"), ("openvino", "onnx")])
def test_export_runs_without_torch(backend, fmt, tiny_folds, tiny_onnx, tmp_path):
    pytest.importorskip(backend)
    from glioseg.interop.export import export_graphs

    folder = tiny_onnx if fmt == "onnx" else export_graphs(tiny_folds, tmp_path / "ir", fmt, folds=[0])
    out = tmp_path / "logits.npy"
    done = subprocess.run([sys.executable, "-c", SCRIPT, str(folder), backend, str(out)], capture_output=True,
                          text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["no", "torch", "sigmoid", "1.0"]
    x = torch.from_numpy(np.random.default_rng(0).standard_normal((1, 4, 32, 16, 48)).astype(np.float32))
    with torch.inference_mode():
        ref = load_run(tiny_folds / "fold_0").stages["high"].model.eval()(x).numpy()
    np.testing.assert_allclose(np.load(out), ref, rtol=0, atol=1e-4 * max(1.0, float(np.abs(ref).max())))


def test_tampered_export_refused_without_torch(tiny_onnx, tmp_path):
    import shutil

    copy = shutil.copytree(tiny_onnx, tmp_path / "copy")
    (copy / "model.json").write_text((copy / "model.json").read_text().replace('"sigmoid"', '"softmax"'))
    done = subprocess.run([sys.executable, "-c", SCRIPT, str(copy), "onnxruntime", str(tmp_path / "x.npy")],
                          capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode != 0 and "model.json" in done.stderr and "sha256 does not match" in done.stderr
