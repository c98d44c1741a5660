"""Package a validated run as the shipped default model (src/glioseg/weights/default).

    python scripts/ship_model.py RUN_DIR VALIDATION_REPORT_DIR [--stages low] [--out DIR]
                                 [--validated-run DIR]

RUN_DIR is a `glioseg train` run (e.g. WORK/run_fold0 of scripts/train_default.sh);
VALIDATION_REPORT_DIR is the `report/` folder written by scripts/validate.sh, whose summary.json
becomes the manifest's validation scores. When RUN_DIR was trained on every case (no held-out
cases), give the fold run that the report validated with --validated-run: the manifest then says
that the scores are those of the same recipe on that fold. Weights are stored as float16.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
from pathlib import Path

from glioseg.artifacts.bundles import default_model_dir, make_bundle, verify_bundle

REGIONS = ("WT", "TC", "ET")
METRICS = ("dice", "hd95", "sensitivity", "specificity")


def validation_block(report: Path) -> dict:
    """The manifest's validation scores from an evaluate summary.json (+ per-case rows)."""
    summary = json.loads((report / "summary.json").read_text())
    scores = {r: {m: {k: summary["summary"][r][m][k] for k in ("mean", "std", "median", "min", "max")}
                  for m in METRICS} for r in REGIONS}
    cases = (report / "cases.csv").read_text().splitlines()
    return {"n_cases": summary["n_cases"], "cases": [line.split(",")[0] for line in cases[1:]],
            "scores": scores, "conventions": summary["conventions"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path)
    parser.add_argument("report", type=Path)
    parser.add_argument("--stages", default=None, help="comma-separated stages to ship [all trained]")
    parser.add_argument("--out", type=Path, default=default_model_dir())
    parser.add_argument("--validated-run", type=Path, default=None,
                        help="fold run the report validated, when RUN was trained on every case")
    args = parser.parse_args()
    run_info = json.loads((args.run / "run.json").read_text())
    stages = args.stages.split(",") if args.stages else None
    shipped = stages or run_info["stage_order"]
    info = {
        "name": "glioseg-brats18-cpu",
        "description": "Isensee 2017 U-Net (regions WT/TC/ET), CPU recipe configs/cpu_shipped.yaml",
        "training": {
            "data": "BraTS 2018 training cases from ../shared/data/brats18",
            "cases": run_info["split"]["train"],
            "held_out": run_info["split"]["val"],
            "fold": run_info["split"].get("fold"),
            "seconds": {s: run_info["stages"][s]["train_seconds"] for s in shipped},
            "epochs": {s: run_info["stages"][s]["epochs_done"] for s in shipped},
            "hardware": f"{platform.machine()} CPU, 2 cores, no GPU",
            "versions": run_info.get("versions"),
            "command": "bash scripts/train_default.sh ../shared/data/brats18 WORK 0",
        },
        "validation": {**validation_block(args.report),
                       "command": "bash scripts/validate.sh WORK/run_fold0 ../shared/data/brats18 OUT"},
        "limits": "expects skull-stripped, co-registered, ~1 mm BraTS-style T1/T1ce/T2/FLAIR; "
                  f"trained on {len(run_info['split']['train'])} cases",
    }
    if args.validated_run is not None:
        fold_info = json.loads((args.validated_run / "run.json").read_text())
        info["validation"]["of"] = (f"the same recipe trained on fold {fold_info['split']['fold']} "
                                    f"({len(fold_info['split']['train'])} cases) and scored on its "
                                    f"{len(fold_info['split']['val'])} held-out cases; the shipped weights "
                                    "were then re-trained on every case and have no held-out score")
        info["validation"]["cases_trained_on"] = fold_info["split"]["train"]
    if args.out.exists():
        shutil.rmtree(args.out)
    make_bundle(args.run, args.out, info, fp16=True, stages=stages)
    manifest = verify_bundle(args.out)
    size = sum((args.out / n).stat().st_size for n in manifest["files"])
    print(f"shipped {sorted(manifest['files'])} ({size / 1e6:.1f} MB) -> {args.out}")


if __name__ == "__main__":
    main()
