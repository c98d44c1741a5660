"""Training patches from a preprocessed dataset, with foreground oversampling.

:class:`PatchDataset` is a map-style dataset: sample ``i`` of epoch ``e`` is a pure function of
``(seed, e, i)``, so the same seed gives the same batches whatever the number of DataLoader
workers (use ``shuffle=False``; the randomness is inside). Cases are memory-mapped and opened
lazily in each worker; a patch costs one slice of the mapped volume (or, with a spatial
augmentation, one ``grid_sample`` straight from the mapped volume).

Foreground oversampling: with probability ``fg_fraction`` the patch is centred on a voxel of a
tumour class chosen uniformly among the classes present in the case (NCR, ED, ET, RC), so that
small enhancing regions are seen as often as large edema; otherwise the centre is uniform in the
volume. Class voxel coordinates come from ``fg.npz`` written by :mod:`glioseg.preprocessing.normalize`
(computed and cached here when missing), so sampling is O(1).

:func:`make_dataset` builds the dataset of a stage and :func:`batches` its DataLoader over a range
of iterations, sharded across DDP ranks by :class:`StepSampler`.
"""

from __future__ import annotations

import contextlib
import math
import signal
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import EllipsisType
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from glioseg.artifacts.weights import TrainError
from glioseg.config import StageConfig
from glioseg.preprocessing.cache import foreground_locations, load_preprocessed, read_meta
from glioseg.preprocessing.normalize import PreprocessedCase, PreprocessError
from glioseg.training.augment import Compose, default_augmentation
from glioseg.training.randomness import seed_generator
from glioseg.training.spatial import RandomSpatial, resample_with_grid
from glioseg.utils import atomic_write

DEFAULT_PATCH = (128, 128, 128)
WHOLE_MULTIPLE = 16
SPACING_TOLERANCE = 0.05  # relative


def whole_volume_shape(shapes: Sequence[Sequence[int]], multiple: int = WHOLE_MULTIPLE) -> tuple[int, int, int]:
    """Smallest shape that holds every given shape, rounded up to a multiple of ``multiple``."""
    return tuple(int(math.ceil(max(s[a] for s in shapes) / multiple) * multiple) for a in range(3))  # type: ignore[return-value]


def crop_with_padding(array: np.ndarray, start: Sequence[int], size: Sequence[int]) -> np.ndarray:
    """Cut ``array[..., start:start + size]`` over the last three axes, zero outside the array.

    Args:
        array: ``(..., X, Y, Z)`` (may be a memmap).
        start: corner of the window (may be negative).
        size: window size.

    Returns:
        A new array ``(..., *size)`` with the dtype of ``array``.
    """
    shape = array.shape[-3:]
    out = np.zeros((*array.shape[:-3], *size), dtype=array.dtype)
    src: list[EllipsisType | slice] = [Ellipsis]
    dst: list[EllipsisType | slice] = [Ellipsis]
    for s0, n, full in zip(start, size, shape, strict=True):
        a, b = max(s0, 0), min(s0 + n, full)
        if b <= a:
            return out
        src.append(slice(a, b))
        dst.append(slice(a - s0, b - s0))
    out[tuple(dst)] = array[tuple(src)]
    return out


def load_fg_locations(root: Path | str, case: PreprocessedCase) -> dict[int, np.ndarray]:
    """Foreground voxel coordinates per class: ``fg.npz`` of the case, made and cached if missing.

    Returns:
        ``{class: int32 (n, 3)}`` for each tumour class present.
    """
    path = Path(root) / case.case_id / "fg.npz"
    if not path.is_file():
        if case.label is None:
            return {}
        locations = foreground_locations(np.asarray(case.label))
        with contextlib.suppress(OSError):  # read-only dataset: keep them in memory only
            atomic_write(path, lambda tmp: np.savez(tmp, allow_pickle=False, **locations))
        return {int(k): v for k, v in locations.items()}
    with np.load(path) as data:
        return {int(k): data[k] for k in data.files}


