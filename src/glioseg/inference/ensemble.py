"""Networks as a tile function: models x mirror flips x Monte-Carlo dropout samples.

:class:`TilePredictor` runs one or several networks under autocast on a tile
``(B, C, *window)``, applies the activation (sigmoid for region targets, softmax for label
targets) and averages probabilities over models, flips and MC-dropout samples. With MC dropout it
also returns the per-voxel second moment, so that the stitched output yields a standard deviation
(:func:`split_moments`). :func:`predict_volume` stitches it over a whole volume with
:func:`glioseg.inference.sliding_window.sliding_window_inference`. Mirroring is done per tile
(not per volume), so the stitching buffers exist once.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Iterator, Sequence

import torch
from torch import nn

from glioseg.inference.sliding_window import single_threaded, sliding_window_inference
from glioseg.runtime import autocast_context, check_precision

Flip = tuple[int, ...]
"""Spatial axes (0..2) to mirror, sorted; ``()`` is the identity."""
ALL_FLIPS: tuple[Flip, ...] = tuple(c for n in range(4) for c in itertools.combinations((0, 1, 2), n))
"""The 8 mirror combinations of the three spatial axes, identity first, then single flips."""
ACTIVATIONS = ("sigmoid", "softmax", "none")


DROPOUT_TYPES = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout,
                 nn.FeatureAlphaDropout)


def parse_flips(tta: str | int | Sequence[Sequence[int]] | None) -> tuple[Flip, ...]:
    """Turn a TTA specification into a list of mirror combinations.

    Args:
        tta: ``None``/``"none"``/``0``/``1`` (no mirroring), ``"all"`` (8 flips), an integer
            N in 1..8 (the first N of :data:`ALL_FLIPS`), a string holding such an integer, or
            an explicit list of axis tuples such as ``[(), (0,), (0, 2)]`` (spatial axes 0..2).

    Returns:
        Distinct flips, each a sorted tuple of spatial axes; identity is ``()``.

    Raises:
        ValueError: an unknown string, N outside 1..8, or an axis outside 0..2.
    """
    if tta is None or (isinstance(tta, str) and tta.lower() == "none"):
        return ((),)
    if isinstance(tta, str):
        if tta.lower() == "all":
            return ALL_FLIPS
        if not tta.strip().isdigit():
            raise ValueError(f"unknown TTA setting {tta!r}; use 'none', 'all' or a number 1..8")
        tta = int(tta)
    if isinstance(tta, int):
        if not 0 <= tta <= len(ALL_FLIPS):
            raise ValueError(f"TTA count {tta} outside 0..8 (there are 8 mirror combinations)")
        return ALL_FLIPS[: max(tta, 1)]
    return _explicit_flips(tta)


def _explicit_flips(tta: Sequence[Sequence[int]]) -> tuple[Flip, ...]:
    """Distinct sorted flips from a list of axis tuples (see :func:`parse_flips`)."""
    flips: list[Flip] = []
    for axes in tta:
        flip = tuple(sorted({int(a) for a in axes}))
        if any(a not in (0, 1, 2) for a in flip):
            raise ValueError(f"mirror axes {tuple(axes)} must be spatial axes 0, 1 or 2")
        if flip not in flips:
            flips.append(flip)
    if not flips:
        raise ValueError("empty list of mirror flips; give at least [()] for no mirroring")
    return tuple(flips)


@contextlib.contextmanager
def mc_dropout(models: Sequence[nn.Module], enabled: bool = True) -> Iterator[None]:
    """Switch only the dropout modules of eval-mode models to training mode, then restore.

    Args:
        models: networks (left in eval mode except for their dropout layers).
        enabled: do nothing when False.
    """
    changed: list[tuple[nn.Module, bool]] = []
    if enabled:
        for model in models:
            for module in model.modules():
                if isinstance(module, DROPOUT_TYPES):
                    changed.append((module, module.training))
                    module.train(True)
    try:
        yield
    finally:
        for module, mode in changed:
            module.train(mode)


def count_dropout(model: nn.Module) -> int:
    """Number of dropout modules with a non-zero rate (MC dropout needs at least one)."""
    return sum(1 for m in model.modules() if isinstance(m, DROPOUT_TYPES) and getattr(m, "p", 0) > 0)


def _first_output(out: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
    # a network with auxiliary heads may return (full-resolution, lower...) outputs
    return out if isinstance(out, torch.Tensor) else out[0]


class TilePredictor:
    """Tile function averaging probabilities over models, mirror flips and MC-dropout samples.

    Args:
        models: one or several networks ``(B, C, *tile) -> logits (B, K, *tile)``, same K.
        activation: ``"sigmoid"`` (region targets), ``"softmax"`` (label targets) or ``"none"``.
        flips: mirror combinations (see :func:`parse_flips`).
        device: device the models live on.
        precision: ``"bf16"``, ``"fp16"`` (CUDA only) or ``"fp32"``.
        mc_samples: Monte-Carlo dropout passes per model and flip (0: dropout off). With
            samples, the output holds ``2K`` channels: mean probabilities, then the mean of
            their squares.
        channels_last: feed tiles in channels-last-3d memory format.
        single_threaded_tiles: run the memory-bound work around the networks (activation,
            un-mirroring; in :func:`predict_volume` also tile copies and stitching) on one CPU
            thread, restoring the caller's thread count after each step (see
            :func:`glioseg.inference.sliding_window.single_threaded`). Off by default: torch's
            thread count is process-wide.

    Call: ``(B, C, *tile)`` float32 -> float32 ``(B, K, *tile)`` (or ``(B, 2K, *tile)``).
    """

    def __init__(self, models: Sequence[nn.Module], activation: str = "sigmoid",
                 flips: Sequence[Flip] = ((),), device: torch.device | str = "cpu",
                 precision: str = "bf16", mc_samples: int = 0, channels_last: bool = False,
                 single_threaded_tiles: bool = False) -> None:
        _check_tile_options(models, activation, mc_samples)
        self.models = list(models)
        self.activation = activation
        self.flips = tuple(flips)
        self.device = torch.device(device)
        self.precision = precision
        self.mc_samples = mc_samples
        self.channels_last = channels_last
        self.single_threaded_tiles = single_threaded_tiles
        check_precision(self.device, precision)

    @property
    def passes(self) -> int:
        """Network evaluations per tile."""
        return len(self.models) * len(self.flips) * max(self.mc_samples, 1)

    def _activate(self, logits: torch.Tensor) -> torch.Tensor:
        logits = logits.float()
        if self.activation == "sigmoid":
            return torch.sigmoid_(logits)
        if self.activation == "softmax":
            return torch.softmax(logits, dim=1)
        return logits

    def _forward(self, model: nn.Module, x: torch.Tensor, flip: Flip) -> torch.Tensor:
        dims = [a + 2 for a in flip]
        xin = torch.flip(x, dims) if dims else x
        if self.channels_last:
            xin = xin.contiguous(memory_format=torch.channels_last_3d)
        with autocast_context(self.device, self.precision):
            out = _first_output(model(xin))
        with single_threaded(self.single_threaded_tiles and self.device.type == "cpu"):
            prob = self._activate(out)
            return torch.flip(prob, dims) if dims else prob

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        total: torch.Tensor | None = None
        square: torch.Tensor | None = None
        with torch.inference_mode(), mc_dropout(self.models, self.mc_samples > 0):
            for model, flip, _ in itertools.product(self.models, self.flips, range(max(self.mc_samples, 1))):
                prob = self._forward(model, x, flip)
                total = prob if total is None else total.add_(prob)
                if self.mc_samples:
                    sq = prob * prob
                    square = sq if square is None else square.add_(sq)
            assert total is not None
            total.div_(self.passes)
            if square is None:
                return total
            return torch.cat([total, square.div_(self.passes)], dim=1)


def _check_tile_options(models: Sequence[nn.Module], activation: str, mc_samples: int) -> None:
    if not models:
        raise ValueError("TilePredictor needs at least one model")
    if activation not in ACTIVATIONS:
        raise ValueError(f"unknown activation {activation!r}; choose one of {list(ACTIVATIONS)}")
    if mc_samples < 0:
        raise ValueError(f"mc_samples must be >= 0; got {mc_samples}")
    if mc_samples and not any(count_dropout(m) for m in models):
        raise ValueError("MC dropout asked for, but the model has no dropout layer with p > 0")


def split_moments(stitched: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Split a stitched MC-dropout output ``(2K, ...)`` into mean and standard deviation.

    Returns:
        ``(mean, std)``, both float32 ``(K, ...)``.
    """
    k = stitched.shape[0] // 2
    mean, square = stitched[:k], stitched[k:]
    std = (square - mean * mean).clamp_min_(0.0).sqrt_()
    return mean, std


def predict_volume(
    image: torch.Tensor,
    predictor: TilePredictor,
    window: Sequence[int],
    *,
    overlap: float = 0.5,
    tile_batch: int = 1,
    divisor: int = 16,
    output_device: torch.device | str | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Probabilities (and MC-dropout uncertainty) of a whole preprocessed volume.

    Args:
        image: float32 ``(C, X, Y, Z)``.
        predictor: the tile function (models, flips, precision).
        window: tile size.
        overlap: tile overlap fraction.
        tile_batch: tiles per network call.
        divisor: network size divisor.
        output_device: where the stitched result lives (default the predictor's device).

    Returns:
        ``(probabilities, uncertainty)``: float32 ``(K, X, Y, Z)``, and with MC dropout the
        float32 ``(X, Y, Z)`` maximum over channels of the per-voxel standard deviation
        (None otherwise).
    """
    stitched = sliding_window_inference(
        image, predictor, window, overlap=overlap, tile_batch=tile_batch, divisor=divisor,
        device=predictor.device, output_device=output_device, single_threaded_tiles=predictor.single_threaded_tiles)
    if not predictor.mc_samples:
        return stitched, None
    mean, std = split_moments(stitched)
    return mean, std.amax(dim=0)


