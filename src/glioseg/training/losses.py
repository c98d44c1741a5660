"""Soft Dice losses for region (sigmoid) and label (softmax) outputs, with their targets.

Two target modes:

* ``regions`` (default): 3 sigmoid channels WT, TC, ET; loss = ``dice_weight`` x soft Dice +
  ``bce_weight`` x binary cross-entropy.
* ``labels``: softmax over the 4 labels BG, NCR, ED, ET with the multi-class soft Dice of
  Isensee et al. 2017: ``1 - 2/|K| sum_k sum_i u_ik v_ik / (sum_i u_ik + sum_i v_ik)``
  (optionally + cross-entropy).

Every Dice term is ``(2 I + smooth) / (P + T + smooth)``, so an empty target predicted empty
scores 1 (loss 0) and an empty target with any predicted mass scores ~0.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from glioseg.labels import NUM_LABEL_CLASSES, RC, REGION_LABELS, REGIONS, TARGETS


def regions_target(labels: torch.Tensor) -> torch.Tensor:
    """Canonical label maps -> float region masks.

    Args:
        labels: integer ``(B, X, Y, Z)`` canonical labels (0 BG, 1 NCR, 2 ED, 3 ET, 4 RC).

    Returns:
        float32 ``(B, 3, X, Y, Z)`` masks in the order WT, TC, ET.
    """
    labels = labels.long()
    masks = [torch.zeros_like(labels, dtype=torch.bool) for _ in REGIONS]
    for i, region in enumerate(REGIONS):
        for value in REGION_LABELS[region]:
            masks[i] |= labels == value
    return torch.stack(masks, dim=1).float()


def labels_target(labels: torch.Tensor) -> torch.Tensor:
    """Canonical label maps -> class indices for the 4-label softmax (RC counts as background).

    Args:
        labels: integer ``(B, X, Y, Z)`` canonical labels.

    Returns:
        int64 ``(B, X, Y, Z)`` with values 0..3.
    """
    labels = labels.long()
    return torch.where(labels == RC, torch.zeros_like(labels), labels)


def one_hot(indices: torch.Tensor, num_classes: int = NUM_LABEL_CLASSES) -> torch.Tensor:
    """Class indices ``(B, X, Y, Z)`` -> float32 one-hot ``(B, num_classes, X, Y, Z)``."""
    return F.one_hot(indices.long(), num_classes).movedim(-1, 1).float()


def soft_dice(probs: torch.Tensor, target: torch.Tensor, smooth: float = 1e-5,
              batch_dice: bool = False) -> torch.Tensor:
    """Soft Dice coefficient per channel.

    Args:
        probs: ``(B, C, X, Y, Z)`` probabilities in [0, 1].
        target: same shape, binary masks (float).
        smooth: added to numerator and denominator.
        batch_dice: pool the voxels of the whole batch per channel (one Dice per channel)
            instead of one Dice per (case, channel).

    Returns:
        float32 ``(C,)`` if ``batch_dice`` else ``(B, C)``.
    """
    if probs.shape != target.shape:
        raise ValueError(f"soft_dice: prediction shape {tuple(probs.shape)} differs from target "
                         f"shape {tuple(target.shape)}")
    dims = (0, *range(2, probs.ndim)) if batch_dice else tuple(range(2, probs.ndim))
    probs, target = probs.float(), target.float()
    intersection = (probs * target).sum(dims)
    denominator = probs.sum(dims) + target.sum(dims)
    return (2 * intersection + smooth) / (denominator + smooth)


def region_loss(logits: torch.Tensor, labels: torch.Tensor, dice_weight: float = 1.0,
                bce_weight: float = 1.0, smooth: float = 1e-5, batch_dice: bool = False) -> torch.Tensor:
    """Soft Dice (+ BCE) on region logits.

    Args:
        logits: ``(B, 3, X, Y, Z)`` region logits (WT, TC, ET).
        labels: ``(B, X, Y, Z)`` canonical labels.
        dice_weight: weight of ``1 - mean Dice``.
        bce_weight: weight of the mean binary cross-entropy.
        smooth: Dice smoothing.
        batch_dice: see :func:`soft_dice`.

    Returns:
        Scalar float32 loss.
    """
    _check_logits(logits, labels, len(REGIONS), "regions")
    target = regions_target(labels)
    logits = logits.float()
    loss = dice_weight * (1 - soft_dice(torch.sigmoid(logits), target, smooth, batch_dice).mean())
    if bce_weight:
        loss = loss + bce_weight * F.binary_cross_entropy_with_logits(logits, target)
    return loss


def label_loss(logits: torch.Tensor, labels: torch.Tensor, dice_weight: float = 1.0,
               ce_weight: float = 0.0, smooth: float = 1e-5, batch_dice: bool = False,
               include_background: bool = True) -> torch.Tensor:
    """Isensee 2017 multi-class soft Dice (+ cross-entropy) on softmax logits.

    Args:
        logits: ``(B, 4, X, Y, Z)`` label logits (BG, NCR, ED, ET).
        labels: ``(B, X, Y, Z)`` canonical labels (RC counts as background).
        dice_weight: weight of ``1 - mean Dice`` over the classes.
        ce_weight: weight of the cross-entropy (0 in the paper).
        smooth: Dice smoothing.
        batch_dice: see :func:`soft_dice`.
        include_background: average the Dice over all 4 classes (paper) or the 3 tumour labels.

    Returns:
        Scalar float32 loss.
    """
    _check_logits(logits, labels, NUM_LABEL_CLASSES, "labels")
    indices = labels_target(labels)
    logits = logits.float()
    dice = soft_dice(torch.softmax(logits, dim=1), one_hot(indices), smooth, batch_dice)
    dice = dice if include_background else dice[..., 1:]
    loss = dice_weight * (1 - dice.mean())
    if ce_weight:
        loss = loss + ce_weight * F.cross_entropy(logits, indices)
    return loss


def _check_logits(logits: torch.Tensor, labels: torch.Tensor, channels: int, mode: str) -> None:
    """Raise ValueError when logits and labels do not match the ``mode`` contract."""
    if logits.ndim != labels.ndim + 1 or logits.shape[1] != channels or \
            logits.shape[:1] + logits.shape[2:] != labels.shape:
        raise ValueError(f"{mode} loss: logits {tuple(logits.shape)} must be (B, {channels}, *S) with "
                         f"labels (B, *S), got labels {tuple(labels.shape)}; the network's "
                         f"out_channels must be {channels} for target {mode!r}")


class RegionLoss(nn.Module):
    """Module form of :func:`region_loss`; ``forward(logits (B,3,*S), labels (B,*S)) -> scalar``."""

    def __init__(self, dice_weight: float = 1.0, bce_weight: float = 1.0, smooth: float = 1e-5,
                 batch_dice: bool = False) -> None:
        super().__init__()
        self.dice_weight, self.bce_weight = dice_weight, bce_weight
        self.smooth, self.batch_dice = smooth, batch_dice

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Loss of region logits against canonical labels."""
        return region_loss(logits, labels, self.dice_weight, self.bce_weight, self.smooth, self.batch_dice)


