"""Training one stage of a run: the epoch loop, validation, logs, checkpoints and resume.

The run directory layout is described in :mod:`glioseg.artifacts.rundir`, checkpoints in
:mod:`glioseg.training.checkpoint`, the per-epoch validation in :mod:`glioseg.training.validation`,
process groups in :mod:`glioseg.training.distributed`.

Exactness: sample ``j`` of iteration ``it`` of epoch ``e`` on rank ``r`` is patch
``(it * world + r) * batch + j`` of epoch ``e`` (a pure function of the seed, see
:class:`glioseg.training.dataset.PatchDataset`), and the torch generator is re-seeded from
``(seed, rank, global step)`` before each step, so a run resumed from any checkpoint repeats the
uninterrupted run (in deterministic mode on CPU).

Ctrl-C: the first SIGINT asks the loop to stop at the next step boundary (after validation when
it comes during one); the stage is checkpointed there and :class:`TrainingInterrupted` says where
and how to resume. A second Ctrl-C stops at once, checkpointing only when the weights are not
half-updated. Under DDP the ranks agree on the stopping step.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, NoReturn

import torch
from torch import nn

from glioseg.artifacts.resume import ConfigChange
from glioseg.artifacts.rundir import build_stage_model, prepare_run, record_stage, resolve_split
from glioseg.artifacts.weights import TrainError, save_weights, unwrap
from glioseg.config import StageConfig, TrainConfig
from glioseg.runtime import autocast_context, check_precision, seed_everything, set_deterministic
from glioseg.training.checkpoint import Progress, load_checkpoint, save_checkpoint
from glioseg.training.curves import write_training_log
from glioseg.training.dataset import PatchDataset, batches, check_spacing, make_dataset
from glioseg.training.distributed import DistInfo, rank_device, wrap_ddp
from glioseg.training.interrupt import TrainingInterrupted, _StopRequest
from glioseg.training.losses import build_loss
from glioseg.training.monitor import Monitor
from glioseg.training.schedule import lr_at, step_seed
from glioseg.training.validation import validate, validation_window

__all__ = ["StageResult", "fit", "fit_all_folds", "train_stage"]


@dataclass
class StageResult:
    """Outcome of :func:`train_stage`: ``model`` is the trained network (last weights, unwrapped)."""

    stage_dir: Path
    progress: Progress
    finished: bool
    model: nn.Module
    model_selection: str = "last"


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
    _backward_and_step(loss, model, optimizer, scaler, stage.optim.grad_clip)
    return float(loss.detach())


def _backward_and_step(loss: torch.Tensor, model: nn.Module, optimizer: torch.optim.Optimizer,
                       scaler: torch.amp.GradScaler | None, grad_clip: float) -> None:
    """Backward pass, optional gradient clipping and the optimiser step (through the fp16 scaler if any)."""
    (scaler.scale(loss) if scaler is not None else loss).backward()
    if scaler is not None:
        scaler.unscale_(optimizer)
    if grad_clip:
        nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    if scaler is None:
        optimizer.step()
        return
    scaler.step(optimizer)
    scaler.update()


@dataclass
class _StageRun:
    """Everything the loop of one stage touches (built by :func:`train_stage`)."""

    config: TrainConfig
    stage: StageConfig
    root: Path
    run_dir: Path
    val_ids: Sequence[str]
    dist: DistInfo
    device: torch.device
    model: nn.Module
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler | None
    progress: Progress
    dataset: PatchDataset
    loss_fn: nn.Module
    monitor: Monitor
    stop: _StopRequest | None = None
    last_save: float = field(default_factory=time.monotonic)
    # True from the optimiser's step until the step is counted: the weights do not match progress then
    updating: bool = False

    @property
    def window(self) -> tuple[int, int, int] | None:
        """Inference tile to record (see :func:`glioseg.training.validation.validation_window`)."""
        return validation_window(self.stage, self.root, [*self.dataset.case_ids, *self.val_ids])

    @property
    def stage_dir(self) -> Path:
        return self.run_dir / self.stage.name

    def loop(self, max_steps: int | None) -> bool:
        """Epoch/iteration loop; returns False when stopped by ``max_steps`` (after checkpointing).

        Raises:
            TrainingInterrupted: Ctrl-C (any KeyboardInterrupt); the checkpoint is written first.
        """
        self.model.train()
        self.last_save = time.monotonic()
        hook = self.optimizer.register_step_pre_hook(self._updating)
        try:
            return self._epochs(max_steps)
        except KeyboardInterrupt:
            self._interrupted()
        finally:
            hook.remove()

    def _epochs(self, max_steps: int | None) -> bool:
        while self.progress.epoch < self.stage.epochs:
            self._check_stop()
            lr = lr_at(self.stage, self.progress.epoch)
            for group in self.optimizer.param_groups:
                group["lr"] = lr
            self._iterations(lr, self._stop(max_steps))
            if self.progress.iteration < self.stage.iterations:  # stopped by max_steps
                if self.dist.is_main:
                    self._checkpoint()
                return False
            self._end_epoch(lr)
        return True

    def _updating(self, *args: Any) -> None:
        self.updating = True

    def _check_stop(self) -> None:
        """Raise KeyboardInterrupt at this step boundary when Ctrl-C was pressed (on any rank)."""
        requested = self.stop is not None and self.stop.requested
        if self.dist.world_size > 1:  # every rank must stop at the same step
            flag = torch.tensor([float(requested)], device=self.device)
            torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
            requested = bool(flag.item())
        if requested:
            raise KeyboardInterrupt

    def _interrupted(self) -> NoReturn:
        """Checkpoint where training stands (unless the weights are half-updated) and raise TrainingInterrupted."""
        saved = not self.updating
        if saved and self.dist.is_main:
            self._checkpoint()
        if saved and self.dist.world_size > 1:  # the others wait: torchrun stops every rank when one exits
            torch.distributed.barrier()
        raise TrainingInterrupted(self.stage_dir, self.progress, saved)

    def _stop(self, max_steps: int | None) -> int:
        """End of this epoch's iteration range (``max_steps`` may cut it short)."""
        if max_steps is None:
            return self.stage.iterations
        p = self.progress
        return min(self.stage.iterations, p.iteration + max(0, max_steps - p.global_step))

    def _iterations(self, lr: float, stop: int) -> None:
        """Iterations ``[progress.iteration, stop)`` of the epoch, with wall-time checkpoints."""
        p = self.progress
        self.dataset.set_epoch(p.epoch)
        tick = time.monotonic()
        try:
            for batch in batches(self.dataset, p.iteration, stop, self.stage.batch_size, self.dist.rank,
                                 self.dist.world_size, self.config.num_workers):
                torch.manual_seed(step_seed(self.config.seed, self.dist.rank, p.global_step))
                loss = train_step(self.model, batch, self.loss_fn, self.optimizer, self.scaler, self.device,
                                  self.stage)
                p.iteration, p.global_step = p.iteration + 1, p.global_step + 1
                p.epoch_loss_sum, self.updating = p.epoch_loss_sum + loss, False
                self.monitor.step(p, loss, lr)
                if self.dist.is_main and time.monotonic() - self.last_save > 60 * self.config.checkpoint_minutes:
                    p.seconds, tick = p.seconds + time.monotonic() - tick, time.monotonic()
                    self._checkpoint()
                self._check_stop()
        finally:  # an interrupted epoch's time counts too
            p.seconds += time.monotonic() - tick

    def _checkpoint(self) -> None:
        save_checkpoint(self.stage_dir, self.model, self.optimizer, self.scaler, self.progress, self.stage)
        self.last_save = time.monotonic()

    def _end_epoch(self, lr: float) -> None:
        """Close the epoch: its log row, then (main process) validation, weights, logs and run.json.

        A KeyboardInterrupt in here (a second Ctrl-C during validation) puts the progress back to
        the end of the epoch's steps, so that the checkpoint written then redoes the closing.
        """
        p = self.progress
        before = replace(p, history=list(p.history))
        row: dict[str, float] = {"epoch": p.epoch, "step": p.global_step, "lr": lr,
                                 "train_loss": p.epoch_loss_sum / self.stage.iterations,
                                 "seconds": round(p.seconds, 2)}
        p.epoch, p.iteration, p.epoch_loss_sum = p.epoch + 1, 0, 0.0
        try:
            if self.dist.is_main:
                self._record_epoch(row)
        except KeyboardInterrupt:
            for f in fields(Progress):
                setattr(p, f.name, getattr(before, f.name))
            raise
        if self.dist.world_size > 1:
            torch.distributed.barrier()
        self.last_save = time.monotonic()

    def _record_epoch(self, row: dict[str, float]) -> None:
        """Validate when due, then write the best weights, the checkpoint, the logs and run.json."""
        p, stage = self.progress, self.stage
        if self.val_ids and (p.epoch % stage.val_every == 0 or p.epoch == stage.epochs):
            row.update(validate(self.model, self.root, self.val_ids, stage, self.device))
        p.history.append(row)
        self._save_best(row.get("dice_mean", -1.0))
        self._checkpoint()
        write_training_log(self.stage_dir, p.history)
        self.monitor.epoch(row)
        record_stage(self.run_dir, stage, p.history, p.best_epoch, p.seconds, self.window)

    def _save_best(self, score: float) -> None:
        """Write ``model.safetensors``: the latest weights (``model_selection: last``, or no validation
        cases), else when the score improves; the best validated epoch is tracked either way."""
        p, path = self.progress, self.stage_dir / "model.safetensors"
        improved = score > p.best_score
        if improved:
            p.best_score, p.best_epoch = score, p.epoch - 1
        if improved or self.stage.model_selection == "last" or not self.val_ids or not path.exists():
            save_weights(self.model, path, {"stage": self.stage.name, "epoch": str(p.epoch - 1),
                                            "dice_mean": f"{score:.4f}"})


