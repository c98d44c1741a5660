"""Unusable output paths and failed writes: one line naming the path, checked before any work, nothing half-written.

Every command that writes (check --json, evaluate -o, show -o, preprocess OUT, synth OUT, split -o,
plot-curves -o, train RUN) refuses an existing file where a folder is expected, a folder where a
file is expected, a path under a file and a read-only location, before it reads a dataset or
loads a model; a disk that fills up while writing gives one line, not a traceback.
"""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from glioseg.cli import app

runner = CliRunner()
CASE = "Brats18_SYN_000_1"

# the work each command must not start when its output path is unusable
EXPENSIVE = {
    "check": ["glioseg.data.checks.check_dataset"],
    "evaluate": ["glioseg.evaluation.evaluate.evaluate_folder"],
    "show": ["glioseg.cli.show.read_one_case"],
    "preprocess": ["glioseg.data.layouts.find_cases", "glioseg.preprocessing.cache.preprocess_dataset"],
    "synth": ["glioseg.data.synthetic.write_synthetic_dataset"],
    "split": ["glioseg.preprocessing.splits.make_splits"],
    "plot-curves": ["glioseg.training.curves.plot_training_curves"],
    "train": ["glioseg.config.resolve_config", "glioseg.training.trainer.fit",
              "glioseg.training.trainer.fit_all_folds"],
}


def _command(name: str, out: Path, data: Path) -> list[str]:
    """``name``'s arguments writing to ``out`` (a folder for folder outputs, a file for file outputs)."""
    return {
        "check": ["check", str(data), "--json", str(out)],
        "evaluate": ["evaluate", "--pred", str(data), "--gt", str(data), "-o", str(out)],
        "show": ["show", str(data / CASE), "-o", str(out)],
        "preprocess": ["preprocess", str(data), str(out)],
        "synth": ["synth", str(out), "--cases", "1", "--shape", "20"],
        "split": ["split", str(data), "-o", str(out)],
        "plot-curves": ["plot-curves", str(data), "-o", str(out)],
        "train": ["train", str(data), str(out)],
    }[name]


FILE_OUTPUTS = {"check": "report.json", "show": "case.png", "split": "splits.json", "plot-curves": "curves.png"}
FOLDER_OUTPUTS = ("evaluate", "preprocess", "synth", "train")


@pytest.fixture
def no_work(monkeypatch):
    """Make every expensive step fail the test if it is reached."""
    def forbid(target: str) -> None:
        def called(*args, **kwargs):
            raise AssertionError(f"{target} ran before the output path was checked")
        monkeypatch.setattr(target, called)

    for targets in EXPENSIVE.values():
        for target in targets:
            forbid(target)


def _one_error_line(result, *needles: str) -> str:
    assert result.exit_code == 1, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    lines = [line for line in result.output.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, result.output
    assert "Traceback" not in result.output
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def _output(name: str, tmp_path: Path) -> Path:
    return tmp_path / FILE_OUTPUTS.get(name, "out")


@pytest.mark.parametrize("name", list(EXPENSIVE))
def test_output_under_a_file_is_refused_up_front(name, tmp_path, no_work):
    blocker = tmp_path / "blocker"
    blocker.write_text("x")
    out = blocker / _output(name, tmp_path).name
    result = runner.invoke(app, _command(name, out, tmp_path))
    _one_error_line(result, str(out), "is a file" if name in FOLDER_OUTPUTS else "not a folder")
    assert blocker.read_text() == "x"


@pytest.mark.parametrize("name", list(EXPENSIVE))
def test_output_of_the_wrong_kind_is_refused_up_front(name, tmp_path, no_work):
    out = _output(name, tmp_path)
    if name in FOLDER_OUTPUTS:
        out.write_text("keep me")  # a file where a folder is expected
    else:
        out.mkdir()  # a folder where a file is expected
    result = runner.invoke(app, _command(name, out, tmp_path))
    _one_error_line(result, str(out), "not a folder" if name in FOLDER_OUTPUTS else "is a folder")
    assert out.read_text() == "keep me" if name in FOLDER_OUTPUTS else out.is_dir()


@pytest.mark.parametrize("name", list(EXPENSIVE))
def test_read_only_output_is_refused_up_front(name, tmp_path, no_work, monkeypatch):
    # a read-only mount answers os.access(W_OK) with False, for root too (chmod does not stop root)
    monkeypatch.setattr(os, "access", lambda path, mode: not mode & os.W_OK)
    out = _output(name, tmp_path)
    result = runner.invoke(app, _command(name, out, tmp_path))
    _one_error_line(result, str(out), "not writable")
    assert not out.exists()


@pytest.mark.parametrize("args,message", [
    (["preprocess", "DATA", "OUT", "--spacing", "0"], "--spacing"),
    (["preprocess", "DATA", "OUT", "--spacing", "-1"], "--spacing"),
    (["preprocess", "DATA", "OUT", "--spacing", "nan"], "--spacing"),
    (["synth", "OUT", "--seed", "-1"], "--seed"),
])
def test_bad_option_values_are_refused_up_front(args, message, tmp_path, no_work):
    args = [str(tmp_path / a) if a in ("DATA", "OUT") else a for a in args]
    _one_error_line(runner.invoke(app, args), message)
    assert not (tmp_path / "OUT").exists()


@pytest.mark.parametrize("args,option", [
    (["check", "DATA", "--workers", "0"], "--workers"),
    (["preprocess", "DATA", "OUT", "--workers", "0"], "--workers"),
    (["evaluate", "--pred", "DATA", "--gt", "DATA", "--workers", "0"], "--workers"),
    (["synth", "OUT", "--cases", "0"], "--cases"),
    (["train", "DATA", "OUT", "--epochs", "0"], "--epochs"),
    (["train", "DATA", "OUT", "--fold", "-1"], "--fold"),
])
def test_out_of_range_counts_are_one_usage_line(args, option, tmp_path, no_work):
    args = [str(tmp_path / a) if a in ("DATA", "OUT") else a for a in args]
    result = runner.invoke(app, args)
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if option in line and "Invalid value" in line]
    assert len(lines) == 1, result.output


