#!/usr/bin/env bash
# Re-train the shipped default model from the BraTS 2018 cases (resumable: re-run to continue).
#   bash scripts/train_default.sh DATA WORK [FOLD]
# DATA: BraTS folder (e.g. ../shared/data/brats18); WORK: cache + run folder;
# FOLD: cross-validation fold to hold out for validation (default 0; the shipped model is fold 0).
set -euo pipefail
DATA=${1:?usage: train_default.sh DATA WORK [FOLD]}
WORK=${2:?usage: train_default.sh DATA WORK [FOLD]}
FOLD=${3:-0}
BIN=${BIN:-.venv/bin}
CONFIG=${CONFIG:-configs/cpu_shipped.yaml}
META=$(dirname "$DATA")/meta
mkdir -p "$WORK"
"$BIN/glioseg" preprocess "$DATA" "$WORK/pre2mm" --spacing 2 --workers 2
"$BIN/glioseg" preprocess "$DATA" "$WORK/pre1mm" --workers 2
if [ ! -f "$WORK/splits.json" ]; then
  "$BIN/glioseg" split "$WORK/pre2mm" --folds 5 --seed 0 -o "$WORK/splits.json" \
    ${META:+--mapping "$META/brats2020_name_mapping.csv" --grades "$META/brats2018_grade.csv"}
fi
case "$FOLD" in ''|*[!0-9]*) echo "FOLD must be a fold number, got '$FOLD'" >&2; exit 2;; esac
RUN="$WORK/run_fold$FOLD"
SPLIT=(--splits "$WORK/splits.json")
FOLDARG=(--fold "$FOLD")
# The two stages are independent: train them side by side, one thread each.
"$BIN/glioseg" train "$WORK/pre2mm" "$RUN" --config "$CONFIG" --stage low "${FOLDARG[@]}" "${SPLIT[@]}" --no-progress > "$WORK/low.log" 2>&1 &
LOW=$!
"$BIN/glioseg" train "$WORK/pre1mm" "$RUN" --config "$CONFIG" --stage high "${FOLDARG[@]}" "${SPLIT[@]}" --no-progress > "$WORK/high.log" 2>&1 &
HIGH=$!
wait $LOW $HIGH
echo "trained: $RUN"
