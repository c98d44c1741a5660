"""What a run records of its preprocessing, and the check that inference feeds each stage exactly that.

Training reads a preprocessed dataset; ``run.json`` keeps that dataset's parameters under
``normalisation`` (``dataset.json`` ``params``: ``version``, ``target_spacing``, ``percentiles``,
``margin``) and each stage's ``spacing_mm`` under ``stages``. A stage may also carry its own
``stages.<name>.preprocessing`` record (same keys), which then wins over the run-wide one.
Inference preprocesses raw cases with :func:`glioseg.preprocessing.normalize.preprocess_case`, so a
model is refused, with one line naming the model, the stage and the setting, when its record is
missing or differs from what this version of the code does:

- ``version``: :data:`PREPROCESS_VERSION`, which fixes the rules that are not parameters: the
  brain mask (voxels non-zero in any channel) is both the z-score mask and the crop's mask, the
  crop is the mask's bounding box grown by ``margin`` voxels, and tiles are zero-padded (zero is the
  z-scored background). When a record states these rules (``mask``, ``crop``, ``padding``) they
  must be :data:`CODE_RULES`;
- ``percentiles`` (clipping before the z-score) and ``margin``;
- spacing: the stage's ``spacing_mm`` in ``config.yaml`` and in ``run.json`` agree, and the
  recorded ``target_spacing`` is that stage's (run-wide records: one of the run's stages').
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from glioseg.preprocessing.normalize import CLIP_PERCENTILES, CROP_MARGIN, PREPROCESS_VERSION

CODE_RULES: dict[str, str] = {"mask": "nonzero in any channel", "crop": "mask bounding box + margin voxels",
                              "padding": "zeros"}
RETRAIN = "predict with the glioseg version that trained it, or re-train it with this one"


class PreprocessingMismatch(ValueError):
    """A model's recorded preprocessing is missing or differs from what inference would do."""


@dataclass(frozen=True)
class PreprocessingSpec:
    """The preprocessing inference applies for one stage (read from the run, checked against the code).

    Attributes:
        spacing_mm: isotropic target spacing in mm, or None for each case's own spacing.
        percentiles: lower/upper clipping percentiles inside the brain mask, before the z-score.
        margin: voxels kept around the brain's bounding box.
    """

    spacing_mm: float | None
    percentiles: tuple[float, float] = CLIP_PERCENTILES
    margin: int = CROP_MARGIN


def code_record() -> dict[str, Any]:
    """What this version of the code does (the parameters; spacing is per stage)."""
    return {"version": PREPROCESS_VERSION, "percentiles": list(CLIP_PERCENTILES), "margin": CROP_MARGIN,
            **CODE_RULES}


def _same(a: Any, b: Any) -> bool:
    """Equal values, numbers (and lists of numbers) to within 1e-9 relative."""
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, int | float) and isinstance(b, int | float) and not isinstance(a, bool) \
            and not isinstance(b, bool):
        return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-9)
    return bool(a == b)


def _stage_record(info: Mapping[str, Any], stage: str, model: str) -> tuple[dict[str, Any], bool]:
    """The stage's own ``preprocessing`` record, else the run-wide ``normalisation``; whether per stage."""
    own = (info.get("stages") or {}).get(stage, {})
    if isinstance(own, dict) and isinstance(own.get("preprocessing"), dict):
        return own["preprocessing"], True
    record = info.get("normalisation")
    if not isinstance(record, dict):
        raise PreprocessingMismatch(f"model {model}: run.json records no preprocessing ('normalisation'), so "
                                    f"inference cannot be checked to match training; {RETRAIN}")
    return record, False


def _check_parameters(record: dict[str, Any], stage: str, model: str) -> None:
    """Version, percentiles, margin and any stated rule must be this code's."""
    expected = code_record()
    for key in ("version", "percentiles", "margin"):
        if key not in record:
            raise PreprocessingMismatch(f"model {model}: run.json records no preprocessing {key!r} for stage "
                                        f"{stage}; {RETRAIN}")
    for key, value in expected.items():
        if key in record and not _same(record[key], value):
            raise PreprocessingMismatch(f"model {model}: stage {stage} was trained with preprocessing {key} "
                                        f"{record[key]!r}, this glioseg preprocesses with {value!r}; {RETRAIN}")


def _check_spacing(info: Mapping[str, Any], record: dict[str, Any], per_stage: bool, stage: str,
                   spacing_mm: float | None, run_spacings: Mapping[str, float | None], model: str) -> None:
    """config.yaml and run.json agree on the stage's spacing, and the record was made at it."""
    recorded = (info.get("stages") or {}).get(stage, {})
    if isinstance(recorded, dict) and "spacing_mm" in recorded and not _same(recorded["spacing_mm"], spacing_mm):
        raise PreprocessingMismatch(f"model {model}: stage {stage} spacing is {spacing_mm} mm in config.yaml but "
                                    f"{recorded['spacing_mm']} mm in run.json; {RETRAIN}")
    if "target_spacing" not in record:
        raise PreprocessingMismatch(f"model {model}: run.json records no preprocessing 'target_spacing' for "
                                    f"stage {stage}; {RETRAIN}")
    target = record["target_spacing"]
    allowed = [spacing_mm] if per_stage else [spacing_mm, *run_spacings.values()]
    if not any(_same(target, s) for s in allowed):
        raise PreprocessingMismatch(f"model {model}: stage {stage} was trained on data preprocessed at "
                                    f"target_spacing {target} mm, but predicts at {spacing_mm} mm; {RETRAIN}")


def stage_preprocessing(info: Mapping[str, Any], stage: str, spacing_mm: float | None,
                        run_spacings: Mapping[str, float | None], model: str) -> PreprocessingSpec:
    """The preprocessing to feed one stage of a run, refused when it is not what the code does.

    Args:
        info: the run's ``run.json``.
        stage: stage name.
        spacing_mm: the stage's spacing in ``config.yaml``.
        run_spacings: spacing of every stage of the run's config (a run-wide record was made
            at one of them).
        model: how messages name the model (its folder).

    Returns:
        The stage's :class:`PreprocessingSpec`.

    Raises:
        PreprocessingMismatch: the record is missing or a setting differs (one line naming the
            model, the stage and the setting).
    """
    record, per_stage = _stage_record(info, stage, model)
    _check_parameters(record, stage, model)
    _check_spacing(info, record, per_stage, stage, spacing_mm, run_spacings, model)
    low, high = (float(p) for p in record["percentiles"])
    return PreprocessingSpec(spacing_mm, (low, high), int(record["margin"]))