# ----------------------------------------------------------------------------- outputs that overlap the inputs


@pytest.fixture
def raw(make_synthetic_dataset, tmp_path) -> Path:
    """A writable copy of a 2-case BraTS 2017 dataset."""
    copy = tmp_path / "raw"
    shutil.copytree(make_synthetic_dataset(n_cases=2, shape=(24, 24, 24)), copy)
    return copy


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("out", ["raw", f"raw/{CASE}", "."])
def test_preprocess_never_writes_over_its_input(raw, tmp_path, out, monkeypatch):
    monkeypatch.setattr("glioseg.preprocessing.cache.preprocess_dataset",
                        lambda *a, **k: (_ for _ in ()).throw(AssertionError("preprocessed into the input")))
    before = _snapshot(raw)
    target = raw / CASE if out == f"raw/{CASE}" else (tmp_path if out == "." else raw)
    dataset = raw / CASE if out == "." else raw
    result = runner.invoke(app, ["preprocess", str(dataset), str(target)])
    _one_error_line(result, "OUT", str(target), "outside the input")
    assert _snapshot(raw) == before


def test_check_json_never_replaces_a_dataset_file(raw):
    seg = raw / CASE / f"{CASE}_seg.nii.gz"
    before = seg.read_bytes()
    _one_error_line(runner.invoke(app, ["check", str(raw), "--json", str(seg)]), "--json", str(seg))
    assert seg.read_bytes() == before


def test_synth_refuses_a_folder_that_holds_files(raw):
    before = _snapshot(raw)
    _one_error_line(runner.invoke(app, ["synth", str(raw), "--cases", "1", "--shape", "20"]), "not empty")
    assert _snapshot(raw) == before


def test_train_refuses_the_preprocessed_folder_as_run(tmp_path, no_work):
    _one_error_line(runner.invoke(app, ["train", str(tmp_path), str(tmp_path)]), "preprocessed dataset itself")


# ----------------------------------------------------------------------------- a disk that fills up while writing


