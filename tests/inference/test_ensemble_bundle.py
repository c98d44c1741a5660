"""Fold-ensemble bundles: made from fold_<k> runs, loaded as the ensemble of the folds, sha256-checked."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from glioseg.artifacts.bundles import MANIFEST, BundleError
from glioseg.artifacts.rundir import build_stage_model
from glioseg.artifacts.shipping import MAX_WEIGHTS_BYTES, make_bundle
from glioseg.artifacts.weights import save_weights
from glioseg.config import ModelConfig, StageConfig, TrainConfig, save_config
from glioseg.data.layouts import find_cases
from glioseg.data.nifti import read_case
from glioseg.inference.postprocess import PostprocessConfig, save_postprocess
from glioseg.inference.predictor import Predictor

NORMALISATION = {"method": "z-score inside the brain after percentile clipping", "version": 1, "target_spacing": 2.0,
                 "requested_label_scheme": None, "percentiles": [0.5, 99.5], "margin": 2}
IDS = [f"case{i}" for i in range(6)]


def _fold_run(run: Path, fold: int, base_filters: int = 4) -> Path:
    stage = StageConfig(name="low", spacing_mm=2.0, patch_size=(16, 16, 16), val_window=(32, 32, 32),
                        model=ModelConfig(base_filters=base_filters, depth=3, dropout=0.3))
    run.mkdir(parents=True)
    save_config(TrainConfig(preset="test", stages=(stage,), device="cpu" if fold % 2 else "auto"), run / "config.yaml")
    val = IDS[2 * fold:2 * fold + 2]
    info = {"format": "glioseg-run/1", "label_scheme": "brats2017", "normalisation": NORMALISATION,
            "preprocessed": "/local/pre", "stage_order": ["low"],
            "split": {"fold": fold, "train": [c for c in IDS if c not in val], "val": val, "splits_file": "/x"},
            "versions": {"glioseg": "0.1.0"},
            "stages": {"low": {"spacing_mm": 2.0, "train_seconds": 10.0 + fold, "epochs_done": 3}}}
    (run / "run.json").write_text(json.dumps(info))
    torch.manual_seed(fold)
    model = build_stage_model(stage)
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(3.0)
    save_weights(model, run / "low" / "model.safetensors", {"stage": "low"})
    return run


@pytest.fixture(scope="module")
def cv_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cv") / "cv"
    for k in range(3):
        _fold_run(root / f"fold_{k}", k)
    save_postprocess(PostprocessConfig((0.5, 0.5, 0.4), 100.0, (50.0, 0.0, 0.0)), root)
    return root


@pytest.fixture(scope="module")
def ensemble_bundle(cv_root, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("b") / "ensemble"
    make_bundle(cv_root, out, {"name": "ens", "provenance": {"command": "glioseg train --all-folds ..."}})
    return out


def test_ensemble_bundle_round_trip_equals_the_in_memory_ensemble(cv_root, ensemble_bundle, synthetic_dataset):
    shipped = Predictor.from_run(ensemble_bundle, device="cpu", precision="fp32")
    memory = Predictor.from_run(cv_root, device="cpu", precision="fp32")
    assert len(shipped.stages["low"].models) == len(memory.stages["low"].models) == 3
    with torch.no_grad():  # the bundle stores float16: the same rounding in memory
        for model in memory.stages["low"].models:
            for p in model.parameters():
                p.copy_(p.half().float())
    assert shipped.postprocess == memory.postprocess == PostprocessConfig((0.5, 0.5, 0.4), 100.0, (50.0, 0.0, 0.0))
    for files in find_cases(synthetic_dataset):
        case = read_case(files)
        a, b = shipped.predict_case(case, True), memory.predict_case(case, True)
        np.testing.assert_array_equal(a.probabilities, b.probabilities)
        np.testing.assert_array_equal(a.labels, b.labels)


def test_ensemble_manifest_and_provenance(cv_root, ensemble_bundle):
    from safetensors.torch import load_file

    manifest = json.loads((ensemble_bundle / MANIFEST).read_text())
    assert manifest["ensemble"] == {"members": ["fold_0", "fold_1", "fold_2"], "folds": [0, 1, 2]}
    assert set(manifest["files"]) == {"postprocess.json", *(f"fold_{k}/{n}" for k in range(3)
                                      for n in ("config.yaml", "run.json", "low/model.safetensors"))}
    prov = manifest["provenance"]
    assert prov["cases"] == IDS and prov["n_cases"] == 6 and prov["command"] == "glioseg train --all-folds ..."
    runs = prov["runs"]
    assert [r["val_cases"] for r in runs] == [IDS[0:2], IDS[2:4], IDS[4:6]]
    assert [r["train_seconds"] for r in runs] == [{"low": 10.0}, {"low": 11.0}, {"low": 12.0}]
    assert all(r["started"] is None and r["finished"] is None and r["hardware"] is None and r["command"] is None
               for r in runs)  # not recorded by these runs: null, not invented
    assert len({r["recipe_sha256"] for r in runs}) == 1  # one recipe (device differs: a runtime knob)
    assert len({r["config_sha256"] for r in runs}) == 2
    assert prov["weights_bytes"] == sum(p.stat().st_size for p in ensemble_bundle.rglob("*.safetensors"))
    assert prov["weights_bytes"] <= MAX_WEIGHTS_BYTES
    weights = load_file(str(ensemble_bundle / "fold_1" / "low" / "model.safetensors"))
    assert all(v.dtype == torch.float16 for v in weights.values() if v.is_floating_point())
    info = json.loads((ensemble_bundle / "fold_0" / "run.json").read_text())
    assert "preprocessed" not in info and "splits_file" not in info["split"]


def _flip_last_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))


def test_tampered_member_refused_naming_the_file(ensemble_bundle, tmp_path, synthetic_dataset):
    bundle = tmp_path / "b"
    shutil.copytree(ensemble_bundle, bundle)
    _flip_last_byte(bundle / "fold_1" / "low" / "model.safetensors")
    pattern = rf"{bundle}/fold_1/low/model\.safetensors: sha256 .* does not match the manifest"
    with pytest.raises(BundleError, match=pattern):
        Predictor.from_run(bundle, device="cpu")
    with pytest.raises(BundleError, match=pattern):  # one fold of the bundle is checked too
        Predictor.from_run(bundle / "fold_1", device="cpu")
    result = CliRunner().invoke(__import__("glioseg.cli", fromlist=["app"]).app,
                                ["predict", "-i", str(synthetic_dataset), "-o", str(tmp_path / "o"), "-m", str(bundle)])
    assert result.exit_code == 1 and "fold_1/low/model.safetensors: sha256" in " ".join(result.output.split())


def test_unlisted_or_edited_member_refused(ensemble_bundle, tmp_path):
    bundle = tmp_path / "b"
    shutil.copytree(ensemble_bundle, bundle)
    (bundle / "fold_2" / "high").mkdir()
    (bundle / "fold_2" / "high" / "model.safetensors").write_bytes(b"x")
    with pytest.raises(BundleError, match=r"fold_2/high/model\.safetensors: file not listed"):
        Predictor.from_run(bundle, device="cpu")
    shutil.rmtree(bundle / "fold_2" / "high")
    info = json.loads((bundle / "fold_0" / "run.json").read_text())
    info["normalisation"]["percentiles"] = [1.0, 99.0]
    (bundle / "fold_0" / "run.json").write_text(json.dumps(info))
    with pytest.raises(BundleError, match=r"fold_0/run\.json: .*(bytes|sha256)"):
        Predictor.from_run(bundle, device="cpu")


def test_size_limit_refused_before_anything_is_written(cv_root, tmp_path):
    out = tmp_path / "parent" / "big"
    with pytest.raises(BundleError, match=r"weights take \d+\.\d+ MB, over the 0\.01 MB limit"):
        make_bundle(cv_root, out, {}, max_weights_bytes=10_000)
    assert not out.exists() and not any((tmp_path / "parent").iterdir())  # no partial bundle, no temp folder


def test_folds_subset_and_recipe_mismatch(cv_root, tmp_path):
    manifest = make_bundle(cv_root, tmp_path / "two", {}, folds=[0, 2])
    assert manifest["ensemble"]["folds"] == [0, 2]
    assert len(Predictor.from_run(tmp_path / "two", device="cpu").stages["low"].models) == 2
    with pytest.raises(BundleError, match=r"folds \[5\] missing"):
        make_bundle(cv_root, tmp_path / "x", {}, folds=[0, 5])
    mixed = tmp_path / "mixed"
    shutil.copytree(cv_root, mixed)
    shutil.rmtree(mixed / "fold_2")
    _fold_run(mixed / "fold_2", 2, base_filters=8)
    with pytest.raises(BundleError, match=r"fold_2/config\.yaml: another recipe"):
        make_bundle(mixed, tmp_path / "y", {})


def _report(folder: Path, cases: list[str]) -> Path:
    stats = {"mean": 0.8, "std": 0.1, "median": 0.8, "min": 0.6, "max": 0.9}
    summary = {"n_cases": len(cases), "conventions": "BraTS",
               "summary": {r: {m: stats for m in ("dice", "hd95", "sensitivity", "specificity")}
                           for r in ("WT", "TC", "ET")}}
    folder.mkdir(parents=True)
    (folder / "summary.json").write_text(json.dumps(summary))
    (folder / "cases.csv").write_text("case_id,WT\n" + "".join(f"{c},0.8\n" for c in cases))
    return folder


def test_ship_model_script_ships_the_fold_ensemble(cv_root, tmp_path):
    import subprocess
    import sys

    script = Path(__file__).resolve().parents[2] / "scripts" / "ship_model.py"
    out = tmp_path / "default"
    args = [sys.executable, str(script), str(cv_root), str(_report(tmp_path / "oof", IDS)), "--out", str(out),
            "--train-command", "glioseg train --all-folds X"]
    done = subprocess.run(args, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    manifest = json.loads((out / MANIFEST).read_text())
    assert manifest["validation"]["of"].startswith("out-of-fold: each of the 6 cases")
    assert manifest["training"]["cases"] == IDS and manifest["training"]["hardware"] is None
    assert manifest["training"]["command"] == manifest["provenance"]["command"] == "glioseg train --all-folds X"
    assert manifest["description"].endswith("ensemble of 3 folds")
    assert len(Predictor.from_run(out, device="cpu").stages["low"].models) == 3
    bad = subprocess.run([*args[:3], str(_report(tmp_path / "one_fold", IDS[:2])), "--out", str(tmp_path / "x")],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 1 and "not exactly the folds' (disjoint) validation cases" in bad.stderr
    assert not (tmp_path / "x").exists()


def test_ensemble_bundle_export_import_round_trip(ensemble_bundle, tmp_path, synthetic_dataset):
    from glioseg.artifacts.install import export_model, import_model

    installed = import_model(export_model(ensemble_bundle, tmp_path / "ens.zip"), tmp_path / "home")
    assert installed == tmp_path / "home" / "ens"
    case = read_case(find_cases(synthetic_dataset)[0])
    a = Predictor.from_run(installed, device="cpu", precision="fp32").predict_case(case, True)
    b = Predictor.from_run(ensemble_bundle, device="cpu", precision="fp32").predict_case(case, True)
    np.testing.assert_array_equal(a.probabilities, b.probabilities)
