"""DistributedDataParallel on CPU (gloo): two processes train and end with identical weights."""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from glioseg.data.layouts import find_cases
from glioseg.preprocessing.cache import preprocess_dataset
from glioseg.training.dataset import StepSampler
from glioseg.training.distributed import DistInfo

sys.path.insert(0, str(Path(__file__).parent))
from test_trainer import tiny_config


def _worker(rank: int, world: int, pre: str, run: str, out: str, init: str) -> None:
    import torch.distributed as dist

    from glioseg.training.distributed import init_distributed
    from glioseg.training.trainer import fit

    info = DistInfo(rank, world, 0, init)
    assert init_distributed(info, "cpu")
    try:
        config = replace(tiny_config(epochs=1, iterations=2), deterministic=False)
        result = fit(config, pre, run, dist=info, show_progress=False)
        torch.save({k: v.clone() for k, v in result.model.state_dict().items()}, f"{out}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_step_sampler_shards_ranks_without_overlap():
    ranks = [list(StepSampler(1, 3, batch_size=2, rank=r, world_size=2)) for r in range(2)]
    assert ranks == [[4, 5, 8, 9], [6, 7, 10, 11]]
    assert len(StepSampler(1, 3, 2, 1, 2)) == 4


@pytest.mark.skipif(not torch.distributed.is_available() or not torch.distributed.is_gloo_available(),
                    reason="torch built without gloo")
def test_two_gloo_processes_end_with_identical_weights(make_synthetic_dataset, tmp_path):
    raw = make_synthetic_dataset(n_cases=4, shape=(32, 32, 32), seed=1)
    pre = tmp_path / "pre"
    assert not preprocess_dataset(find_cases(raw), pre).failed
    run = tmp_path / "run"
    mp.spawn(_worker, args=(2, str(pre), str(run), str(tmp_path), f"file://{tmp_path}/pg"), nprocs=2, join=True)
    a, b = torch.load(tmp_path / "rank0.pt", weights_only=True), torch.load(tmp_path / "rank1.pt", weights_only=True)
    from glioseg.artifacts.rundir import build_stage_model
    from glioseg.runtime import seed_everything

    seed_everything(tiny_config().seed)  # rank 0's initialisation, which DDP broadcasts
    fresh = build_stage_model(tiny_config().stage("main")).state_dict()
    changed = False
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0, msg=key)
        changed |= not torch.equal(a[key], fresh[key])
    assert changed  # the ranks trained from rank 0's start (and stayed in sync)
    assert (run / "main" / "model.safetensors").is_file() and (run / "run.json").is_file()
