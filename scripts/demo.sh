#!/usr/bin/env bash
# The README's main job: check the example case, segment it with the shipped model, score it by the
# BraTS rules and draw it. Run as `make demo` (which sets up .venv first) or `bash scripts/demo.sh BIN`.
set -euo pipefail
BIN=${1:-.venv/bin}
CASE=examples/Brats18_TCIA02_151_1
OUT=out/demo
mkdir -p "$OUT"
"$BIN/glioseg" check examples --json "$OUT/check.json"
"$BIN/glioseg" info "$CASE"
time "$BIN/glioseg" predict -i "$CASE" -o "$OUT/pred"
"$BIN/glioseg" evaluate --pred "$OUT/pred" --gt examples -o "$OUT/report"
"$BIN/glioseg" show "$CASE" --pred "$OUT/pred/Brats18_TCIA02_151_1.nii.gz" -o "$OUT/Brats18_TCIA02_151_1.png"
echo
echo "prediction: $OUT/pred/Brats18_TCIA02_151_1.nii.gz"
echo "scores:     $OUT/report/cases.csv, $OUT/report/summary.json"
echo "report:     $OUT/report/report.html"
echo "picture:    $OUT/Brats18_TCIA02_151_1.png"
