"""Batch prediction under hostile and careless use (issue 11): unique case IDs, --skip-existing
only for complete outputs, two processes on one output folder, leftovers of a killed run,
no partial outputs, the input checks of `glioseg check`, and full disks."""

import errno
import hashlib
import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
from dataclasses import replace
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from glioseg.artifacts.rundir import build_stage_model
from glioseg.artifacts.weights import save_weights
from glioseg.cli import app
from glioseg.config import ModelConfig, StageConfig, TrainConfig, save_config
from glioseg.data.layouts import find_cases
from glioseg.inference.batch import predict_dataset
from glioseg.inference.predictor import Prediction
from glioseg.labels import ED, ET, NCR

runner = CliRunner()


class FakePredictor:
    """A Predictor without a network: fixed labels (and probabilities) on each case's grid."""

    target = "regions"

    def __init__(self) -> None:
        self.calls: list[str] = []

    def predict_case(self, case, return_probabilities=False):
        self.calls.append(case.case_id)
        shape = case.geometry.canonical_shape
        labels = np.zeros(shape, dtype=np.uint8)
        labels[4:8], labels[8:12], labels[12:16] = NCR, ED, ET
        probs = np.full((3, *shape), 0.25, dtype=np.float32) if return_probabilities else None
        return Prediction(case.case_id, labels, probs)


@pytest.fixture()
def data(tmp_path, make_synthetic_dataset) -> Path:
    """A writable copy of a 3-case BraTS 2017 dataset (24^3)."""
    root = tmp_path / "data"
    shutil.copytree(make_synthetic_dataset(layout="brats2017", n_cases=3, shape=(24, 24, 24)), root)
    return root


@pytest.fixture()
def fake(monkeypatch) -> FakePredictor:
    """`glioseg predict` loads this fake instead of a model."""
    predictor = FakePredictor()
    monkeypatch.setattr("glioseg.cli.predict._load_predictor", lambda *args, **kwargs: predictor)
    return predictor


def _records(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]


def _hidden(out: Path) -> list[Path]:
    return [p for p in out.rglob(".*")]


def _predict(*args: str):
    return runner.invoke(app, ["predict", *[str(a) for a in args]])


# ----------------------------------------------------------------------------- item 3: case IDs


def test_duplicate_or_empty_case_ids_are_refused_before_any_work(data, tmp_path):
    cases = find_cases(data)
    folders = [c.images["t1"].path.parent for c in cases]
    for other_id in (cases[0].case_id, cases[0].case_id.lower()):  # same output name (also on macOS/Windows)
        predictor = FakePredictor()
        twins = [cases[0], replace(cases[1], case_id=other_id), cases[2]]
        with pytest.raises(ValueError, match="rename one") as info:
            predict_dataset(predictor, twins, tmp_path / "out")
        assert str(folders[0]) in str(info.value) and str(folders[1]) in str(info.value)
        assert predictor.calls == [] and not (tmp_path / "out").exists()
    for bad in ("", " ", "../x", ".hidden"):
        with pytest.raises(ValueError, match="case ID"):
            predict_dataset(FakePredictor(), [replace(cases[0], case_id=bad)], tmp_path / "out")
    assert not (tmp_path / "out").exists()


def _loose_files(case_dir: Path, target: Path) -> list[str]:
    """The case's images copied to ``target/{t1,t1ce,t2,flair}.nii.gz``, as --t1 ... arguments."""
    target.mkdir()
    args = []
    for modality in ("t1", "t1ce", "t2", "flair"):
        shutil.copy(next(case_dir.glob(f"*_{modality}.nii.gz")), target / f"{modality}.nii.gz")
        args += [f"--{modality}", str(target / f"{modality}.nii.gz")]
    return args


