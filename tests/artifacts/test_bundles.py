import json
import zipfile

import pytest

from glioseg.artifacts.bundles import MANIFEST, BundleError, resolve_model, verify_bundle, write_manifest
from glioseg.artifacts.install import export_model, import_model


@pytest.fixture()
def bundle(tmp_path):
    import torch
    from safetensors.torch import save_file

    root = tmp_path / "bundle"
    (root / "low").mkdir(parents=True)
    save_file({"w": torch.arange(6, dtype=torch.float32)}, str(root / "low" / "model.safetensors"))
    (root / "run.json").write_text(json.dumps({"stages": ["low"]}))
    (root / "config.yaml").write_text("a: 1\n")
    write_manifest(root, {"name": "demo"})
    return root


def test_verify_ok(bundle):
    manifest = verify_bundle(bundle)
    assert set(manifest["files"]) == {"low/model.safetensors", "run.json", "config.yaml"}
    assert manifest["name"] == "demo"


def test_tampered_file_refused(bundle):
    weights = bundle / "low" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF  # same size, other content
    weights.write_bytes(bytes(data))
    with pytest.raises(BundleError, match=r"model.safetensors: sha256 .* does not match"):
        verify_bundle(bundle)


def test_manifest_declares_sizes_and_they_are_checked(bundle):
    manifest = json.loads((bundle / MANIFEST).read_text())
    weights = bundle / "low" / "model.safetensors"
    assert manifest["sizes"] == {name: (bundle / name).stat().st_size for name in manifest["files"]}
    weights.write_bytes(weights.read_bytes() + b"x")
    with pytest.raises(BundleError, match=r"model.safetensors: \d+ bytes, the manifest declares \d+"):
        verify_bundle(bundle)


def test_missing_and_unlisted_files_refused(bundle):
    (bundle / "extra.safetensors").write_bytes(b"x")
    with pytest.raises(BundleError, match="not listed"):
        verify_bundle(bundle)
    (bundle / "extra.safetensors").unlink()
    (bundle / "config.yaml").unlink()
    with pytest.raises(BundleError, match="missing"):
        verify_bundle(bundle)


def test_no_manifest(tmp_path):
    with pytest.raises(BundleError, match="not a glioseg model bundle"):
        verify_bundle(tmp_path)


def test_export_import_round_trip(bundle, tmp_path):
    zip_path = export_model(bundle, tmp_path / "demo.zip")
    installed = import_model(zip_path, tmp_path / "home")
    assert installed == tmp_path / "home" / "demo"
    assert verify_bundle(installed)["files"] == verify_bundle(bundle)["files"]
    with pytest.raises(BundleError, match="already installed"):
        import_model(zip_path, tmp_path / "home")
    assert import_model(zip_path, tmp_path / "home", overwrite=True) == installed
    assert resolve_model("demo", tmp_path / "home") == installed


def _zip_with(tmp_path, bundle, name, data=b"x"):
    path = tmp_path / "evil.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.write(bundle / MANIFEST, MANIFEST)
        zf.writestr(name, data)
    return path


@pytest.mark.parametrize("name", ["../escape.json", "/abs/path.json", "low/model.pkl", "a/../../b.json"])
def test_unsafe_members_refused(bundle, tmp_path, name):
    with pytest.raises(BundleError, match=r"unsafe path|not allowed"):
        import_model(_zip_with(tmp_path, bundle, name), tmp_path / "home")
    assert not (tmp_path / "escape.json").exists()
    assert not any((tmp_path / "home").iterdir())


def test_symlink_member_refused(bundle, tmp_path):
    path = tmp_path / "link.zip"
    with zipfile.ZipFile(path, "w") as zf:
        info = zipfile.ZipInfo("run.json")
        info.external_attr = (0o120777 << 16)
        zf.writestr(info, "/etc/passwd")
    with pytest.raises(BundleError, match="symbolic link"):
        import_model(path, tmp_path / "home")


def test_tampered_zip_refused(bundle, tmp_path):
    path = tmp_path / "tampered.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.write(bundle / MANIFEST, MANIFEST)
        zf.writestr("run.json", "{}")
        zf.writestr("config.yaml", "a: 1\n")
        zf.writestr("low/model.safetensors", b"other")
    with pytest.raises(BundleError, match=r"does not match|bytes but the manifest declares"):
        import_model(path, tmp_path / "home")
    assert not (tmp_path / "home" / "demo").exists()


def test_not_a_zip(tmp_path):
    bad = tmp_path / "x.zip"
    bad.write_text("hello")
    with pytest.raises(BundleError, match="not a zip"):
        import_model(bad, tmp_path / "home")


