"""Training configuration: frozen dataclasses (the single source of defaults), presets, YAML.

A :class:`TrainConfig` holds global settings and one :class:`StageConfig` per stage, each trained
by its own ``glioseg train --stage NAME`` into ``RUN/<stage>/``; :data:`PRESETS` are starting points.

YAML values are checked against each field's type (:func:`from_dict`): booleans must be
``true``/``false`` (``"no"`` is refused), integers integers (``128.9`` and ``true`` are refused,
never truncated), numbers ints or floats. Files are read with YAML 1.2 numbers, so ``lr: 5e-4``
is a number (YAML 1.1 makes it a string); a quoted number is a string and is refused.
"""

from __future__ import annotations

import dataclasses
import numbers
import re
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
    """Network choice and size (arguments of :func:`glioseg.networks.build_model`); ``seg_layer_sum``
    (Isensee 2017): add the finest decoder levels' segmentation layers into the output (no auxiliary loss)."""

    name: str = "isensee2017"
    base_filters: int = 16
    depth: int = 5
    dropout: float = 0.3
    seg_layer_sum: bool = True

    def __post_init__(self) -> None:
        _require(self.name in MODEL_NAMES, f"model.name {self.name!r}: choose one of {list(MODEL_NAMES)}")
        _require(self.base_filters >= 1, f"model.base_filters must be >= 1, got {self.base_filters}")
        _require(self.depth >= 2, f"model.depth must be >= 2, got {self.depth}")
        _require(0.0 <= self.dropout < 1.0, f"model.dropout must be in [0, 1), got {self.dropout}")

    def kwargs(self, out_channels: int) -> dict[str, Any]:
        """Constructor arguments for :func:`glioseg.networks.build_model`."""
        common = {"in_channels": 4, "out_channels": out_channels, "base_filters": self.base_filters,
                  "depth": self.depth}
        return common if self.name == "unet3d" else {**common, "dropout": self.dropout,
                                                     "seg_layer_sum": self.seg_layer_sum}


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
        augment_cnr: per-channel probability of ``RandomChannelCNR`` (weaker contrast of other scanners); 0 = off.
        target: ``regions`` (WT/TC/ET sigmoid) or ``labels`` (4-class softmax).
        epochs, iterations: training length (iterations per epoch).
        val_every: validate every this many epochs (the last epoch always validates).
        val_window: sliding-window size for validation; None runs whole (padded) cases.
        precision: ``fp32``, ``bf16`` (CPU/CUDA) or ``fp16`` (CUDA).
        cascade_from: stage whose prediction guides this one at inference (informational).
        model_selection: ``last`` (the final weights; validation only monitors) or ``best`` (best validation Dice).
    """

    name: str = "main"
    spacing_mm: float | None = None
    patch_size: tuple[int, int, int] = (128, 128, 128)
    whole_volume: bool = False
    batch_size: int = 2
    fg_fraction: float = 0.33
    augment: bool = True
    augment_cnr: float = 0.0
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
    model_selection: str = "last"

    def __post_init__(self) -> None:
        for key in ("patch_size", "val_window"):
            if getattr(self, key) is not None:
                object.__setattr__(self, key, self._window(key, getattr(self, key)))
        _require(self.spacing_mm is None or self.spacing_mm > 0, f"stage {self.name}: spacing_mm must be > 0")
        _require(self.batch_size >= 1, f"stage {self.name}: batch_size must be >= 1, got {self.batch_size}")
        for key in ("fg_fraction", "augment_cnr"):
            _require(0.0 <= getattr(self, key) <= 1.0, f"stage {self.name}: {key} must be in [0, 1]")
        _require(self.target in TARGETS, f"stage {self.name}: target {self.target!r}: choose one of {list(TARGETS)}")
        _require(self.epochs >= 1 and self.iterations >= 1 and self.val_every >= 1,
                 f"stage {self.name}: epochs, iterations and val_every must be >= 1")
        _require(self.precision in PRECISIONS,
                 f"stage {self.name}: precision {self.precision!r}: choose one of {list(PRECISIONS)}")
        _require(self.name.isidentifier(), f"stage name {self.name!r} must be a simple identifier (folder name)")
        _require(self.model_selection in ("last", "best"),
                 f"stage {self.name}: model_selection {self.model_selection!r}: choose 'last' or 'best'")

    def _window(self, key: str, value: Any) -> tuple[int, int, int]:
        """``patch_size`` / ``val_window`` as 3 ints, each a positive multiple of ``2**(depth-1)`` (never truncated)."""
        items = tuple(value) if isinstance(value, (tuple, list)) else (value,)
        divisor = 2 ** (self.model.depth - 1)
        sizes = [int(s) for s in items if isinstance(s, numbers.Integral) and not isinstance(s, bool)]
        ok = len(sizes) == len(items) == 3 and all(s > 0 and s % divisor == 0 for s in sizes)
        _require(ok, f"stage {self.name}: {key} {value!r} must be 3 positive integer multiples of {divisor} "
                 f"(2**(depth-1) for depth {self.model.depth})")
        return sizes[0], sizes[1], sizes[2]


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
        """The stage called ``name`` (the first when None); ConfigError (listing the stages) when unknown."""
        found = [s for s in self.stages if name is None or s.name == name]
        if not found:
            raise ConfigError(f"unknown stage {name!r}; this config has {[s.name for s in self.stages]}")
        return found[0]

    def with_stage(self, name: str, **changes: Any) -> TrainConfig:
        """Copy with fields of one stage replaced (validated again)."""
        self.stage(name)
        return replace(self, stages=tuple(replace(s, **changes) if s.name == name else s for s in self.stages))


def isensee2017_preset() -> TrainConfig:
    """Isensee et al. 2017: 128^3, batch 2, 300 x 100 iterations, full network (GPU)."""
    return TrainConfig(preset="isensee2017", stages=(StageConfig(name="main", val_window=(128, 128, 128)),))


def cpu_preset() -> TrainConfig:
    """Two-stage recipe for 2 CPU cores: 2 mm whole brain, then 1 mm patches around the tumour (the
    settings of ``configs/cpu_shipped.yaml``, which also pins one thread per process); ``high`` feeds the cascade."""
    cosine = OptimConfig(lr=5e-4, weight_decay=1e-5, schedule="cosine")
    low = StageConfig(name="low", spacing_mm=2.0, patch_size=(96, 96, 96), whole_volume=True, batch_size=2,
                      fg_fraction=0.0, model=ModelConfig(base_filters=16, depth=5, dropout=0.3), optim=cosine,
                      precision="bf16", epochs=40, iterations=25, val_every=4)
    high = StageConfig(name="high", spacing_mm=1.0, patch_size=(80, 80, 80), batch_size=2, fg_fraction=0.9,
                       model=ModelConfig(base_filters=12, depth=5, dropout=0.3), optim=cosine, precision="bf16",
                       epochs=40, iterations=25, val_every=8, val_window=(128, 128, 128), cascade_from="low")
    return TrainConfig(preset="cpu", stages=(low, high), checkpoint_minutes=5.0)


PRESETS: dict[str, typing.Callable[[], TrainConfig]] = {"isensee2017": isensee2017_preset, "cpu": cpu_preset}


def get_preset(name: str) -> TrainConfig:
    """A preset by name; ConfigError (listing the presets) when unknown."""
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

    Every value is checked against its field's type first; ``where`` prefixes the field paths
    named in errors (e.g. ``"stages[0]."``).

    Raises:
        ConfigError: unknown key, a value of the wrong type (naming the field path, the value and
            the expected type) or an invalid value.
    """
    name = where.rstrip(".") or cls.__name__
    if not isinstance(data, dict):
        raise ConfigError(f"{name}: expected a mapping, got {data!r} ({type(data).__name__})")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        renamed = "".join(f"; {k} is now called {_RENAMED[k]}" for k in unknown if k in _RENAMED)
        raise ConfigError(f"{name}: unknown key(s) {unknown}; valid keys: {sorted(known)}{renamed}")
    values = {key: _convert(hints[key], value, getattr(base, key, None), f"{where}{key}")
              for key, value in data.items()}
    try:
        return replace(base, **values) if base is not None else cls(**values)
    except TypeError as exc:
        raise ConfigError(f"{name}: {exc}") from exc


