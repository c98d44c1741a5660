"""Predict whole cases with a trained run: load once, predict many.

:class:`Predictor` wraps one or several stages of networks (an ensemble of folds/runs per
stage) and turns a :class:`glioseg.data.nifti.Case` into canonical labels on the case's canonical grid:

1. preprocess (brain crop, z-score, resampling to the stage's spacing) exactly as the run was
   trained: the settings are read from the run and a model whose record is missing or differs from
   what this code does is refused (:mod:`glioseg.artifacts.preprocess_record`);
2. sliding-window inference with Gaussian weighting, mirroring TTA, MC dropout, ensembles
   (:mod:`glioseg.inference.sliding_window`);
3. paste the probabilities back into the case grid, threshold, volume rules in mm^3 on the case
   grid (:mod:`glioseg.inference.postprocess`).

A folder of ``fold_<k>/`` runs is an ensemble of its folds; a fold-ensemble bundle is such a folder
with one ``manifest.json`` at the top, verified (sha256 of every member) before any fold loads.

**Cascade** (runs with stages ``low`` and ``high``): the low-resolution stage predicts the
whole brain; the high-resolution stage runs only on the bounding box of the predicted whole
tumour plus a margin (:mod:`glioseg.inference.cascade`), and the low-resolution probabilities
(trilinearly upsampled) are kept outside that box. Without a tumour in the low-resolution
result, that result is the output.

Many cases at once (shards, manifest): :mod:`glioseg.inference.batch`; validation probabilities for
tuning the post-processing: :mod:`glioseg.inference.tuning`.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from glioseg.artifacts.folds import run_folders
from glioseg.artifacts.preprocess_record import PreprocessingSpec, stage_preprocessing
from glioseg.artifacts.rundir import load_run
from glioseg.data.nifti import Case
from glioseg.inference.cascade import box_on_grid, tumour_box
from glioseg.inference.ensemble import TilePredictor, parse_flips, predict_volume
from glioseg.inference.postprocess import (
    POSTPROCESS_FILE,
    PostprocessConfig,
    load_postprocess,
    postprocess_probabilities,
)
from glioseg.labels import check_target
from glioseg.preprocessing.normalize import preprocess_case
from glioseg.preprocessing.restore import Box, paste_box, restore_probabilities
from glioseg.runtime import select_device

LOW, HIGH = "low", "high"
DEFAULT_MARGIN_MM = 16.0


@dataclass
class Stage:
    """One resolution stage: an ensemble of networks sharing input spacing and target.

    Attributes:
        name: stage name (``low``, ``high``, ...).
        models: networks in eval mode, ``(B, 4, X, Y, Z) -> logits (B, K, X, Y, Z)``.
        spacing_mm: isotropic input spacing, or None for the case's own spacing.
        patch_size: sliding-window tile ``(X, Y, Z)``.
        target: ``"regions"`` (sigmoid WT/TC/ET) or ``"labels"`` (softmax).
        divisor: every network input size must be a multiple of this.
        preprocessing: what the networks were trained on (default: this code's preprocessing at
            ``spacing_mm``); :meth:`Predictor.from_run` reads it from the run.
    """

    name: str
    models: list[nn.Module]
    spacing_mm: float | None
    patch_size: tuple[int, int, int]
    target: str = "regions"
    divisor: int = 16
    preprocessing: PreprocessingSpec | None = None

    def __post_init__(self) -> None:
        check_target(self.target)
        if self.preprocessing is None:
            self.preprocessing = PreprocessingSpec(self.spacing_mm)
        elif self.preprocessing.spacing_mm != self.spacing_mm:
            raise ValueError(f"stage {self.name}: preprocessing spacing {self.preprocessing.spacing_mm} mm "
                             f"!= stage spacing {self.spacing_mm} mm")
        if not self.models:
            raise ValueError(f"stage {self.name}: no models")
        if len(self.patch_size) != 3 or any(int(p) % self.divisor for p in self.patch_size):
            raise ValueError(f"stage {self.name}: patch size {self.patch_size} must be three multiples "
                             f"of {self.divisor}")
        self.patch_size = tuple(int(p) for p in self.patch_size)  # type: ignore[assignment]


@dataclass
class Prediction:
    """The prediction of one case, on its canonical grid.

    Attributes:
        case_id: identifier.
        labels: uint8 ``(X, Y, Z)`` canonical labels (write with :func:`glioseg.data.nifti.write_seg`).
        probabilities: float32 ``(K, X, Y, Z)`` (WT/TC/ET or per-label), when asked for.
        uncertainty: float32 ``(X, Y, Z)`` MC-dropout standard deviation (max over channels),
            when MC dropout is on.
        timings: seconds per step (``preprocess``, ``low``, ``high``/``full``, ``restore``,
            ``postprocess``, ``total``).
        stages: stages run, in order.
        box: the cascade's high-resolution box on the canonical grid, or None.
    """

    case_id: str
    labels: np.ndarray
    probabilities: np.ndarray | None = None
    uncertainty: np.ndarray | None = None
    timings: dict[str, float] = field(default_factory=dict)
    stages: list[str] = field(default_factory=list)
    box: Box | None = None


class _Timer:
    def __init__(self) -> None:
        self.timings: dict[str, float] = {}
        self.start = time.perf_counter()

    def add(self, key: str, since: float) -> float:
        now = time.perf_counter()
        self.timings[key] = self.timings.get(key, 0.0) + now - since
        return now


class Predictor:
    """Segment cases with a trained model (see the module docstring).

    Args:
        stages: stage name -> :class:`Stage`.
        device: ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or a torch device.
        precision: ``"bf16"`` (CPU/CUDA), ``"fp16"`` (CUDA), ``"fp32"``.
        tta: mirroring (see :func:`glioseg.inference.ensemble.parse_flips`): ``"none"``, ``"all"``, N, or
            a list of axis tuples.
        cascade: use the low/high cascade when both stages exist.
        margin_mm: margin around the low-resolution tumour box for the high stage.
        overlap: sliding-window overlap.
        tile_batch: tiles per network call.
        mc_samples: Monte-Carlo dropout samples (0: off).
        postprocess: thresholds and volume rules (mm^3, applied on the case grid).
        channels_last: run the networks in channels-last-3d memory format.
        single_threaded_tiles: run the memory-bound per-tile work on one CPU thread (see
            :class:`glioseg.inference.ensemble.TilePredictor`); off by default, so that torch's
            process-wide thread count is never changed.

    Raises:
        ValueError: no stage, unknown device/precision, stages with different targets.
    """

    def __init__(self, stages: dict[str, Stage], *, device: str | torch.device = "auto",
                 precision: str = "bf16", tta: Any = "none", cascade: bool = True,
                 margin_mm: float = DEFAULT_MARGIN_MM, overlap: float = 0.5, tile_batch: int = 1,
                 mc_samples: int = 0, postprocess: PostprocessConfig | None = None,
                 channels_last: bool = False, single_threaded_tiles: bool = False) -> None:
        _check_stages(stages, margin_mm)
        self.device = device if isinstance(device, torch.device) else select_device(str(device))
        self.stages = stages
        self.target = next(iter(stages.values())).target
        self.flips = parse_flips(tta)
        self.cascade = cascade and LOW in stages and HIGH in stages
        self.margin_mm = float(margin_mm)
        self.overlap, self.tile_batch = overlap, tile_batch
        self.postprocess = postprocess or PostprocessConfig()
        options = (self.device, precision, mc_samples, channels_last, single_threaded_tiles)
        self.tile_predictors = {name: _tile_predictor(s, self.flips, *options) for name, s in stages.items()}

    @classmethod
    def from_run(cls, run: Path | str | Any | Sequence[Path | str | Any], folds: Sequence[int] | None = None,
                 **kwargs: Any) -> Predictor:
        """Load a run directory / model bundle (or several: an ensemble) once.

        Args:
            run: a run directory or bundle, a loaded ``RunBundle``, or a list of them (their
                stages are ensembled by name).
            folds: fold numbers to use when the run directory holds one run per fold
                (``fold_<k>/``); all folds by default.
            **kwargs: options of :class:`Predictor` (device, precision, tta, cascade, ...).
                ``postprocess`` defaults to the run's tuned ``postprocess.json``.

        Returns:
            The predictor.

        Raises:
            FileNotFoundError: no run (or a requested fold) in the folder.
            glioseg.artifacts.weights.TrainError: missing files or weights that do not fit the config.
            glioseg.artifacts.bundles.BundleError: a bundle member is missing or tampered with.
            glioseg.artifacts.preprocess_record.PreprocessingMismatch: a run's recorded
                preprocessing is missing or is not what this code does.
            ValueError: the runs of an ensemble disagree; invalid ``postprocess.json``.
        """
        bundles, tuned = _load_runs(list(run) if isinstance(run, list | tuple) else [run], folds)
        stages = stages_from_bundles(bundles)
        if "postprocess" not in kwargs and tuned is not None:  # old voxel counts: the full stage's grid
            kwargs["postprocess"] = load_postprocess(tuned, finest_stage(stages).spacing_mm)
        return cls(stages, **kwargs)

    # ------------------------------------------------------------------ public API

    def predict_case(self, case: Case, return_probabilities: bool = False) -> Prediction:
        """Segment one case.

        Args:
            case: from :func:`glioseg.data.nifti.read_case`: image float32 ``(4, X, Y, Z)`` canonical.
            return_probabilities: keep the float32 ``(K, X, Y, Z)`` probabilities.

        Returns:
            The prediction on the case's canonical grid ``(X, Y, Z)``.

        Raises:
            glioseg.data.nifti.CaseError: the case cannot be preprocessed (e.g. an all-zero image).
        """
        timer = _Timer()
        if self.cascade:
            probs, unc, stages, box = self._predict_cascade(case, timer)
        else:
            stage = self.full_stage
            probs, unc = self._predict_stage(case, stage, timer, stage.name)
            stages, box = [stage.name], None
        t = time.perf_counter()
        labels = postprocess_probabilities(probs, self.target, self.postprocess, case.geometry.canonical_spacing)
        timer.add("postprocess", t)
        timer.timings["total"] = time.perf_counter() - timer.start
        return Prediction(case.case_id, labels, probs if return_probabilities else None, unc,
                          timer.timings, stages, box)

    def predict_preprocessed(self, image: np.ndarray, stage: str | None = None) -> np.ndarray:
        """Probabilities of an already preprocessed image, on its own grid (validation, tuning).

        Args:
            image: float32 ``(4, x, y, z)`` preprocessed at the stage's spacing.
            stage: stage name; the full-resolution stage by default.

        Returns:
            float32 ``(K, x, y, z)`` probabilities.
        """
        s = self.stages[stage] if stage is not None else self.full_stage
        image = np.asarray(image, dtype=np.float32)
        if not image.flags.writeable:  # read-only memory maps: torch wants writable memory
            image = image.copy()
        probs, _ = self._infer(s, image)
        return probs

    @property
    def full_stage(self) -> Stage:
        """The stage used without the cascade: ``high`` if present, else the finest one."""
        return finest_stage(self.stages)

    # ------------------------------------------------------------------ internals

    def _infer(self, stage: Stage, image: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Sliding window over a preprocessed (sub-)volume -> numpy probabilities (+ uncertainty)."""
        probs, unc = predict_volume(
            torch.from_numpy(image), self.tile_predictors[stage.name], stage.patch_size,
            overlap=self.overlap, tile_batch=self.tile_batch, divisor=stage.divisor)
        return probs.cpu().numpy(), (unc.cpu().numpy() if unc is not None else None)

    def _predict_stage(self, case: Case, stage: Stage, timer: _Timer,
                       key: str) -> tuple[np.ndarray, np.ndarray | None]:
        """Whole-brain prediction of one stage, pasted back into the case grid."""
        t = time.perf_counter()
        pc = _preprocess(case, stage)
        t = timer.add("preprocess", t)
        probs, unc = self._infer(stage, pc.image)
        t = timer.add(key, t)
        probs_case = restore_probabilities(_with_extra(probs, unc), pc.meta)
        timer.add("restore", t)
        return _split_extra(probs_case, unc is not None)

    def _predict_cascade(self, case: Case,
                         timer: _Timer) -> tuple[np.ndarray, np.ndarray | None, list[str], Box | None]:
        """Low stage on the whole brain, then the high stage on its tumour box (if any)."""
        probs, unc = self._predict_stage(case, self.stages[LOW], timer, LOW)
        box = tumour_box(probs, self.target, self.postprocess.thresholds[0],
                         self.margin_mm, case.geometry.canonical_spacing)
        if box is None:
            return probs, unc, [LOW], None
        probs, unc = self._refine_box(case, box, probs, unc, timer)
        return probs, unc, [LOW, HIGH], box

    def _refine_box(self, case: Case, box: Box, probs: np.ndarray, unc: np.ndarray | None,
                    timer: _Timer) -> tuple[np.ndarray, np.ndarray | None]:
        """Replace the case-grid probabilities (and uncertainty) inside ``box`` by the high stage's."""
        high = self.stages[HIGH]
        t = time.perf_counter()
        pc = _preprocess(case, high)
        t = timer.add("preprocess", t)
        sub = box_on_grid(box, pc.meta, high.divisor)
        probs_box, unc_box = self._infer(high, pc.image[(slice(None), *(slice(a, b) for a, b in sub))])
        t = timer.add(HIGH, t)
        merged = paste_box(_with_extra(probs, unc), _with_extra(probs_box, unc_box), sub, pc.meta)
        timer.add("restore", t)
        return _split_extra(merged, unc is not None)


