"""Training one stage of a run: data, loop, validation, logs, checkpoints, resume and DDP.

The run directory layout is described in :mod:`glioseg.artifacts.rundir`, checkpoints in
:mod:`glioseg.training.checkpoint`, the per-epoch validation in :mod:`glioseg.training.validation`.

Exactness: sample ``j`` of iteration ``it`` of epoch ``e`` on rank ``r`` is patch
``(it * world + r) * batch + j`` of epoch ``e`` (a pure function of the seed, see
:class:`glioseg.training.dataset.PatchDataset`), and the torch generator is re-seeded from
``(seed, rank, global step)`` before each step, so a run resumed from any checkpoint repeats the
uninterrupted run (in deterministic mode on CPU).
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from glioseg.artifacts.rundir import (
    build_stage_model,
    prepare_run,
    record_stage,
    resolve_split,
)
from glioseg.artifacts.weights import TrainError, save_weights, unwrap
from glioseg.config import StageConfig, TrainConfig
from glioseg.runtime import (
    autocast_context,
    check_precision,
    seed_everything,
    select_device,
    set_deterministic,
)
from glioseg.training.checkpoint import Progress, load_checkpoint, save_checkpoint
from glioseg.training.curves import write_training_log
from glioseg.training.losses import build_loss
from glioseg.training.validation import validate

SPACING_TOLERANCE = 0.05  # relative

__all__ = ["DistInfo", "StageResult", "fit", "fit_all_folds", "init_distributed", "lr_at", "train_stage"]


@dataclass(frozen=True)
class DistInfo:
    """Process group membership (from torchrun's RANK/WORLD_SIZE/LOCAL_RANK, read by the CLI)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    init_method: str = "env://"

    @property
    def is_main(self) -> bool:
        """Only the main process writes files."""
        return self.rank == 0


@dataclass
class StageResult:
    """Outcome of :func:`train_stage`: ``model`` is the trained network (last weights, unwrapped)."""

    stage_dir: Path
    progress: Progress
    finished: bool
    model: nn.Module


# ----------------------------------------------------------------------------- schedule, seeds


def lr_at(stage: StageConfig, epoch: int) -> float:
    """Learning rate of ``epoch`` (0-based) under the stage's schedule."""
    o, frac = stage.optim, min(epoch / stage.epochs, 1.0)
    if o.schedule == "exponential":
        return o.lr * o.decay**epoch
    if o.schedule == "poly":
        return o.lr * (1.0 - frac) ** o.poly_power
    if o.schedule == "cosine":
        return o.lr * 0.5 * (1.0 + math.cos(math.pi * frac))
    return o.lr


def step_seed(seed: int, rank: int, step: int) -> int:
    """Seed of the torch generator for one step of one rank (dropout, anything stochastic)."""
    return (seed * 1_000_003 + rank * 7_919 + step * 104_729) % (2**63)


# ----------------------------------------------------------------------------- data


def make_dataset(root: Path, case_ids: Sequence[str], stage: StageConfig, seed: int, world_size: int = 1) -> Any:
    """The training patch dataset of a stage: ``iterations x batch x world`` samples per epoch.

    Sample ``i`` of epoch ``e`` depends only on ``(seed, e, i)`` (:class:`glioseg.training.dataset.PatchDataset`).
    """
    from glioseg.training.augment import default_augmentation
    from glioseg.training.dataset import PatchDataset

    return PatchDataset(root, list(case_ids), None if stage.whole_volume else stage.patch_size,
                        fg_fraction=stage.fg_fraction, augment=default_augmentation() if stage.augment else None,
                        seed=seed, length=stage.iterations * stage.batch_size * world_size)


class StepSampler(torch.utils.data.Sampler[int]):
    """Sample indices of iterations ``[start, stop)`` of an epoch for one rank.

    Iteration ``it`` of rank ``r`` takes samples ``(it * world + r) * batch + j``, so the ranks
    share an epoch's samples without overlap and a resumed epoch continues where it stopped.
    """

    def __init__(self, start: int, stop: int, batch_size: int, rank: int = 0, world_size: int = 1) -> None:
        self.start, self.stop, self.batch_size = start, stop, batch_size
        self.rank, self.world_size = rank, world_size

    def __iter__(self) -> Iterator[int]:
        for step in range(self.start, self.stop):
            base = (step * self.world_size + self.rank) * self.batch_size
            yield from range(base, base + self.batch_size)

    def __len__(self) -> int:
        return (self.stop - self.start) * self.batch_size


def batches(dataset: Any, start: int, stop: int, stage: StageConfig, dist: DistInfo,
            num_workers: int) -> torch.utils.data.DataLoader:
    """DataLoader yielding this rank's batches of iterations ``[start, stop)`` of the current epoch."""
    sampler = StepSampler(start, stop, stage.batch_size, dist.rank, dist.world_size)
    return torch.utils.data.DataLoader(dataset, batch_size=stage.batch_size, sampler=sampler,
                                       num_workers=num_workers)


def check_spacing(root: Path, case_ids: Sequence[str], stage: StageConfig) -> None:
    """Raise TrainError when the preprocessed cases are not at the stage's spacing."""
    from glioseg.preprocessing.cache import read_meta

    if stage.spacing_mm is None or not case_ids:
        return
    meta = read_meta(root, case_ids[0])
    spacing = meta.get("effective_spacing") or meta.get("spacing")
    if spacing is None:
        return
    if any(abs(float(s) - stage.spacing_mm) > SPACING_TOLERANCE * stage.spacing_mm for s in spacing):
        raise TrainError(
            f"stage {stage.name} trains at {stage.spacing_mm} mm but case {case_ids[0]} in {root} is at "
            f"{[round(float(s), 3) for s in spacing]} mm; preprocess for this stage with "
            f"`glioseg preprocess DATASET OUT --spacing {stage.spacing_mm:g}` and pass OUT")


# ----------------------------------------------------------------------------- logs


class _Logger:
    """TensorBoard scalars + rich progress bar on the main process; silent elsewhere."""

    def __init__(self, stage_dir: Path, progress: Progress, total: int, enabled: bool, show: bool) -> None:
        self.tb = self.bar = None
        if not enabled:
            return
        from torch.utils.tensorboard import SummaryWriter

        self.tb = SummaryWriter(str(stage_dir / "tb"), purge_step=progress.global_step or None)
        if show:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )
            from rich.progress import Progress as Bar

            self.bar = Bar(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                           TimeElapsedColumn(), TimeRemainingColumn())
            self.bar.start()
            self.task = self.bar.add_task("train", total=total, completed=progress.global_step)

    def step(self, progress: Progress, loss: float, lr: float) -> None:
        if self.tb is not None:
            self.tb.add_scalar("train/loss", loss, progress.global_step)
        if self.bar is not None:
            self.bar.update(self.task, completed=progress.global_step,
                            description=f"epoch {progress.epoch} loss {loss:.4f} lr {lr:.2e}")

    def epoch(self, row: dict[str, float]) -> None:
        if self.tb is not None:
            for key, value in row.items():
                if key not in ("epoch", "step"):
                    self.tb.add_scalar(f"epoch/{key}", value, int(row["epoch"]))
            self.tb.flush()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()
        if self.tb is not None:
            self.tb.close()


