"""Intensity transforms: gamma, brightness, contrast, contrast-to-noise, noise, blur and low resolution (image only).

Each chooses samples with its probability ``p`` and draws its parameters per sample (and per
channel where it says so); the label is never changed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from glioseg.training.randomness import Batch, chance, check_p, check_range, uniform


class _PerSampleIntensity:
    """Base of intensity transforms: choose samples with probability p, change only their image."""

    def __init__(self, p: float) -> None:
        self.p = check_p(p)

    def __call__(self, batch: Batch, generator: torch.Generator) -> Batch:
        image = batch["image"]
        chosen = chance(image.shape[0], self.p, generator)
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
        self.gamma = check_range("gamma", gamma, 1e-3)

    def draw(self, n: int, channels: int, g: torch.Generator) -> torch.Tensor:
        return uniform(n * channels, *self.gamma, g).view(n, channels)

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
        self.factor = check_range("factor", factor, 0.0)

    def draw(self, n: int, channels: int, g: torch.Generator) -> torch.Tensor:
        return uniform(n * channels, *self.factor, g).view(n, channels)


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


class RandomChannelCNR(_PerSampleIntensity):
    """Lower one channel's contrast-to-noise ratio inside the brain, as another scanner's would be.

    On z-scored images, each channel chosen (probability ``p`` per channel) becomes
    ``mean + f * (x - mean) + sqrt(1 - f**2) * sd * n`` inside the brain: ``f`` from ``factor``,
    ``mean`` and ``sd`` the channel's own in the brain, ``n`` unit-variance Gaussian noise blurred
    with sigma from ``sigma`` voxels (texture, not white noise). The channel keeps its mean and
    standard deviation while every contrast in it, tumour against brain included, shrinks by ``f``:
    the low-contrast FLAIR/T2 of some institutions (tumour-to-brain gaps of 0.7-1 sd where most
    cases have 2.5-3). Voxels outside the brain (zero in every channel) are left at zero.

    Args:
        factor: range of ``f`` (contrast kept), within [0, 1].
        sigma: range of the noise's blur, in voxels.
        p: per-channel probability.
    """

    def __init__(self, factor: Sequence[float] = (0.25, 1.0), sigma: Sequence[float] = (0.5, 2.0),
                 p: float = 0.2) -> None:
        super().__init__(1.0)  # every sample; the channels are chosen in draw()
        self.channel_p = check_p(p)
        self.factor = check_range("factor", factor, 0.0)
        if self.factor[1] > 1:
            raise ValueError(f"factor must be <= 1 (less contrast), got {factor}")
        self.sigma = check_range("sigma", sigma, 1e-3)

    def draw(self, n: int, channels: int, g: torch.Generator) -> torch.Tensor:
        chosen = chance(n * channels, self.channel_p, g)
        factor = torch.where(chosen, uniform(n * channels, *self.factor, g), torch.ones(n * channels))
        return torch.stack([factor, uniform(n * channels, *self.sigma, g)], dim=1).view(n, channels, 2)

    def apply(self, image: torch.Tensor, param: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        brain = (image != 0).any(0)
        if int(brain.sum()) < 2:
            return image
        out = image.clone()
        for c, (f, sigma) in enumerate(param.tolist()):
            if f >= 1.0:
                continue
            noise = torch.randn(image.shape[1:], generator=g, device=g.device, dtype=image.dtype).to(image.device)
            noise = gaussian_blur(noise[None], sigma)[0][brain]
            std, mean = torch.std_mean(image[c][brain])
            n_std, n_mean = torch.std_mean(noise)
            noise = (noise - n_mean) / n_std.clamp(min=1e-7)
            out[c][brain] = mean + f * (image[c][brain] - mean) + math.sqrt(1.0 - f * f) * std * noise
        return out


class RandomNoise(_PerSampleIntensity):
    """Add Gaussian noise with variance drawn from ``variance`` (per sample)."""

    def __init__(self, variance: Sequence[float] = (0.0, 0.1), p: float = 0.15) -> None:
        super().__init__(p)
        self.variance = check_range("variance", variance, 0.0)

    def draw(self, n: int, channels: int, g: torch.Generator) -> torch.Tensor:
        return uniform(n, *self.variance, g)

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
        self.sigma = check_range("sigma", sigma, 1e-3)

    def draw(self, n: int, channels: int, g: torch.Generator) -> torch.Tensor:
        return uniform(n, *self.sigma, g)

    def apply(self, image: torch.Tensor, param: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        return gaussian_blur(image, float(param))


class RandomLowRes(_PerSampleIntensity):
    """Simulate low resolution: downsample by a zoom from ``zoom`` (nearest), upsample (trilinear)."""

    def __init__(self, zoom: Sequence[float] = (0.5, 1.0), p: float = 0.25) -> None:
        super().__init__(p)
        self.zoom = check_range("zoom", zoom, 1e-2)
        if self.zoom[1] > 1:
            raise ValueError(f"zoom must be <= 1 (a lower resolution), got {zoom}")

    def draw(self, n: int, channels: int, g: torch.Generator) -> torch.Tensor:
        return uniform(n, *self.zoom, g)

    def apply(self, image: torch.Tensor, param: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        shape = image.shape[1:]
        small = [max(1, round(n * float(param))) for n in shape]
        low = F.interpolate(image[None], size=small, mode="nearest")
        return F.interpolate(low, size=tuple(shape), mode="trilinear", align_corners=False)[0]