def finest_stage(stages: dict[str, Stage]) -> Stage:
    """``high`` if present, else the stage of the finest spacing (None, each case's own, counts as finest)."""
    if HIGH in stages:
        return stages[HIGH]
    return min(stages.values(), key=lambda s: s.spacing_mm if s.spacing_mm is not None else 0.0)


def _preprocess(case: Case, stage: Stage) -> Any:
    """The case preprocessed as the stage's networks were trained (spacing, margin, percentiles)."""
    spec = stage.preprocessing or PreprocessingSpec(stage.spacing_mm)
    return preprocess_case(case, spec.spacing_mm, spec.margin, spec.percentiles)


def _check_stages(stages: dict[str, Stage], margin_mm: float) -> None:
    if not stages:
        raise ValueError("the model has no stage to predict with")
    if len({s.target for s in stages.values()}) != 1:
        raise ValueError(f"stages disagree on the target: { {n: s.target for n, s in stages.items()} }")
    if margin_mm < 0:
        raise ValueError(f"cascade margin must be >= 0 mm; got {margin_mm}")


def _tile_predictor(stage: Stage, flips: Sequence[tuple[int, ...]], device: torch.device, precision: str,
                    mc_samples: int, channels_last: bool, single_threaded_tiles: bool) -> TilePredictor:
    """The stage's networks as a tile function; moves them to ``device`` in eval mode (in place)."""
    for model in stage.models:
        model.eval().to(device)
        if channels_last:
            model.to(memory_format=torch.channels_last_3d)  # type: ignore[call-overload]
    activation = "sigmoid" if stage.target == "regions" else "softmax"
    return TilePredictor(stage.models, activation, flips, device, precision, mc_samples, channels_last,
                         single_threaded_tiles)