# ----------------------------------------------------------------------------- training


def train_step(model: nn.Module, batch: dict[str, Any], loss_fn: nn.Module, optimizer: torch.optim.Optimizer,
               scaler: torch.amp.GradScaler | None, device: torch.device, stage: StageConfig) -> float:
    """One optimisation step on a batch ``{"image": (B,4,*P) float32, "label": (B,*P) uint8}``; returns the loss."""
    image = batch["image"].to(device, non_blocking=True)
    label = batch["label"].to(device, non_blocking=True)
    optimizer.zero_grad(set_to_none=True)
    with autocast_context(device, stage.precision):
        logits = model(image)
    loss = loss_fn(logits.float(), label)
    if not torch.isfinite(loss):
        raise TrainError(f"stage {stage.name}: the loss became {loss.item()}; lower optim.lr or use "
                         "precision fp32")
    (scaler.scale(loss) if scaler is not None else loss).backward()
    if scaler is not None:
        scaler.unscale_(optimizer)
    if stage.optim.grad_clip:
        nn.utils.clip_grad_norm_(model.parameters(), stage.optim.grad_clip)
    if scaler is not None:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
    return float(loss.detach())


def train_stage(config: TrainConfig, stage_name: str, preprocessed: Path | str, run_dir: Path | str,
                train_ids: Sequence[str], val_ids: Sequence[str], *, resume: bool = True,
                max_steps: int | None = None, dist: DistInfo | None = None,
                show_progress: bool = True) -> StageResult:
    """Train (or resume) one stage into ``run_dir/<stage>``.

    Args:
        config: resolved config (written to ``run_dir/config.yaml`` by :func:`prepare_run`).
        stage_name: the stage to train.
        preprocessed: preprocessed dataset at the stage's spacing.
        run_dir: run directory.
        train_ids, val_ids: case IDs.
        resume: continue from ``state.pt`` when present (False starts over).
        max_steps: stop (after checkpointing) once this global step is reached; simulates an
            interruption in tests.
        dist: process group membership (None: single process).
        show_progress: rich progress bar on the main process.

    Returns:
        The stage folder, final progress and whether every epoch ran.

    Raises:
        TrainError / ConfigError: unusable data, config or checkpoint.
    """
    dist = dist or DistInfo()
    stage, root, run_dir = config.stage(stage_name), Path(preprocessed), Path(run_dir)
    stage_dir = run_dir / stage.name
    device = _device(config, dist)
    check_precision(device, stage.precision)
    check_spacing(root, list(train_ids), stage)
    set_deterministic(config.deterministic)
    seed_everything(config.seed + dist.rank)
    if config.threads:
        torch.set_num_threads(config.threads)
    model = build_stage_model(stage).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr_at(stage, 0), weight_decay=stage.optim.weight_decay)
    scaler = torch.amp.GradScaler(device.type) if stage.precision == "fp16" else None
    progress = Progress()
    if resume and (stage_dir / "state.pt").is_file():
        progress = load_checkpoint(stage_dir, model, optimizer, scaler, stage)
    if dist.is_main:
        stage_dir.mkdir(parents=True, exist_ok=True)
    ddp = _wrap_ddp(model, device, dist)
    dataset = make_dataset(root, train_ids, stage, config.seed, dist.world_size)
    loss_fn = build_loss(stage.target, stage.loss.dice_weight, stage.loss.bce_weight, stage.loss.smooth,
                         stage.loss.batch_dice)
    logger = _Logger(stage_dir, progress, stage.epochs * stage.iterations, dist.is_main, show_progress)
    try:
        finished = _loop(ddp, dataset, loss_fn, optimizer, scaler, progress, config, stage, root, run_dir,
                         val_ids, device, dist, logger, max_steps)
    finally:
        logger.close()
    return StageResult(stage_dir, progress, finished, unwrap(ddp))