def preflight(config: TrainConfig, stage: StageConfig, preprocessed: Path | str, train_ids: Sequence[str],
              dist: DistInfo) -> torch.device:
    """Check what can be checked before anything is written: the device, the precision, the data's spacing.

    Returns:
        This rank's device.

    Raises:
        ValueError: unknown or unavailable device, or a precision the device lacks.
        TrainError: preprocessed data at another spacing than the stage's.
    """
    device = rank_device(config.device, dist)
    check_precision(device, stage.precision)
    check_spacing(Path(preprocessed), list(train_ids), stage)
    return device


def _start(config: TrainConfig, stage: StageConfig, run_dir: Path, device: torch.device, dist: DistInfo,
           resume: bool) -> tuple[nn.Module, torch.optim.Optimizer, torch.amp.GradScaler | None, Progress]:
    """Seed the process, build the network and optimiser, and restore the checkpoint when resuming."""
    set_deterministic(config.deterministic)
    seed_everything(config.seed + dist.rank)
    if config.threads:
        torch.set_num_threads(config.threads)
    model = build_stage_model(stage).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr_at(stage, 0), weight_decay=stage.optim.weight_decay)
    scaler = torch.amp.GradScaler(device.type) if stage.precision == "fp16" else None
    stage_dir = run_dir / stage.name
    progress = Progress()
    if resume and (stage_dir / "state.pt").is_file():
        progress = load_checkpoint(stage_dir, model, optimizer, scaler, stage)
    return model, optimizer, scaler, progress


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
        TrainError / ConfigError / ValueError: unusable data, config, device or checkpoint.
        TrainingInterrupted: Ctrl-C; the checkpoint to resume from was written (see its ``saved``).
        OSError: a checkpoint, log or weights file could not be written (disk full, read-only).
    """
    dist = dist or DistInfo()
    stage, root, run_dir = config.stage(stage_name), Path(preprocessed), Path(run_dir)
    device = preflight(config, stage, root, train_ids, dist)
    model, optimizer, scaler, progress = _start(config, stage, run_dir, device, dist, resume)
    if dist.is_main:
        (run_dir / stage.name).mkdir(parents=True, exist_ok=True)
    ddp = wrap_ddp(model, device, dist)
    dataset = make_dataset(root, train_ids, stage, config.seed, dist.world_size)
    loss = build_loss(stage.target, stage.loss.dice_weight, stage.loss.bce_weight, stage.loss.smooth,
                      stage.loss.batch_dice)
    monitor = Monitor(run_dir / stage.name, progress, stage.epochs * stage.iterations, dist.is_main, show_progress)
    run = _StageRun(config, stage, root, run_dir, val_ids, dist, device, ddp, optimizer, scaler, progress, dataset,
                    loss, monitor)
    try:
        with _StopRequest(monitor.note) as run.stop:
            finished = run.loop(max_steps)
    finally:
        monitor.close()
    return StageResult(run.stage_dir, progress, finished, unwrap(run.model), run.stage.model_selection)


def fit(config: TrainConfig, preprocessed: Path | str, run_dir: Path | str, stage_name: str | None = None,
        *, fold: int | str | None = None, splits_path: Path | str | None = None, resume: bool = True,
        dist: DistInfo | None = None, show_progress: bool = True, max_steps: int | None = None,
        on_changes: Callable[[Path, list[ConfigChange]], None] | None = None) -> StageResult:
    """Prepare the run directory and train one stage (the whole of ``glioseg train``).

    The device, precision, data spacing and the changes to an existing run's settings are
    checked before anything is written (:func:`preflight`, :func:`glioseg.artifacts.resume.check_resume`).

    Args:
        config: resolved config.
        preprocessed: preprocessed dataset at the stage's spacing.
        run_dir: run directory (created).
        stage_name: stage to train (the first when None).
        fold: cross-validation fold, None for one train/val split, or ``"all"``: every case, no
            validation (``model.safetensors`` is the last epoch; see :func:`resolve_split`).
        splits_path: a ``splits.json``; otherwise the run's own or new splits.
        resume, dist, show_progress, max_steps: see :func:`train_stage`.
        on_changes: called with the run directory and the allowed changes to its saved settings
            (once they are recorded in ``run.json``; not called when there are none).

    Returns:
        The stage result.

    Raises:
        ConfigError: settings that differ from the run's trained stages (the fields are named).
        TrainError / ValueError: unusable data, device or checkpoint.
        TrainingInterrupted, OSError: as :func:`train_stage`.
    """
    dist = dist or DistInfo()
    run_dir, stage = Path(run_dir), config.stage(stage_name)
    split = resolve_split(preprocessed, run_dir, config, splits_path, fold)
    preflight(config, stage, preprocessed, split["train"], dist)
    if dist.is_main:
        changes = prepare_run(config, preprocessed, run_dir, split, stage.name, resume)
        if changes and on_changes is not None:
            on_changes(run_dir, changes)
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
    preflight(config, config.stage(stage_name), preprocessed, split["train"], dist)
    if dist.is_main and not (run_dir / "splits.json").is_file():
        save_splits(split["splits"], run_dir / "splits.json")
    if dist.world_size > 1:
        torch.distributed.barrier()
    n_folds = len(load_splits(run_dir / "splits.json")["splits"])
    return [fit(config, preprocessed, run_dir / f"fold_{k}", stage_name, fold=k,
                splits_path=run_dir / "splits.json", **kwargs) for k in range(n_folds)]
