"""Benchmark whole-case prediction on a real BraTS case against MONAI's sliding window.

Methods, each measured in its own subprocess (honest peak RSS), same network, same overlap,
same precision (bf16 autocast on CPU), same allocator setting (``glioseg.runtime.tune_allocator``):

- ``default``:   glioseg Predictor, cascade (2 mm whole brain, then 1 mm on the tumour box + margin)
- ``full``:      glioseg Predictor, no cascade: 1 mm sliding window over the brain bounding box
- ``monai``:     ``monai.inferers.sliding_window_inference`` (Gaussian, sigma 1/8) over the whole
                 z-scored case extent (240x240x155 at 1 mm; the same extent at the stage's spacing),
                 the way it is usually called
- ``monai-crop``: the same on the brain bounding box (what ``full`` sees), to separate the gain of
                 cropping from the gain of the cascade

Every method starts from the same in-memory case (reading the NIfTI files is timed separately)
and includes preprocessing, inference, paste-back and thresholding. ``seconds`` is the time per
case once the model is loaded and warm (median of the repeats after the first); ``first`` is the
first call (oneDNN primitive creation included).

Usage::

    python benchmarks/bench_predict.py [--run RUN_DIR] [--case Brats18_2013_2_1] [--repeats 3]
    python benchmarks/bench_predict.py --backends torch,onnxruntime,openvino [--cases 3] [--run RUN_DIR]

``--backends`` compares network backends instead (``glioseg predict --backend``): the same
Predictor (shipped model, or ``--run``) on the first ``--cases`` cases, each backend in its own
subprocess with the same threads and allocator; ``torch`` is eager bf16 autocast (the reference
of the ratios), ``torch-fp32`` eager fp32, ``onnxruntime`` and ``openvino`` run the exported
graphs in fp32, ``openvino-bf16`` with OpenVINO's bf16 inference precision (``--precision bf16``).
The graphs are exported before timing (export time reported separately).

Without ``--run`` a randomly initialised network with the cpu preset's shapes is used: timings
and RSS are meaningful, Dice is not, and the cascade's tumour box is taken from the ground truth
(as a trained low stage would find it) so that the high stage runs on a realistic box.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "brats18"
METHODS = ("default", "full", "monai", "monai-crop")
BACKENDS = ("torch", "torch-fp32", "onnxruntime", "openvino", "openvino-bf16", "openvino-int8")
BACKEND_RUNS = {"torch": ("torch", "bf16"), "torch-fp32": ("torch", "fp32"), "onnxruntime": ("onnxruntime", "fp32"),
                "openvino": ("openvino", "fp32"), "openvino-bf16": ("openvino", "bf16"),
                "openvino-int8": ("openvino", "fp32")}  # the graphs of --int8-export
"""benchmark name -> (glioseg predict --backend, --precision)"""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, default=None,
                        help="trained run directory (default: random cpu-preset nets)")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="BraTS dataset folder")
    parser.add_argument("--case", default=None, help="case ID (default: the first case)")
    parser.add_argument("--overlap", type=float, default=0.5)
    parser.add_argument("--repeats", type=int, default=3, help="predictions per method (first one is warm-up)")
    parser.add_argument("--methods", default=",".join(METHODS), help=f"comma-separated subset of {METHODS}")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads in every method (default: torch's, one per core); on a "
                             "machine shared with other jobs 1 thread avoids OpenMP barrier stalls")
    parser.add_argument("--backends", default=None,
                        help=f"compare network backends instead of methods: comma-separated subset of {BACKENDS}")
    parser.add_argument("--cases", type=int, default=3, help="cases per backend with --backends (the first N)")
    parser.add_argument("--graph-cache", type=Path, default=None,
                        help="graph cache of --backends (default: a temporary folder)")
    parser.add_argument("--int8-export", type=Path, default=None, help="int8 export folder of the model for "
                        "openvino-int8 (glioseg export-model --format openvino --int8-calibration DATA)")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


# ----------------------------------------------------------------------------- worker side


def random_stages(overlap: float):
    """Randomly initialised stages with the cpu preset's shapes (seeded)."""
    import torch

    from glioseg.artifacts.rundir import build_stage_model
    from glioseg.config import cpu_preset
    from glioseg.inference.predictor import Stage

    stages = {}
    for i, cfg in enumerate(cpu_preset().stages):
        torch.manual_seed(i)
        model = build_stage_model(cfg).eval()
        stages[cfg.name] = Stage(cfg.name, [model], cfg.spacing_mm, tuple(cfg.val_window or cfg.patch_size),
                                 cfg.target, model.divisor)
    return stages


