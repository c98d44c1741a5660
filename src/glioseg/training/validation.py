"""Validation during training: whole preprocessed cases, sliding window, per-region Dice.

The score here selects the best checkpoint of a stage; it is computed on the preprocessed grid
(no paste-back, no post-processing), so it is a fast proxy for :mod:`glioseg.evaluation.evaluate`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from glioseg.artifacts.weights import unwrap
from glioseg.config import StageConfig
from glioseg.inference.sliding_window import sliding_window_inference
from glioseg.labels import REGIONS, labels_to_regions, probabilities_to_labels
from glioseg.preprocessing.cache import load_preprocessed
from glioseg.runtime import autocast_context
from glioseg.utils import bounding_box, dice


def predict_logits(model: nn.Module, image: torch.Tensor, window: Sequence[int] | None,
                   device: torch.device, precision: str) -> torch.Tensor:
    """Logits of a whole preprocessed case, by sliding window (or whole volume when it fits).

    Args:
        model: network in eval mode with a ``divisor`` attribute.
        image: float32 ``(4, X, Y, Z)``.
        window: tile size, or None for the whole (padded) volume.

    Returns:
        float32 ``(K, X, Y, Z)`` logits on the CPU.
    """
    divisor = int(getattr(model, "divisor", 16))
    if window is None:
        window = [max(2 * divisor, math.ceil(s / divisor) * divisor) for s in image.shape[1:]]

    def run(x: torch.Tensor) -> torch.Tensor:
        with autocast_context(device, precision):
            return model(x).float()

    with torch.no_grad():
        return sliding_window_inference(image, run, window, overlap=0.25, divisor=divisor, device=device,
                                        output_device="cpu")


def tumour_crop(label: np.ndarray, margin: Sequence[int]) -> tuple[slice, ...]:
    """Bounding box of the tumour plus ``margin`` voxels per axis (whole volume when there is none)."""
    box = bounding_box(label != 0, margin=tuple(margin))
    return box if box is not None else tuple(slice(None) for _ in label.shape)


def logits_to_probabilities(logits: torch.Tensor, target: str) -> np.ndarray:
    """Network logits ``(K, *S)`` -> float32 probabilities ``(K, *S)``: sigmoid per region or softmax over labels."""
    probs = torch.sigmoid(logits.float()) if target == "regions" else torch.softmax(logits.float(), dim=0)
    return probs.cpu().numpy()


def validate(model: nn.Module, root: Path, case_ids: Sequence[str], stage: StageConfig,
             device: torch.device) -> dict[str, float]:
    """Per-region Dice (WT, TC, ET) on whole validation cases, averaged over cases.

    A cascade stage (``cascade_from`` set) is scored around the true tumour plus half a patch,
    as it would see it behind the low-resolution stage.

    Returns:
        ``{"dice_WT", "dice_TC", "dice_ET", "dice_mean"}``; empty dict without labelled cases.
    """
    net = unwrap(model)
    net.eval()
    scores = [s for s in (_case_dice(net, root, case_id, stage, device) for case_id in case_ids) if s is not None]
    net.train()
    if not scores:
        return {}
    mean = np.mean(np.asarray(scores), axis=0)
    out = {f"dice_{r.value}": float(m) for r, m in zip(REGIONS, mean, strict=True)}
    out["dice_mean"] = float(mean.mean())
    return out


def _case_dice(net: nn.Module, root: Path, case_id: str, stage: StageConfig,
               device: torch.device) -> list[float] | None:
    """Dice of WT, TC, ET for one preprocessed case (None without a label)."""
    pc = load_preprocessed(root, case_id, mmap=True)
    if pc.label is None:
        return None
    box = tumour_crop(pc.label, [p // 2 for p in stage.patch_size]) if stage.cascade_from else ()
    image = torch.from_numpy(np.array(pc.image[(slice(None), *box)], dtype=np.float32))
    logits = predict_logits(net, image, stage.val_window, device, stage.precision)
    pred = probabilities_to_labels(logits_to_probabilities(logits, stage.target), stage.target)
    p_reg, t_reg = labels_to_regions(pred), labels_to_regions(np.asarray(pc.label[box]))
    return [dice(p_reg[i], t_reg[i]) for i in range(len(REGIONS))]


def validation_window(stage: StageConfig, root: Path, case_ids: Sequence[str]) -> tuple[int, int, int] | None:
    """The tile inference should use to predict as validation did, when that is not ``patch_size``.

    A patch-trained stage without ``val_window`` is validated on each whole (padded) case, so
    the run records the whole-volume shape of its cases as the inference tile, not the training
    patch. Whole-volume stages (their ``patch_size``), stages with ``val_window`` and cascade
    stages (validated on tumour crops) keep their own setting: None.

    Args:
        stage: the stage's config.
        root: the preprocessed dataset.
        case_ids: the cases the stage trains and validates on.

    Returns:
        ``(X, Y, Z)`` multiples of 16 covering every case, or None.
    """
    from glioseg.preprocessing.cache import read_meta
    from glioseg.training.dataset import whole_volume_shape

    if stage.val_window is not None or stage.whole_volume or stage.cascade_from or not case_ids:
        return None
    return whole_volume_shape([read_meta(root, c)["shape"] for c in case_ids])
