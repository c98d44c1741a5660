"""Package a validated run, or a fold ensemble, as the shipped default model (src/glioseg/weights/default).

    python scripts/ship_model.py RUN_DIR VALIDATION_REPORT_DIR [--stages low] [--out DIR]
        [--validated-run DIR] [--folds 0,1,2,3,4] [--name NAME] [--data TEXT]
        [--train-command CMD] [--validation-command CMD] [--hardware TEXT]

RUN_DIR is either one `glioseg train` run, or a folder of fold_<k>/ runs (`glioseg train
--all-folds`): the latter ships the *fold ensemble* (every fold's weights in one bundle,
glioseg.artifacts.shipping). VALIDATION_REPORT_DIR is a `glioseg evaluate` report folder
(summary.json, cases.csv) whose scores become the manifest's validation block:

- fold ensemble: the out-of-fold report, where every case was predicted by the fold model that
  did not train on it; it is refused unless its cases are exactly the folds' validation cases and
  those are disjoint;
- single run: the report of its held-out cases; when RUN_DIR was trained on every case, give the
  fold run the report validated with --validated-run, and the manifest says so.

Weights are stored as float16, at most 100 MB in all. What the runs do not record (the training
command, hardware, start and end times) is written as null unless given with --train-command,
--hardware; nothing is guessed. The current 2 mm model was shipped with
    python scripts/ship_model.py WORK/run_fold0 OUT/report --stages low \\
        --train-command "bash scripts/train_default.sh ../shared/data/brats18 WORK 0" \\
        --validation-command "bash scripts/validate.sh WORK/run_fold0 ../shared/data/brats18 OUT" \\
        --hardware "x86_64 CPU, 2 cores, no GPU"
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path
from typing import Any

from glioseg.artifacts.bundles import BundleError, default_model_dir, verify_bundle
from glioseg.artifacts.folds import fold_runs
from glioseg.artifacts.shipping import make_bundle

REGIONS = ("WT", "TC", "ET")
METRICS = ("dice", "hd95", "sensitivity", "specificity")


def validation_block(report: Path) -> dict[str, Any]:
    """The manifest's validation scores from an evaluate summary.json (+ per-case rows)."""
    summary = json.loads((report / "summary.json").read_text())
    scores = {r: {m: {k: summary["summary"][r][m][k] for k in ("mean", "std", "median", "min", "max")}
                  for m in METRICS} for r in REGIONS}
    cases = (report / "cases.csv").read_text().splitlines()
    return {"n_cases": summary["n_cases"], "cases": [line.split(",")[0] for line in cases[1:]],
            "scores": scores, "conventions": summary.get("conventions")}


def _runs(run: Path, folds: list[int] | None) -> list[dict[str, Any]]:
    """run.json of the run, or of each fold run (in fold order)."""
    if (run / "run.json").is_file():
        return [json.loads((run / "run.json").read_text())]
    found = fold_runs(run)
    return [json.loads((found[k] / "run.json").read_text()) for k in (folds or sorted(found)) if k in found]


def out_of_fold_validation(report: Path, runs: list[dict[str, Any]], command: str | None) -> dict[str, Any]:
    """The validation block of a fold ensemble; SystemExit unless the report is out-of-fold."""
    block = validation_block(report)
    held_out = [c for info in runs for c in info["split"]["val"]]
    if len(held_out) != len(set(held_out)) or sorted(block["cases"]) != sorted(held_out):
        sys.exit(f"{report}: its cases are not exactly the folds' (disjoint) validation cases; give the "
                 "out-of-fold report of these folds")
    return {**block, "command": command,
            "of": f"out-of-fold: each of the {len(held_out)} cases predicted by the one fold model (of "
                  f"{len(runs)}) that did not train on it; the shipped model is the ensemble of those folds"}


def single_validation(report: Path, info: dict[str, Any], validated_run: Path | None,
                      command: str | None) -> dict[str, Any]:
    """The validation block of one run (``of`` says whose scores they are when it had no held-out cases)."""
    block = {**validation_block(report), "command": command}
    if validated_run is not None:
        fold_info = json.loads((validated_run / "run.json").read_text())
        block["of"] = (f"the same recipe trained on fold {fold_info['split']['fold']} "
                       f"({len(fold_info['split']['train'])} cases) and scored on its "
                       f"{len(fold_info['split']['val'])} held-out cases; the shipped weights "
                       "were then re-trained on every case and have no held-out score")
        block["cases_trained_on"] = fold_info["split"]["train"]
    return block


