"""The inference tile a run records is the one its validation used (whole cases for patch-trained stages)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from glioseg.data.layouts import find_cases
from glioseg.preprocessing.cache import list_preprocessed, preprocess_dataset, read_meta
from glioseg.training.dataset import whole_volume_shape
from glioseg.training.trainer import fit

sys.path.insert(0, str(Path(__file__).parent))
from test_trainer import tiny_config


@pytest.fixture(scope="module")
def preprocessed(make_synthetic_dataset, tmp_path_factory) -> Path:
    raw = make_synthetic_dataset(n_cases=4, shape=(56, 48, 40), seed=4)
    out = tmp_path_factory.mktemp("pre_window")
    assert not preprocess_dataset(find_cases(raw), out).failed
    return out


def _recorded(run: Path) -> list[int]:
    return json.loads((run / "run.json").read_text())["stages"]["main"]["patch_size"]


def test_patch_trained_stage_records_the_whole_case_tile(preprocessed, tmp_path):
    run = tmp_path / "run"
    fit(tiny_config(patch_size=(16, 16, 16), epochs=1, iterations=1), preprocessed, run, show_progress=False)
    shapes = [read_meta(preprocessed, c)["shape"] for c in list_preprocessed(preprocessed)]
    expected = list(whole_volume_shape(shapes))
    assert _recorded(run) == expected and expected != [16, 16, 16]
    assert all(e >= max(s[i] for s in shapes) and e % 16 == 0 for i, e in enumerate(expected))


@pytest.mark.parametrize(("changes", "tile"), [({"val_window": (32, 32, 32)}, [32, 32, 32]),
                                               ({"whole_volume": True}, [32, 32, 32])])
def test_val_window_and_whole_volume_stages_keep_their_tile(preprocessed, tmp_path, changes, tile):
    run = tmp_path / "run"
    fit(tiny_config(epochs=1, iterations=1, **changes), preprocessed, run, show_progress=False)
    assert _recorded(run) == tile
