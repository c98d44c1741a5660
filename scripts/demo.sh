#!/usr/bin/env bash
# Main job of the README: run with the venv's bin folder as $1 (make demo does this).
set -euo pipefail
BIN=${1:-.venv/bin}
OUT=out/demo
mkdir -p "$OUT"
"$BIN/glioseg" --help