def _device(config: TrainConfig, dist: DistInfo) -> torch.device:
    device = select_device(config.device)
    if device.type == "cuda" and dist.world_size > 1:
        device = torch.device("cuda", dist.local_rank)
        torch.cuda.set_device(device)
    return device


def _wrap_ddp(model: nn.Module, device: torch.device, dist: DistInfo) -> nn.Module:
    if dist.world_size <= 1:
        return model
    ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids)


def _loop(model: nn.Module, dataset: Any, loss_fn: nn.Module, optimizer: torch.optim.Optimizer,
          scaler: torch.amp.GradScaler | None, progress: Progress, config: TrainConfig, stage: StageConfig,
          root: Path, run_dir: Path, val_ids: Sequence[str], device: torch.device, dist: DistInfo,
          logger: _Logger, max_steps: int | None) -> bool:
    """Epoch/iteration loop; returns False when stopped by ``max_steps``."""
    stage_dir = run_dir / stage.name
    last_save = time.monotonic()
    model.train()
    while progress.epoch < stage.epochs:
        lr = lr_at(stage, progress.epoch)
        for group in optimizer.param_groups:
            group["lr"] = lr
        stop = stage.iterations
        if max_steps is not None:
            stop = min(stop, progress.iteration + max(0, max_steps - progress.global_step))
        dataset.set_epoch(progress.epoch)
        tick = time.monotonic()
        for batch in batches(dataset, progress.iteration, stop, stage, dist, config.num_workers):
            torch.manual_seed(step_seed(config.seed, dist.rank, progress.global_step))
            loss = train_step(model, batch, loss_fn, optimizer, scaler, device, stage)
            progress.iteration += 1
            progress.global_step += 1
            progress.epoch_loss_sum += loss
            logger.step(progress, loss, lr)
            if dist.is_main and time.monotonic() - last_save > 60 * config.checkpoint_minutes:
                progress.seconds += time.monotonic() - tick
                tick = time.monotonic()
                save_checkpoint(stage_dir, model, optimizer, scaler, progress, stage)
                last_save = time.monotonic()
        progress.seconds += time.monotonic() - tick
        if progress.iteration < stage.iterations:  # stopped by max_steps
            if dist.is_main:
                save_checkpoint(stage_dir, model, optimizer, scaler, progress, stage)
            return False
        _end_epoch(model, optimizer, scaler, progress, config, stage, root, run_dir, val_ids, device, dist, logger, lr)
        last_save = time.monotonic()
    return True


