"""The model shipped inside the package: integrity, tamper refusal, and prediction on real data."""

import json
import shutil
import time

import nibabel as nib
import numpy as np
import pytest

from glioseg.artifacts.bundles import BundleError, default_model_dir, resolve_model, verify_bundle
from glioseg.artifacts.shipping import MAX_WEIGHTS_BYTES


def test_shipped_manifest_matches_weights():
    bundle = default_model_dir()
    manifest = verify_bundle(bundle)
    assert manifest["label_scheme"] == "brats2017"
    assert any(name.endswith(".safetensors") for name in manifest["files"])
    assert len(manifest["training"]["cases"]) >= 19
    weights = sum((bundle / name).stat().st_size for name in manifest["files"] if name.endswith(".safetensors"))
    assert weights <= MAX_WEIGHTS_BYTES  # 100 MB of weights at most (a five-fold ensemble included)
    assert resolve_model(None) == bundle


def test_tampered_shipped_weights_refused(tmp_path):
    from glioseg.inference.predictor import Predictor

    copy = tmp_path / "bundle"
    shutil.copytree(default_model_dir(), copy)
    weights = sorted(copy.rglob("*.safetensors"))[0]
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(BundleError, match=rf"{weights.relative_to(copy)}: sha256 .* does not match the manifest"):
        Predictor.from_run(copy, device="cpu")  # a single-run bundle or a fold ensemble alike


def test_shipped_model_loads_every_stage():
    from glioseg.artifacts.folds import run_folders
    from glioseg.artifacts.rundir import load_run

    manifest = json.loads((default_model_dir() / "manifest.json").read_text())
    for folder in run_folders(default_model_dir()):  # the bundle, or each fold of an ensemble bundle
        bundle = load_run(folder)
        assert set(bundle.stages) == set(manifest["stages"])
        low = bundle.stages["low"]
        assert low.config.model.seg_layer_sum and low.model.n_seg == 3  # summed segmentation layers, as trained
    assert manifest["stages"]["low"]["model"]["seg_layer_sum"] is True


@pytest.mark.realdata
def test_predict_default_model_on_shared_case(shared_brats18, tmp_path):
    from typer.testing import CliRunner

    from glioseg.cli import app

    case = shared_brats18 / "Brats18_2013_2_1"
    start = time.perf_counter()
    result = CliRunner().invoke(app, ["predict", "-i", str(case), "-o", str(tmp_path)])
    seconds = time.perf_counter() - start
    assert result.exit_code == 0, result.output
    out = nib.load(str(tmp_path / "Brats18_2013_2_1.nii.gz"))
    ref = nib.load(str(case / "Brats18_2013_2_1_t1.nii.gz"))
    assert out.shape == ref.shape
    assert np.array_equal(out.affine, ref.affine)
    for key in ("qform_code", "sform_code", "pixdim", "quatern_b", "quatern_c", "quatern_d",
                "qoffset_x", "qoffset_y", "qoffset_z", "srow_x", "srow_y", "srow_z", "dim", "xyzt_units"):
        assert np.array_equal(out.header[key], ref.header[key]), key
    labels = np.asarray(out.dataobj)
    assert out.get_data_dtype() == np.uint8
    assert set(np.unique(labels)) <= {0, 1, 2, 4} and (labels > 0).sum() > 1000
    print(f"predict with the shipped model: {seconds:.1f} s")
    assert seconds < 60
