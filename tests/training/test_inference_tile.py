"""The tile ``glioseg predict`` uses for a trained stage: the one the run recorded (the tile its
validation predicted with), so that predictions score as the training log did; ensembles whose
members recorded different tiles share the one covering each."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from glioseg.artifacts.rundir import load_run
from glioseg.inference.predictor import Predictor, stages_from_bundles
from glioseg.training.trainer import fit

sys.path.insert(0, str(Path(__file__).parent))
from test_trainer import tiny_config


@pytest.fixture(scope="module")
def patch_run(preprocessed, tmp_path_factory) -> Path:
    """A run trained on 16^3 patches of the 32^3 cases: validated on whole cases."""
    run = tmp_path_factory.mktemp("tile") / "run"
    fit(tiny_config(epochs=1, iterations=1, patch_size=(16, 16, 16)), preprocessed, run, show_progress=False)
    return run


def test_patch_trained_stage_predicts_with_the_recorded_whole_case_tile(patch_run):
    recorded = json.loads((patch_run / "run.json").read_text())["stages"]["main"]["patch_size"]
    assert recorded == [32, 32, 32]  # the whole case, not the 16^3 training patch
    assert load_run(patch_run).stages["main"].patch_size == (32, 32, 32)
    assert Predictor.from_run(patch_run, device="cpu").stages["main"].patch_size == (32, 32, 32)


def test_run_without_a_recorded_tile_falls_back_to_the_config(patch_run, tmp_path):
    import shutil

    old = tmp_path / "old"
    shutil.copytree(patch_run, old)
    info = json.loads((old / "run.json").read_text())
    del info["stages"]["main"]["patch_size"]
    (old / "run.json").write_text(json.dumps(info))
    assert load_run(old).stages["main"].patch_size == (16, 16, 16)


def test_ensemble_members_with_different_tiles_share_the_covering_tile(patch_run):
    a, b = load_run(patch_run), load_run(patch_run)
    b.stages["main"].patch_size = (48, 32, 16)
    stage = stages_from_bundles([a, b])["main"]
    assert stage.patch_size == (48, 32, 32) and len(stage.models) == 2


def test_ensemble_members_with_different_targets_are_still_refused(patch_run):
    a, b = load_run(patch_run), load_run(patch_run)
    b.stages["main"].target = "labels"
    with pytest.raises(ValueError, match="differ in spacing, target"):
        stages_from_bundles([a, b])
