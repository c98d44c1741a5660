"""A DICOM folder of several studies is a batch: a study whose series cannot be assigned or read is
reported as a failed case (one line naming it, the series and the fix; a failed manifest line;
non-zero exit) and the other studies are still predicted or checked. With --num-shards each shard
converts only its own studies, and each failed study is reported by exactly one shard."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from glioseg.cli import app
from glioseg.interop.dicom import find_series

sys.path.insert(0, str(Path(__file__).parent))
from test_dicom_cli import _dicom_study, fake  # noqa: F401 -- fake: the fixture of a fake predictor

runner = CliRunner()


@pytest.fixture()
def export(tmp_path: Path) -> Path:
    """anna (fine), bert (no T2 series: cannot be assigned), carl (a T1 slice missing: cannot be read)."""
    root = tmp_path / "export"
    for seed, name in enumerate(("anna", "bert", "carl")):
        _dicom_study(root / name, seed=seed)
    shutil.rmtree(root / "bert" / "t2")
    [t1] = [s for s in find_series(root / "carl") if s.files[0].parent.name == "t1"]
    sorted(t1.files)[5].unlink()
    return root


def _records(out: Path, name: str = "manifest.jsonl") -> dict[str, dict]:
    return {r["id"]: r for r in map(json.loads, (out / name).read_text().splitlines())}


@pytest.mark.usefixtures("fake")
def test_predict_goes_on_past_bad_studies_and_names_them(tmp_path: Path, export: Path) -> None:
    out = tmp_path / "out"
    result = runner.invoke(app, ["predict", "--dicom", str(export), "-o", str(out)])
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.output
    assert "Traceback" not in result.output
    assert (out / "anna.nii.gz").is_file() and not (out / "bert.nii.gz").exists() and not (out / "carl.nii.gz").exists()
    assert "1 predicted, 0 skipped, 2 failed" in result.output
    assert "2 case(s) failed: bert, carl" in result.output
    records = _records(out)
    assert records["anna"]["status"] == "done"
    assert records["bert"]["status"] == "failed" and "no series looks like T2" in records["bert"]["error"]
    assert "--series" in records["bert"]["error"]
    assert records["carl"]["status"] == "failed" and "study carl" in records["carl"]["error"]
    assert "not evenly spaced" in records["carl"]["error"]


@pytest.mark.usefixtures("fake")
def test_every_study_bad_is_one_line_and_nothing_written(tmp_path: Path, export: Path) -> None:
    shutil.rmtree(export / "anna")
    out = tmp_path / "out"
    result = runner.invoke(app, ["predict", "--dicom", str(export), "-o", str(out)])
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit)
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: none of the 2 studies could be read")
    assert "study bert" in lines[0] and "study carl" in lines[0]
    assert not out.exists()


@pytest.mark.usefixtures("fake")
def test_shards_convert_only_their_own_studies(tmp_path: Path, export: Path) -> None:
    _dicom_study(export / "dora", seed=3)  # shard 0: anna, carl; shard 1: bert, dora
    out = tmp_path / "out"
    seen: dict[str, str] = {}
    for shard in (0, 1):
        result = runner.invoke(app, ["predict", "--dicom", str(export), "-o", str(out), "--num-shards", "2",
                                     "--shard-id", str(shard)])
        assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.output
        for case_id, record in _records(out, f"manifest.shard-{shard}-of-2.jsonl").items():
            assert case_id not in seen, f"{case_id} reported by two shards"
            seen[case_id] = record["status"]
        assigned = {n for n in ("anna", "bert", "carl", "dora") if f"{n}: series assigned" in result.output}
        assert assigned == {["anna", "dora"][shard]}, "a shard converts only its own studies"
    assert seen == {"anna": "done", "bert": "failed", "carl": "failed", "dora": "done"}


def test_check_reports_bad_studies_as_failed_cases(tmp_path: Path, export: Path) -> None:
    report = tmp_path / "report.json"
    result = runner.invoke(app, ["check", "--dicom", str(export), "--json", str(report)])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "1/3 cases passed" in result.output
    assert "no series looks like T2" in result.output and "not evenly spaced" in result.output
    result = runner.invoke(app, ["info", "--dicom", str(export)])
    assert result.exit_code == 1 and "holds 3 studies (anna, bert, carl)" in result.output
