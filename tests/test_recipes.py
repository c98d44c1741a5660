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
    module = _script("learning_curve")
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


def _script(name: str):
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_tumour_contrast_is_the_gap_of_tumour_over_the_rest_of_the_brain():
    import numpy as np

    rng = np.random.default_rng(0)
    image = np.zeros((2, 20, 20, 20), np.float32)
    image[:, 2:18, 2:18, 2:18] = rng.normal(0.0, 0.5, (2, 16, 16, 16))  # the brain; 0 outside
    label = np.zeros((20, 20, 20), np.uint8)
    label[8:12, 8:12, 8:12] = 2
    image[0][label > 0] += 3.0  # channel 0 shows the tumour 3 above the brain, channel 1 not at all
    contrast = _script("tumour_contrast").channel_contrast
    (gap0, sd0), (gap1, _) = contrast(image, label)
    assert gap0 == pytest.approx(3.0, abs=0.15) and abs(gap1) < 0.15 and sd0 == pytest.approx(0.5, abs=0.05)
    assert all(np.isnan(v) for v in contrast(image, label * 0)[0])


def test_tumour_contrast_script_on_a_preprocessed_dataset(make_synthetic_dataset, tmp_path):
    import sys

    data = make_synthetic_dataset(n_cases=2)
    pre = tmp_path / "pre"
    bin_dir = Path(sys.executable).parent
    subprocess.run([str(bin_dir / "glioseg"), "preprocess", str(data), str(pre)], check=True, capture_output=True)
    script = [sys.executable, str(ROOT / "scripts" / "tumour_contrast.py"), str(pre)]
    cases = tmp_path / "cases.csv"
    first = sorted(p.name for p in pre.iterdir() if p.is_dir())[0]
    cases.write_text(f"case_id,dice_WT\n{first},0.5\n")
    done = subprocess.run([*script, "--dice", str(cases), "-o", str(tmp_path / "t.csv")], capture_output=True,
                          text=True)
    assert done.returncode == 0, done.stderr
    rows = (tmp_path / "t.csv").read_text().splitlines()
    assert rows[0].startswith("case_id,gap_t1,gap_t1ce,gap_t2,gap_flair,sd_t1") and len(rows) == 3
    assert "gap_flair" in done.stdout and any(line.startswith(first) and line.endswith("0.50")
                                              for line in done.stdout.splitlines())
    cases.write_text("id,wt\n")
    bad = subprocess.run([*script, "--dice", str(cases)], capture_output=True, text=True)
    assert bad.returncode == 1 and "needs the columns case_id and dice_WT" in bad.stderr
    empty = subprocess.run([*script[:2], str(tmp_path)], capture_output=True, text=True)  # not a preprocessed dataset
    assert empty.returncode == 1 and "no preprocessed cases" in empty.stderr


def test_ship_cv_tunes_scores_both_ways_and_ships_the_tuned_table(tmp_path):
    bin_dir = _fake_bin(tmp_path)
    (bin_dir / "python").write_text(f'#!/bin/sh\necho python "$@" >> {tmp_path}/calls.txt\n')
    (bin_dir / "python").chmod(0o755)
    env = {"PATH": "/usr/bin:/bin", "BIN": str(bin_dir), "SHARED": str(tmp_path / "shared")}
    result = subprocess.run(["bash", str(ROOT / "scripts/ship_cv.sh"), "CV", "PRE", "OUT"], capture_output=True,
                            text=True, cwd=ROOT, env=env)
    assert result.returncode == 0, result.stderr
    calls = (tmp_path / "calls.txt").read_text().splitlines()
    assert calls[0] == "tune-postprocess CV PRE"
    assert calls[1].startswith("cv CV ") and "-o OUT/oof " in calls[1] and "--postprocess" not in calls[1]
    assert calls[2].startswith("cv CV ") and "-o OUT/oof_tuned " in calls[2] and calls[2].endswith("--postprocess CV")
    assert calls[3].startswith("python ") and "ship_model.py CV OUT/oof_tuned/report --validation-command" in calls[3]
    assert "--out" not in calls[3] and len(calls) == 4
    missing = subprocess.run(["bash", str(ROOT / "scripts/ship_cv.sh"), "CV"], capture_output=True, text=True,
                             cwd=ROOT, env=env)
    assert missing.returncode != 0 and "usage: ship_cv.sh CV_ROOT PRE OUT" in missing.stderr