def _with_extra(probs: np.ndarray, extra: np.ndarray | None) -> np.ndarray:
    """Append the uncertainty map as one more channel, so that it follows the same paste-back."""
    return probs if extra is None else np.concatenate([probs, extra[None]], axis=0)


def _split_extra(array: np.ndarray, has_extra: bool) -> tuple[np.ndarray, np.ndarray | None]:
    return (array[:-1], array[-1]) if has_extra else (array, None)


def _load_runs(runs: Sequence[Path | str | Any], folds: Sequence[int] | None) -> tuple[list[Any], Path | None]:
    """Load the runs (folders or loaded bundles); also the folder of the tuned post-processing, if any."""
    bundles: list[Any] = []
    tuned: Path | None = None
    for item in runs:
        if not isinstance(item, str | Path):
            bundles.append(item)
            continue
        folders = run_folders(Path(item), folds)
        # settings tuned on all folds sit at the top; a single run holds its own
        tuned = tuned or (Path(item) if (Path(item) / POSTPROCESS_FILE).is_file() else folders[0])
        bundles.extend(load_run(folder) for folder in folders)
    return bundles, tuned


def stages_from_bundles(bundles: Sequence[Any]) -> dict[str, Stage]:
    """Merge the stages of loaded runs into ensembles, by stage name, each with the preprocessing
    its run records (checked against this code: :func:`glioseg.artifacts.preprocess_record.stage_preprocessing`).

    Raises:
        PreprocessingMismatch: a run's preprocessing record is missing or differs from the code's.
        ValueError: the runs disagree on a stage's spacing, target or preprocessing (differing
            tiles are merged: the ensemble predicts with their element-wise maximum).
    """
    stages: dict[str, Stage] = {}
    for bundle in bundles:
        spacings = {s.name: s.spacing_mm for s in bundle.config.stages}
        for name, sm in bundle.stages.items():
            spec = stage_preprocessing(bundle.info, name, sm.spacing_mm, spacings, str(bundle.run_dir))
            divisor = int(getattr(sm.model, "divisor", 16))
            if name not in stages:
                stages[name] = Stage(name, [sm.model], sm.spacing_mm, tuple(sm.patch_size), sm.target, divisor, spec)
                continue
            s = stages[name]
            if (s.spacing_mm, s.target, s.preprocessing) != (sm.spacing_mm, sm.target, spec):
                raise ValueError(f"stage {name}: the runs of the ensemble differ in spacing, target "
                                 f"or preprocessing ({bundle.run_dir}); ensemble only runs trained the same way")
            # the networks are fully convolutional: members whose recorded tiles differ (folds whose
            # training cases differ in size) share the tile that covers each of theirs
            s.patch_size = tuple(max(a, int(b)) for a, b in zip(s.patch_size, sm.patch_size, strict=True))  # type: ignore[assignment]
            s.models.append(sm.model)
    return stages
