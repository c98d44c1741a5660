import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from glioseg.artifacts.rundir import build_stage_model
from glioseg.artifacts.weights import save_weights
from glioseg.cli import app
from glioseg.config import ModelConfig, StageConfig, TrainConfig, save_config
from glioseg.data.layouts import find_cases
from glioseg.data.nifti import read_case
from glioseg.data.synthetic import default_affine
from glioseg.inference.batch import predict_dataset
from glioseg.inference.cascade import box_on_grid
from glioseg.inference.cases import select_shard
from glioseg.inference.postprocess import PostprocessConfig, save_postprocess
from glioseg.inference.predictor import Predictor, Stage, run_folders
from glioseg.labels import ET, get_scheme
from glioseg.preprocessing.normalize import preprocess_case

runner = CliRunner()


# ----------------------------------------------------------------------------- fixtures


def _tiny_config(low_window: int = 32, high_window: int = 48) -> TrainConfig:
    model = ModelConfig(base_filters=4, depth=3, dropout=0.3)
    # windows that hold a whole 48^3 synthetic case: one network pass per stage keeps the tests fast
    low = StageConfig(name="low", spacing_mm=2.0, patch_size=(16, 16, 16), val_window=(low_window,) * 3, model=model)
    high = StageConfig(name="high", spacing_mm=1.0, patch_size=(16, 16, 16), val_window=(high_window,) * 3,
                       model=model, cascade_from="low")
    return TrainConfig(preset="test", stages=(low, high))


def write_run(run_dir: Path, seed: int = 0, low_window: int = 32, high_window: int = 48) -> Path:
    """A run directory with the trainer's layout and randomly initialised tiny networks."""
    config = _tiny_config(low_window, high_window)
    run_dir.mkdir(parents=True)
    save_config(config, run_dir / "config.yaml")
    normalisation = {"method": "z-score inside the brain after percentile clipping", "version": 1,
                     "target_spacing": 1.0, "requested_label_scheme": None, "percentiles": [0.5, 99.5], "margin": 2}
    (run_dir / "run.json").write_text(json.dumps({
        "format": "glioseg-run/1", "label_scheme": "brats2017", "normalisation": normalisation,
        "stages": {s.name: {"spacing_mm": s.spacing_mm} for s in config.stages}}))
    for i, stage in enumerate(config.stages):
        torch.manual_seed(seed + i)
        model = build_stage_model(stage)
        with torch.no_grad():  # mixed outputs: some voxels above, some below 0.5 in every region
            for p in model.parameters():
                p.mul_(3.0)
        save_weights(model, run_dir / stage.name / "model.safetensors", {"stage": stage.name})
    return run_dir


@pytest.fixture(scope="session")
def run_dir(tmp_path_factory) -> Path:
    return write_run(tmp_path_factory.mktemp("run") / "run")


def _read(path: Path) -> nib.Nifti1Image:
    return nib.load(str(path))


class FlairThreshold(nn.Module):
    """Fake low stage: every region where the (z-scored) FLAIR exceeds 1.5."""

    divisor = 1

    def forward(self, x):
        return (10.0 * (x[:, 3:4] - 1.5)).expand(-1, 3, -1, -1, -1).contiguous()


class Constant(nn.Module):
    def __init__(self, value: float) -> None:
        super().__init__()
        self.value = value

    def forward(self, x):
        return torch.full((x.shape[0], 3, *x.shape[2:]), self.value)