def ground_truth_box(case):
    """Replace the low stage's tumour box by the ground truth's (random-network mode only)."""
    import numpy as np

    import glioseg.inference.predictor as predictor_module

    real = predictor_module.tumour_box

    def box(probs, target, threshold, margin_mm, spacing):
        truth = np.stack([case.label > 0] * 3).astype(np.float32)
        return real(truth, "regions", 0.5, margin_mm, spacing)

    predictor_module.tumour_box = box


def load_predictor(args: argparse.Namespace, cascade: bool):
    from glioseg.inference.predictor import Predictor

    options = {"device": "cpu", "precision": "bf16", "tta": "none", "cascade": cascade, "overlap": args.overlap}
    if args.run is not None:
        return Predictor.from_run(args.run, **options)
    return Predictor(random_stages(args.overlap), **options)


def embed_in_case_extent(image, meta):
    """Zero-pad a preprocessed (brain-cropped) image to the whole case's extent at the same grid
    spacing, so that MONAI sees the uncropped volume at the stage's resolution.

    Returns:
        The padded ``(C, X', Y', Z')`` array and the slices of the crop inside it.
    """
    import numpy as np

    scale = [n / m for n, m in zip(meta["shape"], meta["cropped_shape"], strict=True)]
    offset = [round(box[0] * k) for box, k in zip(meta["bbox"], scale, strict=True)]
    total = [max(round(full * k), o + n) for full, k, o, n in
             zip(meta["canonical_shape"], scale, offset, meta["shape"], strict=True)]
    inner = tuple(slice(o, o + n) for o, n in zip(offset, meta["shape"], strict=True))
    out = np.zeros((image.shape[0], *total), dtype=np.float32)
    out[(slice(None), *inner)] = image
    return out, inner


def monai_predict(predictor, case, whole_volume: bool, overlap: float):
    """MONAI sliding window with the full-resolution stage's network, window, spacing and precision,
    over the whole case extent (``whole_volume``) or the brain bounding box."""
    import numpy as np
    import torch
    from monai.inferers import sliding_window_inference

    from glioseg.inference.postprocess import postprocess_probabilities
    from glioseg.preprocessing.normalize import preprocess_case
    from glioseg.preprocessing.restore import restore_to_case_grid
    from glioseg.runtime import autocast_context

    stage = predictor.full_stage
    pc = preprocess_case(case, stage.spacing_mm)
    image, inner = embed_in_case_extent(pc.image, pc.meta) if whole_volume else (pc.image, None)
    net = stage.models[0]
    with torch.inference_mode(), autocast_context("cpu", "bf16"):
        logits = sliding_window_inference(torch.from_numpy(np.ascontiguousarray(image))[None], stage.patch_size, 1,
                                          net, overlap=overlap, mode="gaussian", sigma_scale=0.125)
    probs = torch.sigmoid(logits[0].float()).numpy()
    if inner is not None:
        probs = probs[(slice(None), *inner)]
    probs = restore_to_case_grid(np.ascontiguousarray(probs), pc.meta, order=1)
    return postprocess_probabilities(probs, stage.target, predictor.postprocess, case.geometry.canonical_spacing)