_RENAMED = {"deep_supervision": "seg_layer_sum"}  # old key -> new key, named in the unknown-key error
_EXPECTED = {bool: "a boolean (true or false)", int: "an integer", float: "a number", str: "a string"}


def _convert(hint: Any, value: Any, base: Any, where: str) -> Any:
    """Check a YAML value against the field type ``hint`` (ConfigError naming ``where``); ints become floats."""
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return from_dict(hint, value, base, f"{where}.")
    args = typing.get_args(hint)
    if typing.get_origin(hint) in (typing.Union, types.UnionType):  # ``X | None``
        inner = next(a for a in args if a is not type(None))
        return None if value is None else _convert(inner, value, base, where)
    if typing.get_origin(hint) is tuple and args[:1] == (StageConfig,):
        return _convert_stages(value, base, where)
    if typing.get_origin(hint) is tuple:
        if not isinstance(value, (list, tuple)) or len(value) != len(args):
            raise _type_error(where, value, f"a list of {len(args)} values ({_EXPECTED[args[0]]} each)")
        return tuple(_scalar(a, v, f"{where}[{i}]") for i, (a, v) in enumerate(zip(args, value, strict=True)))
    return _scalar(hint, value, where)


def _scalar(hint: type, value: Any, where: str) -> Any:
    """A bool, int, float or str value checked against ``hint`` (bools are not numbers here)."""
    numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
    ok = {bool: isinstance(value, bool), int: numeric and isinstance(value, int), float: numeric,
          str: isinstance(value, str)}[hint]
    if not ok:
        raise _type_error(where, value, _EXPECTED[hint])
    return float(value) if hint is float else value


