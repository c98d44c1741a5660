"""Seconds per training iteration of the recipe candidates for the shipped 2 mm model.

Times full training steps (forward, region loss, backward, Adam step) of the Isensee 2017 U-Net
for each candidate in one process, under the same allocator setting and thread count, and prints
each candidate's ratio to the reference (the current recipe: whole cropped brain at 2 mm,
batch 2, base 16, bf16). Candidates change one thing at a time: channels-last-3d memory format,
a 64^3 patch instead of the whole brain, a narrower network (base 12), ``torch.compile``.

    .venv/bin/python benchmarks/bench_recipe.py [--repeats 3] [--threads 2] [--candidates a,b]

The whole cropped brain at 2 mm is padded to 80 x 96 x 80 voxels (the largest of the 31 shared
cases after the brain crop, rounded up to a multiple of 16).
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass

import torch
from torch import nn

from glioseg.networks import Isensee2017UNet, count_parameters
from glioseg.runtime import autocast_context, tune_allocator
from glioseg.training.losses import region_loss

WHOLE_2MM = (80, 96, 80)


@dataclass(frozen=True)
class Candidate:
    """One training set-up: network width, batch input size, memory format, compilation."""

    base_filters: int = 16
    size: tuple[int, int, int] = WHOLE_2MM
    batch: int = 2
    channels_last: bool = False
    compile: bool = False
    precision: str = "bf16"


CANDIDATES: dict[str, Candidate] = {
    "reference": Candidate(),
    "channels-last": Candidate(channels_last=True),
    "patch64": Candidate(size=(64, 64, 64)),
    "patch64-batch4": Candidate(size=(64, 64, 64), batch=4),
    "base12": Candidate(base_filters=12),
    "fp32": Candidate(precision="fp32"),
    "compile": Candidate(compile=True),
}


def build(candidate: Candidate) -> nn.Module:
    """The network of ``candidate`` in training mode (compiled when asked)."""
    torch.manual_seed(0)
    net: nn.Module = Isensee2017UNet(4, 3, candidate.base_filters, 5)
    if candidate.channels_last:
        net = net.to(memory_format=torch.channels_last_3d)  # type: ignore[call-overload]
    return torch.compile(net) if candidate.compile else net  # type: ignore[return-value]


def seconds_per_step(candidate: Candidate, repeats: int) -> tuple[float, float, int]:
    """(median step seconds, first-step seconds, parameters) after one warm-up step."""
    net = build(candidate)
    optimizer = torch.optim.Adam(net.parameters(), lr=5e-4, weight_decay=1e-5)
    x = torch.randn(candidate.batch, 4, *candidate.size)
    if candidate.channels_last:
        x = x.contiguous(memory_format=torch.channels_last_3d)
    y = torch.randint(0, 4, (candidate.batch, *candidate.size), dtype=torch.uint8)
    times = []
    for _ in range(repeats + 1):
        start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        with autocast_context("cpu", candidate.precision):
            logits = net(x)
        region_loss(logits.float(), y).backward()
        optimizer.step()
        times.append(time.perf_counter() - start)
    return sorted(times[1:])[len(times[1:]) // 2], times[0], count_parameters(net)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="timed steps per candidate (after 1 warm-up)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads [torch default]")
    parser.add_argument("--candidates", default="reference,channels-last,patch64,patch64-batch4,base12",
                        help=f"comma-separated subset of {','.join(CANDIDATES)}; reference is always run first")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"allocator tuned: {tune_allocator()}; torch {torch.__version__}; threads {torch.get_num_threads()}")
    names = ["reference", *[n for n in args.candidates.split(",") if n and n != "reference"]]
    unknown = [n for n in names if n not in CANDIDATES]
    if unknown:
        parser.error(f"unknown candidate(s) {unknown}; choose from {list(CANDIDATES)}")
    print(f"{'candidate':<16} {'batch x size':<18} {'prec':<5} {'params':>10} {'first s':>8} {'s/it':>7} "
          f"{'ratio':>6} {'voxels/s':>10}")
    reference = 0.0
    for name in names:
        c = CANDIDATES[name]
        step, first, params = seconds_per_step(c, args.repeats)
        reference = reference or step
        voxels = c.batch * c.size[0] * c.size[1] * c.size[2]
        print(f"{name:<16} {f'{c.batch}x{c.size}':<18} {c.precision:<5} {params:>10,} {first:>8.2f} {step:>7.2f} "
              f"{step / reference:>6.2f} {voxels / step:>10,.0f}", flush=True)


if __name__ == "__main__":
    main()
