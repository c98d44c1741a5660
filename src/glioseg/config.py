"""Training configuration: frozen dataclasses (the single source of defaults), presets, YAML.

A :class:`TrainConfig` holds global settings and one :class:`StageConfig` per stage. Each stage
is trained by its own ``glioseg train --stage NAME`` invocation into ``RUN/<stage>/``:

* ``isensee2017``: one stage ``main`` as in Isensee et al. 2017 (128^3 patches, batch 2,
  300 epochs x 100 iterations, Adam 5e-4, decay 0.985 per epoch); for GPUs.
* ``cpu``: two stages for 2 CPU cores, used as a cascade at inference: ``low`` at 2 mm on the
  whole cropped brain, ``high`` at 1 mm on patches around the tumour.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import yaml

from glioseg.labels import TARGETS

SCHEDULES: tuple[str, ...] = ("exponential", "poly", "cosine", "constant")
PRECISIONS: tuple[str, ...] = ("fp32", "bf16", "fp16")
MODEL_NAMES: tuple[str, ...] = ("isensee2017", "unet3d")


class ConfigError(ValueError):
    """A configuration value or file is invalid; the message names the field and the fix."""


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


@dataclass(frozen=True)
class ModelConfig:
    """Network choice and size (arguments of :func:`glioseg.networks.build_model`)."""

    name: str = "isensee2017"
    base_filters: int = 16
    depth: int = 5
    dropout: float = 0.3
    deep_supervision: bool = True

    def __post_init__(self) -> None:
        _require(self.name in MODEL_NAMES, f"model.name {self.name!r}: choose one of {list(MODEL_NAMES)}")
        _require(self.base_filters >= 1, f"model.base_filters must be >= 1, got {self.base_filters}")
        _require(self.depth >= 2, f"model.depth must be >= 2, got {self.depth}")
        _require(0.0 <= self.dropout < 1.0, f"model.dropout must be in [0, 1), got {self.dropout}")

    def kwargs(self, out_channels: int) -> dict[str, Any]:
        """Constructor arguments for :func:`glioseg.networks.build_model`."""
        if self.name == "unet3d":
            return {"in_channels": 4, "out_channels": out_channels, "base_filters": self.base_filters,
                    "depth": self.depth}
        return {"in_channels": 4, "out_channels": out_channels, "base_filters": self.base_filters,
                "depth": self.depth, "dropout": self.dropout, "deep_supervision": self.deep_supervision}


@dataclass(frozen=True)
class LossConfig:
    """Loss weights (``bce_weight`` is the cross-entropy weight in ``labels`` mode)."""

    dice_weight: float = 1.0
    bce_weight: float = 1.0
    smooth: float = 1e-5
    batch_dice: bool = False

    def __post_init__(self) -> None:
        _require(self.dice_weight >= 0 and self.bce_weight >= 0 and self.dice_weight + self.bce_weight > 0,
                 f"loss weights must be >= 0 and not both 0, got dice {self.dice_weight}, bce {self.bce_weight}")
        _require(self.smooth >= 0, f"loss.smooth must be >= 0, got {self.smooth}")


@dataclass(frozen=True)
class OptimConfig:
    """Adam and the learning-rate schedule (stepped once per epoch)."""

    lr: float = 5e-4
    weight_decay: float = 1e-5
    schedule: str = "exponential"
    decay: float = 0.985
    poly_power: float = 0.9
    grad_clip: float = 0.0

    def __post_init__(self) -> None:
        _require(self.lr > 0, f"optim.lr must be > 0, got {self.lr}")
        _require(self.weight_decay >= 0, f"optim.weight_decay must be >= 0, got {self.weight_decay}")
        _require(self.schedule in SCHEDULES, f"optim.schedule {self.schedule!r}: choose one of {list(SCHEDULES)}")
        _require(0 < self.decay <= 1, f"optim.decay must be in (0, 1], got {self.decay}")
        _require(self.grad_clip >= 0, f"optim.grad_clip must be >= 0 (0 disables), got {self.grad_clip}")


@dataclass(frozen=True)
class StageConfig:
    """One training stage: data grid, sampling, network, loss, optimiser and length.

    Attributes:
        name: folder name under the run directory.
        spacing_mm: isotropic spacing the preprocessed data must have (None: accept any).
        patch_size: training patch ``(x, y, z)``; each a multiple of ``2**(depth-1)``.
        whole_volume: train on whole cropped cases (zero-padded to the largest training case,
            rounded up to 16) instead of patches; ``patch_size`` is then the inference window.
        batch_size: patches per iteration (per process under DDP).
        fg_fraction: share of patches centred on tumour voxels.
        augment: apply the paper's augmentation.
        target: ``regions`` (WT/TC/ET sigmoid) or ``labels`` (4-class softmax).
        epochs, iterations: training length (iterations per epoch).
        val_every: validate every this many epochs (the last epoch always validates).
        val_window: sliding-window size for validation; None runs whole (padded) cases.
        precision: ``fp32``, ``bf16`` (CPU/CUDA) or ``fp16`` (CUDA).
        cascade_from: stage whose prediction guides this one at inference (informational).
    """

    name: str = "main"
    spacing_mm: float | None = None
    patch_size: tuple[int, int, int] = (128, 128, 128)
    whole_volume: bool = False
    batch_size: int = 2
    fg_fraction: float = 0.33
    augment: bool = True
    target: str = "regions"
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    epochs: int = 300
    iterations: int = 100
    val_every: int = 5
    val_window: tuple[int, int, int] | None = None
    precision: str = "fp32"
    cascade_from: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "patch_size", tuple(int(s) for s in self.patch_size))
        if self.val_window is not None:
            object.__setattr__(self, "val_window", tuple(int(s) for s in self.val_window))
        divisor = 2 ** (self.model.depth - 1)
        for key, size in (("patch_size", self.patch_size), ("val_window", self.val_window)):
            if size is None:
                continue
            _require(len(size) == 3 and all(s > 0 and s % divisor == 0 for s in size),
                     f"stage {self.name}: {key} {size} must be 3 positive multiples of {divisor} "
                     f"(2**(depth-1) for depth {self.model.depth})")
        _require(self.spacing_mm is None or self.spacing_mm > 0, f"stage {self.name}: spacing_mm must be > 0")
        _require(self.batch_size >= 1, f"stage {self.name}: batch_size must be >= 1, got {self.batch_size}")
        _require(0.0 <= self.fg_fraction <= 1.0, f"stage {self.name}: fg_fraction must be in [0, 1]")
        _require(self.target in TARGETS, f"stage {self.name}: target {self.target!r}: choose one of {list(TARGETS)}")
        _require(self.epochs >= 1 and self.iterations >= 1 and self.val_every >= 1,
                 f"stage {self.name}: epochs, iterations and val_every must be >= 1")
        _require(self.precision in PRECISIONS,
                 f"stage {self.name}: precision {self.precision!r}: choose one of {list(PRECISIONS)}")
        _require(self.name.isidentifier(), f"stage name {self.name!r} must be a simple identifier (folder name)")


@dataclass(frozen=True)
class TrainConfig:
    """Whole training recipe.

    Attributes:
        preset: name of the preset it started from (informational).
        stages: the stages, in training order.
        seed: base seed (each DDP rank adds its rank).
        deterministic: best-effort deterministic kernels.
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
        checkpoint_minutes: wall-time between mid-epoch checkpoints.
        folds: number of cross-validation folds when splits are made.
        val_fraction: share of cases held out for validation when no fold is given.
        threads: torch CPU threads (None: torch's default).
        num_workers: DataLoader worker processes (0: load in the main process).
    """

    preset: str = "isensee2017"
    stages: tuple[StageConfig, ...] = (StageConfig(),)
    seed: int = 0
    deterministic: bool = False
    device: str = "auto"
    checkpoint_minutes: float = 5.0
    folds: int = 5
    val_fraction: float = 0.2
    threads: int | None = None
    num_workers: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "stages", tuple(self.stages))
        _require(len(self.stages) >= 1, "a config needs at least one stage")
        names = [s.name for s in self.stages]
        _require(len(set(names)) == len(names), f"stage names must be unique, got {names}")
        _require(self.checkpoint_minutes > 0, f"checkpoint_minutes must be > 0, got {self.checkpoint_minutes}")
        _require(self.folds >= 2, f"folds must be >= 2, got {self.folds}")
        _require(0.0 < self.val_fraction < 1.0, f"val_fraction must be in (0, 1), got {self.val_fraction}")
        _require(self.num_workers >= 0, f"num_workers must be >= 0, got {self.num_workers}")

    def stage(self, name: str | None = None) -> StageConfig:
        """The stage called ``name`` (the first when None).

        Raises:
            ConfigError: unknown name; the message lists the stages.
        """
        if name is None:
            return self.stages[0]
        for stage in self.stages:
            if stage.name == name:
                return stage
        raise ConfigError(f"unknown stage {name!r}; this config has {[s.name for s in self.stages]}")

    def with_stage(self, name: str, **changes: Any) -> TrainConfig:
        """Copy with fields of one stage replaced (validated again)."""
        self.stage(name)
        return replace(self, stages=tuple(replace(s, **changes) if s.name == name else s for s in self.stages))


def isensee2017_preset() -> TrainConfig:
    """Isensee et al. 2017: 128^3, batch 2, 300 x 100 iterations, full network (GPU)."""
    return TrainConfig(preset="isensee2017", stages=(StageConfig(name="main", val_window=(128, 128, 128)),))


def cpu_preset() -> TrainConfig:
    """Two-stage recipe for 2 CPU cores: 2 mm whole brain, then 1 mm patches around the tumour.

    These are the settings validated for the shipped model (``configs/cpu_shipped.yaml``, which
    also pins one thread per process so that both stages train side by side): the ``low`` stage
    alone is shipped; the ``high`` stage feeds the cascade when a run has both.
    """
    cosine = OptimConfig(lr=5e-4, weight_decay=1e-5, schedule="cosine")
    low = StageConfig(
        name="low", spacing_mm=2.0, patch_size=(96, 96, 96), whole_volume=True, batch_size=2, fg_fraction=0.0,
        model=ModelConfig(base_filters=16, depth=5, dropout=0.3), optim=cosine, precision="bf16",
        epochs=40, iterations=25, val_every=4,
    )
    high = StageConfig(
        name="high", spacing_mm=1.0, patch_size=(80, 80, 80), batch_size=2, fg_fraction=0.9,
        model=ModelConfig(base_filters=12, depth=5, dropout=0.3), optim=cosine, precision="bf16",
        epochs=40, iterations=25, val_every=8, val_window=(128, 128, 128), cascade_from="low",
    )
    return TrainConfig(preset="cpu", stages=(low, high), checkpoint_minutes=5.0)


PRESETS: dict[str, typing.Callable[[], TrainConfig]] = {"isensee2017": isensee2017_preset, "cpu": cpu_preset}


def get_preset(name: str) -> TrainConfig:
    """A preset by name.

    Raises:
        ConfigError: unknown name; the message lists the presets.
    """
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
    return PRESETS[name]()


def to_dict(config: Any) -> Any:
    """Dataclass -> plain YAML/JSON-able structure (tuples become lists)."""
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        return {f.name: to_dict(getattr(config, f.name)) for f in fields(config)}
    if isinstance(config, (tuple, list)):
        return [to_dict(v) for v in config]
    return config


def from_dict(cls: type[Any], data: dict[str, Any], base: Any = None, where: str = "") -> Any:
    """Build dataclass ``cls`` from a (partial) dict, starting from ``base`` (or the defaults).

    Raises:
        ConfigError: unknown key or invalid value; the message names the key.
    """
    if not isinstance(data, dict):
        raise ConfigError(f"{where or cls.__name__}: expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"{where or cls.__name__}: unknown key(s) {unknown}; valid keys: {sorted(known)}")
    values = {name: _convert(hints[name], value, getattr(base, name, None), f"{where}{name}")
              for name, value in data.items()}
    try:
        return replace(base, **values) if base is not None else cls(**values)
    except TypeError as exc:
        raise ConfigError(f"{where or cls.__name__}: {exc}") from exc


def _convert(hint: Any, value: Any, base: Any, where: str) -> Any:
    """Convert a YAML value to the field type ``hint`` (nested dataclasses, stage lists, tuples)."""
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return from_dict(hint, value, base, f"{where}.")
    origin = typing.get_origin(hint)
    if origin is tuple and typing.get_args(hint)[:1] == (StageConfig,):
        return _convert_stages(value, base, where)
    if value is not None and (origin is tuple or (origin in (typing.Union, types.UnionType) and
                                                 any(typing.get_origin(a) is tuple for a in typing.get_args(hint)))):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        return tuple(value)
    return value


def _convert_stages(value: Any, base: Any, where: str) -> tuple[StageConfig, ...]:
    """Stages from YAML: a list of mappings merged by name into the base stages.

    A mapping whose ``name`` matches a base stage overrides that stage's keys; other names are
    appended as new stages; base stages not mentioned are kept.
    """
    if not isinstance(value, list):
        raise ConfigError(f"{where}: expected a list of stage mappings")
    stages = {s.name: s for s in (base or ())}
    for i, item in enumerate(value):
        name = item.get("name") if isinstance(item, dict) else None
        stages[name or f"stage{i}"] = from_dict(StageConfig, item, stages.get(name), f"{where}[{i}].")
    return tuple(stages.values())


def load_config(path: Path | str, base: TrainConfig | None = None) -> TrainConfig:
    """Read a YAML config; its keys override ``base`` (or the defaults when None).

    With a ``base``, listed stages are merged into the base's stages by name; without one the
    file's stages are taken as they are (a run's resolved ``config.yaml`` loads exactly).

    Raises:
        ConfigError: unreadable file, unknown key or invalid value (the message names the file).
    """
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: cannot read config ({exc})") from exc
    try:
        return from_dict(TrainConfig, data, base)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from exc


def resolve_config(preset: str | None = None, config_file: Path | str | None = None,
                   run_config: Path | str | None = None) -> TrainConfig:
    """The config of a ``glioseg train`` call: saved run config or preset, then the YAML file.

    Args:
        preset: preset name; None uses the saved run config, the YAML file's ``preset`` key, or
            ``isensee2017``.
        config_file: YAML overrides merged on top.
        run_config: a run's saved ``config.yaml`` (used as the base when it exists).

    Raises:
        ConfigError: the preset differs from the run's, unknown preset, or a bad file.
    """
    base: TrainConfig | None = None
    if run_config is not None and Path(run_config).is_file():
        base = load_config(run_config)
        if preset is not None and preset != base.preset:
            raise ConfigError(f"{run_config}: this run was made with preset {base.preset!r}, not "
                              f"{preset!r}; use another run directory")
    if base is None:
        name = preset
        if name is None and config_file is not None:
            data = yaml.safe_load(Path(config_file).read_text()) if Path(config_file).is_file() else None
            name = data.get("preset") if isinstance(data, dict) else None
        base = get_preset(name or "isensee2017")
    return load_config(config_file, base) if config_file is not None else base


def dump_config(config: TrainConfig) -> str:
    """YAML text of a config (round-trips through :func:`load_config`)."""
    return yaml.safe_dump(to_dict(config), sort_keys=False)


def save_config(config: TrainConfig, path: Path | str) -> Path:
    """Write a config as YAML atomically."""
    from glioseg.utils import atomic_write

    text = dump_config(config)
    return atomic_write(Path(path), lambda tmp: tmp.write_text(text))
