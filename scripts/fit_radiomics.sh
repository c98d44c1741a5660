#!/usr/bin/env bash
# Reproduce the shipped radiomics models (src/glioseg/weights/radiomics/{survival,grade}/model.json)
# and their cross-validation tables from the 31 shared BraTS 2018 cases (brats18 + brats18_extra):
#   1. features of every case from its ground-truth segmentation -> WORK/features_gt.csv
#   2. survival: age-only baseline vs radiomics models, 5-fold CV x 20 repeats -> WORK/survival/
#      (cv_table.md/.csv, cv_predictions.csv, predicted_vs_actual.png, model.json = the CV winner)
#   3. grade: logistic model vs majority class, leave-one-out, Wilson intervals -> WORK/grade/
#   bash scripts/fit_radiomics.sh WORK [--ship]
# WORK: a folder outside the repository (e.g. ../exp/radiomics). --ship copies the two model.json
# files into src/glioseg/weights/radiomics/. Deterministic: a rerun writes the same files.
# Environment: BIN (default .venv/bin), SHARED (default ../shared/data).
set -euo pipefail
WORK=${1:?usage: fit_radiomics.sh WORK [--ship]}
SHIP=${2:-}
BIN=${BIN:-.venv/bin}
SHARED=${SHARED:-../shared/data}
mkdir -p "$WORK"
nice -n 5 "$BIN/glioseg" features -i "$SHARED/brats18" -i "$SHARED/brats18_extra" --ground-truth \
  -o "$WORK/features_gt.csv"
nice -n 5 "$BIN/glioseg" survival fit "$WORK/features_gt.csv" "$SHARED/meta/brats2018_survival_data.csv" \
  -o "$WORK/survival" --cv repeated-kfold --folds 5 --repeats 20 --seed 0
nice -n 5 "$BIN/glioseg" grade-fit "$WORK/features_gt.csv" "$SHARED/meta/brats2018_grade.csv" -o "$WORK/grade"
if [ "$SHIP" = "--ship" ]; then
  for task in survival grade; do
    mkdir -p "src/glioseg/weights/radiomics/$task"
    cp "$WORK/$task/model.json" "src/glioseg/weights/radiomics/$task/model.json"
    cp "$WORK/$task/cv_table.md" "src/glioseg/weights/radiomics/$task/cv_table.md"
  done
fi