def test_cli_case_id_for_files_given_one_by_one(data, tmp_path, fake):
    files = _loose_files(next(p for p in data.iterdir() if p.is_dir()), tmp_path / "loose")
    out = tmp_path / "out"
    for bad in ("", "../escape", ".hidden", "a/b"):  # today "" wrote OUT/.nii.gz and "../escape" OUT/../escape.nii.gz
        result = _predict(*files, "-o", out, "--case-id", bad)
        assert result.exit_code == 1 and "--case-id" in result.stderr, (bad, result.output)
        assert len(result.stderr.strip().splitlines()) == 1 and fake.calls == []
    assert not list(tmp_path.glob("*.nii.gz")) and (not out.exists() or not list(out.rglob("*.nii*")))
    result = _predict(*files, "-o", out, "--case-id", "patient7")
    assert result.exit_code == 0, result.output
    assert (out / "patient7.nii.gz").is_file() and [r["id"] for r in _records(out)] == ["patient7"]
    result = _predict("-i", data, "-o", tmp_path / "o2", "--case-id", "patient7")
    assert result.exit_code == 1 and "--case-id" in result.stderr


# ----------------------------------------------------------------------------- item 4: --skip-existing


def test_skip_existing_redoes_empty_truncated_and_foreign_outputs(data, tmp_path):
    cases = find_cases(data)
    out = tmp_path / "out"
    first = predict_dataset(FakePredictor(), cases, out)
    assert [r.status for r in first] == ["done"] * 3
    paths = [out / f"{c.case_id}.nii.gz" for c in cases]
    done = {r["id"]: r for r in _records(out)}
    for c, path in zip(cases, paths, strict=True):
        assert done[c.case_id]["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    paths[0].write_bytes(b"")  # 0 bytes
    paths[1].write_bytes(paths[1].read_bytes()[: paths[1].stat().st_size // 2])  # truncated
    predictor = FakePredictor()
    again = predict_dataset(predictor, cases, out, skip_existing=True)
    assert [r.status for r in again] == ["done", "done", "skipped"]
    assert predictor.calls == [cases[0].case_id, cases[1].case_id]
    # without a manifest, a readable NIfTI with the input's geometry counts; another grid does not
    (out / "manifest.jsonl").unlink()
    img = nib.load(paths[2])
    nib.save(nib.Nifti1Image(np.zeros((8, 8, 8), np.uint8), img.affine), paths[2])
    predictor = FakePredictor()
    third = predict_dataset(predictor, cases, out, skip_existing=True)
    assert [r.status for r in third] == ["skipped", "skipped", "done"] and predictor.calls == [cases[2].case_id]
    # asking for probabilities makes a case without them incomplete
    predictor = FakePredictor()
    fourth = predict_dataset(predictor, cases[:1], out, skip_existing=True, save_probabilities=True)
    assert fourth[0].status == "done" and (out / "probabilities" / f"{cases[0].case_id}_WT.nii.gz").is_file()


# ----------------------------------------------------------------------------- item 5: two processes


def _tiny_run(run_dir: Path) -> Path:
    """A one-stage run directory with a tiny randomly initialised network."""
    stage = StageConfig(name="main", spacing_mm=1.0, patch_size=(16, 16, 16), val_window=(32, 32, 32),
                        model=ModelConfig(base_filters=4, depth=3))
    run_dir.mkdir(parents=True)
    save_config(TrainConfig(preset="test", stages=(stage,)), run_dir / "config.yaml")
    normalisation = {"version": 1, "target_spacing": 1.0, "percentiles": [0.5, 99.5], "margin": 2}
    (run_dir / "run.json").write_text(json.dumps({"format": "glioseg-run/1", "label_scheme": "brats2017",
                                                  "normalisation": normalisation, "stages": {"main": {}}}))
    torch.manual_seed(0)
    save_weights(build_stage_model(stage), run_dir / "main" / "model.safetensors", {"stage": "main"})
    return run_dir


RACER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from glioseg.cli import app
    import glioseg.inference.predictor  # the slow imports happen before the start line
    ready, go = Path(sys.argv[1]), Path(sys.argv[2])
    ready.touch()
    while not go.exists():
        time.sleep(0.005)
    app(args=sys.argv[3:], prog_name="glioseg")
""")


def test_two_processes_on_one_output_folder_do_each_case_once(tmp_path, make_synthetic_dataset):
    data = make_synthetic_dataset(layout="brats2017", n_cases=4, shape=(32, 32, 32))
    run, out, go = _tiny_run(tmp_path / "run"), tmp_path / "out", tmp_path / "go"
    args = ["-i", data, "-o", out, "-m", run, "--device", "cpu", "--precision", "fp32", "--threads", "1"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([sys.executable, "-c", RACER, str(tmp_path / f"ready{k}"), str(go), "predict",
                               *[str(a) for a in args]], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for k in range(2)]
    deadline = time.monotonic() + 120
    while not all((tmp_path / f"ready{k}").exists() for k in range(2)) and time.monotonic() < deadline:
        time.sleep(0.01)
    go.touch()
    outputs = [p.communicate(timeout=180) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    ids = [c.case_id for c in find_cases(data)]
    records = _records(out)  # every line parses: one JSON object per append
    assert len(records) == 2 * len(ids)
    for case_id in ids:
        statuses = sorted(r["status"] for r in records if r["id"] == case_id)
        assert statuses == ["done", "skipped"], (case_id, records)
        assert nib.load(out / f"{case_id}.nii.gz").shape == (32, 32, 32)
    assert len({r["pid"] for r in records}) == 2
    assert not _hidden(out)


def test_manifest_is_appended_and_survives_a_line_cut_short(data, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "manifest.jsonl").write_bytes(b'{"id": "earlier", "status": "done"}\n{"id": "x", "sta')  # kill -9
    predict_dataset(FakePredictor(), find_cases(data), out)
    lines = (out / "manifest.jsonl").read_text().splitlines()
    assert lines[:2] == ['{"id": "earlier", "status": "done"}', '{"id": "x", "sta']  # history kept
    assert [json.loads(line)["status"] for line in lines[2:]] == ["done"] * 3


def test_manifest_lines_carry_the_record_but_keep_their_own_fields(data, tmp_path):
    out = tmp_path / "out"
    record = {"model": {"name": "m", "sha256": "ab" * 32}, "options": {"tta": "none"}, "status": "forged"}
    predict_dataset(FakePredictor(), find_cases(data), out, record=record)
    lines = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    assert [r["model"] for r in lines] == [record["model"]] * 3
    assert all(r["options"] == {"tta": "none"} and r["status"] == "done" for r in lines)


# ----------------------------------------------------------------------------- item 6: leftovers, partial outputs


def test_leftovers_of_a_killed_run_are_cleaned(data, tmp_path):
    cases = find_cases(data)
    out = tmp_path / "out"
    cid = cases[0].case_id
    leftovers = [out / f".{cid}.k1ll3d_x.tmp.nii.gz", out / "probabilities" / f".{cid}_WT.a1b2c3d4.tmp.nii.gz",
                 out / "uncertainty" / f".{cid}.zz99yy88.tmp.nii.gz", out / f".{cid}.tmp" / f"{cid}.nii.gz",
                 out / f".{cid}.tmp" / "probabilities" / f"{cid}_TC.nii.gz", out / f".{cid}.lock"]
    for path in leftovers:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"left by kill -9")
    results = predict_dataset(FakePredictor(), cases, out, save_probabilities=True)
    assert [r.status for r in results] == ["done"] * 3
    assert not _hidden(out)
    assert sorted(p.name for p in (out / "probabilities").iterdir()) == sorted(
        f"{c.case_id}_{r}.nii.gz" for c in cases for r in ("WT", "TC", "ET"))


def test_a_failing_case_leaves_none_of_its_outputs(data, tmp_path):
    cases = find_cases(data)
    bad = cases[1].case_id

    class WrongShape(FakePredictor):
        def predict_case(self, case, return_probabilities=False):
            pred = super().predict_case(case, return_probabilities)
            if case.case_id == bad:  # probabilities fine, label map of the wrong shape: fails late
                pred.labels = pred.labels[:-1]
            return pred

    out = tmp_path / "out"
    results = predict_dataset(WrongShape(), cases, out, save_probabilities=True)
    assert [r.status for r in results] == ["done", "failed", "done"]
    assert not list(out.rglob(f"*{bad}*")) and not _hidden(out)
    assert len(list((out / "probabilities").iterdir())) == 6


# ----------------------------------------------------------------------------- item 8: input checks


def _zero_modality(data: Path, case_id: str, modality: str) -> Path:
    path = data / case_id / f"{case_id}_{modality}.nii.gz"
    img = nib.load(path)
    nib.save(nib.Nifti1Image(np.zeros(img.shape, np.int16), img.affine, img.header), path)
    return path


def test_cli_predict_reports_and_skips_a_case_that_fails_the_checks(data, tmp_path, fake):
    ids = [c.case_id for c in find_cases(data)]
    _zero_modality(data, ids[1], "t2")
    out = tmp_path / "out"
    result = _predict("-i", data, "-o", out)
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit)
    assert fake.calls == [ids[0], ids[2]]
    records = {r["id"]: r for r in _records(out)}
    assert records[ids[1]]["status"] == "failed" and "all zeros" in records[ids[1]]["error"]
    assert [line for line in result.stderr.splitlines() if ids[1] in line and "all zeros" in line]
    assert not (out / f"{ids[1]}.nii.gz").exists() and (out / f"{ids[2]}.nii.gz").is_file()


def test_cli_predict_refuses_unservable_input_unless_forced(tmp_path, make_synthetic_dataset, fake, monkeypatch):
    from glioseg.data import checks

    monkeypatch.setattr(checks, "UNSERVABLE_CHECKS", frozenset({"spacing"}), raising=False)  # a stand-in finding
    data = make_synthetic_dataset(layout="brats2017", n_cases=1, shape=(16, 16, 16), affine=np.diag([2.0, 2, 2, 1]))
    case_id = find_cases(data)[0].case_id
    result = _predict("-i", data, "-o", tmp_path / "a")
    assert result.exit_code == 1 and "--force" in result.stderr and fake.calls == []
    assert not (tmp_path / "a" / f"{case_id}.nii.gz").exists()
    result = _predict("-i", data, "-o", tmp_path / "b", "--force")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "b" / f"{case_id}.nii.gz").is_file() and fake.calls == [case_id]
    assert _records(tmp_path / "b")[0]["warnings"]  # the finding is still recorded


def test_cli_predict_refuses_an_offset_background_unless_forced(data, tmp_path, fake):
    # the real finding: a header scl_inter of 100 puts every background voxel at 100
    case = find_cases(data)[0]
    flair = case.images["flair"].path
    img = nib.load(flair)
    shifted = nib.Nifti1Image(np.asarray(img.dataobj), img.affine, img.header)
    shifted.header.set_slope_inter(1.0, 100.0)
    nib.save(shifted, flair)
    result = _predict("-i", data, "-o", tmp_path / "a")
    assert result.exit_code == 1 and "--force" in result.stderr and "background" in result.stderr
    assert case.case_id not in fake.calls and len(fake.calls) == 2  # the other cases go on
    result = _predict("-i", data, "-o", tmp_path / "b", "--force")
    assert result.exit_code == 0, result.output
    assert case.case_id in fake.calls


# ----------------------------------------------------------------------------- item 11: full disk


def test_cli_disk_full_fails_that_case_in_one_line(data, tmp_path, fake, monkeypatch):
    ids = [c.case_id for c in find_cases(data)]
    real_save = nib.save

    def save(img, filename):
        if ids[1] in str(filename):
            raise OSError(errno.ENOSPC, "No space left on device", str(filename))
        return real_save(img, filename)

    monkeypatch.setattr(nib, "save", save)
    out = tmp_path / "out"
    result = _predict("-i", data, "-o", out, "--save-probabilities")
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit)
    assert "Traceback" not in result.output
    lines = [line for line in result.stderr.splitlines() if ids[1] in line and "No space left on device" in line]
    assert len(lines) == 1, result.stderr
    assert not list(out.rglob(f"*{ids[1]}*")) and not _hidden(out)
    assert (out / f"{ids[2]}.nii.gz").is_file()


def test_cli_manifest_write_error_is_one_line(data, tmp_path, fake, monkeypatch):
    def no_space(path, record):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr("glioseg.inference.manifest.append_record", no_space)
    result = _predict("-i", data, "-o", tmp_path / "out")
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit)
    assert "No space left on device" in result.stderr and "Traceback" not in result.output
    assert not list((tmp_path / "out").glob("*.nii.gz"))  # an unrecorded case is not left as if done