def _end_epoch(model: nn.Module, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler | None,
               progress: Progress, config: TrainConfig, stage: StageConfig, root: Path, run_dir: Path,
               val_ids: Sequence[str], device: torch.device, dist: DistInfo, logger: _Logger, lr: float) -> None:
    """Validate when due, update the history and write checkpoints, logs and run.json."""
    stage_dir = run_dir / stage.name
    row: dict[str, float] = {"epoch": progress.epoch, "step": progress.global_step, "lr": lr,
                             "train_loss": progress.epoch_loss_sum / stage.iterations,
                             "seconds": round(progress.seconds, 2)}
    progress.epoch += 1
    progress.iteration, progress.epoch_loss_sum = 0, 0.0
    due = progress.epoch % stage.val_every == 0 or progress.epoch == stage.epochs
    if dist.is_main and due and val_ids:
        row.update(validate(model, root, val_ids, stage, device))
    if dist.is_main:
        score = row.get("dice_mean", -1.0)
        progress.history.append(row)
        # without validation cases there is nothing to select on: the latest weights are the model
        if score > progress.best_score or not val_ids or not (stage_dir / "model.safetensors").exists():
            if score > progress.best_score:
                progress.best_score, progress.best_epoch = score, progress.epoch - 1
            save_weights(model, stage_dir / "model.safetensors",
                         {"stage": stage.name, "epoch": str(progress.epoch - 1), "dice_mean": f"{score:.4f}"})
        save_checkpoint(stage_dir, model, optimizer, scaler, progress, stage)
        write_training_log(stage_dir, progress.history)
        logger.epoch(row)
        record_stage(run_dir, stage, progress.history, progress.best_epoch, progress.seconds)
    if dist.world_size > 1:
        torch.distributed.barrier()


def fit(config: TrainConfig, preprocessed: Path | str, run_dir: Path | str, stage_name: str | None = None,
        *, fold: int | None = None, splits_path: Path | str | None = None, resume: bool = True,
        dist: DistInfo | None = None, show_progress: bool = True, max_steps: int | None = None) -> StageResult:
    """Prepare the run directory and train one stage (the whole of ``glioseg train``).

    Args:
        config: resolved config.
        preprocessed: preprocessed dataset at the stage's spacing.
        run_dir: run directory (created).
        stage_name: stage to train (the first when None).
        fold: cross-validation fold, or None for one train/val split.
        splits_path: a ``splits.json``; otherwise the run's own or new splits.
        resume, dist, show_progress, max_steps: see :func:`train_stage`.

    Returns:
        The stage result.
    """
    dist = dist or DistInfo()
    run_dir = Path(run_dir)
    stage = config.stage(stage_name)
    split = resolve_split(preprocessed, run_dir, config, splits_path, fold)
    if dist.is_main:
        from glioseg.preprocessing.splits import save_splits

        if not (run_dir / "splits.json").is_file():
            save_splits(split["splits"], run_dir / "splits.json")
        prepare_run(config, preprocessed, run_dir, {k: v for k, v in split.items() if k != "splits"})
    if dist.world_size > 1:
        torch.distributed.barrier()
    return train_stage(config, stage.name, preprocessed, run_dir, split["train"], split["val"], resume=resume,
                       max_steps=max_steps, dist=dist, show_progress=show_progress)


def fit_all_folds(config: TrainConfig, preprocessed: Path | str, run_dir: Path | str,
                  stage_name: str | None = None, *, splits_path: Path | str | None = None,
                  **kwargs: Any) -> list[StageResult]:
    """Train one stage on every cross-validation fold, into ``run_dir/fold_<k>/``.

    The splits (``splits_path``, ``run_dir/splits.json``, ``PREPROCESSED/splits.json`` or new
    ``config.folds``-fold splits) are saved as ``run_dir/splits.json`` and shared by the folds.
    Keyword arguments are those of :func:`fit`.
    """
    from glioseg.preprocessing.splits import load_splits, save_splits

    run_dir = Path(run_dir)
    dist = kwargs.get("dist") or DistInfo()
    split = resolve_split(preprocessed, run_dir, config, splits_path, fold=0)
    if dist.is_main and not (run_dir / "splits.json").is_file():
        save_splits(split["splits"], run_dir / "splits.json")
    if dist.world_size > 1:
        torch.distributed.barrier()
    n_folds = len(load_splits(run_dir / "splits.json")["splits"])
    return [fit(config, preprocessed, run_dir / f"fold_{k}", stage_name, fold=k,
                splits_path=run_dir / "splits.json", **kwargs) for k in range(n_folds)]


def init_distributed(dist: DistInfo, device_name: str) -> bool:
    """Join the process group (NCCL on CUDA, gloo on CPU); False when not distributed."""
    if dist.world_size <= 1 or torch.distributed.is_initialized():
        return False
    cuda = select_device(device_name).type == "cuda"
    torch.distributed.init_process_group("nccl" if cuda else "gloo", init_method=dist.init_method,
                                         rank=dist.rank, world_size=dist.world_size)
    return True


