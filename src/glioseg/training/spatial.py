"""Spatial transforms: rotation + scaling + elastic deformation in one resampling, and mirroring.

Rotation, scaling and elastic deformation are one transform, :class:`RandomSpatial`, and one
resampling (a single ``grid_sample`` on a combined sampling grid). Its :meth:`RandomSpatial.draw`
also lets :class:`glioseg.training.dataset.PatchDataset` sample the deformed patch straight from the whole
(memory-mapped) volume, so that no enlarged patch is cut and no border is padded with zeros.
Image and label always move together (the label resampled by nearest neighbour or one-hot).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import torch
import torch.nn.functional as F

from glioseg.training.randomness import Batch, chance, check_p, check_range, uniform

LABEL_MODES = ("nearest", "onehot")


def rotation_matrices(angles: torch.Tensor) -> torch.Tensor:
    """Rotation matrices from per-axis angles.

    Args:
        angles: float ``(B, 3)`` radians about the X, Y and Z axes.

    Returns:
        float ``(B, 3, 3)``, ``Rz @ Ry @ Rx``.
    """
    c, s = torch.cos(angles), torch.sin(angles)
    one, zero = torch.ones_like(c[:, 0]), torch.zeros_like(c[:, 0])
    rx = torch.stack([one, zero, zero, zero, c[:, 0], -s[:, 0], zero, s[:, 0], c[:, 0]], 1).view(-1, 3, 3)
    ry = torch.stack([c[:, 1], zero, s[:, 1], zero, one, zero, -s[:, 1], zero, c[:, 1]], 1).view(-1, 3, 3)
    rz = torch.stack([c[:, 2], -s[:, 2], zero, s[:, 2], c[:, 2], zero, zero, zero, one], 1).view(-1, 3, 3)
    return rz @ ry @ rx


def centred_offsets(shape: Sequence[int], device: torch.device | str = "cpu") -> torch.Tensor:
    """Voxel offsets of a grid from its centre.

    Returns:
        float32 ``(X, Y, Z, 3)``; entry ``[i, j, k]`` is ``(i, j, k) - (shape - 1) / 2``.
    """
    axes = [torch.arange(n, dtype=torch.float32, device=device) - (n - 1) / 2 for n in shape]
    return torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1)


class RandomSpatial:
    """Rotation + isotropic scaling + elastic deformation, in one resampling.

    Args:
        rotation_deg: maximum absolute angle about each axis (uniform in ``[-r, r]``).
        scale: zoom range; > 1 enlarges the content (the patch covers less of the volume).
        elastic_magnitude: range of the displacement standard deviation, in voxels.
        elastic_spacing: distance in voxels between the control points of the smooth
            displacement field (the larger, the smoother).
        p_rotation, p_scale, p_elastic: per-sample probability of each component.
        label_mode: ``"nearest"`` (fast) or ``"onehot"`` (trilinear one-hot + argmax; smoother).
        num_label_classes: classes for ``"onehot"`` (canonical labels 0..4 -> 5).
    """

    def __init__(self, rotation_deg: float = 15.0, scale: Sequence[float] = (0.75, 1.25),
                 elastic_magnitude: Sequence[float] = (0.0, 3.0), elastic_spacing: int = 24,
                 p_rotation: float = 0.2, p_scale: float = 0.2, p_elastic: float = 0.2,
                 label_mode: str = "nearest", num_label_classes: int = 5) -> None:
        if rotation_deg < 0:
            raise ValueError(f"rotation_deg must be >= 0, got {rotation_deg}")
        if elastic_spacing < 2:
            raise ValueError(f"elastic_spacing must be >= 2 voxels, got {elastic_spacing}")
        if label_mode not in LABEL_MODES:
            raise ValueError(f"label_mode must be one of {LABEL_MODES}, got {label_mode!r}")
        self.rotation = math.radians(rotation_deg)
        self.scale = check_range("scale", scale, 1e-3)
        self.elastic_magnitude = check_range("elastic_magnitude", elastic_magnitude, 0.0)
        self.elastic_spacing = int(elastic_spacing)
        self.p_rotation, self.p_scale, self.p_elastic = (check_p(p) for p in (p_rotation, p_scale, p_elastic))
        self.label_mode = label_mode
        self.num_label_classes = num_label_classes

    def draw(self, batch_size: int, shape: Sequence[int], generator: torch.Generator,
             device: torch.device | str = "cpu") -> list[torch.Tensor | None]:
        """Draw each sample's sampling grid.

        Args:
            batch_size: number of samples.
            shape: output spatial shape ``(X, Y, Z)``.
            generator: random source.
            device: where the grids live.

        Returns:
            Per sample, None (identity: no component drawn) or float32 ``(X, Y, Z, 3)`` offsets,
            in voxels of the input, from the input point that lands on the output centre.
        """
        rot = chance(batch_size, self.p_rotation, generator)
        angles = uniform(batch_size * 3, -self.rotation, self.rotation, generator).view(batch_size, 3)
        do_scale = chance(batch_size, self.p_scale, generator)
        zoom = uniform(batch_size, *self.scale, generator)
        elastic = chance(batch_size, self.p_elastic, generator)
        magnitude = uniform(batch_size, *self.elastic_magnitude, generator)
        active = rot | do_scale | elastic
        base = centred_offsets(shape, device) if bool(active.any()) else torch.zeros(0)
        # elastic fields are drawn sample by sample, in order, after the per-batch parameters
        return [self._grid(base, angles[b] if rot[b] else None, zoom[b] if do_scale[b] else None,
                           float(magnitude[b]) if elastic[b] else None, generator) if active[b] else None
                for b in range(batch_size)]

    def _grid(self, base: torch.Tensor, angles: torch.Tensor | None, zoom: torch.Tensor | None,
              magnitude: float | None, generator: torch.Generator) -> torch.Tensor:
        """One sample's grid from the centred offsets ``base`` ``(X, Y, Z, 3)``: rotate, zoom, deform."""
        matrix = rotation_matrices(angles[None])[0] if angles is not None else torch.eye(3)
        if zoom is not None:
            matrix = matrix / zoom
        grid = base @ matrix.T.to(base.device)
        if magnitude is not None:
            grid = grid + self._displacement(tuple(base.shape[:3]), magnitude, generator, base.device)
        return grid

    def _displacement(self, shape: Sequence[int], magnitude: float, g: torch.Generator,
                      device: torch.device | str) -> torch.Tensor:
        """Smooth random field: Gaussian control points upsampled trilinearly. ``(X, Y, Z, 3)``."""
        coarse = [max(2, math.ceil(n / self.elastic_spacing) + 1) for n in shape]
        noise = torch.randn((1, 3, *coarse), generator=g, device=g.device).to(device) * magnitude
        field = F.interpolate(noise, size=tuple(shape), mode="trilinear", align_corners=True)
        return field[0].permute(1, 2, 3, 0)

    def __call__(self, batch: Batch, generator: torch.Generator) -> Batch:
        """Deform a batch of patches (output shape = input shape; outside is 0 / background)."""
        image, label = batch["image"], batch.get("label")
        shape = tuple(image.shape[2:])
        grids = self.draw(image.shape[0], shape, generator, image.device)
        if all(g is None for g in grids):
            return batch
        centre = torch.tensor([(n - 1) / 2 for n in shape], device=image.device)
        pairs = [self._resample(image[b], None if label is None else label[b], grid, centre)
                 for b, grid in enumerate(grids)]
        out = dict(batch, image=torch.stack([img for img, _ in pairs]))
        if label is not None:
            out["label"] = torch.stack([lab for _, lab in pairs if lab is not None])
        return out

    def _resample(self, image: torch.Tensor, label: torch.Tensor | None, grid: torch.Tensor | None,
                  centre: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """One sample ``(C, X, Y, Z)`` / ``(X, Y, Z)`` on its grid (unchanged without one)."""
        if grid is None:
            return image, label
        return resample_with_grid(image, label, grid + centre, self.label_mode, self.num_label_classes)


def resample_with_grid(image: torch.Tensor, label: torch.Tensor | None, coords: torch.Tensor,
                       label_mode: str = "nearest", num_label_classes: int = 5
                       ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Sample an image (trilinear) and its label at voxel coordinates; outside is 0.

    Args:
        image: float ``(C, X, Y, Z)``.
        label: uint8 ``(X, Y, Z)`` or None.
        coords: float ``(x, y, z, 3)`` voxel coordinates into ``image`` (axis order X, Y, Z).
        label_mode: ``"nearest"`` or ``"onehot"``.
        num_label_classes: classes for ``"onehot"``.

    Returns:
        image float ``(C, x, y, z)``, label uint8 ``(x, y, z)`` or None.
    """
    size = torch.tensor(image.shape[1:], dtype=coords.dtype, device=coords.device)
    norm = (2.0 * coords / (size - 1).clamp(min=1) - 1.0).flip(-1)[None]  # grid_sample wants (z, y, x)
    out = F.grid_sample(image[None].float(), norm, mode="bilinear", padding_mode="zeros", align_corners=True)[0]
    if label is None:
        return out, None
    if label_mode == "onehot":
        onehot = F.one_hot(label.long(), num_label_classes).permute(3, 0, 1, 2).float()[None]
        prob = F.grid_sample(onehot, norm, mode="bilinear", padding_mode="zeros", align_corners=True)[0]
        prob[0] += 1e-6  # outside the volume -> background
        return out, prob.argmax(0).to(torch.uint8)
    lab = F.grid_sample(label[None, None].float(), norm, mode="nearest", padding_mode="zeros", align_corners=True)
    return out, lab[0, 0].to(torch.uint8)


class RandomFlip:
    """Mirror each spatial axis with probability ``p`` (per sample, per axis).

    Args:
        axes: spatial axes (0 = X, 1 = Y, 2 = Z) that may be mirrored.
        p: probability per axis.
    """

    def __init__(self, axes: Iterable[int] = (0, 1, 2), p: float = 0.5) -> None:
        self.axes = tuple(int(a) for a in axes)
        if not set(self.axes) <= {0, 1, 2}:
            raise ValueError(f"axes must be among 0, 1, 2 (X, Y, Z), got {self.axes}")
        self.p = check_p(p)

    def __call__(self, batch: Batch, generator: torch.Generator) -> Batch:
        image, label = batch["image"], batch.get("label")
        flips = chance(image.shape[0] * len(self.axes), self.p, generator).view(image.shape[0], len(self.axes))
        if not flips.any():
            return batch
        images, labels = list(image.unbind(0)), list(label.unbind(0)) if label is not None else None
        for b in range(image.shape[0]):
            dims = [a for a, f in zip(self.axes, flips[b].tolist(), strict=True) if f]
            if dims:
                images[b] = images[b].flip([d + 1 for d in dims])
                if labels is not None:
                    labels[b] = labels[b].flip(dims)
        out = dict(batch, image=torch.stack(images))
        if labels is not None:
            out["label"] = torch.stack(labels)
        return out
