#!/usr/bin/env bash
# Ship the fold ensemble of a finished cross-validation as the default model, with its evidence:
#   1. glioseg tune-postprocess: the volume rules (mm^3) chosen on every fold's validation cases;
#   2. the out-of-fold table with each fold's own (default) settings   -> OUT/oof/report;
#   3. the out-of-fold table with the tuned settings, the ones the ensemble ships with
#                                                                       -> OUT/oof_tuned/report;
#   4. scripts/ship_model.py: every fold's weights (fp16), sha256 manifest, provenance, and the
#      tuned out-of-fold report as the validation block.
#   bash scripts/ship_cv.sh CV_ROOT PRE OUT
# CV_ROOT: the fold_0 .. fold_4 runs (scripts/train_cv.sh writes them to WORK/cv).
# PRE:     the preprocessed cache they trained on (WORK/pre2mm).
# Environment: BIN (default .venv/bin), SHARED (default ../shared/data), SHIP_OUT (bundle folder,
#              default: the package's src/glioseg/weights/default).
# Resumable: the tables skip the cases already predicted; re-running re-tunes and re-ships.
set -euo pipefail
CV=${1:?usage: ship_cv.sh CV_ROOT PRE OUT}
PRE=${2:?usage: ship_cv.sh CV_ROOT PRE OUT}
OUT=${3:?usage: ship_cv.sh CV_ROOT PRE OUT}
BIN=${BIN:-.venv/bin}
export BIN SHARED=${SHARED:-../shared/data}
HERE=$(dirname "$0")
"$BIN/glioseg" tune-postprocess "$CV" "$PRE"
bash "$HERE/cv_table.sh" "$CV" "$OUT/oof"
bash "$HERE/cv_table.sh" "$CV" "$OUT/oof_tuned" --postprocess "$CV"
SHIP=()
if [ -n "${SHIP_OUT:-}" ]; then SHIP=(--out "$SHIP_OUT"); fi
"$BIN/python" "$HERE/ship_model.py" "$CV" "$OUT/oof_tuned/report" "${SHIP[@]}" \
  --validation-command "bash scripts/cv_table.sh $CV $OUT/oof_tuned --postprocess $CV"