def worker(args: argparse.Namespace) -> dict:
    import torch

    from glioseg.data.layouts import find_cases
    from glioseg.data.nifti import read_case
    from glioseg.runtime import tune_allocator
    from glioseg.utils import region_dice

    tune_allocator()
    if args.threads:
        torch.set_num_threads(args.threads)
    method = args.worker
    cases = find_cases(args.data)
    files = next(c for c in cases if c.case_id == args.case) if args.case else cases[0]
    start = time.perf_counter()
    case = read_case(files)
    read_s = time.perf_counter() - start
    predictor = load_predictor(args, cascade=method == "default")
    if args.run is None and method == "default":
        ground_truth_box(case)
    seconds, cpu, labels, timings = [], [], None, {}
    for _ in range(max(args.repeats, 1)):
        start, start_cpu = time.perf_counter(), time.process_time()
        if method in ("default", "full"):
            pred = predictor.predict_case(case)
            labels, timings = pred.labels, pred.timings
        else:
            labels = monai_predict(predictor, case, method == "monai", args.overlap)
        seconds.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    warm = statistics.median(seconds[1:]) if len(seconds) > 1 else seconds[0]
    warm_cpu = statistics.median(cpu[1:]) if len(cpu) > 1 else cpu[0]
    return {"method": method, "case": case.case_id, "read_s": read_s, "first_s": seconds[0], "seconds": warm,
            "cpu_s": warm_cpu, "all_s": seconds, "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "dice": region_dice(labels, case.label).tolist(), "timings": timings, "threads": torch.get_num_threads()}


def backend_model(args: argparse.Namespace) -> Path:
    from glioseg.artifacts.bundles import default_model_dir

    return args.run if args.run is not None else default_model_dir()


def backend_worker(args: argparse.Namespace) -> dict:
    """One backend on the first --cases cases: warm s/case (median of the repeats after the first), CPU s, Dice."""
    import torch

    from glioseg.data.layouts import find_cases
    from glioseg.data.nifti import read_case
    from glioseg.interop.backends import load_backend_predictor
    from glioseg.runtime import tune_allocator
    from glioseg.utils import region_dice

    tune_allocator()
    if args.threads:
        torch.set_num_threads(args.threads)
    backend = args.worker.split(":", 1)[1]
    name, precision = BACKEND_RUNS[backend]
    model = args.int8_export if backend == "openvino-int8" else backend_model(args)
    predictor = load_backend_predictor(model, name, cache_dir=args.graph_cache, device="cpu",
                                       precision=precision, tta="none", overlap=args.overlap)
    files = [c for c in find_cases(args.data) if not args.case or c.case_id == args.case][: max(args.cases, 1)]
    rows = []
    for f in files:
        case = read_case(f)
        seconds, cpu = [], []
        for _ in range(max(args.repeats, 1)):
            start, start_cpu = time.perf_counter(), time.process_time()
            labels = predictor.predict_case(case).labels
            seconds.append(time.perf_counter() - start)
            cpu.append(time.process_time() - start_cpu)
        rows.append({"case": case.case_id, "first_s": seconds[0],
                     "seconds": statistics.median(seconds[1:] or seconds), "cpu_s": statistics.median(cpu[1:] or cpu),
                     "dice": region_dice(labels, case.label).tolist()})
    mean = lambda key: statistics.fmean(r[key] for r in rows)  # noqa: E731
    return {"backend": backend, "cases": rows, "seconds": mean("seconds"), "cpu_s": mean("cpu_s"),
            "first_s": rows[0]["first_s"], "dice": [statistics.fmean(r["dice"][i] for r in rows) for i in range(3)],
            "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "threads": torch.get_num_threads()}


# ----------------------------------------------------------------------------- driver side


def run_method(args: argparse.Namespace, method: str) -> dict:
    cmd = [sys.executable, __file__, "--worker", method, "--data", str(args.data), "--overlap", str(args.overlap),
           "--repeats", str(args.repeats), "--cases", str(args.cases)]
    for flag, value in (("--graph-cache", args.graph_cache), ("--int8-export", args.int8_export)):
        cmd += [flag, str(value)] if value is not None else []
    if args.run is not None:
        cmd += ["--run", str(args.run)]
    if args.case:
        cmd += ["--case", args.case]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{method} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def report(results: dict[str, dict], trained: bool) -> None:
    first = next(iter(results.values()))
    print(f"case {first['case']}  (reading the 4 NIfTI files: {first['read_s']:.2f} s, not included below); "
          f"torch threads {first['threads']}; bf16 autocast; tune_allocator() in every process")
    if not trained:
        print("NOTE: no --run given: randomly initialised cpu-preset networks. Timings and RSS are meaningful; "
              "Dice is NOT (and the cascade box comes from the ground truth).")
    print("s/case: wall seconds per case (warm); cpu: CPU seconds of the process (all threads), less "
          "sensitive to other jobs on a shared machine")
    print(f"{'method':<11} {'s/case':>8} {'cpu':>7} {'first':>7} {'peak RSS':>10} {'Dice WT':>8} {'TC':>6} {'ET':>6}")
    for name, r in results.items():
        wt, tc, et = r["dice"]
        print(f"{name:<11} {r['seconds']:8.2f} {r['cpu_s']:7.2f} {r['first_s']:7.2f} {r['rss_mb']:8.0f} MB "
              f"{wt:8.3f} {tc:6.3f} {et:6.3f}")
    if "default" in results:
        d = results["default"]
        print("default steps (s): " + "  ".join(f"{k} {v:.2f}" for k, v in d["timings"].items()))
        for ref in ("full", "monai", "monai-crop"):
            if ref in results:
                r = results[ref]
                dd = [a - b for a, b in zip(d["dice"], r["dice"], strict=True)]
                print(f"default vs {ref:<10}: {r['seconds'] / d['seconds']:6.1f}x faster (wall), "
                      f"{r['cpu_s'] / d['cpu_s']:6.1f}x less CPU, RSS "
                      f"{d['rss_mb'] / r['rss_mb']:.2f}x, Dice diff WT/TC/ET {dd[0]:+.3f} {dd[1]:+.3f} {dd[2]:+.3f}")
        targets = [("default <= 5 s per case", d["seconds"] <= 5.0),
                   ("peak RSS <= 3 GB", d["rss_mb"] <= 3072)]
        if "monai" in results:
            m = results["monai"]
            targets.append((">= 10x faster than MONAI sliding window (wall)", m["seconds"] / d["seconds"] >= 10))
            targets.append((">= 10x less CPU than MONAI sliding window", m["cpu_s"] / d["cpu_s"] >= 10))
        if "full" in results and trained:
            worst = max(abs(a - b) for a, b in zip(d["dice"], results["full"]["dice"], strict=True))
            targets.append(("Dice within 0.01 of full-resolution", worst <= 0.01))
        print("targets: " + "; ".join(f"{t}: {'met' if ok else 'MISSED'}" for t, ok in targets))


def export_graphs_first(args: argparse.Namespace, backends: list[str]) -> dict[str, float]:
    """Fill the graph cache before timing (in a subprocess: the driver stays free of torch); seconds each."""
    code = ("import sys, time, json; from pathlib import Path; from glioseg.interop.backends import cached_export; "
            "t = {}\nfor b in sys.argv[3:]:\n s = time.perf_counter(); cached_export(Path(sys.argv[1]), b, "
            "Path(sys.argv[2])); t[b] = time.perf_counter() - s\nprint(json.dumps(t))")
    graph = sorted({BACKEND_RUNS[b][0] for b in backends} - {"torch"})
    if not graph:
        return {}
    done = subprocess.run([sys.executable, "-c", code, str(backend_model(args)), str(args.graph_cache), *graph],
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"export failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def report_backends(results: dict[str, dict], export_s: dict[str, float]) -> None:
    ref = results.get("torch")
    first = next(iter(results.values()))
    print(f"{len(first['cases'])} cases ({', '.join(r['case'] for r in first['cases'])}); threads "
          f"{first['threads']}; tune_allocator() in every process; no TTA; overlap as given")
    print("s/case: warm wall seconds per case (mean over cases of the median of the repeats after the first); "
          "cpu: CPU seconds per case (all threads)")
    print(f"{'backend':<12} {'s/case':>7} {'cpu':>7} {'first':>7} {'peak RSS':>10} {'Dice WT':>8} {'TC':>6} {'ET':>6}"
          f" {'speed vs torch bf16':>20} {'CPU vs torch':>13} {'max |dDice|':>12}")
    for name, r in results.items():
        wt, tc, et = r["dice"]
        line = (f"{name:<12} {r['seconds']:7.2f} {r['cpu_s']:7.2f} {r['first_s']:7.2f} {r['rss_mb']:8.0f} MB "
                f"{wt:8.4f} {tc:6.4f} {et:6.4f}")
        if ref is not None:
            worst = max(abs(a - b) for ra, rb in zip(r["cases"], ref["cases"], strict=True)
                        for a, b in zip(ra["dice"], rb["dice"], strict=True))
            line += (f" {ref['seconds'] / r['seconds']:19.2f}x {ref['cpu_s'] / r['cpu_s']:12.2f}x {worst:12.4f}")
        print(line)
    if export_s:
        print("export before timing (s): " + "  ".join(f"{k} {v:.1f}" for k, v in export_s.items()))
    if ref is not None and len(results) > 1:
        gap = {k: max(abs(a - b) for ra, rb in zip(r["cases"], ref["cases"], strict=True)
                      for a, b in zip(ra["dice"], rb["dice"], strict=True)) for k, r in results.items() if k != "torch"}
        within = [k for k in gap if gap[k] <= 0.002]  # the target counts backends at Dice within 0.002 only
        best = min(within, key=lambda k: results[k]["seconds"]) if within else None
        ratio = ref["seconds"] / results[best]["seconds"] if best else 0.0
        print(f"target: fastest backend at Dice within 0.002 of torch ({best}) >= 1.5x faster than torch eager "
              f"bf16: {'met' if ratio >= 1.5 else 'MISSED'} ({ratio:.2f}x)")


def main_backends(args: argparse.Namespace) -> None:
    import tempfile

    backends = [b for b in args.backends.split(",") if b]
    unknown = sorted(set(backends) - set(BACKENDS))
    if unknown:
        sys.exit(f"unknown backends {unknown}; choose from {BACKENDS}")
    if "openvino-int8" in backends and args.int8_export is None:
        sys.exit("openvino-int8 needs --int8-export FOLDER (glioseg export-model --format openvino --int8-calibration)")
    with tempfile.TemporaryDirectory(prefix="bench_graphs_") as tmp:
        args.graph_cache = args.graph_cache or Path(tmp)
        print("exporting graphs ...", file=sys.stderr, flush=True)
        export_s = export_graphs_first(args, backends)
        results = {}
        for backend in backends:
            print(f"running {backend} ...", file=sys.stderr, flush=True)
            results[backend] = run_method(args, f"backend:{backend}")
    report_backends(results, export_s)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.worker:
        print(json.dumps(backend_worker(args) if args.worker.startswith("backend:") else worker(args)))
        return
    if not args.data.is_dir():
        sys.exit(f"data folder {args.data} not found; pass --data")
    if args.backends:
        load_before = os.getloadavg()[0]
        main_backends(args)
        print(f"machine load average (1 min) before {load_before:.1f}, after {os.getloadavg()[0]:.1f} "
              f"on {os.cpu_count()} cores: other jobs inflate wall times; compare within one run")
        return
    methods = [m for m in args.methods.split(",") if m]
    unknown = sorted(set(methods) - set(METHODS))
    if unknown:
        sys.exit(f"unknown methods {unknown}; choose from {METHODS}")
    results = {}
    load_before = os.getloadavg()[0]
    for method in methods:
        print(f"running {method} ...", file=sys.stderr, flush=True)
        results[method] = run_method(args, method)
    report(results, args.run is not None)
    print(f"machine load average (1 min) before {load_before:.1f}, after {os.getloadavg()[0]:.1f} "
          f"on {os.cpu_count()} cores: other jobs inflate wall times; compare within one run")


if __name__ == "__main__":
    main()