def test_resolve_missing(tmp_path):
    with pytest.raises(BundleError, match="no such folder"):
        resolve_model("nope", tmp_path)


def test_cli_import_export(bundle, tmp_path):
    from typer.testing import CliRunner

    from glioseg.cli import app

    runner = CliRunner()
    zip_path = tmp_path / "b.zip"
    result = runner.invoke(app, ["export-model", str(bundle), str(zip_path)])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["import-model", str(zip_path), "--models-home", str(tmp_path / "h")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "h" / "demo" / MANIFEST).is_file()
    result = runner.invoke(app, ["import-model", str(zip_path), "--models-home", str(tmp_path / "h")])
    assert result.exit_code == 1 and "already installed" in result.output


def _fake_run(tmp_path):
    import torch
    from safetensors.torch import save_file

    run = tmp_path / "run"
    (run / "low").mkdir(parents=True)
    from glioseg.config import StageConfig, TrainConfig, save_config

    save_config(TrainConfig(preset="cpu", stages=(StageConfig(name="low", spacing_mm=2.0),)), run / "config.yaml")
    normalisation = {"method": "z", "version": 1, "target_spacing": 2.0, "percentiles": [0.5, 99.5], "margin": 2}
    info = {"format": "glioseg-run/1", "label_scheme": "brats2017", "normalisation": normalisation,
            "preprocessed": "/somewhere/local", "split": {"fold": 0, "splits_file": "/x/splits.json"},
            "stage_order": ["low", "high"], "stages": {"low": {"epochs_done": 3}}}
    (run / "run.json").write_text(json.dumps(info))
    tensors = {"w": torch.arange(6, dtype=torch.float32), "n": torch.tensor([3])}
    save_file(tensors, str(run / "low" / "model.safetensors"))
    (run / "low" / "state.pt").write_bytes(b"not shipped")
    return run


def test_make_bundle_fp16_and_manifest(tmp_path):
    from safetensors.torch import load_file

    from glioseg.artifacts.shipping import make_bundle

    out = tmp_path / "bundle"
    manifest = make_bundle(_fake_run(tmp_path), out, {"name": "t", "validation": {"WT": 0.9}})
    assert set(manifest["files"]) == {"config.yaml", "run.json", "low/model.safetensors"}
    assert manifest["label_scheme"] == "brats2017" and manifest["validation"] == {"WT": 0.9}
    weights = load_file(str(out / "low" / "model.safetensors"))
    assert str(weights["w"].dtype) == "torch.float16" and weights["w"].tolist() == [0, 1, 2, 3, 4, 5]
    assert str(weights["n"].dtype) == "torch.int64"
    run_info = json.loads((out / "run.json").read_text())
    assert "preprocessed" not in run_info and "splits_file" not in run_info["split"]
    verify_bundle(out)
    with pytest.raises(BundleError, match="not empty"):
        make_bundle(_fake_run(tmp_path / "again"), out, {})


def test_make_bundle_needs_trained_stage(tmp_path):
    from glioseg.artifacts.shipping import make_bundle

    run = _fake_run(tmp_path)
    (run / "low" / "model.safetensors").unlink()
    with pytest.raises(BundleError, match=r"no model\.safetensors"):
        make_bundle(run, tmp_path / "b", {})


def test_make_bundle_refuses_a_run_inference_would_refuse(tmp_path):
    from glioseg.artifacts.shipping import make_bundle

    run = _fake_run(tmp_path)
    info = json.loads((run / "run.json").read_text())
    info["normalisation"]["margin"] = 7
    (run / "run.json").write_text(json.dumps(info))
    with pytest.raises(BundleError, match=r"cannot ship: model .*: stage low was trained with preprocessing margin 7"):
        make_bundle(run, tmp_path / "b", {})
    assert not (tmp_path / "b").exists()


def test_model_identity_of_a_bundle_is_its_manifest_sha256(tmp_path):
    import shutil

    from glioseg.artifacts.bundles import default_model_dir, model_identity, sha256_file

    shipped = default_model_dir()
    identity = model_identity(shipped)
    assert identity["kind"] == "bundle" and identity["name"] == "glioseg-brats18-cpu"
    assert identity["sha256"] == sha256_file(shipped / "manifest.json")
    copy = tmp_path / "copy"
    shutil.copytree(shipped, copy)
    assert model_identity(copy)["sha256"] == identity["sha256"]  # the same members, wherever it lies
    (copy / "manifest.json").write_text((copy / "manifest.json").read_text().replace("cpu", "cpu2", 1))
    assert model_identity(copy)["sha256"] != identity["sha256"]
