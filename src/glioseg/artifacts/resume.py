"""What may change when ``glioseg train`` runs again in an existing run directory.

The run's ``config.yaml`` is the record of how its stages were trained, so a new config is
compared with it field by field (:func:`config_changes`) before anything is written
(:func:`check_resume`):

* Run-wide fields in :data:`FREE_FIELDS` (``device``, ``threads``, ``checkpoint_minutes``,
  ``num_workers``: where and how fast the run computes, not what it computes) may always change.
* Any other change is refused when it touches a *started* stage (one with ``state.pt``,
  ``last.safetensors`` or ``model.safetensors``), or is run-wide while any stage has started;
  the error names every differing field, e.g. ``stages[0].epochs: 40 -> 80``.
* Changes to stages that have not started are allowed (a cascade's second stage may be set up
  after the first one trained).
* ``--no-resume`` retrains the stage from scratch, so that stage may change too, except the
  settings its existing ``model.safetensors`` depends on (:data:`~glioseg.artifacts.weights.INFERENCE_KEYS`).

Allowed changes are never merged silently: :func:`glioseg.artifacts.rundir.prepare_run` appends
them to ``run.json`` (``config_changes``) and ``glioseg train`` prints them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from glioseg.artifacts.weights import INFERENCE_KEYS
from glioseg.config import ConfigError, TrainConfig, load_config, to_dict

FREE_FIELDS: tuple[str, ...] = ("device", "threads", "checkpoint_minutes", "num_workers")
STAGE_FILES: tuple[str, ...] = ("state.pt", "last.safetensors", "model.safetensors")


class _Absent:
    """Marks a stage that one of the two configs lacks."""

    def __repr__(self) -> str:
        return "(absent)"


ABSENT = _Absent()


@dataclass(frozen=True)
class ConfigChange:
    """One differing field: ``path`` as in ``stages[0].optim.lr``; ``stage`` None for run-wide fields.

    Attributes:
        path: field path (stage indices are those of the saved config; new stages: of the new one).
        old, new: the saved and the new value (:data:`ABSENT` for a stage only one config has).
        stage: the stage's name, or None for a run-wide field.
        key: the top-level field of the stage (or of the config) that holds the change.
    """

    path: str
    old: Any
    new: Any
    stage: str | None
    key: str

    def __str__(self) -> str:
        return f"{self.path}: {self.old!r} -> {self.new!r}"


def config_changes(old: TrainConfig, new: TrainConfig) -> list[ConfigChange]:
    """Every leaf field that differs between two configs (stages matched by name)."""
    a, b = to_dict(old), to_dict(new)
    changes = _leaf_changes({k: v for k, v in a.items() if k != "stages"},
                            {k: v for k, v in b.items() if k != "stages"}, "", None, None)
    new_stages = {s["name"]: s for s in b["stages"]}
    for i, stage in enumerate(a["stages"]):
        other = new_stages.pop(stage["name"], None)
        if other is None:
            changes.append(ConfigChange(f"stages[{i}]", stage["name"], ABSENT, stage["name"], "name"))
        else:
            changes += _leaf_changes(stage, other, f"stages[{i}].", stage["name"], None)
    for i, stage in enumerate(b["stages"]):
        if stage["name"] in new_stages:
            changes.append(ConfigChange(f"stages[{i}]", ABSENT, stage["name"], stage["name"], "name"))
    return changes


def _leaf_changes(a: dict[str, Any], b: dict[str, Any], prefix: str, stage: str | None,
                  key: str | None) -> list[ConfigChange]:
    """Differing leaves of two nested mappings, with paths under ``prefix``."""
    out: list[ConfigChange] = []
    for name in dict.fromkeys([*a, *b]):
        x, y = a.get(name, ABSENT), b.get(name, ABSENT)
        if isinstance(x, dict) and isinstance(y, dict):
            out += _leaf_changes(x, y, f"{prefix}{name}.", stage, key or name)
        elif x != y:
            out.append(ConfigChange(f"{prefix}{name}", x, y, stage, key or name))
    return out


def started_stages(run_dir: Path, config: TrainConfig) -> set[str]:
    """Stages of ``config`` whose folder in ``run_dir`` holds weights or a checkpoint."""
    return {s.name for s in config.stages if any((run_dir / s.name / f).is_file() for f in STAGE_FILES)}


def check_resume(run_dir: Path | str, config: TrainConfig, stage: str, resume: bool = True) -> list[ConfigChange]:
    """Compare ``config`` with the run's saved ``config.yaml``; refuse changes that would alter trained work.

    Args:
        run_dir: the run directory (nothing to check without ``config.yaml``).
        config: the config about to be written.
        stage: the stage about to be trained.
        resume: False when that stage starts over (``--no-resume``).

    Returns:
        The allowed changes (empty for a new run or the same settings).

    Raises:
        ConfigError: one-line message naming the file and every refused change.
    """
    run_dir = Path(run_dir)
    path = run_dir / "config.yaml"
    if not path.is_file():
        return []
    old = load_config(path)
    changes = config_changes(old, config)
    started = started_stages(run_dir, old)
    restart = None if resume else stage
    refused = [c for c in changes if _refused(c, started, run_dir, restart)]
    if refused:
        hint = ""
        if resume and not [c for c in changes if _refused(c, started, run_dir, stage)]:
            hint = f", or pass --no-resume to retrain stage {stage} from scratch"
        raise ConfigError(f"{path}: this run was trained with other settings: {'; '.join(map(str, refused))}; "
                          f"keep the run's settings (drop the options that change them) or use a new run "
                          f"directory{hint}")
    return changes


def _refused(change: ConfigChange, started: set[str], run_dir: Path, restart: str | None) -> bool:
    """Whether a change would alter a started stage (see the module docstring)."""
    if change.stage is None:
        return change.key not in FREE_FIELDS and bool(started - {restart})
    if change.stage == restart:
        return change.key in INFERENCE_KEYS and (run_dir / change.stage / "model.safetensors").is_file()
    return change.stage in started
