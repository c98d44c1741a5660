#!/usr/bin/env bash
# Five-fold cross-validation training of a 2 mm recipe on the 31 shared BraTS 2018 cases.
# Resumable: re-run the same command to continue (each fold resumes from its checkpoint).
#   bash scripts/train_cv.sh WORK [FOLDS]
# WORK:  cache + runs (outside the repo); the fold runs go to WORK/cv/fold_<k>, the layout
#        `glioseg cv` and `glioseg predict -m WORK/cv` read.
# FOLDS: space-separated fold numbers, default "0 1 2 3 4" (trained one after the other, all threads each).
# Environment: CONFIG (recipe YAML, default configs/recipe_2mm_patch64_cnr.yaml), BIN (default .venv/bin),
#              SHARED (default ../shared/data).
set -euo pipefail
WORK=${1:?usage: train_cv.sh WORK [FOLDS]}
FOLDS=${2:-0 1 2 3 4}
BIN=${BIN:-.venv/bin}
CONFIG=${CONFIG:-configs/recipe_2mm_patch64_cnr.yaml}
SHARED=${SHARED:-../shared/data}
META=$SHARED/meta
mkdir -p "$WORK/cv"
"$BIN/glioseg" preprocess "$SHARED/brats18" "$SHARED/brats18_extra" "$WORK/pre2mm" --spacing 2 --workers 2
if [ ! -f "$WORK/splits.json" ]; then
  "$BIN/glioseg" split "$WORK/pre2mm" --folds 5 --seed 0 -o "$WORK/splits.json" \
    --grades "$META/brats2018_grade.csv" \
    --mapping "$META/brats2020_name_mapping.csv" --mapping "$META/brats2021_name_mapping.csv"
fi
for FOLD in $FOLDS; do
  case "$FOLD" in ''|*[!0-9]*) echo "FOLDS must be fold numbers, got '$FOLD'" >&2; exit 2;; esac
  "$BIN/glioseg" train "$WORK/pre2mm" "$WORK/cv/fold_$FOLD" --config "$CONFIG" --stage low \
    --splits "$WORK/splits.json" --fold "$FOLD" --no-progress
done
echo "trained folds $FOLDS: $WORK/cv"
