"""Where a whole-case prediction spends its time, per network backend (the profile behind bench_predict).

For one real case, times ``Predictor.predict_case`` of the shipped model (or ``--model``) on each
backend and splits it with the predictor's own timers: preprocessing, each stage's networks
(sliding window), paste-back, postprocessing. The non-network part is the same for every
backend, so it bounds what a faster network can gain; the network column shows each backend's
speed relative to torch eager bf16 measured in the same run.

    .venv/bin/python benchmarks/profile_backends.py [--data ../shared/data/brats18_extra] [--repeats 3]
        [--backends torch:bf16,openvino:bf16,openvino:fp32,onnxruntime:fp32] [--threads 2]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

from glioseg.artifacts.bundles import resolve_model
from glioseg.data.layouts import find_cases
from glioseg.data.nifti import read_case
from glioseg.interop.backends import load_backend_predictor
from glioseg.runtime import tune_allocator

NOT_NETWORK = ("preprocess", "restore", "postprocess", "total")


def profile(model: Path, backend: str, precision: str, case: object, repeats: int) -> dict[str, float]:
    """Median seconds per timer over ``repeats`` warm predictions (after one warm-up)."""
    predictor = load_backend_predictor(model, backend, None, None, device="cpu", precision=precision)
    rows = []
    for _ in range(repeats + 1):
        start = time.perf_counter()
        timings = dict(predictor.predict_case(case).timings)  # type: ignore[arg-type]
        timings["wall"] = time.perf_counter() - start
        rows.append(timings)
    return {k: statistics.median(r[k] for r in rows[1:]) for k in rows[-1]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data/brats18_extra"))
    parser.add_argument("--model", default=None, help="model folder or name [the shipped model]")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--backends", default="torch:bf16,openvino:bf16,openvino:fp32,onnxruntime:fp32")
    args = parser.parse_args()
    tune_allocator()
    torch.set_num_threads(args.threads)
    files = find_cases(args.data)[0]
    case = read_case(files, read_label=False)
    model = resolve_model(args.model)
    print(f"case {files.case_id}; model {model}; threads {args.threads}; tune_allocator(); median of {args.repeats}")
    reference = None
    for spec in args.backends.split(","):
        backend, precision = spec.split(":")
        t = profile(model, backend, precision, case, args.repeats)
        network = sum(v for k, v in t.items() if k not in NOT_NETWORK and k != "wall")
        reference = reference or network
        rest = t["wall"] - network
        print(f"{spec:<18} whole {t['wall']:.3f} s = network {network:.3f} s ({reference / network:.2f}x torch) "
              f"+ preprocess/paste-back/postprocess {rest:.3f} s; best possible speed-up {t['wall'] / rest:.1f}x",
              flush=True)


if __name__ == "__main__":
    main()
