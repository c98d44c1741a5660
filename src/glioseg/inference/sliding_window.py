"""Sliding-window inference with Gaussian importance weighting.

:func:`sliding_window_inference` stitches the output of any *tile function*
``(B, C, *window) -> (B, K, *window)`` over a volume ``(C, X, Y, Z)``; it knows nothing about
networks (those are :mod:`glioseg.inference.ensemble`).
"""

from __future__ import annotations

import contextlib
import itertools
import math
from collections.abc import Callable, Iterator, Sequence

import torch

TileFn = Callable[[torch.Tensor], torch.Tensor]
"""A tile function: ``(B, C, *window)`` -> ``(B, K, *window)``."""


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
    single_threaded_tiles: bool = False,
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
        single_threaded_tiles: copy tiles and stitch their outputs on one CPU thread (see
            :func:`single_threaded`); ``fn`` itself runs with the caller's thread count. Off by
            default: it changes torch's process-wide setting for a moment on every tile.

    Returns:
        float32 ``(K, X, Y, Z)`` on the output device.

    Raises:
        ValueError: bad shapes or parameters.
    """
    _check_inputs(image, window, overlap, tile_batch)
    device = torch.device(device)
    out_dev = torch.device(output_device) if output_device is not None else device
    window = tuple(int(w) for w in window)
    args = (image, fn, window, overlap, tile_batch, divisor, device, sigma_scale, single_threaded_tiles)
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
    """Run torch CPU ops on one thread inside the block, then restore the caller's thread count.

    Opt-in (``single_threaded_tiles``) because torch's thread count is process-wide: other threads
    of the caller see the change while the block runs. It pays off for memory-bound work (tile
    copies, activations, stitching) on a machine busy with other jobs, where every small parallel
    op waits at an OpenMP barrier for a time slice (``benchmarks/bench_threads.py`` measures it).

    Args:
        enabled: do nothing when False.
    """
    previous = torch.get_num_threads()
    if not enabled or previous == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:  # also on errors and interrupts: the caller's setting always comes back
        torch.set_num_threads(previous)


def _tile_slices(full: Sequence[int], window: Sequence[int], overlap: float) -> list[tuple[slice, ...]]:
    """The tiles covering a volume of spatial shape ``full``, as slices, in C order."""
    starts = itertools.product(*(tile_starts(s, w, overlap) for s, w in zip(full, window, strict=True)))
    return [tuple(slice(s, s + w) for s, w in zip(start, window, strict=True)) for start in starts]


def _accumulate(out: torch.Tensor | None, weight: torch.Tensor, pred: torch.Tensor,
                slices: Sequence[tuple[slice, ...]], gauss: torch.Tensor) -> torch.Tensor:
    """Add Gaussian-weighted tile outputs ``(B, K, *window)`` into ``out`` ``(K, *full)`` (made on
    the first call) and their weights into ``weight`` ``(*full)``."""
    if out is None:
        out = torch.zeros((pred.shape[1], *weight.shape), dtype=torch.float32, device=weight.device)
    for b, sl in enumerate(slices):
        out[(slice(None), *sl)].addcmul_(pred[b], gauss)
        weight[sl].add_(gauss)
    return out


def _stitch(image: torch.Tensor, fn: TileFn, window: tuple[int, ...], overlap: float, tile_batch: int,
            divisor: int, device: torch.device, sigma_scale: float, serial: bool,
            out_dev: torch.device) -> torch.Tensor:
    shape = tuple(image.shape[1:])
    fitted = tuple(math.ceil(s / divisor) * divisor for s in shape)
    if all(f <= w for f, w in zip(fitted, window, strict=True)):
        return _whole_volume(image, fn, fitted, device, out_dev)
    pads = _pad_amounts(shape, window)
    padded = _pad(image, pads)
    slices = _tile_slices(padded.shape[1:], window, overlap)
    gauss = gaussian_importance(window, sigma_scale, out_dev)
    out, weight = None, torch.zeros(padded.shape[1:], dtype=torch.float32, device=out_dev)
    for i in range(0, len(slices), tile_batch):
        chunk = slices[i:i + tile_batch]
        with single_threaded(serial and device.type == "cpu"):
            tiles = torch.stack([padded[(slice(None), *sl)] for sl in chunk]).to(device, non_blocking=True)
        pred = fn(tiles)
        with single_threaded(serial and out_dev.type == "cpu"):
            out = _accumulate(out, weight, pred.to(out_dev, torch.float32), chunk, gauss)
    return _unpad(out.div_(weight), pads, shape)  # type: ignore[union-attr]  # there is always a tile


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