def _pointwise(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Conv3d(4, 3, 1).eval()


def _stages(low: nn.Module, high: nn.Module, window=(16, 16, 16)) -> dict[str, Stage]:
    return {"low": Stage("low", [low], 2.0, window, "regions", 1),
            "high": Stage("high", [high], 1.0, window, "regions", 1)}


# ----------------------------------------------------------------------------- Predictor


def test_from_run_predicts_on_the_case_grid(run_dir, synthetic_dataset):
    predictor = Predictor.from_run(run_dir, device="cpu")
    assert predictor.cascade and set(predictor.stages) == {"low", "high"}
    case = read_case(find_cases(synthetic_dataset)[0])
    pred = predictor.predict_case(case, return_probabilities=True)
    assert pred.labels.shape == case.geometry.canonical_shape and pred.labels.dtype == np.uint8
    assert pred.probabilities.shape == (3, *case.geometry.canonical_shape)
    assert pred.stages[0] == "low" and {"preprocess", "low", "postprocess", "total"} <= set(pred.timings)
    assert set(np.unique(pred.labels)) <= {0, 1, 2, 3}


def test_cascade_equals_full_resolution_when_the_box_covers_everything(synthetic_dataset):
    case = read_case(find_cases(synthetic_dataset)[0])
    high = _pointwise()
    cascade = Predictor(_stages(Constant(5.0), high), device="cpu", precision="fp32")
    full = Predictor(_stages(Constant(5.0), high), device="cpu", precision="fp32", cascade=False)
    a = cascade.predict_case(case, True)
    b = full.predict_case(case, True)
    assert a.stages == ["low", "high"] and b.stages == ["high"]
    assert a.box == tuple((0, s) for s in case.geometry.canonical_shape)
    np.testing.assert_array_equal(a.probabilities, b.probabilities)
    np.testing.assert_array_equal(a.labels, b.labels)


def test_cascade_keeps_low_resolution_outside_the_box(synthetic_dataset):
    case = read_case(find_cases(synthetic_dataset)[0])
    high = _pointwise(1)
    cascade = Predictor(_stages(FlairThreshold(), high), device="cpu", precision="fp32", margin_mm=2.0)
    low_only = Predictor({"low": _stages(FlairThreshold(), high)["low"]}, device="cpu", precision="fp32")
    full = Predictor(_stages(FlairThreshold(), high), device="cpu", precision="fp32", cascade=False)
    a = cascade.predict_case(case, True)
    box = a.box
    assert box is not None and any(hi - lo < n for (lo, hi), n in zip(box, case.label.shape, strict=True))
    inside = np.zeros(case.label.shape, dtype=bool)
    inside[tuple(slice(lo, hi) for lo, hi in box)] = True
    lo_probs = low_only.predict_case(case, True).probabilities
    full_probs = full.predict_case(case, True).probabilities
    # outside the high-resolution box (grown to the network divisor) the low-resolution result is kept
    sub = box_on_grid(box, preprocess_case(case, 1.0).meta, 1)
    assert sub  # the box maps onto the 1 mm grid
    outside = ~inside
    np.testing.assert_array_equal(a.probabilities[:, outside], lo_probs[:, outside])
    # a pointwise high stage gives the same values inside the box as over the whole brain
    np.testing.assert_allclose(a.probabilities[:, inside], full_probs[:, inside], atol=1e-6)


def test_cascade_without_tumour_returns_the_low_resolution_result(synthetic_dataset):
    case = read_case(find_cases(synthetic_dataset)[0])
    predictor = Predictor(_stages(Constant(-5.0), _pointwise()), device="cpu", precision="fp32")
    pred = predictor.predict_case(case)
    assert pred.stages == ["low"] and pred.box is None and not pred.labels.any()


def test_mc_dropout_uncertainty_from_run(run_dir, synthetic_dataset):
    case = read_case(find_cases(synthetic_dataset)[0])
    predictor = Predictor.from_run(run_dir, device="cpu", mc_samples=2, cascade=False)
    pred = predictor.predict_case(case)
    assert pred.uncertainty is not None and pred.uncertainty.shape == case.geometry.canonical_shape
    assert float(pred.uncertainty.max()) > 0


def test_run_folders(tmp_path, run_dir):
    assert run_folders(run_dir) == [run_dir]
    with pytest.raises(FileNotFoundError, match="drop --folds"):
        run_folders(run_dir, [0])
    for k in (0, 2):
        shutil.copytree(run_dir, tmp_path / "cv" / f"fold_{k}")
    assert [p.name for p in run_folders(tmp_path / "cv")] == ["fold_0", "fold_2"]
    assert [p.name for p in run_folders(tmp_path / "cv", [2])] == ["fold_2"]
    with pytest.raises(FileNotFoundError, match=r"folds \[1\] not found"):
        run_folders(tmp_path / "cv", [1])
    with pytest.raises(FileNotFoundError, match=r"no run\.json"):
        run_folders(tmp_path)
    predictor = Predictor.from_run(tmp_path / "cv", device="cpu")
    assert len(predictor.stages["high"].models) == 2  # an ensemble of the two folds


def test_from_run_reads_tuned_postprocess(tmp_path, run_dir):
    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    save_postprocess(PostprocessConfig((0.4, 0.5, 0.6), 123.0, (10.0, 0.0, 5.0)), run)
    assert Predictor.from_run(run, device="cpu").postprocess == PostprocessConfig((0.4, 0.5, 0.6), 123.0,
                                                                                  (10.0, 0.0, 5.0))


def test_select_shard_covers_every_case_once():
    class C:
        def __init__(self, i):
            self.case_id = f"case{i:02d}"

    cases = [C(i) for i in (5, 3, 0, 6, 1, 4, 2)]
    for n in (1, 2, 3, 4, 7, 9):
        shards = [select_shard(cases, n, k) for k in range(n)]
        ids = [c.case_id for s in shards for c in s]
        assert sorted(ids) == sorted(c.case_id for c in cases) and len(ids) == len(set(ids))
    with pytest.raises(ValueError, match="shard-id"):
        select_shard(cases, 2, 2)
    with pytest.raises(ValueError, match="num-shards"):
        select_shard(cases, 0, 0)


# ----------------------------------------------------------------------------- glioseg predict


def _predict(*args: str):
    return runner.invoke(app, ["predict", *args])


def _manifest(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _check_geometry(out_path: Path, ref_path: Path) -> None:
    import SimpleITK as sitk

    out, ref = _read(out_path), _read(ref_path)
    assert out.shape == ref.shape
    np.testing.assert_array_equal(out.affine, ref.affine)
    assert out.header.get_data_dtype() == np.uint8
    for key in ("qform_code", "sform_code", "pixdim", "xyzt_units", "quatern_b", "quatern_c", "quatern_d",
                "qoffset_x", "qoffset_y", "qoffset_z", "srow_x", "srow_y", "srow_z"):
        np.testing.assert_array_equal(out.header[key], ref.header[key], err_msg=key)
    a, b = sitk.ReadImage(str(out_path)), sitk.ReadImage(str(ref_path))
    assert a.GetSize() == b.GetSize()
    np.testing.assert_allclose(a.GetOrigin(), b.GetOrigin(), atol=1e-5)
    np.testing.assert_allclose(a.GetSpacing(), b.GetSpacing(), atol=1e-6)
    np.testing.assert_allclose(a.GetDirection(), b.GetDirection(), atol=1e-6)


def test_cli_predict_dataset_geometry_scheme_manifest(run_dir, synthetic_dataset, tmp_path):
    out = tmp_path / "out"
    result = _predict("-i", str(synthetic_dataset), "-o", str(out), "-m", str(run_dir), "--device", "cpu")
    assert result.exit_code == 0, result.output
    cases = find_cases(synthetic_dataset)
    lines = _manifest(out / "manifest.jsonl")
    assert [line["id"] for line in lines] == [c.case_id for c in cases]
    assert all(line["status"] == "done" and line["error"] is None and line["seconds"] > 0 for line in lines)
    predictor = Predictor.from_run(run_dir, device="cpu")
    for files in cases:
        path = out / f"{files.case_id}.nii.gz"
        assert lines[[c.case_id for c in cases].index(files.case_id)]["output"] == str(path)
        _check_geometry(path, files.images["t1"].path)
        assert "".join(nib.aff2axcodes(_read(path).affine)) == "LPS"  # non-RAS input kept as is
        case = read_case(files, read_label=False)
        written = np.asarray(_read(path).dataobj)
        expected = predictor.predict_case(case).labels
        assert set(np.unique(written)) <= {0, 1, 2, 4}
        np.testing.assert_array_equal(get_scheme("brats2017").to_canonical(case.geometry.to_canonical(written)),
                                      expected)
    assert not list(out.glob(".*tmp*"))


def test_cli_predict_records_the_model_and_evaluate_reports_it(run_dir, synthetic_dataset, tmp_path):
    from glioseg.artifacts.bundles import model_identity

    out, report = tmp_path / "out", tmp_path / "report"
    result = _predict("-i", str(synthetic_dataset), "-o", str(out), "-m", str(run_dir), "--device", "cpu",
                      "--tta", "none")
    assert result.exit_code == 0, result.output
    identity = model_identity(run_dir)
    lines = _manifest(out / "manifest.jsonl")
    assert all(line["model"] == identity and line["options"]["tta"] == "none" for line in lines)
    assert identity["kind"] == "run" and len(identity["sha256"]) == 64
    result = CliRunner().invoke(app, ["evaluate", "--pred", str(out), "--gt", str(synthetic_dataset), "-o", str(report),
                                      "--no-thumbnails"])
    assert result.exit_code == 0, result.output
    model = json.loads((report / "summary.json").read_text())["summary"]["provenance"]["model"]
    assert (model["name"], model["sha256"]) == (run_dir.name, identity["sha256"])
    assert model["options"]["tta"] == "none"


def test_cli_predict_permuted_anisotropic_axes_and_brats2023_scheme(run_dir, make_synthetic_dataset, tmp_path):
    affine = np.array([[0.0, 0.0, -1.2, 90.0], [-1.0, 0.0, 0.0, 40.0], [0.0, 1.1, 0.0, -60.0], [0, 0, 0, 1]])
    dataset = make_synthetic_dataset(layout="brats2023", n_cases=1, shape=(40, 36, 32), affine=affine)
    out = tmp_path / "out"
    result = _predict("-i", str(dataset), "-o", str(out), "-m", str(run_dir), "--device", "cpu")
    assert result.exit_code == 0, result.output
    files = find_cases(dataset)[0]
    path = out / f"{files.case_id}.nii.gz"
    _check_geometry(path, files.images["t1"].path)
    case = read_case(files, read_label=False)
    expected = Predictor.from_run(run_dir, device="cpu").predict_case(case).labels
    written = np.asarray(_read(path).dataobj)
    assert (expected == ET).any() and set(np.unique(written)) <= {0, 1, 2, 3}  # ET written as 3
    np.testing.assert_array_equal(get_scheme("brats2023").to_canonical(case.geometry.to_canonical(written)),
                                  expected)
    out2 = tmp_path / "out2"
    result = _predict("-i", str(dataset), "-o", str(out2), "-m", str(run_dir), "--device", "cpu",
                      "--output-label-scheme", "brats2017")
    assert result.exit_code == 0, result.output
    relabelled = np.asarray(_read(out2 / f"{files.case_id}.nii.gz").dataobj)
    np.testing.assert_array_equal(relabelled, np.where(written == 3, 4, written))


def test_cli_predict_shards_and_skip_existing(run_dir, synthetic_dataset, tmp_path):
    out = tmp_path / "out"
    ids = [c.case_id for c in find_cases(synthetic_dataset)]
    seen = []
    for k in range(2):
        result = _predict("-i", str(synthetic_dataset), "-o", str(out), "-m", str(run_dir), "--device", "cpu",
                          "--num-shards", "2", "--shard-id", str(k), "--no-cascade", "--threads", "2")
        assert result.exit_code == 0, result.output
        seen += [line["id"] for line in _manifest(out / f"manifest.shard-{k}-of-2.jsonl")]
    assert sorted(seen) == sorted(ids) and len(seen) == len(set(seen))
    assert sorted(p.name for p in out.glob("*.nii.gz")) == sorted(f"{i}.nii.gz" for i in ids)
    first = out / f"{ids[0]}.nii.gz"
    stamp = first.stat().st_mtime_ns
    result = _predict("-i", str(synthetic_dataset), "-o", str(out), "-m", str(run_dir), "--device", "cpu",
                      "--skip-existing")
    assert result.exit_code == 0, result.output
    assert [line["status"] for line in _manifest(out / "manifest.jsonl")] == ["skipped"] * len(ids)
    assert first.stat().st_mtime_ns == stamp
    result = _predict("-i", str(synthetic_dataset), "-o", str(out), "-m", str(run_dir), "--device", "cpu",
                      "--num-shards", "2", "--shard-id", "2")
    assert result.exit_code == 1 and "shard-id" in result.output


def test_cli_predict_corrupt_case_is_reported_and_others_written(run_dir, synthetic_dataset, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(synthetic_dataset, data)
    cases = find_cases(data)
    bad = cases[1]
    flair = bad.images["flair"].path
    flair.write_bytes(flair.read_bytes()[:200])  # truncated file
    out = tmp_path / "out"
    result = _predict("-i", str(data), "-o", str(out), "-m", str(run_dir), "--device", "cpu")
    assert result.exit_code == 1
    assert bad.case_id in result.output and "failed" in result.output
    lines = {line["id"]: line for line in _manifest(out / "manifest.jsonl")}
    assert lines[bad.case_id]["status"] == "failed" and bad.case_id in lines[bad.case_id]["error"]
    assert "flair" in lines[bad.case_id]["error"]
    assert not (out / f"{bad.case_id}.nii.gz").exists()
    for c in cases:
        if c.case_id != bad.case_id:
            assert lines[c.case_id]["status"] == "done" and (out / f"{c.case_id}.nii.gz").is_file()
    assert not [p for p in out.iterdir() if p.name.startswith(".")]


def test_cli_predict_files_one_by_one_with_probabilities(run_dir, synthetic_dataset, tmp_path):
    files = find_cases(synthetic_dataset)[0]
    out = tmp_path / "out"
    args = [f"--{m}={files.images[m].path}" for m in ("t1", "t1ce", "t2", "flair")]
    result = _predict(*args, "-o", str(out), "-m", str(run_dir), "--device", "cpu", "--save-probabilities",
                      "--tta", "2", "--mc-dropout", "2", "--no-cascade")
    assert result.exit_code == 0, result.output
    path = out / f"{files.case_id}.nii.gz"
    _check_geometry(path, files.images["t1"].path)
    for region in ("WT", "TC", "ET"):
        prob = _read(out / "probabilities" / f"{files.case_id}_{region}.nii.gz")
        assert prob.shape == _read(path).shape and np.allclose(prob.affine, _read(path).affine)
        values = np.asarray(prob.dataobj)
        assert values.min() >= 0 and values.max() <= 1
    assert (out / "uncertainty" / f"{files.case_id}.nii.gz").is_file()


@pytest.mark.parametrize("key, value", [("percentiles", [2.0, 98.0]), ("margin", 0), ("version", 0),
                                        ("normalisation", None)])
def test_cli_predict_refuses_altered_preprocessing_record(run_dir, synthetic_dataset, tmp_path, key, value):
    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    info = json.loads((run / "run.json").read_text())
    if key == "normalisation":
        del info["normalisation"]
    else:
        info["normalisation"][key] = value
    (run / "run.json").write_text(json.dumps(info))
    out = tmp_path / "o"
    result = _predict("-i", str(synthetic_dataset), "-o", str(out), "-m", str(run), "--device", "cpu")
    assert result.exit_code == 1
    message = " ".join(result.output.split())
    assert f"model {run}:" in message and key in message and "re-train" in message
    assert not out.exists() or not any(out.glob("*.nii.gz"))


def test_predictor_preprocesses_with_the_stage_record(synthetic_dataset, monkeypatch):
    from glioseg.artifacts.preprocess_record import PreprocessingSpec

    seen = []

    def spy(case, spacing_mm=None, margin=2, percentiles=(0.5, 99.5)):
        seen.append((spacing_mm, margin, percentiles))
        return preprocess_case(case, spacing_mm, margin, percentiles)

    monkeypatch.setattr("glioseg.inference.predictor.preprocess_case", spy)
    stage = Stage("high", [_pointwise()], 2.0, (16, 16, 16), "regions", 1, PreprocessingSpec(2.0, (1.0, 99.0), 5))
    Predictor({"high": stage}, device="cpu", precision="fp32").predict_case(read_case(find_cases(synthetic_dataset)[0]))
    assert seen == [(2.0, 5, (1.0, 99.0))]
    with pytest.raises(ValueError, match=r"preprocessing spacing 1\.0 mm != stage spacing 2\.0 mm"):
        Stage("high", [_pointwise()], 2.0, (16, 16, 16), "regions", 1, PreprocessingSpec(1.0))


def test_cli_predict_clear_errors(run_dir, synthetic_dataset, tmp_path, monkeypatch):
    result = _predict("-i", str(synthetic_dataset), "-o", str(tmp_path / "o"), "-m", str(tmp_path / "nope"))
    assert result.exit_code == 1 and "no such folder" in result.output
    import glioseg.artifacts.bundles

    monkeypatch.setattr(glioseg.artifacts.bundles, "default_model_dir", lambda: tmp_path / "no_default")
    result = _predict("-i", str(synthetic_dataset), "-o", str(tmp_path / "o"))
    assert result.exit_code == 1 and "no model given" in result.output and "import-model" in result.output
    empty = tmp_path / "empty_run"
    empty.mkdir()
    result = _predict("-i", str(synthetic_dataset), "-o", str(tmp_path / "o"), "-m", str(empty))
    assert result.exit_code == 1 and "run.json" in result.output
    result = _predict("-o", str(tmp_path / "o"), "-m", str(run_dir))
    assert result.exit_code == 1 and "no input" in result.output
    result = _predict("--t1", "a.nii.gz", "-o", str(tmp_path / "o"), "-m", str(run_dir))
    assert result.exit_code == 1 and "all four" in result.output
    for flag, value in (("--tta", "sometimes"), ("--precision", "fp8"), ("--label-scheme", "brats1999"),
                        ("--device", "tpu")):
        result = _predict("-i", str(synthetic_dataset), "-o", str(tmp_path / "o"), "-m", str(run_dir), flag, value)
        assert result.exit_code == 1 and "error:" in result.output, (flag, result.output)
    assert not (tmp_path / "o").exists() or not list((tmp_path / "o").glob("*.nii.gz"))


def test_predict_dataset_isolates_exceptions(run_dir, synthetic_dataset, tmp_path):
    class Boom(Predictor):
        def predict_case(self, case, return_probabilities=False):
            if case.case_id.endswith("1"):
                raise RuntimeError("kaboom")
            return super().predict_case(case, return_probabilities)

    predictor = Predictor.from_run(run_dir, device="cpu", cascade=False)
    predictor.__class__ = Boom
    cases = find_cases(synthetic_dataset)
    results = predict_dataset(predictor, cases, tmp_path)
    status = {r.case_id: r.status for r in results}
    assert [r.case_id for r in results] == [c.case_id for c in cases]
    for c in cases:
        failed = c.case_id.endswith("1")
        assert status[c.case_id] == ("failed" if failed else "done")
        assert (tmp_path / f"{c.case_id}.nii.gz").is_file() != failed
    assert "kaboom" in next(r.error for r in results if r.status == "failed")


def test_default_affine_is_not_ras():
    # the geometry tests above rely on a non-RAS input
    assert "".join(nib.aff2axcodes(default_affine((48, 48, 48)))) != "RAS"


# ----------------------------------------------------------------------------- glioseg tune-postprocess


@pytest.fixture()
def tuning_setup(tmp_path, synthetic_dataset):
    from glioseg.preprocessing.cache import preprocess_dataset

    pre = tmp_path / "pre"
    assert not preprocess_dataset(find_cases(synthetic_dataset), pre, spacing_mm=1.0).failed
    ids = [c.case_id for c in find_cases(synthetic_dataset)]
    run = write_run(tmp_path / "run")
    info = json.loads((run / "run.json").read_text())
    info["split"] = {"fold": 0, "train": ids[:1], "val": ids[1:]}
    (run / "run.json").write_text(json.dumps(info))
    return run, pre, ids


def test_cli_tune_postprocess_writes_settings_the_predictor_uses(tuning_setup):
    run, pre, ids = tuning_setup
    result = runner.invoke(app, ["tune-postprocess", str(run), str(pre), "--device", "cpu", "--candidates", "0,5,50"])
    assert result.exit_code == 0, result.output
    saved = json.loads((run / "postprocess.json").read_text())
    assert saved["min_et_mm3"] in (0, 5, 50) and saved["tuning"]["n_cases"] == 2 and "min_et_voxels" not in saved
    assert len(saved["min_component_mm3"]) == 3 and saved["tuning"]["units"] == "mm^3"
    (cache,) = (run / "validation_probabilities").iterdir()  # one folder per weights + options
    cached = sorted(p.name for p in cache.glob("*.npy"))
    assert cached == sorted(f"{i}.npy" for i in ids[1:])
    probs = np.load(cache / cached[0])
    assert probs.dtype == np.float16 and probs.shape[0] == 3
    stamp = (cache / cached[0]).stat().st_mtime_ns
    result = runner.invoke(app, ["tune-postprocess", str(run), str(pre), "--device", "cpu", "--thresholds"])
    assert result.exit_code == 0, result.output
    assert (cache / cached[0]).stat().st_mtime_ns == stamp  # reused
    config = Predictor.from_run(run, device="cpu").postprocess
    saved = json.loads((run / "postprocess.json").read_text())
    assert config == PostprocessConfig(tuple(saved["thresholds"]), saved["min_et_mm3"],
                                       tuple(saved["min_component_mm3"]))


def test_tuning_cache_is_not_reused_after_retraining(tuning_setup):
    from safetensors.torch import load_file, save_file

    run, pre, _ = tuning_setup
    args = ["tune-postprocess", str(run), str(pre), "--device", "cpu", "--candidates", "0"]
    assert runner.invoke(app, args).exit_code == 0
    before = {p.name for p in (run / "validation_probabilities").iterdir()}
    for weights in run.glob("*/model.safetensors"):  # "re-train": every stage's weights change
        tensors = {k: v + 0.01 if v.is_floating_point() else v for k, v in load_file(str(weights)).items()}
        save_file(tensors, str(weights))
    assert runner.invoke(app, args).exit_code == 0
    after = {p.name for p in (run / "validation_probabilities").iterdir()}
    assert before < after


def test_cli_tune_postprocess_errors(tuning_setup, tmp_path, synthetic_dataset):
    from glioseg.preprocessing.cache import preprocess_dataset

    run, pre, _ = tuning_setup
    pre2 = tmp_path / "pre2"
    preprocess_dataset(find_cases(synthetic_dataset), pre2, spacing_mm=2.0)
    result = runner.invoke(app, ["tune-postprocess", str(run), str(pre2), "--device", "cpu"])
    assert result.exit_code == 1 and "--spacing 1.0" in result.output
    result = runner.invoke(app, ["tune-postprocess", str(run), str(pre), "--candidates", "a,b"])
    assert result.exit_code == 1 and "--candidates" in result.output
    info = json.loads((run / "run.json").read_text())
    del info["split"]
    (run / "run.json").write_text(json.dumps(info))
    result = runner.invoke(app, ["tune-postprocess", str(run), str(pre), "--device", "cpu"])
    assert result.exit_code == 1 and "--splits" in result.output
    assert not (run / "postprocess.json").exists()


@pytest.mark.realdata
def test_cli_predict_real_brats_case_keeps_its_header(shared_brats18, tmp_path):
    files = find_cases(shared_brats18)[0]
    case_dir = tmp_path / "in" / files.case_id
    case_dir.mkdir(parents=True)
    for src in files.images.values():
        shutil.copy(src.path, case_dir / src.path.name)
    run = write_run(tmp_path / "run", low_window=128, high_window=176)  # whole-brain windows: one pass each
    out = tmp_path / "out"
    result = _predict("-i", str(case_dir), "-o", str(out), "-m", str(run), "--device", "cpu", "--no-cascade")
    assert result.exit_code == 0, result.output
    path = out / f"{files.case_id}.nii.gz"
    _check_geometry(path, files.images["t1"].path)
    assert _read(path).shape == (240, 240, 155)
    assert set(np.unique(np.asarray(_read(path).dataobj))) <= {0, 1, 2, 4}
