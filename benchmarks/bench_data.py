"""Augmented 128^3 training samples per second: glioseg's pipeline vs an equivalent MONAI one.

Both start from the same preprocessed real case (preprocessed here into a temporary folder, which
also times preprocessing), draw 128^3 patches with 1/3 foreground oversampling, and apply the same
augmentations with the same probabilities: mirroring, rotation, scaling, elastic deformation,
Gaussian noise, blur, brightness, contrast, low resolution, gamma. Both run single-process on the
CPU, one after the other, under the same allocator setting (glioseg.runtime.tune_allocator).

    .venv/bin/python benchmarks/bench_data.py [--data ../shared/data/brats18] [--samples 12]
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from glioseg.data.layouts import find_cases
from glioseg.preprocessing.cache import load_preprocessed, preprocess_dataset
from glioseg.runtime import tune_allocator
from glioseg.training.augment import default_augmentation
from glioseg.training.dataset import PatchDataset

PATCH = 128


def monai_pipeline(patch: int):
    """MONAI transforms matching glioseg's default augmentation (same ranges and probabilities)."""
    from monai import transforms as T

    keys = ["image", "label"]
    return T.Compose([
        T.RandCropByPosNegLabeld(keys, label_key="label", spatial_size=(patch,) * 3, pos=1, neg=2, num_samples=1),
        T.RandAffined(keys, prob=0.36, rotate_range=(math.radians(15),) * 3, scale_range=(0.25,) * 3,
                      mode=("bilinear", "nearest"), padding_mode="zeros"),
        T.Rand3DElasticd(keys, sigma_range=(5, 8), magnitude_range=(0, 3), prob=0.2,
                         mode=("bilinear", "nearest"), padding_mode="zeros"),
        T.RandGaussianNoised("image", prob=0.15, std=0.1 ** 0.5),
        T.RandGaussianSmoothd("image", sigma_x=(0.5, 1.0), sigma_y=(0.5, 1.0), sigma_z=(0.5, 1.0), prob=0.2),
        T.RandScaleIntensityd("image", factors=0.25, prob=0.15),
        T.RandScaleIntensityFixedMeand("image", factors=0.25, preserve_range=True, prob=0.15),
        T.RandSimulateLowResolutiond("image", zoom_range=(0.5, 1.0), prob=0.25),
        T.RandAdjustContrastd("image", gamma=(0.8, 1.5), retain_stats=True, prob=0.3),
        T.RandFlipd(keys, prob=0.5, spatial_axis=0),
        T.RandFlipd(keys, prob=0.5, spatial_axis=1),
        T.RandFlipd(keys, prob=0.5, spatial_axis=2),
    ])


def time_glioseg(root: Path, case_id: str, n: int) -> float:
    ds = PatchDataset(root, [case_id], PATCH, fg_fraction=1 / 3, augment=default_augmentation(), length=n + 1)
    ds[0]  # open the memmap and the foreground cache
    start = time.perf_counter()
    for i in range(1, n + 1):
        sample = ds[i]
        assert sample["image"].shape == (4, PATCH, PATCH, PATCH)
    return n / (time.perf_counter() - start)


def time_monai(root: Path, case_id: str, n: int) -> float:
    from monai.utils import set_determinism

    set_determinism(0)
    case = load_preprocessed(root, case_id, mmap=False)
    data = {"image": np.asarray(case.image), "label": np.asarray(case.label)[None].astype(np.float32)}
    pipeline = monai_pipeline(PATCH)
    pipeline(dict(data))
    start = time.perf_counter()
    for _ in range(n):
        out = pipeline(dict(data))[0]
        assert tuple(out["image"].shape) == (4, PATCH, PATCH, PATCH)
    return n / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared/data/brats18")
    parser.add_argument("--samples", type=int, default=12)
    parser.add_argument("--case", type=int, default=0, help="index of the shared case to use")
    args = parser.parse_args()
    print(f"allocator tuned: {tune_allocator()}  torch threads: {torch.get_num_threads()}")
    cases = find_cases(args.data)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        start = time.perf_counter()
        result = preprocess_dataset(cases[args.case:args.case + 1], root)
        assert not result.failed, result.failed[0].error
        print(f"preprocess 1 mm: {time.perf_counter() - start:.2f} s/case ({cases[args.case].case_id})")
        start = time.perf_counter()
        preprocess_dataset(cases[args.case:args.case + 1], root / "2mm", spacing_mm=2.0)
        print(f"preprocess 2 mm: {time.perf_counter() - start:.2f} s/case")
        case_id = cases[args.case].case_id
        ours = time_glioseg(root, case_id, args.samples)
        theirs = time_monai(root, case_id, args.samples)
        ours_again = time_glioseg(root, case_id, args.samples)  # order effects (cache, load) show here
    print(f"glioseg: {ours:.2f} / {ours_again:.2f} samples/s (first / second run)")
    print(f"monai:   {theirs:.2f} samples/s")
    print(f"ratio glioseg/monai: {min(ours, ours_again) / theirs:.2f}x (target >= 2x)")


if __name__ == "__main__":
    main()
