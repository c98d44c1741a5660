"""Data augmentation: the training pipeline composed of small ``Random*`` transforms.

Every transform takes and returns a batch dict ``{"image": float (B, C, X, Y, Z), "label": uint8
(B, X, Y, Z)}`` (the label is optional) and an explicit ``torch.Generator``; parameters are drawn
per sample, so the same generator state gives the same output. Transforms run on whatever device
the tensors are on (CPU workers or the training GPU); random tensors are drawn on the generator's
device, so pass a generator on the tensors' device.

The transforms live in :mod:`glioseg.training.spatial` (rotation, scaling, elastic deformation,
mirroring) and :mod:`glioseg.training.intensity` (gamma, brightness, contrast, noise, blur, low
resolution); shared random draws and :func:`~glioseg.training.randomness.seed_generator` in
:mod:`glioseg.training.randomness`. Defaults follow Isensee et al. 2017 / nnU-Net (mirroring,
rotation, scaling 0.75-1.25, elastic, gamma 0.8-1.5, brightness, contrast, noise, blur, low
resolution).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from glioseg.training.intensity import (
    RandomBlur,
    RandomBrightness,
    RandomChannelCNR,
    RandomContrast,
    RandomGamma,
    RandomLowRes,
    RandomNoise,
)
from glioseg.training.randomness import Batch
from glioseg.training.spatial import RandomFlip, RandomSpatial


class Compose:
    """Apply transforms in order with one generator.

    Args:
        transforms: callables ``(batch, generator) -> batch``.
    """

    def __init__(self, transforms: Sequence[Any]) -> None:
        self.transforms = list(transforms)

    def __call__(self, batch: Batch, generator: torch.Generator) -> Batch:
        for t in self.transforms:
            batch = t(batch, generator)
        return batch

    def split_spatial(self) -> tuple[RandomSpatial | None, Compose]:
        """The first :class:`RandomSpatial` (if it is the first transform) and the rest.

        Lets the dataset draw the spatial grid itself and sample the patch straight from the
        whole volume.
        """
        if self.transforms and isinstance(self.transforms[0], RandomSpatial):
            return self.transforms[0], Compose(self.transforms[1:])
        return None, self


def default_augmentation(label_mode: str = "nearest", cnr: float = 0.0) -> Compose:
    """The default training augmentation (Isensee et al. 2017 / nnU-Net ranges).

    Args:
        label_mode: how the spatial transform resamples labels.
        cnr: per-channel probability of :class:`RandomChannelCNR` (another scanner's weaker
            contrast); 0 leaves it out, so the pipeline and its random draws are the default's.

    Returns:
        Compose of, in order, RandomSpatial (rotation 15 deg, scale 0.75-1.25, elastic),
        RandomNoise, RandomBlur, RandomBrightness, RandomContrast, [RandomChannelCNR,]
        RandomLowRes, RandomGamma, RandomFlip.
    """
    cnr_step = [RandomChannelCNR(p=cnr)] if cnr > 0 else []
    return Compose([
        RandomSpatial(label_mode=label_mode),
        RandomNoise(), RandomBlur(), RandomBrightness(), RandomContrast(), *cnr_step,
        RandomLowRes(), RandomGamma(), RandomFlip(),
    ])
