#!/usr/bin/env bash
# The out-of-fold table of the 31 shared BraTS 2018 cases (brats18 + brats18_extra): every case
# predicted from its raw NIfTI files by the fold model that did not train on it, scored by the BraTS
# rules, summarised per region (mean, sd, median, min, cases with WT < 0.6) and per institution
# group, grade and fold. `glioseg cv` is resumable: re-run the same command to finish or re-print.
#   bash scripts/cv_table.sh CV_ROOT OUT [extra glioseg cv options, e.g. --tta all]
# CV_ROOT: the fold_0 .. fold_4 runs (scripts/train_cv.sh writes them to WORK/cv).
# OUT:     predictions, cv.json, manifest.fold-<k>.jsonl; the table goes to OUT/report/cv_table.{md,csv,json}.
# Environment: BIN (default .venv/bin), SHARED (default ../shared/data).
set -euo pipefail
CV=${1:?usage: cv_table.sh CV_ROOT OUT [glioseg cv options]}
OUT=${2:?usage: cv_table.sh CV_ROOT OUT [glioseg cv options]}
shift 2
BIN=${BIN:-.venv/bin}
SHARED=${SHARED:-../shared/data}
"$BIN/glioseg" cv "$CV" "$SHARED/brats18" "$SHARED/brats18_extra" -o "$OUT" \
  --grades "$SHARED/meta/brats2018_grade.csv" "$@"
