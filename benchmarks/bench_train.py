"""Seconds per training iteration: glioseg's Isensee 2017 U-Net against MONAI DynUNet.

Each case times full training steps (forward, region loss, backward, Adam step) of the glioseg
network and of a MONAI DynUNet of matching size (same levels, filters, kernels, instance norm,
LeakyReLU, residual blocks) in the same process, under the same allocator setting and precision,
and prints the ratio glioseg / DynUNet. Cases: the paper's setting (128^3, batch 2, fp32 and
bf16) and the ``cpu`` preset's stages.

    .venv/bin/python benchmarks/bench_train.py [--repeats 2] [--threads N] [--cases paper-fp32,...]
"""

from __future__ import annotations

import argparse
import time

import torch
from torch import nn

from glioseg.config import cpu_preset
from glioseg.networks import Isensee2017UNet, count_parameters
from glioseg.runtime import autocast_context, tune_allocator
from glioseg.training.losses import region_loss


def dynunet(base_filters: int, depth: int) -> nn.Module:
    """MONAI DynUNet with the Isensee network's levels and filters."""
    from monai.networks.nets import DynUNet

    return DynUNet(3, 4, 3, kernel_size=[3] * depth, strides=[1] + [2] * (depth - 1),
                   upsample_kernel_size=[2] * (depth - 1),
                   filters=[base_filters * 2**i for i in range(depth)], norm_name="instance",
                   act_name=("leakyrelu", {"negative_slope": 0.01, "inplace": True}), res_block=True)


def seconds_per_step(model: nn.Module, shape: tuple[int, ...], precision: str, repeats: int) -> float:
    """Median wall time of ``repeats`` training steps after one warm-up step."""
    optimizer = torch.optim.Adam(model.parameters(), lr=5e-4, weight_decay=1e-5)
    x = torch.randn(shape)
    y = torch.randint(0, 4, (shape[0], *shape[2:]), dtype=torch.uint8)
    times = []
    for i in range(repeats + 1):
        start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        with autocast_context("cpu", precision):
            logits = model(x)
        region_loss(logits.float(), y).backward()
        optimizer.step()
        if i:
            times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def cases() -> dict[str, tuple[int, int, tuple[int, ...], str]]:
    """name -> (base_filters, depth, batch shape, precision)."""
    out = {"paper-fp32": (16, 5, (2, 4, 128, 128, 128), "fp32"),
           "paper-bf16": (16, 5, (2, 4, 128, 128, 128), "bf16")}
    for stage in cpu_preset().stages:
        size = (80, 96, 80) if stage.whole_volume else stage.patch_size
        shape = (stage.batch_size, 4, *size)
        out[f"cpu-{stage.name}"] = (stage.model.base_filters, stage.model.depth, shape, stage.precision)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2, help="timed steps per case (after 1 warm-up)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads [torch default]")
    parser.add_argument("--cases", default=",".join(cases()), help="comma-separated subset of the cases")
    args = parser.parse_args()
    print(f"allocator tuned: {tune_allocator()}; torch {torch.__version__}; threads "
          f"{args.threads or torch.get_num_threads()}")
    if args.threads:
        torch.set_num_threads(args.threads)
    table = cases()
    print(f"{'case':<12} {'input':<22} {'prec':<5} {'params':>10} {'glioseg s/it':>13} "
          f"{'DynUNet params':>15} {'DynUNet s/it':>13} {'ratio':>6}")
    for name in args.cases.split(","):
        base, depth, shape, precision = table[name]
        torch.manual_seed(0)
        net, ref = Isensee2017UNet(4, 3, base, depth), dynunet(base, depth)
        t_ours = seconds_per_step(net, shape, precision, args.repeats)
        t_ref = seconds_per_step(ref, shape, precision, args.repeats)
        print(f"{name:<12} {shape!s:<22} {precision:<5} {count_parameters(net):>10,} {t_ours:>13.2f} "
              f"{count_parameters(ref):>15,} {t_ref:>13.2f} {t_ours / t_ref:>6.2f}", flush=True)
        del net, ref


if __name__ == "__main__":
    main()
