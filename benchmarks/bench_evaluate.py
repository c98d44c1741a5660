"""Time evaluating the 24 shared BraTS 2018 cases (ground truth vs a copy shifted by 3 voxels).

Ours (glioseg.evaluation.metrics: Dice, HD95, sensitivity, specificity, volumes per region, computed inside
the masks' bounding box) against MONAI's DiceMetric + compute_hausdorff_distance(percentile=95)
on the same label arrays, in the same process and allocator setting; also the end-to-end
``evaluate_folder`` time (reading the label files included). Prints the ratio and the largest
disagreement between the two.

Usage: python benchmarks/bench_evaluate.py [--data ../shared/data/brats18] [--shift 3] [--repeats 1]
"""

from __future__ import annotations

import argparse
import tempfile
import time
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import torch

from glioseg.data.layouts import find_cases
from glioseg.evaluation.evaluate import evaluate_folder, read_label_file
from glioseg.evaluation.scores import compute_brats_metrics
from glioseg.labels import REGIONS, labels_to_regions
from glioseg.runtime import tune_allocator

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "brats18"


def write_shifted(root: Path, out: Path, shift: int) -> None:
    for case in find_cases(root):
        img = nib.load(str(case.label))
        data = np.roll(np.asarray(img.dataobj), shift, axis=0)
        nib.save(nib.Nifti1Image(data, img.affine, img.header), str(out / f"{case.case_id}.nii.gz"))


def load_pairs(root: Path, pred_dir: Path) -> list[tuple[str, np.ndarray, np.ndarray, tuple[float, ...]]]:
    pairs = []
    for case in find_cases(root):
        gt, geo, scheme = read_label_file(case.label, case.case_id, None, case.scheme_hint)
        pred, _, _ = read_label_file(pred_dir / f"{case.case_id}.nii.gz", case.case_id, None, scheme.name)
        pairs.append((case.case_id, pred, gt, geo.spacing))
    return pairs


def run_ours(pairs) -> dict[str, np.ndarray]:
    out = {}
    for case_id, pred, gt, spacing in pairs:
        scores = compute_brats_metrics(pred, gt, spacing, case_id=case_id)
        out[case_id] = np.array([[scores.regions[r].dice, scores.regions[r].hd95] for r in REGIONS])
    return out


def run_monai(pairs) -> dict[str, np.ndarray]:
    from monai.metrics import DiceMetric, compute_hausdorff_distance

    dice_metric = DiceMetric(include_background=True, reduction="none")
    out = {}
    for case_id, pred, gt, spacing in pairs:
        p = torch.from_numpy(labels_to_regions(pred))[None].float()
        g = torch.from_numpy(labels_to_regions(gt))[None].float()
        dice = dice_metric(p, g)[0]
        hd = compute_hausdorff_distance(p, g, include_background=True, percentile=95, spacing=spacing)[0]
        out[case_id] = torch.stack([dice, hd], dim=1).numpy()
    dice_metric.reset()
    return out


def timed(fn, *args, repeats: int = 1):
    best, result = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn(*args)
        best = min(best, time.perf_counter() - start)
    return best, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--shift", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    if not args.data.is_dir():
        raise SystemExit(f"{args.data}: shared BraTS 2018 data not found; pass --data")
    tune_allocator()  # same allocator setting for both implementations (one process)
    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        pred_dir = Path(tmp)
        write_shifted(args.data, pred_dir, args.shift)
        t_load, pairs = timed(load_pairs, args.data, pred_dir)
        t_ours, ours = timed(run_ours, pairs, repeats=args.repeats)
        t_monai, theirs = timed(run_monai, pairs, repeats=args.repeats)
        t_e2e, result = timed(evaluate_folder, pred_dir, args.data)
    diff = np.max([np.abs(ours[k] - theirs[k]).max(axis=0) for k in ours], axis=0)
    print(f"{len(pairs)} cases, ground truth vs copy shifted by {args.shift} voxels, 3 regions, torch threads 1")
    print(f"reading label files (48):             {t_load:7.2f} s")
    print(f"glioseg metrics (Dice+HD95+sens/spec): {t_ours:7.2f} s")
    print(f"MONAI DiceMetric + HD95:               {t_monai:7.2f} s")
    print(f"ratio MONAI / glioseg:                 {t_monai / t_ours:7.2f}x")
    print(f"glioseg evaluate_folder end to end:    {t_e2e:7.2f} s (WT Dice {result.summary['WT']['dice']['mean']:.4f})")
    print(f"max |glioseg - MONAI|: Dice {diff[0]:.2e}, HD95 {diff[1]:.2e} mm")


if __name__ == "__main__":
    main()