def _type_error(where: str, value: Any, expected: str) -> ConfigError:
    numeric = expected in (_EXPECTED[int], _EXPECTED[float])
    hint = "; write the number unquoted" if isinstance(value, str) and numeric else ""
    return ConfigError(f"{where}: expected {expected}, got {value!r} ({type(value).__name__}){hint}")


def _convert_stages(value: Any, base: Any, where: str) -> tuple[StageConfig, ...]:
    """Stages from YAML, merged by name: a mapping whose ``name`` matches a base stage overrides that
    stage's keys; other names are appended as new stages; base stages not mentioned are kept."""
    if not isinstance(value, list):
        raise ConfigError(f"{where}: expected a list of stage mappings")
    stages = {s.name: s for s in (base or ())}
    for i, item in enumerate(value):
        name = item.get("name") if isinstance(item, dict) else None
        stages[name or f"stage{i}"] = from_dict(StageConfig, item, stages.get(name), f"{where}[{i}].")
    return tuple(stages.values())


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader with YAML 1.2 floats: ``5e-4`` and ``1.0e5`` are numbers, not strings."""


_YAML12_FLOAT = re.compile(r"^[-+]?(?:(?:[0-9]+\.[0-9]*|\.[0-9]+)(?:[eE][-+]?[0-9]+)?|[0-9]+[eE][-+]?[0-9]+)$")
_Loader.add_implicit_resolver("tag:yaml.org,2002:float", _YAML12_FLOAT, list("-+0123456789."))


def read_yaml(path: Path | str) -> Any:
    """Parse a YAML file with the config loader (safe, YAML 1.2 floats); None for an empty file.

    Raises:
        ConfigError: unreadable file or invalid YAML (the message names the file).
    """
    try:
        return yaml.load(Path(path).read_text(), Loader=_Loader)
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: cannot read config ({' '.join(str(exc).split())})") from exc


def load_config(path: Path | str, base: TrainConfig | None = None) -> TrainConfig:
    """Read a YAML config; its keys override ``base`` (or the defaults when None).

    With a ``base``, listed stages are merged into the base's stages by name; without one the
    file's stages are taken as they are (a run's resolved ``config.yaml`` loads exactly).

    Raises:
        ConfigError: unreadable file, unknown key or invalid value (the message names the file).
    """
    data = read_yaml(path) or {}
    try:
        return from_dict(TrainConfig, data, base)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from exc


def resolve_config(preset: str | None = None, config_file: Path | str | None = None,
                   run_config: Path | str | None = None) -> TrainConfig:
    """The config of a ``glioseg train`` call: saved run config or preset, then the YAML file.

    Args:
        preset: preset name; None: the saved run config's, the YAML file's ``preset`` key, or isensee2017.
        config_file: YAML overrides merged on top.
        run_config: a run's saved ``config.yaml`` (used as the base when it exists).

    Raises:
        ConfigError: the preset differs from the run's, unknown preset, or a bad file.
    """
    base = load_config(run_config) if run_config is not None and Path(run_config).is_file() else None
    if base is not None and preset is not None and preset != base.preset:
        raise ConfigError(f"{run_config}: this run was made with preset {base.preset!r}, not "
                          f"{preset!r}; use another run directory")
    if base is None:
        data = read_yaml(config_file) if preset is None and config_file and Path(config_file).is_file() else None
        base = get_preset(preset or (data.get("preset") if isinstance(data, dict) else None) or "isensee2017")
    return load_config(config_file, base) if config_file is not None else base


def dump_config(config: TrainConfig) -> str:
    """YAML text of a config (round-trips through :func:`load_config`)."""
    return yaml.safe_dump(to_dict(config), sort_keys=False)


def save_config(config: TrainConfig, path: Path | str) -> Path:
    """Write a config as YAML atomically."""
    from glioseg.utils import atomic_write

    text = dump_config(config)
    return atomic_write(Path(path), lambda tmp: tmp.write_text(text))
