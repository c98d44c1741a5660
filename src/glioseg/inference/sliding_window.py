"""Sliding-window inference with Gaussian importance weighting, mirroring TTA, MC dropout and
ensembles.

Two layers:

- :func:`sliding_window_inference` stitches the output of any *tile function*
  ``(B, C, *window) -> (B, K, *window)`` over a volume ``(C, X, Y, Z)``; it knows nothing about
  networks.
- :class:`TilePredictor` is such a tile function for one or several networks: it runs them
  under autocast, applies the activation (sigmoid for region targets, softmax for label
  targets) and averages probabilities over models, mirror flips and Monte-Carlo dropout
  samples. With MC dropout it also returns the per-voxel second moment, so that the stitched
  output yields a standard deviation (see :func:`split_moments`).

Mirroring is done per tile (not per volume), so the stitching buffers exist once.
"""

from __future__ import annotations

import contextlib
import itertools
import math
from collections.abc import Callable, Iterator, Sequence

import torch
from torch import nn

from glioseg.runtime import autocast_context, check_precision

TileFn = Callable[[torch.Tensor], torch.Tensor]
Flip = tuple[int, ...]
ALL_FLIPS: tuple[Flip, ...] = tuple(
    c for n in range(4) for c in itertools.combinations((0, 1, 2), n)
)
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


def gaussian_importance(window: Sequence[int], sigma_scale: float = 1.0 / 8,
                        device: torch.device | str | None = None) -> torch.Tensor:
    """Gaussian importance map for stitching tiles.

    Args:
        window: tile size ``(X, Y, Z)``.
        sigma_scale: sigma as a fraction of the window along each axis (1/8 after nnU-Net).
        device: where to put the map.

    Returns:
        float32 ``(X, Y, Z)``, maximum 1 at the centre, strictly positive everywhere, symmetric
        under every axis flip.
    """
    axes = []
    for size in window:
        sigma = max(size * sigma_scale, 1e-3)
        # centred on the middle of the tile (between voxels for even sizes) so it is symmetric
        x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2.0
        axes.append(torch.exp(-0.5 * (x / sigma) ** 2))
    g = axes[0][:, None, None] * axes[1][None, :, None] * axes[2][None, None, :]
    g = (g / g.max()).to(torch.float32)
    tiny = g[g > 0].min() if bool((g > 0).any()) else torch.tensor(1.0)
    return g.clamp_min(tiny).to(device)


def tile_starts(size: int, window: int, overlap: float) -> list[int]:
    """Start indices of tiles covering ``size`` voxels with tiles of ``window`` voxels.

    Args:
        size: axis length (>= window).
        window: tile length.
        overlap: fraction of the window shared by neighbouring tiles, in [0, 1).

    Returns:
        Evenly spaced starts from 0 to ``size - window``; neighbours overlap by at least
        ``overlap * window`` voxels.
    """
    if size <= window:
        return [0]
    step = max(window * (1.0 - overlap), 1.0)
    n = math.ceil((size - window) / step) + 1
    span = size - window
    return [round(i * span / (n - 1)) for i in range(n)]


