#!/usr/bin/env bash
# Run every benchmark in turn on a quiet machine; logs go to bench/out/*.log.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p bench/out
PYTHON=${PYTHON:-python3}
$PYTHON bench/predict.py "$@" 2>&1 | tee bench/out/predict.log
$PYTHON bench/vectorize.py 2>&1 | tee bench/out/vectorize.log
$PYTHON bench/regularize.py 2>&1 | tee bench/out/regularize.log
$PYTHON bench/evaluate.py 2>&1 | tee bench/out/evaluate.log
