"""When do single-threaded tiles help? Whole-volume and tiled prediction, with and without, in one run.

``single_threaded_tiles`` (``glioseg predict --single-threaded-tiles``) runs the memory-bound work
around the networks (tile copies, activation, un-mirroring, Gaussian stitching) on one CPU thread
while the networks keep every thread. It is off by default because torch's thread count is
process-wide; this script measures what it buys on this machine, now.

For each mode the same preprocessed image goes through ``Predictor.predict_preprocessed`` (sliding
window, TTA, stitching; no preprocessing or paste-back), the two settings alternating repeat by
repeat so that a change in machine load hits both alike:

- ``whole``: the stage's own window, which holds the whole (2 mm) brain: one network pass per flip;
- ``tiled``: a smaller window (``--tile``) with 50% overlap: many tiles, much stitching.

Prints per mode the median wall and CPU seconds (first repeat is a warm-up and is dropped), the
ratio default / single-threaded (> 1: single-threaded tiles are faster) and the largest
probability difference between the two (bf16 autocast: tiny, not zero, is expected).

Usage::

    python benchmarks/bench_threads.py [--run src/glioseg/weights/default] [--case Brats18_2013_20_1]
        [--tile 48] [--tta 2] [--repeats 3] [--threads N]
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import os
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from glioseg.data.layouts import find_cases
from glioseg.data.nifti import read_case
from glioseg.inference.predictor import Predictor, Stage
from glioseg.inference.sliding_window import tile_starts
from glioseg.preprocessing.normalize import preprocess_case
from glioseg.runtime import tune_allocator

REPO = Path(__file__).resolve().parents[1]
DEFAULT_RUN = REPO / "src" / "glioseg" / "weights" / "default"
DEFAULT_DATA = REPO.parent / "shared" / "data" / "brats18"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, default=DEFAULT_RUN, help="run directory or bundle [shipped model]")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="dataset folder")
    parser.add_argument("--case", default="Brats18_2013_20_1", help="case ID (the first case if not found)")
    parser.add_argument("--tile", type=int, default=48, help="window of the tiled mode (a multiple of 16)")
    parser.add_argument("--overlap", type=float, default=0.5)
    parser.add_argument("--tta", default="2", help="mirroring: none, all or N (more flips, more activations)")
    parser.add_argument("--repeats", type=int, default=3, help="predictions per setting and mode (first: warm-up)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads [torch's default]")
    return parser.parse_args(argv)


def load_image(args: argparse.Namespace, stage: Stage) -> np.ndarray:
    """The case preprocessed at the stage's spacing: float32 ``(4, x, y, z)``."""
    cases = find_cases(args.data)
    files = next((c for c in cases if c.case_id == args.case), cases[0])
    return preprocess_case(read_case(files, read_label=False), stage.spacing_mm).image


def predictors(args: argparse.Namespace, base: Predictor, window: tuple[int, int, int]) -> dict[str, Predictor]:
    """The default and the single-threaded predictor of one mode, sharing the loaded networks."""
    stage = dataclasses.replace(base.full_stage, patch_size=window)
    options = {"device": "cpu", "precision": "bf16", "tta": args.tta, "overlap": args.overlap}
    return {flag: Predictor({stage.name: stage}, single_threaded_tiles=flag == "single", **options)
            for flag in ("default", "single")}


def time_mode(image: np.ndarray, pair: dict[str, Predictor], repeats: int) -> dict[str, dict]:
    """Alternate the two settings ``repeats`` times; median wall/CPU seconds after the warm-up."""
    runs: dict[str, dict] = {name: {"wall": [], "cpu": [], "probs": None} for name in pair}
    for _, (name, predictor) in itertools.product(range(max(repeats, 2)), pair.items()):
        start, start_cpu = time.perf_counter(), time.process_time()
        runs[name]["probs"] = predictor.predict_preprocessed(image)
        runs[name]["wall"].append(time.perf_counter() - start)
        runs[name]["cpu"].append(time.process_time() - start_cpu)
    return {name: {"wall": statistics.median(r["wall"][1:]), "cpu": statistics.median(r["cpu"][1:]),
                   "probs": r["probs"]} for name, r in runs.items()}


def count_tiles(shape: tuple[int, ...], window: tuple[int, ...], overlap: float, divisor: int) -> int:
    fitted = [-(-s // divisor) * divisor for s in shape]
    if all(f <= w for f, w in zip(fitted, window, strict=True)):
        return 1  # whole-volume mode
    return int(np.prod([len(tile_starts(max(s, w), w, overlap)) for s, w in zip(shape, window, strict=True)]))


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    tune_allocator()
    if args.threads:
        torch.set_num_threads(args.threads)
    base = Predictor.from_run(args.run, device="cpu", cascade=False)
    image = load_image(args, base.full_stage)
    load_before = os.getloadavg()[0]
    print(f"model {args.run.name}, stage {base.full_stage.name} ({base.full_stage.spacing_mm} mm), image "
          f"{tuple(image.shape[1:])}; torch threads {torch.get_num_threads()}; bf16; tta {args.tta}; "
          f"median of the {max(args.repeats, 2) - 1} warm repeat(s)")
    print(f"{'mode':<6} {'window':>12} {'tiles':>5} {'default s':>10} {'single s':>9} {'speed-up':>9} "
          f"{'cpu default':>12} {'cpu single':>11} {'max |dp|':>9}")
    for mode, window in (("whole", base.full_stage.patch_size), ("tiled", (args.tile,) * 3)):
        pair = predictors(args, base, window)
        res = time_mode(image, pair, args.repeats)
        d, s = res["default"], res["single"]
        tiles = count_tiles(tuple(image.shape[1:]), window, args.overlap, base.full_stage.divisor)
        print(f"{mode:<6} {'x'.join(map(str, window)):>12} {tiles:>5} {d['wall']:10.2f} {s['wall']:9.2f} "
              f"{d['wall'] / s['wall']:8.2f}x {d['cpu']:12.2f} {s['cpu']:11.2f} "
              f"{float(np.abs(d['probs'] - s['probs']).max()):9.1e}")
    print("speed-up = default wall / single-threaded wall (> 1: --single-threaded-tiles helps here)")
    print(f"machine load average (1 min) before {load_before:.1f}, after {os.getloadavg()[0]:.1f} on "
          f"{os.cpu_count()} cores: the gain grows with other jobs competing for the cores")


if __name__ == "__main__":
    main()
