"""Data augmentation as small composable ``Random*`` transforms on batched torch tensors.

Every transform takes and returns a batch dict ``{"image": float (B, C, X, Y, Z), "label": uint8
(B, X, Y, Z)}`` (the label is optional) and an explicit ``torch.Generator``; parameters are drawn
per sample, so the same generator state gives the same output. Transforms run on whatever device
the tensors are on (CPU workers or the training GPU); random tensors are drawn on the generator's
device, so pass a generator on the tensors' device.

Rotation, scaling and elastic deformation are one transform, :class:`RandomSpatial`, and one
resampling (a single ``grid_sample`` on a combined sampling grid). Its :meth:`RandomSpatial.draw`
also lets :class:`glioseg.training.dataset.PatchDataset` sample the deformed patch straight from the whole
(memory-mapped) volume, so that no enlarged patch is cut and no border is padded with zeros.
Defaults follow Isensee et al. 2017 / nnU-Net (mirroring, rotation, scaling 0.75-1.25, elastic,
gamma 0.8-1.5, brightness, contrast, noise, blur, low resolution).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

Batch = dict[str, Any]
LABEL_MODES = ("nearest", "onehot")


def _uniform(n: int, low: float, high: float, g: torch.Generator) -> torch.Tensor:
    """n samples of U(low, high), float32 on the CPU (parameters are tiny; keep them off the GPU)."""
    return low + (high - low) * torch.rand(n, generator=g, device=g.device).cpu()


def _chance(n: int, p: float, g: torch.Generator) -> torch.Tensor:
    """n Bernoulli(p) draws as a bool CPU tensor."""
    return torch.rand(n, generator=g, device=g.device).cpu() < p


def _check_range(name: str, r: Sequence[float], low: float = -math.inf) -> tuple[float, float]:
    lo, hi = float(r[0]), float(r[1])
    if not (low <= lo <= hi):
        raise ValueError(f"{name} range must satisfy {low} <= low <= high, got ({lo}, {hi})")
    return lo, hi


def _check_p(p: float) -> float:
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"probability must be in [0, 1], got {p}")
    return float(p)


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
        self.scale = _check_range("scale", scale, 1e-3)
        self.elastic_magnitude = _check_range("elastic_magnitude", elastic_magnitude, 0.0)
        self.elastic_spacing = int(elastic_spacing)
        self.p_rotation, self.p_scale, self.p_elastic = (_check_p(p) for p in (p_rotation, p_scale, p_elastic))
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
        rot = _chance(batch_size, self.p_rotation, generator)
        angles = _uniform(batch_size * 3, -self.rotation, self.rotation, generator).view(batch_size, 3)
        do_scale = _chance(batch_size, self.p_scale, generator)
        zoom = _uniform(batch_size, *self.scale, generator)
        elastic = _chance(batch_size, self.p_elastic, generator)
        magnitude = _uniform(batch_size, *self.elastic_magnitude, generator)
        base = None
        grids: list[torch.Tensor | None] = []
        for b in range(batch_size):
            if not (rot[b] or do_scale[b] or elastic[b]):
                grids.append(None)
                continue
            base = centred_offsets(shape, device) if base is None else base
            matrix = rotation_matrices(angles[b:b + 1])[0] if rot[b] else torch.eye(3)
            if do_scale[b]:
                matrix = matrix / zoom[b]
            grid = base @ matrix.T.to(device)
            if elastic[b]:
                grid = grid + self._displacement(shape, float(magnitude[b]), generator, device)
            grids.append(grid)
        return grids

    def _displacement(self, shape: Sequence[int], magnitude: float, g: torch.Generator,
                      device: torch.device | str) -> torch.Tensor:
        """Smooth random field: Gaussian control points upsampled trilinearly. ``(X, Y, Z, 3)``."""
        coarse = [max(2, math.ceil(n / self.elastic_spacing) + 1) for n in shape]
        noise = torch.randn((1, 3, *coarse), generator=g, device=g.device).to(device) * magnitude
        field = F.interpolate(noise, size=tuple(shape), mode="trilinear", align_corners=True)
        return field[0].permute(1, 2, 3, 0)

    def __call__(self, batch: Batch, generator: torch.Generator) -> Batch:
        """Deform a batch of patches (output shape = input shape; outside is 0 / background)."""
        image = batch["image"]
        shape = tuple(image.shape[2:])
        grids = self.draw(image.shape[0], shape, generator, image.device)
        if all(g is None for g in grids):
            return batch
        centre = torch.tensor([(n - 1) / 2 for n in shape], device=image.device)
        out = dict(batch)
        images, labels = [], []
        label = batch.get("label")
        for b, grid in enumerate(grids):
            if grid is None:
                images.append(image[b])
                labels.append(label[b] if label is not None else None)
                continue
            img, lab = resample_with_grid(image[b], label[b] if label is not None else None, grid + centre,
                                          self.label_mode, self.num_label_classes)
            images.append(img)
            labels.append(lab)
        out["image"] = torch.stack(images)
        if label is not None:
            out["label"] = torch.stack(labels)  # type: ignore[arg-type]
        return out


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
        self.p = _check_p(p)

    def __call__(self, batch: Batch, generator: torch.Generator) -> Batch:
        image, label = batch["image"], batch.get("label")
        flips = _chance(image.shape[0] * len(self.axes), self.p, generator).view(image.shape[0], len(self.axes))
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


class _PerSampleIntensity:
    """Base of intensity transforms: choose samples with probability p, change only their image."""

    def __init__(self, p: float) -> None:
        self.p = _check_p(p)

    def __call__(self, batch: Batch, generator: torch.Generator) -> Batch:
        image = batch["image"]
        chosen = _chance(image.shape[0], self.p, generator)
        params = self.draw(image.shape[0], image.shape[1], generator)
        if not chosen.any():
            return batch
        samples = list(image.unbind(0))
        for b in torch.nonzero(chosen).flatten().tolist():
            samples[b] = self.apply(samples[b], params[b], generator)
        return dict(batch, image=samples[0][None] if len(samples) == 1 else torch.stack(samples))

    def draw(self, n: int, channels: int, g: torch.Generator) -> torch.Tensor:
        raise NotImplementedError

    def apply(self, image: torch.Tensor, param: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        raise NotImplementedError


class RandomGamma(_PerSampleIntensity):
    """Gamma on each channel rescaled to [0, 1], then mean and std restored (nnU-Net style).

    Args:
        gamma: range of the exponent.
        p: per-sample probability.
    """

    def __init__(self, gamma: Sequence[float] = (0.8, 1.5), p: float = 0.3) -> None:
        super().__init__(p)
        self.gamma = _check_range("gamma", gamma, 1e-3)

    def draw(self, n: int, channels: int, g: torch.Generator) -> torch.Tensor:
        return _uniform(n * channels, *self.gamma, g).view(n, channels)

    def apply(self, image: torch.Tensor, param: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        shape = (-1, 1, 1, 1)
        flat = image.flatten(1)
        std, mean = torch.std_mean(flat, dim=1)
        lo, hi = torch.aminmax(flat, dim=1)
        span = (hi - lo).clamp(min=1e-7)
        # the rescale back from [0, 1] is linear, so restoring mean/std makes it unnecessary
        x = (image - lo.view(shape)).div_(span.view(shape)).clamp_(0, 1).pow_(param.to(image.device).view(shape))
        x_std, x_mean = torch.std_mean(x.flatten(1), dim=1)
        return x.sub_(x_mean.view(shape)).mul_((std / x_std.clamp(min=1e-7)).view(shape)).add_(mean.view(shape))


class _PerChannelFactor(_PerSampleIntensity):
    """Base of transforms driven by one factor per sample and channel, drawn from ``factor``."""

    def __init__(self, factor: Sequence[float] = (0.75, 1.25), p: float = 0.15) -> None:
        super().__init__(p)
        self.factor = _check_range("factor", factor, 0.0)

    def draw(self, n: int, channels: int, g: torch.Generator) -> torch.Tensor:
        return _uniform(n * channels, *self.factor, g).view(n, channels)


class RandomBrightness(_PerChannelFactor):
    """Multiply each channel by a factor from ``factor`` (per channel)."""

    def apply(self, image: torch.Tensor, param: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        return image * param.to(image.device).view(-1, 1, 1, 1)


class RandomContrast(_PerChannelFactor):
    """Scale each channel around its mean by a factor from ``factor``, clipped to its old range."""

    def apply(self, image: torch.Tensor, param: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        flat = image.flatten(1)
        shape = (-1, 1, 1, 1)
        lo, hi = torch.aminmax(flat, dim=1)
        mean = flat.mean(1).view(shape)
        x = (image - mean).mul_(param.to(image.device).view(shape)).add_(mean)
        return x.clamp_(lo.view(shape), hi.view(shape))


class RandomNoise(_PerSampleIntensity):
    """Add Gaussian noise with variance drawn from ``variance`` (per sample)."""

    def __init__(self, variance: Sequence[float] = (0.0, 0.1), p: float = 0.15) -> None:
        super().__init__(p)
        self.variance = _check_range("variance", variance, 0.0)

    def draw(self, n: int, channels: int, g: torch.Generator) -> torch.Tensor:
        return _uniform(n, *self.variance, g)

    def apply(self, image: torch.Tensor, param: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        noise = torch.randn(image.shape, generator=g, device=g.device, dtype=image.dtype).to(image.device)
        return noise.mul_(float(param) ** 0.5).add_(image)


def gaussian_blur(image: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of ``(C, X, Y, Z)`` with ``sigma`` voxels (replicate borders).

    A weighted sum of shifted views: on CPU ~4x faster than ``conv3d``/``conv1d`` with a
    one-channel kernel.
    """
    radius = max(1, math.ceil(3 * sigma))
    x = torch.arange(-radius, radius + 1, dtype=torch.float64)
    kernel = torch.exp(-0.5 * (x / sigma) ** 2)
    weights = (kernel / kernel.sum()).tolist()
    out = image
    for axis in (1, 2, 3):
        n = out.shape[axis]
        pad = [0] * 6
        pad[2 * (3 - axis)] = pad[2 * (3 - axis) + 1] = radius
        padded = F.pad(out[None], pad, mode="replicate")[0]
        acc = torch.zeros_like(out)
        for j, w in enumerate(weights):
            acc.add_(padded.narrow(axis, j, n), alpha=w)
        out = acc
    return out