def _pad_amounts(shape: Sequence[int], target: Sequence[int]) -> list[tuple[int, int]]:
    return [((t - s) // 2, (t - s) - (t - s) // 2) if t > s else (0, 0) for s, t in zip(shape, target, strict=True)]


def _pad(image: torch.Tensor, pads: list[tuple[int, int]]) -> torch.Tensor:
    if not any(a or b for a, b in pads):
        return image
    flat = [v for pair in reversed(pads) for v in pair]  # F.pad wants last axis first
    return torch.nn.functional.pad(image, flat, mode="constant", value=0.0)


def _check_inputs(image: torch.Tensor, window: Sequence[int], overlap: float, tile_batch: int) -> None:
    if image.ndim != 4:
        raise ValueError(f"image must be (C, X, Y, Z); got shape {tuple(image.shape)}")
    if len(window) != 3 or any(int(w) < 1 for w in window):
        raise ValueError(f"window must be three positive sizes; got {tuple(window)}")
    if not 0.0 <= overlap < 1.0:
        raise ValueError(f"overlap must be in [0, 1); got {overlap}")
    if tile_batch < 1:
        raise ValueError(f"tile_batch must be >= 1; got {tile_batch}")


def sliding_window_inference(
    image: torch.Tensor,
    fn: TileFn,
    window: Sequence[int],
    *,
    overlap: float = 0.5,
    tile_batch: int = 1,
    divisor: int = 1,
    device: torch.device | str = "cpu",
    output_device: torch.device | str | None = None,
    sigma_scale: float = 1.0 / 8,
) -> torch.Tensor:
    """Apply ``fn`` over a volume tile by tile and stitch with Gaussian weights.

    When the volume, padded up to a multiple of ``divisor``, fits in the window, ``fn`` runs
    once on the whole (padded) volume instead. Volumes smaller than the window are zero-padded
    (centred) and the padding is cropped from the result. On CUDA out-of-memory while the
    stitching buffers live on the GPU, the call is retried with the buffers on the CPU.

    Args:
        image: float32 ``(C, X, Y, Z)`` on any device.
        fn: tile function ``(B, C, *tile) -> (B, K, *tile)``; must accept any tile size that is
            a multiple of ``divisor`` when whole-volume mode applies.
        window: tile size ``(wx, wy, wz)``, multiples of ``divisor``.
        overlap: fraction of overlap between neighbouring tiles, in [0, 1).
        tile_batch: tiles per call of ``fn``.
        divisor: the network's size divisor (``2 ** (depth - 1)``), used in whole-volume mode.
        device: where tiles are sent before calling ``fn``.
        output_device: where the float32 stitching buffers live (default: ``device``).
        sigma_scale: Gaussian sigma as a fraction of the window.

    Returns:
        float32 ``(K, X, Y, Z)`` on the output device.

    Raises:
        ValueError: bad shapes or parameters.
    """
    _check_inputs(image, window, overlap, tile_batch)
    device = torch.device(device)
    out_dev = torch.device(output_device) if output_device is not None else device
    window = tuple(int(w) for w in window)
    args = (image, fn, window, overlap, tile_batch, divisor, device, sigma_scale)
    with torch.inference_mode():
        if out_dev.type != "cuda":
            return _stitch(*args, out_dev)
        try:
            return _stitch(*args, out_dev)
        except torch.OutOfMemoryError:  # stitching buffers do not fit on the GPU: keep them on the CPU
            torch.cuda.empty_cache()
            return _stitch(*args, torch.device("cpu"))


@contextlib.contextmanager
def single_threaded(enabled: bool = True) -> Iterator[None]:
    """Run torch CPU ops on one thread inside the block, then restore the thread count.

    Stitching is memory-bound: a second OpenMP thread gains little, and when another process
    occupies a core every small parallel op waits at a barrier for a time slice (measured 100x
    slower stitching on a busy 2-core machine).
    """
    previous = torch.get_num_threads()
    if not enabled or previous == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _stitch(image: torch.Tensor, fn: TileFn, window: tuple[int, ...], overlap: float, tile_batch: int,
            divisor: int, device: torch.device, sigma_scale: float, out_dev: torch.device) -> torch.Tensor:
    shape = tuple(image.shape[1:])
    fitted = tuple(math.ceil(s / divisor) * divisor for s in shape)
    if all(f <= w for f, w in zip(fitted, window, strict=True)):
        return _whole_volume(image, fn, fitted, device, out_dev)
    pads = _pad_amounts(shape, window)
    padded = _pad(image, pads)
    full = tuple(padded.shape[1:])
    starts = list(itertools.product(*(tile_starts(s, w, overlap) for s, w in zip(full, window, strict=True))))
    gauss = gaussian_importance(window, sigma_scale, out_dev)
    out: torch.Tensor | None = None
    weight = torch.zeros(full, dtype=torch.float32, device=out_dev)
    for i in range(0, len(starts), tile_batch):
        chunk = starts[i:i + tile_batch]
        slices = [tuple(slice(s, s + w) for s, w in zip(start, window, strict=True)) for start in chunk]
        with single_threaded(device.type == "cpu"):
            tiles = torch.stack([padded[(slice(None), *sl)] for sl in slices]).to(device, non_blocking=True)
        pred = fn(tiles)
        with single_threaded(out_dev.type == "cpu"):
            pred = pred.to(out_dev, torch.float32)
            if out is None:
                out = torch.zeros((pred.shape[1], *full), dtype=torch.float32, device=out_dev)
            for b, sl in enumerate(slices):
                out[(slice(None), *sl)].addcmul_(pred[b], gauss)
                weight[sl].add_(gauss)
    assert out is not None  # at least one tile always exists
    out.div_(weight)
    return _unpad(out, pads, shape)


def _whole_volume(image: torch.Tensor, fn: TileFn, fitted: tuple[int, ...], device: torch.device,
                  out_dev: torch.device) -> torch.Tensor:
    shape = tuple(image.shape[1:])
    pads = _pad_amounts(shape, fitted)
    x = _pad(image, pads)[None].to(device, non_blocking=True)
    return _unpad(fn(x)[0].to(out_dev, torch.float32), pads, shape)


def _unpad(volume: torch.Tensor, pads: Sequence[tuple[int, int]], shape: Sequence[int]) -> torch.Tensor:
    """Undo :func:`_pad`: crop ``(C, *padded)`` back to ``(C, *shape)`` (no copy without padding)."""
    if not any(a or b for a, b in pads):
        return volume
    crop = tuple(slice(a, a + s) for (a, _), s in zip(pads, shape, strict=True))
    return volume[(slice(None), *crop)].contiguous()


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
    # deep-supervision networks may return (full-resolution, lower...) outputs
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

    Call: ``(B, C, *tile)`` float32 -> float32 ``(B, K, *tile)`` (or ``(B, 2K, *tile)``).
    """

    def __init__(self, models: Sequence[nn.Module], activation: str = "sigmoid",
                 flips: Sequence[Flip] = ((),), device: torch.device | str = "cpu",
                 precision: str = "bf16", mc_samples: int = 0, channels_last: bool = False) -> None:
        if not models:
            raise ValueError("TilePredictor needs at least one model")
        if activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {activation!r}; choose one of {list(ACTIVATIONS)}")
        if mc_samples < 0:
            raise ValueError(f"mc_samples must be >= 0; got {mc_samples}")
        if mc_samples and not any(count_dropout(m) for m in models):
            raise ValueError("MC dropout asked for, but the model has no dropout layer with p > 0")
        self.models = list(models)
        self.activation = activation
        self.flips = tuple(flips)
        self.device = torch.device(device)
        self.precision = precision
        self.mc_samples = mc_samples
        self.channels_last = channels_last
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
        with single_threaded(self.device.type == "cpu"):  # memory-bound: see single_threaded
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
        device=predictor.device, output_device=output_device)
    if not predictor.mc_samples:
        return stitched, None
    mean, std = split_moments(stitched)
    return mean, std.amax(dim=0)
