"""Fixtures of the interop tests: a tiny two-fold cascade run (random weights) and its exports."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from glioseg.artifacts.rundir import build_stage_model
from glioseg.artifacts.weights import save_weights
from glioseg.config import ModelConfig, StageConfig, TrainConfig, save_config
from glioseg.inference.postprocess import PostprocessConfig, save_postprocess


def tiny_config() -> TrainConfig:
    """Low (2 mm, 32^3 window) and high (1 mm, 48^3 window) stages of a depth-3, 4-filter network."""
    model = ModelConfig(base_filters=4, depth=3, dropout=0.3)
    low = StageConfig(name="low", spacing_mm=2.0, patch_size=(16, 16, 16), val_window=(32,) * 3, model=model)
    high = StageConfig(name="high", spacing_mm=1.0, patch_size=(16, 16, 16), val_window=(48,) * 3, model=model,
                       cascade_from="low")
    return TrainConfig(preset="test", stages=(low, high))


def write_tiny_run(run_dir: Path, seed: int = 0) -> Path:
    """One run directory with the trainer's layout and seeded random weights (scaled: mixed outputs)."""
    config = tiny_config()
    run_dir.mkdir(parents=True)
    save_config(config, run_dir / "config.yaml")
    normalisation = {"method": "z-score inside the brain after percentile clipping", "version": 1,
                     "target_spacing": 1.0, "percentiles": [0.5, 99.5], "margin": 2}
    (run_dir / "run.json").write_text(json.dumps({
        "format": "glioseg-run/1", "label_scheme": "brats2017", "normalisation": normalisation,
        "stages": {s.name: {"spacing_mm": s.spacing_mm} for s in config.stages}}))
    for i, stage in enumerate(config.stages):
        torch.manual_seed(seed + i)
        model = build_stage_model(stage)
        with torch.no_grad():
            for p in model.parameters():
                p.mul_(3.0)
        save_weights(model, run_dir / stage.name / "model.safetensors", {"stage": stage.name})
    return run_dir


@pytest.fixture(scope="session")
def tiny_folds(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder of two fold runs (``fold_0``, ``fold_1``), each with low and high stages, and a tuned
    ``postprocess.json`` at the top. Read-only."""
    root = tmp_path_factory.mktemp("tiny_folds") / "model"
    for fold in (0, 1):
        write_tiny_run(root / f"fold_{fold}", seed=10 * fold)
    save_postprocess(PostprocessConfig(thresholds=(0.4, 0.5, 0.6)), root)
    return root


@pytest.fixture(scope="session")
def graph_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A graph cache shared by the tests (entries are exported once per session). Read-only."""
    return tmp_path_factory.mktemp("graph_cache")


@pytest.fixture(scope="session")
def tiny_onnx(tiny_folds: Path, graph_cache: Path) -> Path:
    """``tiny_folds`` exported as ONNX (the graph cache's entry). Read-only (copy it before tampering)."""
    pytest.importorskip("onnx")
    from glioseg.interop.backends import cached_export

    return cached_export(tiny_folds, "onnxruntime", graph_cache)
