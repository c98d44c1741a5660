"""The recipes the repository ships: every config loads, every script parses."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from glioseg.config import resolve_config

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("path", sorted((ROOT / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_config_loads_and_checks_its_fields(path):
    config = resolve_config(config_file=path)
    for stage in config.stages:
        assert stage.epochs * stage.iterations > 0
        assert all(p % 16 == 0 for p in stage.patch_size)


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
@pytest.mark.parametrize("path", sorted((ROOT / "scripts").glob("*.sh")), ids=lambda p: p.name)
def test_script_parses(path):
    result = subprocess.run(["bash", "-n", str(path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def _fake_bin(tmp_path: Path) -> Path:
    """A BIN folder whose ``glioseg`` only records its arguments."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "glioseg"
    fake.write_text(f'#!/bin/sh\necho "$@" >> {tmp_path}/calls.txt\n')
    fake.chmod(0o755)
    return bin_dir


def _train_cv(tmp_path: Path, folds: str) -> subprocess.CompletedProcess:
    env = {"PATH": "/usr/bin:/bin", "BIN": str(_fake_bin(tmp_path)), "SHARED": str(tmp_path / "shared")}
    return subprocess.run(["bash", str(ROOT / "scripts/train_cv.sh"), str(tmp_path / "work"), folds],
                          capture_output=True, text=True, cwd=ROOT, env=env)


def test_train_cv_trains_each_fold_into_the_cv_layout(tmp_path):
    result = _train_cv(tmp_path, "0 3")
    assert result.returncode == 0, result.stderr
    calls = (tmp_path / "calls.txt").read_text().splitlines()
    assert calls[0].startswith("preprocess ") and "brats18_extra" in calls[0]
    assert calls[1].startswith("split ") and calls[1].count("--mapping") == 2
    trains = [c for c in calls if c.startswith("train ")]
    assert [c.split()[2] for c in trains] == [str(tmp_path / "work/cv/fold_0"), str(tmp_path / "work/cv/fold_3")]
    assert all("--fold" in c and "configs/recipe_2mm_patch64_cnr.yaml" in c for c in trains)


def test_train_cv_refuses_a_bad_fold(tmp_path):
    result = _train_cv(tmp_path, "0 x")
    assert result.returncode == 2
    assert "FOLDS must be fold numbers, got 'x'" in result.stderr


def test_learning_curve_script_draws_folds_their_mean_and_heldout_points(tmp_path):
    """scripts/learning_curve.py: two validated logs (same steps), one not validated yet, a held-out point."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("learning_curve", ROOT / "scripts" / "learning_curve.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    header = "epoch,step,lr,train_loss,seconds,dice_WT,dice_TC,dice_ET,dice_mean\n"
    for k, shift in enumerate((0.0, 0.05)):
        rows = [f"{e},{25 * (e + 1)},0.1,1.0,1.0," + (",".join(f"{0.5 + shift + e / 100:.3f}" for _ in range(4))
                                                      if e % 2 else ",,,") for e in range(6)]
        (tmp_path / f"fold_{k}_log.csv").write_text(header + "\n".join(rows) + "\n")
    (tmp_path / "fold_2_log.csv").write_text("epoch,step,lr,train_loss,seconds\n0,25,0.1,1.0,1.0\n")
    heldout = tmp_path / "heldout.csv"
    heldout.write_text('label,iterations,WT,TC,ET\n"fold 0, final",150,0.8,0.7,0.6\n')
    steps, dice = module._validated(tmp_path / "fold_1_log.csv")
    assert steps.tolist() == [50, 100, 150] and dice["ET"].tolist() == pytest.approx([0.56, 0.58, 0.60])
    out = module.draw(sorted(tmp_path.glob("fold_*_log.csv")), heldout, tmp_path / "lc.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