def _disk_full(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def _disk_full_after(n: int, writer):
    """A writer that works ``n`` times and then finds the disk full."""
    calls = {"n": 0}

    def write(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] > n:
            _disk_full()
        return writer(*args, **kwargs)

    write.calls = calls  # type: ignore[attr-defined]
    return write


def test_check_json_disk_full(raw, tmp_path, monkeypatch):
    monkeypatch.setattr("glioseg.data.reports.write_report_json", _disk_full)
    report = tmp_path / "r" / "report.json"
    result = runner.invoke(app, ["check", str(raw), "--json", str(report)])
    _one_error_line(result, "--json", str(report), "No space left", "free some space")
    assert not report.exists()


def _predictions(raw: Path, tmp_path: Path) -> Path:
    pred = tmp_path / "pred"
    pred.mkdir()
    for case in (CASE, "Brats18_SYN_001_1"):
        shutil.copy(raw / case / f"{case}_seg.nii.gz", pred / f"{case}.nii.gz")
    return pred


def test_evaluate_disk_full_leaves_no_partial_report(raw, tmp_path, monkeypatch):
    import glioseg.evaluation.report as report

    monkeypatch.setattr(report, "write_summary_json", _disk_full)  # after cases.csv was written
    pred, out = _predictions(raw, tmp_path), tmp_path / "eval"
    result = runner.invoke(app, ["evaluate", "--pred", str(pred), "--gt", str(raw), "-o", str(out),
                                 "--no-thumbnails"])
    _one_error_line(result, "-o", str(out), "No space left")
    assert list(out.iterdir()) == []  # not cases.csv without summary.json and report.html


def test_evaluate_writes_all_three_files(raw, tmp_path):
    pred, out = _predictions(raw, tmp_path), tmp_path / "eval"
    result = runner.invoke(app, ["evaluate", "--pred", str(pred), "--gt", str(raw), "-o", str(out),
                                 "--no-thumbnails"])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == ["cases.csv", "report.html", "summary.json"]


def test_show_disk_full(raw, tmp_path, monkeypatch):
    import glioseg.evaluation.figures as figures

    png = tmp_path / "pics" / "case.png"
    monkeypatch.setattr(figures, "save_figure", _disk_full)
    _one_error_line(runner.invoke(app, ["show", str(raw / CASE), "-o", str(png)]), "-o", str(png), "No space")
    monkeypatch.undo()
    monkeypatch.setattr(figures, "save_gif", _disk_full)  # the PNG is written, then the GIF fails
    result = runner.invoke(app, ["show", str(raw / CASE), "-o", str(png), "--gif"])
    _one_error_line(result, "-o", str(png.with_suffix(".gif")), "No space")
    assert not png.exists() and not png.with_suffix(".gif").exists()


def test_show_into_a_folder_refuses_a_folder_named_like_the_picture(raw, tmp_path):
    (tmp_path / "pics" / f"{CASE}.png").mkdir(parents=True)
    result = runner.invoke(app, ["show", str(raw / CASE), "-o", str(tmp_path / "pics")])
    _one_error_line(result, "-o", f"{CASE}.png", "is a folder")


def test_preprocess_disk_full_stops_the_batch(raw, tmp_path, monkeypatch):
    import glioseg.preprocessing.cache as cache

    save = _disk_full_after(0, cache.save_preprocessed)
    monkeypatch.setattr(cache, "save_preprocessed", save)
    out = tmp_path / "pre"
    result = runner.invoke(app, ["preprocess", str(raw), str(out)])
    _one_error_line(result, "OUT", str(out), "No space left", "free some space")
    assert save.calls["n"] == 1  # stopped: the next case would meet the same full disk
    assert not [p for p in out.iterdir() if p.is_dir()]


@pytest.mark.parametrize("existing", [False, True])
def test_synth_disk_full_leaves_nothing(tmp_path, monkeypatch, existing):
    import glioseg.data.synthetic as synthetic

    monkeypatch.setattr(synthetic, "_save_nifti", _disk_full_after(3, synthetic._save_nifti))
    out = tmp_path / "syn"
    if existing:
        out.mkdir()
    result = runner.invoke(app, ["synth", str(out), "--cases", "2", "--shape", "20"])
    _one_error_line(result, "OUT", str(out), "No space left")
    assert (out.is_dir() and not any(out.iterdir())) if existing else not out.exists()


def test_split_disk_full(tmp_path, monkeypatch):
    import glioseg.preprocessing.splits as splits

    monkeypatch.setattr("glioseg.preprocessing.cache.list_preprocessed", lambda root: [f"c{i}" for i in range(6)])
    monkeypatch.setattr(splits, "save_splits", _disk_full)
    out = tmp_path / "splits.json"
    _one_error_line(runner.invoke(app, ["split", str(tmp_path), "-o", str(out)]), "-o", str(out), "No space")
    assert not out.exists()


def test_plot_curves_disk_full(tmp_path, monkeypatch):
    import glioseg.training.curves as curves

    log = tmp_path / "run" / "main" / "log.csv"
    log.parent.mkdir(parents=True)
    log.write_text("epoch,step,lr,train_loss,seconds\n0,3,0.001,0.9,1.0\n1,6,0.001,0.8,2.0\n")
    monkeypatch.setattr(curves, "save_png", _disk_full)
    result = runner.invoke(app, ["plot-curves", str(tmp_path / "run")])
    _one_error_line(result, "-o", str(tmp_path / "run" / "curves.png"), "No space")
    assert not (tmp_path / "run" / "curves.png").exists()


def test_split_never_replaces_a_file_of_the_preprocessed_dataset(tmp_path, no_work):
    (tmp_path / "case").mkdir()
    for target in (tmp_path / "dataset.json", tmp_path / "case" / "meta.json"):
        target.write_text("{}")
        _one_error_line(runner.invoke(app, ["split", str(tmp_path), "-o", str(target)]), "-o", str(target))
        assert target.read_text() == "{}"


def test_plot_curves_writes_only_png(tmp_path, no_work):
    log = tmp_path / "log.csv"
    log.write_text("epoch,step\n")
    _one_error_line(runner.invoke(app, ["plot-curves", str(tmp_path), "-o", str(log)]), "-o", ".png")
    assert log.read_text() == "epoch,step\n"
