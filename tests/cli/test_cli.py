"""`glioseg synth`, `glioseg check` and `glioseg info` end to end through typer's CliRunner."""

import json

import nibabel as nib
import numpy as np
import pytest
from typer.testing import CliRunner

from glioseg.cli import app

runner = CliRunner()


def test_help_lists_foundation_commands():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in ("synth", "check", "info"):
        assert command in result.output


@pytest.mark.parametrize("layout,scheme,values", [
    ("brats2017", None, {0, 1, 2, 4}),
    ("brats2023", None, {0, 1, 2, 3}),
    ("msd", None, {0, 1, 2, 3}),
    ("nnunet", "brats2024", {0, 1, 2, 3}),
])
def test_synth_then_check(tmp_path, layout, scheme, values):
    out = tmp_path / layout
    args = ["synth", str(out), "--cases", "2", "--layout", layout, "--seed", "3", "--shape", "24,20,16"]
    result = runner.invoke(app, args + (["--label-scheme", scheme] if scheme else []))
    assert result.exit_code == 0, result.output
    assert "wrote 2 synthetic" in result.output
    segs = sorted(p for p in out.rglob("*.nii.gz") if "seg" in p.name or p.parent.name == "labelsTr")
    assert len(segs) == 2
    assert set(np.unique(np.asarray(nib.load(segs[0]).dataobj)).tolist()) == values
    assert nib.load(segs[0]).shape == (24, 20, 16)
    report = tmp_path / "report.json"
    result = runner.invoke(app, ["check", str(out), "--json", str(report)])
    assert result.exit_code == 0, result.output
    assert "2/2 cases passed" in result.output
    data = json.loads(report.read_text())
    assert data["ok"] and data["layout"] == layout and data["n_cases"] == 2
    assert data["scheme"] == (scheme or {"brats2017": "brats2017", "brats2023": "brats2023",
                                         "msd": "msd", "nnunet": "brats2023"}[layout])


def test_synth_same_seed_same_files(tmp_path):
    for name in ("a", "b"):
        assert runner.invoke(app, ["synth", str(tmp_path / name), "--cases", "1", "--shape", "20"]).exit_code == 0
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*.nii.gz"))
    for rel in files:
        a, b = nib.load(tmp_path / "a" / rel), nib.load(tmp_path / "b" / rel)
        assert np.array_equal(np.asarray(a.dataobj), np.asarray(b.dataobj))


@pytest.mark.parametrize("args,message", [
    (["--layout", "brats"], "unknown layout"),
    (["--label-scheme", "brats1999"], "unknown label scheme"),
    (["--shape", "20,20"], "--shape"),
    (["--shape", "abc"], "--shape"),
    (["--shape", "8"], ">= 16"),
])
def test_synth_bad_arguments(tmp_path, args, message):
    result = runner.invoke(app, ["synth", str(tmp_path / "x"), "--cases", "1", *args])
    assert result.exit_code == 1
    assert message in result.output
    assert not list(tmp_path.rglob("*.nii.gz"))


def test_check_fails_on_a_bad_case_and_reports_it(tmp_path):
    out = tmp_path / "d"
    assert runner.invoke(app, ["synth", str(out), "--cases", "3", "--shape", "20"]).exit_code == 0
    bad = out / "Brats18_SYN_001_1" / "Brats18_SYN_001_1_flair.nii.gz"
    bad.write_bytes(bad.read_bytes()[:100])
    seg = out / "Brats18_SYN_002_1" / "Brats18_SYN_002_1_seg.nii.gz"
    img = nib.load(seg)
    nib.save(nib.Nifti1Image(np.zeros(img.shape, np.uint8), img.affine), str(seg))
    report = tmp_path / "r" / "report.json"
    result = runner.invoke(app, ["check", str(out), "--json", str(report)])
    assert result.exit_code == 1
    lines = [line for line in result.output.splitlines() if line.startswith(("ERROR", "WARNING"))]
    assert lines[0].startswith(f"ERROR case Brats18_SYN_001_1 [{bad}]")
    assert lines[1].startswith("WARNING case Brats18_SYN_002_1") and "empty" in lines[1]
    assert "2/3 cases passed" in result.output
    data = json.loads(report.read_text())
    assert [c["status"] for c in data["cases"]] == ["ok", "fail", "warn"]
    assert data["cases"][1]["errors"][0]["path"] == str(bad)
    assert data["n_failed"] == 1 and data["ok"] is False


def test_check_label_scheme_and_layout_options(tmp_path):
    out = tmp_path / "d"
    assert runner.invoke(app, ["synth", str(out), "--cases", "1", "--shape", "20"]).exit_code == 0
    result = runner.invoke(app, ["check", str(out), "--label-scheme", "brats2023"])
    assert result.exit_code == 1 and "unexpected label values [4]" in result.output
    assert runner.invoke(app, ["check", str(out), "--layout", "brats2017"]).exit_code == 0
    result = runner.invoke(app, ["check", str(out), "--layout", "msd"])
    assert result.exit_code == 1 and "no cases found" in result.output


def test_check_missing_folder(tmp_path):
    result = runner.invoke(app, ["check", str(tmp_path / "nowhere")])
    assert result.exit_code == 1 and "not a folder" in result.output


def test_info_on_a_synthetic_case(synthetic_dataset):
    result = runner.invoke(app, ["info", str(synthetic_dataset / "Brats18_SYN_000_1")])
    assert result.exit_code == 0, result.output
    assert "orientation LPS" in result.output and "scheme brats2017" in result.output
    for modality in ("t1", "t1ce", "t2", "flair"):
        assert f"{modality} " in result.output


@pytest.mark.realdata
@pytest.mark.slow
def test_check_real_brats18(shared_brats18, tmp_path):
    report = tmp_path / "report.json"
    result = runner.invoke(app, ["check", str(shared_brats18), "--json", str(report), "--workers", "2"])
    assert result.exit_code == 0, result.output
    data = json.loads(report.read_text())
    assert data["n_cases"] == 24 and data["scheme"] == "brats2017"
    assert all(c["status"] == "ok" and c["scheme"] == "brats2017" for c in data["cases"])
    assert all(c["shape"] == [240, 240, 155] and set(c["label_values"]) <= {0, 1, 2, 4} for c in data["cases"])