def training_block(runs: list[dict[str, Any]], stages: list[str], ensemble: bool,
                   args: argparse.Namespace) -> dict[str, Any]:
    """Cases, seconds, epochs, versions as recorded; command and hardware only when stated.

    ``cases``: every case some shipped model trained on; ``held_out``: the runs' cases none did.
    """
    trained = sorted({c for info in runs for c in info["split"]["train"]})
    seen = sorted({c for info in runs for c in info["split"]["train"] + info["split"]["val"]})
    recorded = [{s: (info.get("stages") or {}).get(s, {}) for s in stages} for info in runs]
    seconds = [{s: r[s].get("train_seconds") for s in stages} for r in recorded]
    epochs = [{s: r[s].get("epochs_done") for s in stages} for r in recorded]
    folds = [info["split"].get("fold") for info in runs]
    return {
        "data": args.data, "cases": trained, "held_out": [c for c in seen if c not in trained],
        "fold": folds if ensemble else folds[0], "seconds": seconds if ensemble else seconds[0],
        "epochs": epochs if ensemble else epochs[0],
        "hardware": args.hardware or runs[0].get("hardware"),
        "versions": runs[0].get("versions"), "command": args.train_command or runs[0].get("command"),
    }


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path, help="a run directory or a folder of fold_<k> runs")
    parser.add_argument("report", type=Path, help="glioseg evaluate report folder (summary.json, cases.csv)")
    parser.add_argument("--stages", default=None, help="comma-separated stages to ship [all trained]")
    parser.add_argument("--folds", default=None, help="comma-separated folds of a fold ensemble [all]")
    parser.add_argument("--out", type=Path, default=default_model_dir())
    parser.add_argument("--validated-run", type=Path, default=None,
                        help="fold run the report validated, when RUN was trained on every case")
    parser.add_argument("--name", default="glioseg-brats18-cpu")
    parser.add_argument("--data", default="BraTS 2018 training cases from ../shared/data")
    parser.add_argument("--train-command", default=None, help="the exact training command [null]")
    parser.add_argument("--validation-command", default=None, help="the exact validation command [null]")
    parser.add_argument("--hardware", default=None, help="what it was trained on [null unless recorded]")
    return parser


def main() -> None:
    args = _parser().parse_args()
    folds = [int(f) for f in args.folds.split(",")] if args.folds else None
    runs = _runs(args.run, folds)
    if not runs:
        sys.exit(f"{args.run}: no run.json and no fold_<k>/run.json")
    trained = [s for s in runs[0]["stage_order"] if s in (runs[0].get("stages") or {})]  # recorded by training
    stages = args.stages.split(",") if args.stages else trained
    ensemble = not (args.run / "run.json").is_file()
    validation = (out_of_fold_validation(args.report, runs, args.validation_command) if ensemble else
                  single_validation(args.report, runs[0], args.validated_run, args.validation_command))
    training = training_block(runs, stages, ensemble, args)
    model = ((runs[0].get("stages") or {}).get(stages[0], {}).get("model") or {}).get("name", "U-Net")
    info = {"name": args.name, "training": training, "validation": validation,
            "description": f"{model} (regions WT/TC/ET)" + (f", ensemble of {len(runs)} folds" if ensemble else ""),
            "limits": "expects skull-stripped, co-registered, ~1 mm BraTS-style T1/T1ce/T2/FLAIR; "
                      f"trained on {len(training['cases'])} cases",
            "provenance": {"command": training["command"], "hardware": training["hardware"]}}
    staged = args.out.with_name(f".{args.out.name}.new")
    shutil.rmtree(staged, ignore_errors=True)
    try:
        make_bundle(args.run, staged, info, fp16=True, stages=stages, folds=folds)
    except BundleError as exc:
        sys.exit(str(exc))
    if args.out.exists():
        shutil.rmtree(args.out)
    staged.rename(args.out)  # the old bundle is replaced only by a complete, verified one
    manifest = verify_bundle(args.out)
    size = sum((args.out / n).stat().st_size for n in manifest["files"])
    print(f"shipped {len(manifest['files'])} files ({size / 1e6:.1f} MB) -> {args.out}")


if __name__ == "__main__":
    main()