class LabelLoss(nn.Module):
    """Module form of :func:`label_loss`; ``forward(logits (B,4,*S), labels (B,*S)) -> scalar``."""

    def __init__(self, dice_weight: float = 1.0, ce_weight: float = 0.0, smooth: float = 1e-5,
                 batch_dice: bool = False, include_background: bool = True) -> None:
        super().__init__()
        self.dice_weight, self.ce_weight, self.smooth = dice_weight, ce_weight, smooth
        self.batch_dice, self.include_background = batch_dice, include_background

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Loss of label logits against canonical labels."""
        return label_loss(logits, labels, self.dice_weight, self.ce_weight, self.smooth,
                          self.batch_dice, self.include_background)


def build_loss(target: str, dice_weight: float = 1.0, bce_weight: float = 1.0, smooth: float = 1e-5,
               batch_dice: bool = False) -> nn.Module:
    """Loss module for a target mode (``bce_weight`` is the cross-entropy weight in labels mode).

    Raises:
        ValueError: unknown target; the message lists the valid ones.
    """
    if target == "regions":
        return RegionLoss(dice_weight, bce_weight, smooth, batch_dice)
    if target == "labels":
        return LabelLoss(dice_weight, bce_weight, smooth, batch_dice)
    raise ValueError(f"unknown target {target!r}; choose one of {list(TARGETS)}")


