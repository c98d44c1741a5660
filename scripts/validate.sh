#!/usr/bin/env bash
# Held-out validation of a trained run: predict its validation cases from the raw NIfTI files
# (the full `glioseg predict` path) and score them with `glioseg evaluate` (BraTS rules).
#   bash scripts/validate.sh RUN_OR_BUNDLE DATA OUT [extra glioseg predict options]
# The validation IDs are read from the model's run.json (split.val).
set -euo pipefail
MODEL=${1:?usage: validate.sh RUN_OR_BUNDLE DATA OUT [predict options]}
DATA=${2:?usage: validate.sh RUN_OR_BUNDLE DATA OUT}
OUT=${3:?usage: validate.sh RUN_OR_BUNDLE DATA OUT}
shift 3
BIN=${BIN:-.venv/bin}
mkdir -p "$OUT/cases"
IDS=$("$BIN/python" -c 'import json,sys; print(" ".join(json.load(open(sys.argv[1]))["split"]["val"]))' "$MODEL/run.json")
for id in $IDS; do
  ln -sfn "$(cd "$DATA/$id" && pwd)" "$OUT/cases/$id"
done
"$BIN/glioseg" predict -i "$OUT/cases" -o "$OUT/pred" -m "$MODEL" "$@"
"$BIN/glioseg" evaluate --pred "$OUT/pred" --gt "$OUT/cases" -o "$OUT/report"