class PatchDataset(Dataset):
    """Random training patches (optionally augmented) from preprocessed cases.

    Args:
        root: preprocessed dataset folder.
        case_ids: cases to draw from (each needs a label).
        patch_size: ``(x, y, z)``, one int for a cube, or None / ``"whole"`` for the whole
            cropped brain zero-padded to the largest case's shape rounded up to 16.
        fg_fraction: share of patches centred on a tumour voxel.
        augment: a :class:`glioseg.training.augment.Compose` (or callable ``(batch, generator) -> batch``)
            applied per sample on the CPU, or None (e.g. to augment batches on the GPU).
        seed: base seed.
        length: samples per epoch.

    Yields (``__getitem__``):
        ``{"image": float32 (4, *patch), "label": uint8 (*patch) canonical, "case_id": str,
        "fg_class": int}`` (``fg_class`` is the forced class, or -1 for a random centre).

    Raises:
        PreprocessError: no cases, a case is missing or has no label.
        ValueError: bad patch size or fg_fraction.
    """

    def __init__(self, root: Path | str, case_ids: Sequence[str], patch_size: Any = DEFAULT_PATCH,
                 fg_fraction: float = 0.33, augment: Any = None, seed: int = 0, length: int = 250) -> None:
        if not case_ids:
            raise PreprocessError(f"{root}: no cases given to PatchDataset; check the split")
        if not 0.0 <= fg_fraction <= 1.0:
            raise ValueError(f"fg_fraction must be in [0, 1], got {fg_fraction}")
        if length < 1:
            raise ValueError(f"length must be >= 1, got {length}")
        self.root = Path(root)
        self.case_ids = list(case_ids)
        self.metas = {c: read_meta(self.root, c) for c in self.case_ids}
        unlabelled = [c for c, m in self.metas.items() if not m.get("has_label")]
        if unlabelled:
            raise PreprocessError(f"{self.root}: cases without a label cannot be used for training: {unlabelled}")
        self.whole = patch_size is None or patch_size == "whole"
        self.patch_size = (whole_volume_shape([m["shape"] for m in self.metas.values()]) if self.whole
                           else _patch_tuple(patch_size))
        self.fg_fraction = float(fg_fraction)
        self.augment = augment
        self.spatial: RandomSpatial | None = None
        self.rest: Any = augment
        if isinstance(augment, Compose):
            self.spatial, self.rest = augment.split_spatial()
        self.seed, self.length, self.epoch = int(seed), int(length), 0
        self._cache: dict[str, tuple[PreprocessedCase, dict[int, np.ndarray]]] = {}

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_cache"] = {}  # memmaps are reopened in each worker, never pickled
        return state

    def __len__(self) -> int:
        return self.length

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch (changes every sample; call before creating the DataLoader iterator)."""
        self.epoch = int(epoch)

    def _case(self, case_id: str) -> tuple[PreprocessedCase, dict[int, np.ndarray]]:
        if case_id not in self._cache:
            case = load_preprocessed(self.root, case_id, mmap=True)
            self._cache[case_id] = (case, load_fg_locations(self.root, case))
        return self._cache[case_id]

    def _centre(self, shape: Sequence[int], fg: dict[int, np.ndarray], g: torch.Generator) -> tuple[list[int], int]:
        """Integer patch centre and the forced class (-1: uniform)."""
        if self.whole:
            return [n // 2 for n in shape], -1
        r = torch.rand(3, generator=g).tolist()
        if fg and r[0] < self.fg_fraction:
            classes = sorted(fg)
            cls = classes[min(int(r[1] * len(classes)), len(classes) - 1)]
            coords = fg[cls]
            return coords[min(int(r[2] * len(coords)), len(coords) - 1)].tolist(), cls
        return [int(v) for v in (torch.rand(3, generator=g) * torch.tensor(shape)).long().tolist()], -1

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not 0 <= index < self.length:
            raise IndexError(f"index {index} out of range 0..{self.length - 1}")
        g = seed_generator(self.seed, self.epoch, index)
        case_id = self.case_ids[int(torch.randint(len(self.case_ids), (1,), generator=g))]
        case, fg = self._case(case_id)
        centre, cls = self._centre(case.image.shape[1:], fg, g)
        image, label = self._extract(case, centre, g)
        if self.rest is not None:
            batch = self.rest({"image": image[None], "label": label[None]}, g)
            image, label = batch["image"][0], batch["label"][0]
        return {"image": image.float().contiguous(), "label": label.to(torch.uint8).contiguous(),
                "case_id": case_id, "fg_class": cls}

    def _extract(self, case: PreprocessedCase, centre: Sequence[int],
                 g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """Cut (or, with a spatial augmentation, resample) the patch around ``centre``."""
        start = [c - p // 2 for c, p in zip(centre, self.patch_size, strict=True)]
        assert case.label is not None  # internal invariant: __init__ rejects unlabelled cases
        spatial = self.spatial
        grid = spatial.draw(1, self.patch_size, g)[0] if spatial is not None else None
        if spatial is None or grid is None:
            return (torch.from_numpy(crop_with_padding(case.image, start, self.patch_size)),
                    torch.from_numpy(crop_with_padding(case.label, start, self.patch_size)))
        # the undeformed grid lands exactly on the voxels of the plain crop
        mid = torch.tensor([s + (p - 1) / 2 for s, p in zip(start, self.patch_size, strict=True)])
        return _resample_from_volume(case.image, case.label, grid + mid, spatial)


def _resample_from_volume(image: np.ndarray, label: np.ndarray, coords: torch.Tensor,
                          spatial: RandomSpatial) -> tuple[torch.Tensor, torch.Tensor]:
    """Sample a deformed patch straight from a (memory-mapped) volume, reading only the box it covers.

    Args:
        image: float32 ``(C, X, Y, Z)``; label: uint8 ``(X, Y, Z)``.
        coords: float ``(x, y, z, 3)`` voxel coordinates into the volume.
        spatial: the transform whose label mode is used.

    Returns:
        float32 image ``(C, x, y, z)`` and uint8 label ``(x, y, z)``.
    """
    shape = image.shape[1:]
    lo = [max(0, min(int(v), n)) for v, n in zip(torch.floor(coords.view(-1, 3).amin(0)), shape, strict=True)]
    hi = [max(0, min(int(v) + 1, n)) for v, n in zip(torch.ceil(coords.view(-1, 3).amax(0)), shape, strict=True)]
    size = [max(b - a, 1) for a, b in zip(lo, hi, strict=True)]
    box_image = torch.from_numpy(crop_with_padding(image, lo, size))
    box_label = torch.from_numpy(crop_with_padding(label, lo, size))
    out, resampled = resample_with_grid(box_image, box_label, coords - torch.tensor(lo, dtype=coords.dtype),
                                        spatial.label_mode, spatial.num_label_classes)
    assert resampled is not None  # internal invariant: a label in, a label out
    return out, resampled


def _patch_tuple(patch_size: Any) -> tuple[int, int, int]:
    size = (int(patch_size),) * 3 if isinstance(patch_size, int | np.integer) else tuple(int(p) for p in patch_size)
    if len(size) != 3 or min(size) < 1:
        raise ValueError(f"patch_size must be 3 positive ints, one int, None or 'whole'; got {patch_size!r}")
    return size


def make_dataset(root: Path, case_ids: Sequence[str], stage: StageConfig, seed: int,
                 world_size: int = 1) -> PatchDataset:
    """The training patch dataset of a stage: ``iterations x batch x world`` samples per epoch.

    Sample ``i`` of epoch ``e`` depends only on ``(seed, e, i)``.
    """
    augment = default_augmentation(cnr=stage.augment_cnr) if stage.augment else None
    return PatchDataset(root, list(case_ids), None if stage.whole_volume else stage.patch_size,
                        fg_fraction=stage.fg_fraction, augment=augment,
                        seed=seed, length=stage.iterations * stage.batch_size * world_size)


class StepSampler(torch.utils.data.Sampler[int]):
    """Sample indices of iterations ``[start, stop)`` of an epoch for one rank.

    Iteration ``it`` of rank ``r`` takes samples ``(it * world + r) * batch + j``, so the ranks
    share an epoch's samples without overlap and a resumed epoch continues where it stopped.
    """

    def __init__(self, start: int, stop: int, batch_size: int, rank: int = 0, world_size: int = 1) -> None:
        self.start, self.stop, self.batch_size = start, stop, batch_size
        self.rank, self.world_size = rank, world_size

    def __iter__(self) -> Iterator[int]:
        for step in range(self.start, self.stop):
            base = (step * self.world_size + self.rank) * self.batch_size
            yield from range(base, base + self.batch_size)

    def __len__(self) -> int:
        return (self.stop - self.start) * self.batch_size


def batches(dataset: PatchDataset, start: int, stop: int, batch_size: int, rank: int = 0, world_size: int = 1,
            num_workers: int = 0) -> torch.utils.data.DataLoader:
    """DataLoader yielding one rank's batches of iterations ``[start, stop)`` of the current epoch."""
    sampler = StepSampler(start, stop, batch_size, rank, world_size)
    return torch.utils.data.DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=num_workers,
                                       worker_init_fn=ignore_sigint if num_workers else None)


def ignore_sigint(worker_id: int) -> None:
    """DataLoader workers leave Ctrl-C to the trainer, which stops at a step boundary (and then ends them)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def check_spacing(root: Path, case_ids: Sequence[str], stage: StageConfig) -> None:
    """Raise TrainError when the preprocessed cases are not at the stage's spacing (checks the first case)."""
    if stage.spacing_mm is None or not case_ids:
        return
    meta = read_meta(root, case_ids[0])
    spacing = meta.get("effective_spacing") or meta.get("spacing")
    if spacing is None:
        return
    if any(abs(float(s) - stage.spacing_mm) > SPACING_TOLERANCE * stage.spacing_mm for s in spacing):
        raise TrainError(
            f"stage {stage.name} trains at {stage.spacing_mm} mm but case {case_ids[0]} in {root} is at "
            f"{[round(float(s), 3) for s in spacing]} mm; preprocess for this stage with "
            f"`glioseg preprocess DATASET OUT --spacing {stage.spacing_mm:g}` and pass OUT")
