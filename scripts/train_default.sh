#!/usr/bin/env bash
# Re-train the shipped default model from the BraTS 2018 cases (resumable: re-run to continue).
#   bash scripts/train_default.sh DATA WORK [FOLD]
# DATA: BraTS folder (e.g. ../shared/data/brats18); WORK: cache + run folder;
# FOLD: cross-validation fold to hold out for validation (default 0: the run that validated the
#       recipe), or "all": the 2 mm stage on every case, no validation (the shipped weights).
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
if [ "$FOLD" = "all" ]; then
  # one split with every case in train and none in val; one stage, so both threads go to it
  "$BIN/python" -c 'import json,sys; d=json.load(open(sys.argv[1])); s=d["splits"][0]
ids=sorted(set(s["train"])|set(s["val"])); d.update(folds=1, splits=[{"fold":0,"train":ids,"val":[]}])
json.dump(d, open(sys.argv[2],"w"), indent=1)' "$WORK/splits.json" "$WORK/splits_all.json"
  sed 's/^threads: 1/threads: 2/' "$CONFIG" > "$WORK/config_all.yaml"
  "$BIN/glioseg" train "$WORK/pre2mm" "$WORK/run_all" --config "$WORK/config_all.yaml" --stage low \
    --splits "$WORK/splits_all.json" --fold 0 --no-progress
  echo "trained: $WORK/run_all"
  exit 0
fi
case "$FOLD" in ''|*[!0-9]*) echo "FOLD must be a fold number or 'all', got '$FOLD'" >&2; exit 2;; esac
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