class RandomBlur(_PerSampleIntensity):
    """Gaussian blur with sigma drawn from ``sigma`` voxels (per sample)."""

    def __init__(self, sigma: Sequence[float] = (0.5, 1.0), p: float = 0.2) -> None:
        super().__init__(p)
        self.sigma = _check_range("sigma", sigma, 1e-3)

    def draw(self, n: int, channels: int, g: torch.Generator) -> torch.Tensor:
        return _uniform(n, *self.sigma, g)

    def apply(self, image: torch.Tensor, param: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        return gaussian_blur(image, float(param))


class RandomLowRes(_PerSampleIntensity):
    """Simulate low resolution: downsample by a zoom from ``zoom`` (nearest), upsample (trilinear)."""

    def __init__(self, zoom: Sequence[float] = (0.5, 1.0), p: float = 0.25) -> None:
        super().__init__(p)
        self.zoom = _check_range("zoom", zoom, 1e-2)
        if self.zoom[1] > 1:
            raise ValueError(f"zoom must be <= 1 (a lower resolution), got {zoom}")

    def draw(self, n: int, channels: int, g: torch.Generator) -> torch.Tensor:
        return _uniform(n, *self.zoom, g)

    def apply(self, image: torch.Tensor, param: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        shape = image.shape[1:]
        small = [max(1, round(n * float(param))) for n in shape]
        low = F.interpolate(image[None], size=small, mode="nearest")
        return F.interpolate(low, size=tuple(shape), mode="trilinear", align_corners=False)[0]


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


def default_augmentation(label_mode: str = "nearest") -> Compose:
    """The default training augmentation (Isensee et al. 2017 / nnU-Net ranges).

    Returns:
        Compose of RandomSpatial (rotation 15 deg, scale 0.75-1.25, elastic), RandomLowRes,
        RandomBlur, RandomNoise, RandomBrightness, RandomContrast, RandomGamma, RandomFlip.
    """
    return Compose([
        RandomSpatial(label_mode=label_mode),
        RandomNoise(), RandomBlur(), RandomBrightness(), RandomContrast(),
        RandomLowRes(), RandomGamma(), RandomFlip(),
    ])


def seed_generator(*keys: int, device: torch.device | str = "cpu") -> torch.Generator:
    """A torch generator seeded from a tuple of integers (e.g. seed, epoch, index)."""
    seed = int(np.random.SeedSequence([int(k) % (2**63) for k in keys]).generate_state(1, np.uint64)[0])
    return torch.Generator(device=device).manual_seed(seed % (2**63))
