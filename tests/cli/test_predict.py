"""`glioseg predict` options with the shipped model (its flags for labels schemes: test_label_schemes.py)."""

import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from glioseg.cli import app
from glioseg.data.layouts import find_cases

runner = CliRunner()


def test_single_threaded_tiles_flag_same_labels_threads_untouched(make_synthetic_dataset, tmp_path):
    dataset = make_synthetic_dataset(layout="brats2017", n_cases=1, shape=(64, 64, 64))  # >= 32 voxels at 2 mm
    case_id = find_cases(dataset)[0].case_id
    before = torch.get_num_threads()
    written = []
    for name, flags in (("default", []), ("serial", ["--single-threaded-tiles"])):
        result = runner.invoke(app, ["predict", "-i", str(dataset), "-o", str(tmp_path / name), "--device", "cpu",
                                     "--precision", "fp32", *flags])
        assert result.exit_code == 0, result.output
        assert torch.get_num_threads() == before
        written.append(np.asarray(nib.load(tmp_path / name / f"{case_id}.nii.gz").dataobj))
    np.testing.assert_array_equal(written[0], written[1])


# ----------------------------------------------------------------------------- checked before the model loads


@pytest.fixture()
def no_model(monkeypatch):
    """Fail the test if `glioseg predict` gets as far as loading a model."""

    def load(*args, **kwargs):
        raise AssertionError("the model was loaded before the options were checked")

    monkeypatch.setattr("glioseg.cli.predict._load_predictor", load)


@pytest.mark.parametrize("flags,option", [
    (["--overlap", "1"], "--overlap"), (["--overlap", "-0.1"], "--overlap"), (["--margin", "-1"], "--margin"),
    (["--tta", "sometimes"], "--tta"), (["--tta", "9"], "--tta"), (["--precision", "fp8"], "--precision"),
    (["--num-shards", "2", "--shard-id", "2"], "--shard-id"),
    (["--folds", "a,b"], "--folds"), (["--folds", "-1"], "--folds"), (["--folds", "0,0"], "--folds"),
    (["--folds", ","], "--folds"),
])
def test_predict_option_values_checked_up_front(synthetic_dataset, tmp_path, no_model, flags, option, one_line_error):
    result = runner.invoke(app, ["predict", "-i", str(synthetic_dataset), "-o", str(tmp_path / "o"), *flags])
    one_line_error(result, option)
    assert not (tmp_path / "o").exists()


def _snapshot(root: Path) -> dict[Path, int]:
    return {p: p.stat().st_mtime_ns for p in root.rglob("*")}


@pytest.mark.parametrize("layout,where", [
    ("brats2017", "{case}"), ("brats2017", "{case}/sub"), ("msd", "imagesTr"), ("msd", "labelsTr"),
    ("msd", "labelsTr/more"),
])
def test_predict_refuses_to_write_into_the_inputs(make_synthetic_dataset, tmp_path, no_model, layout, where,
                                                  one_line_error):
    data = tmp_path / "data"
    shutil.copytree(make_synthetic_dataset(layout=layout, n_cases=2, shape=(16, 16, 16)), data)
    case = find_cases(data)[0]
    out = data / where.format(case=case.case_id)
    before = _snapshot(data)
    result = runner.invoke(app, ["predict", "-i", str(data), "-o", str(out)])
    line = one_line_error(result, "-o", str(out))
    assert str(out.parent if where.endswith(("sub", "more")) else out) in line.split(str(out), 1)[1]
    assert _snapshot(data) == before  # nothing written, nothing touched


def test_predict_files_refuses_their_own_folder(synthetic_dataset, tmp_path, no_model, one_line_error):
    case_dir = tmp_path / "case"
    shutil.copytree(next(p for p in synthetic_dataset.iterdir() if p.is_dir()), case_dir)
    files = [f"--{m}={next(case_dir.glob(f'*_{m}.nii.gz'))}" for m in ("t1", "t1ce", "t2", "flair")]
    before = _snapshot(case_dir)
    one_line_error(runner.invoke(app, ["predict", *files, "-o", str(case_dir)]), str(case_dir))
    assert _snapshot(case_dir) == before


def test_predict_unusable_output_paths_are_one_line(synthetic_dataset, tmp_path, no_model, one_line_error):
    a_file = tmp_path / "a_file"
    a_file.write_text("keep me")
    one_line_error(runner.invoke(app, ["predict", "-i", str(synthetic_dataset), "-o", str(a_file)]), str(a_file))
    assert a_file.read_text() == "keep me"
    out = tmp_path / "out"
    (out / "manifest.jsonl").mkdir(parents=True)  # the manifest cannot be written
    one_line_error(runner.invoke(app, ["predict", "-i", str(synthetic_dataset), "-o", str(out)]), "manifest.jsonl")
